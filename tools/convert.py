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

import contextlib
import dataclasses
import json
import os
import shlex
import sys
from typing import FrozenSet, List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import zscgan_tf  # noqa: F401,E402  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import numpy as np  # noqa: E402
import tf_keras  # noqa: E402
from absl import flags  # noqa: E402

from zscgan_tf import config as config_lib  # noqa: E402
from zscgan_tf import cli, custom_objects, distilled_data, edge_tpu, evaluate, export, files, memory_checks  # noqa: E402
from zscgan_tf import errors, exported_model, model_files  # noqa: E402
from zscgan_tf import quantization_stages, quantize, quantizer_ranges, teachers, tflite_model  # noqa: E402
from zscgan_tf import pipeline, run_state, seeds, training_loop  # noqa: E402
from zscgan_tf import generator as generator_lib  # noqa: E402
from zscgan_tf.errors import UserError, first_line  # noqa: E402
from zscgan_tf.preprocessing import Preprocessing  # noqa: E402
from zscgan_tf.progress import count_of  # noqa: E402

FLAGS = flags.FLAGS
# The teacher flags a --student takes: what its input is, and the code of its own layers.
STUDENT_FLAG_NAMES = cli.PREPROCESSING_FLAG_NAMES + ("teacher_custom_objects", "trust_model_code")
# What a --run_dir takes of the teacher flags: the code its recorded teacher runs, confirmed (`_check_code_confirmed`).
RUN_DIR_FLAG_NAMES = ("teacher_custom_objects", "trust_model_code")
DATA_SOURCES = ("generator", "distilled", "noise")
# Flags that say how an int8 export is calibrated, which the float modes would ignore.
CALIBRATION_FLAG_NAMES = ("generator", "data_source", "distilled_steps", "calibration_samples", "seed")
# Flags that say what an int8 export's input, output and ops are; the float modes keep them float.
INT8_FORMAT_FLAG_NAMES = ("io_dtype", "allow_float_ops")
# Flags whose being given, not only their value, changes what the tool does: given where they do not apply they
# are refused, and with --run_dir a flag not given leaves the run's own setting.
GIVEN_FLAG_NAMES = cli.TEACHER_FLAG_NAMES + CALIBRATION_FLAG_NAMES + INT8_FORMAT_FLAG_NAMES + ("per_channel",)
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


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """Every setting of one conversion, as the flags give it (`config_from_flags`).

    Attributes:
      run_dir, student, teacher: the model to export, of which exactly one is set: the export
        refuses anything else, after `validate`.
      generator: a trained generator for the calibration samples, or None.
      data_source: where calibration inputs come from: one of `DATA_SOURCES`.
      distilled_steps: Adam updates of each batch of distilled inputs.
      mode: one of `export.MODES`.
      calibration_samples, seed: how many calibration samples, drawn with which seed.
      io_dtype, per_channel, allow_float_ops: the int8 export's input and output type, weight
        scales, and whether ops with no int8 kernel may stay float.
      output: the .tflite file to write.
      custom_objects: the modules a --student's own layers are defined in (for a --run_dir, the
        ones its run recorded, confirmed).
      trust_model_code: let a --student (or, confirmed, a --run_dir's teacher and student) load
        with the serialized Python of its Lambda layers.
      given: the names of `GIVEN_FLAG_NAMES` given on the command line (or in a flagfile),
        as opposed to left at their defaults.
      teacher_source: what --teacher and the teacher flags describe, or None without --teacher.
      student_preprocessing: what the teacher flags say a --student's input is, or None.
      ignored_teacher_flags_note: the note naming Keras Applications flags a --teacher ignores.
      teacher_flags_error: what was wrong in the teacher flags (a preprocessing mean that is not
        a number, ...), kept to be raised where they are used (`check_teacher_flags`): the
        checks and loads that came first still come first.
    """

    run_dir: Optional[str]
    student: Optional[str]
    teacher: Optional[str]
    generator: Optional[str]
    data_source: str
    distilled_steps: int
    mode: str
    calibration_samples: int
    io_dtype: str
    per_channel: bool
    allow_float_ops: bool
    seed: int
    output: Optional[str]
    custom_objects: Tuple[str, ...] = ()
    trust_model_code: bool = False
    given: FrozenSet[str] = frozenset()
    teacher_source: Optional[teachers.TeacherSource] = None
    student_preprocessing: Optional[Preprocessing] = None
    ignored_teacher_flags_note: Optional[str] = None
    teacher_flags_error: Optional[UserError] = None

    def validate(self) -> None:
        """Refuses a missing or unwritable --output and settings that contradict each other,
        before anything loads.

        Raises:
          UserError: naming the flags, as the command prints it.
        """
        if not self.output:
            raise UserError("--output is required")
        _check_output(self.output)
        if self.calibration_samples < 1:
            raise UserError(f"--calibration_samples must be positive, got {self.calibration_samples}")
        if self.distilled_steps < 1:
            raise UserError(f"--distilled_steps must be positive, got {self.distilled_steps}")
        if self.generator and self.data_source != "generator":
            raise UserError(f"--generator is only used with --data_source=generator, not {self.data_source}")
        calibration_flags = [name for name in CALIBRATION_FLAG_NAMES if name in self.given]
        if self.mode != "int8" and calibration_flags:
            verb = "calibrates" if len(calibration_flags) == 1 else "calibrate"
            raise UserError(f"--{', --'.join(calibration_flags)} {verb} an int8 export; --mode={self.mode} is not "
                            "calibrated")
        format_flags = [name for name in INT8_FORMAT_FLAG_NAMES if name in self.given]
        if self.mode != "int8" and format_flags:
            verb = "applies" if len(format_flags) == 1 else "apply"
            raise UserError(f"--{', --'.join(format_flags)} {verb} to an int8 export; --mode={self.mode} keeps the "
                            "input, output and activations float")
        if self.mode == "float" and "per_channel" in self.given:
            raise UserError(f"--{'' if self.per_channel else 'no'}per_channel sets the scales of integer weights; "
                            "--mode=float keeps the weights float")
        if self.mode != "int8" and (self.run_dir or self.student):
            float_file = (f": the run's is {os.path.join(self.run_dir, quantization_stages.FLOAT_TFLITE_FILE)}"
                          if self.run_dir else "")
            raise UserError(f"--mode={self.mode} converts a float teacher (--teacher){float_file}; a QAT student's "
                            "fake quantization converts to integer ops, so it exports with --mode=int8 only")
        sources = [name for name in ("run_dir", "student", "teacher") if getattr(self, name)]
        if len(sources) != 1:
            raise UserError("pass exactly one of --run_dir, --student and --teacher")
        # A run directory records its teacher; a student file has only an input to describe.
        used_teacher_flags = (RUN_DIR_FLAG_NAMES if self.run_dir else STUDENT_FLAG_NAMES if self.student
                              else cli.TEACHER_FLAG_NAMES)
        unused = [f"--{name}" for name in cli.TEACHER_FLAG_NAMES
                  if name in self.given and name not in used_teacher_flags]
        if unused:
            takes = (" (a --student takes --teacher_preprocessing, --teacher_custom_objects and --trust_model_code)"
                     if self.student else " (a --run_dir takes --teacher_custom_objects and --trust_model_code, to "
                     "confirm the code its teacher runs)" if self.run_dir else "")
            raise UserError(f"{', '.join(unused)} describe{'s' if len(unused) == 1 else ''} a --teacher{takes}, "
                            f"not a --{sources[0]}")

    def check_teacher_flags(self) -> None:
        """Raises `teacher_flags_error`, if any: call it where `teacher_source` or
        `student_preprocessing` is first needed."""
        if self.teacher_flags_error is not None:
            raise self.teacher_flags_error

    @property
    def per_channel_given(self) -> Optional[bool]:
        """--per_channel (True) or --noper_channel (False) as given, or None when neither is."""
        return self.per_channel if "per_channel" in self.given else None


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


