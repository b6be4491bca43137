"""The architectures of the teachers the package trains: CIFAR-style ResNets, MobileNetV2 and V3.

Plain functional tf_keras models returning logits, with deterministic layer names, so
that TF-MOT can quantize them and their BatchNormalization layers can be tapped.

Example:

  model = build_architecture("resnet20", (28, 28, 1), num_classes=10)
"""

import functools
import inspect
from typing import Callable, Dict, Sequence, Tuple

import tf_keras

from zscgan_tf.errors import UserError

RESNET_DEPTHS = (8, 14, 20)
RESNET_STAGES = 3
RESNET_DEFAULT_BASE_WIDTH = 16
RESNET_BATCHNORM_MOMENTUM = 0.9
RESNET_BATCHNORM_EPSILON = 1e-5
MOBILENET_MIN_INPUT_SIZE = 32


def _check_input_shape(input_shape: Sequence[int]) -> Tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(size) < 1 for size in input_shape):
        raise UserError(f"input shape must be three positive sizes (height, width, channels), got {tuple(input_shape)}")
    return tuple(int(size) for size in input_shape)


def _check_num_classes(num_classes: int) -> None:
    if int(num_classes) < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")


def _conv_bn(inputs, filters: int, kernel_size: int, strides: int, prefix: str, relu: bool):
    outputs = tf_keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                                     kernel_initializer="he_normal", name=f"{prefix}_conv")(inputs)
    outputs = tf_keras.layers.BatchNormalization(momentum=RESNET_BATCHNORM_MOMENTUM, epsilon=RESNET_BATCHNORM_EPSILON,
                                                 name=f"{prefix}_bn")(outputs)
    if relu:
        outputs = tf_keras.layers.ReLU(name=f"{prefix}_relu")(outputs)
    return outputs


def _basic_block(inputs, filters: int, strides: int, prefix: str):
    """Two 3x3 conv-BN layers with an identity or 1x1 conv-BN projection shortcut."""
    residual = _conv_bn(inputs, filters, 3, strides, f"{prefix}_1", relu=True)
    residual = _conv_bn(residual, filters, 3, 1, f"{prefix}_2", relu=False)
    shortcut = inputs
    if strides != 1 or inputs.shape[-1] != filters:
        shortcut = _conv_bn(inputs, filters, 1, strides, f"{prefix}_shortcut", relu=False)
    outputs = tf_keras.layers.Add(name=f"{prefix}_add")([shortcut, residual])
    return tf_keras.layers.ReLU(name=f"{prefix}_out")(outputs)


