"""An Edge TPU compatibility report, read from a TFLite model without its compiler.

The Edge TPU compiler (`edgetpu_compiler`, a Debian package from Coral's own
repository, not on PyPI) is often not at hand, so `compatibility_report` holds a
`tflite_model.TfliteModelReport` against the Coral Edge TPU's documented
requirements: supported operators and the limits documented for each (a pooling
with a fused activation, a convolution dilated differently in x and y, a softmax
over more than a vector, ...), 8-bit tensors, static shapes, at most 3 dimensions
larger than 1. It is a static check; the compiler has the last word.

Example:

    report = tflite_model.inspect_tflite(model_bytes)
    print("\\n".join(compatibility_report(report).format()))
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from zscgan_tf.progress import count_of
from zscgan_tf.tflite_model import (EIGHT_BIT_TENSOR_TYPES, FLOAT_TENSOR_TYPES, OperatorInfo, TensorInfo,
                                    TfliteModelReport, counted, listed_operators)

# The Coral Edge TPU's supported operations, from coral.ai/docs/edgetpu/models-intro
# ("Supported operations", Edge TPU compiler 16), as TFLite builtin names with the
# documented limitations (MEAN's channel multiple, FULLY_CONNECTED's output and PRELU's
# alpha from the same table as Axis reprints it for its ARTPEC-7, an Edge TPU). Written
# down from the documentation, not fetched: check the page (and run `edgetpu_compiler`)
# before relying on an edge case. The limitations of the ops in `_LIMIT_CHECKS` are
# checked; the others are listed for a check by hand.
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
    ("MEAN", "no reduction along the batch dimension; a reduction along channels needs a multiple "
             "of 4 of them"),
    ("MINIMUM", ""),
    ("MUL", ""),
    ("PACK", "no packing along the batch dimension"),
    ("PAD", "no padding along the batch dimension"),
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
    ("SQUEEZE", "only leading dimensions of 1 removed (no relayout: 1x5x10 is fine, 5x1x10 is not)"),
    ("STRIDED_SLICE", "every stride 1, no ellipsis mask and no new-axis mask"),
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
# The Edge TPU's on-chip memory for a model's parameters, about 8 MB (Coral's compiler documentation,
# "parameter data caching"): the compiler streams the parameters beyond it from host memory at
# every inference, which slows it (fully connected layers most).
EDGE_TPU_PARAMETER_CACHE_BYTES = 8 * 1000 * 1000
# SOFTMAX's input limit.
EDGE_TPU_MAX_SOFTMAX_ELEMENTS = 16000
# A MEAN along channels needs a multiple of this many of them.
EDGE_TPU_MEAN_CHANNEL_MULTIPLE = 4
BATCH_AXIS = 0
# Ops beyond their limits listed one a line in a report; the rest are counted.
MAX_LISTED_VIOLATIONS = 8


def _bytes_of(tensor: TensorInfo) -> int:
    """The bytes a tensor's values take: 4 bits each for int4, 2 bytes for bfloat16, numpy's size
    for the others, 0 for a type of no fixed size (a string)."""
    count = int(np.prod(tensor.shape, dtype=np.int64))
    if tensor.dtype in ("int4", "uint4"):
        return (count + 1) // 2
    if tensor.dtype == "bfloat16":
        return 2 * count
    try:
        return count * np.dtype(tensor.dtype).itemsize
    except TypeError:
        return 0


def _dimensions_above_one(shape: Tuple[int, ...]) -> int:
    """Counts every dimension, batch too: the models exported here have a batch of 1."""
    return sum(1 for dim in shape if dim > 1)


def _axes(tensor: TensorInfo, rank: int) -> Optional[Tuple[int, ...]]:
    """A constant axes tensor's axes, made non-negative; None if its values are not known."""
    if tensor.values is None:
        return None
    return tuple(axis % rank if rank else axis for axis in tensor.values)


def _fused_activation(op: OperatorInfo, tensors) -> Optional[str]:
    activation = op.option("fused_activation", "NONE")
    return None if activation == "NONE" else f"a fused {activation}"


def _dilation(op: OperatorInfo, tensors) -> Optional[str]:
    height, width = op.option("dilation", (1, 1))
    return None if height == width else f"dilation {height} in y and {width} in x"


def _concatenation(op: OperatorInfo, tensors) -> Optional[str]:
    fused = _fused_activation(op, tensors)
    if fused:
        return fused
    constants = [tensors[index] for index in op.input_indices if tensors[index].is_constant]
    if not constants:
        return None
    if len(op.input_indices) != 2:
        return f"a constant among {len(op.input_indices)} inputs"
    if constants[0].is_zero is False:
        return "a constant input that is not all zeros"
    return None


