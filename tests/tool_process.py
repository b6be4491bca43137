"""A tool's `main` called again and again in one process of its own, as `python tools/<tool>.py` runs it.

Starting Python with TensorFlow, tf_keras and TF-MOT takes about 5 seconds on 2 cores, and
a fresh process's first conversion several more: longer than checking bad input or
converting a tiny model. Tests that run a tool many times share one such process: each
call gets its own stdout, stderr and exit status, and the flags are parsed afresh, as in a
process of its own. Each tool's tests still start it as a script at least once. (A tool
cannot be run in the test process itself: its absl flags clash with the pipeline's.)
"""

import json
import os
import select
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Reads one JSON list of arguments a line; answers each with one JSON line [status, stdout, stderr] on
# the original stdout, which nothing else writes to: TensorFlow's own output goes to stderr.
_SERVER = r"""
import contextlib, io, json, os, sys, traceback
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
answers = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
tool = __import__(os.path.splitext(os.path.basename(script))[0])
for line in sys.stdin:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = tool.main([script, *json.loads(line)])
        except SystemExit as exit_:  # As Python exits: no code is 0, a message is printed and is 1.
            status = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
            if not isinstance(exit_.code, (int, type(None))):
                print(exit_.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            status = 1
    answers.write(json.dumps([status, stdout.getvalue(), stderr.getvalue()]) + "\n")
    answers.flush()
"""


class ToolProcess:
    """`tools/<name>.py`'s `main` in one long-lived process; call it like `subprocess.run`.

    A call that gets no answer (the process died, or `timeout` passed) fails the test and
    ends the process; the next call starts another. Use as a context manager (or call `close`).
    """

    def __init__(self, name: str, timeout: float = 300.0):
        self.script = os.path.join(REPO_ROOT, "tools", f"{name}.py")
        self.timeout = timeout
        self._process = None
        self._log = None

    def _start(self):
        self._log = tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen([sys.executable, "-c", _SERVER, self.script], cwd=REPO_ROOT, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)

    def __call__(self, *arguments: str) -> subprocess.CompletedProcess:
        """What `python tools/<name>.py *arguments` would exit with and print."""
        if self._process is None:
            self._start()
        line = ""
        try:
            self._process.stdin.write(json.dumps(list(arguments)) + "\n")
            self._process.stdin.flush()
            ready, _, _ = select.select([self._process.stdout], [], [], self.timeout)
            line = self._process.stdout.readline() if ready else ""
        except BrokenPipeError:
            pass
        if not line:
            self._log.seek(0)
            printed = self._log.read()[-4000:]
            self.close()  # A late answer must not be taken for the next call's.
            raise RuntimeError(f"{self.script} gave no answer to {list(arguments)}; its process wrote:\n{printed}")
        status, stdout, stderr = json.loads(line)
        return subprocess.CompletedProcess([self.script, *arguments], status, stdout, stderr)

    def close(self) -> None:
        if self._process is None:
            return
        try:
            self._process.stdin.close()
            self._process.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._log.close()
        self._process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
