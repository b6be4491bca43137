"""The one exception type that means "the user's input is wrong", not "we have a bug", and
how the system's own failures a user can meet are told apart (`is_storage_full`,
`is_file_access_refused`, `is_out_of_memory`).

Entry points (`cli.run_command`) print a `UserError` as a single line and exit with status 2,
or 75 for an `InUseError`. The other failures a user can meet are one line too, with their
own status: a loss that is not finite (3), a full disk, a file operation the system refuses or
a file that lost writes no one reported (`LostWritesError`) (4), memory running out (5) and a
stop by a signal (130, 143, 129, 141). Any other exception is a defect and keeps its traceback.
"""

import errno
import os
import re


class UserError(Exception):
    """Bad input from the user: a flag, a file, a model or a dataset."""


class LostWritesError(Exception):
    """A file a library wrote lacks what it was given, though the library reported no failed
    write (TensorBoard's events file: `event_file`); a full disk, most often."""


class InUseError(UserError):
    """A directory another process holds (`files.exclusive_use`): the same command succeeds
    once that process ends, so a script may retry it, where bad input must be fixed."""


# The longest part of an underlying error's message quoted in a one-line `UserError`.
FIRST_LINE_LIMIT = 300
# What TensorFlow's eager op errors wrap their message in, which says nothing to a user:
# "{{function_node __wrapped__DecodeJpeg_device_/job:localhost/...}} <message> [Op:DecodeJpeg]".
_TENSORFLOW_OP_WRAPPING = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]( name:( \S*)?)?$")
# How a full disk or quota reads in the errors of Python, h5py and TensorFlow's file writers,
# which raise OSError, OSError without an errno, or TensorFlow's own error classes.
STORAGE_FULL_MESSAGES = ("No space left on device", "Disk quota exceeded")
# File operations the system refuses for another reason than space (`is_file_access_refused`),
# which entry points answer with one line, as a full disk (`cli.run_command`).
FILE_ACCESS_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO)
# A file where a command makes a directory, or a directory where it writes a file
# (`is_path_in_the_way`): a hand's doing, which commands answer with one line, as a refused
# file operation.
PATH_IN_THE_WAY_ERRNOS = (errno.EEXIST, errno.EISDIR, errno.ENOTDIR)
# How TensorFlow's file writers (checkpoints, summaries) say the same, in their own error classes.
_TENSORFLOW_PATH_IN_THE_WAY = re.compile(r"is not a directory|Is a directory|Not a directory")


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (its type name if it has none), cut to `FIRST_LINE_LIMIT`,
    for quoting it in a one-line `UserError`.

    Where a library wrapped one of our `UserError`s (tf_keras' "Error when deserializing
    class ..." around a layer's own, with its whole config), or raised its error while
    handling one, the `UserError`'s message.
    """
    seen = set()
    cause = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, UserError):
            error = cause
            break
        seen.add(id(cause))
        # Even a context raised `from None`: TensorFlow's and tf_keras' traceback filtering re-raise
        # every error so, to shorten its traceback, not to disown its cause.
        cause = cause.__cause__ if cause.__cause__ is not None else cause.__context__
    text = str(error).strip() or type(error).__name__
    return _TENSORFLOW_OP_WRAPPING.sub("", text.splitlines()[0]).strip()[:FIRST_LINE_LIMIT]


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation that failed: numpy's MemoryError, or TensorFlow's
    ResourceExhaustedError for memory (a full disk raises that class too)."""
    if isinstance(error, MemoryError):
        return True
    return type(error).__name__ == "ResourceExhaustedError" and not is_storage_full(error)


def is_storage_full(error: Exception) -> bool:
    """Whether `error` is a write that failed for a full disk or quota (`STORAGE_FULL_MESSAGES`)."""
    return any(message in str(error) for message in STORAGE_FULL_MESSAGES)


def is_path_in_the_way(error: Exception) -> bool:
    """Whether `error` is a file operation that met something else at its path
    (`PATH_IN_THE_WAY_ERRNOS`), from Python or from TensorFlow's writers."""
    if isinstance(error, OSError):
        return error.errno in PATH_IN_THE_WAY_ERRNOS
    return type(error).__name__ == "FailedPreconditionError" and bool(_TENSORFLOW_PATH_IN_THE_WAY.search(str(error)))


def is_file_access_refused(error: Exception) -> bool:
    """Whether `error` is a file operation the system refused, other than for space: no
    permission (an immutable file, another user's directory), a read-only file system, a
    failing disk (`FILE_ACCESS_ERRNOS`); from Python, or from TensorFlow's writers."""
    if isinstance(error, OSError):
        return error.errno in FILE_ACCESS_ERRNOS
    return type(error).__name__ == "PermissionDeniedError" or any(
        os.strerror(number) in str(error) for number in FILE_ACCESS_ERRNOS)
