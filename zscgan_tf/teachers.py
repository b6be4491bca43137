"""Teachers: the frozen, pre-trained classifiers the package quantizes.

A teacher comes from one of three places:

- a Keras Applications name (`resnet50`, `mobilenet_v2`, ...) with `weights` being
  `imagenet` (downloaded by Keras), `none` (random, for tests) or a local weights file;
- `builtin:<name>`, a small BN classifier trained here on real offline data on first
  use (see `teacher_recipes.BUILTIN_TEACHERS`);
- a saved tf_keras classifier: a `.keras` or `.h5` file or a SavedModel directory
  (`model_files`), with an optional sidecar `<file>.json` describing its preprocessing
  and classes.

Whatever the source, `load_teacher` returns a `Teacher`: a functional model that
outputs logits, its preprocessing, and its shape, validated and frozen.
"""

import dataclasses
import hashlib
import json
import os
import re
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, custom_objects, data, flattening, keras3_conversion, keras_applications, logits
from zscgan_tf import model_files
from zscgan_tf import sidecar as sidecar_lib
from zscgan_tf import teacher_rebuild
from zscgan_tf.teacher_rebuild import LAYERS_NAMED
from zscgan_tf.errors import UserError
from zscgan_tf.files import paths_as_strings, portable_path, system_path
from zscgan_tf.keras_applications import KERAS_APPLICATIONS, imagenet_class_names
from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.progress import count_of, listed

BUILTIN_PREFIX = "builtin:"
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
# How a model file without a sidecar or --teacher_preprocessing is read.
DEFAULT_FILE_PREPROCESSING = "tf"
# Layers that map pixels to a model's input, found at the start of models that scale pixels themselves.
PIXEL_SCALING_LAYERS = (tf_keras.layers.Rescaling, tf_keras.layers.Normalization)
# The characters `str.splitlines` breaks a line at: a labels file read line by line would split
# a class name holding one (U+2028 among them), giving more labels than outputs.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Class names a warning lists, at most.
CLASS_NAMES_SHOWN = 4
# Layer classes of TF-MOT's quantization-aware (and annotated) models, as their saved configs name them.
TF_MOT_LAYER_CLASSES = frozenset({"QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeAnnotate"})

class QuantizationAwareTeacherError(UserError):
    """A saved TF-MOT quantization-aware model was given where a float teacher belongs."""


