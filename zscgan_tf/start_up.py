"""TensorFlow imported without the start-up lines of its C++ code that say nothing wrong.

TensorFlow 2.21 writes these to file descriptor 2 on every import, past Python and past
`TF_CPP_MIN_LOG_LEVEL` (its logging starts before that is read), and they came before
every command's first line of its own:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796496231.241877   20038 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796496231.242161   20038 cudart_stub.cc:31] Could not find cuda drivers on your machine, ...
    I0000 00:00:1796496231.291938   20038 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...
    To enable the following instructions: AVX2 AVX512F ..., in other operations, rebuild TensorFlow ...
    E0000 00:00:1796496237.580966   20038 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

(the first three twice). `import_tensorflow` imports TensorFlow and lists its GPUs (the
first call into CUDA, which writes the last line) with that descriptor sent through this
file run as a filter process, which passes on every other line as it comes. The lines
about CUDA are dropped only on a machine without an NVIDIA driver, where they say what is
plain; where there is one, they may say why TensorFlow cannot use it, and they are kept.
Any other line (a library that fails to load, a warning of Python's) is passed on; so is
the last word of an import that aborts the process (a protobuf clash, a CPU without the
instructions TensorFlow needs), which the filter process outlives.

A command's start (TensorFlow's import and the entry point's, 4 to 6 seconds on 2 cores)
comes before `cli.run_command` answers Ctrl-C in one line. Until then
`one_line_interrupt_while_starting` does: "stopped: interrupted while starting; nothing was
done", status 130, where Python would print the traceback of whatever import was running.

This file runs as a script in that process, so it imports nothing of the package (whose
`__init__` imports TensorFlow).
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
from typing import Iterator

# Lines TensorFlow writes on every start, whatever the machine.
_ALWAYS_DROPPED = (
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"[IW]\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\..*"),
    re.compile(r"I\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use "
               r"available CPU instructions.*"),
    re.compile(r"To enable the following instructions: .*, in other operations, rebuild TensorFlow with the "
               r"appropriate compiler flags\."),
)
# Lines about CUDA that say only that this machine has no NVIDIA GPU.
_DROPPED_WITHOUT_NVIDIA_DRIVER = (
    re.compile(r"I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will "
               r"not be used\."),
    re.compile(r"E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*"),
)
# Present where an NVIDIA kernel driver is loaded.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl")
# The filter process's argument for a machine with an NVIDIA driver, and without.
_WITH_DRIVER, _WITHOUT_DRIVER = "nvidia-driver", "no-nvidia-driver"
# How long the filter process may take to pass on the last lines once the block is over.
FILTER_EXIT_SECONDS = 10


def has_nvidia_driver() -> bool:
    """Whether this machine has an NVIDIA driver loaded (a GPU TensorFlow could use)."""
    return any(os.path.exists(path) for path in NVIDIA_DRIVER_PATHS)


def is_start_up_noise(line: str, nvidia_driver: bool) -> bool:
    """Whether `line` (without its newline) is one of TensorFlow's start-up lines that say
    nothing wrong on a machine with (`nvidia_driver`) or without an NVIDIA driver."""
    patterns = _ALWAYS_DROPPED if nvidia_driver else _ALWAYS_DROPPED + _DROPPED_WITHOUT_NVIDIA_DRIVER
    return any(pattern.fullmatch(line) for pattern in patterns)


def pass_on_all_but_noise(source, destination, nvidia_driver: bool) -> None:
    """Copies the lines of binary stream `source` to `destination` as they come, all but
    `is_start_up_noise` ones: the filter process's work."""
    for raw_line in source:
        if not is_start_up_noise(raw_line.decode(errors="replace").rstrip("\r\n"), nvidia_driver):
            destination.write(raw_line)
            destination.flush()


