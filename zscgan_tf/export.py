"""TFLite conversion of a tf_keras model, fully integer on request.

`convert_to_tflite` turns a tf_keras model (the float teacher or the TF-MOT student)
into TFLite flatbuffer bytes with a static batch-1 input. In `int8` mode the result
is fully integer: int8 kernels, int8 or uint8 input and output, and the bytes are
checked from the flatbuffer (`tflite_model.inspect_tflite`) before they are returned.
With `allow_float_ops`, ops TFLite has no int8 kernel for (ELU, ...) may stay float
between a DEQUANTIZE and a QUANTIZE, the input and output still integer
(`float_ops_description` names them). An int8 model that LiteRT cannot load is refused.
Every file carries a serving signature (`exported_model`, which also writes the labels
file beside a model and checks an int8 model against the Keras model it came from).

Example:

    generator = zscgan_tf.load_generator("work_dir/generator.keras")  # Samples in the teacher's input space.
    noise = tf.random.normal([256, generator.inputs[0].shape[1]])
    samples = generator([noise, tf.range(256) % num_classes], training=False).numpy()
    model_bytes = convert_to_tflite(
        student, zscgan_tf.representative_dataset_from_array(samples),
        output_path="work_dir/student_int8.tflite")
    report = tflite_model.inspect_tflite(model_bytes)
    assert report.is_fully_integer, report.non_integer_ops
    print("\\n".join(edge_tpu.compatibility_report(report).format()))
"""

import re
import warnings
from typing import List, Optional

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from zscgan_tf import (evaluate, exported_model, native_output, precision, quantize, quantizer_ranges,
                       representative_data, tflite_model)
from zscgan_tf.errors import UserError
from zscgan_tf.files import write_bytes_atomic
from zscgan_tf.progress import count_of
from zscgan_tf.representative_data import RepresentativeDataset

MODES = ("int8", "float", "dynamic")
INTEGER_IO_DTYPES = ("int8", "uint8")
_IO_TF_DTYPES = {"int8": tf.int8, "uint8": tf.uint8}
_MAX_LISTED_LAYERS = 5
# A model's float ops are listed one by one up to this many, else counted by kind with
# the first few of each kind placed; QUANTIZE and DEQUANTIZE, which convert between
# integer and float around them, are only counted.
_MAX_LISTED_FLOAT_OPS = 6
_MAX_PLACED_OPS_OF_A_KIND = 3
_CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")
# The batch size every exported model is fixed to.
EXPORT_BATCH_SIZE = 1
# Graph ops of a loop, and the prefix of the tensor-list ops through which a recurrent layer's loop,
# tf.map_fn's and tf.scan's read their steps and write their results (a plain tf.while_loop has none).
_LOOP_OPS = ("While", "StatelessWhile")
_TENSOR_LIST_OP_PREFIX = "TensorList"
# Below this, an int8 scale is that of a tensor that was 0 or all but 0 (within 2.55e-05) on every
# calibration sample (the converter gives one that was 0 about 7.8e-09).
_MIN_LIVE_SCALE = 1e-7
# A phrase of 10 characters or more said again and again in a row, as the XNNPACK delegate does.
_REPEATED_PHRASE = re.compile(r"(.{10,}?)\1+")

# Converter messages name the ops they fail on as 'tf.Op' or 'tfl.op'.
_CONVERTER_OP_PATTERN = re.compile(r"'(tfl?\.[A-Za-z0-9_]+)'")
# Why the converter refused an op, where it says so in a phrase of its own: "'tfl.average_pool_2d'
# op quantization parameters violate the same scale constraint: ...".
_CONVERTER_REASON_PATTERN = re.compile(r"'tfl?\.[A-Za-z0-9_]+' op ([a-z][a-z ]+?)(?::|$)", re.MULTILINE)
# Longest converter message excerpt kept in a one-line error.
_MAX_ERROR_DETAIL_CHARS = 300
# A harmless warning of the TF-MOT path (the input range comes from the QAT model).
_IGNORED_CONVERTER_WARNING = "Statistics for quantized inputs were expected"
# Where an int8 model with float ops inside runs whole, and where it does not.
FLOAT_OPS_DEVICES = ("a CPU or GPU delegate runs them; an Edge TPU or integer-only NPU leaves everything from "
                     "the first of them to the CPU")


class TfliteConversionError(UserError):
    """The TFLite converter could not produce the requested model."""


