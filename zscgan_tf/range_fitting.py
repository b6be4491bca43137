"""Least-squares ranges for quantizers below 8 bits.

TF-MOT sets a quantizer's range to the observed minimum and maximum: the weights'
own extremes, and for activations the extremes of the batches it sees. At 8 bits that
costs little. At 4 bits a range stretched to reach a few outliers leaves 15 levels
for everything else: measured on the built-in MobileNetV2 Fashion-MNIST teacher, the
W4A4 student before any training scores 74.5% with min/max activation ranges
calibrated on generated samples and 83.2% with the ranges below (FP32 90.7%).

A range here is the observed one shrunk by the factor (from `CLIP_FACTORS`) that
gives the least squared rounding error, clipping included, over the values it
quantizes: per output channel for per-channel weights, over the calibration samples'
values (a histogram) for activations. Activation ranges keep zero inside, as TFLite
requires.

Fitted ranges must not move during QAT: TF-MOT recomputes weight ranges from the
weights' extremes and pulls activation ranges towards each batch's extremes whenever
the student runs with `training=True`, so a student with fitted ranges is trained in
inference mode (`distill.Distiller(hold_quantizer_ranges=True)`).
"""

from typing import Tuple

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras

from zscgan_tf import depthwise_quantizer

# Bit widths at and above this keep TF-MOT's min/max ranges (what TFLite's converter uses).
FITTED_BELOW_BITS = 8
# The observed range times each of these is tried; 1.0 keeps it.
CLIP_FACTORS = np.linspace(0.2, 1.0, 41)
# Histogram bins over an activation's observed range. Its bins are 1/128 of a 4-bit step
# wide, so the squared error computed at bin centres is within 1% of the exact one.
HISTOGRAM_BINS = 2048


def fake_quantize(values: np.ndarray, low, high, bits: int, narrow_range: bool = False) -> np.ndarray:
    """`values` rounded to the uniform grid of `bits` bits on [low, high], clipped to it.

    `low` and `high` broadcast against `values` (per-channel ranges). Narrow range drops
    the lowest level, as TF-MOT's symmetric weight quantizers do.
    """
    levels = 2 ** bits - (2 if narrow_range else 1)
    step = np.maximum((high - low) / levels, np.finfo(np.float32).tiny)
    return np.clip(np.round((values - low) / step), 0, levels) * step + low


def least_squares_factor(values: np.ndarray, counts: np.ndarray, low, high, bits: int,
                         narrow_range: bool = False) -> np.ndarray:
    """The factor of `CLIP_FACTORS` by which to shrink [low, high] for the least squared error.

    Args:
      values: (N, C) values, one column per independently quantized channel (C = 1 for
        a per-tensor range).
      counts: (N, C) or (N, 1) weight of each value (histogram counts; ones for raw values).
      low, high: (C,) observed ranges, low <= 0 <= high for activations.
      bits: the quantizer's width.
      narrow_range: as the quantizer.

    Returns:
      (C,) factors.
    """
    best_error = np.full(np.shape(high), np.inf)
    best_factor = np.ones(np.shape(high))
    for factor in CLIP_FACTORS:
        error = (counts * (fake_quantize(values, low * factor, high * factor, bits, narrow_range) - values) ** 2).sum(0)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_factor = np.where(better, factor, best_factor)
    return best_factor


def histogram_range(counts: np.ndarray, low: float, high: float, bits: int) -> Tuple[float, float]:
    """The least-squares range of an activation quantizer from a histogram of its values.

    Args:
      counts: `HISTOGRAM_BINS` counts over [low, high].
      low, high: the observed range, low <= 0 <= high.
      bits: the quantizer's width.

    Returns:
      (low, high) shrunk by the best factor.
    """
    edges = np.linspace(low, high, len(counts) + 1)
    centres = ((edges[:-1] + edges[1:]) / 2)[:, None]
    factor = float(least_squares_factor(centres, counts[:, None], np.array([low]), np.array([high]), bits)[0])
    return low * factor, high * factor


def fit_weight_ranges(student: tf_keras.Model) -> int:
    """Sets every weight quantizer below `FITTED_BELOW_BITS` to its least-squares range.

    Symmetric quantizers get [-r, r] with r the shrunk largest magnitude, per channel
    where the quantizer keeps one range per output channel (per channel of a depthwise kernel with
    `depthwise_quantizer`'s quantizer). Call it after
    `quantizer_ranges.initialize_weight_ranges`, and train the student with its ranges held.

    Returns:
      How many weight tensors were fitted.
    """
    fitted = 0
    for layer in student.layers:
        if not isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            continue
        # `_weight_vars` holds (weight, quantizer, range variables).
        for weight, quantizer, range_variables in layer._weight_vars:  # pylint: disable=protected-access
            bits = getattr(quantizer, "num_bits", None)
            if bits is None or bits >= FITTED_BELOW_BITS or not getattr(quantizer, "symmetric", False):
                continue
            values = weight.numpy()
            range_shape = range_variables["max_var"].shape
            channels = int(np.prod(range_shape)) if range_shape.rank else 1
            # A range per entry of the last axis, or per depthwise channel (kh, kw, C, M) -> C*M columns,
            # in the order `depthwise_quantizer` flattens them.
            per_depthwise_channel = isinstance(quantizer, depthwise_quantizer.DepthwisePerChannelWeightsQuantizer)
            if per_depthwise_channel and channels != depthwise_quantizer.range_count(values.shape):
                continue
            if not per_depthwise_channel and channels > 1 and channels != values.shape[-1]:
                continue  # A per-axis layout this code does not know; TF-MOT's ranges stay.
            columns = values.reshape(-1, channels)
            magnitude = np.abs(columns).max(0)
            factor = least_squares_factor(columns, np.ones((1, 1)), -magnitude, magnitude, bits,
                                          narrow_range=quantizer.narrow_range)
            limit = (magnitude * factor).astype(np.float32).reshape(range_shape)
            range_variables["min_var"].assign(-limit)
            range_variables["max_var"].assign(limit)
            fitted += 1
    return fitted
