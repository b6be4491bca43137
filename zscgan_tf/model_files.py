"""Saved Keras models read back as tf_keras models, and the files that are not one.

`load_model_file` reads a `.keras` or `.h5` file or a SavedModel directory: one saved by
Keras 3 is rebuilt with tf_keras (`keras3_conversion`), TF-MOT's pruning and clustering
wrappers are taken off, serialized Python runs only when trusted, and a TFLite, ONNX or
PyTorch file, a checkpoint or a weights-only file is named for what it is.
"""

import contextlib
import importlib
import os
import zipfile
from types import ModuleType, SimpleNamespace
from typing import FrozenSet, Optional

import tensorflow_model_optimization as tfmot
import tf_keras
from tf_keras.src.saving import serialization_lib

from zscgan_tf import custom_objects, keras3_conversion, native_output, saved_config
from zscgan_tf.errors import UserError, first_line

# Model files of other frameworks, by suffix, and the signatures that tell TFLite and HDF5 files.
OTHER_FRAMEWORK_SUFFIXES = {".onnx": "an ONNX model", ".pt": "a PyTorch model", ".pth": "a PyTorch model",
                            ".safetensors": "a safetensors file of weights", ".mlmodel": "a Core ML model",
                            ".pb": "a frozen TensorFlow graph",
                            ".json": "a JSON file (a teacher's description, or an architecture saved with "
                                     "model.to_json, without weights)"}
TFLITE_FILE_IDENTIFIER = b"TFL3"
HDF5_SIGNATURE = b"\x89HDF"
HDF5_SUFFIXES = (".h5", ".hdf5")
KERAS_ARCHIVE_SUFFIX = ".keras"
# The architecture a `.keras` archive holds, which tf_keras reads first.
KERAS_ARCHIVE_CONFIG = "config.json"
COMPILE_CONFIG_KEY = "compile_config"
# TF-MOT's pruning and clustering wrappers, which a model saved during that training keeps,
# by class, with what unwraps them; the wrapped layers hold the pruned or clustered weights.
TF_MOT_TRAINING_WRAPPERS = {"PruneLowMagnitude": "pruning", "ClusterWeights": "clustering",
                            "ClusterWeightsMHA": "clustering"}
# The packages whose modules a saved config may name: Keras', TensorFlow's, TF-MOT's and this
# package's. tf_keras imports the module a `.keras` file names for a class or function it does
# not know, in safe mode too, which runs that module's code and takes anything in it (Keras 3
# imports only Keras' own packages, and only Keras classes).
TRUSTED_MODULE_PACKAGES = frozenset({"keras", "tf_keras", "tensorflow", "tensorflow_model_optimization", "zscgan_tf"})
# How tf_keras' warning that a mixed-precision model may run slowly without a GPU begins.
MIXED_PRECISION_DEVICE_CHECK = "Mixed precision compatibility check"


def is_tflite_file(path: str) -> bool:
    """Whether the file at `path` is a TFLite flatbuffer (its identifier, at bytes 4 to 8)."""
    with open(path, "rb") as model_file:
        return model_file.read(8)[4:8] == TFLITE_FILE_IDENTIFIER


def check_model_file_exists(path: str) -> None:
    """Refuses a model file that does not exist: no file, directory or TensorFlow checkpoint
    (`<path>.index`) of that name."""
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise UserError(f"model file {path!r} does not exist")


def load_model_file(path: str, trust_model_code: bool = False) -> tf_keras.Model:
    """Loads a saved tf_keras model (`.keras`, `.h5` or SavedModel directory) without compiling.

    A `.keras` or `.h5` file saved by Keras 3 is loaded with Keras 3 and rebuilt with
    tf_keras (`keras3_conversion`).

    Keras safe mode is on unless `trust_model_code`: serialized Python (Lambda layers)
    in `.keras` and `.h5` files is refused rather than run, and so is a file naming a module
    for Keras to import outside Keras, TensorFlow, TF-MOT and this package
    (`modules_outside_keras_refused`). (A SavedModel restores traced graphs, not Python
    code.)

    Raises:
      UserError: if the file is missing, unreadable, or not a Keras model.
    """
    check_model_file_exists(path)
    if (os.path.isfile(path) and os.path.splitext(path)[1].lower() != KERAS_ARCHIVE_SUFFIX
            and _is_keras_archive(path)):
        raise UserError(f"{path!r} is a Keras archive (model.save's {KERAS_ARCHIVE_SUFFIX} format) under another "
                        f"suffix, and Keras reads a model file by its suffix: rename it to end in "
                        f"{KERAS_ARCHIVE_SUFFIX}")
    other_kind = _other_model_kind(path)
    if other_kind:
        raise UserError(f"{path!r} is {other_kind}; the method needs the Keras model itself, its layers and "
                        "BatchNorm statistics: pass the model saved with model.save (.keras or .h5)")
    # tf_keras' "... may run slowly because this machine does not have a GPU": `load_teacher`
    # rebuilds a mixed-precision model to compute in float32 and says so.
    with native_output.tensorflow_log_lines_dropped(MIXED_PRECISION_DEVICE_CHECK):
        return _load_model_file(path, trust_model_code)


