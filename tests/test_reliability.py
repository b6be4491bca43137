"""Failure modes of `python -m zscgan_tf.train`: kills, Ctrl-C, SIGTERM, damaged outputs, NaN, bad input."""

import errno
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

import zscgan_tf  # noqa: F401  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import tensorflow_model_optimization as tfmot
import tf_keras
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from conftest import build_tiny_classifier, lock_held_by_another_process
from zscgan_tf import cli, evaluation_stage, files, teachers, tflite_model, train, training_loop, zero_shot
from zscgan_tf import config as config_lib
from zscgan_tf.errors import UserError
from zscgan_tf import generator as generator_lib
from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.teacher_training import save_teacher

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESS_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.05
INTEGER_TFLITE_FILES = ("ptq_int8.tflite", "qat_int8.tflite")


def _tiny_arguments(teacher_path, work_dir, generator_steps=4, distillation_steps=3, checkpoint_every=2):
    return [f"--teacher={teacher_path}", f"--work_dir={work_dir}", f"--generator_steps={generator_steps}",
            "--batch_size=16", "--noise_dim=8", "--generator_channels=8", f"--checkpoint_every={checkpoint_every}",
            "--image_every=1000", f"--distillation_steps={distillation_steps}", "--distillation_batch_size=8",
            f"--distillation_checkpoint_every={checkpoint_every}", "--calibration_samples=16",
            "--eval_samples_per_class=4", "--grid_samples_per_class=3", "--latency_runs=2", "--eval_dataset=none",
            "--noprogress"]


def _flagfile(tmp_path, arguments):
    path = tmp_path / "tiny.cfg"
    path.write_text("# a tiny run\n" + "\n".join(arguments) + "\n")
    return str(path)


