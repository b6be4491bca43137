"""TF-MOT quantization schemes, bit widths, and what stays float.

The student of stage 2 is the teacher's architecture with TF-MOT fake quantization
inserted: weights and activations are rounded to `weight_bits` and `activation_bits`
in the forward pass while gradients flow straight through. This module builds that
student from a teacher and says, layer by layer, what was quantized and what was not.

Three facts about TF-MOT shape the code (the layers chosen and the schemes that quantize them
are in `tfmot_schemes`):

- TF-MOT quantizes a fixed set of Keras layers (its "registry"). Anything else
  (`Rescaling`, `Normalization`, `Lambda` and `TFOpLambda` arithmetic, custom layers)
  is left unannotated here, so it computes in float during QAT and is reported in
  `float_layer_names`. The TFLite converter can still integerize such layers when it
  is given a representative dataset to calibrate their ranges (see `export.py`).
- `BatchNormalization` after a linear `Conv2D`/`DepthwiseConv2D`/`Dense` is not in
  the registry but is folded by TF-MOT's layout transforms, so it is annotated too.
  `Multiply`, `Subtract`, `Maximum` and `Minimum` are not in it either; they get
  TF-MOT's output-only config, as the registry gives `Add`.
- The n-bit scheme (`tfmot.quantization.keras.experimental.default_n_bit`) only
  simulates widths below 8; TFLite has no 4-bit kernels, so only W8A8 exports.

The student's quantizer ranges start from the teacher (`quantizer_ranges`), and below
8 bits they can be fitted by least squares (`range_fitting`).

Example:

    scheme = QuantizationScheme.from_name("w4a4")
    student, float_layer_names = quantize_student(teacher, scheme)
    for line in format_layer_report(describe_student(student)):
        print(line)
"""

import contextlib
import dataclasses
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras
from tf_keras.src import backend as keras_backend
from tf_keras.src.saving import serialization_lib
# Not exported by tfmot's public API: the input quantizer layer.
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer

from zscgan_tf import keras3_conversion, precision, quantizer_ranges, range_fitting, tfmot_schemes
from zscgan_tf.errors import UserError, first_line
from zscgan_tf.progress import listed

MIN_BITS = 2
MAX_BITS = 8
# TFLite's integer kernels are 8-bit; every other width is simulation only.
EXPORTABLE_BITS = 8
assert quantizer_ranges.EXPORTED_INPUT_BITS == EXPORTABLE_BITS

SCHEME_NAME_PATTERN = re.compile(r"^w(\d+)a(\d+)$")
# `QuantizationScheme.low_bit_ranges` values.
LOW_BIT_RANGE_METHODS = ("mse", "min_max")

FLOAT_STATUS = "float"
QUANTIZED_STATUS = "quantized"
INPUT_QUANTIZER_STATUS = "input quantizer"


