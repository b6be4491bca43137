"""Tests of zscgan_tf.export: TFLite conversion, fully integer on request."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import functools
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from ai_edge_litert.interpreter import Interpreter

from zscgan_tf import edge_tpu
from zscgan_tf import evaluate
from zscgan_tf import export, exported_model
from zscgan_tf import quantization_stages
from zscgan_tf import quantize, representative_data
from zscgan_tf import tflite_model
from zscgan_tf.errors import UserError

from conftest import build_hard_swish_classifier, build_two_block_classifier

INPUT_SHAPE = (16, 16, 1)
NUM_CLASSES = 10
NUM_SAMPLES = 64
NUM_CALIBRATION_SAMPLES = 32
# TFLite against the Keras QAT student: measured exactly 1 output quantization step
# of max |difference| and argmax agreement 1.0 over six seeds.
MAX_OUTPUT_STEPS = 2
MIN_AGREEMENT = 0.9
# int8 PTQ of the float teacher against the teacher: measured 1-3% of its largest
# |logit| on these tiny random models.
MAX_PTQ_RELATIVE_ERROR = 0.1
INTEGER_OPS_OF_TINY_MODEL = {"CONV_2D", "MEAN", "FULLY_CONNECTED", "QUANTIZE"}


# The TF-MOT tests share one tiny model: two Conv+BN+ReLU blocks, pooling, Dense logits.
build_tiny_teacher = functools.partial(build_two_block_classifier, INPUT_SHAPE, NUM_CLASSES)


def random_inputs(seed=0, count=NUM_SAMPLES, shape=INPUT_SHAPE):
    return np.random.default_rng(seed).standard_normal((count,) + shape).astype(np.float32)


@pytest.fixture(scope="module")
def inputs():
    return random_inputs()


@pytest.fixture(scope="module")
def teacher():
    return build_tiny_teacher()


@pytest.fixture(scope="module")
def trained_student(teacher, inputs):
    """A W8A8 student after a few QAT steps towards the teacher's logits."""
    student, _ = quantize.quantize_student(teacher, calibration_inputs=inputs)
    student.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses.MeanSquaredError())
    student.fit(inputs, teacher(inputs, training=False).numpy(), epochs=1, batch_size=16,
                verbose=0)
    return student


@pytest.fixture(scope="module")
def student_int8_bytes(trained_student):
    return export.convert_to_tflite(trained_student)


# ------------------------------------------------------------------------ int8 export


def test_qat_student_exports_fully_integer_without_dataset(student_int8_bytes):
    report = tflite_model.inspect_tflite(student_int8_bytes)
    assert report.inputs[0].dtype == "int8"
    assert report.outputs[0].dtype == "int8"
    assert report.inputs[0].shape_signature == (1,) + INPUT_SHAPE
    assert report.outputs[0].shape_signature == (1, NUM_CLASSES)
    assert report.has_static_batch_one
    assert report.is_fully_integer
    assert report.non_integer_ops == ()
    assert all(op.is_integer for op in report.operators)
    assert {op.name for op in report.operators} <= INTEGER_OPS_OF_TINY_MODEL
    assert report.inputs[0].is_quantized and report.outputs[0].is_quantized


@pytest.mark.parametrize("mode", ["int8", "float"])
def test_an_exported_file_has_a_serving_signature_that_runs_it(student_int8_bytes, teacher, inputs, mode):
    model_bytes = student_int8_bytes if mode == "int8" else export.convert_to_tflite(teacher, mode="float")
    interpreter = Interpreter(model_content=model_bytes)
    # It had none: LiteRT's signature runner and Android's runSignature could not run the files.
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["inputs"], "outputs": ["logits"]}}
    details = interpreter.get_input_details()[0]
    scale, zero_point = details["quantization"]
    image = (inputs[:1] if mode == "float" else np.clip(np.round(inputs[:1] / scale + zero_point), -128, 127)).astype(
        details["dtype"])
    by_signature = interpreter.get_signature_runner("serving_default")(inputs=image)["logits"]
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], image)
    interpreter.invoke()
    np.testing.assert_array_equal(by_signature, interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    assert exported_model.with_serving_signature(model_bytes) == model_bytes  # Added once.


def test_tflite_agrees_with_keras_student(trained_student, student_int8_bytes, inputs):
    tflite_logits = evaluate.TfliteClassifier(student_int8_bytes).predict(inputs)
    keras_logits = evaluate.keras_predict(trained_student, inputs)
    output_step = tflite_model.inspect_tflite(student_int8_bytes).outputs[0].scales[0]
    assert np.abs(tflite_logits - keras_logits).max() <= MAX_OUTPUT_STEPS * output_step
    assert evaluate.agreement(tflite_logits, keras_logits) >= MIN_AGREEMENT


def test_representative_dataset_does_not_override_qat_ranges(student_int8_bytes,
                                                             trained_student, inputs):
    # Calibration data ten times wider than the QAT ranges: the QAT input range wins.
    wide_data = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES] * 10)
    with_dataset = tflite_model.inspect_tflite(export.convert_to_tflite(trained_student, wide_data))
    without_dataset = tflite_model.inspect_tflite(student_int8_bytes)
    assert with_dataset.is_fully_integer
    assert with_dataset.inputs[0].scales == pytest.approx(without_dataset.inputs[0].scales)


