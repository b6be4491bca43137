"""Atomic writes: an output is either whole or absent, never truncated; and one writer per directory.

Each writer writes a temporary file in the destination's directory, flushes it to
disk and renames it over the destination; a crash leaves at most a stray temporary
file that no stage reads, named with the writer's process id, which the next process to
take the directory's lock removes. A folder a writer made for its output goes again, if
empty, when the write fails (a full disk). `exclusive_use` keeps a second process from
working in a directory (a run started twice) while the first does.
"""

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import warnings
from typing import Callable, Optional, Tuple

from zscgan_tf.errors import InUseError, UserError

TEMPORARY_PREFIX = ".tmp-"
# This package's own temporary files, named with their writer's machine and process id after
# it; other programs' `.tmp-` files are never taken for strays.
_OWN_TEMPORARY_PREFIX = f"{TEMPORARY_PREFIX}zscgan_tf-"
# This machine, as temporary files name it: a directory shared with others (NFS, a container's
# volume) holds files of processes this machine cannot see.
_MACHINE = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# How deep below a locked directory strays are looked for: a benchmark's generator runs and
# their evaluation folders are 3 levels down.
STRAY_SEARCH_DEPTH = 4
LOCK_FILE = ".lock"
DIGEST_CHUNK_BYTES = 1 << 20
# mkstemp creates files readable by their owner only; outputs get the usual umask instead.
_DEFAULT_FILE_MODE = 0o666
# What tf_keras says on every `.h5` save.
_HDF5_LEGACY_WARNING = "You are saving your model as an HDF5 file"
# The directories this process holds the lock of (`exclusive_use`), by real path.
_HELD_DIRECTORIES = set()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_prefix(process_id: Optional[int] = None) -> str:
    """The start of the names of the temporary files of a process of this machine (this one by
    default): `.tmp-zscgan_tf-<machine>-<process id>-`."""
    return f"{_OWN_TEMPORARY_PREFIX}{_MACHINE}-{os.getpid() if process_id is None else process_id}-"


