"""The settings of one TFLite conversion (`tools/convert.py`): which model, how it is
calibrated, what the file's input, output and weight scales are, and where it goes
(`ConversionConfig`), checked against each other before anything loads."""

import dataclasses
import os
from typing import FrozenSet, Optional, Tuple

from zscgan_tf import files, flag_names, model_files, quantization_stages, teachers
from zscgan_tf import config as config_lib
from zscgan_tf.errors import UserError
from zscgan_tf.preprocessing import Preprocessing

# The teacher flags a --student takes: what its input is, and the code of its own layers.
STUDENT_FLAG_NAMES = flag_names.PREPROCESSING_FLAG_NAMES + ("teacher_custom_objects", "trust_model_code")
# What a --run_dir takes of the teacher flags: the code its recorded teacher runs, confirmed
# (`run_conversion.check_run`).
RUN_DIR_FLAG_NAMES = ("teacher_custom_objects", "trust_model_code")
DATA_SOURCES = ("generator", "distilled", "noise")
# Flags that say how an int8 export is calibrated, which the float modes would ignore.
CALIBRATION_FLAG_NAMES = ("generator", "data_source", "distilled_steps", "calibration_samples", "seed")
# Flags that say what an int8 export's input, output and ops are; the float modes keep them float.
INT8_FORMAT_FLAG_NAMES = ("io_dtype", "allow_float_ops")
# Flags whose being given, not only their value, changes what the tool does: given where they do not apply they
# are refused, and with --run_dir a flag not given leaves the run's own setting.
GIVEN_FLAG_NAMES = flag_names.TEACHER_FLAG_NAMES + CALIBRATION_FLAG_NAMES + INT8_FORMAT_FLAG_NAMES + ("per_channel",)


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """Every setting of one conversion, as `tools/convert.py`'s flags give it (its `config_from_flags`).

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
        check_output(self.output)
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
                              else flag_names.TEACHER_FLAG_NAMES)
        unused = [f"--{name}" for name in flag_names.TEACHER_FLAG_NAMES
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


# The files a run's export stage writes, and its reports describe.
RUN_TFLITE_FILES = (quantization_stages.FLOAT_TFLITE_FILE, quantization_stages.PTQ_TFLITE_FILE,
                    quantization_stages.QAT_TFLITE_FILE)


def check_output(path: str) -> None:
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