def refused_as_python_code(error: BaseException) -> bool:
    """Whether `error` is Keras safe mode refusing the serialized Python of a model file (a
    Lambda layer's code), which would run as the file loads."""
    message = first_line(error)
    return "safe_mode" in message or "Lambda" in message


def _other_model_kind(path: str) -> str:
    """What a model file other than a Keras model is, as "a TFLite model, which holds converted ops", or ""."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")) and not os.path.exists(
                os.path.join(path, "keras_metadata.pb")):
            return ("a SavedModel without Keras metadata (tf.saved_model.save or Keras 3's model.export write one), "
                    "which holds traced functions")
        return ""
    if path.endswith(".index") or ".data-0" in os.path.basename(path) or not os.path.exists(path):
        return ("a TensorFlow checkpoint (model.save_weights or tf.train.Checkpoint), which holds weights without "
                "the architecture")
    with open(path, "rb") as model_file:
        header = model_file.read(8)
    if not header:
        return "an empty file (a copy or download that did not finish?)"
    if header[4:8] == TFLITE_FILE_IDENTIFIER:
        return "a TFLite model, which holds converted ops"
    suffix = os.path.splitext(path)[1].lower()
    if suffix in HDF5_SUFFIXES and not header.startswith(HDF5_SIGNATURE):
        import h5py  # A dependency of tf_keras.
        if not h5py.is_hdf5(path):  # Its signature may follow a user block, at 512, 1024, ... bytes.
            return f"not an HDF5 file, though named {suffix} (HDF5's signature is not in it)"
    damaged_archive = not_a_keras_archive(path)
    if damaged_archive:
        return damaged_archive
    other_framework = OTHER_FRAMEWORK_SUFFIXES.get(os.path.splitext(path)[1].lower())
    if other_framework:
        return other_framework
    if header.startswith(HDF5_SIGNATURE):
        import h5py  # A dependency of tf_keras.
        try:
            with h5py.File(path, "r") as h5_file:
                if "model_config" not in h5_file.attrs:
                    return "an HDF5 file of weights without the architecture (model.save_weights)"
        except OSError:
            return ""  # Unreadable: loading it says why.
    return ""



def not_a_keras_archive(path: str) -> str:
    """"not a Keras archive, ..." for a `.keras` file that is neither a whole zip nor HDF5 (which
    tf_keras reads under any suffix), where loading says only h5py's "file signature not
    found", or a zip without the `config.json` model.save writes (another program's archive),
    where it says "There is no item named 'config.json' in the archive"; else ""."""
    if not (os.path.isfile(path) and path.lower().endswith(KERAS_ARCHIVE_SUFFIX)):
        return ""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                if KERAS_ARCHIVE_CONFIG in archive.namelist():
                    return ""
        except zipfile.BadZipFile:
            return ""  # Its directory is damaged: loading it says how.
        return (f"not a Keras archive, though named {KERAS_ARCHIVE_SUFFIX} (a zip file without the "
                f"{KERAS_ARCHIVE_CONFIG} that model.save writes into one: another program's archive?)")
    import h5py  # A dependency of tf_keras.
    if h5py.is_hdf5(path):
        return ""
    return (f"not a Keras archive, though named {KERAS_ARCHIVE_SUFFIX} (not a whole zip file: a copy or download "
            "that did not finish?)")


def _is_keras_archive(path: str) -> bool:
    """Whether `path` is a zip holding what model.save writes to a `.keras` file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return {KERAS_ARCHIVE_CONFIG, "metadata.json"} <= set(archive.namelist())


def _load_model_file(path: str, trust_model_code: bool) -> tf_keras.Model:
    if keras3_conversion.saved_by_keras3(path):
        return keras3_conversion.load_as_tf_keras(path, trust_model_code=trust_model_code)
    saved_classes = saved_layer_classes(path)
    wrappers = saved_classes & set(TF_MOT_TRAINING_WRAPPERS)
    try:
        # The scope covers HDF5 files too, whose loader has no safe_mode argument.
        with tf_keras.utils.custom_object_scope(_package_custom_objects()), \
                serialization_lib.SafeModeScope(safe_mode=not trust_model_code), \
                contextlib.ExitStack() as scopes:
            if wrappers:
                scopes.enter_context(tfmot.sparsity.keras.prune_scope())
                scopes.enter_context(tfmot.clustering.keras.cluster_scope())
            if not trust_model_code:
                scopes.enter_context(modules_outside_keras_refused())
            model = tf_keras.models.load_model(path, compile=False)
            if wrappers:
                model = _without_tfmot_wrappers(model)
    except ModuleImportRefused as error:
        raise UserError(imported_module_refusal(error, f"model file {path!r}")) from error
    except Exception as error:
        message = first_line(error)
        if refused_as_python_code(error):
            raise UserError(f"model file {path!r} holds serialized Python code (e.g. a Lambda layer) and was not "
                            "loaded; pass --trust_model_code only if you trust its author") from error
        # Classes tf_keras does not know, unless TF-MOT's scopes were lent to it (their classes are known then).
        unknown_candidates = () if wrappers else saved_classes
        raise UserError(f"cannot load model {path!r}: "
                        f"{custom_objects.explained(message, unknown_candidates)}") from error
    if not isinstance(model, tf_keras.Model):
        raise UserError(f"{path!r} is not a tf_keras model (loaded a {type(model).__name__})")
    return model