def _preprocessing_its_run_recorded(student_path: str) -> Optional[Preprocessing]:
    """The preprocessing of the teacher that the run whose student `student_path` is (a work
    directory's `student.h5`) recorded, said in a note; None for a student saved elsewhere, or
    by a run of an earlier version that recorded none (a note says how to read its input). A
    student saved before its input range covered every pixel level gets that range from it."""
    run_dir = os.path.dirname(os.path.abspath(student_path))
    state = run_state.read_state(run_dir)
    if os.path.basename(student_path) != quantization_stages.STUDENT_MODEL_FILE or "distillation" not in state:
        return None
    try:
        preprocessing = Preprocessing.from_dict(state[run_state.TEACHER_PREPROCESSING_KEY])
    except (KeyError, AttributeError, TypeError, ValueError, UserError):  # Not recorded, or not as a run records it.
        print(f"note: {run_dir}, the run of this student, records no teacher preprocessing (a run of an earlier "
              f"version of zscgan_tf): --run_dir={run_dir} reads its teacher and covers every pixel level, and "
              "--teacher_preprocessing says what the student's input is")
        return None
    print(f"note: the student's input is read as its run records its teacher's ('{preprocessing.mode}' "
          f"preprocessing, in {os.path.join(run_dir, run_state.STATE_FILE)}); pass --teacher_preprocessing to read it "
          "otherwise")
    return preprocessing


