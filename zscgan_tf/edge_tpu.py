"""An Edge TPU compatibility report, read from a TFLite model without its compiler.

The Edge TPU compiler (`edgetpu_compiler`, a Debian package from Coral's own
repository, not on PyPI) is often not at hand, so `compatibility_report` holds a
`tflite_model.TfliteModelReport` against the Coral Edge TPU's documented
requirements: supported operators, 8-bit tensors, static shapes, at most 3
dimensions larger than 1. It is a static check; the compiler has the last word.

Example:

    report = tflite_model.inspect_tflite(model_bytes)
    print("\\n".join(compatibility_report(report).format()))
"""

import dataclasses
from typing import List, Optional, Tuple

from zscgan_tf.progress import count_of
from zscgan_tf.tflite_model import (EIGHT_BIT_TENSOR_TYPES, FLOAT_TENSOR_TYPES, OperatorInfo,
                                    TfliteModelReport, counted, listed_operators)

# The Coral Edge TPU's supported operations, from coral.ai/docs/edgetpu/models-intro
# ("Supported operations", Edge TPU compiler 16), as TFLite builtin names with the
# documented limitations (MEAN's channel multiple, FULLY_CONNECTED's output and PRELU's
# alpha from the same table as Axis reprints it for its ARTPEC-7, an Edge TPU). Written
# down from the documentation, not fetched: check the page (and run `edgetpu_compiler`)
# before relying on an edge case.
EDGE_TPU_SUPPORTED_OPERATIONS = (
    ("ADD", ""),
    ("AVERAGE_POOL_2D", "no fused activation function"),
    ("CONCATENATION", "no fused activation function; a constant input must be all "
                      "zeros and the only other input"),
    ("CONV_2D", "same dilation in x and y"),
    ("DEPTHWISE_CONV_2D", "same dilation in x and y"),
    ("EXPAND_DIMS", ""),
    ("FULLY_CONNECTED", "only the default weights format; one-dimensional output"),
    ("L2_NORMALIZATION", ""),
    ("LOGISTIC", ""),
    ("LSTM", "unidirectional only"),
    ("UNIDIRECTIONAL_SEQUENCE_LSTM", ""),
    ("MAXIMUM", ""),
    ("MAX_POOL_2D", "no fused activation function"),
    ("MEAN", "no reduction along the batch dimension; 4D or fewer dimensions; a reduction along "
             "channels needs a multiple of 4 of them"),
    ("MINIMUM", ""),
    ("MUL", ""),
    ("PACK", "no packing along the batch dimension"),
    ("PAD", "no padding along the batch dimension; 4D or fewer dimensions"),
    ("PRELU", "alpha constant and varying along the innermost dimension only (Keras PReLU: "
              "shared_axes=[1, 2])"),
    ("QUANTIZE", ""),
    ("REDUCE_MAX", "no reduction along the batch dimension"),
    ("REDUCE_MIN", "no reduction along the batch dimension"),
    ("RELU", ""),
    ("RELU6", ""),
    ("RELU_N1_TO_1", ""),
    ("RESHAPE", "large reshapes may stay on the CPU"),
    ("RESIZE_BILINEAR", "3D input/output; may stay on the CPU to avoid precision loss"),
    ("RESIZE_NEAREST_NEIGHBOR", "3D input/output; may stay on the CPU"),
    ("RSQRT", ""),
    ("SLICE", ""),
    ("SOFTMAX", "1D input with at most 16000 elements"),
    ("SPACE_TO_DEPTH", ""),
    ("SPLIT", "no split along the batch dimension"),
    ("SQUEEZE", ""),
    ("STRIDED_SLICE", "strides all positive or all negative"),
    ("SUB", ""),
    ("SUM", "no reduction along the batch dimension"),
    ("SQUARED_DIFFERENCE", ""),
    ("TANH", ""),
    ("TRANSPOSE", "no transposition of the batch dimension"),
    ("TRANSPOSE_CONV", ""),
)
EDGE_TPU_SUPPORTED_OP_NAMES = frozenset(name for name, _ in EDGE_TPU_SUPPORTED_OPERATIONS)
# Edge TPU tensors may be 1-, 2- or 3-D; beyond that only the 3 innermost
# dimensions may be larger than 1.
EDGE_TPU_MAX_TENSOR_RANK = 3