class NotFullyIntegerError(TfliteConversionError):
    """An int8 conversion whose result still has float ops (and `allow_float_ops` was not
    given, or its input or output is float).

    Attributes:
      summary: which ops are float and the input and output types, without the hint
        the message may add.
    """

    def __init__(self, summary: str, hint: str = ""):
        super().__init__(f"{summary}{hint}")
        self.summary = summary


# Defined here until it had a module of its own: programs that import it from here still find it.
representative_dataset_from_array = representative_data.representative_dataset_from_array


# ------------------------------------------------------------------------ conversion


def is_quantization_aware(model: tf_keras.Model) -> bool:
    """Whether `model` carries TF-MOT fake-quantization layers."""
    return any(isinstance(layer, (tfmot.quantization.keras.QuantizeWrapper,
                                  quantize.quantize_layer.QuantizeLayer))
               for layer in model.layers)


def _check_float32_compute(model: tf_keras.Model, mode: str) -> None:
    """Refuses a model with a mixed-precision policy, whose float16 ops the converter has no
    kernels for in any mode (it listed every op as one it "cannot convert")."""
    reduced = precision.reduced_precision_phrase(model)
    if reduced:
        raise UserError(
            f"TFLite {mode} conversion of {model.name!r} cannot start: {reduced}, for which TensorFlow's converter has "
            "no kernels; rebuild the model under the float32 policy with the same weights (zscgan_tf.load_teacher "
            "does so for a saved model)")


def _check_eight_bit_student(model: tf_keras.Model) -> None:
    """Refuses TF-MOT students simulating fewer than 8 bits (see `QuantizationScheme`)."""
    def low_bits(row) -> str:
        parts = [f"{bits}-bit {what}" for bits, what in ((row.weight_bits, "weights"),
                                                         (row.activation_bits, "activations"))
                 if bits and bits < quantize.EXPORTABLE_BITS]
        return " and ".join(parts)

    described = [(row.name, low_bits(row)) for row in quantize.describe_student(model)]
    low_bit_layers = [f"{name} ({bits})" for name, bits in described if bits]
    if low_bit_layers:
        raise UserError(
            f"the TF-MOT student {model.name!r} simulates fewer than {quantize.EXPORTABLE_BITS} bits in "
            f"{', '.join(low_bit_layers[:_MAX_LISTED_LAYERS])}; TFLite kernels are "
            f"{quantize.EXPORTABLE_BITS}-bit, so only a W8A8 student can be exported")


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


def _traced_at_batch_one(serving_function, model: tf_keras.Model, mode: str):
    """The concrete function of `serving_function` at its batch-1 signature, or a one-line
    refusal for a model that cannot run on one image (a Reshape or Lambda with a fixed batch)."""
    try:
        return serving_function.get_concrete_function()
    except UserError:
        raise
    except Exception as error:  # pylint: disable=broad-except
        # Tracing raises ValueError, TypeError, InvalidArgumentError, ... from the model's own code.
        raise TfliteConversionError(
            f"TFLite {mode} conversion of {model.name!r} failed: the model cannot run on one image, "
            f"as a TFLite model's batch-1 input needs: {_call_failure(error)}; build it so that it "
            "takes any batch size (no fixed batch in a Reshape, Lambda or custom layer)") from error


# How Keras names the layer whose call failed, and where its own message starts.
_LAYER_CALL_FAILURE = re.compile(
    r"Exception encountered when calling layer '([^']+)' \(type (\w+)\)\.\s*\n\s*\n\s*(\S[^\n]*)")


def _call_failure(error: Exception) -> str:
    """"its layer 'lambda' (Lambda) raised: Cannot reshape a tensor with 256 elements to shape
    [32,256] (8192 elements)" from a Keras call error, else the error's first line."""
    message = str(error)
    match = _LAYER_CALL_FAILURE.search(message)
    if match:
        layer, layer_type, detail = match.groups()
        detail = detail.split(" for '{{node", 1)[0].strip()
        return f"its layer {layer!r} ({layer_type}) raised: {detail[:_MAX_ERROR_DETAIL_CHARS]}"
    first_line = next((line.strip() for line in message.splitlines()
                       if line.strip() and line.strip() != "in user code:"), type(error).__name__)
    return f"{type(error).__name__}: {first_line[:_MAX_ERROR_DETAIL_CHARS]}"


