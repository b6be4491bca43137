r"""Exports a TFLite model: from a run's QAT student, a saved student, or a float teacher.

The QAT student of a run (its finished `student.h5`, else its latest QAT checkpoint),
fully integer, with the run's calibration samples, `--io_dtype` and `--allow_float_ops` unless
the flags say otherwise:

  python tools/convert.py --run_dir=runs/demo --output=student_int8.tflite

A saved TF-MOT student:

  python tools/convert.py --student=runs/demo/student.h5 --generator=runs/demo/generator.keras \
      --output=student_int8.tflite

A float teacher quantized post-training, calibrated with generated samples:

  python tools/convert.py --teacher=teacher.keras --generator=runs/demo/generator.keras --output=ptq.tflite

A float teacher quantized post-training with no generator and no data: calibrated with
ZeroQ-style distilled inputs (optimised to match its BN statistics), or with Gaussian noise:

  python tools/convert.py --teacher=teacher.keras --data_source=distilled --output=ptq.tflite

A float teacher as float or dynamic-range TFLite, for comparison:

  python tools/convert.py --teacher=teacher.keras --mode=float --output=float.tflite

`--teacher` takes the pipeline's `--teacher_*` flags: a model file without its sidecar is
read with the `tf` preprocessing unless `--teacher_preprocessing` names another. A
`--student` takes `--teacher_preprocessing`, to say what its input is (a run's own
`student.h5` is read as its run recorded its teacher, with a note),
`--teacher_custom_objects`, for the code of its own layers, and `--trust_model_code`.

Every integer export is checked op by op (the tool names any op that is not integer, and
refuses the model unless `--allow_float_ops` lets it keep such ops float inside) and gets
an Edge TPU compatibility report read from the flatbuffer. When the teacher's
class names are known (as for a run's `labels.txt`: teachers of `tools/train_teacher.py`, the
built-in ones, Keras Applications with ImageNet weights), they are written beside the model,
one a line in output order, as `<output without .tflite>_labels.txt`. Bad input prints
one `error: ...` line and exits with status 2; a --run_dir that a run is training in, with 75.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import zscgan_tf  # noqa: F401,E402  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
from absl import flags  # noqa: E402

from zscgan_tf import config as config_lib  # noqa: E402
from zscgan_tf import cli, distilled_data, export, seeds  # noqa: E402
from zscgan_tf.conversion import convert  # noqa: E402
from zscgan_tf.conversion_config import DATA_SOURCES, GIVEN_FLAG_NAMES, ConversionConfig  # noqa: E402
from zscgan_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "A work directory of `python -m zscgan_tf.train`: export its QAT student.")
flags.DEFINE_string("student", None, "A saved TF-MOT student (.h5, as runs save it) to export.")
flags.DEFINE_string("teacher", None, "A float teacher: a model file, builtin:<name> or a Keras Applications name.")
cli.define_teacher_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_string("generator", None, "A trained generator (.keras) for the representative dataset.")
flags.DEFINE_enum("data_source", "generator", DATA_SOURCES,
                  "Calibration inputs: generator samples (needs a generator), ZeroQ-style distilled inputs, "
                  "or Gaussian noise.")
flags.DEFINE_integer("distilled_steps", distilled_data.DistilledDataConfig.steps,
                     "Adam updates of each batch of distilled inputs (--data_source=distilled).")
flags.DEFINE_enum("mode", "int8", export.MODES, "int8 (fully integer), float, or dynamic (dynamic-range).")
flags.DEFINE_integer("calibration_samples", config_lib.QuantizationConfig.calibration_samples,
                     "Calibration samples (class-balanced when generated); with --run_dir, the run's by default.")
flags.DEFINE_enum("io_dtype", "int8", export.INTEGER_IO_DTYPES,
                  "Input/output type of an int8 model; with --run_dir, the run's by default.")
flags.DEFINE_bool("per_channel", True, "Per-channel weight scales (else per-tensor).")
flags.DEFINE_bool("allow_float_ops", False,
                  "An int8 model may keep ops TFLite has no int8 kernel for (ELU, ...) float inside, its input and "
                  "output integer: a CPU runs them, an Edge TPU or NPU leaves everything from the first float op to "
                  "the CPU. With --run_dir, the run's by default.")
# A run's calibration seed is its --seed plus an offset, which a run seeded near the largest --seed takes past it.
flags.DEFINE_integer("seed", 0, "Seed of the calibration samples; with --run_dir, by default the seed the run "
                     "drew its calibration samples with (not its --seed: one derived from it).", lower_bound=0,
                     upper_bound=config_lib.MAX_SEED + seeds.CALIBRATION_SEED_OFFSET)
flags.DEFINE_string("output", None, "Where to write the .tflite file.")
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")


def config_from_flags() -> ConversionConfig:
    """The parsed flags as a `ConversionConfig` (validated when `convert` starts).

    Raises nothing: an error in the teacher flags is kept in the config (`check_teacher_flags`).
    """
    teacher_source = student_preprocessing = ignored_note = teacher_flags_error = None
    # What the teacher flags say of a --student or --teacher (a run directory records its own teacher). With more
    # than one model given, the export refuses them before it reads this.
    try:
        if FLAGS.student:
            student_preprocessing = cli.preprocessing_from_flags(FLAGS)
        elif FLAGS.teacher:
            ignored_note = cli.ignored_teacher_flags_note(FLAGS.teacher, FLAGS)
            teacher_source = cli.teacher_source(FLAGS.teacher, FLAGS)
    except UserError as error:
        teacher_flags_error = error
    return ConversionConfig(
        run_dir=FLAGS.run_dir, student=FLAGS.student, teacher=FLAGS.teacher, generator=FLAGS.generator,
        data_source=FLAGS.data_source, distilled_steps=FLAGS.distilled_steps, mode=FLAGS.mode,
        calibration_samples=FLAGS.calibration_samples, io_dtype=FLAGS.io_dtype, per_channel=FLAGS.per_channel,
        allow_float_ops=FLAGS.allow_float_ops, seed=FLAGS.seed, output=FLAGS.output,
        custom_objects=tuple(FLAGS.teacher_custom_objects), trust_model_code=FLAGS.trust_model_code,
        given=frozenset(name for name in GIVEN_FLAG_NAMES if FLAGS[name].present),
        teacher_source=teacher_source, student_preprocessing=student_preprocessing,
        ignored_teacher_flags_note=ignored_note, teacher_flags_error=teacher_flags_error)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    return cli.run_command(FLAGS, argv, lambda: convert(config_from_flags()), resumable=False)


if __name__ == "__main__":
    sys.exit(main())