@dataclasses.dataclass(frozen=True)
class QuantizationScheme:
    """Bit widths of the quantized student.

    Attributes:
      weight_bits: bits of the weights, `MIN_BITS`..`MAX_BITS`.
      activation_bits: bits of the activations, `MIN_BITS`..`MAX_BITS`.
      keep_first_and_last_at_8_bits: in a scheme below 8 bits, quantize the first
        weighted layer (and the model input it reads) and the last weighted layer
        at 8 bits, the usual convention of the data-free quantization literature.
        Has no effect at W8A8.
      per_channel: per-output-channel weight scales for convolutions (TF-MOT's
        per-axis quantizers); False gives one scale per weight tensor.
      low_bit_ranges: how the ranges of quantizers below 8 bits are set: `mse`, the
        least-squares ranges of `range_fitting` (weights from the weights, activations
        from the calibration inputs), held during QAT; `min_max`, TF-MOT's observed
        extremes, which move during QAT. 8-bit quantizers always keep min/max, as
        TFLite's converter does.
      depthwise_per_channel: in a scheme below 8 bits with `per_channel`, quantize each
        DepthwiseConv2D kernel with one range per channel (`depthwise_quantizer`), as
        TFLite's int8 depthwise kernels are, where TF-MOT's per-axis quantizer gives it
        one range per entry of its last dimension (the depth multiplier, 1 in
        MobileNets): one for the whole tensor. Off by default; has no effect at W8A8,
        which keeps TF-MOT's quantizers.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    keep_first_and_last_at_8_bits: bool = True
    per_channel: bool = True
    low_bit_ranges: str = "mse"
    depthwise_per_channel: bool = False

    def __post_init__(self):
        for field_name in ("weight_bits", "activation_bits"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{field_name} must be an integer, got {value!r}")
            if not MIN_BITS <= value <= MAX_BITS:
                raise UserError(
                    f"{field_name} must be between {MIN_BITS} and {MAX_BITS}, got {value}")
        for field_name in ("keep_first_and_last_at_8_bits", "per_channel", "depthwise_per_channel"):
            value = getattr(self, field_name)
            if not isinstance(value, bool):
                raise UserError(f"{field_name} must be True or False, got {value!r}")
        if self.low_bit_ranges not in LOW_BIT_RANGE_METHODS:
            raise UserError(f"low_bit_ranges must be one of {', '.join(LOW_BIT_RANGE_METHODS)}, "
                            f"got {self.low_bit_ranges!r}")

    @property
    def name(self) -> str:
        """Short name such as `w8a8` or `w4a4`."""
        return f"w{self.weight_bits}a{self.activation_bits}"

    @property
    def exportable(self) -> bool:
        """Whether a student of this scheme can become a fully-integer TFLite model.

        True only for W8A8: TFLite's integer kernels (and NPUs, the Edge TPU) take
        int8 weights and activations. Lower widths are simulation only: TF-MOT
        rounds to 2..7 bits during training, but the converter would store the
        values in int8 tensors with 8-bit scales, and 4-bit activations do not
        convert at all.
        """
        return self.weight_bits == EXPORTABLE_BITS and self.activation_bits == EXPORTABLE_BITS

    @property
    def uses_n_bit_scheme(self) -> bool:
        """Whether TF-MOT's experimental n-bit scheme is needed (any width below 8)."""
        return not self.exportable

    @property
    def holds_ranges_in_training(self) -> bool:
        """Whether QAT must keep the student's ranges as set (fitted low-bit ranges)."""
        return self.uses_n_bit_scheme and self.low_bit_ranges == "mse"

    @classmethod
    def from_name(cls, name: str, **options) -> "QuantizationScheme":
        """Parses a name such as `w8a8` or `W4A4`.

        Args:
          name: `w<weight bits>a<activation bits>`, case-insensitive.
          **options: the other fields (`keep_first_and_last_at_8_bits`, `per_channel`,
            `low_bit_ranges`, `depthwise_per_channel`).

        Returns:
          The scheme.

        Raises:
          UserError: when the name does not parse or a width is out of range.
        """
        if not isinstance(name, str):
            raise UserError(f"scheme name must be a string like 'w8a8', got {name!r}")
        match = SCHEME_NAME_PATTERN.match(name.strip().lower())
        if match is None:
            raise UserError(
                f"scheme name must look like 'w8a8' or 'w4a4', got {name!r}")
        return cls(weight_bits=int(match.group(1)), activation_bits=int(match.group(2)),
                   **options)


@dataclasses.dataclass(frozen=True)
class LayerQuantization:
    """What quantization did to one layer of the student.

    Attributes:
      name: the teacher's layer name (TF-MOT's `quant_` prefix removed).
      layer_type: the Keras class name of the teacher's layer.
      status: `QUANTIZED_STATUS`, `FLOAT_STATUS` or `INPUT_QUANTIZER_STATUS`.
      weight_bits: bits of the fake-quantized weights, None when none are.
      activation_bits: bits of the fake-quantized activations or output, None when
        none are (e.g. a conv whose output is quantized after its fused BN/ReLU).
    """

    name: str
    layer_type: str
    status: str
    weight_bits: Optional[int] = None
    activation_bits: Optional[int] = None


