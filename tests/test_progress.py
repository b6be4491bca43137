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