def _fully_connected(op: OperatorInfo, tensors) -> Optional[str]:
    if op.option("weights_format", 0):
        return "weights in a shuffled format"
    output = tensors[op.output_indices[0]]
    return f"output {list(output.shape)}, not one-dimensional" if _dimensions_above_one(output.shape) > 1 else None


def _softmax(op: OperatorInfo, tensors) -> Optional[str]:
    shape = tensors[op.input_indices[0]].shape
    if _dimensions_above_one(shape) > 1:
        return f"input {list(shape)}, not one-dimensional"
    elements = int(np.prod(shape)) if shape else 1
    return (f"{elements} input elements, more than {EDGE_TPU_MAX_SOFTMAX_ELEMENTS}"
            if elements > EDGE_TPU_MAX_SOFTMAX_ELEMENTS else None)


def _prelu(op: OperatorInfo, tensors) -> Optional[str]:
    alpha = tensors[op.input_indices[1]]
    if not alpha.is_constant:
        return "an alpha that is not constant"
    return (f"alpha {list(alpha.shape)} varies along more than the innermost dimension"
            if any(dim > 1 for dim in alpha.shape[:-1]) else None)


def _reduction(op: OperatorInfo, tensors) -> Optional[str]:
    """MEAN, SUM, REDUCE_MAX, REDUCE_MIN: axes in their second input."""
    shape = tensors[op.input_indices[0]].shape
    axes = _axes(tensors[op.input_indices[1]], len(shape))
    if axes is None:
        return None
    if BATCH_AXIS in axes and len(shape) > 1:
        return "a reduction along the batch dimension"
    channels = shape[-1] if shape else 0
    if (op.name == "MEAN" and len(shape) - 1 in axes and len(shape) > 1
            and channels % EDGE_TPU_MEAN_CHANNEL_MULTIPLE):
        return f"a reduction along {channels} channels, not a multiple of {EDGE_TPU_MEAN_CHANNEL_MULTIPLE}"
    return None


def _pad(op: OperatorInfo, tensors) -> Optional[str]:
    paddings = tensors[op.input_indices[1]].values
    return "padding along the batch dimension" if paddings and any(paddings[:2]) else None


def _split(op: OperatorInfo, tensors) -> Optional[str]:
    shape = tensors[op.input_indices[1]].shape
    axes = _axes(tensors[op.input_indices[0]], len(shape))
    return "a split along the batch dimension" if axes and BATCH_AXIS in axes else None


def _pack(op: OperatorInfo, tensors) -> Optional[str]:
    return "packing along the batch dimension" if op.option("axis", 1) == BATCH_AXIS else None


def _transpose(op: OperatorInfo, tensors) -> Optional[str]:
    permutation = tensors[op.input_indices[1]].values
    return f"permutation {list(permutation)} moves the batch dimension" if permutation and permutation[0] else None


def _strided_slice(op: OperatorInfo, tensors) -> Optional[str]:
    strides = tensors[op.input_indices[3]].values if len(op.input_indices) > 3 else None
    if strides is None:
        return "strides that are not constant" if len(op.input_indices) > 3 else None
    if any(stride != 1 for stride in strides):
        return f"strides {list(strides)}, not all 1"
    if op.option("ellipsis_mask", 0) or op.option("new_axis_mask", 0):
        return "an ellipsis or new-axis mask"
    return None


def _squeeze(op: OperatorInfo, tensors) -> Optional[str]:
    shape = tensors[op.input_indices[0]].shape
    removed = set(dim % len(shape) for dim in op.option("squeeze_dims", ())) if shape else set()
    removed = removed or {axis for axis, dim in enumerate(shape) if dim == 1}
    first_above_one = next((axis for axis, dim in enumerate(shape) if dim > 1), len(shape))
    return (f"input {list(shape)} loses a dimension of 1 after one larger (a relayout)"
            if any(axis > first_above_one for axis in removed) else None)


