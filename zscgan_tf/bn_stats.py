"""BatchNorm statistics taps: what the teacher remembers of its data, and what a batch shows.

Every BatchNormalization layer of a trained teacher stores the running mean and
variance of its input over the training data. The generator is trained so that the
same statistics, measured on its samples, match them. A `BatchNormStatisticsTap` sits
on a BN layer's input and returns both: the batch's per-channel mean and (biased)
variance, and the layer's stored moving mean and variance, read from the layer's own
variables at call time (never copied, so they can't go stale).

`build_statistics_model` builds, once, one functional multi-output model from the
teacher: its logits followed by one tap output per BN layer, BN layers found by type.
"""

import dataclasses
import logging
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class LayerStatistics:
    """Per-channel statistics of one BN layer's input.

    All four tensors have shape (channels,).
    """

    batch_mean: tf.Tensor
    batch_variance: tf.Tensor
    moving_mean: tf.Tensor
    moving_variance: tf.Tensor


class _LayerReference:
    """Holds a layer without Keras tracking it, so taps don't re-own the teacher's weights."""

    def __init__(self, layer):
        self.layer = layer


@tf_keras.utils.register_keras_serializable(package="zscgan_tf")
class BatchNormStatisticsTap(tf_keras.layers.Layer):
    """Reads a BatchNormalization layer's moving statistics beside its input's batch statistics.

    Call it on the BN layer's input tensor. It returns a tensor of shape (4, channels):
    batch mean, batch variance (biased, as BN uses), moving mean, moving variance.

    Args:
      batchnorm_layer: the `tf_keras.layers.BatchNormalization` layer to read.
    """

    def __init__(self, batchnorm_layer=None, **kwargs):
        kwargs["trainable"] = False  # Fixed maps; a reloaded config says so too.
        super().__init__(**kwargs)
        if batchnorm_layer is not None and not isinstance(batchnorm_layer, tf_keras.layers.BatchNormalization):
            raise ValueError(f"expected a BatchNormalization layer, got {type(batchnorm_layer).__name__}")
        self._source = _LayerReference(batchnorm_layer)

    @property
    def batchnorm_layer(self):
        return self._source.layer

    def call(self, inputs):
        layer = self.batchnorm_layer
        if layer is None:
            raise ValueError("BatchNormStatisticsTap was created without a BatchNormalization layer")
        inputs = tf.cast(inputs, tf.float32)
        batch_mean, batch_variance = tf.nn.moments(inputs, axes=reduction_axes(layer, inputs.shape.rank))
        moving_mean = tf.reshape(tf.cast(layer.moving_mean, tf.float32), tf.shape(batch_mean))
        moving_variance = tf.reshape(tf.cast(layer.moving_variance, tf.float32), tf.shape(batch_mean))
        return tf.stack([batch_mean, batch_variance, moving_mean, moving_variance])

    def compute_output_shape(self, input_shape):
        channels = 1
        for axis in self.batchnorm_layer.axis:
            channels *= input_shape[axis]
        return tf.TensorShape([4, channels])


def batchnorm_layers(model) -> List[tf_keras.layers.BatchNormalization]:
    """All BatchNormalization layers of `model`, in layer order, found by type.

    Raises:
      UserError: if a BN layer sits inside a nested model (taps need the outer graph)
        or is called more than once.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            if any(isinstance(inner, tf_keras.layers.BatchNormalization) for inner in layer.submodules):
                raise UserError(
                    f"the teacher nests model {layer.name!r}, which holds BatchNormalization layers; "
                    "flatten it first (flattening.flat_inference_model; load_teacher does)")
            continue
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            if len(layer.inbound_nodes) != 1:
                raise UserError(f"BatchNormalization layer {layer.name!r} is shared ({len(layer.inbound_nodes)} calls); "
                                "each BN layer must be used once")
            found.append(layer)
    return found


def build_statistics_model(teacher) -> tf_keras.Model:
    """One functional model: teacher input -> [teacher output, tap(BN_1 input), tap(BN_2 input), ...].

    Args:
      teacher: a functional or Sequential tf_keras classifier with a single input.

    Returns:
      A `tf_keras.Model` sharing the teacher's layers and variables. Its first output is
      the teacher's output; output 1 + i is the (4, channels) tap of BN layer i.

    Raises:
      UserError: if the teacher has no BatchNormalization layer.
    """
    layers = batchnorm_layers(teacher)
    if not layers:
        raise UserError("the teacher has no BatchNormalization layer; ZS-CGAN needs the BN statistics it stores")
    taps = [BatchNormStatisticsTap(layer, name=f"bn_statistics_tap/{layer.name}")(layer.input) for layer in layers]
    return tf_keras.Model(teacher.inputs, [teacher.output] + taps, name=f"{teacher.name}_with_bn_statistics")


def split_statistics(tap_outputs: Sequence[tf.Tensor]) -> List[LayerStatistics]:
    """Turns the statistics model's tap outputs (each (4, channels)) into `LayerStatistics`."""
    return [LayerStatistics(tap[0], tap[1], tap[2], tap[3]) for tap in tap_outputs]