def looping_layers(graph_def, model_name: str) -> List[str]:
    """The names of the model's layers whose computation in `graph_def` (a traced call of
    the model named `model_name`) loops over a tensor list (a `While` op and `TensorList`
    ops): a recurrent layer that is not unrolled (LSTM, GRU, SimpleRNN, ConvLSTM2D; in a
    `Bidirectional`, a `TimeDistributed` or a nested model, whose top-level layer is
    named), `tf.map_fn` or `tf.scan`. Ops inside called functions (Keras runs an LSTM as
    one) count for the layer that calls them."""
    functions = {function.signature.name: function.node_def for function in graph_def.library.function}
    function_ops = {}  # Function name -> the op types it runs, those of the functions it calls included.

    def op_types(node) -> set:
        types = {node.op}
        for value in node.attr.values():
            name = value.func.name
            if name in functions and name not in function_ops:
                function_ops[name] = set()  # While it is being looked at (a recursive call).
                function_ops[name] = set().union(*(op_types(inner) for inner in functions[name]))
            types |= function_ops.get(name, set())
        return types

    layer_ops = {}
    for node in graph_def.node:
        scope = node.name.split("/")
        layer = scope[1] if len(scope) > 1 and scope[0] == model_name else scope[0]
        layer_ops.setdefault(layer, set()).update(op_types(node))
    return [layer for layer, types in layer_ops.items()
            if types & set(_LOOP_OPS) and any(op.startswith(_TENSOR_LIST_OP_PREFIX) for op in types)]


def _check_no_loops(model: tf_keras.Model, graph_def) -> None:
    """Refuses what would crash the process: TensorFlow's converter ends it with a
    segmentation fault (status 139, no message) when it calibrates a model that loops over
    a tensor list (seen with LSTM, GRU, SimpleRNN, a Bidirectional GRU, ConvLSTM2D,
    `tf.map_fn` and `tf.scan`; in a TF-MOT student too, where the loop is ahead of its
    first quantizer). Unrolled recurrent layers and a plain `tf.while_loop` convert."""
    names = looping_layers(graph_def, model.name)
    if not names:
        return
    looping = f"its layer {names[0]} loops" if len(names) == 1 else f"its layers {', '.join(names)} loop"
    raise TfliteConversionError(
        f"TFLite int8 conversion of {model.name!r} would crash TensorFlow {tf.__version__}'s converter: {looping} "
        "over a tensor list (a recurrent layer that is not unrolled, tf.map_fn or tf.scan), which its integer "
        "calibration cannot take; build recurrent layers with unroll=True where Keras allows it (not ConvLSTM), or "
        "export in float or dynamic mode")


def _converter_error(model_name: str, mode: str, error: Exception, note: str = "") -> TfliteConversionError:
    """A one-line message naming the ops the converter complained about, with `note` after them."""
    message = str(error)
    op_names = sorted(set(_CONVERTER_OP_PATTERN.findall(message)))
    if op_names:
        detail = f"ops it cannot convert: {', '.join(op_names)}"
        reasons = sorted(set(_CONVERTER_REASON_PATTERN.findall(message)))
        if reasons:
            detail += f" ({'; '.join(reasons)})"
    else:
        first_line = next((line.strip() for line in message.splitlines() if line.strip()),
                          type(error).__name__)
        # TFLite's error reporter joins its lines: "... (INT8 != FLOAT32)Node number 3 (FULLY_CONNECTED) ...".
        detail = re.sub(r"(?<=\S)(?=Node number \d)", " ", first_line)[:_MAX_ERROR_DETAIL_CHARS]
    if note:
        detail = detail.rstrip(".")
    return TfliteConversionError(
        f"TFLite {mode} conversion of {model_name!r} failed: {detail}{note} "
        "(the converter's full message is in the chained exception)")


def _left_float_note(student: tf_keras.Model) -> str:
    """"; TF-MOT left float, for the converter to quantize on its own: 1 MultiHeadAttention
    (attention)", naming where a QAT student's conversion most likely failed; "" for none."""
    names = [row.name for row in quantize.describe_student(student) if row.status == quantize.FLOAT_STATUS]
    if not names:
        return ""
    return ("; TF-MOT left float, for the converter to quantize on its own: "
            f"{quantize.summarize_layer_names(student, names)}")


