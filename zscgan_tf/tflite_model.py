"""Reading a TFLite flatbuffer: its tensors, operators and whether it is fully integer.

`inspect_tflite` parses model bytes with the flatbuffer schema that ships with
LiteRT (no interpreter is built) into a `TfliteModelReport`: every tensor's type,
shape and quantization parameters, every operator with its input and output types,
and the operators that are not fully integer.

Example:

    report = inspect_tflite(open("student_int8.tflite", "rb").read())
    assert report.is_fully_integer, report.non_integer_ops
    print("\\n".join(report.format()))
"""

import collections
import dataclasses
import struct
from typing import Any, List, Optional, Tuple

import numpy as np

from zscgan_tf.errors import UserError, first_line

try:  # The LiteRT wheel ships the flatbuffer schema; TensorFlow's copy is the fallback.
    from ai_edge_litert import schema_py_generated as tflite_schema
except ImportError:  # pragma: no cover
    from tensorflow.lite.python import schema_py_generated as tflite_schema

# Lines a report lists under one heading, one a kind of op; ops of further kinds are counted by name.
MAX_LISTED_OPERATORS = 8
# Indices shown on the line of one kind of op.
MAX_LISTED_INDICES = 8
FLOAT_TENSOR_TYPES = frozenset({"float32", "float16", "float64", "bfloat16"})
EIGHT_BIT_TENSOR_TYPES = frozenset({"int8", "uint8"})
DYNAMIC_DIMENSION = -1
# Constant integer tensors up to this size keep their values in `TensorInfo.values`: the axes,
# strides, paddings and permutations ops read, which the Edge TPU's limits are about.
MAX_KEPT_CONSTANT_ELEMENTS = 16
_NUMPY_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
                "float32": np.float32}