def test_uint8_io(trained_student, student_int8_bytes, inputs):
    uint8_bytes = export.convert_to_tflite(trained_student, io_dtype="uint8")
    report = tflite_model.inspect_tflite(uint8_bytes)
    assert report.inputs[0].dtype == "uint8" and report.outputs[0].dtype == "uint8"
    assert report.is_fully_integer
    uint8_logits = evaluate.TfliteClassifier(uint8_bytes).predict(inputs)
    int8_logits = evaluate.TfliteClassifier(student_int8_bytes).predict(inputs)
    output_step = report.outputs[0].scales[0]
    assert np.abs(uint8_logits - int8_logits).max() <= MAX_OUTPUT_STEPS * output_step


def test_exported_model_is_the_student_not_the_teacher(teacher, inputs):
    student, _ = quantize.quantize_student(teacher, calibration_inputs=inputs)
    kernel = [w for w in student.get_layer("quant_logits").weights
              if w.name.endswith("/kernel:0")][0]
    kernel.assign(-kernel)  # symmetric weight range: still valid after negation
    tflite_logits = evaluate.TfliteClassifier(export.convert_to_tflite(student)).predict(inputs)
    student_logits = evaluate.keras_predict(student, inputs)
    teacher_logits = evaluate.keras_predict(teacher, inputs)
    assert evaluate.agreement(tflite_logits, student_logits) >= MIN_AGREEMENT
    assert evaluate.agreement(tflite_logits, teacher_logits) < 1 - MIN_AGREEMENT


def test_int8_ptq_of_float_model_with_representative_dataset(teacher, inputs):
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])
    model_bytes = export.convert_to_tflite(teacher, dataset)
    report = tflite_model.inspect_tflite(model_bytes)
    assert report.is_fully_integer and report.has_static_batch_one
    assert report.inputs[0].dtype == "int8"
    tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(inputs)
    teacher_logits = evaluate.keras_predict(teacher, inputs)
    relative_error = np.abs(tflite_logits - teacher_logits).max() / np.abs(teacher_logits).max()
    assert relative_error <= MAX_PTQ_RELATIVE_ERROR


def test_a_long_calibration_shows_the_samples_the_converter_has_calibrated_on(teacher, inputs, capsys,
                                                                              monkeypatch):
    # 10,000 samples of a ResNet-20 calibrated for 50 s without a line.
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES],
                                                       progress_description="calibration")
    export.convert_to_tflite(teacher, dataset)
    assert "calibration" not in capsys.readouterr().out  # Done in well under SLOW_CALIBRATION_SECONDS.
    monkeypatch.setattr(representative_data, "SLOW_CALIBRATION_SECONDS", 0.0)  # Every calibration is long now.
    export.convert_to_tflite(teacher, dataset)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("calibration ")]
    assert lines[0].startswith(f"calibration 1/{NUM_CALIBRATION_SAMPLES} [")
    assert lines[-1].startswith(f"calibration {NUM_CALIBRATION_SAMPLES}/{NUM_CALIBRATION_SAMPLES} [")


def test_the_converters_native_chatter_is_kept_off_stderr(teacher, inputs, capfd):
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])
    capfd.readouterr()
    export.convert_to_tflite(teacher, dataset)
    os.write(2, b"stderr still works\n")
    captured = capfd.readouterr()
    assert "fully_quantize" not in captured.err  # Written by the converter's C++ after each int8 conversion.
    assert captured.err.endswith("stderr still works\n")


def test_per_tensor_ptq_has_one_scale_per_weight_tensor(teacher, inputs):
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])

    def conv_weight_scale_counts(per_channel):
        report = tflite_model.inspect_tflite(
            export.convert_to_tflite(teacher, dataset, per_channel=per_channel))
        conv_weights = [report.tensors[op.input_indices[1]] for op in report.operators
                        if op.name == "CONV_2D"]
        return [len(tensor.scales) for tensor in conv_weights]

    assert conv_weight_scale_counts(True) == [8, 16]
    assert conv_weight_scale_counts(False) == [1, 1]


def test_float_model_int8_without_dataset_raises_clear_error(teacher):
    with pytest.raises(UserError, match="representative_dataset"):
        export.convert_to_tflite(teacher)


@pytest.mark.parametrize("mode", ["float", "dynamic"])
def test_float_and_dynamic_modes_keep_float_io(teacher, inputs, mode):
    model_bytes = export.convert_to_tflite(teacher, mode=mode)
    report = tflite_model.inspect_tflite(model_bytes)
    assert report.inputs[0].dtype == "float32" and report.outputs[0].dtype == "float32"
    assert report.has_static_batch_one
    assert not report.is_fully_integer
    constant_types = {tensor.dtype for tensor in report.tensors if tensor.is_constant}
    # Dynamic range quantization stores the larger weight tensors as int8.
    assert ("int8" in constant_types) == (mode == "dynamic")
    tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(inputs)
    teacher_logits = evaluate.keras_predict(teacher, inputs)
    if mode == "float":
        np.testing.assert_allclose(tflite_logits, teacher_logits, atol=1e-5)


