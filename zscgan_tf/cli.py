"""The shell shared by the command-line entry points: flag parsing, help, one-line errors, exit statuses.

Entry points (`zscgan_tf/train.py`, `tools/*.py`) define their flags and a body; this
module parses `argv` into those flags and runs the body, so every command answers bad
input the same way: one line, `error: ...`, exit status 2 (`--verbose` adds the
traceback), and `--help` the same way: the entry point's docstring and its flags. The
flags that describe a teacher, which `train` and `tools/convert.py` share, are defined
and read back here (their names, for messages, are `flag_names`'). Library modules never import it.
"""

import math
import os
import re
import signal
import sys
import traceback
from typing import Callable, Optional, Sequence

from absl import flags

from zscgan_tf import errors, start_up, stop_signals
from zscgan_tf.config import MAX_SEED
from zscgan_tf.errors import InUseError, UserError, first_line
from zscgan_tf.files import system_path
from zscgan_tf.flag_names import APPLICATION_FLAG_NAMES
from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.keras_applications import KERAS_APPLICATIONS
from zscgan_tf.teachers import TeacherSource
from zscgan_tf.training_loop import NonFiniteLossError, TrainingInterrupted

USER_ERROR_STATUS = 2
CONFIGS_DIR = "configs"  # The source repository's flagfiles, which `pip install` does not install.
NUMERICAL_FAULT_STATUS = 3
STORAGE_FULL_STATUS = 4
OUT_OF_MEMORY_STATUS = 5
# A directory another process holds: sysexits.h's EX_TEMPFAIL, "try again later", which a
# script can tell from bad input (it was 2, as bad input's).
IN_USE_STATUS = 75
# Counts go into TensorFlow's int32 shapes: a batch of 10**12 overflowed to "-727379968".
MAX_INTEGER_FLAG = 2 ** 31 - 1
# How much of an allocation error's message the out-of-memory line quotes.
OUT_OF_MEMORY_QUOTE = 120
INTERRUPTED_STATUS = stop_signals.exit_status(signal.SIGINT)  # 130, as a shell reports it.
TERMINATED_STATUS = stop_signals.exit_status(signal.SIGTERM)  # 143.
HELP_ARGUMENTS = ("--help", "-h", "-?", "--helpshort")  # The entry point's own flags.
FULL_HELP_ARGUMENTS = ("--helpfull",)  # Every flag defined in the process, by module.
# The entry points' flags that name files or directories. A leading "~" in them is the home
# directory: a shell expands it at the start of a word, but not after "--work_dir=", nor in a
# flagfile, where it would otherwise make a directory named "~" in the current one. Their ".." is
# taken where the system takes it, after a symbolic link (`files.system_path`).
PATH_FLAG_NAMES = ("work_dir", "teacher", "teacher_weights", "teacher_cache_dir", "teacher_custom_objects",
                   "generator_from", "eval_dataset", "eval_data_dir", "eval_manual_dir", "run_dir", "student",
                   "generator", "output", "dataset", "data_dir", "teachers", "compare_to")


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
    """Parses `argv` into `flag_values`, with "~" in `PATH_FLAG_NAMES` the home directory and their
    ".." where the system takes it; a bad flag or flagfile becomes a `UserError`."""
    for path in _flagfile_paths(argv[1:]):
        path = os.path.expanduser(path)  # As absl reads it.
        if not os.path.exists(path):
            # An installed package has no configs/: they are the source repository's.
            where = (" here: the configs are in the source repository; pass the path of one there"
                     if os.path.normpath(path).split(os.sep)[0] == CONFIGS_DIR and not os.path.isdir(CONFIGS_DIR)
                     else "")
            raise UserError(f"flagfile {path!r} does not exist{where}")
        if not os.path.isfile(path):
            raise UserError(f"flagfile {path!r} is not a file")
        if not os.access(path, os.R_OK):
            raise UserError(f"flagfile {path!r} is not readable")
        _check_text(path)
    flag_values.unparse_flags()
    try:
        # absl hands back what is not a flag: words on the command line, and flagfile lines without "--".
        not_flags = flag_values(list(argv))[1:]
    except UnicodeDecodeError as error:  # A flagfile named inside a flagfile (those on the command line are checked).
        raise UserError(f"a flagfile named in a flagfile is not text ({error.reason})") from None
    except flags.Error as error:
        # absl quotes a boolean's bad value as a Python tuple: "('Non-boolean argument to boolean flag', 'yes')",
        # and a flagfile named in a flagfile that it cannot open as "ERROR:: Unable to open flagfile: ...".
        message = re.sub(r"\('Non-boolean argument to boolean flag', '.*'\)", "a boolean flag takes true or false "
                         "(or --name / --noname)", first_line(error))
        raise UserError(re.sub(r"^ERROR:: Unable to open flagfile: (\[Errno \d+\] )?",
                               "cannot open a flagfile named in a flagfile: ", message)) from error
    if not_flags:
        raise UserError(f"{not_flags[0]!r} is not a flag: flags start with -- (a flagfile is given as "
                        "--flagfile=<path>, and each of its lines is a flag such as --generator_steps=600)")
    _check_numbers(flag_values)
    for name in PATH_FLAG_NAMES:
        if name in flag_values and flag_values[name].value:
            value = flag_values[name].value
            expanded = ([system_path(os.path.expanduser(item)) for item in value] if isinstance(value, list)
                        else system_path(os.path.expanduser(value)))
            if expanded != value:
                flag_values[name].value = expanded


