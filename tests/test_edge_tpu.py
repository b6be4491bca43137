"""Tests of zscgan_tf.edge_tpu: the static Edge TPU compatibility report."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest

from zscgan_tf import edge_tpu, export, representative_data, tflite_model

from conftest import build_two_block_classifier

INPUT_SHAPE = (16, 16, 1)


@pytest.fixture(scope="module")
def teacher():
    return build_two_block_classifier(INPUT_SHAPE, 10)


def test_edge_tpu_report_flags_float_ops(teacher):
    report = tflite_model.inspect_tflite(export.convert_to_tflite(teacher, mode="float"))
    compatibility = edge_tpu.compatibility_report(report)
    assert not compatibility.likely_compatible
    assert "CONV_2D" in {op.name for op in compatibility.non_eight_bit_ops}
    assert compatibility.first_cpu_op_index == 0
    assert not compatibility.compiler_run
    lines = compatibility.format()
    assert "compiler was not run" in lines[0]
    assert any("not 8-bit: CONV_2D" in line for line in lines)


def test_edge_tpu_report_passes_a_fully_integer_model(teacher):
    samples = np.random.default_rng(0).standard_normal((32,) + INPUT_SHAPE).astype(np.float32)
    model_bytes = export.convert_to_tflite(teacher, representative_data.representative_dataset_from_array(samples))
    report = tflite_model.inspect_tflite(model_bytes)
    compatibility = edge_tpu.compatibility_report(report)
    assert compatibility.likely_compatible
    assert compatibility.first_cpu_op_index is None
    assert "likely compatible" in compatibility.format()[0]
    assert compatibility.summary() == "likely compatible"
    # The documented limitations of these ops are checked, so none is left to a check by hand.
    assert {op.name for op in report.operators} == {"CONV_2D", "MEAN", "FULLY_CONNECTED"}
    assert compatibility.limitations == () and compatibility.limit_violations == ()
    assert any(line.startswith("- fully integer: yes") for line in report.format())


def test_edge_tpu_report_flags_unsupported_op_and_large_rank():
    tensors = (
        tflite_model.TensorInfo(0, "input", "int8", (2, 4, 4, 3), (2, 4, 4, 3), (0.1,), (0,)),
        tflite_model.TensorInfo(1, "output", "int32", (2,), (2,)),
    )
    operators = (tflite_model.OperatorInfo(0, "ARG_MAX", ("int8",), ("int32",), True, (0,), (1,)),)
    report = tflite_model.TfliteModelReport(inputs=tensors[:1], outputs=tensors[1:],
                                            operators=operators, tensors=tensors)
    compatibility = edge_tpu.compatibility_report(report)
    assert [op.name for op in compatibility.unsupported_ops] == ["ARG_MAX"]
    assert [op.name for op in compatibility.non_eight_bit_ops] == ["ARG_MAX"]  # int32 output
    assert compatibility.oversized_tensors == ("input",)
    assert not report.has_static_batch_one
    lines = compatibility.format()
    assert "  - unsupported op: ARG_MAX (#0)" in lines
    assert "  - ops from #0 on would run on the CPU" in lines
    assert compatibility.summary() == ("not as is: ARG_MAX x1 not in Coral's list; 1 op not 8-bit; "
                                       "tensors of more than 3 dimensions larger than 1")


def test_ops_on_an_oversized_or_dynamic_tensor_are_where_the_cpu_takes_over():
    tensors = (
        tflite_model.TensorInfo(0, "input", "int8", (1, 4, 4, 3), (1, 4, 4, 3), (0.1,), (0,)),
        tflite_model.TensorInfo(1, "5d", "int8", (1, 2, 2, 4, 3), (1, 2, 2, 4, 3), (0.1,), (0,)),
        tflite_model.TensorInfo(2, "output", "int8", (1, 48), (1, 48), (0.1,), (0,)),
    )
    operators = (tflite_model.OperatorInfo(0, "RELU", ("int8",), ("int8",), True, (0,), (0,)),
                 tflite_model.OperatorInfo(1, "RESHAPE", ("int8",), ("int8",), True, (0,), (1,)),
                 tflite_model.OperatorInfo(2, "RESHAPE", ("int8",), ("int8",), True, (1,), (2,)))
    report = tflite_model.TfliteModelReport(inputs=tensors[:1], outputs=tensors[2:], operators=operators,
                                            tensors=tensors)
    compatibility = edge_tpu.compatibility_report(report)
    assert compatibility.oversized_tensors == ("5d",)
    assert [op.index for op in compatibility.shape_ops] == [1, 2]
    # Before, no op was named: only unsupported and non-8-bit ops placed the CPU's part.
    assert compatibility.first_cpu_op_index == 1
    assert "  - ops from #1 on would run on the CPU" in compatibility.format()


@pytest.mark.parametrize("weights, note", [((1000, 8192), True), ((1000, 7000), False)])
def test_parameters_beyond_the_on_chip_memory_are_noted_without_failing_the_check(weights, note):
    # A 5000-class head (6.4 MB) or ResNet50 (25 MB) was "likely compatible" with no word of the host-memory
    # streaming that slows it.
    tensors = (tflite_model.TensorInfo(0, "input", "int8", (1, weights[1]), (1, weights[1]), (0.1,), (0,)),
               tflite_model.TensorInfo(1, "weights", "int8", weights, weights, (0.1,), (0,), is_constant=True),
               tflite_model.TensorInfo(2, "bias", "int32", weights[:1], weights[:1], (0.1,), (0,), is_constant=True),
               tflite_model.TensorInfo(3, "output", "int8", (1, weights[0]), (1, weights[0]), (0.1,), (0,)))
    operators = (tflite_model.OperatorInfo(0, "FULLY_CONNECTED", ("int8",) * 3, ("int8",), True, (0, 1, 2), (3,)),)
    compatibility = edge_tpu.compatibility_report(tflite_model.TfliteModelReport(
        inputs=tensors[:1], outputs=tensors[3:], operators=operators, tensors=tensors))
    assert compatibility.parameter_bytes == weights[0] * weights[1] + 4 * weights[0]
    assert compatibility.likely_compatible and compatibility.summary() == "likely compatible"
    noted = [line for line in compatibility.format() if line.startswith("  - parameters: ")]
    assert noted == ([f"  - parameters: {compatibility.parameter_bytes / 1e6:.1f} MB, beyond the Edge TPU's on-chip "
                      "memory for them (8 MB): the compiler streams the rest from host memory at every inference, "
                      "which slows it"] if note else [])


def test_a_dynamic_tensor_alone_makes_a_model_not_compatible_as_is():
    tensors = (tflite_model.TensorInfo(0, "input", "int8", (1, 4), (1, -1), (0.1,), (0,)),
               tflite_model.TensorInfo(1, "output", "int8", (1, 4), (1, -1), (0.1,), (0,)))
    operators = (tflite_model.OperatorInfo(0, "RELU", ("int8",), ("int8",), True, (0,), (1,)),)
    compatibility = edge_tpu.compatibility_report(tflite_model.TfliteModelReport(
        inputs=tensors[:1], outputs=tensors[1:], operators=operators, tensors=tensors))
    assert compatibility.dynamic_tensors == ("input", "output")
    assert not compatibility.likely_compatible
    assert "dynamic shapes" in compatibility.summary()
    assert "  - dynamic shapes: input, output" in compatibility.format()


def test_edge_tpu_report_rejects_what_is_not_a_report():
    with pytest.raises(ValueError, match="TfliteModelReport"):
        edge_tpu.compatibility_report(b"TFL3")


def test_supported_operations_are_unique_builtin_names():
    names = [name for name, _ in edge_tpu.EDGE_TPU_SUPPORTED_OPERATIONS]
    assert len(names) == len(set(names)) == len(edge_tpu.EDGE_TPU_SUPPORTED_OP_NAMES)
    assert all(name == name.upper() for name in names)


def _int8_report(model, seed=0):
    samples = np.random.default_rng(seed).standard_normal((16,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    return tflite_model.inspect_tflite(
        export.convert_to_tflite(model, representative_data.representative_dataset_from_array(samples)))


def _violations(compatibility):
    return [(op.name, why) for op, why in compatibility.limit_violations]


def test_ops_beyond_coral_s_documented_limits_are_where_the_cpu_takes_over():
    # Each was "likely compatible" before: only the op names were held against Coral's table,
    # and its limits listed for a check by hand.
    import tf_keras
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 4))
    x = tf_keras.layers.Conv2D(4, 3, padding="same", dilation_rate=(2, 1))(inputs)
    x = tf_keras.layers.PReLU()(x)  # Alpha (8, 8, 4): one value per position.
    x = tf_keras.layers.ReLU()(tf_keras.layers.MaxPooling2D(padding="same")(x))  # The converter fuses the ReLU.
    x = tf_keras.layers.Lambda(lambda tensor: tensor[:, ::2, ::2, :])(x)
    x = tf_keras.layers.Conv2D(3, 1)(x)
    x = tf_keras.layers.Concatenate()(
        [x, tf_keras.layers.Lambda(lambda tensor: tf_keras.backend.mean(tensor, axis=-1, keepdims=True))(x)])
    x = tf_keras.layers.Dense(6)(x)  # On (batch, 2, 2, 4): an output of 3 dimensions.
    outputs = tf_keras.layers.Softmax()(x)
    report = _int8_report(tf_keras.Model(inputs, outputs))
    compatibility = edge_tpu.compatibility_report(report)
    violations = _violations(compatibility)
    assert ("CONV_2D", "dilation 2 in y and 1 in x") in violations
    assert ("MAX_POOL_2D", "a fused RELU") in violations
    assert ("PRELU", "alpha [8, 8, 4] varies along more than the innermost dimension") in violations
    assert ("STRIDED_SLICE", "strides [1, 2, 2, 1], not all 1") in violations
    assert ("MEAN", "a reduction along 3 channels, not a multiple of 4") in violations
    assert ("FULLY_CONNECTED", "output [1, 2, 2, 6], not one-dimensional") in violations
    assert ("SOFTMAX", "input [1, 2, 2, 6], not one-dimensional") in violations
    assert not compatibility.likely_compatible and not compatibility.unsupported_ops
    first = min(op.index for op, _ in compatibility.limit_violations)
    assert first == 0 and compatibility.first_cpu_op_index == first
    assert "beyond Coral's limits" in compatibility.summary()
    lines = compatibility.format()
    assert lines[0].endswith("not compatible as is")
    assert any(line.startswith("  - beyond Coral's limits: CONV_2D (#0): dilation 2 in y and 1 in x")
               for line in lines)


def test_ops_within_coral_s_limits_pass():
    import tf_keras
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 4))
    x = tf_keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2)(inputs)
    x = tf_keras.layers.MaxPooling2D()(x)
    x = tf_keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = tf_keras.layers.Lambda(lambda tensor: tensor[:, 1:3, :, :])(x)
    x = tf_keras.layers.ZeroPadding2D(1)(x)
    x = tf_keras.layers.Lambda(lambda tensor: tf_keras.backend.mean(tensor, axis=-1, keepdims=True))(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.Conv2D(8, 1)(x))
    outputs = tf_keras.layers.Softmax()(tf_keras.layers.Dense(6)(x))
    report = _int8_report(tf_keras.Model(inputs, outputs))
    compatibility = edge_tpu.compatibility_report(report)
    names = {op.name for op in report.operators}
    assert {"CONV_2D", "MAX_POOL_2D", "PRELU", "PAD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= names
    assert compatibility.limit_violations == () and compatibility.likely_compatible


def _report_of(operators, tensors):
    return tflite_model.TfliteModelReport(inputs=tensors[:1], outputs=tensors[-1:], operators=operators,
                                          tensors=tensors)


def _tensor(index, shape, values=None, is_zero=None):
    return tflite_model.TensorInfo(index, f"t{index}", "int8" if values is None else "int32", shape, shape,
                                   (0.1,) if values is None else (), (0,) if values is None else (),
                                   is_constant=values is not None or is_zero is not None, values=values,
                                   is_zero=is_zero)


@pytest.mark.parametrize("name, shapes, values, options, why", [
    ("PAD", [(1, 4, 4, 3), (4, 2)], [None, (1, 0, 1, 1, 1, 1, 0, 0)], (), "padding along the batch dimension"),
    ("PAD", [(1, 4, 4, 3), (4, 2)], [None, (0, 0, 1, 1, 1, 1, 0, 0)], (), None),
    ("SPLIT", [(), (1, 4, 4, 4)], [(0,), None], (), "a split along the batch dimension"),
    ("SPLIT", [(), (1, 4, 4, 4)], [(-1,), None], (), None),
    ("TRANSPOSE", [(1, 4, 4, 3), (4,)], [None, (1, 0, 2, 3)], (),
     "permutation [1, 0, 2, 3] moves the batch dimension"),
    ("TRANSPOSE", [(1, 4, 4, 3), (4,)], [None, (0, 2, 1, 3)], (), None),
    ("PACK", [(1, 4), (1, 4)], [None, None], (("axis", 0),), "packing along the batch dimension"),
    ("SUM", [(1, 4, 4, 3), (1,)], [None, (0,)], (), "a reduction along the batch dimension"),
    ("REDUCE_MAX", [(1, 4, 4, 3), (2,)], [None, (1, 2)], (), None),
    ("SQUEEZE", [(1, 5, 1, 10)], [None], (("squeeze_dims", (2,)),),
     "input [1, 5, 1, 10] loses a dimension of 1 after one larger (a relayout)"),
    ("SQUEEZE", [(1, 1, 1, 10)], [None], (("squeeze_dims", ()),), None),
    ("STRIDED_SLICE", [(1, 4, 4, 3), (4,), (4,), (4,)], [None, (0,) * 4, (1, 4, 4, 3), (1,) * 4],
     (("ellipsis_mask", 0), ("new_axis_mask", 2)), "an ellipsis or new-axis mask"),
    ("FULLY_CONNECTED", [(1, 8), (4, 8)], [None, None], (("weights_format", 1),), "weights in a shuffled format"),
    ("MEAN", [(1, 4, 4, 6), (1,)], [None, (-1,)], (), "a reduction along 6 channels, not a multiple of 4"),
    ("MEAN", [(1, 4, 4, 8), (1,)], [None, (3,)], (), None),
])
def test_each_checked_limit_from_the_flatbuffer_fields_it_reads(name, shapes, values, options, why):
    tensors = tuple(_tensor(index, shape, value) for index, (shape, value) in enumerate(zip(shapes, values)))
    output = _tensor(len(tensors), (1, 4))
    tensors += (output,)
    operator = tflite_model.OperatorInfo(0, name, (), (), True, tuple(range(len(shapes))), (output.index,),
                                         options=options)
    compatibility = edge_tpu.compatibility_report(_report_of((operator,), tensors))
    assert _violations(compatibility) == ([(name, why)] if why else [])


def test_a_constant_beside_a_concatenation_s_one_other_input_must_be_zeros():
    def concatenation(constant):
        tensors = (_tensor(0, (1, 4, 4, 3)), constant, _tensor(2, (1, 4, 4, 6)))
        operator = tflite_model.OperatorInfo(0, "CONCATENATION", (), (), True, (0, 1), (2,),
                                             options=(("fused_activation", "NONE"), ("axis", 3)))
        return _violations(edge_tpu.compatibility_report(_report_of((operator,), tensors)))

    assert concatenation(_tensor(1, (1, 4, 4, 3), is_zero=True)) == []  # Zero padding, as Coral allows.
    assert concatenation(_tensor(1, (1, 4, 4, 3), is_zero=False)) == [
        ("CONCATENATION", "a constant input that is not all zeros")]


def test_a_constant_s_values_and_zeros_are_read_from_the_flatbuffer():
    import tf_keras
    inputs = tf_keras.Input((4, 4, 2))
    padded = tf_keras.layers.Concatenate()([inputs, tf_keras.layers.Lambda(lambda tensor: tensor * 0)(inputs)])
    outputs = tf_keras.layers.Lambda(lambda tensor: tf_keras.backend.permute_dimensions(tensor, (0, 2, 1, 3)))(
        padded)
    report = _int8_report(tf_keras.Model(inputs, outputs))
    transpose = next(op for op in report.operators if op.name == "TRANSPOSE")
    assert report.tensors[transpose.input_indices[1]].values == (0, 2, 1, 3)
    for op in report.operators:
        for index in op.input_indices:
            tensor = report.tensors[index]
            assert (tensor.is_zero is None) == (not tensor.is_constant)
