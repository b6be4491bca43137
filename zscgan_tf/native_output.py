"""Keeping what TensorFlow's and LiteRT's C++ code writes to stderr, and warnings TensorFlow
logs that say nothing wrong, out of the user's way.

Their native code writes to file descriptor 2 directly, past Python's `sys.stderr`:
the converter's "fully_quantize: 0, inference_type: 6, ..." after every int8
conversion and its dump of every op it cannot convert before it fails, and LiteRT's
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." when a first interpreter is
made. What matters of either reaches Python as an exception or is inspected in the
model, so a block that produces them runs inside `native_stderr_discarded`.

A line TensorFlow's Python logger would print that is known to say nothing wrong in a
block is dropped there by `tensorflow_log_lines_dropped`. TensorFlow's start-up lines come
before this module can be imported, and `start_up` deals with them.

Example:

  with native_stderr_discarded():
      model_bytes = converter.convert()
"""

import contextlib
import logging
import os
import sys

import tensorflow as tf


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


@contextlib.contextmanager
def tensorflow_log_lines_dropped(fragment: str):
    """Drops the records of TensorFlow's Python logger whose message holds `fragment`, inside
    the block; every other record is logged as before."""
    logger = tf.get_logger()
    dropped = logging.Filter()
    dropped.filter = lambda record: fragment not in record.getMessage()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)
