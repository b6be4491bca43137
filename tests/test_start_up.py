"""Tests of zscgan_tf.start_up: TensorFlow's start-up lines kept out of the way, nothing else."""

import os
import signal
import subprocess
import sys
import time

from zscgan_tf import start_up

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# As TensorFlow 2.21 wrote them on this machine (no GPU).
START_UP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796496231.241877   20038 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796496231.291938   20038 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
]
NO_GPU_LINES = [
    "I0000 00:00:1796496231.242161   20038 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796496237.580966   20038 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
]
# Lines that may say something wrong.
OTHER_LINES = [
    "W0000 00:00:1796496231.241877   20038 dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.9'",
    "E0000 00:00:1796496237.580966   20038 some_kernel.cc:12] oneDNN custom operations are on, and failed",
    "/site-packages/foo.py:3: UserWarning: something a user should read",
]


def test_start_up_lines_are_noise_and_others_are_not():
    for line in START_UP_LINES:
        assert start_up.is_start_up_noise(line, nvidia_driver=False)
        assert start_up.is_start_up_noise(line, nvidia_driver=True)
    for line in NO_GPU_LINES:  # On a machine with a driver they may say why its GPU is not used.
        assert start_up.is_start_up_noise(line, nvidia_driver=False)
        assert not start_up.is_start_up_noise(line, nvidia_driver=True)
    for line in OTHER_LINES:
        assert not start_up.is_start_up_noise(line, nvidia_driver=False)


def _run(script):
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_the_filter_passes_on_the_other_lines_in_place_even_when_the_block_raises_or_the_process_aborts():
    lines = "\n".join(START_UP_LINES + NO_GPU_LINES + OTHER_LINES[:1])
    script = ("import os, sys\nfrom zscgan_tf import start_up\n"
              "with start_up.native_stderr_filtered(nvidia_driver=False):\n"
              f"    os.write(2, {lines!r}.encode() + b'\\nkept without its newline')\n"
              "print('after', file=sys.stderr)\n"  # After the filter's last line, not before it.
              "try:\n"
              "    with start_up.native_stderr_filtered(nvidia_driver=True):\n"
              f"        os.write(2, {NO_GPU_LINES[1]!r}.encode() + b'\\n')\n"
              "        raise RuntimeError('failed')\n"
              "except RuntimeError:\n"
              "    print('raised', file=sys.stderr)\n"
              "with start_up.native_stderr_filtered(nvidia_driver=False):\n"
              "    os.write(2, b'F0000 check failed: why the import aborted\\n')\n"
              "    os.abort()\n")
    result = _run(script)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [OTHER_LINES[0], "kept without its newlineafter", NO_GPU_LINES[1],
                                          "raised", "F0000 check failed: why the import aborted"]


def test_importing_the_package_prints_no_start_up_lines():
    script = ("import sys\nimport zscgan_tf\nimport tensorflow as tf\n"
              "tf.constant(1.0) + 1.0\n"  # The first op, after which CUDA would have complained.
              "print('stderr still works', file=sys.stderr)\n")
    result = _run(script)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    nvidia_driver = start_up.has_nvidia_driver()
    assert not [line for line in lines if start_up.is_start_up_noise(line, nvidia_driver)]
    if not nvidia_driver:
        assert lines == ["stderr still works"]
    # TensorFlow imported before the package: its lines were already written, and nothing is hidden.
    script = "import tensorflow, sys\nimport zscgan_tf\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if start_up.is_start_up_noise(line, nvidia_driver)]


def test_without_an_interpreter_to_run_the_filter_nothing_is_filtered_or_lost(monkeypatch, capfd):
    monkeypatch.setattr(start_up.sys, "executable", "/usr/bin/uwsgi")  # Python embedded in a server.
    with start_up.native_stderr_filtered(nvidia_driver=False):
        os.write(2, (START_UP_LINES[0] + "\n").encode())
    assert capfd.readouterr().err == START_UP_LINES[0] + "\n"