def build_resnet(depth: int, input_shape: Sequence[int], num_classes: int,
                 base_width: int = RESNET_DEFAULT_BASE_WIDTH) -> tf_keras.Model:
    """A CIFAR-style ResNet (He et al. 2016, section 4.2) returning logits.

    3x3 conv-BN-ReLU stem, three stages of (depth - 2) / 6 basic blocks with widths
    base_width, 2 base_width and 4 base_width, stride 2 at the start of stages 2 and 3,
    global average pooling and a Dense layer. `same` padding lets 8x8 inputs through.

    Args:
      depth: 6n + 2, e.g. 8, 14 or 20.
      input_shape: (height, width, channels).
      num_classes: number of logits.
      base_width: filters of the first stage.

    Returns:
      A functional tf_keras model named `resnet<depth>`.
    """
    if depth < 8 or (depth - 2) % 6:
        raise UserError(f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
    input_shape = _check_input_shape(input_shape)
    _check_num_classes(num_classes)
    if base_width < 1:
        raise UserError(f"ResNet base width must be positive, got {base_width}")
    blocks_per_stage = (depth - 2) // 6
    inputs = tf_keras.Input(shape=input_shape, name="input")
    outputs = _conv_bn(inputs, base_width, 3, 1, "stem", relu=True)
    for stage in range(RESNET_STAGES):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            outputs = _basic_block(outputs, base_width * 2 ** stage, strides, f"stage{stage + 1}_block{block + 1}")
    outputs = tf_keras.layers.GlobalAveragePooling2D(name="global_pool")(outputs)
    outputs = tf_keras.layers.Dense(num_classes, name="logits")(outputs)
    return tf_keras.Model(inputs, outputs, name=f"resnet{depth}")


class InputTooSmallError(UserError):
    """The images are smaller than the architecture takes; `minimum` is its least side."""

    def __init__(self, message: str, minimum: int):
        super().__init__(message)
        self.minimum = minimum


def _checked_mobilenet_arguments(family: str, input_shape: Sequence[int], num_classes: int, alpha: float):
    input_shape = _check_input_shape(input_shape)
    _check_num_classes(num_classes)
    if min(input_shape[:2]) < MOBILENET_MIN_INPUT_SIZE:
        raise InputTooSmallError(f"{family} needs inputs of at least {MOBILENET_MIN_INPUT_SIZE}x"
                                 f"{MOBILENET_MIN_INPUT_SIZE}, got {input_shape[0]}x{input_shape[1]}",
                                 MOBILENET_MIN_INPUT_SIZE)
    if alpha <= 0:
        raise UserError(f"{family} alpha must be positive, got {alpha}")
    return input_shape


def build_mobilenet_v2(input_shape: Sequence[int], num_classes: int, alpha: float = 1.0) -> tf_keras.Model:
    """Keras Applications' MobileNetV2 without pre-trained weights, returning logits.

    Args:
      input_shape: (height, width, channels); at least 32x32; 1 or 3 channels.
      num_classes: number of logits.
      alpha: width multiplier (0.35, 0.5, 0.75, 1.0, ...).
    """
    input_shape = _checked_mobilenet_arguments("MobileNetV2", input_shape, num_classes, alpha)
    return tf_keras.applications.MobileNetV2(weights=None, include_top=True, input_shape=input_shape,
                                             classes=num_classes, classifier_activation=None, alpha=alpha)


def build_mobilenet_v3_small(input_shape: Sequence[int], num_classes: int, alpha: float = 1.0) -> tf_keras.Model:
    """Keras Applications' MobileNetV3Small without pre-trained weights, returning logits.

    Hard-swish (`Multiply`) and squeeze-excite blocks. Its own pixel scaling is left out,
    so it reads inputs in [-1, 1] (the `tf` preprocessing) like `build_mobilenet_v2`.

    Args:
      input_shape: (height, width, channels); at least 32x32; 1 or 3 channels.
      num_classes: number of logits.
      alpha: width multiplier (0.75, 1.0, ...).
    """
    input_shape = _checked_mobilenet_arguments("MobileNetV3Small", input_shape, num_classes, alpha)
    return tf_keras.applications.MobileNetV3Small(weights=None, include_top=True, input_shape=input_shape,
                                                  classes=num_classes, classifier_activation=None, alpha=alpha,
                                                  include_preprocessing=False)


ARCHITECTURES: Dict[str, Callable[..., tf_keras.Model]] = {
    **{f"resnet{depth}": functools.partial(build_resnet, depth) for depth in RESNET_DEPTHS},
    "mobilenet_v2": build_mobilenet_v2,
    "mobilenet_v3_small": build_mobilenet_v3_small,
}


def build_architecture(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> tf_keras.Model:
    """Builds a registered architecture: one of `ARCHITECTURES`' names.

    Args:
      name: `resnet8`, `resnet14`, `resnet20`, `mobilenet_v2` or `mobilenet_v3_small`.
      input_shape: (height, width, channels).
      num_classes: number of logits.
      **kwargs: passed to the builder (`base_width` for ResNets, `alpha` for the MobileNets).
    """
    if name not in ARCHITECTURES:
        raise UserError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    builder = ARCHITECTURES[name]
    # An option of another family (`alpha` for a ResNet) was a TypeError from the builder.
    taken = set(inspect.signature(builder).parameters) - {"input_shape", "num_classes"}
    other = sorted(set(kwargs) - taken)
    if other:
        raise UserError(f"{name} takes no {', '.join(other)} (its options: {', '.join(sorted(taken)) or 'none'})")
    return builder(input_shape=input_shape, num_classes=num_classes, **kwargs)
