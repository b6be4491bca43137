"""zscgan_tf: data-free quantization of Keras classifiers with a zero-shot conditional GAN.

TF-MOT works only with Keras 2, so the legacy Keras switch is set here, before
TensorFlow is first imported by anything in this package. TensorFlow is imported here
too, without the start-up lines of its C++ code that say nothing wrong, and, in a command,
with Ctrl-C answered in one line until the command answers it itself (`start_up`).
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ info and warning lines after its start (its start-up lines come before
# it reads this, and `start_up` keeps them out of the way).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zscgan_tf import start_up  # pylint: disable=wrong-import-position  # After the switches above.

# `sys.orig_argv`: while `python -m` imports the package, `sys.argv` is ["-m"].
if start_up.started_as_command() and "--verbose" not in getattr(sys, "orig_argv", sys.argv):
    start_up.one_line_interrupt_while_starting()  # Until `cli.run_command` answers Ctrl-C itself.
start_up.import_tensorflow()

__version__ = "0.1.0"

# What a program or notebook uses most, by the module that defines it; each module is imported
# when one of its names is first used, so that `import zscgan_tf` stays as quick as it was:
#
#     import zscgan_tf
#     report = zscgan_tf.run(zscgan_tf.RunConfig(work_dir="runs/mine",
#                                                teacher=zscgan_tf.TeacherSource("my_classifier.keras")))
PUBLIC_NAMES = {
    "config": ("RunConfig", "GeneratorConfig", "LossConfig", "GeneratorTrainingConfig", "DistillationConfig",
               "QuantizationConfig", "EvaluationConfig"),
    "errors": ("UserError", "InUseError"),
    "export": ("convert_to_tflite",),
    "generator": ("load_generator",),
    "pipeline": ("run",),
    "quantization_stages": ("load_student",),
    "representative_data": ("representative_dataset_from_array",),
    "reproducibility": ("enable_deterministic_execution",),
    "teachers": ("TeacherSource", "Teacher", "load_teacher"),
    "tflite_model": ("inspect_tflite",),
    "training_loop": ("NonFiniteLossError", "TrainingInterrupted"),
}
_MODULE_OF = {name: module for module, names in PUBLIC_NAMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    """A name of `PUBLIC_NAMES`, from its module (PEP 562)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # pylint: disable=import-outside-toplevel
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # Found directly from now on.
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