def test_an_op_the_converter_leaves_float_is_named_with_its_keras_layer(inputs):
    teacher = build_tiny_teacher(extra_layer="elu")
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=inputs)
    assert float_layer_names == ("elu",)
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])
    for model in (teacher, student):
        with pytest.raises(export.NotFullyIntegerError,
                           match=r"not fully integer: float ops DEQUANTIZE \(#\d+\), ELU \(#\d+, layer 'elu'\), "
                                 r"QUANTIZE \(#\d+\); input int8, output int8. Pass allow_float_ops=True to keep "
                                 r"these ops float.$"):
            export.convert_to_tflite(model, dataset)


def test_a_float_op_fused_with_its_activation_is_named_with_both_layers(inputs):
    image = tf_keras.Input(INPUT_SHAPE)
    x = tf_keras.layers.Rescaling(1 / 127.5, -1.0, name="scale")(image)  # TF-MOT leaves it float.
    x = tf_keras.layers.Conv2D(4, 3, name="conv")(x)
    x = tf_keras.layers.ReLU(name="relu")(x)
    model = tf_keras.Model(image, tf_keras.layers.Dense(NUM_CLASSES)(tf_keras.layers.GlobalAveragePooling2D()(x)))
    student, _ = quantize.quantize_student(model, calibration_inputs=inputs)
    # Uncalibrated, the convolution fed by the float Rescaling stays float, with the ReLU fused into it.
    converter = tf.lite.TFLiteConverter.from_keras_model(student)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    report = tflite_model.inspect_tflite(converter.convert())
    # Before, it was named by the ReLU alone: "CONV_2D (#0, layer 'quant_relu')".
    assert re.match(r"CONV_2D \(#\d+, layers 'quant_conv', 'quant_relu'\)",
                    export.float_ops_description(report, student))


@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_allowed_float_ops_stay_float_inside_an_int8_model_that_computes_its_keras_model(inputs, io_dtype):
    teacher = build_tiny_teacher(extra_layer="elu")
    student, _ = quantize.quantize_student(teacher, calibration_inputs=inputs)
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])
    for model, max_error in ((student, MAX_OUTPUT_STEPS), (teacher, None)):
        model_bytes = export.convert_to_tflite(model, dataset, io_dtype=io_dtype, allow_float_ops=True)
        report = tflite_model.inspect_tflite(model_bytes)
        assert [tensor.dtype for tensor in report.inputs + report.outputs] == [io_dtype, io_dtype]
        assert not report.is_fully_integer
        # Only the ELU computes in float, between the DEQUANTIZE and QUANTIZE around it.
        assert [op.name for op in report.non_integer_ops] == ["DEQUANTIZE", "ELU", "QUANTIZE"]
        assert {op.name for op in report.operators} - {"DEQUANTIZE", "ELU"} <= INTEGER_OPS_OF_TINY_MODEL
        assert re.fullmatch(r"DEQUANTIZE \(#\d+\), ELU \(#\d+, layer 'elu'\), QUANTIZE \(#\d+\)",
                            export.float_ops_description(report, model))
        tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(inputs)
        keras_logits = evaluate.keras_predict(model, inputs)
        if max_error is not None:  # The QAT student: as close as a fully-integer one.
            assert np.abs(tflite_logits - keras_logits).max() <= max_error * report.outputs[0].scales[0]
        else:
            scale = np.abs(keras_logits).max()
            assert np.abs(tflite_logits - keras_logits).max() <= MAX_PTQ_RELATIVE_ERROR * scale
        assert evaluate.agreement(tflite_logits, keras_logits) >= MIN_AGREEMENT


def test_many_float_ops_are_counted_by_kind_with_the_first_of_each_placed(inputs):
    image = tf_keras.Input(INPUT_SHAPE)
    x = image
    for block in range(4):
        x = tf_keras.layers.Conv2D(4, 3, padding="same", name=f"conv_{block}")(x)
        x = tf_keras.layers.BatchNormalization(name=f"bn_{block}")(x)
        x = tf_keras.layers.Activation("elu", name=f"elu_{block}")(x)
    model = tf_keras.Model(image, tf_keras.layers.Dense(NUM_CLASSES)(tf_keras.layers.GlobalAveragePooling2D()(x)))
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])
    report = tflite_model.inspect_tflite(export.convert_to_tflite(model, dataset, allow_float_ops=True))
    assert re.fullmatch(r"ELU x4 \(#\d+, layer 'elu_0'; #\d+, layer 'elu_1'; #\d+, layer 'elu_2'; \.\.\.\), "
                        r"DEQUANTIZE x4, QUANTIZE x4", export.float_ops_description(report, model))
    # Reports list the ops of a kind and types on one line: the 12 on three.
    for lines, heading in ((report.format(), "not integer"),
                           (edge_tpu.compatibility_report(report).format(), "not 8-bit")):
        listed = [line for line in lines if line.startswith(f"  - {heading}: ")]
        assert [re.sub(r"#\d+", "#i", line) for line in listed] == [
            f"  - {heading}: DEQUANTIZE x4 (#i, #i, #i, #i), inputs int8; outputs float32",
            f"  - {heading}: ELU x4 (#i, #i, #i, #i), inputs float32; outputs float32",
            f"  - {heading}: QUANTIZE x4 (#i, #i, #i, #i), inputs float32; outputs int8"]
    elu_indices = [op.index for op in report.non_integer_ops if op.name == "ELU"]
    assert f"ELU x4 ({', '.join(f'#{index}' for index in elu_indices)})" in "\n".join(report.format())


