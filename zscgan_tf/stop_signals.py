"""How a command stops on Ctrl-C (SIGINT) and on SIGTERM, the signal batch schedulers and
container runtimes send before they kill a job (Slurm, Kubernetes, `docker stop`, systemd).

Python's default for SIGTERM is to die at once: the steps since the last checkpoint are
lost, and so are TensorFlow's exit handlers, which delete the autograph files they wrote
to the temporary directory. Here SIGTERM stops a command as Ctrl-C does:

- inside a training loop (`stops_between_steps`), the first SIGINT or SIGTERM lets the
  step in flight finish, then the loop saves a checkpoint and stops; a second one stops
  within the step;
- elsewhere (`sigterm_as_keyboard_interrupt`, around a command's body), SIGTERM raises
  `Terminated`, a KeyboardInterrupt, where Ctrl-C raises KeyboardInterrupt. What the
  other long stages did is kept all the same: a teacher's training goes on after its last
  finished epoch, and the evaluation saves the predictions it has made.

A scheduler's grace period before it kills (by default 10 s for `docker stop`, 30 s for
Slurm and Kubernetes, 90 s for systemd) covers a training step and a checkpoint: measured
from SIGTERM to exit, 0.9 to 2.3 s for MobileNetV3Small at 32x32 and 4.4 s for ResNet50
at 224x224 (batches of 32, its 41.5M-parameter generator saved with its optimizer) on 2
cores. A signal that lands in a long call into TensorFlow's C++ (a TFLite conversion) is
acted on when the call returns, as Ctrl-C always was. The exit status
is 128 plus the signal's number: 130 after SIGINT, 143 after SIGTERM, as a shell reports
a process those signals ended.

Signal handlers can only be set from the main thread; elsewhere both signals keep their
usual behaviour.
"""

import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS_BASE = 128  # A process ended by signal N exits with 128 + N, as shells report it.


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt."""


def exit_status(signal_number: int) -> int:
    """The exit status of a command that `signal_number` stopped: 130 for SIGINT, 143 for SIGTERM."""
    return EXIT_STATUS_BASE + int(signal_number)


def signal_name(signal_number: int) -> str:
    """"Ctrl-C" for SIGINT, else the signal's name ("SIGTERM")."""
    return "Ctrl-C" if signal_number == signal.SIGINT else signal.Signals(signal_number).name


def _raise_for(signal_number: int):
    raise Terminated if signal_number == signal.SIGTERM else KeyboardInterrupt


class StopRequest:
    """The first stop signal received since the loop started (`signal_number`), or None."""

    def __init__(self):
        self.signal_number: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _handling(signal_numbers, handler) -> Iterator[None]:
    """`handler` for each of `signal_numbers` within the block; the previous handlers after it."""
    previous = {number: signal.signal(number, handler) for number in signal_numbers}
    try:
        yield
    finally:
        for number, old in previous.items():
            # None: a handler set outside Python; the closest is Python's default for that signal.
            signal.signal(number, old if old is not None else
                          (signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL))


@contextlib.contextmanager
def stops_between_steps() -> Iterator[StopRequest]:
    """Within the block, the first SIGINT or SIGTERM is recorded in the request; the second raises.

    The loop checks `request.requested` after each step. The second signal raises
    KeyboardInterrupt (`Terminated` for SIGTERM) wherever it lands.
    """
    request = StopRequest()
    if not _in_main_thread():
        yield request
        return

    def handler(signal_number, frame):  # pylint: disable=unused-argument
        if request.requested:
            _raise_for(signal_number)
        request.signal_number = signal_number
        again = ("press it again to stop" if signal_number == signal.SIGINT
                 else f"a second {signal_name(signal_number)} or Ctrl-C stops")
        print(f"\n{signal_name(signal_number)}: stopping after this step ({again} within the step)",
              file=sys.stderr, flush=True)

    with _handling(STOP_SIGNALS, handler):
        yield request


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (a KeyboardInterrupt) instead of killing the process."""
    if not _in_main_thread():
        yield
        return

    def handler(signal_number, frame):  # pylint: disable=unused-argument
        raise Terminated

    with _handling((signal.SIGTERM,), handler):
        yield