def _start(flagfile, environment=None):
    return subprocess.Popen([sys.executable, "-m", "zscgan_tf.train", f"--flagfile={flagfile}"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def _wait_for(process, path):
    """Polls until `path` exists; fails if the process ends first."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
    while not os.path.exists(path):
        assert process.poll() is None, f"the run ended before {path} appeared: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(POLL_SECONDS)


def _assert_valid_tflite_exports(work_dir):
    """Every export loads in LiteRT; the int8 ones are fully integer."""
    for name in ("teacher_float.tflite", *INTEGER_TFLITE_FILES):
        Interpreter(model_content=(work_dir / name).read_bytes()).allocate_tensors()
    for name in INTEGER_TFLITE_FILES:
        assert tflite_model.inspect_tflite((work_dir / name).read_bytes()).is_fully_integer, name


def _checkpoint_steps(checkpoint_dir):
    return sorted(int(name.split("-")[1].split(".")[0]) for name in os.listdir(checkpoint_dir)
                  if name.startswith("ckpt-") and name.endswith(".index"))


# ------------------------------------------------------------ kills, Ctrl-C and SIGTERM


def test_killed_runs_resume_and_finish_with_valid_outputs(tmp_path, tiny_teacher_file):
    work_dir = tmp_path / "run"
    # Without deterministic execution, as `zscgan_tf.run` leaves TensorFlow: the other tests' processes, and this
    # one's tests (conftest), run with it.
    flagfile = _flagfile(tmp_path, _tiny_arguments(tiny_teacher_file, work_dir, generator_steps=600,
                                                   distillation_steps=300, checkpoint_every=50) + ["--nodeterministic"])
    printed = ""
    for stage in ("generator", "distillation"):  # SIGKILL once in each training stage.
        process = _start(flagfile)
        _wait_for(process, work_dir / stage / "checkpoints" / "checkpoint")
        process.send_signal(signal.SIGKILL)
        printed += process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)[0]
        assert process.returncode == -signal.SIGKILL, f"the run finished before it was killed in {stage}"
    process = _start(flagfile)
    stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    assert process.returncode == 0, stderr[-2000:]
    # The second process resumed the generator, the third the distillation.
    assert "generator: resuming at step " in printed and "distillation: resuming at step " in stdout
    report = json.loads((work_dir / "report.json").read_text())
    assert 0 < report["generator_training"]["resumed_from_step"] < 600
    assert report["generator_training"]["steps"] == 600
    assert 0 < report["quantization"]["summary"]["resumed_from_step"] < 300
    _assert_valid_tflite_exports(work_dir)


@pytest.mark.parametrize("signal_number, status, stop", [(signal.SIGINT, 130, "interrupted"),
                                                         (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_leaves_no_temporary_files(tmp_path, tiny_teacher_file,
                                                                            signal_number, status, stop):
    # Batch schedulers and container runtimes send SIGTERM before they kill a job.
    work_dir = tmp_path / "run"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = _start(_flagfile(tmp_path, _tiny_arguments(tiny_teacher_file, work_dir, generator_steps=100000,
                                                         checkpoint_every=50)),
                     environment={**os.environ, "TMPDIR": str(temporary)})
    checkpoint_dir = work_dir / "generator" / "checkpoints"
    _wait_for(process, checkpoint_dir / "checkpoint")
    assert any(temporary.iterdir()), "the run wrote no temporary files, so their removal is not tested"
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    assert process.returncode == status
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"stopped: {stop} at generator step ")
    assert last_line.endswith("checkpoint saved, rerun the same command to resume")
    stopped_at = int(last_line.split("generator step ")[1].split(";")[0])
    assert _checkpoint_steps(checkpoint_dir)[-1] == stopped_at
    assert "Traceback" not in stderr
    assert not list(temporary.iterdir())  # TensorFlow's exit handlers ran: its autograph files are gone.
    assert (cli.INTERRUPTED_STATUS, cli.TERMINATED_STATUS) == (130, 143)


def _start_on_a_terminal(flagfile, environment, output_to_a_pipe, hangup_ignored):
    """The run started from a terminal of its own (a pseudo-terminal it controls, as a login
    shell's job is), with the terminal's end that reads its output, and the read end of a pipe
    that takes its output instead when `output_to_a_pipe` (as `| tee log` would), else None.
    With `hangup_ignored`, it gets no SIGHUP, as a job started with `& disown` gets none."""
    reader, terminal = pty.openpty()
    pipe_reader, pipe_writer = os.pipe() if output_to_a_pipe else (None, terminal)

    def own_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if hangup_ignored:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    process = subprocess.Popen([sys.executable, "-m", "zscgan_tf.train", f"--flagfile={flagfile}"], cwd=REPO_ROOT,
                               stdin=terminal, stdout=pipe_writer, stderr=pipe_writer, env=environment,
                               start_new_session=True, preexec_fn=own_terminal)  # noqa: PLW1509
    os.close(terminal)
    if output_to_a_pipe:
        os.close(pipe_writer)
    return process, reader, pipe_reader


@pytest.mark.parametrize("output, status", [("terminal", 129), ("pipe", 129), ("terminal of a disowned job", 141)])
def test_a_hangup_saves_a_checkpoint_though_the_terminal_is_gone(tmp_path, tiny_teacher_file, output, status):
    # An SSH connection drops: the terminal hangs up, the run gets SIGHUP, then a second one
    # from the shell as it exits, and writing to the terminal fails from then on; so does
    # writing to a `| tee log` beside it, which the hangup ends too. A job started with
    # `& disown` gets no SIGHUP: its next write to the terminal fails (EIO), which stops it too.
    work_dir = tmp_path / "run"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    disowned = output == "terminal of a disowned job"
    arguments = _tiny_arguments(tiny_teacher_file, work_dir, generator_steps=100000, checkpoint_every=50)
    if disowned:  # It stops at its next write: the progress line, which a terminal gets every 0.2 s.
        arguments.remove("--noprogress")
    process, reader, pipe_reader = _start_on_a_terminal(_flagfile(tmp_path, arguments),
                                                        {**os.environ, "TMPDIR": str(temporary)},
                                                        output_to_a_pipe=output == "pipe", hangup_ignored=disowned)
    output_reader = pipe_reader if pipe_reader is not None else reader
    checkpoint_dir = work_dir / "generator" / "checkpoints"
    deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
    printed = b""
    try:
        while not (checkpoint_dir / "checkpoint").exists():  # Reads what it prints, as a terminal or tee does.
            assert process.poll() is None and time.monotonic() < deadline, printed[-2000:]
            if select.select([output_reader], [], [], POLL_SECONDS)[0]:
                printed += os.read(output_reader, 65536)
        assert b"generator: " in printed
    finally:
        if pipe_reader is not None:
            os.close(pipe_reader)  # tee ends.
        os.close(reader)  # The terminal hangs up.
    if not disowned:
        process.send_signal(signal.SIGHUP)  # The shell's.
    process.wait(timeout=PROCESS_TIMEOUT_SECONDS)

    assert process.returncode == status  # Not killed (-1), nor failed writing its output (1).
    assert _checkpoint_steps(checkpoint_dir)[-1] >= 50
    assert not list(temporary.iterdir())  # TensorFlow's exit handlers ran.


def test_a_closed_output_stops_the_run_with_a_checkpoint(tmp_path, tiny_teacher_file):
    # `| head` has read its lines, or `| less` was quit: the run's next line has no reader.
    work_dir = tmp_path / "run"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    arguments = [argument for argument in _tiny_arguments(tiny_teacher_file, work_dir, generator_steps=100000,
                                                          checkpoint_every=50) if argument != "--noprogress"]
    checkpoint_dir = work_dir / "generator" / "checkpoints"
    with open(tmp_path / "stderr", "w+") as stderr:
        flagfile = _flagfile(tmp_path, arguments)
        process = subprocess.Popen([sys.executable, "-m", "zscgan_tf.train", f"--flagfile={flagfile}"], cwd=REPO_ROOT,
                                   stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, "TMPDIR": str(temporary)})
        try:
            assert process.stdout.readline().startswith(b"teacher: ")
            deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
            while not (checkpoint_dir / "checkpoint").exists():
                assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(POLL_SECONDS)
            process.stdout.close()  # The reader goes; the progress line, every 10 s in a pipe, finds it gone.
            process.wait(timeout=PROCESS_TIMEOUT_SECONDS)
        finally:
            process.kill()
        stderr.seek(0)
        printed = stderr.read()

    assert process.returncode == 141, printed[-2000:]  # As a shell reports a process SIGPIPE ended.
    stopped = re.fullmatch(r"stopped: output closed at generator step (\d+); checkpoint saved, rerun the same "
                           r"command to resume", printed.strip().splitlines()[-1])
    assert stopped, printed[-2000:]
    assert _checkpoint_steps(checkpoint_dir)[-1] == int(stopped.group(1))
    assert "Traceback" not in printed
    assert not list(temporary.iterdir())  # TensorFlow's exit handlers ran.


@pytest.mark.parametrize("resumable, advice", [(True, "rerun the same command to resume"),
                                               (False, "rerun the same command to start again")])
def test_sigterm_outside_training_stops_with_one_line_and_143(capsys, resumable, advice):
    from absl import flags

    def body():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # The signal lands here, as it would in an export or an evaluation.
        raise AssertionError("SIGTERM did not stop the command")

    handler_before = signal.getsignal(signal.SIGTERM)
    assert cli.run_command(flags.FlagValues(), ["command"], body, resumable=resumable) == 143
    assert capsys.readouterr().err.strip() == f"stopped: SIGTERM; {advice}"
    assert signal.getsignal(signal.SIGTERM) is handler_before


@pytest.mark.parametrize("stop_signal, line, status", [(signal.SIGINT, "stopped: interrupted", 130),
                                                        (signal.SIGTERM, "stopped: SIGTERM", 143)])
@pytest.mark.parametrize("turned_into", [AssertionError("Concurrent access?"), "user_error"])
def test_a_stop_that_a_library_turns_into_another_error_is_still_the_stop(capsys, stop_signal, line, status,
                                                                          turned_into):
    # Ctrl-C landing in TensorFlow's tracing of an export's function came out as "AssertionError: Concurrent
    # access?": a traceback and status 1.
    from absl import flags

    def body():
        try:
            os.kill(os.getpid(), stop_signal)
            time.sleep(30)
        except KeyboardInterrupt as stop:
            raise (UserError("conversion failed: interrupted") if turned_into == "user_error" else turned_into) from stop
        raise AssertionError("the signal did not land")

    handler_before = signal.getsignal(stop_signal)
    assert cli.run_command(flags.FlagValues(), ["command"], body) == status
    assert capsys.readouterr().err.strip() == f"{line}; rerun the same command to resume"
    assert signal.getsignal(stop_signal) is handler_before

    def bad_input():
        raise UserError("--seed must be in [0, 2147483647], got -1")

    # The next command run in this process is not taken for stopped.
    assert cli.run_command(flags.FlagValues(), ["command"], bad_input) == cli.USER_ERROR_STATUS
    assert capsys.readouterr().err.strip() == "error: --seed must be in [0, 2147483647], got -1"


def test_a_full_disk_met_while_saving_after_a_stop_is_said_as_the_full_disk(capsys):
    # The stop's line would advise a resume from a checkpoint that was not saved.
    from absl import flags

    def body():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        except KeyboardInterrupt:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/ckpt-7.index")  # Saving the checkpoint.
        raise AssertionError("the signal did not land")

    assert cli.run_command(flags.FlagValues(), ["command"], body) == cli.STORAGE_FULL_STATUS
    assert capsys.readouterr().err.strip().startswith("error: the disk is full (writing /runs/x/ckpt-7.index); ")


def test_a_closed_output_outside_training_stops_with_one_line_and_141(capsys, hangup_and_outputs_restored):
    from absl import flags

    def writes_to_a_reader_gone():
        reader, writer = os.pipe()
        os.dup2(writer, 1)  # `| head`, which has read its lines.
        os.close(writer)
        os.close(reader)
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")  # As the next write raises it.

    def another_pipe_breaks():
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")  # Not our output's: stdout is still read.

    with pytest.raises(BrokenPipeError):
        cli.run_command(flags.FlagValues(), ["command"], another_pipe_breaks)
    assert cli.run_command(flags.FlagValues(), ["command"], writes_to_a_reader_gone) == 141
    assert capsys.readouterr().err.strip() == "stopped: output closed; rerun the same command to resume"


def test_a_hangup_outside_training_stops_once_with_129(capsys, hangup_and_outputs_restored):
    from absl import flags
    saved = []

    def body():
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(30)  # The hangup lands here, as it would in an evaluation.
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGHUP)  # The shell's, while the stage saves what it did.
            time.sleep(0.2)
            saved.append(True)
            raise
        raise AssertionError("SIGHUP did not stop the command")

    assert cli.run_command(flags.FlagValues(), ["command"], body) == 129
    assert saved == [True]
    assert capsys.readouterr().err.strip() == "stopped: SIGHUP; rerun the same command to resume"
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # Until the process exits.


def _disk_full_errors():
    import errno

    import tensorflow as tf

    return [OSError(errno.ENOSPC, "No space left on device", "/runs/x/state.json"),
            tf.errors.ResourceExhaustedError(None, None, "{{function_node __wrapped__SaveV2}} /runs/x/ckpt-250_temp/"
                                             "part-00000; No space left on device [Op:SaveV2]")]


def _error_of_a_run_whose_first_write_raises(error, tmp_path, tiny_teacher_file, capsys, monkeypatch) -> str:
    """What a tiny run writes to stderr when writing its config raises `error`, which must end it with
    exit status 4."""
    from zscgan_tf import pipeline

    def raising(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline, "record_config", raising)
    assert train.main(["train", *_tiny_arguments(tiny_teacher_file, tmp_path / "run")]) == cli.STORAGE_FULL_STATUS
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize("error, path", zip(_disk_full_errors(),
                                             ["/runs/x/state.json", "/runs/x/ckpt-250_temp/part-00000"]))
def test_a_full_disk_is_one_line_and_exit_4(tmp_path, tiny_teacher_file, capsys, monkeypatch, error, path):
    assert _error_of_a_run_whose_first_write_raises(error, tmp_path, tiny_teacher_file, capsys, monkeypatch) == (
        f"error: the disk is full (writing {path}); free some space and rerun the same command: what was written "
        "before stays (a run resumes from its last checkpoint)")


def _refused_writes():
    import tensorflow as tf

    return [OSError(errno.EACCES, "Permission denied", "/runs/x/report.md"),
            tf.errors.PermissionDeniedError(None, None, "/runs/x/distillation/checkpoints/ckpt-20_temp; Operation "
                                                        "not permitted [Op:SaveV2]")]


@pytest.mark.parametrize("error, quoted", zip(_refused_writes(), [
    "[Errno 13] Permission denied: '/runs/x/report.md'",
    "/runs/x/distillation/checkpoints/ckpt-20_temp; Operation not permitted"]))
def test_a_write_the_system_refuses_is_one_line_and_exit_4(tmp_path, tiny_teacher_file, capsys, monkeypatch, error,
                                                           quoted):
    # An immutable file, another user's directory, a read-only file system: each was a traceback and status 1.
    assert _error_of_a_run_whose_first_write_raises(error, tmp_path, tiny_teacher_file, capsys, monkeypatch) == (
        f"error: the system refused a file operation: {quoted}; fix the file's permissions or its file system and "
        "rerun the same command: what was written before stays (a run resumes from its last checkpoint)")


def _paths_in_the_way():
    import tensorflow as tf

    return [IsADirectoryError(errno.EISDIR, "Is a directory", "/bench/rows.json"),
            FileExistsError(errno.EEXIST, "File exists", "/bench/digits_tiny"),
            NotADirectoryError(errno.ENOTDIR, "Not a directory", "/bench/qat/checkpoint"),
            tf.errors.FailedPreconditionError(
                None, None, "{{function_node __wrapped__CreateSummaryFileWriter_device_/job:localhost}} /runs/x/logs "
                "is not a directory [Op:CreateSummaryFileWriter] name:")]


@pytest.mark.parametrize("error, quoted", zip(_paths_in_the_way(), [
    "[Errno 21] Is a directory: '/bench/rows.json'", "[Errno 17] File exists: '/bench/digits_tiny'",
    "[Errno 20] Not a directory: '/bench/qat/checkpoint'", "/runs/x/logs is not a directory"]))
def test_a_file_or_directory_in_the_way_of_a_write_is_one_line_and_exit_4(tmp_path, tiny_teacher_file, capsys,
                                                                          monkeypatch, error, quoted):
    # The benchmark audit's rows.json made a directory, a file where a teacher's directory goes, a file where
    # TensorFlow writes checkpoints: each was a traceback and status 1.
    assert _error_of_a_run_whose_first_write_raises(error, tmp_path, tiny_teacher_file, capsys, monkeypatch) == (
        f"error: a file is where a directory belongs, or a directory where a file belongs: {quoted}; move it aside and "
        "rerun the same command: what was written before stays (a run resumes from its last checkpoint)")


def test_an_events_file_that_lost_records_stops_the_run_before_its_checkpoint_and_a_rerun_resumes(
        tmp_path, tiny_teacher_file, capsys, monkeypatch):
    # TensorFlow's events writer ignores a write that fails, and its flush succeeds once space is back: a disk full
    # for a few seconds of a real run cut records out of its events file, and the run ended with status 0.
    import tensorflow as tf

    scalar = tf.summary.scalar

    def losing_step_4(name, data, **kwargs):
        if name.startswith("generator/") and tf.summary.experimental.get_step() == 4:
            return True  # Taken, and lost as TensorFlow's writer loses it.
        return scalar(name, data, **kwargs)

    work_dir = tmp_path / "run"
    arguments = _tiny_arguments(tiny_teacher_file, work_dir, generator_steps=4, distillation_steps=0)
    monkeypatch.setattr(tf.summary, "scalar", losing_step_4)
    assert train.main(["train", *arguments]) == cli.STORAGE_FULL_STATUS
    from zscgan_tf.event_file import records_in

    (events,) = (work_dir / "logs" / "generator").glob("events.out.tfevents.*")
    error = capsys.readouterr().err.strip()
    found = re.fullmatch(re.escape(f"error: TensorBoard's events file {events} holds ") + r"(\d+) of the (\d+) "
                         + re.escape("records written to it, though TensorFlow's writer raised no error (it ignores "
                                     "a write that fails: a full disk, most often); free some space and rerun the "
                                     "same command: what was written before stays (a run resumes from its last "
                                     "checkpoint)"), error)
    assert found and int(found[1]) == records_in(str(events)) < int(found[2]), error
    assert _checkpoint_steps(work_dir / "generator" / "checkpoints") == [2]  # Not step 4's, whose records are lost.
    monkeypatch.undo()
    assert train.main(["train", *arguments]) == 0
    assert "generator: resuming at step 2 of 4" in capsys.readouterr().out
    events.write_bytes(events.read_bytes()[:-3])  # Cut inside its last record.
    assert records_in(str(events)) is None


def test_an_events_file_is_a_loss_only_where_it_holds_fewer_records_than_it_was_given(tmp_path):
    import tensorflow as tf

    from zscgan_tf.errors import LostWritesError
    from zscgan_tf.event_file import EventFile

    events = EventFile(str(tmp_path))
    with events.writer.as_default(step=1):
        events.add(tf.summary.scalar("counted", 1.0))
        tf.summary.scalar("not_counted", 2.0)  # As a record TensorFlow would write of its own: not a loss.
    events.check()
    events.add(True)
    events.add(True)  # Two taken and lost: the file holds 3 of 4.
    with pytest.raises(LostWritesError, match=r"holds 3 of the 4 records written to it"):
        events.check()
    events.writer.close()


def test_an_events_file_removed_during_a_training_is_no_lost_write(tmp_path, capsys):
    # A user freeing space removed logs/ during a run: it stopped with exit 4 and "a full disk, most often", though
    # nothing a checkpoint needs was lost and the disk had room.
    import tensorflow as tf

    from zscgan_tf.event_file import EventFile

    events = EventFile(str(tmp_path))
    with events.writer.as_default(step=1):
        events.add(tf.summary.scalar("counted", 1.0))
    events.check()
    os.remove(events.path)
    with events.writer.as_default(step=2):
        events.add(tf.summary.scalar("counted", 2.0))
    removed = events.path
    events.check()
    events.check()
    assert capsys.readouterr().out.count(f"note: TensorBoard's events file {removed} was removed") == 1
    events.writer.close()


def test_a_work_directory_in_use_by_another_run_is_refused(tmp_path, tiny_teacher_file, capsys, monkeypatch):
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    with lock_held_by_another_process(work_dir) as other, monkeypatch.context() as patch:
        # As the first of two runs on one directory holds it; refused before the teacher and data load.
        patch.setattr(teachers, "load_teacher", lambda *args, **kwargs: pytest.fail("loaded the teacher"))
        # "Try again later", not bad input (it was 2): a script can retry it.
        assert train.main(["train", *_tiny_arguments(tiny_teacher_file, work_dir)]) == cli.IN_USE_STATUS == 75
    assert capsys.readouterr().err.strip() == (
        f"error: {str(work_dir)!r} is in use by another run (process {other.pid}); wait for it to finish, or pass "
        "another --work_dir")
    assert not (work_dir / "config.json").exists()
    # Released with the first run, however it ends: the second then runs.
    assert train.main(["train", *_tiny_arguments(tiny_teacher_file, work_dir)]) == 0


# -------------------------------------------------------------- damaged and half-written outputs


@pytest.fixture
def finished_run(tmp_path, tiny_teacher_file, finished_run_copy, capsys):
    """The finished run that `train.main(["train", *arguments])` leaves in tmp_path / "run", and its arguments: a
    copy of one such run trained once (conftest's `finished_run_copy`), which each test may damage as it likes."""
    def train_tiny_run(teacher, work_dir):
        assert train.main(["train", *_tiny_arguments(teacher, work_dir)]) == 0

    arguments = _tiny_arguments(tiny_teacher_file, tmp_path / "run")
    finished_run_copy(("test_reliability", "tiny run"), train_tiny_run, tiny_teacher_file, tmp_path / "run", capsys)
    return tmp_path / "run", arguments


def test_truncated_outputs_and_lost_state_are_redone(finished_run, capsys):
    work_dir, arguments = finished_run
    whole = (work_dir / "qat_int8.tflite").read_bytes()
    (work_dir / "qat_int8.tflite").write_bytes(whole[:len(whole) // 2])
    generator_bytes = (work_dir / "generator.keras").read_bytes()
    (work_dir / "generator.keras").write_bytes(generator_bytes[:len(generator_bytes) // 2])
    state = json.loads((work_dir / "state.json").read_text())
    del state["export"]["ptq_int8"]
    (work_dir / "state.json").write_text(json.dumps(state))
    killed_writer = subprocess.Popen([sys.executable, "-c", ""])
    killed_writer.wait()
    stray = work_dir / f"{files.temporary_prefix(killed_writer.pid)}student.h5"  # Left by a writer killed mid-write.
    stray.write_bytes(b"half a model")
    capsys.readouterr()
    assert train.main(["train", *arguments]) == 0
    out = capsys.readouterr().out
    assert "converting qat_int8" in out and "converting ptq_int8" in out and "converting float" not in out
    # Rebuilt from its last checkpoint, which is already at the target.
    assert "generator: already trained (4 steps), restoring its checkpoint" in out
    assert "distillation: already done" in out  # The generator did not change, so the student stands.
    assert (work_dir / "qat_int8.tflite").read_bytes() == whole
    _assert_valid_tflite_exports(work_dir)
    generator_lib.load_generator(str(work_dir / "generator.keras"))
    assert not stray.exists()  # Never read nor mistaken for an output, and removed (it stayed for good).


# Valid JSON of another shape than a run writes (a hand's edit): before, an AttributeError's traceback.
@pytest.mark.parametrize("state", ['{"generator": {"ste', "[]", '"done"', '{"generator": "done", "export": [1]}',
                                   '{"generator": {"steps": 4, "members": 3}}'])
def test_unreadable_state_file_means_no_stage_is_trusted(finished_run, capsys, state):
    work_dir, arguments = finished_run
    (work_dir / "state.json").write_text(state)
    capsys.readouterr()
    assert train.main(["train", *arguments]) == 0
    out = capsys.readouterr().out
    assert "converting qat_int8" in out
    assert json.loads((work_dir / "state.json").read_text())["generator"]["steps"] == 4
    _assert_valid_tflite_exports(work_dir)


def _with(arguments, **flags):
    """`arguments` with the given flags' values replaced."""
    replaced = [argument for argument in arguments if argument.split("=")[0].lstrip("-") not in flags]
    return replaced + [f"--{name}={value}" for name, value in flags.items()]


def test_without_state_a_generator_trained_further_is_distilled_anew(finished_run, capsys):
    work_dir, arguments = finished_run
    old_student = (work_dir / "student.h5").read_bytes()
    (work_dir / "state.json").unlink()
    capsys.readouterr()
    assert train.main(["train", *_with(arguments, generator_steps=6)]) == 0
    out = capsys.readouterr().out
    # Before, the old generator's QAT checkpoint resumed as if built on this one, and was reported so.
    assert "was distilled from another generator than this one; discarded, to distil from this one" in out
    report = json.loads((work_dir / "report.json").read_text())
    assert report["quantization"]["summary"]["resumed_from_step"] == 0
    assert (work_dir / "student.h5").read_bytes() != old_student
    # The same generator restored from its checkpoints keeps the student's checkpoints.
    (work_dir / "state.json").unlink()
    assert train.main(["train", *_with(arguments, generator_steps=6)]) == 0
    out = capsys.readouterr().out
    assert "discarded" not in out and "distillation: resuming" not in out
    assert json.loads((work_dir / "report.json").read_text())["quantization"]["summary"]["resumed_from_step"] == 3


def test_fewer_qat_steps_are_refused_when_the_generators_checkpoints_were_deleted(finished_run, capsys):
    import shutil

    work_dir, arguments = finished_run
    shutil.rmtree(work_dir / "generator" / "checkpoints")  # To save space, as the README allows.
    config = (work_dir / "config.json").read_text()
    capsys.readouterr()
    # Before: accepted, the 3-step student reported as 2 steps at a negative speed.
    assert train.main(["train", *_with(arguments, distillation_steps=2)]) == cli.USER_ERROR_STATUS
    assert capsys.readouterr().err.strip() == (
        f"error: {work_dir}'s QAT student has trained 3 steps, more than --distillation_steps=2; training cannot be "
        "undone: ask for 3 or more, or use another --work_dir")
    # More generator steps cannot train on without checkpoints: refused before the config is recorded, too.
    assert train.main(["train", *_with(arguments, generator_steps=6)]) == cli.USER_ERROR_STATUS
    assert "has no checkpoint to train on from" in capsys.readouterr().err
    assert (work_dir / "config.json").read_text() == config


def test_a_run_without_its_config_or_with_a_damaged_one_is_refused(finished_run, capsys):
    work_dir, arguments = finished_run
    config = (work_dir / "config.json").read_text()
    (work_dir / "config.json").unlink()
    capsys.readouterr()
    # Before: any settings were taken, and the old generator and student reported under them.
    assert train.main(["train", *_with(arguments, seed=3, noise_dim=32)]) == cli.USER_ERROR_STATUS
    assert capsys.readouterr().err.strip() == (
        f"error: {str(work_dir)!r} holds a run's stages (state.json, generator, distillation) but no config.json, "
        "which records the settings they trained with: put it back, or choose another --work_dir, or delete that "
        "directory to start fresh")
    (work_dir / "config.json").write_text(config[:10])
    assert train.main(["train", *arguments]) == cli.USER_ERROR_STATUS
    assert "config.json cannot be read as a run's config, yet" in capsys.readouterr().err
    (work_dir / "config.json").write_text(config)
    assert train.main(["train", *arguments]) == 0


@pytest.mark.parametrize("name, make", [("logs", "file"), ("generator", "file"), ("report.json", "directory"),
                                        ("evaluation", "file")])
def test_a_file_where_a_directory_belongs_or_the_reverse_is_one_line(tmp_path, tiny_teacher_file, capsys, name, make):
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    (work_dir / name).mkdir() if make == "directory" else (work_dir / name).write_text("mine")
    # Before: a traceback, for some only once the generator had trained.
    assert train.main(["train", *_tiny_arguments(tiny_teacher_file, work_dir)]) == cli.USER_ERROR_STATUS
    kept = "a directory where a run keeps a file" if make == "directory" else "a file where a run keeps a directory"
    assert capsys.readouterr().err.strip() == f"error: {work_dir / name} is {kept}; move it away"
    assert not (work_dir / "state.json").exists()


def test_a_damaged_checkpoint_resumes_from_the_one_before_or_is_one_line(tmp_path, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    arguments = _tiny_arguments(tiny_teacher_file, work_dir, generator_steps=4, distillation_steps=0)
    assert train.main(["train", *arguments]) == 0
    checkpoints = work_dir / "generator" / "checkpoints"
    for data in checkpoints.glob("ckpt-4.data-*"):
        data.write_bytes(data.read_bytes()[:100])
    capsys.readouterr()
    # Before: "IndexError: Read less bytes than requested" and a traceback.
    assert train.main(["train", *_with(arguments, generator_steps=6)]) == 0
    out = capsys.readouterr().out
    assert "generator: ckpt-4 cannot be read (" in out and "); resuming from ckpt-2" in out
    assert json.loads((work_dir / "report.json").read_text())["generator_training"]["resumed_from_step"] == 2
    for data in checkpoints.glob("ckpt-*.data-*"):
        data.write_bytes(b"")
    written = _files_and_contents(work_dir)
    assert train.main(["train", *_with(arguments, generator_steps=8)]) == cli.USER_ERROR_STATUS
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: cannot read generator's checkpoints in {checkpoints} (")
    assert error.endswith("): delete that directory to train generator again from step 0")
    # Before: refused as the stage started, once config.json held generator_steps=8 and a TensorBoard log had begun.
    assert _files_and_contents(work_dir) == written


def test_unreadable_qat_checkpoints_are_refused_before_anything_is_written(finished_run, capsys):
    work_dir, arguments = finished_run
    checkpoints = work_dir / "distillation" / "checkpoints"
    for data in checkpoints.glob("ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[:10])
    written = _files_and_contents(work_dir)
    capsys.readouterr()
    assert train.main(["train", *_with(arguments, distillation_steps=5)]) == cli.USER_ERROR_STATUS
    assert capsys.readouterr().err.strip().endswith(
        "): delete that directory to train distillation again from step 0")
    assert _files_and_contents(work_dir) == written
    # A finished student is loaded from student.h5: its checkpoints are not read, and the run goes on.
    assert train.main(["train", *arguments]) == 0
    # A generator that trains on discards them unread: more steps are not refused over them.
    assert train.main(["train", *_with(arguments, generator_steps=6, distillation_steps=5)]) == 0
    assert json.loads((work_dir / "state.json").read_text())["distillation"]["steps"] == 5


def test_a_new_pool_is_refused_before_anything_is_written_over_a_kept_generator_it_cannot_read(finished_run,
                                                                                               capsys):
    work_dir, arguments = finished_run
    for data in (work_dir / "generator" / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(b"")
    written = _files_and_contents(work_dir)
    capsys.readouterr()
    # The finished generator is kept in the pool of two, restored from its checkpoints.
    assert train.main(["train", *_with(arguments, generator_pool_size=2)]) == cli.USER_ERROR_STATUS
    assert capsys.readouterr().err.strip().endswith("): delete that directory to train generator again from step 0")
    assert _files_and_contents(work_dir) == written


def test_a_changed_setting_or_teacher_is_refused_before_the_data_loads(finished_run, tmp_path, monkeypatch, capsys):
    work_dir, arguments = finished_run
    written = _files_and_contents(work_dir)
    (work_dir / ".lock").write_text("the run's last holder")

    def loaded(*_, **__):
        raise AssertionError("the evaluation data was loaded")

    monkeypatch.setattr(evaluation_stage, "evaluation_dataset", loaded)
    capsys.readouterr()
    # Before: refused once the evaluation data had loaded (minutes for ImageNet's), under the lock.
    assert train.main(["train", *_with(arguments, noise_dim=9)]) == cli.USER_ERROR_STATUS
    assert "holds a run with a different config (generator.noise_dim)" in capsys.readouterr().err
    # Another teacher is refused as such, first, as it was: not a changed setting to take its generator elsewhere for.
    other_teacher = tmp_path / "other.keras"
    save_teacher(build_tiny_classifier(seed=5), str(other_teacher), Preprocessing("tf"), "synthetic",
                 ["a", "b", "c", "d"], None)
    assert train.main(["train", *_with(arguments, noise_dim=9, teacher=other_teacher)]) == cli.USER_ERROR_STATUS
    error = capsys.readouterr().err
    assert "generator and student were trained against another teacher (" in error
    assert f") than this run's ({other_teacher}); train this one in another work directory" in error
    assert _files_and_contents(work_dir) == written and (work_dir / ".lock").read_text() == "the run's last holder"


def _files_and_contents(directory) -> dict:
    """Every file under `directory` (but its lock, whose time a refused run touches) and its bytes."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file() and path.name != ".lock"}


def test_a_checkpoint_state_naming_files_elsewhere_is_refused_before_they_are_read_or_deleted(finished_run, tmp_path,
                                                                                              capsys, monkeypatch):
    # A work directory from someone else: its `checkpoint` file named another's checkpoints, which a resumed run
    # restored and, saving its own, deleted.
    work_dir, arguments = finished_run
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    for name in ("victim-1.index", "victim-1.data-00000-of-00001"):
        (elsewhere / name).write_text("a checkpoint of mine")
    state_file = work_dir / "generator" / "checkpoints" / "checkpoint"
    for named in (str(elsewhere / "victim-1"), "../../../mine/victim-1"):
        state_file.write_text(f'model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "{named}"\n'
                              'all_model_checkpoint_paths: "ckpt-4"\n')
        capsys.readouterr()
        assert train.main(["train", *_with(arguments, generator_steps=8)]) == cli.USER_ERROR_STATUS
        assert capsys.readouterr().err.strip() == (
            f"error: {state_file} names a checkpoint outside its directory ({elsewhere / 'victim-1'}), which a run "
            "would delete in turn as it saves its own; a run names only its own: if this work directory comes from "
            "someone else, do not run in it (removing that file trains this stage from its start)")
    assert sorted(os.listdir(elsewhere)) == ["victim-1.data-00000-of-00001", "victim-1.index"]
    # Its own checkpoints, as TensorFlow names them, through a relative --work_dir: the README's demo (runs/demo),
    # stopped with Ctrl-C and rerun as its stop line says, was refused as naming its own "ckpt-145" outside.
    state_file.write_text('model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-4"\n')
    monkeypatch.chdir(work_dir.parent)
    assert train.main(["train", *_with(arguments, generator_steps=6, work_dir=work_dir.name)]) == 0
    assert training_loop.latest_step(str(work_dir / "generator")) == 6  # Trained on from its step 4.


# JSON of another shape than a run writes (a hand's edit): before, a TypeError's traceback.
@pytest.mark.parametrize("history", ["garbage{", '{"step": 4}', '[{"step": "4", "total": 1}, 3, {"total": "x"}]'])
def test_a_lost_history_does_not_stop_a_finished_stage(finished_run, capsys, history):
    work_dir, arguments = finished_run
    (work_dir / "generator.keras").write_bytes(b"damaged")
    (work_dir / "generator" / "history.json").write_text(history)
    (work_dir / "student.h5").write_bytes(b"damaged")
    (work_dir / "distillation" / "history.json").unlink()
    capsys.readouterr()
    # Before: "RuntimeError: generator training recorded no history" and a traceback.
    assert train.main(["train", *arguments]) == 0
    out = capsys.readouterr().out
    assert "generator: its loss history" in out and "distillation: its loss history" in out
    assert "Data-free QAT: 3 steps" in (work_dir / "report.md").read_text()
    _assert_valid_tflite_exports(work_dir)


def test_no_qat_asked_of_a_finished_run_reports_none(finished_run, capsys):
    work_dir, arguments = finished_run
    capsys.readouterr()
    assert train.main(["train", *_with(arguments, distillation_steps=0)]) == 0
    out = capsys.readouterr().out
    assert ("distillation: none asked (--distillation_steps=0); student.h5 and qat_int8.tflite of an earlier run "
            "with QAT are kept as they were, neither measured nor reported") in out
    report = json.loads((work_dir / "report.json").read_text())
    # Before, the report gave the earlier run's 300 QAT steps beside no QAT figures.
    assert "summary" not in report["quantization"] and "Data-free QAT" not in (work_dir / "report.md").read_text()
    assert (work_dir / "qat_int8.tflite").exists()


def test_a_re_export_stopped_midway_leaves_no_report_of_the_models_it_replaced(finished_run, capsys, monkeypatch):
    from zscgan_tf import export
    work_dir, arguments = finished_run
    convert = export.convert_to_tflite
    converted = []

    def stopped_after_the_first(*args, **kwargs):
        if kwargs.get("output_path") and converted:  # The early checks' conversions write no file.
            raise KeyboardInterrupt
        if kwargs.get("output_path"):
            converted.append(kwargs["output_path"])
        return convert(*args, **kwargs)

    monkeypatch.setattr(export, "convert_to_tflite", stopped_after_the_first)
    capsys.readouterr()
    assert train.main(["train", *arguments, "--io_dtype=uint8"]) == cli.INTERRUPTED_STATUS
    assert ("export: export_report.md, report.md, report.json described the models converted again here; removed "
            "until this run has measured the new ones") in capsys.readouterr().out
    # ptq_int8.tflite is uint8 now, qat_int8.tflite still int8: the reports described both as int8 before.
    assert [os.path.basename(path) for path in converted] == ["ptq_int8.tflite"]
    assert not [name for name in ("export_report.md", "report.md", "report.json") if (work_dir / name).exists()]
    monkeypatch.setattr(export, "convert_to_tflite", convert)
    assert train.main(["train", *arguments, "--io_dtype=uint8"]) == 0
    assert "uint8" in (work_dir / "export_report.md").read_text() and (work_dir / "report.json").exists()


def test_reports_whose_writing_the_disk_cut_short_are_both_removed_and_a_rerun_writes_both(tmp_path, monkeypatch):
    from zscgan_tf import pipeline, run_report
    (tmp_path / "report.json").write_text('{"run": 1}')
    (tmp_path / "report.md").write_text("report of run 1")
    monkeypatch.setattr(run_report, "format_report", lambda report: f"report of run {report['run']}")
    write_text_atomic = pipeline.write_text_atomic

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(pipeline, "write_text_atomic", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        pipeline.write_reports(str(tmp_path), {"run": 2})
    # Not report.json of run 2 beside report.md of run 1.
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "report.md").exists()
    monkeypatch.setattr(pipeline, "write_text_atomic", write_text_atomic)
    pipeline.write_reports(str(tmp_path), {"run": 2})
    assert json.loads((tmp_path / "report.json").read_text()) == {"run": 2}
    assert (tmp_path / "report.md").read_text() == "report of run 2"


# ------------------------------------------------------------------------ numerical faults


def test_nan_loss_exits_3_naming_term_and_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_teacher_file,
                                                                                  monkeypatch, capsys):
    original_step = zero_shot.GeneratorTrainer.train_step

    def step_that_diverges_at_step_3(trainer):
        values = original_step(trainer)
        if int(trainer.step.numpy()) == 3:
            values["bn_statistics"] = float("nan")
        return values

    monkeypatch.setattr(zero_shot.GeneratorTrainer, "train_step", step_that_diverges_at_step_3)
    work_dir = tmp_path / "run"
    status = train.main(["train", *_tiny_arguments(tiny_teacher_file, work_dir, generator_steps=6)])
    error = capsys.readouterr().err.strip()
    assert status == cli.NUMERICAL_FAULT_STATUS
    assert error == ("error: generator loss term 'bn_statistics' is nan at step 3; the last good checkpoint, "
                     "step 2, is kept")
    assert _checkpoint_steps(work_dir / "generator" / "checkpoints") == [2]
    assert not (work_dir / "generator.keras").exists()


def test_a_loss_weight_that_overflows_the_weights_exits_3_without_a_generator(tmp_path, tiny_teacher_file, capsys):
    # Its loss terms stayed finite while an update made the weights NaN: the generator was saved and marked
    # trained, and each rerun ended at the distillation's first step, which the user took for the broken part.
    work_dir = tmp_path / "run"
    arguments = _tiny_arguments(tiny_teacher_file, work_dir, generator_steps=2, checkpoint_every=1)
    assert train.main(["train", *arguments, "--bn_loss_weight=1e30"]) == cli.NUMERICAL_FAULT_STATUS
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("error: generator weight ")
    assert " is not finite after step 2, though its loss terms were: values too large for float32 " in error
    assert not (work_dir / "generator.keras").exists() and "generator" not in json.loads(
        (work_dir / "state.json").read_text())


def test_divergent_learning_rate_exits_3(tmp_path, tiny_teacher_file, capsys):
    arguments = _tiny_arguments(tiny_teacher_file, tmp_path / "run", generator_steps=20)
    assert train.main(["train", *arguments, "--generator_learning_rate=1e30"]) == cli.NUMERICAL_FAULT_STATUS
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("error: generator loss term ")
    assert " at step " in error


# ------------------------------------------------------------------------------- bad input


def _save_model(path, inputs, outputs):
    tf_keras.Model(inputs, outputs).save(path)
    return path


def _no_batchnorm_teacher(directory):
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Conv2D(4, 3)(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return _save_model(str(directory / "no_bn.keras"), inputs, tf_keras.layers.Dense(4)(x))


def _two_input_teacher(directory):
    first, second = tf_keras.Input((8, 8, 1)), tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Conv2D(4, 3)(tf_keras.layers.Add()([first, second]))
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return _save_model(str(directory / "two_inputs.keras"), [first, second], tf_keras.layers.Dense(4)(x))


def _feature_map_teacher(directory):
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Conv2D(4, 3)(inputs)
    return _save_model(str(directory / "feature_map.keras"), inputs, tf_keras.layers.BatchNormalization()(x))


def _lambda_teacher(directory):
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Lambda(lambda tensor: tensor * 2.0)(inputs)
    x = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(4, 3)(x))
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return _save_model(str(directory / "lambda.keras"), inputs, tf_keras.layers.Dense(4)(x))


def _quantization_aware_teacher(directory):
    path = str(directory / "student.h5")
    tfmot.quantization.keras.quantize_model(build_tiny_classifier()).save(path)
    return path


def _truncated_teacher(directory):
    whole = directory / "whole.keras"
    build_tiny_classifier().save(str(whole))
    truncated = directory / "truncated.keras"
    truncated.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    return str(truncated)


def _not_a_model(directory):
    folder = directory / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    return str(folder)


def _image_folder(directory, classes=4, shape=(8, 8), mode="L"):
    root = directory / f"images_{classes}_{'x'.join(map(str, shape))}_{mode}"
    for label in range(classes):
        (root / f"class_{label}").mkdir(parents=True)
        for index in range(2):
            pixels = np.full(shape + ((3,) if mode == "RGB" else ()), 40 * label + index, np.uint8)
            Image.fromarray(pixels, mode).save(root / f"class_{label}" / f"{index}.png")
    return str(root)


def _empty_folder(directory):
    (directory / "empty").mkdir()
    return str(directory / "empty")


def _regular_file(directory):
    path = directory / "a_file"
    path.write_text("")
    return str(path)


def _different_config(work_dir, arguments):
    """A work directory holding a run whose BN distance differs from this one's."""
    cli.parse_flags(train.FLAGS, ["train", *arguments])
    saved = train.config_from_flags().to_dict()
    saved["loss"]["bn_distance"] = "mse"
    os.makedirs(work_dir)
    (work_dir / "config.json").write_text(json.dumps(saved))
    (work_dir / "state.json").write_text("{}")


# (flags that replace or extend the tiny run's, expected text of the one-line error). Callables
# in the flags are given the test's temporary directory and return the flag's value.
BAD_INPUTS = {
    "unknown flag": (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    "weight bits 9": (["--quantization=w9a8"], "--quantization must be w<weight bits>a<activation bits> with "
                      "each width in 2..8 (w8a8, w4a8, w4a4, ...), got 'w9a8'"),
    "activation bits 1": (["--quantization=w8a1"], "each width in 2..8 (w8a8, w4a8, w4a4, ...), got 'w8a1'"),
    "not a scheme": (["--quantization=int8"], "got 'int8'"),
    "zero generator steps": (["--generator_steps=0"], "--generator_steps must be positive, got 0"),
    "negative distillation steps": (["--distillation_steps=-1"],
                                    "--distillation_steps must be non-negative, got -1"),
    "zero batch size": (["--batch_size=0"], "--batch_size must be positive, got 0"),
    "zero distillation batch": (["--distillation_batch_size=0"], "--distillation_batch_size must be positive, got 0"),
    "negative label weight": (["--label_loss_weight=-0.5"], "--label_loss_weight must be non-negative, got -0.5"),
    "negative bn weight": (["--bn_loss_weight=-1"], "--bn_loss_weight must be non-negative, got -1.0"),
    "negative diversity weight": (["--diversity_loss_weight=-1"],
                                  "--diversity_loss_weight must be non-negative, got -1.0"),
    "zero temperature": (["--temperature=0"], "--temperature must be positive, got 0.0"),
    "negative temperature": (["--temperature=-2"], "--temperature must be positive, got -2.0"),
    "half-image shift": (["--shift_fraction=0.5"], "--shift_fraction must be in [0, 0.5), got 0.5"),
    "unknown model name": (["--teacher=resnet9000"], "unknown teacher model 'resnet9000'"),
    "missing model file": (["--teacher=/nonexistent/teacher.keras"],
                           "model file '/nonexistent/teacher.keras' does not exist"),
    "truncated model file": ([lambda d: f"--teacher={_truncated_teacher(d)}"],
                             "truncated.keras' is not a Keras archive, though named .keras (not a whole zip file: a "
                             "copy or download that did not finish?)"),
    "not a model": ([lambda d: f"--teacher={_not_a_model(d)}"], "cannot load model '"),
    "Lambda layer": ([lambda d: f"--teacher={_lambda_teacher(d)}"],
                     "holds serialized Python code (e.g. a Lambda layer) and was not loaded; pass "
                     "--trust_model_code only if you trust its author"),
    "quantization-aware model": ([lambda d: f"--teacher={_quantization_aware_teacher(d)}"],
                                 "is a TF-MOT quantization-aware model (QuantizeLayer, QuantizeWrapperV2 layers), "
                                 "not a float teacher"),
    "no BatchNormalization": ([lambda d: f"--teacher={_no_batchnorm_teacher(d)}"],
                              "teacher 'no_bn' has no BatchNormalization layer; ZS-CGAN needs the BN statistics it "
                              "stores. Without them, python tools/convert.py --teacher=<the model> "
                              "--data_source=noise --output=<file> quantizes it post-training"),
    "two inputs": ([lambda d: f"--teacher={_two_input_teacher(d)}"],
                   "the teacher has 2 inputs; a single image input is required"),
    "output not a class vector": ([lambda d: f"--teacher={_feature_map_teacher(d)}"],
                                  "the teacher's output has shape (None, 6, 6, 4); a class vector"),
    "missing eval dataset": (["--eval_dataset=/nonexistent/images"],
                             "dataset directory '/nonexistent/images' does not exist"),
    "empty eval dataset": ([lambda d: f"--eval_dataset={_empty_folder(d)}"], "has no class sub-folders"),
    "eval image size": ([lambda d: f"--eval_dataset={_image_folder(d, shape=(16, 16))}"],
                        "has images of shape (16, 16, 1) but the teacher reads (8, 8, 1); pass --eval_resize"),
    "eval channels": ([lambda d: f"--eval_dataset={_image_folder(d, mode='RGB')}"],
                      "has images of shape (8, 8, 3) but the teacher reads (8, 8, 1); pass --eval_resize"),
    "eval label count": ([lambda d: f"--eval_dataset={_image_folder(d, classes=3)}"],
                         "has 3 classes but the teacher predicts 4"),
    "work dir under a file": ([lambda d: f"--work_dir={_regular_file(d)}/run"],
                              "cannot create work directory '"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(name, tmp_path, tiny_teacher_file, capsys):
    extra, message = BAD_INPUTS[name]
    extra = [argument(tmp_path) if callable(argument) else argument for argument in extra]
    capsys.readouterr()  # What building the bad input printed (Keras warnings) is not the command's output.
    status = train.main(["train", *_tiny_arguments(tiny_teacher_file, tmp_path / "run"), *extra])
    error = capsys.readouterr().err.strip()
    assert status == cli.USER_ERROR_STATUS, error
    assert error.startswith("error: ") and message in error, error
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert not (tmp_path / "run").exists()  # Nothing is created before the teacher and data have loaded.


def test_work_dir_of_another_run_is_refused(tmp_path, tiny_teacher_file, capsys):
    arguments = _tiny_arguments(tiny_teacher_file, tmp_path / "run")
    _different_config(tmp_path / "run", arguments)
    assert train.main(["train", *arguments]) == cli.USER_ERROR_STATUS
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "holds a run with a different config (loss.bn_distance)" in error
    assert len(error.splitlines()) == 1


def test_flagfile_problems(tmp_path, tiny_teacher_file, capsys):
    unknown_key = tmp_path / "unknown.cfg"
    unknown_key.write_text(f"--teacher={tiny_teacher_file}\n--generator_stepz=3\n")
    cases = [(str(unknown_key), "Unknown command line flag 'generator_stepz'"),
             ("/nonexistent/demo.cfg", "flagfile '/nonexistent/demo.cfg' does not exist"),
             (str(tmp_path), f"flagfile '{tmp_path}' is not a file")]
    for path, message in cases:
        assert train.main(["train", f"--flagfile={path}"]) == cli.USER_ERROR_STATUS
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and message in error and len(error.splitlines()) == 1


def test_unreadable_flagfile(tmp_path, capsys, monkeypatch):
    flagfile = tmp_path / "secret.cfg"
    flagfile.write_text("--generator_steps=3\n")
    flagfile.chmod(0)
    if os.geteuid() == 0:  # Root reads files whatever their mode: it was skipped there (CI containers run as root).
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: (
            False if os.fspath(path) == str(flagfile) else real_access(path, mode, **kwargs)))
    assert train.main(["train", f"--flagfile={flagfile}"]) == cli.USER_ERROR_STATUS
    assert capsys.readouterr().err.strip() == f"error: flagfile {str(flagfile)!r} is not readable"


def test_verbose_adds_the_traceback(tmp_path, tiny_teacher_file, capsys):
    arguments = _tiny_arguments(tiny_teacher_file, tmp_path / "run")
    assert train.main(["train", *arguments, "--quantization=w9a8", "--verbose"]) == cli.USER_ERROR_STATUS
    error = capsys.readouterr().err
    assert "Traceback" in error and error.strip().splitlines()[-1].startswith("error: --quantization must be")


def test_bad_input_from_a_real_process(tmp_path, tiny_teacher_file):
    folder = _image_folder(tmp_path, shape=(16, 16))
    arguments = _tiny_arguments(tiny_teacher_file, tmp_path / "run") + [f"--eval_dataset={folder}"]
    result = subprocess.run([sys.executable, "-m", "zscgan_tf.train", *arguments], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=PROCESS_TIMEOUT_SECONDS)
    assert result.returncode == cli.USER_ERROR_STATUS
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: evaluation dataset {folder!r} has images of shape (16, 16, 1) but the teacher reads (8, 8, 1); "
        "pass --eval_resize to resize them")
    assert not (tmp_path / "run" / "generator").exists()  # Refused before any training.
    # Colour images of the teacher's size: the flag converts them, it does not resize them.
    colour = _image_folder(tmp_path, shape=(8, 8), mode="RGB")
    # Refused from the images' headers, before any is decoded (this one would be "cannot read image").
    cut_short = os.path.join(colour, "class_0", "0.png")
    with open(cut_short, "rb") as whole:
        header = whole.read(60)
    with open(cut_short, "wb") as part:
        part.write(header)
    teacher = teachers.load_teacher(teachers.TeacherSource(model=tiny_teacher_file), progress=False)
    with pytest.raises(UserError) as refusal:
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(
            evaluation=config_lib.EvaluationConfig(dataset=colour)), teacher)
    assert str(refusal.value) == (f"evaluation dataset {colour!r} has images of shape (8, 8, 3) but the teacher reads "
                                  "(8, 8, 1); pass --eval_resize to convert them to gray (by luminance)")
    # One colour image among gray ones is named: the refusal spoke of the whole folder as colour.
    gray = _image_folder(tmp_path, shape=(8, 8))
    stray = os.path.join(gray, "class_2", "1.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8), "RGB").save(stray)
    with pytest.raises(UserError) as refusal:
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(
            evaluation=config_lib.EvaluationConfig(dataset=gray)), teacher)
    assert str(refusal.value) == (f"evaluation dataset {gray!r} has images of shape (8, 8, 3) but the teacher reads "
                                  "(8, 8, 1); pass --eval_resize to convert them to gray (by luminance) (1 of its 8 "
                                  f"images is in colour, the first {stray} (mode RGB); the others are gray)")
    # Refused for their size as well: the colour image is not the question, and is not named.
    larger = _image_folder(tmp_path / "mixed", shape=(16, 16))
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8), "RGB").save(os.path.join(larger, "class_2", "1.png"))
    with pytest.raises(UserError) as refusal:
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(
            evaluation=config_lib.EvaluationConfig(dataset=larger)), teacher)
    assert str(refusal.value) == (f"evaluation dataset {larger!r} has images of shape (16, 16, 3) but the teacher "
                                  "reads (8, 8, 1); pass --eval_resize to resize them and convert them to gray (by "
                                  "luminance)")


def test_eval_resize_opts_in_and_a_teachers_own_data_is_resized(tmp_path, tiny_teacher_file, capsys):
    folder = _image_folder(tmp_path, shape=(16, 16))
    arguments = _tiny_arguments(tiny_teacher_file, tmp_path / "run", generator_steps=2, distillation_steps=0)
    assert train.main(["train", *arguments, f"--eval_dataset={folder}", "--eval_resize"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["quantization"]["images"] == 8
    # A teacher trained here on that folder at its own 8x8 input shape needs no flag.
    own_teacher = str(tmp_path / "own.keras")
    save_teacher(build_tiny_classifier(), own_teacher, Preprocessing("tf"), dataset=folder,
                 class_names=["a", "b", "c", "d"], metrics=None)
    arguments = _tiny_arguments(own_teacher, tmp_path / "own_run", generator_steps=2, distillation_steps=0)
    assert train.main(["train", *[a for a in arguments if not a.startswith("--eval_dataset")]]) == 0
    assert "images are (16, 16, 1); converted to the teacher's (8, 8, 1)" in capsys.readouterr().out
