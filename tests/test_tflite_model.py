"""Tests of zscgan_tf.tflite_model: reading TFLite flatbuffers back."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from zscgan_tf import tflite_model
from zscgan_tf.errors import UserError

INPUT_SHAPE = (8, 8, 1)


def tiny_model():
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    x = tf_keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="logits")(x))


def converted(model, integer):
    """The model through TFLite's own converter (not `export`), float or fully int8."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if integer:
        samples = np.random.default_rng(0).standard_normal((16, 1) + INPUT_SHAPE).astype(np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def test_float_model_report():
    report = tflite_model.inspect_tflite(converted(tiny_model(), integer=False))
    assert [tensor.dtype for tensor in report.inputs + report.outputs] == ["float32", "float32"]
    assert report.inputs[0].shape == (1,) + INPUT_SHAPE and not report.inputs[0].is_quantized
    assert report.has_static_batch_one
    assert not report.is_fully_integer and report.is_float
    assert {op.name for op in report.non_integer_ops} >= {"CONV_2D", "FULLY_CONNECTED"}
    lines = report.format()
    assert lines[0] == "- input: float32 [1, 8, 8, 1]"
    # Every op of a float model is float: the report says so once instead of listing them.
    assert f"- fully integer: no (float: none of its {len(report.operators)} operators is integer)" in lines
    assert not any(line.startswith("  - not integer") for line in lines)


def test_dynamic_range_model_names_its_hybrid_ops():
    # The converter leaves weights under 1,024 values float: this kernel has 2,048.
    inputs = tf_keras.Input((64,), batch_size=1)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(32)(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    report = tflite_model.inspect_tflite(converter.convert())
    # int8 weights in float ops: neither float nor integer, so each float op is named.
    assert not report.is_float and not report.is_fully_integer
    lines = report.format()
    assert "- fully integer: no" in lines
    assert any(line.startswith("  - not integer: FULLY_CONNECTED") and "int8" in line for line in lines)


def test_int8_model_report_has_quantization_parameters():
    report = tflite_model.inspect_tflite(converted(tiny_model(), integer=True))
    assert report.is_fully_integer and not report.non_integer_ops and not report.is_float
    model_input = report.inputs[0]
    assert model_input.dtype == "int8" and len(model_input.scales) == 1 and model_input.scales[0] > 0
    assert -128 <= model_input.zero_points[0] <= 127
    assert "scale" in model_input.describe() and "zero point" in model_input.describe()
    # Per-channel conv weights: one scale per output channel, on axis 0 of the OHWI kernel.
    kernel = [tensor for tensor in report.tensors if tensor.is_constant and len(tensor.shape) == 4][0]
    assert kernel.dtype == "int8" and len(kernel.scales) == 4 and kernel.quantized_dimension == 0
    assert kernel.describe().endswith("per-channel (4 scales)")
    assert report.operator_counts()["CONV_2D"] == 1
    assert "- fully integer: yes" in report.format()


def test_hand_built_report_properties():
    tensors = (
        tflite_model.TensorInfo(0, "image", "int8", (1, 4), (-1, 4), (0.5,), (3,)),
        tflite_model.TensorInfo(1, "weights", "float32", (2, 4), (2, 4), is_constant=True),
        tflite_model.TensorInfo(2, "logits", "int8", (1, 2), (1, 2), (0.1,), (0,)),
    )
    operators = (tflite_model.OperatorInfo(0, "FULLY_CONNECTED", ("int8", "float32"), ("int8",), False,
                                           (0, 1), (2,)),)
    report = tflite_model.TfliteModelReport(inputs=tensors[:1], outputs=tensors[2:], operators=operators,
                                            tensors=tensors, num_subgraphs=2)
    # A float constant makes the op not integer even with integer inputs and outputs.
    assert not report.is_fully_integer and not report.is_float
    assert report.non_integer_ops == operators
    assert tensors[0].is_dynamic and not report.has_static_batch_one
    lines = report.format()
    # Some op is integer or none is float: each float op is named.
    assert "- fully integer: no" in lines
    assert "  - not integer: FULLY_CONNECTED (#0), inputs int8, float32; outputs int8" in lines
    assert "- static batch 1: no" in lines
    assert lines[-1] == "- subgraphs: 2 (only the main one inspected)"
    # A batch of 1 with another dimension dynamic is not a static shape either.
    width_unknown = tflite_model.TensorInfo(0, "image", "int8", (1, 4), (1, -1), (0.5,), (3,))
    assert not tflite_model.TfliteModelReport(inputs=(width_unknown,), outputs=tensors[2:], operators=operators,
                                              tensors=(width_unknown,) + tensors[1:]).has_static_batch_one


def test_reported_scales_and_zero_points_are_those_litert_runs_the_model_with():
    from ai_edge_litert.interpreter import Interpreter
    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_model())
    samples = np.random.default_rng(0).uniform(0, 1, (16, 1) + INPUT_SHAPE).astype(np.float32)  # Zero point -128.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample] for sample in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model_bytes = converter.convert()
    report = tflite_model.inspect_tflite(model_bytes)
    interpreter = Interpreter(model_content=model_bytes)
    for tensor, details in ((report.inputs[0], interpreter.get_input_details()[0]),
                            (report.outputs[0], interpreter.get_output_details()[0])):
        scale, zero_point = details["quantization"]
        assert tensor.scales == (pytest.approx(scale),) and tensor.zero_points == (zero_point,)
    assert report.inputs[0].zero_points == (-128,)


@pytest.mark.parametrize("model_bytes, message", [
    (b"\x00" * 64, "TFL3"),
    ("model.tflite", "must be bytes, got str"),
])
def test_inspect_rejects_what_is_not_a_tflite_flatbuffer(model_bytes, message):
    with pytest.raises(UserError, match=message):
        tflite_model.inspect_tflite(model_bytes)


def test_listed_operators_put_one_kind_on_a_line_and_count_the_kinds_past_the_cap():
    def op(index, name, input_dtype="float32"):
        return tflite_model.OperatorInfo(index=index, name=name, input_dtypes=(input_dtype,),
                                         output_dtypes=("float32",), is_integer=False)

    ops = [op(index, "ELU") for index in range(10)] + [op(10, "ELU", "int8"), op(11, "EXP")]
    assert tflite_model.listed_operators("not integer", ops, with_types=True) == [
        "  - not integer: ELU x10 (#0, #1, #2, #3, #4, #5, #6, #7, ...), inputs float32; outputs float32",
        "  - not integer: ELU (#10), inputs int8; outputs float32",  # Other types: a line of its own.
        "  - not integer: EXP (#11), inputs float32; outputs float32"]
    assert tflite_model.listed_operators("unsupported op", ops)[0] == (
        "  - unsupported op: ELU x11 (#0, #1, #2, #3, #4, #5, #6, #7, ...)")
    many_kinds = [op(index, f"OP_{index}") for index in range(tflite_model.MAX_LISTED_OPERATORS + 3)]
    many_kinds.append(op(99, "OP_10"))
    lines = tflite_model.listed_operators("unsupported op", many_kinds)
    assert len(lines) == tflite_model.MAX_LISTED_OPERATORS + 1
    assert lines[-1] == "  - unsupported op: 4 more (OP_8 x1, OP_9 x1, OP_10 x2)"
