import io

from zscgan_tf import progress


def test_count_of_says_one_step_and_two_steps():
    assert progress.count_of(1, "step") == "1 step"
    assert progress.count_of(0, "layer") == "0 layers"
    assert progress.count_of(2, "step") == "2 steps"


def test_format_duration():
    assert progress.format_duration(59.6) == "1m00s"
    assert progress.format_duration(3 * 3600 + 125) == "3h02m05s"


def test_log_stream_gets_whole_lines_at_most_every_interval_and_the_last_step_always():
    stream = io.StringIO()
    bar = progress.ProgressBar(total_steps=4, description="generator", samples_per_step=8, stream=stream,
                               log_interval_seconds=3600)
    for step in range(1, 5):
        bar.update(step, {"loss": 0.5 / step})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # The first step, then the interval holds back all but the last.
    assert lines[0].startswith("generator 1/4 [") and "loss 0.5 " in lines[0]
    assert lines[1].startswith("generator 4/4 [========================]") and "ETA 0m00s" in lines[1]
    assert "\r" not in stream.getvalue()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_line_is_drawn_over_the_last_and_clears_what_a_longer_one_left(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    stream = _Terminal()
    bar = progress.ProgressBar(total_steps=2, description="teacher", stream=stream)
    bar.update(1, {"loss": 2.614})
    bar.update(2, {"loss": 1.25}, force=True)
    bar.close()
    drawn = stream.getvalue()
    assert drawn.startswith("\rteacher 1/2 [") and drawn.endswith(progress.ERASE_TO_END_OF_LINE + "\n")
    assert drawn.count("\r") == 2 and drawn.count(progress.ERASE_TO_END_OF_LINE) == 2
    # Before, "loss 1.25 | ..." ended where "loss 2.614 | ..." had been one character longer: its last stayed.
    assert "loss 1.25 |" in drawn.split("\r")[2]


def test_speed_and_eta_leave_out_the_work_before_the_first_update(monkeypatch):
    # A first training step that spends 100 s tracing, then steps of 1 s: the ETA is that of 1 s steps.
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    bar = progress.ProgressBar(total_steps=10, description="distillation", samples_per_step=64, stream=stream,
                               log_interval_seconds=0)
    for step, seconds in ((1, 100.0), (2, 101.0), (3, 102.0), (10, 109.0)):
        now[0] = seconds
        bar.update(step, {})
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("| ? samples/s, ETA ?")  # Nothing measured yet: one step, and it held the tracing.
    assert lines[1].endswith("| 64 samples/s, ETA 0m08s")
    assert lines[2].endswith("| 64 samples/s, ETA 0m07s")
    assert lines[3].endswith("| 64 samples/s, ETA 0m00s")
    # A loop done in one update has nothing after it to measure: its speed is measured from the bar's creation,
    # at the step a resumed loop starts from.
    now[0] = 0.0
    bar = progress.ProgressBar(total_steps=360, description="evaluation", initial_step=200, stream=stream)
    now[0] = 2.0
    bar.update(360, {})
    assert stream.getvalue().splitlines()[-1].endswith("| 80 samples/s, ETA 0m00s")


def test_a_terminal_without_control_sequences_gets_no_erase(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    stream = _Terminal()
    bar = progress.ProgressBar(total_steps=1, description="teacher", stream=stream)
    bar.update(1, {})
    assert stream.getvalue().startswith("\rteacher 1/1 [") and progress.ERASE_TO_END_OF_LINE not in stream.getvalue()


def test_a_quiet_bar_says_nothing_for_a_short_loop_and_shows_a_long_one_once_it_has_run_that_long(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    stream = _Terminal()
    bar = progress.ProgressBar(total_steps=3, description="calibration", stream=stream, quiet_seconds=10)
    for step in (1, 2, 3):  # Done in 3 s: not a line, nor the newline that ends one.
        now[0] = step
        bar.update(step, {})
    bar.close()
    assert stream.getvalue() == ""
    now[0] = 0.0
    stream = io.StringIO()
    bar = progress.ProgressBar(total_steps=30, description="calibration", stream=stream, quiet_seconds=10,
                               log_interval_seconds=0)
    for step in range(1, 31):
        now[0] = float(step)
        bar.update(step, {})
    lines = stream.getvalue().splitlines()
    # From the 10th second on, with the speed measured from the first step.
    assert lines[0].startswith("calibration 10/30 [") and lines[0].endswith("| 1 samples/s, ETA 0m20s")
    assert len(lines) == 21 and lines[-1].startswith("calibration 30/30 [")