def test_allowing_float_ops_changes_nothing_in_a_model_that_is_fully_integer(teacher, inputs):
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])
    fully_integer = export.convert_to_tflite(teacher, dataset)
    assert export.convert_to_tflite(teacher, dataset, allow_float_ops=True) == fully_integer


def test_reshape_in_front_of_a_float_rescaling_at_the_input_exports_what_qat_computes():
    # TF-MOT's Keras example begins Reshape((28, 28, 1)); with a Rescaling after it, the
    # converter used to drop the Rescaling from the QAT int8 model (every output 0).
    tf_keras.utils.set_random_seed(0)
    image = tf_keras.Input((12, 12), name="image")
    x = tf_keras.layers.Reshape((12, 12, 1), name="add_channel_axis")(image)
    x = tf_keras.layers.Rescaling(1 / 255.0, name="rescaling")(x)
    x = tf_keras.layers.Conv2D(6, 3, use_bias=False, name="conv")(x)
    x = tf_keras.layers.ReLU(name="relu")(tf_keras.layers.BatchNormalization(name="bn")(x))
    teacher = tf_keras.Model(image, tf_keras.layers.Dense(4, name="logits")(tf_keras.layers.Flatten()(x)))
    pixels = np.random.default_rng(0).integers(0, 256, (32, 12, 12)).astype(np.float32)
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=pixels,
                                                           input_range=(0.0, 255.0))
    assert float_layer_names == ("rescaling",)  # The Reshape, unannotated, computes nothing to leave float.
    model_bytes = export.convert_to_tflite(
        student, representative_data.representative_dataset_from_array(pixels, (0.0, 255.0)))
    assert tflite_model.inspect_tflite(model_bytes).is_fully_integer
    keras_logits = student(pixels, training=False).numpy()
    tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(pixels)
    assert np.abs(tflite_logits - keras_logits).max() <= 0.05 * np.abs(keras_logits).max()


def test_layers_tfmot_left_float_need_a_dataset_then_export_integer(inputs):
    teacher = build_tiny_teacher(extra_layer="rescaling")
    pixels = inputs * 60 + 128
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=pixels)
    assert float_layer_names == ("rescaling",)
    with pytest.raises(export.TfliteConversionError, match="MUL"):
        export.convert_to_tflite(student)
    dataset = representative_data.representative_dataset_from_array(pixels[:NUM_CALIBRATION_SAMPLES])
    report = tflite_model.inspect_tflite(export.convert_to_tflite(student, dataset))
    assert report.is_fully_integer
    assert {"MUL", "ADD"} <= {op.name for op in report.operators}


def test_lambda_model_quantizes_and_exports(inputs):
    teacher = build_tiny_teacher(extra_layer="lambda")
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=inputs)
    assert float_layer_names == ("lambda",)
    dataset = representative_data.representative_dataset_from_array(inputs[:NUM_CALIBRATION_SAMPLES])
    model_bytes = export.convert_to_tflite(student, dataset)
    assert tflite_model.inspect_tflite(model_bytes).is_fully_integer
    tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(inputs)
    student_logits = evaluate.keras_predict(student, inputs)
    assert evaluate.agreement(tflite_logits, student_logits) >= MIN_AGREEMENT


