"""Keeping what TensorFlow's and LiteRT's C++ code writes to stderr out of the user's way.

Their native code writes to file descriptor 2 directly, past Python's `sys.stderr`:
the converter's "fully_quantize: 0, inference_type: 6, ..." after every int8
conversion and its dump of every op it cannot convert before it fails, and LiteRT's
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." when a first interpreter is
made. What matters of either reaches Python as an exception or is inspected in the
model, so a block that produces them runs inside `native_stderr_discarded`.

Example:

  with native_stderr_discarded():
      model_bytes = converter.convert()
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_discarded():
    """Discards what is written to file descriptor 2 inside the block.

    Python's own writes to `sys.stderr` inside the block go the same way; `sys.stderr` is
    flushed before and after, so nothing written outside the block is lost.
    """
    sys.stderr.flush()
    saved_descriptor = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved_descriptor, 2)
    finally:
        os.close(saved_descriptor)
