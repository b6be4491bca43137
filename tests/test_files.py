import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import json
import logging
import os
import stat
import warnings

import numpy as np
import pytest
import tf_keras

from zscgan_tf import files


def test_write_bytes_atomic_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.tflite"
    files.write_bytes_atomic(str(path), b"a much longer first version")
    files.write_bytes_atomic(str(path), b"short")
    assert path.read_bytes() == b"short"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_write_bytes_atomic_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")

    def failing_replace(source, destination):
        raise OSError(f"cannot replace {destination}")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        files.write_bytes_atomic(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_a_failed_write_names_the_file_it_was_writing(tmp_path, monkeypatch):
    # A full disk fails in the temporary file's write or fsync, whose error names no file: the message
    # for it said "the disk is full" without saying what was being written.
    import errno

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    path = tmp_path / "report.md"
    with pytest.raises(OSError) as raised:
        files.write_bytes_atomic(str(path), b"data")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_failed_model_save_names_the_model_file(tmp_path, monkeypatch, suffix):
    # A full disk, found by filling a real one: zipfile's and h5py's errors name no file, and the message said
    # "the disk is full" without saying that student.h5 or generator.keras was being written.
    import errno
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(model), "save", disk_full)
    path = str(tmp_path / f"student{suffix}")
    with pytest.raises(OSError) as raised:
        files.save_keras_model_atomic(model, path)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == path
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("failing", ["mkstemp", "replace"])
def test_a_failed_write_names_the_file_asked_for_not_the_temporary_one(tmp_path, monkeypatch, failing):
    # --output=/proc/o.tflite said "No such file or directory: '/proc/.tmp-zscgan_tf-...'".
    import errno

    def refused(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / ".tmp-zscgan_tf-0-1-x"))

    def refused_replace(source, destination):
        raise OSError(errno.EACCES, "Permission denied", source, None, destination)

    if failing == "mkstemp":
        monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    else:
        monkeypatch.setattr(files.os, "replace", refused_replace)
    path = tmp_path / "model.tflite"
    with pytest.raises(OSError) as raised:
        files.write_bytes_atomic(str(path), b"data")
    assert str(raised.value) == f"[Errno 13] Permission denied: '{path}'"
    assert os.listdir(tmp_path) == []


def _ended_process_id() -> int:
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_taking_a_directory_removes_the_temporary_files_of_ended_writers_only(tmp_path):
    # A writer killed mid-write leaves its temporary file (of a whole model, at ImageNet's scale); they
    # were left there for good.
    (tmp_path / "generator").mkdir()
    ended = [tmp_path / f"{files.temporary_prefix(_ended_process_id())}student.h5",
             tmp_path / "generator" / f"{files.temporary_prefix(_ended_process_id())}abc123"]
    live = tmp_path / f"{files.temporary_prefix(os.getppid())}qat_int8.tflite"  # A writer still at work.
    # The user's own files, another program's temporary file, one too deep to look for, and one written on
    # another machine sharing the directory, whose processes this one cannot see.
    deep = tmp_path / "a" / "b" / "c" / "d" / "e" / f"{files.temporary_prefix(_ended_process_id())}x"
    deep.parent.mkdir(parents=True)
    elsewhere = files.temporary_prefix(_ended_process_id()).replace(files._MACHINE, "elsewhere")
    others = [tmp_path / "notes.txt", tmp_path / ".tmp-not-a-writer", tmp_path / f".tmp-{_ended_process_id()}-x",
              deep, tmp_path / f"{elsewhere}student.h5"]
    for path in ended + [live] + others:
        path.write_bytes(b"half a model")
    with files.exclusive_use(str(tmp_path)):
        pass
    assert [path for path in ended + [live] + others if path.exists()] == [live] + others
    # This process's own temporary files carry its id.
    path = tmp_path / "state.json"
    names = []
    original_replace = os.replace

    def recording_replace(source, destination):
        names.append(os.path.basename(source))
        original_replace(source, destination)

    import unittest.mock
    with unittest.mock.patch.object(files.os, "replace", recording_replace):
        files.write_json_atomic(str(path), {})
        files.save_keras_model_atomic(tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)]),
                                      str(tmp_path / "model.keras"))
    assert len(names) == 2 and all(name.startswith(files.temporary_prefix()) for name in names), names
    assert files.temporary_prefix().startswith(".tmp-zscgan_tf-") and files.temporary_prefix().endswith(
        f"-{os.getpid()}-")