@pytest.mark.parametrize("spatial_size", [1, 2])
def test_hard_swish_and_squeeze_excite_student_exports_fully_integer(spatial_size, tmp_path):
    # On a 1x1 map the converter, left to calibrate the Multiply layers, kept the
    # hard-swish one float (MobileNetV3Small at 32x32). TF-MOT quantizes their output.
    teacher = build_hard_swish_classifier(spatial_size=spatial_size)
    images = np.random.default_rng(0).uniform(-1, 1, (NUM_SAMPLES, 8, 8, 3)).astype(np.float32)
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=images)
    # Only hard-swish's `x + 3` and `/ 6` (TFOpLambda) stay float in QAT.
    assert len(float_layer_names) == 2
    assert {type(teacher.get_layer(name)).__name__ for name in float_layer_names} == {"TFOpLambda"}
    # The pipeline saves the student as HDF5 and loads it back to export it.
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    student.save(str(tmp_path / "sub" / "student.h5"))
    os.symlink(tmp_path / "sub" / "deeper", tmp_path / "link")
    # Through a link and up, where the system goes: TensorFlow's loader took "link/.." as text and found nothing.
    loaded = quantization_stages.load_student(str(tmp_path / "link" / ".." / "student.h5"))
    dataset = representative_data.representative_dataset_from_array(images[:NUM_CALIBRATION_SAMPLES])
    model_bytes = export.convert_to_tflite(loaded, dataset)
    report = tflite_model.inspect_tflite(model_bytes)
    assert report.is_fully_integer
    assert report.operator_counts()["MUL"] >= 2
    tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(images)
    student_logits = evaluate.keras_predict(student, images)
    assert evaluate.agreement(tflite_logits, student_logits) >= MIN_AGREEMENT


def test_average_pooling_student_exports_after_qat_has_moved_its_ranges(tmp_path):
    # TFLite's int8 AVERAGE_POOL_2D keeps its input's scale. With an output quantizer of its
    # own, as TF-MOT's registry gives it, a range moved by QAT stopped the converter
    # ("violate the same scale constraint"; DenseNet121's transition layers).
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = tf_keras.layers.ReLU(name="relu")(tf_keras.layers.BatchNormalization(name="bn")(x))
    # A DenseNet transition and the start of its next dense block.
    x = tf_keras.layers.Conv2D(6, 1, use_bias=False, name="transition")(x)
    x = tf_keras.layers.AveragePooling2D(2, name="pool")(x)
    branch = tf_keras.layers.ReLU(name="relu_2")(tf_keras.layers.BatchNormalization(name="bn_2")(x))
    branch = tf_keras.layers.Conv2D(4, 3, padding="same", name="conv_2")(branch)
    x = tf_keras.layers.Concatenate(name="concat")([x, branch])
    x = tf_keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(4, name="logits")(x))
    teacher.trainable = False
    images = np.random.default_rng(0).uniform(-1, 1, (NUM_SAMPLES, 8, 8, 3)).astype(np.float32)
    student, _ = quantize.quantize_student(teacher, calibration_inputs=images)
    # Training-mode steps move every output quantizer's range towards these batches'.
    targets = teacher(images, training=False).numpy()
    student.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.MeanSquaredError())
    student.fit(images * 3.0, targets, epochs=3, batch_size=16, verbose=0)
    student.save(str(tmp_path / "student.h5"))
    loaded = quantization_stages.load_student(str(tmp_path / "student.h5"))
    with pytest.raises(ValueError, match=r"must be \(low, high\)"):
        quantization_stages.load_student(str(tmp_path / "student.h5"), input_range=(-1.0, 0.0, 1.0))
    model_bytes = export.convert_to_tflite(loaded, representative_data.representative_dataset_from_array(images[:8]))
    report = tflite_model.inspect_tflite(model_bytes)
    assert report.is_fully_integer and report.operator_counts()["AVERAGE_POOL_2D"] == 1
    tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(images)
    assert evaluate.agreement(tflite_logits, evaluate.keras_predict(student, images)) >= MIN_AGREEMENT


def test_low_bit_student_is_not_exported(teacher):
    scheme = quantize.QuantizationScheme.from_name("w4a4")
    student, _ = quantize.quantize_student(teacher, scheme)
    assert not scheme.exportable
    with pytest.raises(UserError, match="W8A8") as refused:
        export.convert_to_tflite(student)
    assert str(refused.value).startswith(f"the TF-MOT student {student.name!r} simulates fewer than 8 bits in ")
    assert "conv_2 (4-bit weights), relu_2 (4-bit activations)" in str(refused.value)
    w4a8, _ = quantize.quantize_student(teacher, quantize.QuantizationScheme.from_name("w4a8"))
    with pytest.raises(UserError, match=r" \(4-bit weights\)"):
        export.convert_to_tflite(w4a8)


def test_mobilenet_v2_qat_student_exports_fully_integer():
    teacher = tf_keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=NUM_CLASSES, alpha=0.35,
        classifier_activation=None)
    images = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=images)
    assert float_layer_names == ()
    report = tflite_model.inspect_tflite(export.convert_to_tflite(student))
    assert report.is_fully_integer and report.has_static_batch_one
    assert report.inputs[0].shape_signature == (1, 32, 32, 3)
    assert {op.name for op in report.operators} == {
        "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"}
    assert edge_tpu.compatibility_report(report).likely_compatible


# --------------------------------------------------------------------- input checking


