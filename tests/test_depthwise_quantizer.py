"""Tests of per-channel depthwise kernels below 8 bits (`QuantizationScheme.depthwise_per_channel`)."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from zscgan_tf import benchmark_config, depthwise_quantizer, quantization_stages, quantize, range_fitting
from zscgan_tf.errors import UserError

INPUT_SHAPE = (12, 12, 1)
NUM_CLASSES = 5
# MobileNetV2's layout in small: conv, depthwise + BN + ReLU6, pointwise conv + BN + ReLU6, a second depthwise
# (+ BN + ReLU6) with a depth multiplier of 2 (C*M = 12 channels), pooling, Dense. The conv and the Dense stay at
# 8 bits.
DEPTHWISE_CHANNELS = {"depthwise_1": 8, "depthwise_2": 12}


def build_depthwise_teacher():
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input(INPUT_SHAPE, name="image")
    x = tf_keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_1")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn_1")(x)
    x = tf_keras.layers.ReLU(6.0, name="relu_1")(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise_1")(x)
    x = tf_keras.layers.BatchNormalization(name="bn_2")(x)
    x = tf_keras.layers.ReLU(6.0, name="relu_2")(x)
    x = tf_keras.layers.Conv2D(6, 1, use_bias=False, name="pointwise")(x)
    x = tf_keras.layers.BatchNormalization(name="bn_3")(x)
    x = tf_keras.layers.ReLU(6.0, name="relu_3")(x)
    x = tf_keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False, name="depthwise_2")(x)
    x = tf_keras.layers.BatchNormalization(name="bn_4")(x)
    x = tf_keras.layers.ReLU(6.0, name="relu_4")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    teacher = tf_keras.Model(inputs, outputs)
    # Channels of very different spreads, as a trained depthwise layer has: per-tensor ranges waste levels.
    for name in DEPTHWISE_CHANNELS:
        layer = teacher.get_layer(name)
        kernel = layer.get_weights()[0]
        scales = np.geomspace(0.05, 2.0, kernel.shape[2] * kernel.shape[3]).reshape(kernel.shape[2:])
        layer.set_weights([kernel * scales] + layer.get_weights()[1:])
    return teacher


def calibration_inputs():
    return np.random.default_rng(0).standard_normal((32,) + INPUT_SHAPE).astype(np.float32)


def student_of(scheme_name, **options):
    scheme = quantize.QuantizationScheme.from_name(scheme_name, **options)
    return quantize.quantize_student(build_depthwise_teacher(), scheme, calibration_inputs=calibration_inputs())[0]


def kernel_quantization(student, name):
    """(kernel, quantizer, range variables) of depthwise layer `name`."""
    (kernel, quantizer, ranges), = student.get_layer(f"quant_{name}")._weight_vars  # pylint: disable=protected-access
    return kernel, quantizer, ranges


def test_depthwise_kernels_get_a_fitted_4_bit_range_per_channel():
    student = student_of("w4a4", depthwise_per_channel=True)
    for name, channels in DEPTHWISE_CHANNELS.items():
        kernel, quantizer, ranges = kernel_quantization(student, name)
        assert isinstance(quantizer, depthwise_quantizer.DepthwisePerChannelWeightsQuantizer)
        assert quantizer.num_bits == 4
        low, high = ranges["min_var"].numpy(), ranges["max_var"].numpy()
        assert low.shape == high.shape == (channels,)
        np.testing.assert_array_equal(low, -high)
        # Each channel's least-squares range, fitted from that channel's taps alone.
        columns = kernel.numpy().reshape(-1, channels)
        magnitude = np.abs(columns).max(0)
        factor = range_fitting.least_squares_factor(columns, np.ones((1, 1)), -magnitude, magnitude, 4,
                                                    narrow_range=True)
        np.testing.assert_allclose(high, magnitude * factor, rtol=1e-6)
        assert high.max() / high.min() > 10  # The channels' spreads, not one shared range.
        # Each channel rounded to its own grid of 15 levels (narrow range: -7..7 steps).
        quantized = quantizer(kernel, False, weights=ranges).numpy().reshape(-1, channels)
        steps = quantized / (high / 7)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.abs(np.round(steps)).max() <= 7
        assert all(len(np.unique(np.round(steps[:, channel]))) <= 15 for channel in range(channels))


def test_off_depthwise_kernels_keep_tfmot_one_range():
    for options in ({}, {"depthwise_per_channel": False}):
        student = student_of("w4a4", **options)
        for name in DEPTHWISE_CHANNELS:
            kernel, quantizer, ranges = kernel_quantization(student, name)
            assert not isinstance(quantizer, depthwise_quantizer.DepthwisePerChannelWeightsQuantizer)
            assert ranges["max_var"].shape == (kernel.shape[-1],)  # The depth multiplier: 1 or 2 ranges.


def test_off_and_per_tensor_schemes_are_unchanged_and_w8a8_ignores_the_option():
    inputs = calibration_inputs()
    off = student_of("w4a4")
    on = student_of("w4a4", depthwise_per_channel=True)
    # Only the depthwise kernels' quantizers differ: same layers, and the conv kernels' ranges are equal.
    def wrapped(student):
        return [layer.name for layer in student.layers if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)]

    assert wrapped(off) == wrapped(on)
    for name in ("conv_1", "pointwise"):
        np.testing.assert_array_equal(kernel_quantization(off, name)[2]["max_var"].numpy(),
                                      kernel_quantization(on, name)[2]["max_var"].numpy())
    assert not np.allclose(off(inputs, training=False), on(inputs, training=False))
    per_tensor = student_of("w4a4", per_channel=False, depthwise_per_channel=True)  # Per-tensor weights win.
    assert kernel_quantization(per_tensor, "depthwise_1")[2]["max_var"].shape == ()
    w8a8_off, w8a8_on = student_of("w8a8"), student_of("w8a8", depthwise_per_channel=True)
    for name in DEPTHWISE_CHANNELS:
        quantizers = [type(kernel_quantization(student, name)[1]) for student in (w8a8_off, w8a8_on)]
        assert quantizers[0] is quantizers[1]
    assert [weight.shape for weight in w8a8_off.weights] == [weight.shape for weight in w8a8_on.weights]
    np.testing.assert_array_equal(w8a8_off(inputs, training=False), w8a8_on(inputs, training=False))


def test_a_per_channel_depthwise_student_saves_loads_and_trains(tmp_path):
    student = student_of("w4a4", depthwise_per_channel=True)
    inputs = calibration_inputs()
    path = str(tmp_path / "student.h5")
    student.save(path)
    loaded = quantization_stages.load_student(path)
    np.testing.assert_allclose(loaded(inputs, training=False), student(inputs, training=False), rtol=1e-5, atol=1e-6)
    assert isinstance(kernel_quantization(loaded, "depthwise_1")[1],
                      depthwise_quantizer.DepthwisePerChannelWeightsQuantizer)
    kernel, _, ranges = kernel_quantization(student, "depthwise_1")
    before, held = kernel.numpy(), ranges["max_var"].numpy()
    # QAT with held ranges (`distill.Distiller(hold_quantizer_ranges=True)`): the kernel trains, its ranges stay.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(student(inputs, training=False) ** 2)
    gradient = tape.gradient(loss, kernel)
    assert gradient is not None and np.any(gradient.numpy())
    tf_keras.optimizers.SGD(0.1).apply_gradients([(gradient, kernel)])
    assert not np.array_equal(before, kernel.numpy())
    np.testing.assert_array_equal(ranges["max_var"].numpy(), held)
    assert ranges["max_var"].shape == (DEPTHWISE_CHANNELS["depthwise_1"],)


def test_the_option_is_validated_and_names_the_benchmark_rows_only_when_on_below_8_bits():
    with pytest.raises(UserError, match="depthwise_per_channel"):
        quantize.QuantizationScheme(depthwise_per_channel="yes")
    off = benchmark_config.BenchmarkConfig(low_bit_ranges="mse")
    on = benchmark_config.BenchmarkConfig(low_bit_ranges="mse", depthwise_per_channel=True)
    assert off.low_bit_range_settings("w4a4") == {"low_bit_ranges": "mse"}  # Rows cached before stay valid.
    assert on.low_bit_range_settings("w4a4") == {"low_bit_ranges": "mse", "depthwise_per_channel": True}
    assert on.low_bit_range_settings("w8a8") == off.low_bit_range_settings("w8a8") == {}
    assert on.quantization_scheme("w4a4").depthwise_per_channel
    assert on.recorded()["depthwise_per_channel"] is True
    assert isinstance(depthwise_quantizer.DepthwisePerChannelQuantizeConfig(num_bits_weight=4).weight_quantizer,
                      tfmot.quantization.keras.quantizers.LastValueQuantizer)
