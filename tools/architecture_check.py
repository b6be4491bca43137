"""Checks which Keras Applications architectures quantize and export fully integer.

For each architecture, built by `tf_keras.applications` without weights (untrained,
nothing downloaded) at a small input size, saved to a file and read back (with tf_keras'
`load_model`, or as the pipeline reads a Keras 3 file), its final softmax removed and frozen
as `teachers.load_teacher` leaves a teacher, and its BN statistics set to those of the random
inputs below, as a trained teacher's are of its data (`_as_teacher`), it builds the
W8A8 TF-MOT student as the pipeline does (`quantize.quantize_student`, ranges calibrated
on random inputs), takes one compiled distillation step with the pipeline's default
settings (feature term included) on those inputs, exports the student and the float
model post-training to int8 TFLite (`export.convert_to_tflite`, the same random inputs
as representative dataset), and prints one table row per architecture: the layer types
TF-MOT left float, whether the QAT step ran, whether each int8 file is fully integer
(else the first ops that are not, or the error), the QAT file's size and the time
taken. Accuracy is not measured: the models are untrained. This answers "will my
architecture go through?" before a long run. It exits with 1, naming them, when any
architecture does not go through (a row with "no" or "error"), and 2 for bad input.

With `--keras=3` each model is built by Keras 3's `keras.applications` instead, saved,
and read back as the pipeline reads a Keras 3 file (`keras3_conversion`).

  python tools/architecture_check.py                                    # the default list
  python tools/architecture_check.py --architectures=MobileNetV3Small:32,EfficientNetB0:64
  python tools/architecture_check.py --keras=3
"""

import os
import sys
import tempfile
import time
from typing import NamedTuple, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import zscgan_tf  # noqa: F401,E402  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import numpy as np  # noqa: E402
import tf_keras  # noqa: E402
from absl import flags  # noqa: E402

from zscgan_tf import bn_stats, cli, distill, export, keras3_conversion, logits, quantize, tflite_model  # noqa: E402
from zscgan_tf import representative_data  # noqa: E402
from zscgan_tf.config import DistillationConfig  # noqa: E402
from zscgan_tf.errors import UserError, first_line  # noqa: E402

# Each at the smallest input it takes, or 32x32.
DEFAULT_ARCHITECTURES = (
    "ResNet50:32", "ResNet50V2:32", "MobileNet:32", "MobileNetV2:32", "MobileNetV3Small:32",
    "MobileNetV3Large:32", "DenseNet121:32", "NASNetMobile:32", "EfficientNetB0:32", "EfficientNetV2B0:32",
    "RegNetX002:32", "InceptionV3:75", "Xception:71",
)
# Keras 3's applications have no RegNet.
KERAS3_DEFAULT_ARCHITECTURES = tuple(spec for spec in DEFAULT_ARCHITECTURES if not spec.startswith("RegNet"))
NUM_CLASSES = 10
# Ops named in a row whose export is not fully integer.
MAX_OPS_SHOWN = 3
# The longest error quoted in a table cell.
MAX_CELL_CHARACTERS = 160

FLAGS = flags.FLAGS
flags.DEFINE_list("architectures", list(DEFAULT_ARCHITECTURES),
                  "tf_keras.applications names, each with its square input size: Name:size (with --keras=3 "
                  "the default leaves out RegNetX002, which Keras 3 lacks).")
flags.DEFINE_integer("calibration_samples", 8, "Random inputs that calibrate both int8 models.")
flags.DEFINE_enum("keras", "2", ["2", "3"], "Build the models with tf_keras (2) or with Keras 3, saved and rebuilt "
                  "with tf_keras as the pipeline reads a Keras 3 model file (3).")
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")



class Row(NamedTuple):
    """One table row, each cell as printed."""
    architecture: str
    float_layer_types: str
    qat_step: str
    qat_int8: str
    ptq_int8: str
    qat_kib: str
    seconds: str

    def goes_through(self) -> bool:
        """Whether a QAT step ran and both int8 exports are fully integer."""
        return self.qat_step == self.qat_int8 == self.ptq_int8 == "yes"


def parse_architecture(spec: str, keras_version: str = "2"):
    """`Name:size` -> (the tf_keras.applications (or, for Keras 3, keras.applications) constructor,
    its name, the size)."""
    name, _, size = spec.partition(":")
    if keras_version == "3":
        import keras  # pylint: disable=import-outside-toplevel  # Keras 3, installed with TensorFlow.
        # The tf_keras model the pipeline makes of a Keras 3 file.
        builder = _saved_and_read_back(getattr(keras.applications, name, None), keras3_conversion.load_as_tf_keras)
        package = "keras.applications"
    else:
        builder = _saved_and_read_back(getattr(tf_keras.applications, name, None), _read_as_a_new_process)
        package = "tf_keras.applications"
    if not callable(builder) or not name[:1].isupper():
        raise UserError(f"{name!r} is not a {package} model (e.g. MobileNetV3Small)")
    if not size.isdigit() or int(size) < 1:
        raise UserError(f"{spec!r}: give the input size as Name:size, e.g. {name}:32")
    return builder, name, int(size)


def _saved_and_read_back(builder, read):
    """A builder of `builder`'s model saved to a `.keras` file and read back by `read(path)`."""
    if builder is None:
        return None

    def build(**arguments):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.keras")
            builder(**arguments).save(path)
            return read(path)
    return build


