"""zscgan_tf: data-free quantization of Keras classifiers with a zero-shot conditional GAN.

TF-MOT works only with Keras 2, so the legacy Keras switch is set here, before
TensorFlow is first imported by anything in this package. TensorFlow is imported here
too, without the start-up lines of its C++ code that say nothing wrong, and, in a command,
with Ctrl-C answered in one line until the command answers it itself (`start_up`).
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ info and warning lines after its start (its start-up lines come before
# it reads this, and `start_up` keeps them out of the way).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zscgan_tf import start_up  # pylint: disable=wrong-import-position  # After the switches above.

# `sys.orig_argv`: while `python -m` imports the package, `sys.argv` is ["-m"].
if start_up.started_as_command() and "--verbose" not in getattr(sys, "orig_argv", sys.argv):
    start_up.one_line_interrupt_while_starting()  # Until `cli.run_command` answers Ctrl-C itself.
start_up.import_tensorflow()

__version__ = "0.1.0"
