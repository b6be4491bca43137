"""Tests for zscgan_tf.stop_signals: where a command's output goes once its terminal hangs up."""

import os

from zscgan_tf import stop_signals


def test_a_hangup_keeps_a_log_file_and_sends_a_pipe_to_dev_null(tmp_path, hangup_undone):
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