def _check_text(flagfile_path: str) -> None:
    """Refuses a flagfile that is not text, as absl reads it (in the locale's encoding): a model
    file given as one, or one saved as UTF-16, ended in a UnicodeDecodeError's traceback; and
    one that starts with a byte-order mark, which absl reads as part of its first flag."""
    try:
        with open(flagfile_path) as flagfile:
            for number, line in enumerate(flagfile):  # Line by line: a large file is refused at its first bad byte.
                if number == 0 and line.startswith("\ufeff"):
                    raise UserError(f"flagfile {flagfile_path!r} starts with a byte-order mark (saved as UTF-8 with "
                                    "BOM), which would be read as part of its first flag; save it as UTF-8 without one")
    except UnicodeDecodeError as error:
        raise UserError(f"flagfile {flagfile_path!r} is not text ({error.reason}); save it as UTF-8 text") from None


def _check_numbers(flag_values: flags.FlagValues) -> None:
    """Refuses what every tool's range checks would let through: an infinite or NaN float
    (`inf` passes `>= 0`, and a loss or learning rate of it fails only once training runs), an
    integer beyond TensorFlow's int32 shapes, and a seed numpy cannot take once the offsets of
    derived streams are added (`MAX_SEED`), unless the flag sets its own upper bound (a seed
    that is itself a derived one)."""
    if "seed" in flag_values and isinstance(flag_values.seed, int):
        largest = getattr(flag_values["seed"].parser, "upper_bound", None)
        largest = MAX_SEED if largest is None else largest
        if not 0 <= flag_values.seed <= largest:
            raise UserError(f"--seed must be in [0, {largest}], got {flag_values.seed}")
    for name in flag_values:
        value = flag_values[name].value
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name} must be a finite number, got {value}")
        integer = isinstance(value, int) and not isinstance(value, bool)
        if integer and name != "seed" and not -MAX_INTEGER_FLAG - 1 <= value <= MAX_INTEGER_FLAG:  # Seeds: above.
            raise UserError(f"--{name} must be within int32, [{-MAX_INTEGER_FLAG - 1}, {MAX_INTEGER_FLAG}], got "
                            f"{value}")


def _flagfile_paths(arguments: Sequence[str]):
    """The flagfiles named on a command line: `--flagfile=<path>` or `--flagfile <path>` (one dash too)."""
    for index, argument in enumerate(arguments):
        name, equals, value = argument.partition("=")
        if name in ("--flagfile", "-flagfile"):
            if equals:
                yield value
            elif index + 1 < len(arguments):
                yield arguments[index + 1]