def _calibration(config: ConversionConfig, generator, teacher, count, seed, preprocessing_known=True):
    """Calibration inputs from `config.data_source`, or None when there are none or none are needed.
    `preprocessing_known`: whether `teacher.preprocessing` is known (a student file's is only
    when --teacher_preprocessing says it), so that a generator's can be checked against it."""
    if config.mode != "int8":
        return None  # Float and dynamic-range exports are not calibrated.
    if config.data_source == "generator":  # Made for whole classes, and copied while they are.
        memory_checks.check_samples_fit_in_memory("calibration_samples", count,
                                             quantization_stages.calibration_samples_generated(
                                                 count, teacher.num_classes),
                                             teacher.image_shape, quantization_stages.CALIBRATION_COPIES)
    else:
        memory_checks.check_samples_fit_in_memory("calibration_samples", count, count, teacher.image_shape)
    if config.data_source == "noise":
        return distilled_data.gaussian_noise_inputs(teacher, count, seed)
    if config.data_source == "distilled":
        settings = distilled_data.DistilledDataConfig(steps=config.distilled_steps)
        distilled = distilled_data.distill_inputs(teacher, count, settings, seed=seed)
        print(f"distilled {count} inputs: BN-statistics loss {distilled.initial_bn_loss:.4g} -> "
              f"{distilled.final_bn_loss:.4g}")
        return distilled.inputs
    if generator is None:
        return None
    if tuple(generator.output.shape[1:]) != tuple(teacher.image_shape):
        raise UserError(f"the generator makes {tuple(generator.output.shape[1:])} samples but the model reads "
                        f"{teacher.image_shape}")
    if preprocessing_known:
        _check_generator_input_space(generator, teacher.preprocessing, teacher.image_shape[-1])
    return quantization_stages.calibration_samples(generator, teacher, count, seed, progress=True)


def _check_generator_input_space(generator, preprocessing, channels) -> None:
    """A generator ends in a fixed map onto the input space of the teacher it was trained for;
    calibrating a model read with other preprocessing would calibrate it on other inputs."""
    if generator_lib.same_input_space(generator, preprocessing, channels) is not False:
        return
    trained_for = generator_lib.preprocessing_of_input_space(*generator_lib.input_space(generator))
    raise UserError(f"the generator was trained for a teacher that reads pixels with {trained_for.describe()} "
                    f"preprocessing, not {preprocessing.describe()}: pass {cli.preprocessing_flags(trained_for)}, "
                    "or the generator trained for this teacher")


def _teacher_like(model, name, preprocessing=None):
    """A `Teacher` view of a student, for its shape and class count."""
    return teachers.Teacher(model=model, preprocessing=preprocessing or Preprocessing(),
                            image_shape=tuple(model.inputs[0].shape[1:]), num_classes=int(model.output.shape[-1]),
                            name=name, description={})


