"""Tests of zscgan_tf.quantizer_ranges: a student's starting ranges, from its teacher."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import functools

import numpy as np
import pytest
import tf_keras

from zscgan_tf import quantize, quantizer_ranges

from conftest import build_merge_layer_classifier, build_two_block_classifier

INPUT_SHAPE = (16, 16, 1)
NUM_CLASSES = 10

build_tiny_teacher = functools.partial(build_two_block_classifier, INPUT_SHAPE, NUM_CLASSES)


def random_inputs(seed=0, count=64):
    return np.random.default_rng(seed).standard_normal((count,) + INPUT_SHAPE).astype(np.float32)


def range_of(layer, suffix_min, suffix_max):
    minimum = [w for w in layer.weights if w.name.endswith(suffix_min)][0].numpy()
    maximum = [w for w in layer.weights if w.name.endswith(suffix_max)][0].numpy()
    return float(minimum), float(maximum)


def test_uncalibrated_input_range_is_tfmot_default_and_calibration_sets_it():
    teacher = build_tiny_teacher()
    inputs = random_inputs()
    student, _ = quantize.quantize_student(teacher)
    # TF-MOT's input quantizer starts at [0, 0]: every input is zeroed until training.
    zeroed = student(inputs, training=False).numpy()
    np.testing.assert_allclose(zeroed, np.broadcast_to(zeroed[:1], zeroed.shape))
    unmatched = quantizer_ranges.calibrate_activation_ranges(student, teacher, inputs)
    assert unmatched == ()
    minimum, maximum = range_of(student.get_layer(index=1), "_min:0", "_max:0")
    assert minimum == pytest.approx(inputs.min())
    assert maximum == pytest.approx(inputs.max())


def test_a_range_that_does_not_reach_zero_is_stretched_to_it():
    # Inputs in [2, 5]: the range is [0, 5], so that zero is exactly representable (as TFLite
    # requires of a zero point) rather than [2, 5] moved by FakeQuant's nudging.
    teacher = build_tiny_teacher()
    inputs = np.random.default_rng(2).uniform(2.0, 5.0, (32,) + INPUT_SHAPE).astype(np.float32)
    student, _ = quantize.quantize_student(teacher)
    quantizer_ranges.calibrate_activation_ranges(student, teacher, inputs)
    minimum, maximum = range_of(student.get_layer(index=1), "_min:0", "_max:0")
    assert minimum == 0.0 and maximum == pytest.approx(inputs.max())


def test_model_input_read_by_two_layers_is_calibrated_and_widened():
    # TF-MOT's QuantizeLayer then has calls on its intermediate models' InputLayers too.
    # It used to go unrecognised: its range stayed [0, 0] and the student saw only zeros.
    teacher = build_merge_layer_classifier()
    inputs = np.random.default_rng(0).standard_normal((64, 8, 8, 1)).astype(np.float32)
    student, _ = quantize.quantize_student(teacher, calibration_inputs=inputs)
    input_quantizer = student.get_layer(index=1)
    assert len(quantizer_ranges.inbound_layers(input_quantizer)) > 1
    assert range_of(input_quantizer, "_min:0", "_max:0") == (
        pytest.approx(inputs.min()), pytest.approx(inputs.max()))
    teacher_logits = teacher(inputs, training=False).numpy()
    student_logits = student(inputs, training=False).numpy()
    assert np.abs(student_logits - teacher_logits).max() <= 0.05 * np.abs(teacher_logits).max()
    assert quantizer_ranges.cover_model_input_range(student, -5.0, 5.0)
    assert range_of(input_quantizer, "_min:0", "_max:0") == (-5.0, 5.0)


def test_activation_ranges_are_the_teachers_tensor_extremes_and_contain_zero():
    teacher = build_tiny_teacher()
    inputs = random_inputs(seed=1)
    student, _ = quantize.quantize_student(teacher)
    quantizer_ranges.calibrate_activation_ranges(student, teacher, inputs, batch_size=7)
    # relu_2's output quantizer: [0, the largest ReLU output over all batches].
    relu_output = tf_keras.Model(teacher.inputs, teacher.get_layer("relu_2").output)(inputs).numpy()
    low, high = range_of(student.get_layer("quant_relu_2"), "output_min:0", "output_max:0")
    assert low == 0.0
    assert high == pytest.approx(relu_output.max(), rel=1e-6)
    # The logits' range spans their min and max over the inputs.
    logits = teacher(inputs, training=False).numpy()
    low, high = range_of(student.get_layer("quant_logits"), "post_activation_min:0", "post_activation_max:0")
    assert (low, high) == (pytest.approx(min(logits.min(), 0.0), rel=1e-6),
                           pytest.approx(max(logits.max(), 0.0), rel=1e-6))


def test_calibration_leaves_batchnorm_statistics_alone():
    teacher = build_tiny_teacher()
    student, _ = quantize.quantize_student(teacher)
    statistics = [w.numpy().copy() for w in student.weights if "moving_" in w.name]
    assert statistics
    quantizer_ranges.calibrate_activation_ranges(student, teacher, random_inputs() * 5 + 3)
    for before, after in zip(statistics, [w.numpy() for w in student.weights if "moving_" in w.name]):
        np.testing.assert_array_equal(before, after)


def test_fitted_low_bit_activation_range_is_inside_the_observed_one():
    teacher = build_tiny_teacher()
    inputs = random_inputs(seed=2)
    scheme = quantize.QuantizationScheme.from_name("w4a4")
    observed, _ = quantize.quantize_student(teacher, scheme)
    quantizer_ranges.calibrate_activation_ranges(observed, teacher, inputs)
    fitted, _ = quantize.quantize_student(teacher, scheme)
    quantizer_ranges.calibrate_activation_ranges(fitted, teacher, inputs, fit_low_bit_ranges=True)
    observed_range = range_of(observed.get_layer("quant_relu_1"), "output_min:0", "output_max:0")
    fitted_range = range_of(fitted.get_layer("quant_relu_1"), "output_min:0", "output_max:0")
    assert fitted_range[0] == observed_range[0] == 0.0
    assert 0.0 < fitted_range[1] < observed_range[1]  # a 4-bit ReLU output clips its tail
    # The logits stay at 8 bits (last layer), so their range is not fitted.
    assert (range_of(fitted.get_layer("quant_logits"), "post_activation_min:0", "post_activation_max:0")
            == range_of(observed.get_layer("quant_logits"), "post_activation_min:0", "post_activation_max:0"))


def test_weight_ranges_follow_the_weights():
    teacher = build_tiny_teacher()
    student, _ = quantize.quantize_student(teacher)
    dense = student.get_layer("quant_logits")
    kernel = [w for w in dense.weights if w.name.endswith("/kernel:0")][0]
    kernel.assign(kernel.numpy() * 3)
    quantizer_ranges.initialize_weight_ranges(student)
    kernel_max = [w for w in dense.weights if "kernel_max" in w.name][0].numpy()
    np.testing.assert_allclose(kernel_max, np.abs(kernel.numpy()).max(), rtol=1e-6)


def test_inbound_layers_lists_what_a_layer_reads():
    teacher = build_tiny_teacher()
    assert [layer.name for layer in quantizer_ranges.inbound_layers(teacher.get_layer("bn_2"))] == ["conv_2"]
    assert [layer.name for layer in quantizer_ranges.inbound_layers(teacher.get_layer("conv_1"))] == ["image"]


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((3, 8, 8, 1)), r"\(3, 8, 8, 1\)"),
    (np.zeros((0,) + INPUT_SHAPE), r"\(0, 16, 16, 1\)"),
])
def test_calibration_rejects_wrongly_shaped_inputs(inputs, message):
    teacher = build_tiny_teacher()
    student, _ = quantize.quantize_student(teacher)
    with pytest.raises(ValueError, match=message):
        quantizer_ranges.calibrate_activation_ranges(student, teacher, inputs)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_calibration_rejects_a_bad_batch_size(batch_size):
    teacher = build_tiny_teacher()
    student, _ = quantize.quantize_student(teacher)
    with pytest.raises(ValueError, match="batch_size"):
        quantizer_ranges.calibrate_activation_ranges(student, teacher, random_inputs(), batch_size=batch_size)


def test_model_input_range_is_widened_to_the_preprocessing_range_and_training_keeps_it():
    teacher = build_tiny_teacher()
    short_of_the_ends = np.tanh(random_inputs(seed=3)) * 0.9  # Samples within [-0.9, 0.9].
    student, _ = quantize.quantize_student(teacher, calibration_inputs=short_of_the_ends)
    assert range_of(student.get_layer(index=1), "_min:0", "_max:0") == (
        pytest.approx(short_of_the_ends.min()), pytest.approx(short_of_the_ends.max()))
    assert quantizer_ranges.cover_model_input_range(student, np.array([-1.0]), np.array([1.0]))
    assert range_of(student.get_layer(index=1), "_min:0", "_max:0") == (-1.0, 1.0)
    # TF-MOT's input quantizer only ever widens: training on the narrower samples keeps the range.
    student(short_of_the_ends, training=True)
    assert range_of(student.get_layer(index=1), "_min:0", "_max:0") == (-1.0, 1.0)
    # A range already wider than the preprocessing's is kept; per-channel bounds reduce to their extremes.
    quantizer_ranges.cover_model_input_range(student, np.array([-0.5, 2.0]), np.array([0.5, 3.0]))
    assert range_of(student.get_layer(index=1), "_min:0", "_max:0") == (-1.0, 3.0)
    # Zero stays inside, as TFLite requires.
    raw, _ = quantize.quantize_student(teacher)
    quantizer_ranges.cover_model_input_range(raw, 10.0, 255.0)
    assert range_of(raw.get_layer(index=1), "_min:0", "_max:0") == (0.0, 255.0)
    with pytest.raises(ValueError, match="low <= high"):
        quantizer_ranges.cover_model_input_range(raw, 1.0, -1.0)


def test_quantize_student_covers_the_input_range_it_is_given():
    teacher = build_tiny_teacher()
    short_of_the_ends = np.tanh(random_inputs(seed=4)) * 0.9
    student, _ = quantize.quantize_student(teacher, calibration_inputs=short_of_the_ends, input_range=(-1.0, 1.0))
    assert range_of(student.get_layer(index=1), "_min:0", "_max:0") == (-1.0, 1.0)


def test_a_model_input_quantized_below_8_bits_keeps_its_fitted_range():
    teacher = build_tiny_teacher()
    scheme = quantize.QuantizationScheme.from_name("w4a4", keep_first_and_last_at_8_bits=False)
    inputs = np.tanh(random_inputs(seed=5)) * 0.9
    student, _ = quantize.quantize_student(teacher, scheme, calibration_inputs=inputs)
    fitted = range_of(student.get_layer(index=1), "_min:0", "_max:0")
    assert not quantizer_ranges.cover_model_input_range(student, -1.0, 1.0)
    assert range_of(student.get_layer(index=1), "_min:0", "_max:0") == fitted