# How the BN-statistics loss weighs its layers (`LossConfig.bn_layer_weighting`).
BN_LAYER_WEIGHTINGS = ("uniform", "noise_floor")


def batchnorm_input_shapes(model, image_shape: Sequence[int]) -> List[Tuple[int, ...]]:
    """Each BN layer's input shape (batch left out) when `model` reads images of `image_shape`.

    Read from the graph; a teacher that accepts any image size is run once on a blank
    image of `image_shape` to fix its layers' spatial sizes.
    """
    layers = batchnorm_layers(model)
    shapes = [tuple(layer.input_shape[1:]) for layer in layers]
    if all(None not in shape for shape in shapes):
        return shapes
    probe = tf_keras.Model(model.inputs, [layer.input for layer in layers])
    outputs = tf.nest.flatten(probe(tf.zeros((1, *image_shape)), training=False))
    return [tuple(int(size) for size in output.shape[1:]) for output in outputs]


def finite_batch_noise_floor(input_shape: Sequence[int], batch_size: int) -> float:
    """About the Gaussian KL (summed over channels) a batch scores by chance at a BN layer.

    The mean and variance of `batch_size * positions` values drawn from a channel's own
    stored Gaussian miss it by a KL of about 1 / (batch_size * positions), so a batch of
    the very data the teacher was trained on scores about channels / (batch_size *
    positions), where positions is the layer's spatial size (H * W; 1 for a dense input).
    It follows from the layer's input shape (batch left out) alone.
    """
    positions = 1
    for size in input_shape[:-1]:
        positions *= int(size)
    return int(input_shape[-1]) / (batch_size * positions)


def bn_layer_weights(model, weighting: str, batch_size: int, image_shape: Sequence[int]) -> Optional[List[float]]:
    """Weights of `model`'s BN layers (in `batchnorm_layers` order) in the BN-statistics loss.

    Args:
      model: the teacher.
      weighting: `uniform` (every layer 1: returns None) or `noise_floor`: each layer
        1 / (1 + its `finite_batch_noise_floor`), so that layers whose batch statistics are
        mostly chance (few positions, many channels: the last blocks of a network at low
        resolution) pull less than those where a batch says something about the data.
      batch_size: samples per generator batch.
      image_shape: (height, width, channels) of the images the teacher reads.

    Raises:
      ValueError: for an unknown weighting.
    """
    if weighting not in BN_LAYER_WEIGHTINGS:
        raise ValueError(f"unknown BN layer weighting {weighting!r}; expected one of {BN_LAYER_WEIGHTINGS}")
    if weighting == "uniform":
        return None
    return [1.0 / (1.0 + finite_batch_noise_floor(shape, batch_size))
            for shape in batchnorm_input_shapes(model, image_shape)]


def reduction_axes(layer: tf_keras.layers.BatchNormalization, rank: int) -> List[int]:
    """The axes a BN layer averages over for an input of `rank`: all but its channel axes."""
    channel_axes = {axis % rank for axis in layer.axis}
    return [axis for axis in range(rank) if axis not in channel_axes]