def usage(flag_values: flags.FlagValues, module_name: str, full: bool = False) -> str:
    """The help of the entry point `module_name`: its docstring, then its flags (`full`: every flag).

    Flags are registered under the name of the module that defined them, which absl
    takes from `sys.argv[0]` for the `__main__` module (a script, or `python -m`).
    """
    module = sys.modules.get(module_name)
    text = (module.__doc__ or "").strip() if module is not None else ""
    flags_module = sys.argv[0] if module_name == "__main__" else module_name
    flags_text = flag_values.get_help() if full else flag_values.module_help(flags_module).strip()
    if flags_text and not full:
        # module_help starts with the module's name (a file path for a script); say what it is instead.
        flags_text = "flags:\n" + flags_text.partition("\n")[2].rstrip()
    more = "" if full else "\n\n--helpfull lists every flag, including those of the libraries underneath."
    return "\n\n".join(part for part in (text, flags_text) if part) + more


def run_command(flag_values: flags.FlagValues, argv: Sequence[str], body: Callable[[], Optional[int]],
                resumable: bool = True) -> int:
    """Parses flags, runs `body()`, and turns expected failures into one line and a status.

    `body` may return the status of a command that ran but found what it checks for wanting
    (1, as `tools/architecture_check.py` does when an architecture does not go through);
    whatever else it returns (None, a benchmark's results) is success.

    `resumable`: whether the same command, run again after Ctrl-C, SIGTERM or SIGHUP, goes on from
    where it stopped (train, the benchmark, teacher training) or starts again (a conversion);
    the stop's line says which.

    `--help` (also `-h`, `-?`, `--helpshort`) prints `usage` of the module defining `body`
    instead of running it; `--helpfull` adds every other flag.

    Returns:
      0 on success or after help (or the status `body` returned), `USER_ERROR_STATUS` for bad
      input, `IN_USE_STATUS` for a directory another process holds, `NUMERICAL_FAULT_STATUS`
      for a NaN/Inf loss, `STORAGE_FULL_STATUS` for a full disk, a file operation the system
      refuses or a file that lost writes no one reported, `OUT_OF_MEMORY_STATUS` for a failed
      allocation, `INTERRUPTED_STATUS` for Ctrl-C, `TERMINATED_STATUS` for SIGTERM, 129 for
      SIGHUP and 141 for a closed output (which stop a command as Ctrl-C does: `stop_signals`).
    """
    start_up.command_started()
    verbose = "--verbose" in argv

    def report(prefix, error, status):
        if verbose:
            traceback.print_exc()
        print(f"{prefix}: {error}", file=sys.stderr)
        return status

    def stopped(stop):
        signal_number = stop_signals.stop_signal_of(stop)
        return report("stopped", f"{stop_signals.how_stopped(signal_number)}; {_rerun_advice(resumable)}",
                      stop_signals.exit_status(signal_number))

    arguments = list(argv[1:])
    if any(argument in HELP_ARGUMENTS + FULL_HELP_ARGUMENTS for argument in arguments):
        full = any(argument in FULL_HELP_ARGUMENTS for argument in arguments)
        try:
            print(usage(flag_values, body.__module__, full=full), flush=True)
        except OSError as error:  # `--helpfull | head` that has read its lines: a BrokenPipeError traceback.
            if not stop_signals.closed_output_error(error):
                raise
            return stop_signals.exit_status(stop_signals.PIPE_CLOSED)
        return 0
    try:
        parse_flags(flag_values, argv)
        verbose = bool(getattr(flag_values, "verbose", False))
        with stop_signals.stop_signals_as_keyboard_interrupt():
            status = body()
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except UserError as error:
        stop = stop_signals.stop_behind(error)  # A stop that the code it landed in turned into an error.
        return stopped(stop) if stop is not None else report(
            "error", error, IN_USE_STATUS if isinstance(error, InUseError) else USER_ERROR_STATUS)
    except NonFiniteLossError as error:
        return report("error", error, NUMERICAL_FAULT_STATUS)
    except TrainingInterrupted as interruption:
        return report("stopped", interruption, stop_signals.exit_status(interruption.signal_number))
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM or SIGHUP (`stop_signals.Terminated`).
        return stopped(stop)
    except Exception as error:  # pylint: disable=broad-except  # Those below are answered; the rest are defects.
        if stop_signals.closed_output_error(error):
            return stopped(error)
        if errors.is_out_of_memory(error):
            return report("error", f"out of memory ({first_line(error)[:OUT_OF_MEMORY_QUOTE]}); lower the batch "
                          "sizes or sample counts, or free memory, and rerun: what was written before stays",
                          OUT_OF_MEMORY_STATUS)
        kept = "what was written before stays" + (" (a run resumes from its last checkpoint)" if resumable else "")
        if errors.is_storage_full(error):
            return report("error", f"the disk is full{_file_being_written(error)}; free some space and rerun the "
                          f"same command: {kept}", STORAGE_FULL_STATUS)
        if isinstance(error, errors.LostWritesError):
            return report("error", f"{error}; free some space and rerun the same command: {kept}", STORAGE_FULL_STATUS)
        if errors.is_path_in_the_way(error):
            return report("error", f"a file is where a directory belongs, or a directory where a file belongs: "
                          f"{first_line(error)}; move it aside and rerun the same command: {kept}", STORAGE_FULL_STATUS)
        if errors.is_file_access_refused(error):
            return report("error", f"the system refused a file operation: {first_line(error)}; fix the file's "
                          f"permissions or its file system and rerun the same command: {kept}", STORAGE_FULL_STATUS)
        # Ctrl-C or SIGTERM landed in TensorFlow tracing a function (an export's), which turned it into
        # "AssertionError: Concurrent access?": a traceback and status 1 where the stop's line belongs. (A full
        # disk met while saving after a stop is said above: the stop's line would advise a resume.)
        stop = stop_signals.stop_behind(error)
        if stop is not None:
            return stopped(stop)
        raise