def float_ops_description(report: tflite_model.TfliteModelReport, model) -> str:
    """The ops of a converted `model` that are not integer, each with the Keras layer it computes
    where known: "DEQUANTIZE (#7), ELU (#8, layer 'activation_4'), QUANTIZE (#9)"; "" for none.
    More than `_MAX_LISTED_FLOAT_OPS` are counted by kind, the first few of each kind placed:
    "ELU x5 (#2, layer 'activation'; #6, layer 'activation_1'; #11, layer 'activation_2';
    ...), DEQUANTIZE x5, QUANTIZE x5"."""
    ops = report.non_integer_ops
    if len(ops) <= _MAX_LISTED_FLOAT_OPS:
        return ", ".join(f"{op.name} ({_op_place(op, report, model)})" for op in ops)
    kinds = {}
    for op in ops:
        kinds.setdefault(op.name, []).append(op)
    parts = []
    for name, kind_ops in sorted(kinds.items(), key=lambda item: item[0] in _CONVERSION_OPS):
        places = "; ".join(_op_place(op, report, model) for op in kind_ops[:_MAX_PLACED_OPS_OF_A_KIND])
        more = "; ..." if len(kind_ops) > _MAX_PLACED_OPS_OF_A_KIND else ""
        parts.append(f"{name} x{len(kind_ops)}" + ("" if name in _CONVERSION_OPS else f" ({places}{more})"))
    return ", ".join(parts)


def _op_place(op: tflite_model.OperatorInfo, report: tflite_model.TfliteModelReport, model) -> str:
    """`#8`, with the Keras layer the op computes where its output tensor's name says (the
    converter names tensors `<model>/<layer>/<op>`, joined by `;` for fused ops):
    `#8, layer 'activation_4'`, or in the model's order `#0, layers 'conv2d', 're_lu'` for a
    convolution fused with its activation. The QUANTIZE and DEQUANTIZE around a float op
    belong to no layer of their own."""
    if op.name in _CONVERSION_OPS:
        return f"#{op.index}"
    for index in op.output_indices:
        layers = _tensor_layers(report.tensors[index].name, model)
        if layers:
            return f"#{op.index}, {layers}"
    return f"#{op.index}"


