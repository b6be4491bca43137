"""TFLite conversion, integer checks and an Edge TPU compatibility report.

`convert_to_tflite` turns a tf_keras model (the float teacher or the TF-MOT student)
into TFLite flatbuffer bytes with a static batch-1 input. In `int8` mode the result
is fully integer: int8 kernels, int8 or uint8 input and output, and the bytes are
checked from the flatbuffer before they are returned. `inspect_tflite` reads any
flatbuffer back into a `TfliteModelReport`; `edge_tpu_report` holds that report
against the Coral Edge TPU's documented requirements (without running its compiler).

Example:

    samples = generator_samples(num_samples=256)  # teacher-space, (N, H, W, C)
    model_bytes = convert_to_tflite(
        student, representative_dataset_from_array(samples),
        output_path="work_dir/student_int8.tflite")
    report = inspect_tflite(model_bytes)
    assert report.is_fully_integer, report.non_integer_ops
    print("\\n".join(edge_tpu_report(report).format()))
"""

import collections
import dataclasses
import re
import warnings
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from zscgan_tf import quantize
from zscgan_tf.errors import UserError
from zscgan_tf.files import write_bytes_atomic

try:  # The LiteRT wheel ships the flatbuffer schema; TensorFlow's copy is the fallback.
    from ai_edge_litert import schema_py_generated as tflite_schema
except ImportError:  # pragma: no cover
    from tensorflow.lite.python import schema_py_generated as tflite_schema

MODES = ("int8", "float", "dynamic")
INTEGER_IO_DTYPES = ("int8", "uint8")
_IO_TF_DTYPES = {"int8": tf.int8, "uint8": tf.uint8}
FLOAT_TENSOR_TYPES = frozenset({"float32", "float16", "float64", "bfloat16"})
EIGHT_BIT_TENSOR_TYPES = frozenset({"int8", "uint8"})
DYNAMIC_DIMENSION = -1
# TFLite integer kernels' width; TF-MOT students below it are simulation only.
EXPORT_BITS = quantize.EXPORTABLE_BITS
_MAX_LISTED_LAYERS = 5
# The batch size every exported model is fixed to.
EXPORT_BATCH_SIZE = 1