_BUILTIN_OPERATOR_NAMES = {
    code: name for name, code in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")}
_TENSOR_TYPE_NAMES = {
    code: name.lower() for name, code in vars(tflite_schema.TensorType).items()
    if not name.startswith("_")}
_ACTIVATION_NAMES = {
    code: name for name, code in vars(tflite_schema.ActivationFunctionType).items()
    if not name.startswith("_")}


def counted(names) -> str:
    """`HARD_SWISH x19, MUL x2`: each name with how often it occurs, in the order it first does."""
    return ", ".join(f"{name} x{count}" for name, count in collections.Counter(names).items())


def _indices(ops) -> str:
    """`#2, #6, #11`, the first `MAX_LISTED_INDICES` ops' indices, then `...`."""
    shown = ", ".join(f"#{op.index}" for op in ops[:MAX_LISTED_INDICES])
    return shown + (", ..." if len(ops) > MAX_LISTED_INDICES else "")


def listed_operators(heading: str, ops, with_types: bool = False) -> List[str]:
    """Report lines `  - <heading>: <ops>`, the ops of one name (with `with_types`, and the same
    input and output types) on one line, in the order of their first op:
    `  - not integer: ELU x5 (#2, #6, #11, #15, #20), inputs float32; outputs float32`, a
    single op as `ELU (#8), ...`. Up to `MAX_LISTED_OPERATORS` lines, then one counting the
    rest by name: `  - not integer: 22 more (ELU x7, QUANTIZE x8, ...)`."""
    groups = {}
    for op in ops:
        key = (op.name, op.input_dtypes, op.output_dtypes) if with_types else op.name
        groups.setdefault(key, []).append(op)
    groups = list(groups.values())
    lines = []
    for group in groups[:MAX_LISTED_OPERATORS]:
        first = group[0]
        count = f" x{len(group)}" if len(group) > 1 else ""
        types = (f", inputs {', '.join(first.input_dtypes)}; outputs {', '.join(first.output_dtypes)}"
                 if with_types else "")
        lines.append(f"  - {heading}: {first.name}{count} ({_indices(group)}){types}")
    rest = [op.name for group in groups[MAX_LISTED_OPERATORS:] for op in group]
    if rest:
        lines.append(f"  - {heading}: {len(rest)} more ({counted(rest)})")
    return lines


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of a TFLite model.

    Attributes:
      index: index in the main subgraph.
      name: tensor name.
      dtype: numpy-style type name (`int8`, `float32`, ...).
      shape: static shape.
      shape_signature: shape with -1 for dynamic dimensions.
      scales: quantization scales (one per channel for per-channel tensors).
      zero_points: quantization zero points.
      quantized_dimension: the channel axis of per-channel quantization.
      is_constant: whether the tensor holds constant data (weights, biases, shapes).
      values: a constant integer tensor's values, flattened, when it has at most
        `MAX_KEPT_CONSTANT_ELEMENTS` (axes, strides, paddings, permutations); else None.
      is_zero: for a constant, whether every value is zero (as a real number: each
        quantized value its zero point); else None.
    """

    index: int
    name: str
    dtype: str
    shape: Tuple[int, ...]
    shape_signature: Tuple[int, ...]
    scales: Tuple[float, ...] = ()
    zero_points: Tuple[int, ...] = ()
    quantized_dimension: int = 0
    is_constant: bool = False
    values: Optional[Tuple[int, ...]] = None
    is_zero: Optional[bool] = None

    @property
    def is_quantized(self) -> bool:
        return bool(self.scales)

    @property
    def is_dynamic(self) -> bool:
        return DYNAMIC_DIMENSION in self.shape_signature

    def describe(self) -> str:
        """One line: dtype, shape and quantization."""
        text = f"{self.dtype} {list(self.shape_signature)}"
        if len(self.scales) == 1:
            text += f", scale {self.scales[0]:.6g}, zero point {self.zero_points[0]}"
        elif self.scales:
            text += f", per-channel ({len(self.scales)} scales)"
        return text


@dataclasses.dataclass(frozen=True)
class OperatorInfo:
    """One operator of a TFLite model.

    Attributes:
      index: execution order in the main subgraph.
      name: builtin name (`CONV_2D`) or the custom op's code.
      input_dtypes: types of its input tensors (absent optional inputs skipped).
      output_dtypes: types of its output tensors.
      is_integer: no float tensor among its inputs and outputs.
      input_indices: tensor indices of its inputs (absent optional inputs skipped).
      output_indices: tensor indices of its outputs.
      options: (name, value) pairs of the builtin options that devices' limits are about
        (`_operator_options`): `fused_activation` (`NONE`, `RELU`, ...), `dilation`
        (h, w), `weights_format`, `axis`, `ellipsis_mask`, `new_axis_mask`,
        `squeeze_dims`; read with `option`.
    """

    index: int
    name: str
    input_dtypes: Tuple[str, ...]
    output_dtypes: Tuple[str, ...]
    is_integer: bool
    input_indices: Tuple[int, ...] = ()
    output_indices: Tuple[int, ...] = ()
    options: Tuple[Tuple[str, Any], ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        """The builtin option `name` (see `options`), or `default` where the op has none."""
        return dict(self.options).get(name, default)


@dataclasses.dataclass(frozen=True)
class TfliteModelReport:
    """What a TFLite flatbuffer contains, read from its main subgraph.

    Attributes:
      inputs: the model inputs.
      outputs: the model outputs.
      operators: every operator, in execution order.
      tensors: every tensor of the main subgraph.
      num_subgraphs: subgraphs in the model (control flow adds some).
    """

    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    operators: Tuple[OperatorInfo, ...]
    tensors: Tuple[TensorInfo, ...]
    num_subgraphs: int = 1

    @property
    def non_integer_ops(self) -> Tuple[OperatorInfo, ...]:
        """Operators reading or writing a float tensor (the ones that are not integer)."""
        return tuple(op for op in self.operators if not op.is_integer)

    @property
    def is_fully_integer(self) -> bool:
        """No float operator, and integer model inputs and outputs."""
        io_integer = all(tensor.dtype not in FLOAT_TENSOR_TYPES
                         for tensor in self.inputs + self.outputs)
        return io_integer and not self.non_integer_ops

    @property
    def is_float(self) -> bool:
        """Float inputs and outputs, and no 8-bit tensor in any operator (not even a weight)."""
        io_float = all(tensor.dtype in FLOAT_TENSOR_TYPES for tensor in self.inputs + self.outputs)
        return io_float and bool(self.operators) and not any(
            EIGHT_BIT_TENSOR_TYPES.intersection(op.input_dtypes + op.output_dtypes)
            for op in self.operators)

    @property
    def has_static_batch_one(self) -> bool:
        """Every input and output has batch 1 and no dynamic dimension."""
        return all(tensor.shape_signature[:1] == (1,) and not tensor.is_dynamic
                   for tensor in self.inputs + self.outputs)

    def operator_counts(self) -> "collections.Counter[str]":
        return collections.Counter(op.name for op in self.operators)

    def format(self) -> List[str]:
        """Markdown bullet lines for reports."""
        lines = [f"- input: {tensor.describe()}" for tensor in self.inputs]
        lines += [f"- output: {tensor.describe()}" for tensor in self.outputs]
        counts = counted(sorted(op.name for op in self.operators))
        lines.append(f"- operators ({len(self.operators)}): {counts}")
        non_integer_ops = self.non_integer_ops
        if self.is_float:
            # Listing every operator of a float model would say nothing more.
            lines.append(f"- fully integer: no (float: none of its {len(self.operators)} "
                         "operators is integer)")
            non_integer_ops = ()
        else:
            lines.append(f"- fully integer: {'yes' if self.is_fully_integer else 'no'}")
        lines += listed_operators("not integer", non_integer_ops, with_types=True)
        lines.append(f"- static batch 1: {'yes' if self.has_static_batch_one else 'no'}")
        if self.num_subgraphs > 1:
            lines.append(f"- subgraphs: {self.num_subgraphs} (only the main one inspected)")
        return lines


def _buffer_has_data(model, buffer_index: int) -> bool:
    if buffer_index <= 0 or buffer_index >= model.BuffersLength():
        return False
    buffer = model.Buffers(buffer_index)
    # Models over 2 GB keep data outside the flatbuffer, addressed by offset.
    return buffer.DataLength() > 0 or getattr(buffer, "Offset", lambda: 0)() > 1


def _constant_data(model, buffer_index: int, dtype: str) -> Optional[np.ndarray]:
    """A constant's values, flat; None where its type has no numpy form here, or its data
    lies outside the flatbuffer (models over 2 GB)."""
    if dtype not in _NUMPY_TYPES or not 0 < buffer_index < model.BuffersLength():
        return None
    data = model.Buffers(buffer_index).DataAsNumpy()
    if isinstance(data, int):  # No data in the flatbuffer.
        return None
    return np.frombuffer(data.tobytes(), _NUMPY_TYPES[dtype])


def _is_zero(values: np.ndarray, shape: Tuple[int, ...], zero_points: Tuple[int, ...],
             quantized_dimension: int) -> bool:
    """Whether quantized (or float) `values` are all zero as real numbers."""
    if len(set(zero_points)) <= 1:
        return bool(np.all(values == (zero_points[0] if zero_points else 0)))
    # Per-channel zero points, along the quantized dimension.
    broadcast = [1] * len(shape)
    broadcast[quantized_dimension] = len(zero_points)
    return bool(np.all(values.reshape(shape) == np.asarray(zero_points).reshape(broadcast)))


def _tensor_info(model, subgraph, index: int) -> TensorInfo:
    tensor = subgraph.Tensors(index)
    shape = tuple(int(dim) for dim in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    signature = (tuple(int(dim) for dim in tensor.ShapeSignatureAsNumpy())
                 if tensor.ShapeSignatureLength() else shape)
    scales, zero_points, quantized_dimension = (), (), 0
    quantization = tensor.Quantization()
    if quantization is not None and quantization.ScaleLength():
        scales = tuple(float(value) for value in quantization.ScaleAsNumpy())
        zero_points = (tuple(int(value) for value in quantization.ZeroPointAsNumpy())
                       if quantization.ZeroPointLength() else (0,) * len(scales))
        quantized_dimension = int(quantization.QuantizedDimension())
    name = tensor.Name()
    dtype = _TENSOR_TYPE_NAMES.get(tensor.Type(), f"type{tensor.Type()}")
    is_constant = _buffer_has_data(model, tensor.Buffer())
    values = is_zero = None
    if is_constant:
        data = _constant_data(model, tensor.Buffer(), dtype)
        if data is not None and data.size == int(np.prod(shape)):
            is_zero = _is_zero(data, shape, zero_points, quantized_dimension)
            if data.size <= MAX_KEPT_CONSTANT_ELEMENTS and np.issubdtype(data.dtype, np.integer):
                values = tuple(int(value) for value in data)
    return TensorInfo(
        index=index,
        name=name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name),
        dtype=dtype,
        shape=shape,
        shape_signature=signature,
        scales=scales,
        zero_points=zero_points,
        quantized_dimension=quantized_dimension,
        is_constant=is_constant,
        values=values,
        is_zero=is_zero)


def _operator_name(model, opcode_index: int) -> str:
    opcode = model.OperatorCodes(opcode_index)
    # Schema v3a: codes above 127 live in BuiltinCode, older ones in the deprecated field.
    code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
    name = _BUILTIN_OPERATOR_NAMES.get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        custom_code = opcode.CustomCode()
        if isinstance(custom_code, bytes):
            custom_code = custom_code.decode("utf-8", "replace")
        return f"CUSTOM:{custom_code}"
    return name


# Builtin options read into `OperatorInfo.options`: (options table, (option, accessor), ...).
_READ_OPTIONS = {
    "CONV_2D": ("Conv2DOptions", ("fused_activation", "FusedActivationFunction"),
                ("dilation", ("DilationHFactor", "DilationWFactor"))),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", ("fused_activation", "FusedActivationFunction"),
                          ("dilation", ("DilationHFactor", "DilationWFactor"))),
    "AVERAGE_POOL_2D": ("Pool2DOptions", ("fused_activation", "FusedActivationFunction")),
    "MAX_POOL_2D": ("Pool2DOptions", ("fused_activation", "FusedActivationFunction")),
    "CONCATENATION": ("ConcatenationOptions", ("fused_activation", "FusedActivationFunction"), ("axis", "Axis")),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ("fused_activation", "FusedActivationFunction"),
                        ("weights_format", "WeightsFormat")),
    "PACK": ("PackOptions", ("axis", "Axis")),
    "STRIDED_SLICE": ("StridedSliceOptions", ("ellipsis_mask", "EllipsisMask"), ("new_axis_mask", "NewAxisMask")),
    "SQUEEZE": ("SqueezeOptions", ("squeeze_dims", "SqueezeDimsAsNumpy")),
}


def _operator_options(operator, name: str) -> Tuple[Tuple[str, Any], ...]:
    """The builtin options of `_READ_OPTIONS` an operator of builtin `name` has."""
    if name not in _READ_OPTIONS or operator.BuiltinOptions() is None:
        return ()
    table_name, *fields = _READ_OPTIONS[name]
    table = getattr(tflite_schema, table_name)()
    table.Init(operator.BuiltinOptions().Bytes, operator.BuiltinOptions().Pos)
    options = []
    for option, accessor in fields:
        if isinstance(accessor, tuple):
            value = tuple(int(getattr(table, part)()) for part in accessor)
        elif option == "squeeze_dims":  # A vector, absent (0) when every dimension of 1 goes.
            dims = getattr(table, accessor)()
            value = tuple(int(dim) for dim in dims) if isinstance(dims, np.ndarray) else ()
        else:
            value = int(getattr(table, accessor)())
        if option == "fused_activation":
            value = _ACTIVATION_NAMES.get(value, f"activation{value}")
        options.append((option, value))
    return tuple(options)


def inspect_tflite(model_bytes: bytes) -> TfliteModelReport:
    """Reads I/O, operators and tensor types from a TFLite flatbuffer.

    An operator counts as not integer when any of its input or output tensors,
    constant or not, is float (float32, float16, float64, bfloat16); a QUANTIZE op
    reading a float input or a DEQUANTIZE writing a float output is therefore
    flagged, and so is any op of a float or dynamic-range model.

    Args:
      model_bytes: the flatbuffer, e.g. from `convert_to_tflite`.

    Returns:
      The report of the main (first) subgraph.

    Raises:
      UserError: if the bytes are not a TFLite flatbuffer, or a damaged or truncated one.
    """
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise UserError(f"model_bytes must be bytes, got {type(model_bytes).__name__}")
    model_bytes = bytes(model_bytes)
    if not tflite_schema.Model.ModelBufferHasIdentifier(model_bytes, 0):
        raise UserError(
            f"not a TFLite flatbuffer (identifier {model_bytes[4:8]!r}, expected b'TFL3')")
    try:
        return _report_of(model_bytes)
    except (struct.error, IndexError) as error:  # Offsets that point past the end.
        raise UserError(f"a damaged or truncated TFLite flatbuffer ({len(model_bytes):,} bytes): "
                        f"{first_line(error)}") from error


def _report_of(model_bytes: bytes) -> TfliteModelReport:
    """`inspect_tflite`'s report of bytes that begin as a TFLite flatbuffer does."""
    model = tflite_schema.Model.GetRootAs(model_bytes, 0)
    if model.SubgraphsLength() == 0:
        raise UserError("the TFLite model has no subgraph")
    subgraph = model.Subgraphs(0)
    tensors = tuple(_tensor_info(model, subgraph, index)
                    for index in range(subgraph.TensorsLength()))

    operators = []
    for op_index in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(op_index)
        # -1 marks an absent optional input (e.g. a FULLY_CONNECTED without bias).
        input_indices = tuple(int(i) for i in operator.InputsAsNumpy() if i >= 0) \
            if operator.InputsLength() else ()
        output_indices = tuple(int(i) for i in operator.OutputsAsNumpy() if i >= 0) \
            if operator.OutputsLength() else ()
        input_dtypes = tuple(tensors[i].dtype for i in input_indices)
        output_dtypes = tuple(tensors[i].dtype for i in output_indices)
        name = _operator_name(model, operator.OpcodeIndex())
        operators.append(OperatorInfo(
            index=op_index,
            name=name,
            input_dtypes=input_dtypes,
            output_dtypes=output_dtypes,
            is_integer=not FLOAT_TENSOR_TYPES.intersection(input_dtypes + output_dtypes),
            input_indices=input_indices,
            output_indices=output_indices,
            options=_operator_options(operator, name)))

    return TfliteModelReport(
        inputs=tuple(tensors[int(i)] for i in subgraph.InputsAsNumpy()),
        outputs=tuple(tensors[int(i)] for i in subgraph.OutputsAsNumpy()),
        operators=tuple(operators),
        tensors=tensors,
        num_subgraphs=model.SubgraphsLength())