def _rerun_advice(resumable: bool) -> str:
    return "rerun the same command to resume" if resumable else "rerun the same command to start again"


def _file_being_written(error: Exception) -> str:
    """" (writing <path>)" for an error that names the file it failed on, else ""."""
    path = getattr(error, "filename", None)
    if not path:  # TensorFlow's writers put it in the message: "... <path>; No space left on device".
        found = re.search(r"(/\S+); (?:%s)" % "|".join(errors.STORAGE_FULL_MESSAGES), str(error))
        path = found.group(1) if found else None
    return f" (writing {path})" if path else ""


def define_teacher_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags that say how to build and read a teacher, all but `--teacher` itself.

    Entry points that take a teacher call this, then `flags.adopt_module_key_flags(cli)` so
    that their `--help` lists these flags; `teacher_source` reads them back.
    """
    defaults = TeacherSource()
    flags.DEFINE_string("teacher_weights", defaults.weights, "Keras Applications weights: imagenet, none, or a file.",
                        flag_values=flag_values)
    flags.DEFINE_float("teacher_alpha", defaults.alpha, "Width multiplier of mobilenet, mobilenet_v2 and "
                       "mobilenet_v3_*.",
                       flag_values=flag_values)
    flags.DEFINE_integer("teacher_input_size", defaults.input_size, "Square input size; 0 = the model's own (a "
                         "model that takes any size needs it).", flag_values=flag_values)
    flags.DEFINE_integer("teacher_num_classes", defaults.num_classes, "Classes of a Keras Application without "
                         "ImageNet weights; 0 = 1000.", flag_values=flag_values)
    flags.DEFINE_integer("teacher_channels", defaults.channels, "Input channels of a Keras Application without "
                         "ImageNet weights.", flag_values=flag_values)
    flags.DEFINE_string("teacher_preprocessing", defaults.preprocessing, "tf, caffe, torch, custom or raw; empty = "
                        "the model's own.", flag_values=flag_values)
    flags.DEFINE_list("teacher_preprocessing_mean", [], "Per-channel mean in [0, 1] units for custom preprocessing.",
                      flag_values=flag_values)
    flags.DEFINE_list("teacher_preprocessing_std", [], "Per-channel std in [0, 1] units for custom preprocessing.",
                      flag_values=flag_values)
    flags.DEFINE_bool("trust_model_code", defaults.trust_model_code, "Load model files that hold serialized Python "
                      "(Lambda layers).", flag_values=flag_values)
    flags.DEFINE_string("teacher_cache_dir", defaults.cache_dir, "Where built-in teachers are kept; empty = "
                        "$ZSCGAN_TF_CACHE, else ~/.cache/zscgan_tf/teachers.", flag_values=flag_values)
    flags.DEFINE_list("teacher_custom_objects", list(defaults.custom_objects), "Python modules or .py files that "
                      "define the model's own layers (and other Keras classes or functions), imported before it "
                      "loads.", flag_values=flag_values)


def floats_flag(values: Sequence[str], flag_name: str) -> tuple:
    """A list flag's values as floats; anything else is a `UserError` naming the flag."""
    try:
        return tuple(float(value) for value in values)
    except ValueError as error:
        raise UserError(f"--{flag_name} must be a comma-separated list of numbers, got {','.join(values)}") from error