def _model_to_convert(config: ConversionConfig):
    """(model, calibration samples or None, description, the teacher's preprocessing or None when a
    student file does not say it, the teacher's class names or ()) that `config` names."""
    generator = generator_lib.load_generator(config.generator) if config.generator else None
    if config.run_dir:
        return _from_run(config, generator)
    if config.student:
        if not os.path.exists(config.student):
            raise UserError(f"student {config.student!r} does not exist")
        custom_objects.register(config.custom_objects)
        generator_message = model_files.generator_file_message(config.student, "student")
        if generator_message:  # It was "a float model ...: quantize it post-training with --teacher=<it>".
            raise UserError(generator_message)
        try:
            student = quantization_stages.load_student(config.student, trust_model_code=config.trust_model_code)
        except (OSError, ValueError, TypeError) as error:
            raise UserError(f"cannot load student {config.student!r}: "
                            f"{custom_objects.explained(first_line(error))}") from error
        if not export.is_quantization_aware(student):
            raise UserError(f"--student {config.student!r} is a float model, not a TF-MOT quantization-aware "
                            f"student: quantize it post-training with --teacher={config.student}")
        config.check_teacher_flags()
        # What the user says the student's input is, else what the run that saved it recorded, if anything.
        preprocessing = config.student_preprocessing or _preprocessing_its_run_recorded(config.student)
        if preprocessing is not None:  # `input_range` raises if its statistics don't fit the channels.
            quantizer_ranges.cover_model_input_range(
                student, *preprocessing.input_range(int(student.inputs[0].shape[-1])))
        view = _teacher_like(student, os.path.basename(config.student), preprocessing)
        return (student, _calibration(config, generator, view, config.calibration_samples, config.seed,
                                      preprocessing_known=preprocessing is not None),
                f"student {config.student}", preprocessing, ())
    if config.ignored_teacher_flags_note:
        print(config.ignored_teacher_flags_note)
    config.check_teacher_flags()
    try:
        # Noise calibration and the float modes read no BN statistics.
        teacher = teachers.load_teacher(config.teacher_source,
                                        require_batchnorm=config.mode == "int8" and config.data_source != "noise")
    except teachers.QuantizationAwareTeacherError as error:
        raise UserError(f"--teacher {config.teacher!r} is a TF-MOT quantization-aware student, not a float "
                        f"teacher: export it with --student={config.teacher}") from error
    for warning in teacher.warnings:
        print(f"warning: {warning}")
    if config.mode == "int8" and config.data_source == "generator" and generator is None:
        raise UserError(f"{config.teacher} is a float model: an int8 export needs calibration inputs: --generator, "
                        "or --data_source=distilled or noise (or export a QAT student with --run_dir / --student, "
                        "or use --mode=float or dynamic)")
    if config.mode == "int8" and config.data_source == "distilled":
        # Minutes of distilling inputs went before an op without an int8 kernel (ELU) was refused: a trial
        # conversion on a few uniform samples first, as a run checks its teacher (1 s).
        samples = np.random.default_rng(config.seed).uniform(
            *teacher.input_range(), (quantization_stages.INTEGER_CHECK_SAMPLES,) + tuple(teacher.image_shape))
        _converted(teacher.model, export.representative_dataset_from_array(samples.astype(np.float32),
                                                                           teacher.input_range()),
                   config, check_loads=False)
    return (teacher.model, _calibration(config, generator, teacher, config.calibration_samples, config.seed),
            f"teacher {config.teacher}",
            teacher.preprocessing, teacher.class_names())


def _ptq_flags_of(run_config: config_lib.RunConfig, run_dir: str) -> List[str]:
    """The flags that convert the PTQ model of the run in `run_dir` again, byte for byte: its
    teacher, generator, calibration samples and their seed, and its export settings (the
    defaults' gave another file)."""
    settings = run_config.quantization
    return (cli.teacher_flags(run_config.teacher)
            + [f"--generator={os.path.join(run_dir, run_state.GENERATOR_MODEL_FILE)}",
               f"--calibration_samples={settings.calibration_samples}",
               f"--seed={run_config.seed + seeds.CALIBRATION_SEED_OFFSET}"]
            + ([f"--io_dtype={settings.io_dtype}"] if settings.io_dtype != "int8" else [])
            + (["--noper_channel"] if not settings.per_channel else [])
            + (["--allow_float_ops"] if settings.allow_float_ops else []))