def test_a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_left_alone(tmp_path):
    # The lock file's target was emptied and written with the holder's name: any file the user can write,
    # from a work directory someone sent.
    target = tmp_path / "notes.txt"
    target.write_text("the user's notes")
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    (work_dir / files.LOCK_FILE).symlink_to(target)
    for shared in (False, True):
        with pytest.raises(files.UserError) as refusal:
            with files.exclusive_use(str(work_dir), shared=shared):
                pass
        assert str(refusal.value) == (f"{str(work_dir / files.LOCK_FILE)!r} is a symbolic link, where a run keeps a "
                                      "lock file of its own: remove the link")
    files.check_not_in_use(str(work_dir))  # Checking reads nothing through it: taking the lock refuses it.
    assert target.read_text() == "the user's notes"
    (work_dir / files.LOCK_FILE).unlink()
    with files.exclusive_use(str(work_dir)):
        assert (work_dir / files.LOCK_FILE).read_text() == f"run, process {os.getpid()}"


def test_a_write_to_a_symbolic_link_replaces_its_target_and_keeps_the_link(tmp_path):
    # The link was replaced by a file of its own, and the file it pointed to kept the old model.
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "v1.tflite"
    target.write_bytes(b"old")
    link = tmp_path / "latest.tflite"
    link.symlink_to(target)
    assert files.write_bytes_atomic(str(link), b"new") == str(link)
    assert link.is_symlink() and target.read_bytes() == b"new"
    model_target = tmp_path / "models" / "v1.keras"
    model_target.write_bytes(b"old")
    model_link = tmp_path / "latest.keras"
    model_link.symlink_to(model_target)
    files.save_keras_model_atomic(tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)]),
                                  str(model_link))
    assert model_link.is_symlink() and tf_keras.models.load_model(str(model_target)).output_shape == (None, 1)
    assert sorted(os.listdir(tmp_path / "models")) == ["v1.keras", "v1.tflite"]


def test_write_bytes_atomic_creates_missing_directories_and_keeps_the_umask(tmp_path):
    path = tmp_path / "missing" / "model.tflite"
    files.write_bytes_atomic(str(path), b"data")
    assert path.read_bytes() == b"data"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("writer", ["bytes", "model"])
def test_a_failed_write_removes_the_directories_it_made_and_no_other(tmp_path, monkeypatch, writer):
    # A real full disk (a tmpfs): a run's first evaluation save left an empty evaluation/, and
    # tools/convert.py --output=new/x.tflite an empty new/.
    import errno

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    def write(path):
        if writer == "bytes":
            files.write_bytes_atomic(str(path), b"data")
        else:
            files.save_keras_model_atomic(tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)]),
                                          str(path.with_suffix(".keras")))

    monkeypatch.setattr(files.os, "fsync", disk_full)
    (tmp_path / "empty").mkdir()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("the user's")
    for path in (tmp_path / "new" / "deeper" / "model", tmp_path / "empty" / "model", tmp_path / "kept" / "model"):
        with pytest.raises(OSError, match="No space left on device"):
            write(path)
    assert sorted(os.listdir(tmp_path)) == ["empty", "kept"]  # A folder that was there stays, empty or not.
    assert os.listdir(tmp_path / "empty") == [] and os.listdir(tmp_path / "kept") == ["notes.txt"]


def test_strict_json_values_are_what_strict_parsers_read_back():
    # A teacher sidecar's "metrics" of NaN reached report.json as NaN, which browsers and strict parsers refuse.
    values = {"metrics": {"test_accuracy": float("nan"), "note": float("inf")}, "shape": (8, 8, 1), "top1": 0.5}
    strict = files.strict_json_values(values)
    assert strict == {"metrics": {"test_accuracy": None, "note": None}, "shape": [8, 8, 1], "top1": 0.5}
    json.loads(json.dumps(strict, allow_nan=False))


def test_write_json_atomic_round_trips(tmp_path):
    path = tmp_path / "state.json"
    files.write_json_atomic(str(path), {"b": [1, 2], "a": "x"})
    assert json.loads(path.read_text()) == {"a": "x", "b": [1, 2]}