_BUILTIN_OPERATOR_NAMES = {
    code: name for name, code in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")}
_TENSOR_TYPE_NAMES = {
    code: name.lower() for name, code in vars(tflite_schema.TensorType).items()
    if not name.startswith("_")}
# Converter messages name the ops they fail on as 'tf.Op' or 'tfl.op'.
_CONVERTER_OP_PATTERN = re.compile(r"'(tfl?\.[A-Za-z0-9_]+)'")
# Longest converter message excerpt kept in a one-line error.
_MAX_ERROR_DETAIL_CHARS = 300
# A harmless warning of the TF-MOT path (the input range comes from the QAT model).
_IGNORED_CONVERTER_WARNING = "Statistics for quantized inputs were expected"

# The Coral Edge TPU's supported operations, from coral.ai/docs/edgetpu/models-intro
# ("Supported operations", Edge TPU compiler 16), as TFLite builtin names with the
# documented limitations. Written down from the documentation, not fetched: check
# the page (and run `edgetpu_compiler`) before relying on an edge case.
EDGE_TPU_SUPPORTED_OPERATIONS = (
    ("ADD", ""),
    ("AVERAGE_POOL_2D", "no fused activation function"),
    ("CONCATENATION", "no fused activation function; a constant input must be all "
                      "zeros and the only other input"),
    ("CONV_2D", "same dilation in x and y"),
    ("DEPTHWISE_CONV_2D", "same dilation in x and y"),
    ("EXPAND_DIMS", ""),
    ("FULLY_CONNECTED", "only the default weights format"),
    ("L2_NORMALIZATION", ""),
    ("LOGISTIC", ""),
    ("LSTM", "unidirectional only"),
    ("UNIDIRECTIONAL_SEQUENCE_LSTM", ""),
    ("MAXIMUM", ""),
    ("MAX_POOL_2D", "no fused activation function"),
    ("MEAN", "no reduction along the batch dimension; 4D or fewer dimensions"),
    ("MINIMUM", ""),
    ("MUL", ""),
    ("PACK", "no packing along the batch dimension"),
    ("PAD", "no padding along the batch dimension; 4D or fewer dimensions"),
    ("PRELU", "alpha must be constant"),
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


class TfliteConversionError(UserError):
    """The TFLite converter could not produce the requested model."""


RepresentativeDataset = Callable[[], Iterator[List[np.ndarray]]]


# ------------------------------------------------------------------------ conversion


def representative_dataset_from_array(images: np.ndarray) -> RepresentativeDataset:
    """Wraps teacher-space samples as a TFLite `representative_dataset`.

    Args:
      images: float array of shape (N, ...) with N >= 1, e.g. generator samples.

    Returns:
      A zero-argument callable yielding `[images[i:i + 1]]` (float32), one sample
      at a time, as `TFLiteConverter.representative_dataset` expects.

    Raises:
      ValueError: for an empty, scalar or non-finite array.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(
            f"images must have shape (N>0, ...), got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or infinite values")

    def representative_dataset():
        for index in range(images.shape[0]):
            yield [images[index:index + 1]]

    return representative_dataset


def is_quantization_aware(model: tf_keras.Model) -> bool:
    """Whether `model` carries TF-MOT fake-quantization layers."""
    return any(isinstance(layer, (tfmot.quantization.keras.QuantizeWrapper,
                                  quantize.quantize_layer.QuantizeLayer))
               for layer in model.layers)


def _check_eight_bit_student(model: tf_keras.Model) -> None:
    """Refuses TF-MOT students simulating fewer than 8 bits (see `QuantizationScheme`)."""
    low_bit_layers = [
        f"{row.name} (w{row.weight_bits or '-'}a{row.activation_bits or '-'})"
        for row in quantize.describe_student(model)
        if min(row.weight_bits or EXPORT_BITS, row.activation_bits or EXPORT_BITS) < EXPORT_BITS]
    if low_bit_layers:
        raise UserError(
            f"{model.name!r} simulates fewer than {EXPORT_BITS} bits in "
            f"{', '.join(low_bit_layers[:_MAX_LISTED_LAYERS])}; TFLite kernels are "
            f"{EXPORT_BITS}-bit, so only a W8A8 student can be exported")


def _batch_one_input_spec(model: tf_keras.Model) -> tf.TensorSpec:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(
            f"export supports models with one input and one output; {model.name!r} has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    shape = tuple(model.inputs[0].shape)
    if shape[0] not in (None, EXPORT_BATCH_SIZE) or any(dim is None for dim in shape[1:]):
        raise UserError(
            f"export needs a static input shape (batch, ...) with batch None or 1; "
            f"{model.name!r} has input shape {shape}")
    return tf.TensorSpec((EXPORT_BATCH_SIZE,) + shape[1:], tf.float32)


def _checked_representative_dataset(representative_dataset, input_shape):
    """Wraps a representative dataset so a wrong sample fails with a clear message."""
    expected_shape = tuple(input_shape)

    def checked():
        count = 0
        for sample in representative_dataset():
            if not isinstance(sample, (list, tuple)) or len(sample) != 1:
                raise UserError(
                    "representative_dataset must yield one-element lists [array], got "
                    f"{type(sample).__name__}")
            array = np.asarray(sample[0], dtype=np.float32)
            if array.shape != expected_shape:
                raise UserError(
                    f"representative_dataset sample has shape {array.shape}, expected "
                    f"{expected_shape}")
            count += 1
            yield [array]
        if count == 0:
            raise UserError("representative_dataset yielded no samples")

    return checked


def _converter_error(model_name: str, mode: str, error: Exception) -> TfliteConversionError:
    """A one-line message naming the ops the converter complained about."""
    message = str(error)
    op_names = sorted(set(_CONVERTER_OP_PATTERN.findall(message)))
    if op_names:
        detail = f"ops it cannot convert: {', '.join(op_names)}"
    else:
        first_line = next((line.strip() for line in message.splitlines() if line.strip()),
                          type(error).__name__)
        detail = first_line[:_MAX_ERROR_DETAIL_CHARS]
    return TfliteConversionError(
        f"TFLite {mode} conversion of {model_name!r} failed: {detail} "
        "(the converter's full message is in the chained exception)")


def convert_to_tflite(
        model: tf_keras.Model,
        representative_dataset: Optional[RepresentativeDataset] = None,
        mode: str = "int8",
        io_dtype: str = "int8",
        per_channel: bool = True,
        output_path: Optional[str] = None,
) -> bytes:
    """Converts a tf_keras model to a TFLite flatbuffer with a static batch-1 input.

    Modes:
      - `int8`: full integer. Only int8 builtin kernels, input and output of type
        `io_dtype`. A float model needs `representative_dataset` to calibrate its
        activation ranges. A TF-MOT QAT model brings its own ranges, so the dataset
        is optional; it is still needed to integerize layers TF-MOT left float
        (a Rescaling fails the export without it; a Lambda multiplying by a
        constant was folded into the next conv and did not). QAT ranges take
        precedence over calibration where both exist.
      - `float`: float32 everywhere.
      - `dynamic`: dynamic-range quantization (int8 weights, float activations and
        float I/O).

    Args:
      model: a tf_keras model with one input of static shape (None or 1, ...).
      representative_dataset: zero-argument callable yielding `[array]` lists of
        shape (1, ...) float32, e.g. `representative_dataset_from_array(samples)`.
      mode: one of `MODES`.
      io_dtype: `int8` or `uint8`, the input/output type in `int8` mode (ignored by
        the float modes, whose I/O is float32).
      per_channel: per-channel weight scales. Applies to weights the converter
        quantizes (post-training); a QAT model's weight quantization was fixed by
        its `QuantizationScheme.per_channel`.
      output_path: if given, the bytes are also written there atomically.

    Returns:
      The flatbuffer bytes.

    Raises:
      UserError: for an unknown mode or dtype, an unsupported model, or a float model
        in `int8` mode without a representative dataset.
      TfliteConversionError: when the converter fails or an `int8` result is not
        fully integer.
    """
    if not isinstance(model, tf_keras.Model):
        raise UserError(
            f"model must be a tf_keras.Model, got {type(model).__module__}."
            f"{type(model).__name__}")
    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, got {mode!r}")
    if io_dtype not in INTEGER_IO_DTYPES:
        raise UserError(f"io_dtype must be one of {INTEGER_IO_DTYPES}, got {io_dtype!r}")
    if representative_dataset is not None and not callable(representative_dataset):
        raise UserError(
            "representative_dataset must be a zero-argument callable yielding [array] "
            f"lists, got {type(representative_dataset).__name__}")
    if not isinstance(per_channel, bool):
        raise UserError(f"per_channel must be True or False, got {per_channel!r}")
    quantization_aware = is_quantization_aware(model)
    if quantization_aware:
        _check_eight_bit_student(model)
    if mode == "int8" and representative_dataset is None and not quantization_aware:
        raise UserError(
            f"int8 export of the float model {model.name!r} needs a representative_dataset "
            "to calibrate activation ranges (e.g. representative_dataset_from_array of "
            "generator samples); only TF-MOT quantization-aware models carry their own")

    input_spec = _batch_one_input_spec(model)
    serving_function = tf.function(
        lambda inputs: model(inputs, training=False), input_signature=[input_spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serving_function.get_concrete_function()], model)
    # The default round trip through a SavedModel costs ~20x the conversion itself
    # (57 s against 3 s for a QAT MobileNetV2 on 2 cores) and changes nothing here.
    converter.experimental_lower_to_saved_model = False
    # pylint: disable-next=protected-access
    converter._experimental_disable_per_channel = not per_channel
    if mode in ("int8", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        converter.inference_input_type = _IO_TF_DTYPES[io_dtype]
        converter.inference_output_type = _IO_TF_DTYPES[io_dtype]
        if representative_dataset is not None:
            converter.representative_dataset = _checked_representative_dataset(
                representative_dataset, input_spec.shape)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Without a dataset the op set stays at its default: the converter rejects
        # TFLITE_BUILTINS_INT8 without a dataset even for QAT models (its QAT
        # detection does not see TF-MOT's fake-quant ops at that point). Either way
        # integer-only is checked on the result below: even with TFLITE_BUILTINS_INT8
        # the converter lets a float-only op (SIN, RFFT2D) through between a
        # DEQUANTIZE and a QUANTIZE instead of failing.

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_IGNORED_CONVERTER_WARNING)
        try:
            model_bytes = converter.convert()
        except UserError:
            raise
        except Exception as error:  # pylint: disable=broad-except
            # The converter raises ConverterError, ValueError, RuntimeError, ...
            raise _converter_error(model.name, mode, error) from error

    if mode == "int8":
        report = inspect_tflite(model_bytes)
        if not report.is_fully_integer:
            float_ops = ", ".join(f"{op.name} (#{op.index})" for op in report.non_integer_ops)
            hint = (" Pass a representative_dataset so the converter can calibrate the "
                    "layers TF-MOT left float." if representative_dataset is None else "")
            raise TfliteConversionError(
                f"int8 export of {model.name!r} is not fully integer: float ops "
                f"{float_ops or 'none'}; input {report.inputs[0].dtype}, output "
                f"{report.outputs[0].dtype}.{hint}")
    model_bytes = bytes(model_bytes)
    if output_path is not None:
        write_bytes_atomic(output_path, model_bytes)
    return model_bytes


# ------------------------------------------------------------------------ inspection


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
    """

    index: int
    name: str
    input_dtypes: Tuple[str, ...]
    output_dtypes: Tuple[str, ...]
    is_integer: bool
    input_indices: Tuple[int, ...] = ()
    output_indices: Tuple[int, ...] = ()


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
    def has_static_batch_one(self) -> bool:
        """Every input and output has batch 1 and no dynamic dimension."""
        return all(tensor.shape_signature[:1] == (EXPORT_BATCH_SIZE,) and not tensor.is_dynamic
                   for tensor in self.inputs + self.outputs)

    def operator_counts(self) -> "collections.Counter[str]":
        return collections.Counter(op.name for op in self.operators)

    def format(self) -> List[str]:
        """Markdown bullet lines for reports."""
        lines = [f"- input: {tensor.describe()}" for tensor in self.inputs]
        lines += [f"- output: {tensor.describe()}" for tensor in self.outputs]
        counts = ", ".join(f"{name} x{count}" for name, count in
                           sorted(self.operator_counts().items()))
        lines.append(f"- operators ({len(self.operators)}): {counts}")
        lines.append(f"- fully integer: {'yes' if self.is_fully_integer else 'no'}")
        for op in self.non_integer_ops:
            lines.append(f"  - not integer: {op.name} (#{op.index}), inputs "
                         f"{', '.join(op.input_dtypes)}; outputs {', '.join(op.output_dtypes)}")
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
    return TensorInfo(
        index=index,
        name=name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name),
        dtype=_TENSOR_TYPE_NAMES.get(tensor.Type(), f"type{tensor.Type()}"),
        shape=shape,
        shape_signature=signature,
        scales=scales,
        zero_points=zero_points,
        quantized_dimension=quantized_dimension,
        is_constant=_buffer_has_data(model, tensor.Buffer()))


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
      UserError: if the bytes are not a TFLite flatbuffer.
    """
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise UserError(f"model_bytes must be bytes, got {type(model_bytes).__name__}")
    model_bytes = bytes(model_bytes)
    if not tflite_schema.Model.ModelBufferHasIdentifier(model_bytes, 0):
        raise UserError(
            f"not a TFLite flatbuffer (identifier {model_bytes[4:8]!r}, expected b'TFL3')")
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
        operators.append(OperatorInfo(
            index=op_index,
            name=_operator_name(model, operator.OpcodeIndex()),
            input_dtypes=input_dtypes,
            output_dtypes=output_dtypes,
            is_integer=not FLOAT_TENSOR_TYPES.intersection(input_dtypes + output_dtypes),
            input_indices=input_indices,
            output_indices=output_indices))

    return TfliteModelReport(
        inputs=tuple(tensors[int(i)] for i in subgraph.InputsAsNumpy()),
        outputs=tuple(tensors[int(i)] for i in subgraph.OutputsAsNumpy()),
        operators=tuple(operators),
        tensors=tensors,
        num_subgraphs=model.SubgraphsLength())


# -------------------------------------------------------------------------- Edge TPU


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
      compiler_run: always False.
    """

    unsupported_ops: Tuple[OperatorInfo, ...]
    non_eight_bit_ops: Tuple[OperatorInfo, ...]
    dynamic_tensors: Tuple[str, ...]
    oversized_tensors: Tuple[str, ...]
    limitations: Tuple[Tuple[str, str], ...]
    compiler_run: bool = False

    @property
    def first_cpu_op_index(self) -> Optional[int]:
        """Index of the first op the compiler would leave to the CPU, if any."""
        indices = [op.index for op in self.unsupported_ops + self.non_eight_bit_ops]
        return min(indices) if indices else None

    @property
    def likely_compatible(self) -> bool:
        """No check failed (the compiler may still disagree)."""
        return not (self.unsupported_ops or self.non_eight_bit_ops or self.dynamic_tensors
                    or self.oversized_tensors)

    def format(self) -> List[str]:
        """Markdown bullet lines for reports."""
        verdict = ("likely compatible" if self.likely_compatible
                   else "not compatible as is")
        lines = [f"- Edge TPU (static check, the Edge TPU compiler was not run): {verdict}"]
        for op in self.unsupported_ops:
            lines.append(f"  - unsupported op: {op.name} (#{op.index})")
        for op in self.non_eight_bit_ops:
            lines.append(f"  - not 8-bit: {op.name} (#{op.index}), inputs "
                         f"{', '.join(op.input_dtypes)}; outputs {', '.join(op.output_dtypes)}")
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


def edge_tpu_report(report: TfliteModelReport) -> EdgeTpuCompatibility:
    """Checks a `TfliteModelReport` against the Edge TPU's documented requirements.

    Checked: operators against `EDGE_TPU_SUPPORTED_OPERATIONS`; every non-constant
    tensor of every op is int8 or uint8 (and no tensor is float); no dynamic
    dimension; no tensor with more than 3 dimensions larger than 1. Op-specific
    limitations are listed for the ops present, not checked.

    Args:
      report: from `inspect_tflite`.

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
    dynamic = tuple(tensor.name for tensor in report.tensors if tensor.is_dynamic)
    oversized = tuple(
        tensor.name for tensor in report.tensors
        if not tensor.is_constant and len(tensor.shape) > EDGE_TPU_MAX_TENSOR_RANK
        and any(dim > 1 for dim in tensor.shape[:-EDGE_TPU_MAX_TENSOR_RANK]))
    present = {op.name for op in report.operators}
    limitations = tuple((name, limitation) for name, limitation in EDGE_TPU_SUPPORTED_OPERATIONS
                        if limitation and name in present)
    return EdgeTpuCompatibility(
        unsupported_ops=unsupported,
        non_eight_bit_ops=non_eight_bit,
        dynamic_tensors=dynamic,
        oversized_tensors=oversized,
        limitations=limitations)
