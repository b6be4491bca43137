"""Keras 3 model files rebuilt as tf_keras (Keras 2) models, which TF-MOT needs.

TensorFlow 2.16 and later save models with Keras 3 unless told otherwise, and tf_keras
cannot read those files. `load_as_tf_keras` loads such a file with Keras 3 and rebuilds
its graph layer by layer with the tf_keras class of the same name, the same settings and
the same weights, flattening nested models and leaving out random augmentation layers
on the way, as `flattening` does for tf_keras models. Keras 3 operations in the graph
(`preprocess_input`'s `x / 127.5 - 1`, `keras.ops.mean`, slicing, ...) become TensorFlow
ops, and a user's own layer, or one of Keras 3 that tf_keras has no class for
(`AdaptiveAveragePooling2D`), runs as it is inside a `Keras3Layer`. The rebuilt model is
checked against the original on random inputs, so a setting lost in translation is an
error, not a different teacher.

Usage:

    if keras3_conversion.saved_by_keras3(path):
        model = keras3_conversion.load_as_tf_keras(path)
"""

import contextlib
import json
import os
import re
import warnings
import zipfile
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf import flattening, native_output, saved_config
from zscgan_tf.errors import UserError, first_line
from zscgan_tf.preprocessing import PIXEL_MAX

# Where Keras 3's own layers and operations (`keras.ops`, tensor slicing) live; a user's subclasses do not.
KERAS3_MODULE = "keras."
KERAS3_OPERATIONS_MODULE = "keras.src.ops."
# Keras 3 operations (not layers) that preprocessing leaves in functional models, by class name,
# rebuilt as one TensorFlow op each.
ELEMENTWISE_OPERATIONS = {
    "Add": tf.math.add,
    "Subtract": tf.math.subtract,
    "Multiply": tf.math.multiply,
    "Divide": tf.math.truediv,
    "TrueDivide": tf.math.truediv,
    "Maximum": tf.math.maximum,
    "Minimum": tf.math.minimum,
}


def _hard_sigmoid(inputs, name: str):
    """Keras 3's `hard_sigmoid`, relu6(x + 3) / 6, as tf_keras' MobileNetV3 builds it (tf_keras'
    own `hard_sigmoid` activation is another function, and it has no `hard_silu`)."""
    return tf_keras.layers.ReLU(6.0, name=f"{name}_relu6")(inputs + 3.0) * (1.0 / 6.0)


def _hard_silu(inputs, name: str):
    """Keras 3's `hard_silu` (hard-swish), x * hard_sigmoid(x), with a `Multiply` layer as in
    tf_keras' MobileNetV3, so the student quantizes its output."""
    return tf_keras.layers.Multiply(name=name)([inputs, _hard_sigmoid(inputs, name)])


# Keras 3 activations that tf_keras lacks or defines otherwise, by function name, rebuilt from layers.
HARD_ACTIVATIONS = {"hard_sigmoid": _hard_sigmoid, "hard_silu": _hard_silu, "hard_swish": _hard_silu}
# Settings that only shape training (the teacher is frozen and its weights are copied), so a
# rebuilt layer keeps tf_keras' defaults for them.
TRAINING_ONLY_SETTING_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# How closely the rebuilt model must reproduce the original, relative to its largest output.
# Float32 rounding between the two implementations reached 1.5e-4 once (NASNetMobile, random
# weights, a softmax saturated at 1); a setting lost in translation changes far more.
AGREEMENT_TOLERANCE = 1e-3
# The largest output is taken as at least this, so that outputs all zero do not divide by zero.
SMALLEST_OUTPUT_SCALE = 1e-12
# The same where a layer computes in lower precision (a mixed-precision policy), by its type:
# float16 rounding alone reached 1.1e-3 (ResNet50 under mixed_float16, random weights, 96x96).
REDUCED_PRECISION_AGREEMENT_TOLERANCES = {"float16": 1e-2, "bfloat16": 5e-2}
# What a Keras 3 model with layers of its own needs to load: their code.
OWN_LAYERS_HINT = "pass --teacher_custom_objects=<the module or .py file that defines them>"
OWN_LAYER_HINT = "pass --teacher_custom_objects=<the module or .py file that defines it>"
# How Keras 3 says it has not been given a class that a saved config names.
UNKNOWN_KERAS3_CLASS = "Could not locate class"
# What TensorFlow's warning about a function traced again and again says.
RETRACING_WARNING = "triggered tf.function retracing"
# The start of Keras 3's warning about a layer built from its config whose layers are not built yet.
UNBUILT_STATE_WARNING = r"`build\(\)` was called on layer"
CHECK_BATCH_SIZE = 4
CHECK_SEED = 0
CHECK_IMAGE_SIZE = 96
# How tf_keras names a setting it does not take, in the TypeError of `from_config`.
UNKNOWN_SETTING = re.compile(r"(?:Keyword argument not understood:'?,? '|unexpected keyword argument ')(\w+)'")


