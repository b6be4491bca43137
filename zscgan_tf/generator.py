"""Conditional generators G(noise, label) -> image in the teacher's input space.

The trunk is GDFQ's (ECCV 2020): the noise multiplied by a learned embedding of the
label, Dense to C x (H/4) x (W/4) and a normalisation, two x2 upsamplings each followed by a 3x3
convolution, normalisation and LeakyReLU(0.2), a 3x3 convolution to the image
channels, tanh. The two variants differ in the normalisation:

- `conditional_bn`: every normalisation is a conditional BN whose per-class scale and
  shift come from an embedding of the label (the default).
- `embedding`: plain BN; the label enters only through the noise (GDFQ's generator,
  the simpler variant for small datasets).

With `blur_sigma` > 0 the tanh output is low-pass filtered by a fixed Gaussian
(`GaussianBlur`) before it leaves the generator, so the generator cannot reach the
teacher through pixel-scale patterns: left free, it puts much of a class's evidence in
high spatial frequencies that real images hardly have, and a student distilled on such
samples learns little that holds on real images (see the W4A4 findings in docs/experiments.md).

The tanh output is mapped to pixels in [0, 255] and then through the teacher's
preprocessing by a fixed `InputSpaceMapping`, so samples land exactly in the range the
teacher reads. Resolutions not divisible by 4 are generated one step larger and
centre-cropped.
"""

import dataclasses
import math
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras.src.saving import serialization_lib

from zscgan_tf import model_files
from zscgan_tf.files import system_path
from zscgan_tf.errors import UserError, first_line
from zscgan_tf.preprocessing import MODES as PREPROCESSING_MODES
from zscgan_tf.preprocessing import HALF_PIXEL_RANGE, PIXEL_MAX, Preprocessing