@dataclasses.dataclass(frozen=True)
class TeacherSource:
    """Where a teacher comes from and how it reads its input.

    Attributes:
      model: a Keras Applications name, `builtin:<name>`, or a model file/directory path.
      weights: for Keras Applications: `imagenet`, `none`, or a weights file path.
      alpha: width multiplier of `mobilenet`, `mobilenet_v2` and `mobilenet_v3_*`.
      input_size: square input resolution; 0 means the model's own (224 for Keras
        Applications).
      num_classes: for Keras Applications without ImageNet weights; 0 means 1000.
      channels: input channels of a Keras Application built without ImageNet weights.
      preprocessing: preprocessing mode; empty means the model's own (the Keras
        Applications mode, or the saved model's sidecar, else `tf`).
      preprocessing_mean: per-channel mean for `custom` preprocessing.
      preprocessing_std: per-channel std for `custom` preprocessing.
      trust_model_code: allow a model file with serialized Python (Lambda layers) to load.
      cache_dir: where built-in teachers are kept; empty means the default cache.
      custom_objects: Python modules (dotted names) or `.py` files that define the
        model's own layers and other Keras objects; imported before it loads
        (`zscgan_tf.custom_objects`).
    """

    model: str = "builtin:digits_resnet8"
    weights: str = "imagenet"
    alpha: float = 1.0
    input_size: int = 0
    num_classes: int = 0
    channels: int = 3
    preprocessing: str = ""
    preprocessing_mean: Tuple[float, ...] = ()
    preprocessing_std: Tuple[float, ...] = ()
    trust_model_code: bool = False
    cache_dir: str = ""
    custom_objects: Tuple[str, ...] = ()

    def __post_init__(self):
        # As a program may give them: a pathlib.Path, one module name, a list of values.
        paths_as_strings(self, ("model", "weights", "cache_dir"))
        if isinstance(self.custom_objects, (str, os.PathLike)):
            object.__setattr__(self, "custom_objects", (os.fspath(self.custom_objects),))
        for name in ("preprocessing_mean", "preprocessing_std", "custom_objects"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    def portable(self) -> "TeacherSource":
        """This source with the paths of its files that exist (and the cache directory) made
        absolute, as a run records it: a run resumed from another directory, and
        `tools/convert.py --run_dir`, find them there. Names and missing paths stay as given."""
        return dataclasses.replace(
            self, model=self.model if self.model.startswith(BUILTIN_PREFIX) else portable_path(self.model),
            weights=self.weights if self.weights.lower() in ("imagenet", "none") else portable_path(self.weights),
            cache_dir=os.path.abspath(system_path(os.path.expanduser(self.cache_dir))) if self.cache_dir else "",
            custom_objects=tuple(portable_path(name) if name.endswith(".py") else name
                                 for name in self.custom_objects))


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A validated, frozen teacher.

    Attributes:
      model: functional tf_keras model, one image input, logits output, not trainable.
      preprocessing: maps pixels in [0, 255] to `model`'s input.
      image_shape: (height, width, channels) the model reads.
      num_classes: length of the logits vector.
      name: a short name for reports.
      description: what else is known (sidecar contents, source), for reports.
      warnings: what the user must know about how the teacher was read, for entry
        points and reports to show: an assumed preprocessing that the model's own layers
        contradict, a binary output read as two logits.
    """

    model: tf_keras.Model
    preprocessing: Preprocessing
    image_shape: Tuple[int, int, int]
    num_classes: int
    name: str
    description: dict
    warnings: Tuple[str, ...] = ()

    def input_range(self) -> Tuple[np.ndarray, np.ndarray]:
        """Per-channel (low, high) of every input the model reads: its preprocessing of pixels 0 to 255."""
        return self.preprocessing.input_range(self.image_shape[2])

    def real_data(self, dataset: str = "", data_dir: str = "") -> Tuple[str, str]:
        """(`data.load_dataset` source, data directory) of real data to measure the teacher on:
        `dataset` and `data_dir` when a dataset is given, else what its description says it
        was trained on ("" for what it does not say)."""
        if dataset:
            return dataset, data_dir
        return self.description.get("dataset", ""), data_dir or self.description.get("data_dir", "")

    def trained_on(self, source: str) -> bool:
        """Whether `source` (a `data.load_dataset` source) is the data the teacher was trained on,
        as its description names it."""
        return data.portable_source(source) == self.description.get("dataset")

    def class_names(self) -> Tuple[str, ...]:
        """The teacher's class names in output order, from its description (the sidecar
        `tools/train_teacher.py` writes); () when it has none, not one per output, or one that
        would not fit on a line of a labels file."""
        names = tuple(str(name) for name in self.description.get("class_names") or ())
        if len(names) != self.num_classes or any(_line_break_in(name) for name in names):
            return ()
        return names


def _line_break_in(name: str) -> bool:
    return any(character in LINE_BREAKS for character in name)


def _read_by_coral_as_indexed(name: str) -> bool:
    """Whether pycoral's `read_label_file` reads the labels-file line `name` as "<index> <name>"
    (its own test: digits, then spaces or colons, then more)."""
    pair = re.split(r"[:\s]+", name.strip(), maxsplit=1)
    return len(pair) == 2 and pair[0].strip().isdigit()


def class_name_warnings(class_names) -> List[str]:
    """Warnings for class names a labels file cannot carry as they are: one holding a line
    break (no labels file is written), ones Coral's `read_label_file` reads as "<index> <name>"."""
    names = [str(name) for name in class_names or ()]
    warnings = []
    broken = [name for name in names if _line_break_in(name)]
    if broken:
        warnings.append(f"the teacher's class name {broken[0]!r} holds a line break, which a labels file (one name a "
                        "line) cannot carry: no labels file is written; remove it from the class names")
    indexed = [name for name in names if _read_by_coral_as_indexed(name)]
    if indexed:
        shown = listed([repr(name) for name in indexed], CLASS_NAMES_SHOWN)
        warnings.append(f"class names {shown} begin with a number and a space or colon, which Coral's "
                        "read_label_file (pycoral) reads as an index and a name: the labels file holds them as they "
                        "are, one a line, for readers that take one name a line")
    return warnings