def saved_by_keras3(path: str) -> bool:
    """Whether the model file at `path` (.keras, .h5) says Keras 3 wrote it."""
    version = _saved_keras_version(path)
    return bool(version) and version.split(".")[0] == "3"


def _own_layer_classes(path: str) -> List[str]:
    """The registered names of the layers in a Keras 3 file's config that are not Keras' own
    (their `module` is not Keras'); empty when the config cannot be read."""
    own = set()
    for entry in saved_config.class_entries(saved_config.read_configs(path)):
        class_name = entry["class_name"]
        # Keras' own classes, and its tensor and slice markers ("__keras_tensor__"), are not the model's own.
        if ("config" in entry and class_name and not class_name.startswith("__")
                and not str(entry.get("module") or "").startswith("keras")):
            own.add(entry.get("registered_name") or class_name)
    return sorted(own)


def _saved_keras_version(path: str) -> Optional[str]:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("metadata.json")).get("keras_version")
        if os.path.isfile(path):
            import h5py  # pylint: disable=import-outside-toplevel  # A tf_keras dependency.
            with h5py.File(path, "r") as file:
                version = file.attrs.get("keras_version")
                return version.decode() if isinstance(version, bytes) else version
    except (OSError, KeyError, ValueError):
        return None
    return None


def load_as_tf_keras(path: str, trust_model_code: bool = False) -> tf_keras.Model:
    """Loads the Keras 3 model file `path` and returns it rebuilt as a flat tf_keras model.

    Args:
      path: a `.keras` or `.h5` file saved by Keras 3.
      trust_model_code: let Keras 3 load serialized Python (Lambda layers); off = safe mode.

    Returns:
      A functional tf_keras model with the same layer names, settings and weights.

    Raises:
      UserError: if Keras 3 cannot load the file, a layer or operation has no tf_keras
        counterpart, or the rebuilt model's outputs differ from the original's.
    """
    import keras  # pylint: disable=import-outside-toplevel  # Keras 3, installed with TensorFlow.
    version = _saved_keras_version(path)
    try:
        with _unbuilt_state_warning_silenced():
            original = keras.saving.load_model(path, compile=False, safe_mode=not trust_model_code)
    except Exception as error:  # pylint: disable=broad-except  # Any failure is the file's.
        if "safe_mode" in str(error):
            raise UserError(f"Keras {version} model file {path!r} holds serialized Python code (e.g. a Lambda layer) "
                            "and was not loaded; pass --trust_model_code only if you trust its author") from error
        own = _own_layer_classes(path)
        if own:
            raise UserError(f"cannot load Keras {version} model {path!r}: it uses layer "
                            f"{'class' if len(own) == 1 else 'classes'} {', '.join(map(repr, own))} of its own; "
                            f"{OWN_LAYERS_HINT}") from error
        raise UserError(f"cannot load Keras {version} model {path!r}: {first_line(error)}") from error
    if isinstance(original, keras.Sequential) and not original.built:
        raise UserError(f"Keras {version} Sequential model {path!r} was saved before it was built, so it has no input "
                        "shape and no weights; give its first layer an input (keras.Input(shape)) or call it on "
                        "data, train it, and save it again")
    if not isinstance(original, keras.Model) or not hasattr(_graph_of(keras, original), "_nodes_by_depth"):
        raise UserError(f"Keras {version} model {path!r} is not a functional or Sequential model; TF-MOT needs one "
                        "(rebuild it with tf_keras)")
    try:
        rebuilt = _Rebuild(keras).model(original)
        difference = _largest_relative_difference(original, rebuilt)
    except Exception as error:  # pylint: disable=broad-except  # Whatever stops the rebuild, said in one line.
        reason = str(error) if isinstance(error, UserError) else first_line(error)
        raise UserError(f"cannot rebuild Keras {version} model {path!r} with tf_keras for TF-MOT: {reason}") from error
    if difference > _agreement_tolerance(original):
        raise UserError(f"Keras {version} model {path!r} rebuilt with tf_keras computes other outputs (largest "
                        f"difference {difference:.2g} of the largest output); rebuild it with tf_keras")
    return rebuilt