def _sync_directory(directory: str) -> None:
    """Flushes `directory`'s entries to disk, so that a rename into it survives a power loss
    (where the file system allows: not every one can open a directory)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def new_folders_removed_on_failure(folders):
    """Removes those of `folders` that did not exist before the block and are empty after it,
    deepest first, where the block fails: a folder made for what could not be written is not
    left behind (a full disk left an empty `evaluation/` in a run, `--output=new/model.tflite` an
    empty `new/`, a refused TFDS download `downloads/extracted`). A folder that existed before
    stays, and so does one that another writer has put a file in meanwhile; one another process
    has made its own since, and not yet written in (two `tools/convert.py --output` into one new
    folder at once, where a run's lock keeps that from its work directory), goes too."""
    made = [folder for folder in folders if not os.path.lexists(folder)]
    try:
        yield
    except BaseException:
        for folder in sorted(made, key=lambda path: os.path.abspath(path).count(os.sep), reverse=True):
            with contextlib.suppress(OSError):  # Not empty (rmdir refuses), or gone.
                os.rmdir(folder)
        raise


def missing_folders(path: str) -> list:
    """`path` made absolute, if it does not exist, and the folders above it that do not, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


@contextlib.contextmanager
def _directory_for_output(directory: str):
    """Creates `directory`, and the folders above it that are missing, for the block that writes an
    output there; those it made go again where the block fails (`new_folders_removed_on_failure`)."""
    with new_folders_removed_on_failure(missing_folders(directory)):
        os.makedirs(directory, exist_ok=True)
        yield


def write_bytes_atomic(path: str, data: bytes) -> str:
    """Writes `data` to `path` atomically and returns `path` (a symbolic link's target: the
    link stays).

    Raises:
      OSError: as the write failed, naming `path` as its `filename`, not the temporary file
        written first, which the user never named (a full disk fails in a write to it, which
        names none; a directory that takes no new file, such as /proc, fails to create it).
    """
    target = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(os.path.abspath(target))
    with _directory_for_output(directory):
        try:
            handle, temporary_path = tempfile.mkstemp(prefix=temporary_prefix(), dir=directory)
        except OSError as error:
            error.filename = path
            raise
        try:
            with os.fdopen(handle, "wb") as temporary_file:
                temporary_file.write(data)
                temporary_file.flush()
                os.fsync(temporary_file.fileno())
            os.chmod(temporary_path, _DEFAULT_FILE_MODE & ~_current_umask())
            os.replace(temporary_path, target)
            _sync_directory(directory)
        except BaseException as error:
            if os.path.exists(temporary_path):
                os.remove(temporary_path)
            if isinstance(error, OSError) and error.filename is None:
                error.filename = path
            elif isinstance(error, OSError) and error.filename == temporary_path:  # os.replace's "<temp> -> <path>".
                raise OSError(error.errno, error.strerror, path) from error
            raise
    return path


def read_json(path: str, default):
    """The JSON value in `path`, or `default` when the file is missing or unreadable.

    For files the package writes itself (state, history, caches): losing one means
    redoing work, never stopping.
    """
    if not os.path.exists(path):
        return default
    try:
        with open(path) as json_file:
            return json.load(json_file)
    except (OSError, ValueError):
        return default


def write_text_atomic(path: str, text: str) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _json_text(values) -> str:
    return json.dumps(values, indent=2, sort_keys=True) + "\n"


def write_json_atomic(path: str, values) -> str:
    return write_text_atomic(path, _json_text(values))


def write_json_if_changed(path: str, values) -> str:
    """`write_json_atomic`, unless `path` holds those very bytes already (`write_bytes_if_changed`)."""
    return write_bytes_if_changed(path, _json_text(values).encode("utf-8"))


def write_text_if_changed(path: str, text: str) -> str:
    """`write_text_atomic`, unless `path` holds those very bytes already (`write_bytes_if_changed`)."""
    return write_bytes_if_changed(path, text.encode("utf-8"))


def write_bytes_if_changed(path: str, data: bytes) -> str:
    """`write_bytes_atomic`, unless `path` holds `data` already: then it is left as it is, its
    time too. A rerun of a finished run rewrote its unchanged config.json, export report and
    labels, and on a disk still full failed there before resuming anything. A file that
    differs, such as a config an earlier version saved without a newer setting, is written."""
    try:
        with open(path, "rb") as existing:
            if existing.read(len(data) + 1) == data:
                return path
    except OSError:  # Missing or unreadable: written.
        pass
    return write_bytes_atomic(path, data)


def strict_json_values(values):
    """`values` as strict JSON reads them back: tuples as lists, and NaN and infinities as
    None (JSON has no literal for them; Python writes `NaN`, which browsers, `jq` 1.7 and
    strict parsers refuse). For files that scripts read: `report.json`, `results.json`."""
    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    return json.loads(json.dumps(finite(values), allow_nan=False))


@contextlib.contextmanager
def _tensorflow_warnings_off():
    """Silences TensorFlow's logger below errors: tf_keras's save logs "Compiled the loaded
    model, but the compiled metrics have yet to be built" for any uncompiled model."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_keras_model_atomic(model, path: str) -> str:
    """Saves a tf_keras model to a `.keras` (or, for TF-MOT models, `.h5`) `path` atomically
    (a symbolic link's target: the link stays).

    The temporary file keeps the suffix, since Keras picks the format from it.

    Raises:
      OSError: as the save failed, naming `path` as its `filename` where it named none or the
        temporary file (h5py's and zipfile's errors on a full disk name none).
    """
    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"expected a .keras or .h5 path, got {path!r}")
    target = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(os.path.abspath(target))
    with _directory_for_output(directory):
        temporary_path = os.path.join(directory, f"{temporary_prefix()}{os.path.basename(path)}")
        try:
            with warnings.catch_warnings(), _tensorflow_warnings_off():
                # HDF5 on purpose: a TF-MOT model saved as `.keras` does not load back.
                warnings.filterwarnings("ignore", message=_HDF5_LEGACY_WARNING)
                model.save(temporary_path)
            with open(temporary_path, "rb") as saved:  # On disk before the rename, as write_bytes_atomic's files are.
                os.fsync(saved.fileno())
            os.replace(temporary_path, target)
            _sync_directory(directory)
        except OSError as error:
            if error.filename is None or error.filename == temporary_path:
                error.filename = path
            raise
        finally:
            if os.path.exists(temporary_path):
                os.remove(temporary_path)
    return path