def test_representative_dataset_from_array_yields_batch_one_float32():
    images = random_inputs(count=3).astype(np.float64)
    samples = list(representative_data.representative_dataset_from_array(images)())
    assert len(samples) == 3
    for index, sample in enumerate(samples):
        assert isinstance(sample, list) and len(sample) == 1
        assert sample[0].shape == (1,) + INPUT_SHAPE and sample[0].dtype == np.float32
        np.testing.assert_allclose(sample[0][0], images[index], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(0, 16, 16, 1\)"):
        representative_data.representative_dataset_from_array(np.zeros((0,) + INPUT_SHAPE))
    with pytest.raises(ValueError, match="NaN"):
        representative_data.representative_dataset_from_array(np.full((2,) + INPUT_SHAPE, np.nan))


def test_representative_dataset_reaches_the_input_range_in_its_first_sample():
    images = np.tanh(random_inputs(count=3, shape=(4, 4, 3))) * 0.9
    images[0, ..., 2] = 0.25  # A constant channel still gets both ends.
    before = images.copy()
    samples = [sample[0][0] for sample in representative_data.representative_dataset_from_array(
        images, (np.array([-1.0, -2.0, -3.0]), np.array([1.0, 2.0, 3.0])))()]
    np.testing.assert_array_equal(images, before)  # The caller's array is not touched.
    first = samples[0].reshape(-1, 3)
    assert list(first.min(axis=0)) == [-1.0, -2.0, -3.0] and list(first.max(axis=0)) == [1.0, 2.0, 3.0]
    # Two values per channel move, to the ends; the rest of the sample and every other sample are as given.
    assert np.count_nonzero(samples[0] != images[0]) == 6
    for index in (1, 2):
        np.testing.assert_array_equal(samples[index], images[index])
    # Where some sample already reaches the range, every sample is left as it is.
    images[2, 0, 0], images[2, 0, 1] = (-1.0, -2.0, -3.0), (1.0, 2.0, 3.0)
    reaching = list(representative_data.representative_dataset_from_array(
        images, (np.array([-1.0, -2.0, -3.0]), np.array([1.0, 2.0, 3.0])))())
    for index in range(3):
        np.testing.assert_array_equal(reaching[index][0][0], images[index])
    with pytest.raises(ValueError, match="3 per-channel values"):
        representative_data.representative_dataset_from_array(images, (np.zeros(2), np.ones(2)))
    with pytest.raises(ValueError, match="low <= high"):
        representative_data.representative_dataset_from_array(images, (1.0, -1.0))
    with pytest.raises(ValueError, match=r"must be \(low, high\), got \(-1.0,\)"):
        representative_data.representative_dataset_from_array(images, (-1.0,))


def test_an_int8_input_keeps_every_pixel_level_when_calibration_stops_short_of_the_ends(teacher):
    from zscgan_tf.preprocessing import Preprocessing

    pixels = Preprocessing("tf")
    short_of_the_ends = np.tanh(random_inputs(seed=6)) * 0.95  # Like a generator whose tanh never saturates.

    def levels_kept(model_bytes):
        return len(np.unique(evaluate.TfliteClassifier(model_bytes).pixel_table(pixels)))

    ptq = [export.convert_to_tflite(
        teacher, representative_data.representative_dataset_from_array(short_of_the_ends, bounds))
        for bounds in (None, (-1.0, 1.0))]
    assert levels_kept(ptq[0]) < 250 and levels_kept(ptq[1]) == 256
    students = [quantize.quantize_student(teacher, calibration_inputs=short_of_the_ends, input_range=bounds)[0]
                for bounds in (None, (-1.0, 1.0))]
    qat = [export.convert_to_tflite(student) for student in students]
    assert levels_kept(qat[0]) < 250 and levels_kept(qat[1]) == 256


def test_wrongly_shaped_representative_samples_raise_clear_error(teacher):
    dataset = representative_data.representative_dataset_from_array(random_inputs(count=2, shape=(8, 8, 1)))
    with pytest.raises(UserError, match=r"\(1, 8, 8, 1\).*\(1, 16, 16, 1\)"):
        export.convert_to_tflite(teacher, dataset)


@pytest.mark.parametrize("arguments, quoted", [
    ({"mode": "int4"}, "'int4'"),
    ({"io_dtype": "float32"}, "'float32'"),
    ({"per_channel": 1}, "1"),
])
def test_bad_arguments_are_quoted(teacher, arguments, quoted):
    with pytest.raises(UserError, match=quoted):
        export.convert_to_tflite(teacher, **arguments)


def test_dynamic_spatial_dimensions_are_refused():
    inputs = tf_keras.Input((None, None, 3))
    outputs = tf_keras.layers.Dense(NUM_CLASSES)(
        tf_keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(UserError, match=r"\(None, None, None, 3\)"):
        export.convert_to_tflite(tf_keras.Model(inputs, outputs), mode="float")


def test_converter_failure_names_the_op():
    inputs = tf_keras.Input(INPUT_SHAPE)
    determinant = tf_keras.layers.Lambda(lambda tensor: tf.linalg.det(tensor[..., 0]))(inputs)
    outputs = tf_keras.layers.Dense(NUM_CLASSES)(tf_keras.layers.Reshape((1,))(determinant))
    with pytest.raises(export.TfliteConversionError, match="tf.MatrixDeterminant"):
        export.convert_to_tflite(tf_keras.Model(inputs, outputs), mode="float")


def _looping_classifier(looping_layer, name="reader") -> tf_keras.Model:
    inputs = tf_keras.Input((4, 4, 1))  # Four rows read as four steps.
    rows = tf_keras.layers.Reshape((4, 4))(inputs)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(looping_layer(rows)), name=name)


def test_a_loop_over_a_tensor_list_is_refused_for_int8_rather_than_crashing_the_process():
    # TensorFlow's converter ended the process with a segmentation fault (status 139), pytest with it.
    samples = representative_data.representative_dataset_from_array(
        np.random.default_rng(0).uniform(-1, 1, (4, 4, 4, 1)))
    inner_inputs = tf_keras.Input((4, 4))
    nested = tf_keras.Model(inner_inputs, tf_keras.layers.GRU(4)(inner_inputs), name="nested")
    mapped = tf_keras.layers.Lambda(lambda rows: tf.map_fn(lambda row: row * 2.0, rows), name="mapped")
    scanned = tf_keras.layers.Lambda(lambda rows: tf.scan(lambda total, row: total + row, rows), name="scanned")
    for layer, named in ((tf_keras.layers.LSTM(4, name="lstm"), "its layer lstm loops"),
                         (tf_keras.layers.Bidirectional(tf_keras.layers.GRU(4), name="both_ways"),
                          "its layer both_ways loops"),
                         (nested, "its layer nested loops"),
                         (lambda rows: tf_keras.layers.Flatten()(mapped(rows)), "its layer mapped loops"),
                         (lambda rows: tf_keras.layers.Flatten()(scanned(rows)), "its layer scanned loops")):
        model = _looping_classifier(layer)
        with pytest.raises(export.TfliteConversionError, match=(
                rf"^TFLite int8 conversion of 'reader' would crash TensorFlow [0-9.]+'s converter: {named} over a "
                r"tensor list \(a recurrent layer that is not unrolled, tf.map_fn or tf.scan\).*unroll=True")):
            export.convert_to_tflite(model, samples, allow_float_ops=True)
    assert export.convert_to_tflite(model, mode="dynamic")  # Other modes convert it.
    # Unrolled, a recurrent layer converts to integer; so does a loop over no tensor list.
    counted = tf_keras.layers.Lambda(lambda rows: tf.while_loop(
        lambda step, total: step < 3, lambda step, total: (step + 1, total * 0.5), (0, rows))[1])
    for layer in (tf_keras.layers.LSTM(4, unroll=True), lambda rows: tf_keras.layers.Flatten()(counted(rows))):
        report = tflite_model.inspect_tflite(export.convert_to_tflite(_looping_classifier(layer), samples,
                                                                      allow_float_ops=True))
        assert report.inputs[0].dtype == "int8" and report.outputs[0].dtype == "int8"
    # A TF-MOT student too: a loop ahead of its first quantizer stays float, and calibrating it crashed.
    inputs = tf_keras.Input((4, 4, 1))
    standardized = tf_keras.layers.Lambda(lambda images: tf.map_fn(tf.image.per_image_standardization, images),
                                          name="standardized")(inputs)
    features = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(2, 3, padding="same")(standardized))
    teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(tf_keras.layers.Flatten()(features)))
    student, _ = quantize.quantize_student(teacher, calibration_inputs=np.zeros((4, 4, 4, 1), np.float32))
    with pytest.raises(export.TfliteConversionError, match="its layer standardized loops over a tensor list"):
        export.convert_to_tflite(student, samples, allow_float_ops=True)