def load_teacher(source: TeacherSource, progress: bool = True, require_batchnorm: bool = True) -> Teacher:
    """Loads, validates and freezes the teacher described by `source`.

    `require_batchnorm`: refuse a model without BatchNormalization, whose statistics ZS-CGAN
    (and distilled data) are made to match; off for what needs none (noise calibration, a
    float export).

    Raises:
      UserError: for an unknown name, an unreadable model file, a model with no
        BatchNormalization layer (with `require_batchnorm`), more than one input, or an
        output that is not a class vector; `QuantizationAwareTeacherError` for a saved
        TF-MOT quantization-aware model.
    """
    custom_objects.register(source.custom_objects)
    read = (_read_keras_application(source) if source.model in KERAS_APPLICATIONS
            else _read_model_file(source, progress))
    model, name, description = read.model, read.name, read.description
    preprocessing = _resolve_preprocessing(source, read)
    model, channel_note = teacher_rebuild.with_channel_axis(model)
    model, output_note = logits.logits_model(flattening.flat_inference_model(model))
    model, vector_note = teacher_rebuild.with_class_vector_output(model)
    image_shape = _validate_input(model, source)
    try:
        preprocessing.scale_and_offset(image_shape[2])  # Raises if its statistics don't fit the channels.
    except UserError as error:
        raise _naming_the_preprocessing_origin(error, source, read) from None
    rebuild_notes = teacher_rebuild.float32_notes(model, preprocessing)
    model = teacher_rebuild.float32_model(model, image_shape)
    num_classes = _validate_output(model)
    _check_finite_weights(model)
    if not output_note:  # A softmax it removed: logits now.
        _check_outputs_are_not_probabilities(model, image_shape, preprocessing)
    named = len(description.get("class_names") or ())
    if named and named != num_classes:
        raise UserError(f"the teacher's description names {named} classes (\"class_names\"), but the teacher "
                        f"{name!r} has {num_classes} outputs; give one name per output, in output order")
    hidden_batchnorm_warning = _check_batchnorm(model, name, require_batchnorm)
    model.trainable = False
    warnings = (read.notes + [note for note in (channel_note, output_note, vector_note) if note] + rebuild_notes
                + class_name_warnings(description.get("class_names")))
    if hidden_batchnorm_warning:
        warnings.append(hidden_batchnorm_warning)
    scaling_layer = pixel_scaling_layer(model)
    if read.preprocessing_assumed and scaling_layer and preprocessing.mode != "raw":
        warnings.append(
            f"the teacher seems to scale pixels itself (its first layer {scaling_layer.name!r} is a "
            f"{type(scaling_layer).__name__}), but it is read with '{preprocessing.mode}' preprocessing, the default "
            "for a model file without a sidecar: if it takes pixels 0 to 255, pass --teacher_preprocessing=raw")
    return Teacher(model=model, preprocessing=preprocessing, image_shape=image_shape, num_classes=num_classes,
                   name=name, description=description, warnings=tuple(warnings))


@dataclasses.dataclass
class _ReadModel:
    """A teacher's model as read, before it is validated, with what says how it reads pixels.

    Attributes:
      default_mode: its preprocessing unless `TeacherSource.preprocessing` says otherwise.
      preprocessing_assumed: whether nothing said it (a model file without a sidecar or flag).
      sidecar_path: the file its description was read from ("" for none), named when what it says is refused.
      notes: what reading it changed, for the teacher's warnings.
    """
    model: tf_keras.Model
    name: str
    description: dict
    default_mode: str
    preprocessing_assumed: bool = False
    sidecar_path: str = ""
    notes: List[str] = dataclasses.field(default_factory=list)


def _read_keras_application(source: TeacherSource) -> _ReadModel:
    """A Keras Applications model, with its ImageNet class names when it has ImageNet weights."""
    read = _ReadModel(keras_applications.build_keras_application(source), source.model, {"source": source.model},
                      KERAS_APPLICATIONS[source.model].preprocessing_mode)
    if source.weights == "imagenet":  # For labels.txt: the weights' classes have names.
        try:
            read.description["class_names"] = list(imagenet_class_names())
        except UserError as error:
            read.notes.append(f"{error}; the exported models' outputs are class indices, with no labels file")
    return read