VARIANTS = ("conditional_bn", "embedding")
LEAKY_RELU_SLOPE = 0.2
# Generator BN momentum: PyTorch's 0.1 update, so its moving statistics follow the
# generator closely enough to sample in inference mode.
GENERATOR_BN_MOMENTUM = 0.9
GENERATOR_BN_EPSILON = 0.8  # GDFQ's value: keeps early, near-constant feature maps from exploding.
# Each upsampling block doubles the height and width and halves the channels after the first (GDFQ's two).
UPSAMPLING_BLOCKS = 2
UPSAMPLING_FACTOR = 2 ** UPSAMPLING_BLOCKS
MIN_BASE_CHANNELS = 2 ** (UPSAMPLING_BLOCKS - 1)  # One channel left in the last block.
CONV_KERNEL_SIZE = 3
MIN_IMAGE_SIZE = 4
MAX_BLUR_SIGMA_FRACTION = 4  # The blur's sigma is at most a quarter of the smaller image side.
BLUR_RADIUS_IN_SIGMAS = 2  # The Gaussian kernel is cut at 2 sigma (radius at least one pixel).
# Two input-space maps are one when they agree to the float32 a saved generator holds them in.
STORED_MAP_RTOL = 1e-5
STORED_MAP_ATOL = 1e-6


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """Shape of a conditional generator.

    Attributes:
      num_classes: classes the teacher predicts (labels are 0..num_classes-1).
      image_shape: (height, width, channels) of the teacher's input.
      noise_dim: length of the Gaussian noise vector.
      base_channels: channels after the Dense layer and the first convolution; the
        second convolution has half as many.
      variant: one of `VARIANTS`.
      blur_sigma: standard deviation, in pixels, of the fixed Gaussian low-pass applied
        to every sample (`GaussianBlur`); 0 = none.
    """

    num_classes: int
    image_shape: Tuple[int, int, int]
    noise_dim: int = 128
    base_channels: int = 128
    variant: str = "conditional_bn"
    blur_sigma: float = 0.0

    def __post_init__(self):
        height, width, channels = self.image_shape
        if self.num_classes < 2:
            raise UserError(f"a generator needs at least 2 classes, got {self.num_classes}")
        if min(height, width) < MIN_IMAGE_SIZE or channels not in (1, 3):
            raise UserError(f"generator image shape must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} "
                            f"with 1 or 3 channels, got {tuple(self.image_shape)}")
        if self.noise_dim < 1:
            raise UserError(f"noise_dim must be positive, got {self.noise_dim}")
        if self.base_channels < MIN_BASE_CHANNELS:
            raise UserError(f"base_channels must be at least {MIN_BASE_CHANNELS} (each upsampling block after the "
                            f"first halves them), got {self.base_channels}")
        if self.variant not in VARIANTS:
            raise UserError(f"unknown generator variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        largest_sigma = min(height, width) / MAX_BLUR_SIGMA_FRACTION
        if not 0 <= self.blur_sigma <= largest_sigma:
            raise UserError(f"generator blur sigma (--generator_blur_sigma) must be between 0 and {largest_sigma:g} "
                            f"pixels for {height}x{width} images (a quarter of the smaller side), got "
                            f"{self.blur_sigma:g}")


@tf_keras.utils.register_keras_serializable(package="zscgan_tf")
class ConditionalBatchNormalization(tf_keras.layers.Layer):
    """BatchNormalization whose scale and shift are looked up per class from the label.

    Call on `[features, labels]`; `labels` are integer class ids of shape (batch,).
    """

    def __init__(self, num_classes, momentum=GENERATOR_BN_MOMENTUM, epsilon=GENERATOR_BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.momentum = momentum
        self.epsilon = epsilon
        self.normalization = tf_keras.layers.BatchNormalization(
            momentum=momentum, epsilon=epsilon, center=False, scale=False, name="normalization")

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.class_scale = self.add_weight(name="class_scale", shape=(self.num_classes, channels),
                                           initializer="ones")
        self.class_shift = self.add_weight(name="class_shift", shape=(self.num_classes, channels),
                                           initializer="zeros")
        self.normalization.build(input_shape[0])
        super().build(input_shape)

    def call(self, inputs, training=None):
        features, labels = inputs
        normalized = self.normalization(features, training=training)
        labels = tf.cast(labels, tf.int32)
        broadcast_shape = tf.concat([[-1], tf.ones([features.shape.rank - 2], tf.int32),
                                     [features.shape[-1]]], axis=0)
        scale = tf.reshape(tf.gather(self.class_scale, labels), broadcast_shape)
        shift = tf.reshape(tf.gather(self.class_shift, labels), broadcast_shape)
        return normalized * scale + shift

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "momentum": self.momentum,
                "epsilon": self.epsilon}


@tf_keras.utils.register_keras_serializable(package="zscgan_tf")
class InputSpaceMapping(tf_keras.layers.Layer):
    """Fixed per-channel affine map from tanh output in [-1, 1] to the teacher's input space."""

    def __init__(self, scale: Sequence[float], offset: Sequence[float], **kwargs):
        kwargs["trainable"] = False  # Fixed maps; a reloaded config says so too.
        super().__init__(**kwargs)
        self.scale = [float(v) for v in scale]
        self.offset = [float(v) for v in offset]

    def call(self, inputs):
        return inputs * tf.constant(self.scale, inputs.dtype) + tf.constant(self.offset, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@tf_keras.utils.register_keras_serializable(package="zscgan_tf")
class GaussianBlur(tf_keras.layers.Layer):
    """Fixed Gaussian low-pass filter of each channel, `sigma` in pixels; same output size.

    The kernel is normalised and cut at `BLUR_RADIUS_IN_SIGMAS` sigma; the image is
    mirrored at its edges rather than padded with zeros, so a uniform image (a plain
    background) comes out unchanged and the output stays within the input's range.
    """

    def __init__(self, sigma: float, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.sigma = float(sigma)
        self.radius = max(1, math.ceil(BLUR_RADIUS_IN_SIGMAS * self.sigma))

    def kernel(self, channels: int) -> np.ndarray:
        """The (2r+1, 2r+1, channels, 1) depthwise kernel."""
        offsets = np.arange(-self.radius, self.radius + 1, dtype=np.float64)
        weights = np.exp(-offsets ** 2 / (2 * self.sigma ** 2))
        weights /= weights.sum()
        return np.tile(np.outer(weights, weights)[:, :, None, None], (1, 1, channels, 1)).astype(np.float32)

    def call(self, inputs):
        radius = self.radius
        padded = tf.pad(inputs, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
        kernel = tf.constant(self.kernel(int(inputs.shape[-1])), inputs.dtype)
        return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}


@tf_keras.utils.register_keras_serializable(package="zscgan_tf")
class RoundRobinSplit(tf_keras.layers.Layer):
    """Samples `index`, `index + members`, `index + 2 members`, ... of a batch: member `index`'s share.

    A share that would be empty (a batch smaller than `members`) holds one row of zeros
    instead, which `RoundRobinMerge` drops: a convolution can't take an empty batch.
    """

    def __init__(self, members: int, index: int, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.members = int(members)
        self.index = int(index)

    def call(self, inputs):
        share = inputs[self.index::self.members]
        missing = tf.maximum(0, 1 - tf.shape(share)[0])
        return tf.concat([share, tf.zeros(tf.concat([[missing], tf.shape(share)[1:]], 0), share.dtype)], 0)

    def get_config(self):
        return {**super().get_config(), "members": self.members, "index": self.index}


@tf_keras.utils.register_keras_serializable(package="zscgan_tf")
class RoundRobinMerge(tf_keras.layers.Layer):
    """Puts the members' shares (from `RoundRobinSplit`) back in the order of `batch`, the first input."""

    def call(self, inputs):
        batch, shares = inputs[0], inputs[1:]
        total = tf.shape(batch)[0]
        positions = [tf.range(tf.minimum(index, total), total, len(shares)) for index in range(len(shares))]
        return tf.dynamic_stitch(positions, [share[:tf.shape(position)[0]]
                                             for share, position in zip(shares, positions)])


def pool_generators(members: Sequence[tf_keras.Model], name: str = "generator") -> tf_keras.Model:
    """One generator drawing sample i of every batch from member i mod len(members).

    Members trained apart (other seeds) reach the teacher's classes in different ways;
    a student distilled on their pooled samples does better than on any one member's
    (docs/experiments.md, "pooled generators"). Each member runs on its own share of the batch only.
    Members must have distinct names (their layer names are prefixed with them).
    """
    if len(members) < 2:
        raise ValueError(f"pooling needs at least 2 generators, got {len(members)}")
    noise = tf_keras.Input(tuple(members[0].inputs[0].shape[1:]), name="noise")
    label = tf_keras.Input((), dtype="int32", name="label")
    shares = []
    for index, member in enumerate(members):
        split_noise = RoundRobinSplit(len(members), index, name=f"{name}/noise_share{index + 1}")(noise)
        split_label = RoundRobinSplit(len(members), index, name=f"{name}/label_share{index + 1}")(label)
        shares.append(member([split_noise, split_label]))
    return tf_keras.Model([noise, label], RoundRobinMerge(name=f"{name}/merge")([noise, *shares]), name=name)


def pool_members(generator: tf_keras.Model) -> list:
    """The member generators of a pooled generator; [generator] for a single one."""
    members = [layer for layer in generator.layers if isinstance(layer, tf_keras.Model)]
    return members or [generator]


def input_space_affine(preprocessing: Preprocessing, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, offset) taking tanh output in [-1, 1] to the teacher's input range.

    tanh -> pixels = (t + 1) * 127.5 -> teacher = pixels * s + o, so
    teacher = t * 127.5 s + (127.5 s + o). Channel reversal needs no care: the last
    convolution learns whatever channel order is asked of it.
    """
    pixel_scale, pixel_offset = preprocessing.scale_and_offset(channels)
    return HALF_PIXEL_RANGE * pixel_scale, HALF_PIXEL_RANGE * pixel_scale + pixel_offset


def build_generator(spec: GeneratorSpec, preprocessing: Preprocessing, name: str = "generator") -> tf_keras.Model:
    """Builds the functional conditional generator described by `spec`.

    Args:
      spec: the generator's shape.
      preprocessing: the teacher's preprocessing; fixes the output range.
      name: model name; layer names are prefixed with it.

    Returns:
      A `tf_keras.Model` with inputs `[noise (batch, noise_dim) float32, label (batch,) int32]`
      and output (batch, height, width, channels) in the teacher's input space.
    """
    height, width, channels = spec.image_shape
    start_height = math.ceil(height / UPSAMPLING_FACTOR)
    start_width = math.ceil(width / UPSAMPLING_FACTOR)
    noise = tf_keras.Input((spec.noise_dim,), name="noise")
    label = tf_keras.Input((), dtype="int32", name="label")
    conditional = spec.variant == "conditional_bn"

    def normalize(features, layer_name):
        if conditional:
            return ConditionalBatchNormalization(spec.num_classes, name=f"{name}/{layer_name}")([features, label])
        return tf_keras.layers.BatchNormalization(momentum=GENERATOR_BN_MOMENTUM, epsilon=GENERATOR_BN_EPSILON,
                                                  name=f"{name}/{layer_name}")(features)

    # Both variants multiply the noise by a label embedding: it makes classes differ from
    # the first step. Conditional BN alone starts every class identical (scale 1, shift 0)
    # and was seen to stall on a MobileNetV2 teacher (30% of samples classified as asked
    # after 1,500 steps, against 100% within 200 steps with the embedding as well).
    label_embedding = tf_keras.layers.Embedding(spec.num_classes, spec.noise_dim,
                                                name=f"{name}/label_embedding")(label)
    features = tf_keras.layers.Multiply(name=f"{name}/condition")([noise, label_embedding])
    features = tf_keras.layers.Dense(spec.base_channels * start_height * start_width, name=f"{name}/project")(features)
    features = tf_keras.layers.Reshape((start_height, start_width, spec.base_channels), name=f"{name}/reshape")(features)
    features = normalize(features, "bn0")
    for block in range(1, UPSAMPLING_BLOCKS + 1):
        block_channels = spec.base_channels // 2 ** (block - 1)
        features = tf_keras.layers.UpSampling2D(2, name=f"{name}/upsample{block}")(features)
        features = tf_keras.layers.Conv2D(block_channels, CONV_KERNEL_SIZE, padding="same",
                                          name=f"{name}/conv{block}")(features)
        features = normalize(features, f"bn{block}")
        features = tf_keras.layers.LeakyReLU(LEAKY_RELU_SLOPE, name=f"{name}/lrelu{block}")(features)
    features = tf_keras.layers.Conv2D(channels, CONV_KERNEL_SIZE, padding="same", name=f"{name}/to_image")(features)
    extra_height = start_height * UPSAMPLING_FACTOR - height
    extra_width = start_width * UPSAMPLING_FACTOR - width
    if extra_height or extra_width:
        features = tf_keras.layers.Cropping2D(
            ((extra_height // 2, extra_height - extra_height // 2), (extra_width // 2, extra_width - extra_width // 2)),
            name=f"{name}/crop")(features)
    features = tf_keras.layers.Activation("tanh", name=f"{name}/tanh")(features)
    if spec.blur_sigma > 0:
        features = GaussianBlur(spec.blur_sigma, name=f"{name}/blur")(features)
    scale, offset = input_space_affine(preprocessing, channels)
    image = InputSpaceMapping(scale, offset, name=f"{name}/to_teacher_input")(features)
    return tf_keras.Model([noise, label], image, name=name)


def load_generator(path) -> tf_keras.Model:
    """Loads a generator saved by this package (a run's `generator.keras`).

    It takes `[noise (N, noise_dim) float32, label (N,) int32]` and returns N images in the
    teacher's input space, as `build_generator`'s do:

        noise = tf.random.normal([16, generator.inputs[0].shape[1]])
        images = generator([noise, tf.range(16) % num_classes], training=False)

    It loads in Keras safe mode, HDF5 files too: a generator of this package holds no
    serialized Python and names no module outside Keras, TensorFlow and this package, and
    a file that does (a Lambda layer's code, or a module Keras would import, either of
    which would run as it loads: a run directory from someone else) is refused.

    Raises:
      UserError: for a missing or unreadable file, a file holding serialized Python or
        naming another module, or a model that is not a generator (a classifier takes
        images, not noise and a label).
    """
    path = system_path(os.fspath(path))  # TensorFlow's loader took "link/.." as text.
    if not os.path.exists(path):
        raise UserError(f"generator {path!r} does not exist")
    try:
        # Without a scope, tf_keras runs the Lambda code of an HDF5 file (a generator.keras may be one).
        with serialization_lib.SafeModeScope(safe_mode=True), model_files.modules_outside_keras_refused():
            generator = tf_keras.models.load_model(path, compile=False, custom_objects={
                "ConditionalBatchNormalization": ConditionalBatchNormalization,
                "InputSpaceMapping": InputSpaceMapping, "GaussianBlur": GaussianBlur,
                "RoundRobinSplit": RoundRobinSplit, "RoundRobinMerge": RoundRobinMerge})
    except model_files.ModuleImportRefused as error:
        raise UserError(f"generator {path!r} names Python module {error.module!r} for Keras to import, which no "
                        "generator of zscgan_tf does, and was not loaded: importing it would run its code") from error
    except (OSError, ValueError, TypeError) as error:
        if model_files.refused_as_python_code(error):
            raise UserError(f"generator {path!r} holds serialized Python code (a Lambda layer), which no generator "
                            "of zscgan_tf has, and was not loaded: that code would run as it loads") from error
        raise UserError(f"cannot load generator {path!r}: "
                        f"{model_files.not_a_keras_archive(path) or first_line(error)}") from error
    if [tuple(tensor.shape[1:]) for tensor in generator.inputs][1:] != [()]:
        shapes = ", ".join(str(tuple(tensor.shape[1:])) for tensor in generator.inputs)
        raise UserError(f"{path!r} is not a generator saved by this package: it takes {shapes}, not noise and a "
                        "class label (a classifier?); pass a run's generator.keras")
    return generator


def input_space(generator: tf_keras.Model) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The per-channel (scale, offset) of the `InputSpaceMapping` a generator ends in (a pool's
    first member's: all map alike), which fixes the teacher input space it was trained for;
    None for a model without one."""
    for member in pool_members(generator):
        for layer in member.layers:
            if isinstance(layer, InputSpaceMapping):
                return np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
    return None


def preprocessing_of_input_space(scale: np.ndarray, offset: np.ndarray) -> Preprocessing:
    """The preprocessing whose input space `input_space_affine` maps onto with (`scale`,
    `offset`): a named mode where one does, else `custom` with the mean and std it implies."""
    channels = len(scale)
    for mode in (mode for mode in PREPROCESSING_MODES if mode != "custom"):
        if _same_map(input_space_affine(Preprocessing(mode), channels), (scale, offset)):
            return Preprocessing(mode)
    # teacher = t * 127.5 s + (127.5 s + o), with s = 1 / (255 std) and o = -mean / std.
    pixel_scale, pixel_offset = scale / HALF_PIXEL_RANGE, offset - scale
    std = 1.0 / (PIXEL_MAX * pixel_scale)
    mean = -pixel_offset * std
    if np.allclose(mean, mean[0]) and np.allclose(std, std[0]):
        mean, std = mean[:1], std[:1]
    return Preprocessing("custom", mean=tuple(np.round(mean, 6) + 0.0), std=tuple(np.round(std, 6)))  # No -0.


def same_input_space(generator: tf_keras.Model, preprocessing: Preprocessing, channels: int) -> Optional[bool]:
    """Whether `generator` was trained for a teacher reading `preprocessing` (its samples land in
    that input space); None when it does not say (no `InputSpaceMapping`)."""
    mapping = input_space(generator)
    if mapping is None:
        return None
    return _same_map(input_space_affine(preprocessing, channels), mapping)


def _same_map(first: Tuple[np.ndarray, np.ndarray], second: Tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two per-channel (scale, offset) maps are one, to the float32 they were stored in."""
    return bool(np.allclose(np.concatenate(first), np.concatenate(second), rtol=STORED_MAP_RTOL, atol=STORED_MAP_ATOL))