def unusable_directory_reason(path: str) -> Optional[str]:
    """Why `path` could not be created or written as an output directory, or None; creates nothing.

    Looks at `path` itself when it exists, else at its nearest existing parent: so that a
    command can check its output directory before its first slow or failing step, and create
    it only once it has something to write there.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        if os.path.islink(existing):  # Made through, it is "File exists"; written through, "No such file".
            return f"{existing!r} is a symbolic link to {os.readlink(existing)!r}, which does not exist"
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing!r} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing!r} is not writable"
    return None


def paths_as_strings(instance, names) -> None:
    """Turns the `os.PathLike` values (a `pathlib.Path`) of frozen dataclass `instance`'s fields
    `names` into strings, as configs keep, compare and record paths, with their ".." as the
    system reads them (`system_path`)."""
    for name in names:
        value = getattr(instance, name)
        path = system_path(os.fspath(value) if isinstance(value, os.PathLike) else value)
        if path is not value:
            object.__setattr__(instance, name, path)


def system_path(path):
    """`path` with its ".." components where the system takes them, for every later use to agree.

    The system follows a symbolic link before going up from it: "link/../runs" is the runs
    folder beside the link's target. `os.path.abspath` and TensorFlow's file functions drop
    "link/.." as text instead, so a run with such a work directory wrote its config in one
    folder and its checkpoints in another. Such a path becomes absolute, its part up to its last
    ".." the directory the system reads, the names after it kept: a model file that is a link
    keeps its name, and the sidecar beside it. One whose text already goes where the system
    does is only normalized (so "q/../q1" no longer makes an empty q), and so is one the system
    cannot follow (a link to nothing, to a file, or in a loop, before a ".."), which would
    otherwise lead somewhere it never goes; one without "..", one starting with "~" (expanded
    later, by `os.path.expanduser`), or not a string, is returned as given.
    """
    # "~" is the home directory only once expanded: taken here, it is a folder "~" in the current one.
    if not isinstance(path, str) or os.pardir not in path.split(os.sep) or path.startswith("~"):
        return path
    parts = path.split(os.sep)
    last_parent = len(parts) - 1 - parts[::-1].index(os.pardir)
    up_to_last_parent, after = os.sep.join(parts[:last_parent + 1]), parts[last_parent + 1:]
    # Asked of the text itself, as the system reads it: realpath goes up from a link to a file, or from
    # one to nothing, to the target's folder, where the system goes nowhere.
    if not os.path.isdir(up_to_last_parent):
        return os.path.normpath(path)
    directory = os.path.realpath(up_to_last_parent)
    if os.path.realpath(os.path.normpath(up_to_last_parent)) == directory:
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(directory, *after))


def portable_path(path: str) -> str:
    """`path` made absolute when it names an existing file or directory, as a run records it, so
    that a run resumed from another directory finds it; anything else (a name, "") as given."""
    return os.path.abspath(system_path(path)) if path and os.path.exists(path) else path


def bytes_digest(contents: bytes) -> str:
    """The SHA-256 of `contents`, as `file_digest` gives it for a file holding them."""
    return hashlib.sha256(contents).hexdigest()


def file_digest(path: str) -> Optional[str]:
    """The SHA-256 of a file, or None when it does not exist; state.json records it per output."""
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as output_file:
        for chunk in iter(lambda: output_file.read(DIGEST_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# One of this package's temporary files written on this machine: the prefix, then its writer's process id.
_TEMPORARY_NAME = re.compile(re.escape(f"{_OWN_TEMPORARY_PREFIX}{_MACHINE}-") + r"(\d+)-")


def _process_exists(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # Another user's process; no process id of this system's.
        return True
    return True


def remove_stray_temporary_files(directory: str) -> int:
    """Removes this package's temporary files under `directory` (`STRAY_SEARCH_DEPTH` levels
    down at most) whose writer, a process of this machine, has ended (killed while it wrote:
    a killed process removes none), as their names say; returns how many. For the holder of
    `directory`'s lock, under which no other run writes there."""
    removed = 0
    top_depth = os.path.abspath(directory).rstrip(os.sep).count(os.sep)
    for folder, subfolders, names in os.walk(directory):
        if os.path.abspath(folder).rstrip(os.sep).count(os.sep) - top_depth >= STRAY_SEARCH_DEPTH:
            subfolders.clear()
        for name in names:
            found = _TEMPORARY_NAME.match(name)
            if found and not _process_exists(int(found.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
                    removed += 1
    return removed


def _holder(lock_file) -> Tuple[str, str]:
    """(the work, "process <id>") that a lock file says holds it; ("", "") when it does not say,
    and no work for a file written before the work was recorded ("process <id>")."""
    lock_file.seek(0)
    text = lock_file.read().strip()
    work, _, process = text.rpartition(", ")
    return (work, process) if process.startswith("process ") else ("", "")


def _in_use_message(directory: str, what: str, advice: str, holder: Tuple[str, str]) -> str:
    work, process = holder
    named = f"another {what}" if work in ("", what) else f"a {work}"
    return f"{directory!r} is in use by {named}{f' ({process})' if process else ''}; {advice}"


@contextlib.contextmanager
def exclusive_use(directory: str, what: str = "run", advice: str = "wait for it to finish, or pass another --work_dir",
                  on_wait: Optional[Callable[[str], None]] = None, shared: bool = False):
    """Holds an advisory lock on `directory` (a `LOCK_FILE` in it) for the block.

    The operating system releases the lock when the process ends, however it ends, so a
    killed run leaves no stale lock. Where `fcntl` is missing (Windows), or the file system
    has no locks, there is none. Within a block that holds it, the same process takes it
    again at once. The lock file names the work that holds it (`what`) and its process.

    Args:
      directory: an existing directory.
      what: the work that holds it, for the lock file and the refusal.
      advice: what to do, for the refusal.
      on_wait: when given, another process's lock is waited for rather than refused;
        `on_wait(holder)` is called first ("process <id>", or "" when unknown).
      shared: a lock that other shared holders may hold at once (readers: conversions
        of one run), but not an exclusive one (the run); it removes no stray files, and
        takes a lock file it may not write (another user's) read-only.

    Raises:
      InUseError: if another process holds it (and `on_wait` is None), the message naming
        that work and its process.
      UserError: if the lock file is a symbolic link.
    """
    try:
        import fcntl  # pylint: disable=import-outside-toplevel  # POSIX only.
    except ImportError:
        yield
        return
    key = os.path.realpath(directory)
    if key in _HELD_DIRECTORIES:
        yield
        return
    path = os.path.join(directory, LOCK_FILE)
    if os.path.islink(path):  # Its target would be written: a file anywhere, from a directory someone sent.
        raise UserError(f"{path!r} is a symbolic link, where a {what} keeps a lock file of its own: remove the link")
    try:
        lock_file = _open_not_following_links(path, "a+")
    except OSError:
        if not shared:
            raise
        if not os.path.isfile(path):  # A directory this process cannot write (read-only): no run writes there.
            yield
            return
        lock_file = _open_not_following_links(path, "r")  # Another user's lock file, or a read-only directory.
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with lock_file:
        try:
            fcntl.flock(lock_file, mode | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            holder = _holder(lock_file)
            if on_wait is None:
                raise InUseError(_in_use_message(directory, what, advice, holder)) from None
            on_wait(holder[1])
            fcntl.flock(lock_file, mode)
            locked = True
        except OSError:  # A file system without locks (ENOLCK on some NFS mounts): go on without one.
            locked = False
        if locked:
            if lock_file.writable():
                lock_file.seek(0)
                lock_file.truncate()
                lock_file.write(f"{what}, process {os.getpid()}")
                lock_file.flush()
            _HELD_DIRECTORIES.add(key)
            if not shared:
                remove_stray_temporary_files(directory)
        try:
            yield
        finally:
            if locked:
                _HELD_DIRECTORIES.discard(key)
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _open_not_following_links(path: str, mode: str):
    """`open(path, mode)` ("a+" or "r"), refusing a symbolic link made since it was checked
    (`OSError`, ELOOP)."""
    flags = (os.O_RDWR | os.O_CREAT | os.O_APPEND) if mode == "a+" else os.O_RDONLY
    return os.fdopen(os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666), mode)


def check_not_in_use(directory: str, what: str = "run",
                     advice: str = "wait for it to finish, or pass another --work_dir") -> None:
    """Refuses `directory` while another process holds its lock (`exclusive_use`), as taking it
    would, but creates nothing and holds nothing: for a command to check its directory before
    minutes of loading, and take the lock once it has something to write there.

    Raises:
      InUseError: as `exclusive_use` does.
    """
    try:
        import fcntl  # pylint: disable=import-outside-toplevel  # POSIX only.
    except ImportError:
        return
    path = os.path.join(directory, LOCK_FILE)
    if os.path.realpath(directory) in _HELD_DIRECTORIES or not os.path.isfile(path) or os.path.islink(path):
        return  # A link is refused by taking the lock.
    try:
        lock_file = open(path, "r")
    except OSError:  # Unreadable: taking the lock will say why.
        return
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InUseError(_in_use_message(directory, what, advice, _holder(lock_file))) from None
        except OSError:  # A file system without locks.
            return
        fcntl.flock(lock_file, fcntl.LOCK_UN)