# The documented limitations checked from the flatbuffer: the reason an op breaks its limit, or None.
_LIMIT_CHECKS: Dict[str, Callable[[OperatorInfo, Tuple[TensorInfo, ...]], Optional[str]]] = {
    "AVERAGE_POOL_2D": _fused_activation,
    "MAX_POOL_2D": _fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _dilation,
    "DEPTHWISE_CONV_2D": _dilation,
    "FULLY_CONNECTED": _fully_connected,
    "SOFTMAX": _softmax,
    "PRELU": _prelu,
    "MEAN": _reduction,
    "SUM": _reduction,
    "REDUCE_MAX": _reduction,
    "REDUCE_MIN": _reduction,
    "PAD": _pad,
    "SPLIT": _split,
    "PACK": _pack,
    "TRANSPOSE": _transpose,
    "STRIDED_SLICE": _strided_slice,
    "SQUEEZE": _squeeze,
}


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
      limitations: (op name, documented limitation) of the ops present whose limitation
        is not checked here (`_LIMIT_CHECKS`), to check by hand.
      shape_ops: operators reading or writing a dynamic or oversized tensor, which the
        compiler cannot map either.
      limit_violations: (operator, why) for each supported operator beyond the limits
        documented for it: the compiler leaves it to the CPU, as an unsupported one.
      parameter_bytes: bytes of the constant tensors (weights, biases), which the Edge TPU
        caches on chip up to `EDGE_TPU_PARAMETER_CACHE_BYTES`: beyond, a note (the model
        maps, but runs slower), not a failed check.
      compiler_run: always False.
    """

    unsupported_ops: Tuple[OperatorInfo, ...]
    non_eight_bit_ops: Tuple[OperatorInfo, ...]
    dynamic_tensors: Tuple[str, ...]
    oversized_tensors: Tuple[str, ...]
    limitations: Tuple[Tuple[str, str], ...]
    shape_ops: Tuple[OperatorInfo, ...] = ()
    limit_violations: Tuple[Tuple[OperatorInfo, str], ...] = ()
    parameter_bytes: int = 0
    compiler_run: bool = False

    @property
    def first_cpu_op_index(self) -> Optional[int]:
        """Index of the first op the compiler would leave to the CPU, if any."""
        indices = [op.index for op in self.unsupported_ops + self.non_eight_bit_ops + self.shape_ops
                   + tuple(op for op, _ in self.limit_violations)]
        return min(indices) if indices else None

    @property
    def likely_compatible(self) -> bool:
        """No check failed (the compiler may still disagree)."""
        return not (self.unsupported_ops or self.non_eight_bit_ops or self.dynamic_tensors
                    or self.oversized_tensors or self.limit_violations)

    def summary(self) -> str:
        """The verdict in a phrase, for a run's report: `likely compatible`, or `not as is:
        HARD_SWISH x19 not in Coral's list; 3 ops not 8-bit`."""
        if self.likely_compatible:
            return "likely compatible"
        reasons = []
        if self.unsupported_ops:
            reasons.append(f"{counted(op.name for op in self.unsupported_ops)} not in Coral's list")
        if self.limit_violations:
            reasons.append(f"{counted(op.name for op, _ in self.limit_violations)} beyond Coral's limits")
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
        lines += [f"  - beyond Coral's limits: {op.name} (#{op.index}): {why}"
                  for op, why in self.limit_violations[:MAX_LISTED_VIOLATIONS]]
        if len(self.limit_violations) > MAX_LISTED_VIOLATIONS:
            lines.append(f"  - beyond Coral's limits: {len(self.limit_violations) - MAX_LISTED_VIOLATIONS} more")
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
        if self.parameter_bytes > EDGE_TPU_PARAMETER_CACHE_BYTES:
            lines.append(f"  - parameters: {self.parameter_bytes / 1e6:.1f} MB, beyond the Edge TPU's on-chip "
                         f"memory for them ({EDGE_TPU_PARAMETER_CACHE_BYTES / 1e6:.0f} MB): the compiler streams the "
                         "rest from host memory at every inference, which slows it")
        return lines


def compatibility_report(report: TfliteModelReport) -> EdgeTpuCompatibility:
    """Checks a `TfliteModelReport` against the Edge TPU's documented requirements.

    Checked: operators against `EDGE_TPU_SUPPORTED_OPERATIONS`, and against the limits
    documented for each where `_LIMIT_CHECKS` reads them from the flatbuffer (the
    others are listed for the ops present); every non-constant tensor of every op is
    int8 or uint8 (and no tensor is float); no dynamic dimension; no tensor with more
    than 3 dimensions larger than 1.

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
                        if limitation and name in present and name not in _LIMIT_CHECKS)
    violations = []
    for op in report.operators:
        why = _LIMIT_CHECKS[op.name](op, report.tensors) if op.name in _LIMIT_CHECKS else None
        if why:
            violations.append((op, why))
    return EdgeTpuCompatibility(
        unsupported_ops=unsupported,
        non_eight_bit_ops=non_eight_bit,
        dynamic_tensors=tuple(report.tensors[index].name for index in dynamic_indices),
        oversized_tensors=tuple(report.tensors[index].name for index in oversized_indices),
        limitations=limitations,
        shape_ops=shape_ops,
        limit_violations=tuple(violations),
        parameter_bytes=sum(_bytes_of(tensor) for tensor in report.tensors if tensor.is_constant))