def test_a_layer_that_is_0_on_every_calibration_sample_is_named_and_nothing_is_written(tmp_path):
    # The converter made an int8 model that LiteRT's XNNPACK delegate refused to load, and wrote it.
    inputs = tf_keras.Input((4, 4, 1))
    features = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.Conv2D(4, 3, padding="same")(inputs))
    dead = tf_keras.layers.ReLU(name="dead")(tf_keras.layers.Dense(
        8, bias_initializer=tf_keras.initializers.Constant(-100.0), name="hidden")(features))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES, name="logits")(dead), name="dead_inside")
    samples = representative_data.representative_dataset_from_array(
        np.random.default_rng(0).uniform(-1, 1, (4, 4, 4, 1)))
    with pytest.raises(export.TfliteConversionError, match=(
            r"^the int8 model of 'dead_inside' does not load in LiteRT: layers 'hidden', 'dead' gave 0 or all but 0 "
            r"on every calibration sample, for which int8 has a scale below 1e-07 that LiteRT's XNNPACK delegate "
            r"refuses; calibrate with samples on which it is not, or remove the layer \(.*XNNPACK.*\)$")):
        export.convert_to_tflite(model, samples, output_path=str(tmp_path / "dead.tflite"))
    assert not os.path.exists(tmp_path / "dead.tflite")


