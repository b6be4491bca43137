"""zscgan_tf: data-free quantization of Keras classifiers with a zero-shot conditional GAN.

TF-MOT works only with Keras 2, so the legacy Keras switch is set here, before
TensorFlow is first imported by anything in this package. TensorFlow is imported here
too, without the start-up lines of its C++ code that say nothing wrong (`start_up`).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ info and warning lines after its start (its start-up lines come before
# it reads this, and `start_up` keeps them out of the way).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zscgan_tf import start_up  # pylint: disable=wrong-import-position  # After the switches above.

start_up.import_tensorflow()

__version__ = "0.1.0"
