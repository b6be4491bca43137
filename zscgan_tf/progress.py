"""A progress line for loops that take minutes: step, loss terms, throughput and ETA.

On a terminal the line is redrawn in place; in a log file (CI, nohup) a full line is
written at most every `log_interval_seconds`, so logs stay readable.
"""

import sys
import time
from typing import Dict, Optional, TextIO

BAR_WIDTH = 24
DEFAULT_LOG_INTERVAL_SECONDS = 10.0
TERMINAL_INTERVAL_SECONDS = 0.2


def say(message: str):
    """Prints a line of what a stage is doing, flushed at once (a log file shows it while the stage runs)."""
    print(message, file=sys.stdout, flush=True)


def count_of(number: int, noun: str) -> str:
    """'1 step', '2 steps': a count and its noun, plural by adding "s"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, remainder = divmod(seconds, 3600)
    minutes, seconds = divmod(remainder, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressBar:
    """Reports progress of a loop from `initial_step` to `total_steps`.

    Args:
      total_steps: the step count at which the loop ends.
      description: a short word put before the bar (e.g. "generator").
      initial_step: where a resumed loop starts; throughput counts only new steps.
      samples_per_step: for the samples-per-second figure.
      stream: where to write; stdout by default.
      log_interval_seconds: seconds between lines when `stream` is not a terminal.
    """

    def __init__(self, total_steps: int, description: str, initial_step: int = 0, samples_per_step: int = 1,
                 stream: Optional[TextIO] = None, log_interval_seconds: float = DEFAULT_LOG_INTERVAL_SECONDS):
        self.total_steps = total_steps
        self.description = description
        self.initial_step = initial_step
        self.samples_per_step = samples_per_step
        self.stream = stream or sys.stdout
        self.is_terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = TERMINAL_INTERVAL_SECONDS if self.is_terminal else log_interval_seconds
        self.start_time = time.monotonic()
        self.last_write = -float("inf")

    def update(self, step: int, values: Dict[str, float], force: bool = False):
        now = time.monotonic()
        if not force and step < self.total_steps and now - self.last_write < self.interval:
            return
        self.last_write = now
        self.stream.write(("\r" if self.is_terminal else "") + self.line(step, values, now - self.start_time)
                          + ("" if self.is_terminal else "\n"))
        self.stream.flush()

    def line(self, step: int, values: Dict[str, float], elapsed: float) -> str:
        fraction = step / self.total_steps if self.total_steps else 1.0
        filled = int(BAR_WIDTH * fraction)
        bar = "=" * filled + (">" if filled < BAR_WIDTH else "") + "." * max(0, BAR_WIDTH - filled - 1)
        done = step - self.initial_step
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = format_duration((self.total_steps - step) / rate) if rate else "?"
        terms = "".join(f" {name} {value:.4g}" for name, value in values.items())
        return (f"{self.description} {step}/{self.total_steps} [{bar}]{terms} | "
                f"{rate * self.samples_per_step:.0f} samples/s, ETA {eta}")

    def close(self):
        if self.is_terminal:
            self.stream.write("\n")
            self.stream.flush()
