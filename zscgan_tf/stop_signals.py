"""How a command stops on Ctrl-C (SIGINT), on SIGTERM, the signal batch schedulers and
container runtimes send before they kill a job (Slurm, Kubernetes, `docker stop`,
systemd), and on SIGHUP, which a run started from a terminal gets when the terminal goes
(an SSH connection drops, the window is closed).

Python's default for SIGTERM and SIGHUP is to die at once: the steps since the last
checkpoint are lost, and so are TensorFlow's exit handlers, which delete the autograph
files they wrote to the temporary directory. Here both stop a command as Ctrl-C does:

- inside a training loop (`stops_between_steps`), the first stop signal lets the step in
  flight finish, then the loop saves a checkpoint and stops; a second SIGINT or SIGTERM
  stops within the step;
- elsewhere (`stop_signals_as_keyboard_interrupt`, around a command's body), SIGTERM and
  SIGHUP raise `Terminated`, a KeyboardInterrupt, where Ctrl-C raises KeyboardInterrupt.
  What the other long stages did is kept all the same: a teacher's training goes on after
  its last finished epoch, and the evaluation saves the predictions it has made.

A hangup comes with no one to read the output: writing to the terminal that has gone
fails (EIO), and so does writing to a pipe whose reader went with it (`| tee log`, which
the hangup ends too: EPIPE); either would stop a command before it saves. So on SIGHUP,
stdout and stderr go to /dev/null, unless they are a file (a log) or a terminal that is
still there; and the second SIGHUP that the shell passes on as it exits is ignored.

A signal the process was started ignoring stays ignored: SIGHUP under `nohup`, SIGINT in a
shell script's background job (`cmd &`), as Python itself leaves them.

Output that no one can read any more is taken as a stop too: a pipe whose reader has gone
(`| head` that has read its lines, `| less` quit), where Python, which ignores SIGPIPE,
raises BrokenPipeError, and a terminal that hung up under a job that got no SIGHUP
(`cmd & disown`, then logging out), where writing raises an OSError (EIO). Either, raised
wherever the write happens, ended a run with a traceback and without a checkpoint. The
places that stop on Ctrl-C (the training loops, the evaluation, `cli.run_command`) stop on
it the same way once `closed_output_error` confirms it, which also sends the closed output
to /dev/null; the exit status is 141, as a shell reports a process SIGPIPE ended.

A scheduler's grace period before it kills (by default 10 s for `docker stop`, 30 s for
Slurm and Kubernetes, 90 s for systemd) covers a training step and a checkpoint: measured
from SIGTERM to exit, 0.9 to 2.3 s for MobileNetV3Small at 32x32 and 4.4 s for ResNet50
at 224x224 (batches of 32, its 41.5M-parameter generator saved with its optimizer) on 2
cores. A signal that lands in a long call into TensorFlow's C++ (a TFLite conversion) is
acted on when the call returns, as Ctrl-C always was. The exit status
is 128 plus the signal's number: 130 after SIGINT, 143 after SIGTERM, 129 after SIGHUP,
as a shell reports a process those signals ended.

Signal handlers can only be set from the main thread; elsewhere the signals keep their
usual behaviour.
"""

import contextlib
import errno
import os
import select
import signal
import stat
import sys
import threading
from typing import Iterator, Optional, Tuple

HANGUP = getattr(signal, "SIGHUP", None)  # None on Windows.
# What an output whose reader has gone counts as: SIGPIPE, which Python ignores (13 where it is undefined).
PIPE_CLOSED = getattr(signal, "SIGPIPE", 13)
EXIT_STATUS_BASE = 128  # A process ended by signal N exits with 128 + N, as shells report it.
OUTPUTS = (1, 2)  # stdout's and stderr's file descriptors.


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (`signal_number`), raised where Ctrl-C would raise KeyboardInterrupt."""

    def __init__(self, signal_number: int = signal.SIGTERM):
        super().__init__(signal_name(signal_number))
        self.signal_number = signal_number


def exit_status(signal_number: int) -> int:
    """The exit status of a command that `signal_number` stopped: 130 for SIGINT, 143 for SIGTERM,
    129 for SIGHUP, 141 for a closed output (`PIPE_CLOSED`)."""
    return EXIT_STATUS_BASE + int(signal_number)


def signal_name(signal_number: int) -> str:
    """"Ctrl-C" for SIGINT, "output closed" for `PIPE_CLOSED`, else the signal's name ("SIGTERM")."""
    if signal_number == signal.SIGINT:
        return "Ctrl-C"
    return "output closed" if signal_number == PIPE_CLOSED else signal.Signals(signal_number).name


def is_stop(error: BaseException) -> bool:
    """Whether `error` stops a command as Ctrl-C does: a KeyboardInterrupt (`Terminated`
    included), or a write to an output no one reads any more (`closed_output_error`)."""
    return isinstance(error, KeyboardInterrupt) or closed_output_error(error)