def _run_config(run_dir) -> config_lib.RunConfig:
    config_path = os.path.join(run_dir, config_lib.CONFIG_FILE)
    if not os.path.exists(config_path):
        raise UserError(f"{run_dir!r} is not a run directory (no {config_lib.CONFIG_FILE})")
    try:
        with open(config_path) as config_file:
            return config_lib.RunConfig.from_dict(json.load(config_file))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise UserError(f"cannot read the run's config {config_path!r}: {first_line(error)}") from error
    except UserError as error:
        raise UserError(f"cannot read the run's config {config_path!r}: {error}") from error


def _export_settings(config: ConversionConfig) -> Tuple[str, bool]:
    """(--io_dtype, --allow_float_ops); with --run_dir, the run's own where the flag is not given,
    so that its student exports as the run exported it."""
    io_dtype, allow_float_ops = config.io_dtype, config.allow_float_ops
    if config.run_dir:
        quantization = _run_config(config.run_dir).quantization
        io_dtype = io_dtype if "io_dtype" in config.given else quantization.io_dtype
        allow_float_ops = allow_float_ops if "allow_float_ops" in config.given else quantization.allow_float_ops
    return io_dtype, allow_float_ops


def _check_code_confirmed(config: ConversionConfig, recorded: teachers.TeacherSource) -> None:
    """Refuses a run directory whose teacher ran Python code of its own (`--trust_model_code`,
    `--teacher_custom_objects`, as its `config.json` records them) unless this command's flags
    say the same: a run directory from someone else would run the code it names.

    Raises:
      UserError: naming the flags to pass.
    """
    wanted = []
    if recorded.trust_model_code and not config.trust_model_code:
        wanted.append("--trust_model_code (its model files hold serialized Python, such as Lambda layers)")
    given = teachers.TeacherSource(model=recorded.model, custom_objects=config.custom_objects).portable()
    if config.custom_objects and not recorded.custom_objects:  # It would be neither imported nor needed.
        raise UserError(f"--teacher_custom_objects: the run in {config.run_dir!r} loaded its teacher without any; "
                        "leave it out")
    if given.custom_objects != recorded.custom_objects:
        wanted.append(f"--teacher_custom_objects={','.join(recorded.custom_objects)} (Python modules of its layers)")
    if wanted:
        raise UserError(f"the run in {config.run_dir!r} loaded its teacher with code that runs as it loads; to convert "
                        f"it, pass {' and '.join(wanted)}, only if you trust that code and this directory's author")


def _check_run_teacher(config: ConversionConfig, run_config: config_lib.RunConfig) -> None:
    """Refuses a --run_dir whose teacher is missing, or loaded with code the flags do not confirm
    (`_check_code_confirmed`): checked before the run's lock is taken.

    Raises:
      UserError: saying where the teacher was, or which flags to pass.
    """
    run_dir = config.run_dir
    model = run_config.teacher.model
    if (model not in teachers.KERAS_APPLICATIONS and not model.startswith(teachers.BUILTIN_PREFIX)
            and not os.path.exists(model)):
        if not os.path.isabs(model):  # Recorded as typed by a run from before paths were recorded in full.
            raise UserError(f"the run's teacher {model!r} is a path relative to the directory the run started in: run "
                            f"this from there, or rerun the pipeline on {run_dir!r} with --teacher=<its path>, which "
                            "records it in full")
        raise UserError(f"the run's teacher {model!r} is missing (moved since the run?): put it back there, or rerun "
                        f"the pipeline on {run_dir!r} with --teacher=<where it is now>, which records it")
    _check_code_confirmed(config, run_config.teacher)