def validate_tfmot_model(model, role: str = "teacher") -> None:
    """Checks that TF-MOT can take `model`: a built, flat, functional tf_keras model.

    Args:
      model: the model to check.
      role: how error messages name the model.

    Raises:
      UserError: for a Keras 3 model, a subclassed model, a nested model, an
        unbuilt model or one with a mixed-precision policy.
    """
    if not isinstance(model, tf_keras.Model):
        raise UserError(
            f"the {role} must be a tf_keras.Model (import zscgan_tf before TensorFlow so "
            f"Keras 2 is used), got {type(model).__module__}.{type(model).__name__}")
    is_functional = model._is_graph_network  # pylint: disable=protected-access
    if not (isinstance(model, tf_keras.Sequential) or is_functional):
        raise UserError(
            f"the {role} {model.name!r} is a subclassed model; TF-MOT needs a functional "
            "or Sequential model")
    if not model.built:
        raise UserError(f"the {role} {model.name!r} is not built; call it on an input first")
    reduced = precision.reduced_precision_phrase(model)
    if reduced:
        raise UserError(f"the {role} {model.name!r} cannot be quantized: {reduced}, and TF-MOT's fake quantization "
                        "computes in float32; rebuild it under the float32 policy with the same weights "
                        "(zscgan_tf.load_teacher does so for a saved model)")
    nested = [layer.name for layer in model.layers if isinstance(layer, tf_keras.Model)]
    if nested:
        raise UserError(
            f"the {role} {model.name!r} contains nested models {nested}; TF-MOT needs a "
            "flat model (flattening.flat_inference_model makes one)")


# A Keras layer name: a base and, from the second of its kind on, "_<number>".
_LAYER_NAME_PATTERN = re.compile(r"(.+?)(?:_(\d+))?")


@contextlib.contextmanager
def automatic_names_unchanged():
    """Keras' counts of automatic layer names as they were before the block, after it: a
    student built only to be checked leaves the run's own student the names it would have
    had without the check (`quantize_layer`, not `quantize_layer_1`), and its saved file
    the same bytes."""
    counts = keras_backend.get_default_graph_uid_map()
    saved = dict(counts)
    try:
        yield
    finally:
        counts.clear()
        counts.update(saved)


def _move_automatic_names_past(model: tf_keras.Model) -> None:
    """Makes the layers Keras names automatically from here on ("conv2d_7") take none of
    `model`'s layer names.

    Keras counts the automatic names it has given per base ("conv2d", "conv2d_1", ...),
    and a model loaded from a file gets its layers' names without advancing the counts.
    TF-MOT's SeparableConv2D transform makes a DepthwiseConv2D and a Conv2D named
    automatically and then sets weights by layer name: in a loaded model holding a
    `conv2d`, the new layer's pointwise kernel went to that layer ("Cannot assign value
    to variable 'conv2d/kernel:0': Shape mismatch").
    """
    counts = keras_backend.get_default_graph_uid_map()
    for layer in model.layers:
        base, number = _LAYER_NAME_PATTERN.fullmatch(layer.name).groups()
        key = ("", base)  # `unique_object_name`'s key: (namespace, base).
        counts[key] = max(counts[key], int(number or 0) + 1)