def _read_model_file(source: TeacherSource, progress: bool) -> _ReadModel:
    """A model file (a built-in teacher's, trained on first use) and its sidecar.

    Raises:
      UserError: for a name that is none of a model file, a built-in or a Keras Application, a
        generator saved by this package; `QuantizationAwareTeacherError` for a TF-MOT
        quantization-aware model.
    """
    path = source.model
    if source.model.startswith(BUILTIN_PREFIX):
        from zscgan_tf import teacher_recipes  # Imported here: training code is only needed for built-ins.
        path = teacher_recipes.ensure_builtin_teacher(source.model[len(BUILTIN_PREFIX):],
                                                      cache_dir=source.cache_dir or None, progress=progress)
    elif not _looks_like_path(path):
        raise _unknown_model(source.model)
    saved_classes = model_files.saved_layer_classes(path)
    generator_message = model_files.generator_file_message(path, "teacher")
    if generator_message:  # It was "a binary classifier must end in Dense(1)".
        raise UserError(generator_message)
    quantization_layers = saved_classes & TF_MOT_LAYER_CLASSES
    if quantization_layers:
        raise QuantizationAwareTeacherError(
            f"model file {path!r} is a TF-MOT quantization-aware model ({', '.join(sorted(quantization_layers))} "
            "layers), not a float teacher")
    model = model_files.load_model_file(path, trust_model_code=source.trust_model_code)
    notes = []
    wrappers = sorted(saved_classes & set(model_files.TF_MOT_TRAINING_WRAPPERS))
    if wrappers:
        kinds = sorted({model_files.TF_MOT_TRAINING_WRAPPERS[wrapper] for wrapper in wrappers})
        kept = " and ".join({"pruning": "its zero weights", "clustering": "its weight clusters"}[kind]
                            for kind in kinds)
        notes.append(f"the teacher was saved with TF-MOT's {' and '.join(kinds)} wrappers "
                     f"({', '.join(wrappers)}); they are stripped and the weights they hold used as they "
                     f"are: the PTQ model and the QAT student keep {kept}")
    sidecar, sidecar_path = sidecar_lib.read_with_path(path)
    # A model that reads uint8 takes pixels 0 to 255 as they are.
    default_mode = sidecar.get("preprocessing", {}).get(
        "mode", "raw" if model.inputs and model.inputs[0].dtype == tf.uint8 else DEFAULT_FILE_PREPROCESSING)
    return _ReadModel(model, model_file_name(path), {"source": source.model, **sidecar}, default_mode,
                      preprocessing_assumed=not source.preprocessing and "preprocessing" not in sidecar,
                      sidecar_path=sidecar_path, notes=notes)


def _check_batchnorm(model: tf_keras.Model, name: str, require_batchnorm: bool) -> Optional[str]:
    """Refuses a teacher without a BatchNormalization layer (with `require_batchnorm`), or with
    nested or shared ones; returns the warning for BN layers inside its own layers, if any."""
    hiding = _layers_holding_batchnorm(model)
    hiding_names = listed(hiding, LAYERS_NAMED)
    batchnorm_count = len(bn_stats.batchnorm_layers(model))  # Also raises for nested or shared BN layers.
    if not batchnorm_count and require_batchnorm:
        raise UserError(f"teacher {name!r} has no BatchNormalization layer"
                        + (f" but inside its own layers ({hiding_names}), whose statistics cannot be read"
                           if hiding else "") + "; ZS-CGAN needs the BN statistics it stores. Without them, "
                        "python tools/convert.py --teacher=<the model> --data_source=noise --output=<file> quantizes "
                        "it post-training, calibrated on noise rather than on generated samples")
    if not hiding:
        return None
    one = len(hiding) == 1
    return (f"{count_of(len(hiding), 'layer')} of the teacher's own ({hiding_names}) "
            f"{'holds' if one else 'hold'} BatchNormalization layers, which run inside "
            f"{'it' if one else 'them'}: the generator is trained to match the statistics of the other "
            f"{count_of(batchnorm_count, 'BN layer')} only")