def _from_run(config: ConversionConfig, generator):
    run_dir = config.run_dir
    run_config = _run_config(run_dir)
    tf_keras.utils.set_random_seed(run_config.seed)  # A Keras application without weights: the run's.
    teacher = teachers.load_teacher(run_config.teacher)
    state = run_state.read_state(run_dir)
    pipeline.check_same_teacher(run_dir, teacher, state)
    if generator is None:
        generator_path = os.path.join(run_dir, run_state.GENERATOR_MODEL_FILE)
        if not os.path.exists(generator_path):
            raise UserError(f"{run_dir!r} has no trained generator yet; rerun the run's command (python -m "
                            "zscgan_tf.train) to train it")
        generator = generator_lib.load_generator(generator_path)
    # The run's calibration samples unless the flags say otherwise: layers TF-MOT left float
    # (an ELU) are calibrated by them, so the student converts as the run converted it.
    count = config.calibration_samples if "calibration_samples" in config.given else (
        run_config.quantization.calibration_samples)
    seed = config.seed if "seed" in config.given else run_config.seed + seeds.CALIBRATION_SEED_OFFSET
    calibration = _calibration(config, generator, teacher, count, seed)
    class_names = teacher.class_names()
    student_path = os.path.join(run_dir, quantization_stages.STUDENT_MODEL_FILE)
    checkpoint_dir = os.path.join(run_dir, quantization_stages.DISTILLATION_DIR, "checkpoints")
    checkpoint_step = training_loop.latest_step(os.path.join(run_dir, quantization_stages.DISTILLATION_DIR))
    saved_sha256 = state.get("distillation", {}).get("sha256")
    if (os.path.exists(student_path) and saved_sha256 and files.file_digest(student_path) != saved_sha256
            and checkpoint_step is not None):
        print(f"note: {student_path} is not the student the run saved (damaged?); exporting its QAT checkpoint "
              "instead (rerunning the pipeline rebuilds the file)")
    elif os.path.exists(student_path):
        saved_steps = state.get("distillation", {}).get("steps")
        if saved_steps and checkpoint_step and checkpoint_step > saved_steps:
            print(f"note: exporting the run's finished student ({count_of(saved_steps, 'QAT step')}); its QAT "
                  f"checkpoint is at step {checkpoint_step} of a longer run not finished yet: rerun it to finish, then "
                  "convert again")
        try:
            student = quantization_stages.load_student(student_path, teacher.input_range(),
                                                       trust_model_code=run_config.teacher.trust_model_code)
        except (OSError, ValueError) as error:
            rebuilt = ("which rebuilds it from its QAT checkpoints" if checkpoint_step is not None
                       else "which trains it again: no QAT checkpoint of it is left")
            raise UserError(f"cannot load the run's student {student_path}: {first_line(error)}; rerun the pipeline "
                            f"on {run_dir!r}, {rebuilt}") from error
        return student, calibration, f"student {student_path}", teacher.preprocessing, class_names
    if not run_config.distillation.steps and checkpoint_step is None:
        # Said as "no QAT checkpoint ...", as if the run were unfinished.
        raise UserError(f"the run in {run_dir!r} trained no QAT student (--distillation_steps=0): its int8 model is "
                        f"{os.path.join(run_dir, quantization_stages.PTQ_TFLITE_FILE)}, the teacher quantized after "
                        f"training; to convert it again, pass {shlex.join(_ptq_flags_of(run_config, run_dir))}; "
                        "for a student, rerun the run with --distillation_steps=<N>")
    student = quantization_stages.restore_student(run_config, teacher, generator, calibration, checkpoint_dir)
    if checkpoint_step is not None and checkpoint_step < run_config.distillation.steps:
        print(f"note: exporting the QAT checkpoint at step {checkpoint_step} of the run's "
              f"{run_config.distillation.steps}: its distillation has not finished; rerun it to finish, then convert "
              "again")
    return student, calibration, f"QAT checkpoint in {checkpoint_dir}", teacher.preprocessing, class_names


# The files a run's export stage writes, and its reports describe.
RUN_TFLITE_FILES = (quantization_stages.FLOAT_TFLITE_FILE, quantization_stages.PTQ_TFLITE_FILE,
                    quantization_stages.QAT_TFLITE_FILE)