@tf_keras.utils.register_keras_serializable(package="zscgan_tf")
class Keras3Layer(tf_keras.layers.Layer):
    """A Keras 3 layer that tf_keras has no class for (a user's own, or one Keras 3 added),
    run as it is inside a tf_keras model.

    With TensorFlow as Keras 3's backend its computation is TensorFlow ops and its weights
    are TensorFlow variables, which this layer holds as its own: tf_keras trains, freezes,
    saves and clones them like any layer's, and the TFLite converter traces through it.
    TF-MOT does not know it, so a student keeps it float (`quantize.quantize_student`).

    Args:
      keras3_config: the Keras 3 layer, serialized (`keras.saving.serialize_keras_object`);
        its class must be known to Keras 3 wherever this layer is made or loaded (a module
        given to `custom_objects.register`).
      **kwargs: tf_keras layer arguments. `dtype` (a policy's name) is the Keras 3
        layer's too: a mixed-precision teacher rebuilt to compute in float32 sets it so.
    """

    def __init__(self, keras3_config: Dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        import keras  # pylint: disable=import-outside-toplevel  # Keras 3, installed with TensorFlow.
        self.keras3_config = _with_dtype_policy(keras3_config, self.dtype_policy.name)
        try:
            with _unbuilt_state_warning_silenced():
                self.keras3_layer = keras.saving.deserialize_keras_object(self.keras3_config)
        except Exception as error:  # pylint: disable=broad-except  # The user's code may raise anything.
            if UNKNOWN_KERAS3_CLASS in str(error):
                raise UserError(f"cannot recreate Keras 3 layer {self.keras3_class_name!r}, whose class Keras 3 "
                                f"does not know; {OWN_LAYER_HINT}") from error
            raise UserError(f"cannot recreate Keras 3 layer {self.keras3_class_name!r}: {first_line(error)}") from error

    @property
    def keras3_class_name(self) -> str:
        return self.keras3_config.get("class_name", "")

    def build(self, input_shape):
        # Its serialized form builds the layer itself, where it was built, but the layers it
        # holds make their weights when first called: one call on zeros makes them all.
        with tf.init_scope():
            self.keras3_layer(_zeros_of_shape(input_shape, self.compute_dtype))
        # The TensorFlow variables under its Keras 3 ones, in its order: tf_keras tracks them as this layer's weights.
        self.keras3_variables = [variable.value for variable in self.keras3_layer.weights]
        super().build(input_shape)

    def call(self, inputs, *args, **kwargs):
        return self.keras3_layer(inputs, *args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "keras3_config": self.keras3_config}


@contextlib.contextmanager
def _unbuilt_state_warning_silenced():
    """Silences Keras 3's warning that a layer without a `build` method of its own "has unbuilt
    state" when it is made from its config: `Keras3Layer.build` calls it once, which builds
    the layers it holds."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=UNBUILT_STATE_WARNING)
        yield


def _with_dtype_policy(keras3_config: Dict[str, Any], policy: str) -> Dict[str, Any]:
    """A serialized Keras 3 layer computing under the dtype policy named `policy`."""
    dtype = keras3_config.get("config", {}).get("dtype")
    current = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if current == policy:
        return keras3_config
    return {**keras3_config, "config": {**keras3_config["config"], "dtype": policy}}


def _zeros_of_shape(shape, dtype):
    """Zeros of a tf_keras input shape (a `TensorShape`, or a list of them), one sample of an
    unknown batch size."""
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (tf.TensorShape, list, tuple)):
        return [_zeros_of_shape(each, dtype) for each in shape]
    return tf.zeros([1 if size is None else size for size in tf.TensorShape(shape).as_list()], dtype)


def _graph_of(keras_module, model):
    """The functional graph of Keras 3 `model`: a Sequential keeps one of its own (its
    `_functional`, once built), a functional model is one. A subclassed model has none
    (no `_nodes_by_depth`)."""
    return getattr(model, "_functional", None) if isinstance(model, keras_module.Sequential) else model


class _Rebuild:
    """Replays Keras 3 graphs on tf_keras tensors, one tf_keras layer per Keras 3 layer."""

    def __init__(self, keras_module):
        self.keras = keras_module
        self.layers: Dict[int, tf_keras.layers.Layer] = {}
        self.taken_names: set = set()

    def model(self, original) -> tf_keras.Model:
        if len(original.inputs) != 1:
            raise UserError(f"it has {len(original.inputs)} inputs; a single image input is required")
        reference = original.inputs[0]
        inputs = tf_keras.Input(batch_shape=tuple(reference.shape), dtype=reference.dtype,
                                name=_input_name(original))
        self.taken_names = {layer.name for layer in original.layers if not isinstance(layer, self.keras.Model)}
        outputs = self.run(_graph_of(self.keras, original), [inputs], prefix="")
        return tf_keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=original.name)

    def run(self, graph, inputs: List[tf.Tensor], prefix: str) -> List[tf.Tensor]:
        """`graph`'s outputs on `inputs`; `prefix` goes before the names of its layers that are taken."""
        outputs = graph._run_through_graph(  # pylint: disable=protected-access
            inputs, operation_fn=lambda operation: self.operation(operation, prefix))
        return list(tf.nest.flatten(outputs))

    def operation(self, operation, prefix: str):
        """The tf_keras callable that computes what the Keras 3 `operation` computes."""
        if isinstance(operation, self.keras.Model):
            return lambda *args, **kwargs: self.nested(operation, args, kwargs, prefix=f"{prefix}{operation.name}_")
        if flattening.is_augmentation_layer(operation):
            return lambda images, **kwargs: images  # What it does at inference; see `flattening`.
        activation_name = getattr(getattr(operation, "activation", None), "__name__", "")
        if isinstance(operation, self.keras.layers.Activation) and activation_name in HARD_ACTIVATIONS:
            return lambda inputs: HARD_ACTIVATIONS[activation_name](inputs, operation.name)
        if isinstance(operation, self.keras.layers.Layer):
            return self.layer(operation, prefix)
        function = ELEMENTWISE_OPERATIONS.get(type(operation).__name__)
        if function is None and type(operation).__module__.startswith(KERAS3_OPERATIONS_MODULE):
            # Any other Keras 3 operation (keras.ops.mean, concatenate, reshape, clip, x[..., :3],
            # ...): its TensorFlow implementation run on tf_keras tensors, which records each
            # TensorFlow call as a TFOpLambda layer. The agreement check below vouches for it.
            return lambda *args, **kwargs: operation.call(*args, **kwargs)
        if function is None:
            raise UserError(f"operation {operation.name!r} ({type(operation).__name__}) has no tf_keras counterpart "
                            "here")
        return function

    def nested(self, nested, args, kwargs, prefix: str):
        graph = _graph_of(self.keras, nested)
        if not hasattr(graph, "_nodes_by_depth"):
            raise UserError(f"nested model {nested.name!r} is subclassed")
        unexpected = flattening.undroppable_call_arguments(kwargs)
        if unexpected:
            raise UserError(f"nested model {nested.name!r} is called with {', '.join(unexpected)}")
        outputs = self.run(graph, tf.nest.flatten(args), prefix)
        return outputs if len(outputs) > 1 else outputs[0]

    def layer(self, original, prefix: str):
        if id(original) in self.layers:
            return self.layers[id(original)]
        # Keras' own layers by their class names; a user's layer named as one of them (a "Softmax"
        # of their own) is not that layer.
        keras_own = type(original).__module__.startswith(KERAS3_MODULE)
        if keras_own and type(original).__name__ == "Lambda":  # Its code was trusted to load; it runs as it is.
            self.layers[id(original)] = tf_keras.layers.Lambda(original.function, name=original.name)
            return self.layers[id(original)]
        layer_class = getattr(tf_keras.layers, type(original).__name__, None) if keras_own else None
        name = flattening.claim_name(original.name, prefix, self.taken_names)
        if layer_class is None:  # A user's own layer, or one Keras 3 added: it runs as it is.
            rebuilt = Keras3Layer(self.keras.saving.serialize_keras_object(original), name=name,
                                  dtype=original.dtype_policy.name)
        else:
            config = _tf_keras_config(original.get_config())
            config["name"] = name
            rebuilt = _from_config_dropping_unknown_settings(layer_class, config, original.name)
        weights = original.get_weights()

        def call(*args, **kwargs):
            outputs = rebuilt(*args, **kwargs)
            if len(rebuilt.weights) != len(weights):
                raise UserError(f"layer {original.name!r} ({type(original).__name__}) has {len(weights)} weights in "
                                f"Keras 3 but {len(rebuilt.weights)} in tf_keras")
            rebuilt.set_weights(weights)
            return outputs

        self.layers[id(original)] = rebuilt
        return call


def _input_name(original) -> str:
    input_layers = [layer for layer in original.layers if type(layer).__name__ == "InputLayer"]
    return input_layers[0].name if input_layers else "input"


def _tf_keras_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A Keras 3 layer config in the form tf_keras reads: dtype policies as names, no training-only settings."""
    converted = {}
    for key, value in config.items():
        if key.endswith(TRAINING_ONLY_SETTING_SUFFIXES):
            continue
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        converted[key] = value
    return converted


def _from_config_dropping_unknown_settings(layer_class, config: Dict[str, Any], name: str):
    """`layer_class.from_config(config)`, leaving out settings tf_keras does not know
    (Keras 3's `synchronized`, `quantization_config`, ...). Any that mattered shows in the
    outputs' agreement check."""
    config = dict(config)
    while True:
        try:
            return layer_class.from_config(config)
        except TypeError as error:
            unknown = [key for key in UNKNOWN_SETTING.findall(str(error)) if key in config]
            if not unknown:
                raise UserError(f"layer {name!r} ({layer_class.__name__}): {first_line(error)}") from error
            for key in unknown:
                del config[key]
        except (ValueError, KeyError) as error:
            raise UserError(f"layer {name!r} ({layer_class.__name__}): {first_line(error)}") from error


def _agreement_tolerance(original) -> float:
    """How closely a rebuild of `original` must agree with it: looser where its layers compute
    in float16 or bfloat16, whose rounding the two implementations need not share."""
    compute_dtypes = {str(getattr(layer, "compute_dtype", "float32")) for layer in original.layers}
    return max([AGREEMENT_TOLERANCE] + [REDUCED_PRECISION_AGREEMENT_TOLERANCES.get(dtype, AGREEMENT_TOLERANCE)
                                        for dtype in compute_dtypes])


def _largest_relative_difference(original, rebuilt: tf_keras.Model) -> float:
    """The largest difference between the two models' outputs on random pixels, relative to
    the original's largest output."""
    # A model of any image size is checked at one that every Keras Application takes.
    shape = (CHECK_BATCH_SIZE,) + tuple(CHECK_IMAGE_SIZE if size is None else size
                                        for size in rebuilt.inputs[0].shape[1:])
    inputs = np.random.RandomState(CHECK_SEED).uniform(0.0, PIXEL_MAX, shape).astype(np.float32)
    # TensorFlow's "5 out of the last 5 calls to <function conv.<locals>._conv_xla> triggered
    # tf.function retracing": Keras 3 compiles a function of its own for each grouped
    # convolution it runs eagerly, which says nothing wrong.
    with native_output.tensorflow_log_lines_dropped(RETRACING_WARNING):
        outputs = original(inputs, training=False)
    expected = [tf.convert_to_tensor(output).numpy() for output in tf.nest.flatten(outputs)]
    actual = [output.numpy() for output in tf.nest.flatten(rebuilt(inputs, training=False))]
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, actual))
    scale = max(max(float(np.max(np.abs(a))) for a in expected), SMALLEST_OUTPUT_SCALE)
    return difference / scale