def quantize_student(
        teacher: tf_keras.Model,
        scheme: QuantizationScheme = QuantizationScheme(),
        calibration_inputs: Optional[np.ndarray] = None,
        input_range: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> Tuple[tf_keras.Model, Tuple[str, ...]]:
    """Builds the fake-quantized student from a copy of the teacher.

    The teacher is cloned and its weights are copied, so training the student never
    touches the teacher. Every layer TF-MOT supports is annotated; the others stay
    float. Weight ranges are set from the copied weights. TF-MOT's activation
    ranges start at [-6, 6] (the model input's at [0, 0], which zeroes every output
    with `training=False`) and only move during `training=True` steps; pass
    `calibration_inputs` (e.g. generator samples) to start them at the teacher's
    observed ranges instead, so that the untrained student already reproduces the
    teacher up to rounding (see `quantizer_ranges.calibrate_activation_ranges`).
    Below 8 bits, with the scheme's `low_bit_ranges="mse"`, weight ranges and
    calibrated activation ranges are fitted (`range_fitting`) and the student must be
    trained with its ranges held (`scheme.holds_ranges_in_training`), which needs
    `calibration_inputs`: held uncalibrated ranges would stay at TF-MOT's starting
    values. Pass `input_range` (`Teacher.input_range()`) so that the model input's
    range covers every pixel a device will feed, not only the calibration samples'
    (`quantizer_ranges.cover_model_input_range`).

    Args:
      teacher: a built, flat, functional or Sequential tf_keras model.
      scheme: bit widths.
      calibration_inputs: optional teacher-space inputs, shape (N, ...) matching the
        teacher's input.
      input_range: optional (low, high), scalars or per channel, of the inputs the
        deployed model will read.

    Returns:
      (student, float_layer_names): the TF-MOT model, and the names of the teacher's
      layers left in float (in model order).

    Raises:
      UserError: if TF-MOT cannot take the teacher or quantize any of its layers.
      ValueError: for calibration inputs of the wrong shape.
    """
    validate_tfmot_model(teacher)
    if not isinstance(scheme, QuantizationScheme):
        raise ValueError(f"scheme must be a QuantizationScheme, got {scheme!r}")
    if calibration_inputs is not None:
        calibration_inputs = quantizer_ranges.validated_inputs(teacher, calibration_inputs)

    unregistered = _unregistered_layers(teacher)
    if unregistered:  # TF-MOT's transforms stopped with "'str' object is not callable".
        layer = teacher.get_layer(unregistered[0])
        raise UserError(
            f"TF-MOT makes the teacher {teacher.name!r} again from its config, and Keras cannot find the class of its "
            f"layer {layer.name!r} ({type(layer).__name__}) by name; register it with "
            "@tf_keras.saving.register_keras_serializable() (a TeacherSource's custom_objects, or "
            "--teacher_custom_objects, registers a module's classes)")
    registry = tfmot_schemes.registry_for(scheme)
    quantizable_names = tfmot_schemes.quantizable_layer_names(teacher, registry)
    if not quantizable_names:
        raise UserError(
            f"TF-MOT supports none of the layers of the teacher {teacher.name!r}")
    quantizable_name_set = frozenset(quantizable_names)
    # Unannotated layers that compute nothing to quantize (a Reshape at the input) are not float ones.
    float_layer_names = tuple(
        layer.name for layer in teacher.layers
        if layer.name not in quantizable_name_set
        and not isinstance(layer, tf_keras.layers.InputLayer)
        and not tfmot_schemes.passes_values_through(layer, registry))

    def annotate(layer):
        layer_copy = _layer_copy(layer)
        if layer.name in quantizable_name_set:
            quantize_config = tfmot_schemes.quantize_config_of(layer, scheme)
            return tfmot.quantization.keras.quantize_annotate_layer(layer_copy, quantize_config)
        return layer_copy

    tfmot_scheme = tfmot_schemes.tfmot_scheme(scheme, tfmot_schemes.edge_layer_names(teacher, quantizable_names))
    # The teacher is a live Python object, not an untrusted file: Lambda layers in it
    # must survive the config round trips TF-MOT makes.
    with serialization_lib.SafeModeScope(safe_mode=False), \
            tfmot.quantization.keras.quantize_scope():
        annotated = tf_keras.models.clone_model(teacher, clone_function=annotate)
        annotated.set_weights(teacher.get_weights())
        _move_automatic_names_past(teacher)  # The names TF-MOT's transforms see, unwrapped.
        try:
            student = tfmot.quantization.keras.quantize_apply(annotated, tfmot_scheme)
        except (ValueError, RuntimeError) as error:
            raise UserError(
                f"TF-MOT could not quantize the teacher {teacher.name!r} as "
                f"{scheme.name}: {str(error).rstrip('.')}{_shared_layers_note(teacher)}") from error
    _finalize_layer_states(student)
    quantizer_ranges.initialize_weight_ranges(student)
    fit_low_bit_ranges = scheme.holds_ranges_in_training
    if fit_low_bit_ranges:
        range_fitting.fit_weight_ranges(student)
    if calibration_inputs is not None:
        quantizer_ranges.calibrate_activation_ranges(
            student, teacher, calibration_inputs, fit_low_bit_ranges=fit_low_bit_ranges)
    if input_range is not None:
        quantizer_ranges.cover_model_input_range(student, *input_range)
    return student, float_layer_names


def _unregistered_layers(model: tf_keras.Model) -> List[str]:
    """Names of `model`'s layers whose class Keras cannot find by its name when it makes a
    model from a config: classes of the user's own, not registered."""
    def found_by_name(cls) -> bool:
        return (cls.__module__.startswith(("tf_keras.", "tensorflow_model_optimization."))
                or tf_keras.saving.get_registered_object(tf_keras.saving.get_registered_name(cls)) is cls)
    return [layer.name for layer in model.layers if not found_by_name(type(layer))]


def _layer_copy(layer):
    """A new `layer` made from its config, as TF-MOT makes every layer again.

    Raises:
      UserError: if its config cannot make it again: an `Activation` or a layer's
        `activation` given as a Python lambda serializes as code, which Keras reads back
        only as a `Lambda` layer's function.
    """
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as error:  # pylint: disable=broad-except  # Keras raises ValueError, TypeError, ...
        if getattr(getattr(layer, "activation", None), "__name__", "") == "<lambda>":
            why = ("its activation is a Python lambda, which Keras makes again only as a Lambda layer's function; "
                   "give a named function, or compute it in a Lambda layer")
        else:
            why = first_line(error)
        raise UserError(f"TF-MOT makes every layer again from its config, and layer {layer.name!r} "
                        f"({layer_type(layer)}) cannot be: {why}") from None


def _shared_layers_note(model: tf_keras.Model) -> str:
    """" (layer 'conv' is applied 2 times: TF-MOT quantizes layers applied once)" when some
    layer of `model` is used more than once, a likely cause of TF-MOT's refusals."""
    shared = [f"{layer.name!r} is applied {len(layer.inbound_nodes)} times" for layer in model.layers
              if len(layer.inbound_nodes) > 1]
    if not shared:
        return ""
    return f" (layer {', '.join(shared)}: TF-MOT quantizes layers applied once)"


def _finalize_layer_states(model: tf_keras.Model) -> None:
    """Lets every layer compute what it derives from its weights, as Keras does after loading
    or setting weights. TF-MOT assigns the student's weights without it: an adapted
    `Normalization` then computed with mean 0 and variance 1 rather than its adapted
    statistics, and the student was at chance where its saved file was right."""
    for layer in model.submodules:
        if isinstance(layer, tf_keras.layers.Layer):
            layer.finalize_state()


def _quantizer_bits(quantizers) -> Optional[int]:
    bits = [quantizer.num_bits for quantizer in quantizers
            if getattr(quantizer, "num_bits", None) is not None]
    return max(bits) if bits else None


def _activation_quantizers(wrapper) -> list:
    quantizers = []
    for activation, quantizer in wrapper.quantize_config.get_activations_and_quantizers(
            wrapper.layer):
        # After build, the activation is a QuantizeAwareActivation that may quantize
        # nothing (NoOpActivation before a fused BatchNorm).
        should_pre = getattr(activation, "_should_pre_quantize", lambda: True)()
        should_post = getattr(activation, "_should_post_quantize", lambda: True)()
        if should_pre or should_post:
            quantizers.append(quantizer)
    return quantizers


def describe_student(student: tf_keras.Model) -> Tuple[LayerQuantization, ...]:
    """Reports, per layer of a TF-MOT student, what was quantized and at which bits.

    Args:
      student: a model returned by `quantize_student` (or `tfmot...quantize_apply`).

    Returns:
      One `LayerQuantization` per non-input layer, in model order.
    """
    if not isinstance(student, tf_keras.Model):
        raise ValueError(f"student must be a tf_keras.Model, got {type(student).__name__}")
    rows = []
    for layer in student.layers:
        if isinstance(layer, tf_keras.layers.InputLayer):
            continue
        if isinstance(layer, quantize_layer.QuantizeLayer):
            rows.append(LayerQuantization(
                name=layer.name, layer_type="QuantizeLayer", status=INPUT_QUANTIZER_STATUS,
                activation_bits=_quantizer_bits([layer.quantizer] if layer.quantizer else [])))
        elif isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            inner = layer.layer
            weight_quantizers = [quantizer for _, quantizer in
                                 layer.quantize_config.get_weights_and_quantizers(inner)]
            activation_quantizers = (_activation_quantizers(layer)
                                     + list(layer.quantize_config.get_output_quantizers(inner)))
            rows.append(LayerQuantization(
                name=inner.name, layer_type=type(inner).__name__, status=QUANTIZED_STATUS,
                weight_bits=_quantizer_bits(weight_quantizers),
                activation_bits=_quantizer_bits(activation_quantizers)))
        else:
            rows.append(LayerQuantization(name=layer.name, layer_type=layer_type(layer), status=FLOAT_STATUS))
    return tuple(rows)


def weights_per_channel(student: tf_keras.Model) -> Optional[bool]:
    """Whether the convolutions of TF-MOT `student` quantize their weights with a scale per
    output channel (`QuantizationScheme.per_channel`), which its TFLite export keeps; None
    when it has no quantized convolution to tell by (TF-MOT gives Dense layers one scale)."""
    per_axis = [bool(getattr(quantizer, "per_axis", False))
                for layer in student.layers
                if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)
                and isinstance(layer.layer, (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D))
                for _, quantizer in layer.quantize_config.get_weights_and_quantizers(layer.layer)]
    return any(per_axis) if per_axis else None