@contextlib.contextmanager
def native_stderr_filtered(nvidia_driver: bool) -> Iterator[None]:
    """Sends what is written to file descriptor 2 inside the block through a filter process
    that passes on all but TensorFlow's start-up noise, and waits for it to finish after the
    block, so that the lines keep their place. Where no filter process can start (no Python
    interpreter or no file of this module to run), nothing is filtered."""
    sys.stderr.flush()
    if not (os.path.basename(sys.executable or "").lower().startswith("python") and os.path.isfile(__file__)):
        yield  # Embedded in another program, or imported from a zip file: nothing to run the filter with.
        return
    try:
        filter_process = subprocess.Popen(  # pylint: disable=consider-using-with  # Waited for below.
            # Isolated (-I): neither this file's folder nor the user's environment on its path.
            [sys.executable, "-I", os.path.abspath(__file__), _WITH_DRIVER if nvidia_driver else _WITHOUT_DRIVER],
            stdin=subprocess.PIPE, stdout=2)
    except OSError:
        yield
        return
    saved_descriptor = os.dup(2)
    try:
        os.dup2(filter_process.stdin.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_descriptor, 2)
            filter_process.stdin.close()
            try:
                filter_process.wait(timeout=FILTER_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                filter_process.kill()
    finally:
        os.close(saved_descriptor)


def device_summary() -> str:
    """What TensorFlow computes on, for a run's first lines: `GPU:0 (NVIDIA H100 80GB HBM3)`, or
    `the CPU (TensorFlow sees no GPU)`. It says in one line what the CUDA lines dropped here
    said: a machine whose GPU a container does not pass in has no driver inside it either."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # This file runs as a script too.
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "the CPU (TensorFlow sees no GPU)"
    return ", ".join(f"{gpu.name.split(':', 1)[-1]} "
                     f"({tf.config.experimental.get_device_details(gpu).get('device_name', 'no name given')})"
                     for gpu in gpus)


STARTING_INTERRUPT_LINE = "stopped: interrupted while starting; nothing was done"
# `sys.excepthook` as it was before `one_line_interrupt_while_starting` replaced it.
_hook_before_start = None
# The folder of the entry-point scripts, `tools/` beside the package.
TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _module_run_by_dash_m() -> str:
    """The module `python -m <module>` runs, from the interpreter's own arguments; "" if none."""
    arguments = getattr(sys, "orig_argv", [])[1:]
    for index, argument in enumerate(arguments):
        if argument == "-m":
            return arguments[index + 1] if index + 1 < len(arguments) else ""
        if argument.startswith("-m"):  # -mzscgan_tf.train
            return argument[2:]
    return ""


def started_as_command() -> bool:
    """Whether this process is one of the package's commands starting: `python -m zscgan_tf.<module>`
    (Python sets `sys.argv[0]` to "-m" while it imports the module's package), a script of
    `tools/`, or an installed console script (`zscgan-train`); not a program or a notebook
    that imports the package, nor another package's `python -m` command that does."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return ((sys.argv[:1] == ["-m"] and _module_run_by_dash_m().partition(".")[0] == __package__)
            or (bool(main_file) and os.path.dirname(os.path.abspath(main_file)) == TOOLS_DIR)
            or os.path.basename(main_file).startswith("zscgan-"))


def one_line_interrupt_while_starting() -> None:
    """Until `command_started`, a Ctrl-C that ends the process prints `STARTING_INTERRUPT_LINE`
    instead of a traceback (Python still exits as SIGINT ends a process: 130 in a shell).
    Other errors are printed as before."""
    global _hook_before_start  # pylint: disable=global-statement
    if _hook_before_start is not None:
        return
    _hook_before_start = previous_hook = sys.excepthook

    def print_interrupt_in_one_line(kind, value, trace):
        if issubclass(kind, KeyboardInterrupt):
            print(STARTING_INTERRUPT_LINE, file=sys.stderr)
        else:
            previous_hook(kind, value, trace)

    sys.excepthook = print_interrupt_in_one_line


def command_started() -> None:
    """The command answers Ctrl-C itself from here on (`cli.run_command`): `sys.excepthook` as
    it was before `one_line_interrupt_while_starting`."""
    global _hook_before_start  # pylint: disable=global-statement
    if _hook_before_start is not None:
        sys.excepthook, _hook_before_start = _hook_before_start, None


def import_tensorflow() -> None:
    """Imports TensorFlow and lists its GPUs, without the start-up lines that say nothing
    wrong. Does nothing more once TensorFlow has been imported by anyone."""
    if "tensorflow" in sys.modules:
        return
    with native_stderr_filtered(has_nvidia_driver()):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        tf.config.list_physical_devices("GPU")


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the filter goes on passing lines until the
    # importing process stops writing, so that what it says about it is not cut off.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pass_on_all_but_noise(sys.stdin.buffer, sys.stdout.buffer, nvidia_driver=sys.argv[1] == _WITH_DRIVER)
