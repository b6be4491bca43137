"""zscgan_tf: data-free quantization of Keras classifiers with a zero-shot conditional GAN.

TF-MOT works only with Keras 2, so the legacy Keras switch is set here, before
TensorFlow is first imported by anything in this package.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (oneDNN, missing CUDA) buries our own progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