def convert_to_tflite(
        model: tf_keras.Model,
        representative_dataset: Optional[RepresentativeDataset] = None,
        mode: str = "int8",
        io_dtype: str = "int8",
        per_channel: bool = True,
        output_path: Optional[str] = None,
        allow_float_ops: bool = False,
        check_loads: bool = True,
) -> bytes:
    """Converts a tf_keras model to a TFLite flatbuffer with a static batch-1 input.

    Modes:
      - `int8`: full integer. Only int8 builtin kernels, input and output of type
        `io_dtype`. A float model needs `representative_dataset` to calibrate its
        activation ranges. A TF-MOT QAT model brings its own ranges, so the dataset
        is optional; it is still needed to integerize layers TF-MOT left float
        (a Rescaling fails the export without it; a Lambda multiplying by a
        constant was folded into the next conv and did not). QAT ranges take
        precedence over calibration where both exist. With `allow_float_ops`, ops
        the converter has no int8 kernel for stay float inside the model instead of
        failing the export.
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
      output_path: if given, the bytes are also written there atomically (its folder
        is made if missing).
      allow_float_ops: in `int8` mode, accept a result whose ops are not all integer
        (the converter leaves ELU, SIN, ... float between a DEQUANTIZE and a QUANTIZE),
        as long as its input and output are `io_dtype`. A CPU or GPU delegate runs such
        a model; an Edge TPU or integer-only NPU leaves everything from its first float
        op to the CPU.
      check_loads: in `int8` mode, load the result in LiteRT's default interpreter (as
        a phone runs it, with the XNNPACK delegate) before it is returned or written. Off
        for a trial conversion on a few stand-in samples, on which a layer may give 0
        where real inputs would not.

    Returns:
      The flatbuffer bytes.

    Raises:
      UserError: for an unknown mode or dtype, an unsupported model (one computing in
        float16, say), or a float model in `int8` mode without a representative dataset.
      TfliteConversionError: when the converter fails, would crash (a loop over a tensor
        list), or an `int8` result is not fully integer (without `allow_float_ops`; with
        it, when its input or output is float) or does not load (`check_loads`), and for a
        model that cannot run on one image.
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
    for name, value in (("per_channel", per_channel), ("allow_float_ops", allow_float_ops),
                        ("check_loads", check_loads)):
        if not isinstance(value, bool):
            raise UserError(f"{name} must be True or False, got {value!r}")
    _check_float32_compute(model, mode)
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
    concrete_function = _traced_at_batch_one(serving_function, model, mode)
    if mode == "int8" and representative_dataset is not None:
        _check_no_loops(model, concrete_function.graph.as_graph_def())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function], model)
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
            converter.representative_dataset = representative_data.checked_representative_dataset(
                representative_dataset, input_spec.shape)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Without a dataset the op set stays at its default: the converter rejects
        # TFLITE_BUILTINS_INT8 without a dataset even for QAT models (its QAT
        # detection does not see TF-MOT's fake-quant ops at that point). Either way
        # integer-only is checked on the result below: even with TFLITE_BUILTINS_INT8
        # the converter lets a float-only op (SIN, RFFT2D) through between a
        # DEQUANTIZE and a QUANTIZE instead of failing.

    # A QAT model's int8 input on the levels its input quantizer computes with, not a step off them.
    with warnings.catch_warnings(), native_output.native_stderr_discarded(), \
            quantizer_ranges.model_input_ranges_as_quantized(model):
        warnings.filterwarnings("ignore", message=_IGNORED_CONVERTER_WARNING)
        try:
            model_bytes = converter.convert()
        except UserError:
            raise
        except Exception as error:  # pylint: disable=broad-except
            # The converter raises ConverterError, ValueError, RuntimeError, ...
            raise _converter_error(model.name, mode, error,
                                   _left_float_note(model) if quantization_aware else "") from error
    model_bytes = exported_model.with_serving_signature(model_bytes)

    if mode == "int8":
        report = tflite_model.inspect_tflite(model_bytes)
        integer_io = all(tensor.dtype == io_dtype for tensor in report.inputs + report.outputs)
        if not report.is_fully_integer and not (allow_float_ops and integer_io):
            float_ops = float_ops_description(report, model)
            hint = (" Pass a representative_dataset so the converter can calibrate the "
                    "layers TF-MOT left float." if representative_dataset is None else
                    "" if allow_float_ops else " Pass allow_float_ops=True to keep these ops float.")
            raise NotFullyIntegerError(
                f"int8 export of {model.name!r} is not fully integer: float ops "
                f"{float_ops or 'none'}; input {report.inputs[0].dtype}, output "
                f"{report.outputs[0].dtype}.", hint)
        if check_loads:
            _check_loads(model_bytes, report, model)
    model_bytes = bytes(model_bytes)
    if output_path is not None:
        write_bytes_atomic(output_path, model_bytes)
    return model_bytes


def _check_loads(model_bytes: bytes, report: tflite_model.TfliteModelReport, model) -> None:
    """Refuses an int8 model that LiteRT's default interpreter (with its XNNPACK delegate, as
    on a phone) cannot load, before it is written. The converter makes one of a model with a
    tensor that was 0 on every calibration sample (a layer dead on them), giving it a scale
    the delegate refuses; the message names that layer, ahead of the delegate's own words."""
    try:
        evaluate.TfliteClassifier(model_bytes)
    except UserError as error:
        places = []  # The layers computing activations that were (all but) 0 on every sample, in execution order.
        for op in report.operators:
            for index in op.output_indices:
                tensor = report.tensors[index]
                if not tensor.is_constant and tensor.scales and max(tensor.scales) < _MIN_LIVE_SCALE:
                    place = _tensor_layers(tensor.name, model)
                    if place and place not in places:
                        places.append(place)
        after = f" (and {count_of(len(places) - 1, 'layer')} fed by it)" if len(places) > 1 else ""
        # First: the delegate repeats its own line once per partition ("failed to create XNNPACK runtime" eight
        # times in Xception's), which pushed the reason out of a table cell's width.
        reason = (f": {places[0]}{after} gave 0 or all but 0 on every calibration sample, for which int8 has a "
                  f"scale below {_MIN_LIVE_SCALE:g} that LiteRT's XNNPACK delegate refuses; calibrate with samples on "
                  "which it is not, or remove the layer" if places else "")
        said = _REPEATED_PHRASE.sub(r"\1", str(error))
        raise TfliteConversionError(f"the int8 model of {model.name!r} does not load in LiteRT{reason} ({said})") \
            from error


def _tensor_layers(tensor_name: str, model) -> str:
    """"layer 'x'" or "layers 'x', 'y'": the Keras layers a converted tensor's name says it computes."""
    layer_order = {layer.name: position for position, layer in enumerate(model.layers)}
    names = {part for path in tensor_name.split(";") for part in path.split("/")[1:] if part in layer_order}
    if not names:
        return ""
    return f"layer{'s' if len(names) > 1 else ''} " + ", ".join(repr(name) for name in sorted(names, key=layer_order.get))