def test_a_model_that_cannot_run_on_one_image_is_refused_in_one_line_naming_its_layer(tmp_path):
    # Tracing at batch 1 raised a 40-line ValueError from TensorFlow, through both commands too.
    inputs = tf_keras.Input((4, 4, 1))
    flat = tf_keras.layers.Lambda(lambda images: tf.reshape(images, (32, 16)), name="batch_of_32")(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(flat), name="fixed_batch")
    assert model(np.zeros((32, 4, 4, 1), np.float32)).shape == (32, NUM_CLASSES)  # It runs at its own batch.
    samples = representative_data.representative_dataset_from_array(np.zeros((4, 4, 4, 1), np.float32))
    for mode, dataset in (("int8", samples), ("float", None), ("dynamic", None)):
        with pytest.raises(export.TfliteConversionError) as raised:
            export.convert_to_tflite(model, dataset, mode=mode, output_path=str(tmp_path / "fixed.tflite"))
        assert str(raised.value) == (
            f"TFLite {mode} conversion of 'fixed_batch' failed: the model cannot run on one image, as a TFLite "
            "model's batch-1 input needs: its layer 'batch_of_32' (Lambda) raised: Cannot reshape a tensor with 16 "
            "elements to shape [32,16] (512 elements); build it so that it takes any batch size (no fixed batch in "
            "a Reshape, Lambda or custom layer)")
    assert not os.path.exists(tmp_path / "fixed.tflite")
    # An error that does not come from a layer's call is given by its type and first line.
    assert export._call_failure(TypeError("in user code:\n\n  bad input\n  more")) == "TypeError: bad input"


def test_a_mixed_precision_model_is_refused_before_the_converter_lists_its_every_op():
    # The converter listed every op as one it "cannot convert", in every mode.
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = tf_keras.Input((4, 4, 1))
        features = tf_keras.layers.GlobalAveragePooling2D(name="pool")(tf_keras.layers.Conv2D(2, 3, name="conv")(inputs))
        model = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES, dtype="float32")(features), name="half")
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    samples = representative_data.representative_dataset_from_array(np.zeros((4, 4, 4, 1), np.float32))
    for mode, dataset in (("int8", samples), ("float", None)):
        with pytest.raises(UserError) as raised:
            export.convert_to_tflite(model, dataset, mode=mode)
        assert str(raised.value) == (
            f"TFLite {mode} conversion of 'half' cannot start: 2 layers compute in float16 (policy mixed_float16: "
            "conv, pool), for which TensorFlow's converter has no kernels; rebuild the model "
            "under the float32 policy with the same weights (zscgan_tf.load_teacher does so for a saved model)")
    # TF-MOT's quantize_apply stopped on it with a 38-line traceback.
    with pytest.raises(UserError) as raised:
        quantize.quantize_student(model)
    assert str(raised.value) == (
        "the teacher 'half' cannot be quantized: 2 layers compute in float16 (policy mixed_float16: conv, pool), and "
        "TF-MOT's fake quantization computes in float32; rebuild it under the float32 policy with the same weights "
        "(zscgan_tf.load_teacher does so for a saved model)")


def test_a_student_conversion_failure_names_the_layers_tf_mot_left_float():
    # The message quoted LiteRT's "FULLY_CONNECTED ... INT8 != FLOAT32" without a word on which layer it was.
    inputs = tf_keras.Input((4, 4, 1))
    features = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(2, 3, padding="same")(inputs))
    mixed = tf_keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 3), name="mixer")(
        tf_keras.layers.Reshape((16, 2))(features))
    teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(tf_keras.layers.Flatten()(mixed)),
                             name="mixing")
    samples = np.random.default_rng(0).uniform(-1, 1, (4, 4, 4, 1)).astype(np.float32)
    student, float_layers = quantize.quantize_student(teacher, calibration_inputs=samples)
    assert float_layers == ("mixer",)
    with pytest.raises(export.TfliteConversionError, match=(
            r"^TFLite int8 conversion of 'mixing' failed: .*\(INT8 != FLOAT32\) Node number \d+ \(FULLY_CONNECTED\) "
            r"failed to prepare; TF-MOT left float, for the converter to quantize on its own: 1 EinsumDense \(mixer\) "
            r"\(the converter's full message is in the chained exception\)$")):
        export.convert_to_tflite(student, representative_data.representative_dataset_from_array(samples))


def test_converter_failure_says_why_where_the_converter_does():
    message = ("loc(fused[...]): error: 'tfl.average_pool_2d' op quantization parameters violate the same scale "
               "constraint: !quant.uniform<i8:f32, 0.0055:3> vs. !quant.uniform<i8:f32, 0.0047:5>\n...")
    error = export._converter_error("densenet121", "int8", RuntimeError(message))
    assert str(error) == ("TFLite int8 conversion of 'densenet121' failed: ops it cannot convert: tfl.average_pool_2d "
                          "(quantization parameters violate the same scale constraint) (the converter's full message "
                          "is in the chained exception)")


def test_convert_writes_output_path(trained_student, tmp_path):
    path = tmp_path / "student.tflite"
    model_bytes = export.convert_to_tflite(trained_student, output_path=str(path))
    assert path.read_bytes() == model_bytes
