"""Tests of zscgan_tf.edge_tpu: the static Edge TPU compatibility report."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest

from zscgan_tf import edge_tpu, export, tflite_model

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
    model_bytes = export.convert_to_tflite(teacher, export.representative_dataset_from_array(samples))
    report = tflite_model.inspect_tflite(model_bytes)
    compatibility = edge_tpu.compatibility_report(report)
    assert compatibility.likely_compatible
    assert compatibility.first_cpu_op_index is None
    assert "likely compatible" in compatibility.format()[0]
    assert compatibility.summary() == "likely compatible"
    # The documented limitations of the ops present are listed for a check by hand.
    assert ("CONV_2D", "same dilation in x and y") in compatibility.limitations
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