def _without_tfmot_wrappers(model: tf_keras.Model) -> tf_keras.Model:
    """`model` with its pruning and clustering wrappers replaced by the layers they wrap.

    TF-MOT's strip functions reuse the unwrapped layers, which are then called in two
    graphs (the BN taps need each layer called once); the stripped model is cloned again
    into layers of its own, with its weights.
    """
    stripped = tfmot.clustering.keras.strip_clustering(tfmot.sparsity.keras.strip_pruning(model))
    rebuilt = tf_keras.models.clone_model(stripped)
    rebuilt.set_weights(stripped.get_weights())
    return rebuilt


def saved_layer_classes(path: str) -> FrozenSet[str]:
    """The class names in a saved model's config, and the names of functions saved by name
    (an `Activation(tf.nn.log_softmax)` saves `log_softmax_v2`), read without loading the
    model (`saved_config`); empty when there is no readable config. The compile config (a
    `.keras` file's loss and metrics) is left out: models load without compiling."""
    names = set()
    for config in saved_config.read_configs(path):
        if isinstance(config, dict):
            config = {key: value for key, value in config.items() if key != COMPILE_CONFIG_KEY}
        for entry in saved_config.class_entries(config):
            saved_function = entry["class_name"] == "function" and isinstance(entry.get("config"), str)
            names.add(entry["config"] if saved_function else entry["class_name"])
    return frozenset(names)


class ModuleImportRefused(Exception):
    """tf_keras was about to import a module that a saved config names, outside
    `TRUSTED_MODULE_PACKAGES` (`modules_outside_keras_refused`)."""

    def __init__(self, module: str):
        super().__init__(f"the import of module {module!r}, which a saved config names, was refused")
        self.module = module


@contextlib.contextmanager
def modules_outside_keras_refused():
    """Within the block, tf_keras' loaders import no module outside `TRUSTED_MODULE_PACKAGES`
    that a saved config names, and raise `ModuleImportRefused` instead.

    tf_keras imports the module a `.keras` file names for a class or function it does not
    know (registered ones are found first), safe mode or not: importing runs the module's
    code, and a file from someone else could name a `.py` file sent beside it, in the
    directory a command runs from. Its one such import, in `serialization_lib`, is the
    one guarded (a test checks that it still is).
    """
    def guarded_import(name: str, package: Optional[str] = None) -> ModuleType:
        if name.split(".")[0] not in TRUSTED_MODULE_PACKAGES:
            raise ModuleImportRefused(name)
        return importlib.import_module(name, package)

    original = serialization_lib.importlib
    serialization_lib.importlib = SimpleNamespace(import_module=guarded_import)
    try:
        yield
    finally:
        serialization_lib.importlib = original


def imported_module_refusal(error: ModuleImportRefused, loaded: str) -> str:
    """The refusal of the model file `loaded` ("model file 'x.keras'") whose load `error`
    stopped, advising `--teacher_custom_objects` and `--trust_model_code`."""
    return (f"{loaded} names Python module {error.module!r} for a class or function Keras does not know, and "
            "Keras would import that module as it loads, running its code; pass --teacher_custom_objects=<the "
            "module or .py file> if it defines the model's layers, or --trust_model_code only if you trust the "
            "file's author")


def generator_file_message(path: str, flag: str) -> str:
    """The refusal of a generator saved by this package (its conditional BN layers tell it)
    given as `--flag`, where a classifier belongs, or "" when `path` holds no generator."""
    if "ConditionalBatchNormalization" not in saved_layer_classes(path):
        return ""
    wanted = ("a quantization-aware student: pass the run's student.h5 as --student" if flag == "student" else
              "a classifier: pass the classifier it was trained against as --teacher")
    return (f"--{flag} {path!r} is a generator saved by this package (it makes images), not {wanted} "
            "(tools/convert.py takes the generator as --generator)")


def _package_custom_objects() -> dict:
    from zscgan_tf import generator  # Generators are models too; loading one by mistake should say so clearly.
    return {"ConditionalBatchNormalization": generator.ConditionalBatchNormalization,
            "InputSpaceMapping": generator.InputSpaceMapping}
