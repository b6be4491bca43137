"""Tests for zscgan_tf.stop_signals: where a command's output goes once its terminal hangs up or its reader
has gone."""

import errno
import os

from zscgan_tf import stop_signals


def test_a_hangup_keeps_a_log_file_and_sends_a_pipe_to_dev_null(tmp_path, hangup_and_outputs_restored):
    log = tmp_path / "run.log"
    with open(log, "w") as log_file:
        os.dup2(log_file.fileno(), 1)  # `> run.log`
    tee_reader, tee_writer = os.pipe()
    os.dup2(tee_writer, 2)  # `2>&1 | tee`, whose tee the hangup ends.
    os.close(tee_writer)
    os.close(tee_reader)

    assert stop_signals._first_hangup()
    assert not stop_signals._first_hangup()  # The shell's SIGHUP after the terminal's.

    os.write(1, b"kept\n")
    os.write(2, b"no one reads this\n")  # Would raise BrokenPipeError without the redirect.
    assert log.read_text() == "kept\n"
    assert os.path.samestat(os.fstat(2), os.stat(os.devnull))


def test_only_an_output_whose_reader_has_gone_counts_as_closed(tmp_path, hangup_and_outputs_restored):
    live_reader, live_writer = os.pipe()
    os.dup2(live_writer, 1)  # `| tee log`, still reading.
    os.close(live_writer)
    with open(tmp_path / "run.log", "w") as log_file:
        os.dup2(log_file.fileno(), 2)
    assert not stop_signals.output_closed()  # A BrokenPipeError of some other pipe is not a stop.

    os.close(live_reader)  # The reader goes: `| head` has read its lines.
    assert stop_signals.output_closed()
    assert os.path.samestat(os.fstat(1), os.stat(os.devnull))
    assert not os.path.samestat(os.fstat(2), os.stat(os.devnull))  # The log keeps its output.
    os.write(1, b"no one reads this\n")
    assert stop_signals.signal_name(stop_signals.PIPE_CLOSED) == "output closed"
    assert stop_signals.exit_status(stop_signals.PIPE_CLOSED) == 141


def test_only_a_failed_write_to_a_closed_output_is_a_stop(hangup_and_outputs_restored):
    assert not stop_signals.closed_output_error(OSError(errno.EIO, "Input/output error"))  # Outputs still read.
    reader, writer = os.pipe()
    os.dup2(writer, 1)
    os.close(writer)
    os.close(reader)
    assert not stop_signals.closed_output_error(OSError(errno.ENOSPC, "No space left on device"))
    assert not stop_signals.closed_output_error(ValueError("not a write"))
    assert stop_signals.closed_output_error(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert os.path.samestat(os.fstat(1), os.stat(os.devnull))