def _check_output(path: str) -> None:
    """Refuses an --output that could not be written, before minutes of calibration are spent on it,
    or that would replace a file other than a TFLite model (the model converted, a run's
    config: it was replaced without a word)."""
    if os.path.isdir(path):
        raise UserError(f"--output {path!r} is a directory; name the .tflite file to write")
    if path.endswith(os.sep):  # A directory not made yet: converted, then "Not a directory".
        raise UserError(f"--output {path!r} ends in a separator, as a directory does; name the .tflite file to write")
    if os.path.isfile(path) and os.path.getsize(path) and not model_files.is_tflite_file(path):
        raise UserError(f"--output {path!r} exists and is not a TFLite model, which it would replace; name a new "
                        ".tflite file, or delete that one first")
    folder = os.path.dirname(os.path.abspath(path))
    reason = files.unusable_directory_reason(folder)
    if reason:
        raise UserError(f"cannot write --output {path!r}: {reason}")
    if os.path.basename(path) in RUN_TFLITE_FILES and os.path.isfile(os.path.join(folder, config_lib.CONFIG_FILE)):
        raise UserError(f"--output {path!r} is a file of the run in {folder!r}, whose reports describe it and whose "
                        "export stage would take it for its own; write the export elsewhere (python -m "
                        "zscgan_tf.train on that run exports its own files again, with their reports)")


def _check_weight_scales(model, per_channel: Optional[bool]) -> None:
    """Refuses a --per_channel or --noper_channel that a QAT student cannot follow: its weights
    were trained with the scales of its scheme, and its export keeps them. `per_channel`: the
    flag as given, None when it is not."""
    if not (per_channel is not None and export.is_quantization_aware(model)):
        return
    trained_per_channel = quantize.weights_per_channel(model)
    if trained_per_channel is None or trained_per_channel == per_channel:
        return
    flag = "--per_channel" if per_channel else "--noper_channel"
    way_out = ("train a student with per-channel weights (the default), or export the teacher with PTQ (--teacher "
               "and --generator)" if per_channel else
               "export the teacher with PTQ (--teacher and --generator) --noper_channel; a QAT student with per-tensor "
               "weights cannot export where BatchNorm follows its convolutions (tensorflow/model-optimization#1131)")
    raise UserError(f"{flag} applies to post-training quantization: this QAT student's weights were trained with "
                    f"{'per-channel' if trained_per_channel else 'per-tensor'} scales, which its export keeps. For "
                    f"{'per-channel' if per_channel else 'per-tensor'} weights, {way_out}")


def labels_path_for(output: str) -> str:
    """Where the labels of the model written to `output` go: `model.tflite` -> `model_labels.txt`."""
    stem, extension = os.path.splitext(output)
    return (stem if extension.lower() == ".tflite" else output) + "_labels.txt"


def convert(config: ConversionConfig) -> None:
    """Validates `config`, then exports the model it names, holding a --run_dir's lock meanwhile."""
    config.validate()
    if config.run_dir:  # Refused before its lock is taken, which rewrites its .lock file.
        _check_run_teacher(config, _run_config(config.run_dir))
    # A run training in --run_dir would delete the checkpoint being read, and one started meanwhile is refused;
    # other conversions of it share the lock.
    with (files.exclusive_use(config.run_dir, what="conversion", advice="convert it once that run has finished or "
                              "stopped", shared=True) if config.run_dir else contextlib.nullcontext()):
        _load_and_export(config)