def stop_behind(error: BaseException) -> Optional[KeyboardInterrupt]:
    """The stop (Ctrl-C's KeyboardInterrupt, or `Terminated`) that `error` was raised while
    handling or from, if any: code a stop lands in may turn it into an error of its own
    (TensorFlow tracing a function says "AssertionError: Concurrent access?"), which is
    that stop all the same."""
    seen = set()
    cause = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def stop_signal_of(stop: BaseException) -> int:
    """The signal a stop (`is_stop`) stands for: `Terminated`'s own, `PIPE_CLOSED` for a closed
    output's error, SIGINT for Ctrl-C."""
    if isinstance(stop, Terminated):
        return stop.signal_number
    return PIPE_CLOSED if isinstance(stop, OSError) else signal.SIGINT


def how_stopped(signal_number: int) -> str:
    """How a stop's last line names it: "interrupted" for Ctrl-C, else `signal_name`."""
    return "interrupted" if signal_number == signal.SIGINT else signal_name(signal_number)


def closed_output_error(error: BaseException) -> bool:
    """Whether `error` is a write that failed because stdout or stderr has no one left to read
    it (`output_closed`): EPIPE from a pipe whose reader has gone, EIO from a terminal that hung
    up. If so, they write to /dev/null from now on."""
    return isinstance(error, OSError) and error.errno in (errno.EPIPE, errno.EIO) and output_closed()


def output_closed() -> bool:
    """Whether stdout or stderr has no one left to read it (`_reader_gone`); if so, it writes to
    /dev/null from now on."""
    closed = [descriptor for descriptor in OUTPUTS if _reader_gone(descriptor)]
    for descriptor in closed:
        _to_dev_null(descriptor)
    return bool(closed)


def _reader_gone(descriptor: int) -> bool:
    """Whether `descriptor` is a pipe or socket with no one left to read it, or a terminal that
    hung up: both poll as an error."""
    try:
        poller = select.poll()
        poller.register(descriptor, select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):  # No poll (Windows), or the descriptor is closed.
        return False
    return any(event & select.POLLERR for _, event in events)


def _to_dev_null(descriptor: int) -> None:
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), descriptor)


def _raise_for(signal_number: int):
    raise KeyboardInterrupt if signal_number == signal.SIGINT else Terminated(signal_number)


def _stop_signals() -> Tuple[int, ...]:
    """SIGINT, SIGTERM and SIGHUP, but not one the process is ignoring: `nohup` starts a command
    with SIGHUP ignored, and a shell script starts its background jobs with SIGINT ignored, so
    that a Ctrl-C meant for the script does not stop them."""
    candidates = (signal.SIGINT, signal.SIGTERM) + ((HANGUP,) if HANGUP is not None else ())
    return tuple(number for number in candidates if signal.getsignal(number) != signal.SIG_IGN)


_hung_up = False  # Whether this process has had a SIGHUP: a terminal hangs up once.


def _first_hangup() -> bool:
    """Whether this SIGHUP is the process's first; if so, stdout and stderr write to /dev/null
    from now on unless `_outlives_hangup`."""
    global _hung_up  # pylint: disable=global-statement
    if _hung_up:
        return False
    _hung_up = True
    for descriptor in OUTPUTS:
        if not _outlives_hangup(descriptor):
            _to_dev_null(descriptor)
    return True


def _outlives_hangup(descriptor: int) -> bool:
    """Whether writing to `descriptor` goes on working after a hangup: a file does, and so does a
    terminal that is still there (SIGHUP sent by hand); the terminal that hung up, and a pipe
    or socket, whose reader the hangup ends too, do not."""
    try:
        is_file = stat.S_ISREG(os.fstat(descriptor).st_mode)
    except OSError:  # Closed: nothing to redirect.
        return True
    return is_file or os.isatty(descriptor)


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
            if number == HANGUP and _hung_up:
                old = signal.SIG_IGN  # The shell's SIGHUP may still come; the exit handlers have to run.
            # None: a handler set outside Python; the closest is Python's default for that signal.
            signal.signal(number, old if old is not None else
                          (signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL))


@contextlib.contextmanager
def stops_between_steps() -> Iterator[StopRequest]:
    """Within the block, the first stop signal is recorded in the request; a second SIGINT or
    SIGTERM raises.

    The loop checks `request.requested` after each step. The second signal raises
    KeyboardInterrupt (`Terminated` for SIGTERM) wherever it lands.
    """
    request = StopRequest()
    if not _in_main_thread():
        yield request
        return

    def handler(signal_number, frame):  # pylint: disable=unused-argument
        if signal_number == HANGUP and not _first_hangup():
            return
        if request.requested:
            if signal_number == HANGUP:
                return  # A hangup while stopping asks for nothing more.
            _raise_for(signal_number)
        request.signal_number = signal_number
        again = ("press it again to stop" if signal_number == signal.SIGINT
                 else "SIGTERM or Ctrl-C stops" if signal_number == HANGUP
                 else f"a second {signal_name(signal_number)} or Ctrl-C stops")
        print(f"\n{signal_name(signal_number)}: stopping after this step ({again} within the step)",
              file=sys.stderr, flush=True)

    with _handling(_stop_signals(), handler):
        yield request


@contextlib.contextmanager
def stop_signals_as_keyboard_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Terminated` (a KeyboardInterrupt) instead of
    killing the process."""
    if not _in_main_thread():
        yield
        return

    def handler(signal_number, frame):  # pylint: disable=unused-argument
        if signal_number == HANGUP and not _first_hangup():
            return
        raise Terminated(signal_number)

    with _handling([number for number in _stop_signals() if number != signal.SIGINT], handler):
        yield
