"""A user's own Keras classes and functions, made known to Keras before their model loads.

A classifier with a custom layer (or activation, initializer, ...) saves its class name
and config, not its code; loading it needs the code. `register` imports the modules the
user names (dotted module names, or `.py` files) and registers every Keras object they
define under its own name, so the teacher, the TF-MOT student built from it and every
later reload (a resumed run, `tools/convert.py`) find it. Classes registered with
`@register_keras_serializable` are found under their `package>Name` too. A model saved
by Keras 3 needs its classes written for Keras 3; they are registered with Keras 3, and
its layers run inside the tf_keras rebuild as they are (`keras3_conversion`).

Example:

  register(["my_project.layers", "/work/extra_activations.py"])
  model = tf_keras.models.load_model("classifier.keras")
"""

import importlib
import importlib.abc
import importlib.util
import inspect
import os
import re
import sys
from types import ModuleType
from typing import Dict, Iterable, List, Sequence

import tf_keras

from zscgan_tf.errors import UserError, first_line

# How tf_keras says a saved config names a class or function it has not been given.
UNKNOWN_OBJECT_MESSAGES = (re.compile(r"Cannot deserialize object of type `(?P<name>[^`]+)`"),
                           re.compile(r"Unknown (?P<kind>[a-z ]+): '(?P<name>[^']+)'"))

_HOW_TO_PROVIDE = "pass --teacher_custom_objects=<the module or .py file that defines it>"
# A `.keras` file keeps a Python function that has no registered name (a lambda given as an
# activation) as bytecode in the layer's config, which no loader rebuilds: tf_keras then
# names the layer and dumps that config, bytecode and all.
_UNLOADABLE_FUNCTION_MESSAGE = re.compile(
    r"Error when deserializing class '(?P<class_name>[^']+)' using config=\{'name': '(?P<layer>[^']+)'.*"
    r"\{'value': \['[A-Za-z0-9+/=]{40}")
# Where tf_keras finds the classes a saved config names besides its layers and registered ones.
KERAS_OBJECT_MODULES = (tf_keras.initializers, tf_keras.regularizers, tf_keras.constraints, tf_keras.activations,
                        tf_keras.mixed_precision, tf_keras.optimizers, tf_keras.losses, tf_keras.metrics)

# Base classes whose subclasses a saved model's config names by class.
KERAS_BASE_CLASSES = (tf_keras.layers.Layer, tf_keras.initializers.Initializer, tf_keras.regularizers.Regularizer,
                      tf_keras.constraints.Constraint, tf_keras.losses.Loss, tf_keras.metrics.Metric,
                      tf_keras.optimizers.schedules.LearningRateSchedule)


class _ImportedSource(importlib.abc.SourceLoader):
    """Loads a `.py` file from its text as read once, at import.

    AutoGraph converts a layer's `call` from its source, which it reads when it first
    traces it, maybe hours into a run. Loaded from the file itself, a file edited in the
    meantime was read as it is then: lines moved by the edit crashed the trace (autograph
    cannot find the function), and an edit that moved none traced the edited code, not the
    code the run had imported. This loader compiles the module's code under the name
    `<path> (as imported)`, which exists nowhere, so Python's `linecache` (which `inspect`
    and AutoGraph read for a function's source) asks this loader for the text; tracebacks
    show it too. The module's `__file__` stays `<path>`: a module that reads a file beside
    itself finds it.
    """

    SUFFIX = " (as imported)"

    def __init__(self, path: str):
        with open(path, "rb") as source_file:
            self._source = source_file.read()
        self._path = path + self.SUFFIX

    def get_filename(self, fullname: str) -> str:  # pylint: disable=unused-argument
        return self._path

    def get_data(self, path: str) -> bytes:
        if path != self._path:  # Only the module's own source; no bytecode cache.
            raise OSError(f"{path} is not stored")
        return self._source


def _import(source: str) -> ModuleType:
    """Imports a `.py` file as a module named after the file, or a dotted module name; a
    file, and a dotted module that is a plain `.py` file not imported yet, from its text as
    read now (`_ImportedSource`)."""
    try:
        if source.endswith(".py"):
            if not os.path.isfile(source):
                raise UserError(f"custom objects file {source!r} does not exist")
            return _import_as_read_now(os.path.splitext(os.path.basename(source))[0], os.path.abspath(source))
        if os.sep in source or os.path.exists(source):
            raise UserError(f"custom objects {source!r} is neither a .py file nor a module name (a dotted name "
                            "such as my_package.layers, found on the Python path)")
        if source not in sys.modules:
            spec = importlib.util.find_spec(source)  # Imports its parent packages.
            if (spec is not None and spec.submodule_search_locations is None and spec.origin
                    and spec.origin.endswith(".py") and os.path.isfile(spec.origin)):
                return _import_as_read_now(source, spec.origin)
        return importlib.import_module(source)
    except UserError:
        raise
    except SystemExit as exit_:  # The module's code ended the import; the command goes on to say so.
        raise UserError(f"cannot import custom objects from {source!r}: it called sys.exit({exit_.code!r}) "
                        "when imported") from exit_
    except Exception as error:  # pylint: disable=broad-except
        # The user's code may raise anything on import; what matters is which module and why.
        raise UserError(f"cannot import custom objects from {source!r}: {type(error).__name__}: "
                        f"{first_line(error)}") from error