def test_a_path_goes_up_from_a_symbolic_link_where_the_system_goes(tmp_path, monkeypatch):
    (tmp_path / "disk" / "sub").mkdir(parents=True)
    (tmp_path / "disk" / "runs").mkdir()
    (tmp_path / "runs").mkdir()
    os.symlink(tmp_path / "disk" / "sub", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    # The system goes up from the link's target; abspath and TensorFlow dropped "link/.." as text, so a run
    # wrote its config in disk/runs/w and its checkpoints in runs/w.
    assert os.path.realpath("link/../runs/w") == str(tmp_path / "disk" / "runs" / "w")
    assert files.system_path("link/../runs/w") == str(tmp_path / "disk" / "runs" / "w")
    assert files.portable_path("link/../runs") == str(tmp_path / "disk" / "runs")
    # Where the text goes where the system does, only normalized: "q/../q1" made an empty q.
    assert files.system_path("q/../q1") == "q1"
    assert files.system_path("./runs/../runs/w/") == "runs/w"
    for as_given in ("runs/w", "./runs/w/", "link/x", "builtin:digits_resnet8", "", None):
        assert files.system_path(as_given) is as_given
    # Where the system cannot go (a link to nothing, to a file, in a loop), the text's place: a run given
    # "dangling/../y" was made in the missing target's folder.
    os.symlink(tmp_path / "nowhere" / "x", tmp_path / "dangling")
    (tmp_path / "a_file").write_text("")
    os.symlink(tmp_path / "a_file", tmp_path / "file_link")
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    for unfollowed in ("dangling", "file_link", "loop_a"):
        assert files.system_path(f"{unfollowed}/../y") == "y"
    # Targets in another folder, as links to a file or to a removed file most often are: realpath goes up to
    # that folder, where the system goes nowhere.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a_file").write_text("")
    os.symlink(tmp_path / "elsewhere" / "a_file", tmp_path / "far_file_link")
    os.symlink(tmp_path / "elsewhere" / "removed", tmp_path / "far_dangling")
    for unfollowed in ("far_file_link", "far_dangling"):
        assert files.system_path(f"{unfollowed}/../y") == "y"


def test_a_path_through_a_link_and_up_keeps_the_names_after_its_last_parent(tmp_path, monkeypatch):
    # A model file that is a link keeps its name, and the sidecar beside it: a teacher reached through
    # "link/../models/current.keras" was read as "version_3", without its class names and preprocessing.
    (tmp_path / "disk" / "sub").mkdir(parents=True)
    (tmp_path / "disk" / "models").mkdir()
    (tmp_path / "disk" / "models" / "version_3.keras").write_text("")
    os.symlink("version_3.keras", tmp_path / "disk" / "models" / "current.keras")
    os.symlink(tmp_path / "disk" / "sub", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    expected = str(tmp_path / "disk" / "models" / "current.keras")
    assert files.system_path("link/../models/./current.keras") == expected
    assert files.portable_path("link/../models/current.keras") == expected


def test_unusable_directory_reason_looks_at_the_nearest_existing_parent_and_creates_nothing(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert files.unusable_directory_reason(str(tmp_path)) is None
    assert files.unusable_directory_reason(str(tmp_path / "new" / "deeper")) is None
    assert not (tmp_path / "new").exists()
    assert files.unusable_directory_reason(str(a_file)) == f"{str(a_file)!r} is not a directory"
    assert files.unusable_directory_reason(str(a_file / "run")) == f"{str(a_file)!r} is not a directory"
    # A link to nothing (a disk not mounted): its parent was judged, and making it ended in a traceback.
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    for path in (dangling, dangling / "run"):
        assert files.unusable_directory_reason(str(path)) == (
            f"{str(dangling)!r} is a symbolic link to {str(tmp_path / 'nowhere')!r}, which does not exist")


def test_save_keras_model_atomic_writes_hdf5_without_tf_keras_warnings(tmp_path, caplog):
    inputs = tf_keras.Input((3,))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(inputs))
    path = str(tmp_path / "model.h5")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        assert files.save_keras_model_atomic(model, path) == path
    # tf_keras warns of the legacy format (a Python warning) and, for an uncompiled model,
    # of its missing compiled metrics (TensorFlow's logger).
    assert not [warning for warning in caught if "HDF5" in str(warning.message)]
    assert not [record for record in caplog.records if "compiled metrics" in record.getMessage()]
    assert os.listdir(tmp_path) == ["model.h5"]
    loaded = tf_keras.models.load_model(path, compile=False)
    sample = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(loaded(sample).numpy(), model(sample).numpy())