def _layers_holding_batchnorm(model: tf_keras.Model) -> List[str]:
    """Names of the layers of `model`'s own (a custom tf_keras layer, or a Keras 3 layer run
    as it is) that hold BatchNormalization layers inside them, out of the BN taps' reach."""
    names = []
    for layer in model.layers:
        if isinstance(layer, (tf_keras.Model, tf_keras.layers.BatchNormalization)):
            continue
        # A Keras 3 layer run as it is counts itself: a BatchNormalization subclass of the user's.
        inner = (layer.keras3_layer._flatten_layers(include_self=True)  # pylint: disable=protected-access
                 if isinstance(layer, keras3_conversion.Keras3Layer) else layer.submodules)
        if any("BatchNormalization" in type(module).__name__ for module in inner):
            names.append(layer.name)
    return names


def pixel_scaling_layer(model: tf_keras.Model) -> Optional[tf_keras.layers.Layer]:
    """The layer that scales `model`'s input, if the model begins with one.

    That is its first layer that is not an input or a random augmentation (which passes
    pixels through at inference), if it is a Rescaling, a Normalization, or TensorFlow
    arithmetic (`TFOpLambda`, as Keras Applications' `preprocess_input` leaves in a model).
    """
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer) or flattening.is_augmentation_layer(layer):
            continue
        if isinstance(layer, PIXEL_SCALING_LAYERS) or type(layer).__name__ == "TFOpLambda":
            return layer
        return None
    return None


def check_teacher_named(model: str) -> None:
    """Refuses, as `load_teacher` would, a teacher `model` that names no Keras Application,
    built-in teacher or existing model file, without reading or training it: a benchmark of
    several teachers checks them all before it measures the first.

    Raises:
      UserError: with `load_teacher`'s message.
    """
    if model in KERAS_APPLICATIONS:
        return
    if model.startswith(BUILTIN_PREFIX):
        from zscgan_tf import teacher_recipes  # As in `_read_model_file`.
        teacher_recipes.builtin_recipe(model[len(BUILTIN_PREFIX):])
    elif not _looks_like_path(model):
        raise _unknown_model(model)
    else:
        model_files.check_model_file_exists(model)


def _unknown_model(model: str) -> UserError:
    known = ", ".join(sorted(KERAS_APPLICATIONS))
    return UserError(f"unknown teacher model {model!r}: not a Keras Applications name ({known}), "
                     f"not {BUILTIN_PREFIX}<name>, and no such file")


def _looks_like_path(value: str) -> bool:
    return os.path.exists(value) or value.endswith(MODEL_FILE_SUFFIXES) or os.sep in value


def model_file_name(path: str) -> str:
    """A model file's name without its folder and extension: the name of a teacher read from it."""
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def _resolve_preprocessing(source: TeacherSource, read: _ReadModel) -> Preprocessing:
    try:
        if source.preprocessing:
            return Preprocessing(source.preprocessing, source.preprocessing_mean, source.preprocessing_std)
        saved = read.description.get("preprocessing")
        if saved and saved.get("mode") == read.default_mode:
            return Preprocessing.from_dict(saved)
        return Preprocessing(read.default_mode)
    except UserError as error:
        raise _naming_the_preprocessing_origin(error, source, read) from None


def _naming_the_preprocessing_origin(error: UserError, source: TeacherSource, read: _ReadModel) -> UserError:
    """`error`, a refusal of the teacher's preprocessing, saying where that was given: its
    flags, or its description's file (which the flags then do not override by being absent)."""
    if source.preprocessing:
        origin = ("--teacher_preprocessing_mean, --teacher_preprocessing_std" if source.preprocessing == "custom"
                  else "--teacher_preprocessing")
    elif read.sidecar_path and "preprocessing" in read.description:
        origin = (f"from teacher description {read.sidecar_path!r}: correct it there, or pass --teacher_preprocessing "
                  "to override it")
    else:
        return error
    return UserError(f"{error} ({origin})")