def test_the_device_summary_names_the_gpus_or_says_there_is_none(monkeypatch):
    import tensorflow as tf

    class FakeDevice:
        name = "/physical_device:GPU:0"

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [])
    assert start_up.device_summary() == "the CPU (TensorFlow sees no GPU)"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [FakeDevice()])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: {"device_name": "NVIDIA H100"})
    assert start_up.device_summary() == "GPU:0 (NVIDIA H100)"


def test_a_command_is_told_from_a_program_that_imports_the_package(monkeypatch):
    class Main:
        __file__ = None

    main = Main()
    monkeypatch.setitem(sys.modules, "__main__", main)
    python = sys.executable
    for orig_argv, argv, main_file, command in (
            ([python, "-m", "zscgan_tf.train", "--flagfile=x"], ["-m"], None, True),  # While the package imports.
            ([python, "-W", "ignore", "-mzscgan_tf.train"], ["-m"], None, True),
            ([python, "-m", "my_package.tool"], ["-m"], None, False),  # Another package's command imports ours.
            ([python, "tools/convert.py"], ["tools/convert.py"], os.path.join(start_up.TOOLS_DIR, "convert.py"),
             True),
            (["/usr/local/bin/zscgan-train"], ["/usr/local/bin/zscgan-train"], "/usr/local/bin/zscgan-train", True),
            ([python, "my_script.py"], ["my_script.py"], "/home/me/my_script.py", False),
            ([python, "-c", "import zscgan_tf"], ["-c"], None, False),
            ([python], [""], None, False),  # An interactive interpreter or a notebook's kernel.
            ([], [], None, False)):
        monkeypatch.setattr(sys, "orig_argv", orig_argv)
        monkeypatch.setattr(sys, "argv", argv)
        main.__file__ = main_file
        assert start_up.started_as_command() == command, argv


def test_until_the_command_starts_an_interrupt_is_one_line_and_other_errors_are_printed_as_before(
        monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *error: seen.append(error[0]))
    start_up.one_line_interrupt_while_starting()
    start_up.one_line_interrupt_while_starting()  # A second call changes nothing.
    try:
        sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
        assert capsys.readouterr().err == start_up.STARTING_INTERRUPT_LINE + "\n"
        sys.excepthook(ValueError, ValueError("bad"), None)
        assert seen == [ValueError] and not capsys.readouterr().err
    finally:
        start_up.command_started()
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)  # The hook it replaced, again.
    assert seen == [ValueError, KeyboardInterrupt]
    start_up.command_started()  # Twice is harmless.


def _interrupted_while_starting(command):
    """`command` sent SIGINT (Ctrl-C) as soon as TensorFlow's library is loaded: while it imports,
    seconds before the command can answer Ctrl-C itself."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            with open(f"/proc/{process.pid}/maps") as maps:
                if "libtensorflow" in maps.read():
                    break
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, stdout, stderr


def test_ctrl_c_while_a_command_starts_prints_one_line_and_ends_it_as_sigint_does(tmp_path):
    for command in ([sys.executable, "-m", "zscgan_tf.train", "--flagfile=configs/demo.cfg",
                     f"--work_dir={tmp_path / 'run'}"],
                    [sys.executable, "tools/convert.py", "--help"]):
        status, stdout, stderr = _interrupted_while_starting(command)
        assert status == -signal.SIGINT, stderr  # 130 in a shell.
        assert (stdout, stderr) == ("", start_up.STARTING_INTERRUPT_LINE + "\n"), command
    assert not (tmp_path / "run").exists()
    # --verbose asks for tracebacks.
    status, _, stderr = _interrupted_while_starting([sys.executable, "-m", "zscgan_tf.train", "--verbose"])
    assert status == -signal.SIGINT
    assert stderr.startswith("Traceback") and stderr.rstrip().endswith("KeyboardInterrupt")
    assert start_up.STARTING_INTERRUPT_LINE not in stderr
