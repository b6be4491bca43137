"""A progress line for loops that take minutes: step, loss terms, throughput and ETA.

On a terminal the line is redrawn in place; in a log file (CI, nohup) a full line is
written at most every `log_interval_seconds`, so logs stay readable.
"""

import os
import sys
import time
from typing import Dict, Optional, Sequence, TextIO

BAR_WIDTH = 24
DEFAULT_LOG_INTERVAL_SECONDS = 10.0
TERMINAL_INTERVAL_SECONDS = 0.2
ERASE_TO_END_OF_LINE = "\033[K"


def say(message: str):
    """Prints a line of what a stage is doing, flushed at once (a log file shows it while the stage runs)."""
    print(message, file=sys.stdout, flush=True)


def note(message: str):
    """Prints a line of what a stage is doing to stderr, prefixed "zscgan_tf:", for commands whose
    stdout is their result (`tools/train_teacher.py` prints the teacher's metrics as JSON)."""
    print(f"zscgan_tf: {message}", file=sys.stderr, flush=True)


def count_of(number: int, noun: str) -> str:
    """'1 step', '2 steps': a count and its noun, plural by adding "s"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def listed(names: Sequence[str], shown: int) -> str:
    """`names` joined with commas, the first `shown` of them and how many more:
    "a, b, c, d, ..., 2 more"."""
    return ", ".join(names[:shown]) + (f", ..., {len(names) - shown} more" if len(names) > shown else "")


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, remainder = divmod(seconds, 3600)
    minutes, seconds = divmod(remainder, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressBar:
    """Reports progress of a loop from `initial_step` to `total_steps`.

    Throughput and ETA are measured from the first update on: the work up to it carries the
    one-off costs (a training step's tracing, which for a large model takes many times
    longer than a step), and would make the ETA of a run of minutes read hours at first.
    Until a second update they read "?", but for a loop done in one update, whose speed is
    then measured from the bar's creation at `initial_step`.

    Args:
      total_steps: the step count at which the loop ends.
      description: a short word put before the bar (e.g. "generator").
      initial_step: where a resumed loop starts.
      samples_per_step: for the samples-per-second figure.
      stream: where to write; stdout by default.
      log_interval_seconds: seconds between lines when `stream` is not a terminal.
      quiet_seconds: no line until the loop has run this long, for loops that usually end in a
        second or two but can take minutes (thousands of samples at 224x224 on a CPU).
    """

    def __init__(self, total_steps: int, description: str, initial_step: int = 0, samples_per_step: int = 1,
                 stream: Optional[TextIO] = None, log_interval_seconds: float = DEFAULT_LOG_INTERVAL_SECONDS,
                 quiet_seconds: float = 0.0):
        self.total_steps = total_steps
        self.description = description
        self.initial_step = initial_step
        self.samples_per_step = samples_per_step
        self.stream = stream or sys.stdout
        self.is_terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        # A terminal that knows no control sequences (TERM=dumb) would show the erase as "^[[K".
        self.erase = ERASE_TO_END_OF_LINE if os.environ.get("TERM") != "dumb" else ""
        self.interval = TERMINAL_INTERVAL_SECONDS if self.is_terminal else log_interval_seconds
        self.start_time = time.monotonic()
        self.quiet_until = self.start_time + quiet_seconds
        self.written = False
        self.first_update = None  # (step, time) of the first update, where throughput is measured from.
        self.last_write = -float("inf")

    def update(self, step: int, values: Dict[str, float], force: bool = False):
        now = time.monotonic()
        if self.first_update is None:
            self.first_update = (step, now)
        held_back = step < self.total_steps and now - self.last_write < self.interval
        if not force and (now < self.quiet_until or held_back):
            return
        self.last_write, self.written = now, True
        # On a terminal the line is drawn over the last; ERASE_TO_END_OF_LINE clears what a longer one left.
        self.stream.write(("\r" if self.is_terminal else "") + self.line(step, values, now)
                          + (self.erase if self.is_terminal else "\n"))
        self.stream.flush()

    def line(self, step: int, values: Dict[str, float], now: float) -> str:
        fraction = step / self.total_steps if self.total_steps else 1.0
        filled = int(BAR_WIDTH * fraction)
        bar = "=" * filled + (">" if filled < BAR_WIDTH else "") + "." * max(0, BAR_WIDTH - filled - 1)
        first_step, first_time = self.first_update
        if step == first_step and step >= self.total_steps:
            first_step, first_time = self.initial_step, self.start_time  # Done in one update: the only measure.
        rate = (step - first_step) / (now - first_time) if step > first_step and now > first_time else 0.0
        if step >= self.total_steps:
            eta = format_duration(0)
        else:
            eta = format_duration((self.total_steps - step) / rate) if rate else "?"
        speed = f"{rate * self.samples_per_step:.0f}" if rate else "?"
        terms = "".join(f" {name} {value:.4g}" for name, value in values.items())
        return f"{self.description} {step}/{self.total_steps} [{bar}]{terms} | {speed} samples/s, ETA {eta}"

    def close(self):
        if self.is_terminal and self.written:
            self.stream.write("\n")
            self.stream.flush()
