"""Tests of zscgan_tf.range_fitting and the fitted ranges of low-bit students."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import functools

import numpy as np
import pytest
import tf_keras

from zscgan_tf import distill, quantize, range_fitting
from zscgan_tf.config import DistillationConfig
from zscgan_tf.errors import UserError

from conftest import build_two_block_classifier

INPUT_SHAPE = (16, 16, 1)
NUM_CLASSES = 10
build_tiny_teacher = functools.partial(build_two_block_classifier, INPUT_SHAPE, NUM_CLASSES)


def random_inputs(seed=0, count=64):
    return np.random.default_rng(seed).standard_normal((count,) + INPUT_SHAPE).astype(np.float32)


def range_variable(layer, suffix):
    return [w for w in layer.weights if w.name.endswith(suffix)][0].numpy()


def squared_rounding_error(values, low, high, bits, narrow_range=False):
    return ((range_fitting.fake_quantize(values, low, high, bits, narrow_range) - values) ** 2).sum(0)


# ---------------------------------------------------------------------------- pure functions


def test_fake_quantize_keeps_grid_points_and_clips_outside():
    grid = np.array([0.0, 1.0, 2.0, 15.0])
    np.testing.assert_allclose(range_fitting.fake_quantize(grid, 0.0, 15.0, 4), grid)
    np.testing.assert_allclose(range_fitting.fake_quantize(np.array([-3.0, 0.4, 0.6, 20.0]), 0.0, 15.0, 4),
                               [0.0, 0.0, 1.0, 15.0])
    # Narrow range: 14 steps over [-7, 7], so integers stay and 7.4 clips to 7.
    np.testing.assert_allclose(range_fitting.fake_quantize(np.array([-7.0, 3.0, 7.4]), -7.0, 7.0, 4,
                                                           narrow_range=True), [-7.0, 3.0, 7.0])


def test_least_squares_clips_an_outlier_and_keeps_a_uniform_range():
    random = np.random.default_rng(0)
    with_outlier = np.concatenate([random.normal(0.0, 1.0, 5000), [40.0]])[:, None]
    factor = range_fitting.least_squares_factor(with_outlier, np.ones((1, 1)), np.array([with_outlier.min()]),
                                                np.array([40.0]), bits=4)
    assert factor[0] < 0.5
    fitted_error = squared_rounding_error(with_outlier, with_outlier.min() * factor, 40.0 * factor, 4)
    assert fitted_error < squared_rounding_error(with_outlier, with_outlier.min(), 40.0, 4)
    uniform = random.uniform(0.0, 6.0, 5000)[:, None]
    assert range_fitting.least_squares_factor(uniform, np.ones((1, 1)), np.array([0.0]), np.array([6.0]),
                                              bits=4)[0] >= 0.95


def test_histogram_range_agrees_with_fitting_the_values_themselves():
    values = np.abs(np.random.default_rng(1).standard_t(3, 20000))
    counts, _ = np.histogram(values, range_fitting.HISTOGRAM_BINS, range=(0.0, values.max()))
    low, high = range_fitting.histogram_range(counts, 0.0, float(values.max()), bits=4)
    direct = range_fitting.least_squares_factor(values[:, None], np.ones((1, 1)), np.array([0.0]),
                                                np.array([values.max()]), bits=4)[0]
    assert low == 0.0
    assert high == pytest.approx(direct * values.max(), rel=0.06)  # within a step of CLIP_FACTORS
    assert high < values.max()


# ---------------------------------------------------------------------------- students


def test_low_bit_weight_ranges_are_fitted_per_channel_and_8_bit_ones_stay_min_max():
    teacher = build_tiny_teacher()
    student, _ = quantize.quantize_student(teacher, quantize.QuantizationScheme.from_name("w4a4"))
    kernel = teacher.get_layer("conv_2").kernel.numpy().reshape(-1, 16)
    magnitude = np.abs(kernel).max(0)
    layer = student.get_layer("quant_conv_2")
    low, high = range_variable(layer, "kernel_min:0"), range_variable(layer, "kernel_max:0")
    np.testing.assert_allclose(low, -high)
    assert np.all(high <= magnitude + 1e-7)
    fitted_error = squared_rounding_error(kernel, low, high, 4, narrow_range=True)
    min_max_error = squared_rounding_error(kernel, -magnitude, magnitude, 4, narrow_range=True)
    assert np.all(fitted_error <= min_max_error + 1e-9) and np.any(fitted_error < min_max_error)
    # The first and last layers are 8-bit: TF-MOT's min/max weight ranges.
    first = student.get_layer("quant_conv_1")
    np.testing.assert_allclose(range_variable(first, "kernel_max:0"),
                               np.abs(teacher.get_layer("conv_1").kernel.numpy()).reshape(-1, 8).max(0), rtol=1e-6)


def test_only_quantizers_below_8_bits_are_fitted(monkeypatch):
    # Every fit halves the range here: an 8-bit layer's range halved too would show it was fitted.
    monkeypatch.setattr(range_fitting, "least_squares_factor",
                        lambda values, counts, low, high, bits, narrow_range=False: np.full(np.shape(low), 0.5))
    teacher = build_tiny_teacher()
    student, _ = quantize.quantize_student(teacher, quantize.QuantizationScheme.from_name("w4a4"))
    for name, channels, halved in (("conv_1", 8, False), ("conv_2", 16, True)):  # conv_1 is kept at 8 bits.
        magnitude = np.abs(teacher.get_layer(name).kernel.numpy()).reshape(-1, channels).max(0)
        np.testing.assert_allclose(range_variable(student.get_layer(f"quant_{name}"), "kernel_max:0"),
                                   magnitude * (0.5 if halved else 1.0), rtol=1e-6)


def test_fitted_activation_ranges_lie_inside_the_observed_ones_and_min_max_keeps_them():
    teacher = build_tiny_teacher()
    inputs = random_inputs()
    fitted, _ = quantize.quantize_student(teacher, quantize.QuantizationScheme.from_name("w4a4"),
                                          calibration_inputs=inputs)
    observed, _ = quantize.quantize_student(
        teacher, quantize.QuantizationScheme.from_name("w4a4", low_bit_ranges="min_max"), calibration_inputs=inputs)
    activations = tf_keras.Model(teacher.inputs, teacher.get_layer("relu_2").output)(inputs).numpy()
    observed_layer = observed.get_layer("quant_relu_2")
    assert range_variable(observed_layer, "output_max:0") == pytest.approx(activations.max())
    fitted_max = range_variable(fitted.get_layer("quant_relu_2"), "output_max:0")
    assert 0 < fitted_max < activations.max()
    # The 8-bit input quantizer keeps the observed range either way.
    assert range_variable(fitted.get_layer(index=1), "_max:0") == pytest.approx(inputs.max())


def test_fitted_ranges_reproduce_the_teacher_better_than_min_max():
    teacher = build_tiny_teacher()
    calibration, held_out = random_inputs(seed=0, count=256), random_inputs(seed=1, count=256)
    teacher_logits = teacher(held_out, training=False).numpy()

    def logit_error(low_bit_ranges):
        scheme = quantize.QuantizationScheme(4, 4, keep_first_and_last_at_8_bits=False, low_bit_ranges=low_bit_ranges)
        student, _ = quantize.quantize_student(teacher, scheme, calibration_inputs=calibration)
        return np.mean((student(held_out, training=False).numpy() - teacher_logits) ** 2)

    assert logit_error("mse") < logit_error("min_max")


def test_scheme_says_when_ranges_are_held_and_rejects_unknown_methods():
    assert quantize.QuantizationScheme.from_name("w4a4").holds_ranges_in_training
    assert quantize.QuantizationScheme.from_name("w4a8").holds_ranges_in_training
    assert not quantize.QuantizationScheme.from_name("w8a8").holds_ranges_in_training
    assert not quantize.QuantizationScheme.from_name("w4a4", low_bit_ranges="min_max").holds_ranges_in_training
    with pytest.raises(UserError, match="'percentile'"):
        quantize.QuantizationScheme.from_name("w4a4", low_bit_ranges="percentile")


def test_w8a8_student_is_the_same_whichever_low_bit_method():
    teacher = build_tiny_teacher()
    inputs = random_inputs()
    first, _ = quantize.quantize_student(teacher, quantize.QuantizationScheme(low_bit_ranges="mse"),
                                         calibration_inputs=inputs)
    second, _ = quantize.quantize_student(teacher, quantize.QuantizationScheme(low_bit_ranges="min_max"),
                                          calibration_inputs=inputs)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hold", [True, False])
def test_held_ranges_stay_put_while_the_student_trains(tmp_path, hold):
    teacher = build_tiny_teacher()
    inputs = random_inputs(count=128)
    labels = np.arange(128) % NUM_CLASSES
    scheme = quantize.QuantizationScheme.from_name("w4a4")
    student, _ = quantize.quantize_student(teacher, scheme, calibration_inputs=inputs)

    def ranges():
        return [w.numpy().copy() for w in student.weights if w.name.endswith(("_min:0", "_max:0"))]

    def kernels():
        return [w.numpy().copy() for w in student.trainable_weights if "kernel" in w.name]

    ranges_before, kernels_before = ranges(), kernels()
    distiller = distill.Distiller(teacher, student, None, NUM_CLASSES,
                                  DistillationConfig(steps=5, batch_size=32, learning_rate=1e-2), seed=0,
                                  real_data=(inputs, labels), hold_quantizer_ranges=hold)
    distiller.train(str(tmp_path), progress=False)
    assert any(not np.array_equal(a, b) for a, b in zip(kernels_before, kernels()))
    unchanged = [np.array_equal(a, b) for a, b in zip(ranges_before, ranges())]
    if hold:
        assert all(unchanged)
    else:
        assert not all(unchanged)  # TF-MOT moves them in training mode: why fitted ranges must be held.