def _validate_input(model, source: TeacherSource) -> Tuple[int, int, int]:
    if len(model.inputs) != 1:
        raise UserError(f"the teacher has {len(model.inputs)} inputs; a single image input is required")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise UserError(f"the teacher's input has shape {shape}; an image input (batch, height, width, channels) "
                        "is required")
    _, height, width, channels = shape
    if channels not in (1, 3):
        channels_first = (f": ({height}, {width}, {channels}) looks like channels-first "
                          f"({count_of(height, 'channel')} of {width}x{channels}); zscgan_tf reads images "
                          "channels-last, (height, width, channels): save the model with channels-last layers"
                          if height in (1, 3) else "")
        raise UserError(f"the teacher's input has {channels} channels; 1 or 3 are supported{channels_first}")
    if height is None or width is None:
        if not source.input_size:
            raise UserError("the teacher accepts any image size; set --teacher_input_size")
        height = width = source.input_size
    elif source.input_size and source.model not in KERAS_APPLICATIONS and source.input_size != height:
        raise UserError(f"--teacher_input_size={source.input_size} but the saved teacher takes {height}x{width}")
    return int(height), int(width), int(channels)


def _check_finite_weights(model: tf_keras.Model) -> None:
    """Refuses a teacher with NaN or infinite weights (a training that diverged): every output
    would be NaN, and the first check to fail would blame something else (the converter)."""
    for layer in model.layers:
        for weight in layer.weights:
            if not np.all(np.isfinite(weight.numpy())):
                raise UserError(f"the teacher's weights are not finite: layer {layer.name!r} holds NaN or infinite "
                                f"values in {weight.name.split('/')[-1].split(':')[0]!r} (a training that diverged?); "
                                "train it again")


def _validate_output(model) -> int:
    """The teacher's class count; `logits.logits_model` has refused a model with several outputs."""
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None or shape[-1] < 2:
        raise UserError(f"the teacher's output has shape {shape}; a class vector (batch, classes) with at least "
                        "2 classes is required")
    return int(shape[-1])


# Inputs a teacher is run on to see whether it outputs probabilities, and how close to 1
# each output's sum must be to count as one.
PROBABILITY_CHECK_INPUTS = 4
PROBABILITY_SUM_TOLERANCE = 1e-3


def _check_outputs_are_not_probabilities(model, image_shape, preprocessing: Preprocessing) -> None:
    """Refuses a teacher whose outputs are probabilities from a softmax that is not its last
    layer (a Flatten or Reshape after it, a Lambda computing it), which `logits.logits_model`
    cannot remove: the generator's cross-entropy and the distillation's KL would be taken of
    probabilities as if they were logits, without a word."""
    low, high = preprocessing.input_range(image_shape[-1])
    inputs = np.random.default_rng(0).uniform(low, high, (PROBABILITY_CHECK_INPUTS, *image_shape)).astype(np.float32)
    outputs = model(inputs, training=False).numpy()
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=PROBABILITY_SUM_TOLERANCE):
        raise UserError(f"the teacher's outputs are probabilities (each sums to 1), but its last layer "
                        f"{model.layers[-1].name!r} ({type(model.layers[-1]).__name__}) is not the softmax: save it "
                        "with the softmax as its last layer, which is removed for distillation, or without a softmax")


def weights_digest(model: tf_keras.Model, prefix: bytes = b"") -> str:
    """SHA-256 of `prefix` and a Keras model's weights, shapes included."""
    digest = hashlib.sha256(prefix)
    for weight in model.get_weights():
        digest.update(str(weight.shape).encode())
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def fingerprint(teacher: Teacher) -> str:
    """SHA-256 of what a generator and a student are trained against: the teacher's weights,
    input shape, classes and preprocessing. A model file replaced by a retrained one changes
    it; the same model moved elsewhere does not. Work directories keep it (`state.json`):
    what it covers must not change, or every earlier run would refuse its own teacher."""
    reads = {"preprocessing": teacher.preprocessing.to_dict(), "image_shape": list(teacher.image_shape),
             "num_classes": teacher.num_classes}
    return weights_digest(teacher.model, json.dumps(reads, sort_keys=True).encode())


def describe(teacher: Teacher) -> dict:
    """A JSON-ready summary of the teacher for reports."""
    return {"name": teacher.name, "image_shape": list(teacher.image_shape), "num_classes": teacher.num_classes,
            "preprocessing": teacher.preprocessing.to_dict(), "parameters": int(teacher.model.count_params()),
            "batchnorm_layers": len(bn_stats.batchnorm_layers(teacher.model)), "warnings": list(teacher.warnings),
            **{key: value for key, value in teacher.description.items() if key not in ("preprocessing",)}}