def _preprocessing_statistics(flag_values: flags.FlagValues):
    """(mean, std) of the preprocessing flags, refused without the mode they belong to."""
    mean = floats_flag(flag_values.teacher_preprocessing_mean, "teacher_preprocessing_mean")
    std = floats_flag(flag_values.teacher_preprocessing_std, "teacher_preprocessing_std")
    if (mean or std) and not flag_values.teacher_preprocessing:
        raise UserError("--teacher_preprocessing_mean and --teacher_preprocessing_std go with "
                        "--teacher_preprocessing=custom")
    return mean, std


def preprocessing_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Optional[Preprocessing]:
    """The preprocessing `--teacher_preprocessing` (and its statistics) names, or None if it names none."""
    mean, std = _preprocessing_statistics(flag_values)
    mode = flag_values.teacher_preprocessing.lower()  # TF, Caffe: as papers and model cards write them.
    return Preprocessing(mode, mean, std) if mode else None


def ignored_teacher_flags_note(model: str, flag_values: flags.FlagValues = flags.FLAGS) -> Optional[str]:
    """A note naming the Keras Applications flags set for a teacher that is not one (a model
    file or a built-in teacher ignores them; a flagfile written for an Application may set
    them), or None."""
    if model in KERAS_APPLICATIONS:
        return None
    ignored = [f"--{name}" for name in APPLICATION_FLAG_NAMES
               if name in flag_values and flag_values[name].value != flag_values[name].default]
    if not ignored:
        return None
    one = len(ignored) == 1
    return (f"note: {', '.join(ignored)} {'is' if one else 'are'} for Keras Applications teachers (mobilenet_v2, "
            f"resnet50, ...); --teacher={model} is not one and ignores {'it' if one else 'them'}")


def teacher_source(model: str, flag_values: flags.FlagValues = flags.FLAGS) -> TeacherSource:
    """The `TeacherSource` of `model` (the `--teacher` value) and the flags of `define_teacher_flags`."""
    mean, std = _preprocessing_statistics(flag_values)
    return TeacherSource(
        model=model, weights=flag_values.teacher_weights, alpha=flag_values.teacher_alpha,
        input_size=flag_values.teacher_input_size, num_classes=flag_values.teacher_num_classes,
        channels=flag_values.teacher_channels, preprocessing=flag_values.teacher_preprocessing.lower(),
        preprocessing_mean=mean, preprocessing_std=std,
        trust_model_code=flag_values.trust_model_code, cache_dir=flag_values.teacher_cache_dir,
        custom_objects=tuple(flag_values.teacher_custom_objects))