def _import_as_read_now(name: str, path: str) -> ModuleType:
    """Imports the file `path` as the module `name`, from its text as read now."""
    loader = _ImportedSource(path)
    spec = importlib.util.spec_from_loader(name, loader, origin=path)
    spec.has_location = True  # __file__ is set from origin; the code's own file name is the loader's.
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # As an import would; classes pickled or compared by module find it.
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # As a failed import leaves it.
        raise
    parent, _, child = name.rpartition(".")
    if parent:  # As an import binds it: `import package.layers` then finds `package.layers`.
        setattr(sys.modules[parent], child, module)
    return module


def keras_objects(module: ModuleType) -> Dict[str, object]:
    """The Keras classes (subclasses of `KERAS_BASE_CLASSES`) and functions `module` defines
    itself (not those it imports), by name.

    A name Keras has already (a helper `relu`, say) is left out: registered, it would
    replace Keras' own wherever a saved model names it.
    """
    builtin = _builtin_names()
    found = {}
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__ or name in builtin:
            continue
        if inspect.isclass(value) and issubclass(value, KERAS_BASE_CLASSES):
            found[name] = value
        elif inspect.isfunction(value):
            found[name] = value  # A custom activation is saved as its function's name.
    return found


def keras3_classes(module: ModuleType) -> Dict[str, type]:
    """The Keras 3 classes (layers, initializers, regularizers, constraints) `module` defines
    itself, by name: what a model saved by Keras 3 needs to load (`keras3_conversion`)."""
    keras = sys.modules.get("keras")  # Keras 3; a module that defines its classes has imported it.
    if keras is None or not hasattr(keras, "saving"):
        return {}
    bases = (keras.layers.Layer, keras.initializers.Initializer, keras.regularizers.Regularizer,
             keras.constraints.Constraint)
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
            and inspect.isclass(value) and issubclass(value, bases)}


def register(sources: Sequence[str]) -> Dict[str, object]:
    """Imports each module or `.py` file of `sources` and registers its Keras objects
    globally: tf_keras' with tf_keras, Keras 3 classes with Keras 3. Returns what was
    registered.

    Raises:
      UserError: if a source cannot be imported, or defines no Keras class or function.
    """
    registered, registered_with_keras3 = {}, {}
    for source in sources:
        module = _import(source)
        objects, keras3_objects = keras_objects(module), keras3_classes(module)
        if not objects and not keras3_objects:
            raise UserError(f"custom objects module {source!r} defines no Keras layer, other Keras class or "
                            "function")
        registered.update(objects)
        registered_with_keras3.update(keras3_objects)
    tf_keras.utils.get_custom_objects().update(registered)
    if registered_with_keras3:
        sys.modules["keras"].saving.get_custom_objects().update(registered_with_keras3)
    return {**registered, **registered_with_keras3}


def _builtin_names() -> frozenset:
    """Every name tf_keras resolves by itself: its layers (from its deserialization table) and
    the attributes of `KERAS_OBJECT_MODULES`."""
    from tf_keras.src.layers import serialization  # pylint: disable=import-outside-toplevel

    serialization.populate_deserializable_objects()
    names = set(serialization.LOCAL.ALL_OBJECTS)
    for module in KERAS_OBJECT_MODULES:
        names.update(name for name in dir(module) if not name.startswith("_"))
    return frozenset(names)


def unknown_classes(class_names: Iterable[str]) -> List[str]:
    """Those of a saved config's class names that tf_keras cannot resolve: neither its own
    (layers, initializers, ...) nor registered."""
    known = _builtin_names() | set(tf_keras.utils.get_custom_objects())
    return sorted(name for name in class_names if name not in known)


def explained(load_error_message: str, saved_class_names: Iterable[str] = ()) -> str:
    """Why a model did not load: when tf_keras did not know a class of `saved_class_names`
    (which it may report as anything, e.g. "'str' object is not callable") or a function
    its message names, a line saying how to provide it; else the message itself."""
    unloadable = _UNLOADABLE_FUNCTION_MESSAGE.search(load_error_message)
    if unloadable:
        return (f"its {unloadable.group('class_name')} layer {unloadable.group('layer')!r} holds a Python function "
                "saved as bytecode (a lambda given as its activation, say), which Keras cannot load; save the model "
                "with a Keras activation there, or with a named function of your own (registered with "
                f"tf_keras.saving.register_keras_serializable; then {_HOW_TO_PROVIDE})")
    unknown = unknown_classes(saved_class_names)
    if unknown:
        # Classes are CamelCase; a function saved by name (an activation) is lower case.
        named = ", ".join(f"{'class' if name[:1].isupper() else 'function'} {name!r}" for name in unknown)
        return f"it uses {named}, which Keras does not know; {_HOW_TO_PROVIDE}"
    for pattern in UNKNOWN_OBJECT_MESSAGES:
        found = pattern.search(load_error_message)
        if found:
            kind = found.groupdict().get("kind") or "class"
            return f"it uses {kind} {found.group('name')!r}, which Keras does not know; {_HOW_TO_PROVIDE}"
    return load_error_message
