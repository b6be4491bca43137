"""A run's work directory as `tools/convert.py --run_dir` exports it: its config read, its
teacher found and its code confirmed before the run's lock is taken, and its QAT student (the
finished `student.h5`, else the latest QAT checkpoint) loaded with the run's calibration samples
and export settings."""

import json
import os
import shlex
from typing import List, Tuple

import tf_keras

from zscgan_tf import (files, flag_names, keras_applications, pipeline, quantization_stages, run_state, seeds, teachers,
                       training_loop)
from zscgan_tf import config as config_lib
from zscgan_tf import generator as generator_lib
from zscgan_tf.conversion_calibration import calibration_inputs
from zscgan_tf.conversion_config import ConversionConfig
from zscgan_tf.errors import UserError, first_line
from zscgan_tf.progress import count_of


def _ptq_flags_of(run_config: config_lib.RunConfig, run_dir: str) -> List[str]:
    """The flags that convert the PTQ model of the run in `run_dir` again, byte for byte: its
    teacher, generator, calibration samples and their seed, and its export settings (the
    defaults' gave another file)."""
    settings = run_config.quantization
    return (flag_names.teacher_flags(run_config.teacher)
            + [f"--generator={os.path.join(run_dir, run_state.GENERATOR_MODEL_FILE)}",
               f"--calibration_samples={settings.calibration_samples}",
               f"--seed={run_config.seed + seeds.CALIBRATION_SEED_OFFSET}"]
            + ([f"--io_dtype={settings.io_dtype}"] if settings.io_dtype != "int8" else [])
            + (["--noper_channel"] if not settings.per_channel else [])
            + (["--allow_float_ops"] if settings.allow_float_ops else []))


def read_run_config(run_dir) -> config_lib.RunConfig:
    """The config a run saved in `run_dir`.

    Raises:
      UserError: if `run_dir` is not a run directory, or its config cannot be read.
    """
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


def export_settings(config: ConversionConfig) -> Tuple[str, bool]:
    """(--io_dtype, --allow_float_ops); with --run_dir, the run's own where the flag is not given,
    so that its student exports as the run exported it."""
    io_dtype, allow_float_ops = config.io_dtype, config.allow_float_ops
    if config.run_dir:
        quantization = read_run_config(config.run_dir).quantization
        io_dtype = io_dtype if "io_dtype" in config.given else quantization.io_dtype
        allow_float_ops = allow_float_ops if "allow_float_ops" in config.given else quantization.allow_float_ops
    return io_dtype, allow_float_ops


def _no_student_error(run_config: config_lib.RunConfig, run_dir: str) -> UserError:
    return UserError(f"the run in {run_dir!r} trained no QAT student (--distillation_steps=0): its int8 model is "
                     f"{os.path.join(run_dir, quantization_stages.PTQ_TFLITE_FILE)}, the teacher quantized after "
                     f"training; to convert it again, pass {shlex.join(_ptq_flags_of(run_config, run_dir))}; "
                     "for a student, rerun the run with --distillation_steps=<N>")


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
    if _resolved(given.custom_objects) != _resolved(recorded.custom_objects):  # The same file through a link too.
        wanted.append(f"--teacher_custom_objects={','.join(recorded.custom_objects)} (Python modules of its layers)")
    if wanted:
        raise UserError(f"the run in {config.run_dir!r} loaded its teacher with code that runs as it loads; to convert "
                        f"it, pass {' and '.join(wanted)}, only if you trust that code and this directory's author")


def check_run(config: ConversionConfig, run_config: config_lib.RunConfig) -> None:
    """Refuses a --run_dir whose teacher is missing, or loaded with code the flags do not confirm
    (`_check_code_confirmed`), or that trained no QAT student: checked before the run's lock is
    taken (`model_of_run` checks the student again under it).

    Raises:
      UserError: saying where the teacher was, which flags to pass, or how to convert the run's PTQ model.
    """
    run_dir = config.run_dir
    model = run_config.teacher.model
    if (model not in keras_applications.KERAS_APPLICATIONS and not model.startswith(teachers.BUILTIN_PREFIX)
            and not os.path.exists(model)):
        if not os.path.isabs(model):  # Recorded as typed by a run from before paths were recorded in full.
            raise UserError(f"the run's teacher {model!r} is a path relative to the directory the run started in: run "
                            f"this from there, or rerun the pipeline on {run_dir!r} with --teacher=<its path>, which "
                            "records it in full")
        raise UserError(f"the run's teacher {model!r} is missing (moved since the run?): put it back there, or rerun "
                        f"the pipeline on {run_dir!r} with --teacher=<where it is now>, which records it")
    _check_code_confirmed(config, run_config.teacher)
    student_path = os.path.join(run_dir, quantization_stages.STUDENT_MODEL_FILE)
    if (not run_config.distillation.steps and not os.path.exists(student_path)
            and training_loop.latest_step(os.path.join(run_dir, quantization_stages.DISTILLATION_DIR)) is None):
        raise _no_student_error(run_config, run_dir)


def _resolved(custom_objects) -> list:
    """Custom-object modules and files, each file by its real path."""
    return [os.path.realpath(name) if os.path.exists(name) else name for name in custom_objects]


def model_of_run(config: ConversionConfig, generator):
    """(student, calibration samples, description, the teacher's preprocessing, its class names) of
    the run in `config.run_dir`: its finished `student.h5`, else its latest QAT checkpoint, with the
    run's calibration samples (`generator`'s instead, when --generator gives one) unless the flags
    say otherwise."""
    run_dir = config.run_dir
    run_config = read_run_config(run_dir)
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
    calibration = calibration_inputs(config, generator, teacher, count, seed)
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
        raise _no_student_error(run_config, run_dir)
    student = quantization_stages.restore_student(run_config, teacher, generator, calibration, checkpoint_dir)
    if checkpoint_step is not None and checkpoint_step < run_config.distillation.steps:
        print(f"note: exporting the QAT checkpoint at step {checkpoint_step} of the run's "
              f"{run_config.distillation.steps}: its distillation has not finished; rerun it to finish, then convert "
              "again")
    return student, calibration, f"QAT checkpoint in {checkpoint_dir}", teacher.preprocessing, class_names