def _read_as_a_new_process(path):
    """A tf_keras model file loaded with Keras' automatic layer names started again, as in a
    new process (a model built here has moved them past its own, which hid TF-MOT's
    SeparableConv2D transform clashing with a loaded `conv2d`)."""
    tf_keras.backend.clear_session()
    return tf_keras.models.load_model(path, compile=False)


def _export(model, dataset):
    """(the table cell saying whether the int8 export is fully integer, its size in KiB or "-")."""
    try:
        model_bytes = export.convert_to_tflite(model, dataset)
    except export.NotFullyIntegerError as error:  # Which ops, without the library's hint (an argument, not a flag).
        return f"no: {error.summary[:MAX_CELL_CHARACTERS]}", "-"
    except UserError as error:  # The converter failed: the reason is the cell.
        return f"no: {str(error)[:MAX_CELL_CHARACTERS]}", "-"
    report = tflite_model.inspect_tflite(model_bytes)
    if not report.is_fully_integer:
        return f"no: {', '.join(op.name for op in report.non_integer_ops[:MAX_OPS_SHOWN])}", "-"
    return "yes", f"{len(model_bytes) / 1024:.0f}"


def _qat_step(model, student, inputs) -> str:
    """The table cell saying whether one compiled distillation step of `student` runs."""
    labels = np.arange(len(inputs)) % NUM_CLASSES
    try:
        distiller = distill.Distiller(model, student, None, NUM_CLASSES,
                                      DistillationConfig(steps=1, batch_size=min(len(inputs), 2)),
                                      real_data=(inputs, labels))
        terms = distiller.train_step()
    except Exception as error:  # pylint: disable=broad-except  # Whatever stops it is the answer.
        return f"no: {first_line(error)[:MAX_CELL_CHARACTERS]}"
    return "yes" if all(np.isfinite(value) for value in terms.values()) else "no: a loss is not finite"


def _as_teacher(model, inputs: np.ndarray):
    """`model` as a run's teacher is: returning logits (Keras Applications end in a softmax,
    which `teachers.load_teacher` removes, so a run's student and files have none), frozen,
    and with BN statistics of the data it sees. An untrained model's BN layers hold mean 0 and
    variance 1, whatever their inputs: activations shrank layer after layer to scales of 1e-8
    in Xception, whose int8 file LiteRT then refused to load, where a trained one's load."""
    model, _ = logits.logits_model(model)
    model.trainable = False
    if bn_stats.batchnorm_layers(model):
        bn_stats.reestimate_batchnorm_statistics(model, inputs, batch_size=min(len(inputs), 64))
    return model


def check(builder, name: str, size: int, samples: int) -> Row:
    """The table row of one architecture at one input size."""
    start = time.perf_counter()
    inputs = np.random.default_rng(0).uniform(-1, 1, (samples, size, size, 3)).astype(np.float32)
    # It kept the softmax, a head no run's student or exported file has, and untrained BN statistics.
    model = _as_teacher(builder(weights=None, input_shape=(size, size, 3), classes=NUM_CLASSES), inputs)
    student, float_layers = quantize.quantize_student(model, calibration_inputs=inputs, input_range=(-1.0, 1.0))
    float_types = sorted({quantize.layer_type(model.get_layer(layer)) for layer in float_layers})
    step_cell = _qat_step(model, student, inputs)
    dataset = representative_data.representative_dataset_from_array(inputs, input_range=(-1.0, 1.0))
    qat_cell, qat_kib = _export(student, dataset)
    ptq_cell, _ = _export(model, dataset)
    return Row(f"{name} {size}x{size}", ", ".join(float_types) or "none", step_cell, qat_cell, ptq_cell, qat_kib,
               f"{time.perf_counter() - start:.0f}")


def run() -> Optional[int]:
    if FLAGS.calibration_samples < 1:
        raise UserError(f"--calibration_samples must be positive, got {FLAGS.calibration_samples}")
    specs = (KERAS3_DEFAULT_ARCHITECTURES if FLAGS.keras == "3" and not FLAGS["architectures"].present
             else FLAGS.architectures)
    if not [spec for spec in specs if spec.strip()]:
        raise UserError("--architectures names no architecture")
    architectures = [parse_architecture(spec.strip(), FLAGS.keras) for spec in specs]
    print("| architecture | layers TF-MOT leaves float | QAT step | QAT int8 fully integer | PTQ int8 fully integer "
          "| QAT int8 KiB | s |")
    print("|---|---|---|---|---|---|---|")
    not_through = []
    for number, (builder, name, size) in enumerate(architectures, start=1):
        # A row shows once its architecture is done: a minute or more for ResNet50 on a CPU.
        print(f"checking {name} {size}x{size} ({number} of {len(architectures)})", file=sys.stderr, flush=True)
        try:
            row = check(builder, name, size, FLAGS.calibration_samples)
        except (UserError, ValueError) as error:  # e.g. an input size the architecture refuses
            row = Row(f"{name} {size}x{size}", f"error: {first_line(error)[:MAX_CELL_CHARACTERS]}", "-", "-", "-", "-",
                      "-")
        print("| " + " | ".join(row) + " |", flush=True)
        if not row.goes_through():
            not_through.append(row.architecture)
        tf_keras.backend.clear_session()
    if not_through:  # For a script that runs the check before a long run.
        print(f"{len(not_through)} of {len(architectures)} do not go through: {', '.join(not_through)}",
              file=sys.stderr)
        return 1
    return None


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    return cli.run_command(FLAGS, argv, run, resumable=False)


if __name__ == "__main__":
    sys.exit(main())