def layer_type(layer) -> str:
    """A layer's class name, as a report gives it: a Keras 3 layer run as it is inside a
    rebuilt teacher by its own class ("Keras 3 ChannelScale")."""
    if isinstance(layer, keras3_conversion.Keras3Layer):
        return f"Keras 3 {layer.keras3_class_name}"
    return type(layer).__name__


def summarize_layer_names(model: tf_keras.Model, names: Sequence[str], shown_per_type: int = 4) -> str:
    """Names of layers of `model` grouped by type, at most `shown_per_type` of each.

    For a console line: `1 Rescaling (rescaling); 56 TFOpLambda (tf.math.multiply, ...,
    52 more)`, where MobileNetV3 would otherwise list 57 names.
    """
    by_type = {}
    for name in names:
        by_type.setdefault(layer_type(model.get_layer(name)), []).append(name)
    groups = []
    for type_name, type_names in by_type.items():
        groups.append(f"{len(type_names)} {type_name} ({listed(type_names, shown_per_type)})")
    return "; ".join(groups)


def format_layer_report(rows: Sequence[LayerQuantization]) -> List[str]:
    """Formats `describe_student` rows as markdown table lines."""

    def bits(value):
        return "-" if value is None else str(value)

    lines = ["| layer | type | status | weight bits | activation bits |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.name} | {row.layer_type} | {row.status} | "
                     f"{bits(row.weight_bits)} | {bits(row.activation_bits)} |")
    return lines
