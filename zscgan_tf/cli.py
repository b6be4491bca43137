"""The shell shared by the command-line entry points: flag parsing, one-line errors, exit statuses.

Entry points (`zscgan_tf/train.py`, `tools/*.py`) define their flags and a body; this
module parses `argv` into those flags and runs the body, so every command answers bad
input the same way: one line, `error: ...`, exit status 2 (`--verbose` adds the
traceback). Library modules never import it.
"""

import os
import sys
import traceback
from typing import Callable, Sequence

from absl import flags

from zscgan_tf.errors import UserError
from zscgan_tf.training_loop import NonFiniteLossError, TrainingInterrupted

USER_ERROR_STATUS = 2
NUMERICAL_FAULT_STATUS = 3
INTERRUPTED_STATUS = 130  # The shell's convention for SIGINT.
FLAGFILE_PREFIX = "--flagfile="


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
    """Parses `argv` into `flag_values`; a bad flag or flagfile becomes a `UserError`."""
    for argument in argv[1:]:
        if argument.startswith(FLAGFILE_PREFIX):
            path = argument[len(FLAGFILE_PREFIX):]
            if not os.path.exists(path):
                raise UserError(f"flagfile {path!r} does not exist")
            if not os.path.isfile(path):
                raise UserError(f"flagfile {path!r} is not a file")
            if not os.access(path, os.R_OK):
                raise UserError(f"flagfile {path!r} is not readable")
    flag_values.unparse_flags()
    try:
        flag_values(list(argv))
    except flags.Error as error:
        raise UserError(str(error).splitlines()[0]) from error


def run_command(flag_values: flags.FlagValues, argv: Sequence[str], body: Callable[[], None]) -> int:
    """Parses flags, runs `body()`, and turns expected failures into one line and a status.

    Returns:
      0 on success, `USER_ERROR_STATUS` for bad input, `NUMERICAL_FAULT_STATUS` for a
      NaN/Inf loss, `INTERRUPTED_STATUS` for Ctrl-C.
    """
    verbose = "--verbose" in argv

    def report(prefix, error, status):
        if verbose:
            traceback.print_exc()
        print(f"{prefix}: {error}", file=sys.stderr)
        return status

    try:
        parse_flags(flag_values, argv)
        verbose = bool(getattr(flag_values, "verbose", False))
        body()
        return 0
    except UserError as error:
        return report("error", error, USER_ERROR_STATUS)
    except NonFiniteLossError as error:
        return report("error", error, NUMERICAL_FAULT_STATUS)
    except TrainingInterrupted as interruption:
        return report("stopped", interruption, INTERRUPTED_STATUS)
    except KeyboardInterrupt:
        return report("stopped", "interrupted; rerun the same command to resume", INTERRUPTED_STATUS)