@dataclasses.dataclass(frozen=True)
class EdgeTpuCompatibility:
    """A TFLite model held against the Edge TPU's documented requirements.

    The Edge TPU compiler was not run: this is a static check. The compiler maps
    operators to the Edge TPU in order until the first one it cannot map; that one
    and everything after it run on the CPU.

    Attributes:
      unsupported_ops: operators not in `EDGE_TPU_SUPPORTED_OPERATIONS`.
      non_eight_bit_ops: operators with a float tensor, or a non-constant tensor that
        is not int8/uint8.
      dynamic_tensors: names of tensors with a dynamic dimension.
      oversized_tensors: names of tensors with more than 3 dimensions larger than 1
        (beyond 3-D only the innermost 3 dimensions may exceed 1).
      limitations: (op name, documented limitation) of the ops present, to check by
        hand.
      shape_ops: operators reading or writing a dynamic or oversized tensor, which the
        compiler cannot map either.
      compiler_run: always False.
    """

    unsupported_ops: Tuple[OperatorInfo, ...]
    non_eight_bit_ops: Tuple[OperatorInfo, ...]
    dynamic_tensors: Tuple[str, ...]
    oversized_tensors: Tuple[str, ...]
    limitations: Tuple[Tuple[str, str], ...]
    shape_ops: Tuple[OperatorInfo, ...] = ()
    compiler_run: bool = False

    @property
    def first_cpu_op_index(self) -> Optional[int]:
        """Index of the first op the compiler would leave to the CPU, if any."""
        indices = [op.index for op in self.unsupported_ops + self.non_eight_bit_ops + self.shape_ops]
        return min(indices) if indices else None

    @property
    def likely_compatible(self) -> bool:
        """No check failed (the compiler may still disagree)."""
        return not (self.unsupported_ops or self.non_eight_bit_ops or self.dynamic_tensors
                    or self.oversized_tensors)

    def summary(self) -> str:
        """The verdict in a phrase, for a run's report: `likely compatible`, or `not as is:
        HARD_SWISH x19 not in Coral's list; 3 ops not 8-bit`."""
        if self.likely_compatible:
            return "likely compatible"
        reasons = []
        if self.unsupported_ops:
            reasons.append(f"{counted(op.name for op in self.unsupported_ops)} not in Coral's list")
        if self.non_eight_bit_ops:
            reasons.append(f"{count_of(len(self.non_eight_bit_ops), 'op')} not 8-bit")
        if self.dynamic_tensors:
            reasons.append("dynamic shapes")
        if self.oversized_tensors:
            reasons.append("tensors of more than 3 dimensions larger than 1")
        return "not as is: " + "; ".join(reasons)

    def format(self) -> List[str]:
        """Markdown bullet lines for reports."""
        verdict = ("likely compatible" if self.likely_compatible
                   else "not compatible as is")
        lines = [f"- Edge TPU (static check, the Edge TPU compiler was not run): {verdict}"]
        lines += listed_operators("unsupported op", self.unsupported_ops)
        lines += listed_operators("not 8-bit", self.non_eight_bit_ops, with_types=True)
        if self.dynamic_tensors:
            lines.append(f"  - dynamic shapes: {', '.join(self.dynamic_tensors)}")
        if self.oversized_tensors:
            lines.append("  - more than 3 dimensions larger than 1: "
                         f"{', '.join(self.oversized_tensors)}")
        if self.first_cpu_op_index is not None:
            lines.append(f"  - ops from #{self.first_cpu_op_index} on would run on the CPU")
        for name, limitation in self.limitations:
            lines.append(f"  - check by hand: {name}: {limitation}")
        return lines


def compatibility_report(report: TfliteModelReport) -> EdgeTpuCompatibility:
    """Checks a `TfliteModelReport` against the Edge TPU's documented requirements.

    Checked: operators against `EDGE_TPU_SUPPORTED_OPERATIONS`; every non-constant
    tensor of every op is int8 or uint8 (and no tensor is float); no dynamic
    dimension; no tensor with more than 3 dimensions larger than 1. Op-specific
    limitations are listed for the ops present, not checked.

    Args:
      report: from `tflite_model.inspect_tflite`.

    Returns:
      The compatibility summary.
    """
    if not isinstance(report, TfliteModelReport):
        raise ValueError(f"report must be a TfliteModelReport, got {type(report).__name__}")
    unsupported = tuple(op for op in report.operators
                        if op.name not in EDGE_TPU_SUPPORTED_OP_NAMES)

    def is_eight_bit(op: OperatorInfo) -> bool:
        for index in op.input_indices + op.output_indices:
            tensor = report.tensors[index]
            if tensor.dtype in FLOAT_TENSOR_TYPES:
                return False
            if not tensor.is_constant and tensor.dtype not in EIGHT_BIT_TENSOR_TYPES:
                return False  # int16/int32 activations do not run on the Edge TPU
        return True

    non_eight_bit = tuple(op for op in report.operators if not is_eight_bit(op))
    dynamic_indices = [index for index, tensor in enumerate(report.tensors) if tensor.is_dynamic]
    oversized_indices = [
        index for index, tensor in enumerate(report.tensors)
        if not tensor.is_constant and len(tensor.shape) > EDGE_TPU_MAX_TENSOR_RANK
        and any(dim > 1 for dim in tensor.shape[:-EDGE_TPU_MAX_TENSOR_RANK])]
    unmappable = set(dynamic_indices + oversized_indices)
    shape_ops = tuple(op for op in report.operators if unmappable & set(op.input_indices + op.output_indices))
    present = {op.name for op in report.operators}
    limitations = tuple((name, limitation) for name, limitation in EDGE_TPU_SUPPORTED_OPERATIONS
                        if limitation and name in present)
    return EdgeTpuCompatibility(
        unsupported_ops=unsupported,
        non_eight_bit_ops=non_eight_bit,
        dynamic_tensors=tuple(report.tensors[index].name for index in dynamic_indices),
        oversized_tensors=tuple(report.tensors[index].name for index in oversized_indices),
        limitations=limitations,
        shape_ops=shape_ops)