def _converted(model, representative, config: ConversionConfig, output_path: Optional[str] = None,
               check_loads: bool = True) -> bytes:
    """`export.convert_to_tflite` with this command's settings (`_export_settings`), its refusals
    worded with the flags that answer them."""
    io_dtype, allow_float_ops = _export_settings(config)
    try:
        return export.convert_to_tflite(model, representative, mode=config.mode, io_dtype=io_dtype,
                                        per_channel=config.per_channel, output_path=output_path,
                                        allow_float_ops=allow_float_ops, check_loads=check_loads)
    except OSError as error:
        if error.filename is None or errors.is_storage_full(error):
            raise
        raise UserError(f"cannot write --output {config.output!r}: {error.strerror}: {error.filename}") from error
    except export.NotFullyIntegerError as error:
        if representative is None:
            # The library's hint names its argument; say which flags give the dataset.
            # Calibration alone leaves an op without an int8 kernel float: the advice said only this, and
            # followed, was refused again over such an op.
            raise UserError(f"{error.summary} Layers TF-MOT left float need calibration inputs: pass --generator "
                            "(the run's generator.keras) or --data_source=distilled or noise"
                            + ("" if allow_float_ops else "; an op TFLite has no int8 kernel for (ELU, ...) stays "
                               "float with them too, and needs --allow_float_ops as well")) from error
        if not allow_float_ops:  # The library's hint names its argument; say which flag it is.
            raise UserError(f"{error.summary} Pass --allow_float_ops to keep these ops float "
                            f"({export.FLOAT_OPS_DEVICES})") from error
        raise


def _load_and_export(config: ConversionConfig) -> None:
    """Loads the model `config` names, writes its .tflite file and labels, and prints the report:
    `convert`'s work once the settings are checked and the run directory is locked."""
    model, calibration, description, preprocessing, class_names = _model_to_convert(config)
    _check_weight_scales(model, config.per_channel_given)
    # The input's range covers every pixel where the preprocessing says what pixels become.
    input_range = preprocessing.input_range(int(model.inputs[0].shape[-1])) if preprocessing else None
    representative = (export.representative_dataset_from_array(calibration, input_range,
                                                                progress_description="calibration")
                      if calibration is not None else None)
    # The conversion says nothing until it is written: 50 s calibrating on 10,000 samples on 2 CPU cores.
    print(f"converting {description} to {config.mode} TFLite"
          + (f" with {len(calibration):,} calibration samples" if representative else ""), flush=True)
    model_bytes = _converted(model, representative, config, output_path=config.output)
    report = tflite_model.inspect_tflite(model_bytes)
    lines = [f"wrote {config.output} ({len(model_bytes) / 1024:.1f} KiB) from {description}"] + report.format()
    labels_path = labels_path_for(config.output)
    stale_labels = not class_names and os.path.exists(labels_path)
    try:
        wrote_labels = exported_model.write_labels(labels_path, class_names)  # Else a stale one goes.
    except OSError as error:  # A stale file is gone: another model's labels do not stay beside this one.
        if errors.is_storage_full(error):
            raise
        raise UserError(f"wrote {config.output}, but cannot write its labels {labels_path!r}: "
                        f"{error.strerror}") from error
    if wrote_labels:
        lines.append(f"- labels: {labels_path}, the teacher's {len(class_names)} class names one a line in output "
                     f"order (output 0 is {class_names[0]!r})")
    elif stale_labels:  # It went without a word.
        lines.append(f"- labels: removed {labels_path}, which an earlier model left: this model's class names are "
                     "not known")
    float_ops = export.float_ops_description(report, model) if config.mode == "int8" else ""
    if float_ops:
        lines.append(f"- float ops kept (--allow_float_ops): {float_ops}; "
                     f"{export.FLOAT_OPS_DEVICES}")
    if config.mode == "int8" and calibration is not None and config.data_source == "generator":
        # Generated samples are ones the teacher is sure of; on noise two faithful models can still differ.
        warning = exported_model.export_agreement_warning("int8", model_bytes, model, calibration)
        if warning:
            lines.append(f"- warning: {warning}")
    pixel_input = evaluate.TfliteClassifier(model_bytes).describe_pixel_input(preprocessing) if preprocessing else None
    if pixel_input:
        lines.append(f"- {pixel_input}")
    if config.mode == "int8":
        lines += edge_tpu.compatibility_report(report).format()
    print("\n".join(lines))


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    return cli.run_command(FLAGS, argv, lambda: convert(config_from_flags()), resumable=False)


if __name__ == "__main__":
    sys.exit(main())