def reestimate_batchnorm_statistics(model: tf_keras.Model, images: np.ndarray, batch_size: int,
                                    settled: Optional[Callable[[int, int], None]] = None) -> None:
    """Sets every BN layer's moving mean and variance to the exact moments of its input.

    The moments are those of the layer's input over all of `images` when the model
    runs in inference mode, i.e. the input the layer sees once deployed, whose
    normalization depends on the statistics of the BN layers before it. Layers are
    therefore settled in rounds: each round measures, in one pass, every BN layer whose
    upstream BN layers are all settled. Means and variances are merged across batches
    exactly (Chan et al.'s parallel algorithm, in float64); the variance is the
    population variance, which is what inference-mode BN divides by. Only the moving
    statistics change: weights, momenta and the optimizer are untouched.

    Args:
      model: a flat functional model; BN layers are found by type (`batchnorm_layers`).
      images: preprocessed inputs, shape (N,) + the model's input shape.
      batch_size: images per forward pass.
      settled: called after each round as `settled(done, total)`: how many BN layers are
        settled so far, out of how many, for a progress line (MobileNetV2's 52 layers take
        half a minute on 4,096 images).

    Raises:
      ValueError: if the images do not fit the model or `batch_size` is not positive.
      UserError: if BN layers sit in a nested model or are shared (see `batchnorm_layers`).
    """
    images = np.asarray(images, np.float32)
    expected_shape = tuple(model.input_shape[1:])
    if images.ndim != len(expected_shape) + 1 or any(
            expected not in (None, got) for expected, got in zip(expected_shape, images.shape[1:])):
        raise ValueError(f"images of shape {images.shape} do not fit the model input {model.input_shape}")
    if images.shape[0] < 1:
        raise ValueError("BN statistics need at least one image")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    pending = batchnorm_layers(model)
    upstream = {id(layer): {id(other) for other in tf_keras.Model(model.inputs, layer.input).layers}
                for layer in pending}
    # Each round traces its own tap model once, by design; TensorFlow's frequent-retracing
    # warning counts traces per source function, not per tf.function, and would cry wolf.
    tensorflow_logger = tf.get_logger()
    saved_level = tensorflow_logger.level
    tensorflow_logger.setLevel(logging.ERROR)
    total = len(pending)
    try:
        while pending:
            pending_ids = {id(layer) for layer in pending}
            ready = [layer for layer in pending if not upstream[id(layer)] & pending_ids]
            _set_moments_from_inputs(model, ready, images, batch_size)
            pending = [layer for layer in pending if layer not in ready]
            if settled is not None:
                settled(total - len(pending), total)
    finally:
        tensorflow_logger.setLevel(saved_level)


def _set_moments_from_inputs(model, layers, images: np.ndarray, batch_size: int) -> None:
    taps = tf_keras.Model(model.inputs, [layer.input for layer in layers])

    @tf.function(input_signature=[tf.TensorSpec((None,) + tuple(images.shape[1:]), tf.float32)], autograph=False)
    def batch_moments(batch):
        outputs = taps(batch, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        moments = []
        for layer, output in zip(layers, outputs):
            output = tf.cast(output, tf.float32)
            axes = reduction_axes(layer, output.shape.rank)
            mean = tf.reduce_mean(output, axis=axes)
            sum_of_squares = tf.reduce_sum(tf.square(output - tf.reduce_mean(output, axis=axes, keepdims=True)), axis=axes)
            count = tf.cast(tf.size(output, out_type=tf.int64) // tf.size(mean, out_type=tf.int64), tf.float64)
            moments.append((count, mean, sum_of_squares))
        return moments

    totals = [None] * len(layers)
    for start in range(0, images.shape[0], batch_size):
        for index, (count, mean, sum_of_squares) in enumerate(batch_moments(images[start:start + batch_size])):
            count = float(count.numpy())
            mean = mean.numpy().astype(np.float64)
            sum_of_squares = sum_of_squares.numpy().astype(np.float64)
            if totals[index] is None:
                totals[index] = (count, mean, sum_of_squares)
                continue
            total_count, total_mean, total_squares = totals[index]
            merged_count = total_count + count
            delta = mean - total_mean
            totals[index] = (merged_count, total_mean + delta * (count / merged_count),
                             total_squares + sum_of_squares + delta ** 2 * (total_count * count / merged_count))
    for layer, (count, mean, sum_of_squares) in zip(layers, totals):
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign((sum_of_squares / count).astype(np.float32))
