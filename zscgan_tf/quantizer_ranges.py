"""Starting ranges of a TF-MOT student's quantizers, taken from its teacher.

TF-MOT creates every weight range at [-6, 6], every activation range at [-6, 6] and
the model input's at [0, 0], and moves them only during `training=True` steps. A
student built by `quantize.quantize_student` starts instead from its teacher:

- `initialize_weight_ranges`: each weight quantizer's range from the copied weights.
- `calibrate_activation_ranges`: each activation quantizer's range from the teacher
  tensor it quantizes, over calibration inputs (generator samples in a data-free
  run): the observed min and max at 8 bits, as TFLite's converter takes them, and
  below 8 bits, on request, the least-squares range of `range_fitting`.
- `cover_model_input_range`: the model input's range widened to every input the
  teacher's preprocessing can make, so that no pixel level is clipped on a device.

So the untrained student already reproduces its teacher up to rounding.

Example:

    student, _ = quantize.quantize_student(teacher)  # weight ranges set, activations not
    unmatched = calibrate_activation_ranges(student, teacher, generated_images)
"""

import contextlib
import dataclasses
from typing import Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer

from zscgan_tf import range_fitting

# Samples per forward pass when calibrating activation ranges.
DEFAULT_CALIBRATION_BATCH_SIZE = 32
# The width of a quantizer that does not say (TF-MOT's default scheme is 8-bit throughout).
DEFAULT_SCHEME_BITS = 8
# The narrowest model-input quantizer a TFLite export reads (`quantize.EXPORTABLE_BITS`, which
# cannot be imported here: `quantize` imports this module); narrower ones are simulation only.
EXPORTED_INPUT_BITS = 8


def inbound_layers(layer) -> List[tf_keras.layers.Layer]:
    """The layers whose outputs `layer` reads, over all of its calls."""
    inbound = []
    for node in layer.inbound_nodes:
        node_layers = node.inbound_layers
        if not isinstance(node_layers, (list, tuple)):
            node_layers = [node_layers]
        inbound.extend(node_layers)
    return inbound



def initialize_weight_ranges(student: tf_keras.Model) -> None:
    """Sets every weight quantizer's range from the current weights.

    TF-MOT creates weight ranges at [-6, 6] and overwrites them with the weights'
    own range on each `training=True` call; doing it once now makes the untrained
    student's `training=False` outputs use the real ranges.

    Args:
      student: a TF-MOT model.
    """
    for layer in student.layers:
        if not isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            continue
        # `_weight_vars` holds (weight, quantizer, range variables); the quantizer
        # in training mode assigns the range it derives from the weight.
        weight_vars = layer._weight_vars  # pylint: disable=protected-access
        for weight, quantizer, range_variables in weight_vars:
            quantizer(weight, True, weights=range_variables)


def _is_model_input_quantizer(layer) -> bool:
    """Whether `layer` is the QuantizeLayer TF-MOT puts on the model input, with a quantizer."""
    if not isinstance(layer, quantize_layer.QuantizeLayer) or not layer.quantizer:
        return False
    # Where several layers read the model input, TF-MOT's transforms leave it called on
    # the InputLayers of their intermediate models as well as on the student's own.
    inbound = inbound_layers(layer)
    return bool(inbound) and all(isinstance(inbound_layer, tf_keras.layers.InputLayer)
                                 for inbound_layer in inbound)


def cover_model_input_range(student: tf_keras.Model, low, high) -> bool:
    """Widens the model input's quantizer range to contain [min(low), max(high)] (and 0).

    The input's range is otherwise the min and max of the calibration and training
    samples, but the deployed model reads every input its preprocessing can make, and
    values outside the range are clipped: a generator whose tanh never quite reaches
    -1 and 1 would merge the brightest pixel level into the next. TF-MOT's input
    quantizer only ever widens its range in training, so it keeps this one. A model
    input quantized below 8 bits is simulation only and keeps its (fitted) range.

    Args:
      student: a TF-MOT model.
      low, high: scalars or per-channel bounds, e.g. `Teacher.input_range()`.

    Returns:
      Whether the student has an 8-bit (or wider) model-input quantizer to widen.
    """
    low, high = float(np.min(low)), float(np.max(high))
    if not low <= high:
        raise ValueError(f"the input range must have low <= high, got [{low}, {high}]")
    quantizers = exported_input_quantizers(student)
    for layer in quantizers:
        variables = layer.quantizer_vars
        variables["min_var"].assign(min(float(variables["min_var"].numpy()), low, 0.0))
        variables["max_var"].assign(max(float(variables["max_var"].numpy()), high, 0.0))
    return bool(quantizers)


def exported_input_quantizers(student: tf_keras.Model) -> List[tf_keras.layers.Layer]:
    """The QuantizeLayers on `student`'s model input that an int8 export keeps (8 bits or more)."""
    return [layer for layer in student.layers
            if _is_model_input_quantizer(layer) and _bits_of(layer.quantizer) >= EXPORTED_INPUT_BITS]


def model_input_quantizer(student: tf_keras.Model):
    """The QuantizeLayer on `student`'s model input that an int8 export keeps, or None (a model
    whose first layer TF-MOT leaves float, a Rescaling say, reads float inputs)."""
    return next(iter(exported_input_quantizers(student)), None)


@contextlib.contextmanager
def model_input_ranges_as_quantized(student: tf_keras.Model) -> Iterator[None]:
    """Inside the block, the model input's 8-bit quantizer range is the grid its fake quantization
    computes with, so that TFLite's converter gives the int8 input that grid.

    TensorFlow's fake quantization nudges a range to put 0 on a level, computing in float32; the
    converter computes the zero point from the same range in double. For the [-1, 1] of the `tf`
    preprocessing the two fall either side of a tie: the student computes on levels -127 to 128
    (times 2/255), and the converter gave its int8 file -128 to 127. Every pixel level then reached
    the file one step below where the student had trained on it. Set to the nudged range, which
    nudging leaves as it is, the converter's zero point is the student's. The student computes the
    same either way; its range is put back after the block."""
    saved = []
    for layer in exported_input_quantizers(student):
        variables = layer.quantizer_vars
        low, high = variables["min_var"].numpy(), variables["max_var"].numpy()
        if not high > low:  # Not yet calibrated ([0, 0]): nothing to nudge.
            continue
        # The op's own nudging, as it clamps values far outside the range to the nudged ends.
        ends = tf.quantization.fake_quant_with_min_max_vars(
            tf.constant([-np.inf, np.inf], tf.float32), low, high, num_bits=layer.quantizer.num_bits,
            narrow_range=layer.quantizer.narrow_range).numpy()
        saved.append((variables, low, high))
        variables["min_var"].assign(ends[0])
        variables["max_var"].assign(ends[1])
    try:
        yield
    finally:
        for variables, low, high in saved:
            variables["min_var"].assign(low)
            variables["max_var"].assign(high)


# `_RangeTarget.layer_name` of the quantizer that reads the model input.
_MODEL_INPUT = None


@dataclasses.dataclass(frozen=True)
class _RangeTarget:
    """One activation quantizer and the teacher tensor it quantizes."""

    layer_name: Optional[str]
    before_activation: bool
    range_variables: dict
    num_bits: int


def _bits_of(quantizer) -> int:
    """A quantizer's width; 8 (ranges left as observed) for one that does not say."""
    return getattr(quantizer, "num_bits", None) or DEFAULT_SCHEME_BITS


def _activation_range_targets(student, teacher) -> Tuple[List[_RangeTarget], List[str]]:
    teacher_names = {layer.name for layer in teacher.layers}
    targets, unmatched = [], []
    for layer in student.layers:
        if isinstance(layer, quantize_layer.QuantizeLayer):
            if _is_model_input_quantizer(layer) and len(teacher.inputs) == 1:
                targets.append(_RangeTarget(_MODEL_INPUT, False, layer.quantizer_vars, _bits_of(layer.quantizer)))
            elif layer.quantizer:
                unmatched.append(layer.name)
        elif isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            name = layer.layer.name
            # pylint: disable=protected-access
            layer_targets = []
            if layer._output_quantizers:
                layer_targets.append(_RangeTarget(name, False, layer._output_quantizer_vars,
                                                  _bits_of(layer._output_quantizers[0])))
            for activation in layer._quantize_activations:
                if activation._should_pre_quantize():
                    layer_targets.append(_RangeTarget(name, True, activation._pre_activation_vars,
                                                      _bits_of(activation.quantizer)))
                if activation._should_post_quantize():
                    layer_targets.append(_RangeTarget(name, False, activation._post_activation_vars,
                                                      _bits_of(activation.quantizer)))
            # pylint: enable=protected-access
            if layer_targets and name not in teacher_names:
                unmatched.append(layer.name)  # renamed by a TF-MOT transform
            else:
                targets.extend(layer_targets)
    return targets, unmatched


def _linear_twin(layer):
    """A copy of a Conv/Dense layer without its activation: its pre-activation output."""
    config = layer.get_config()
    config["activation"] = "linear"
    twin = type(layer).from_config(config)
    twin.build(layer.input_shape)
    twin.set_weights(layer.get_weights())
    return twin


def validated_inputs(teacher, inputs) -> np.ndarray:
    """`inputs` as float32, checked to be a non-empty batch of the teacher's input shape."""
    inputs = np.asarray(inputs, dtype=np.float32)
    expected_shape = tuple(teacher.inputs[0].shape[1:])
    if inputs.ndim < 1 or inputs.shape[0] == 0 or tuple(inputs.shape[1:]) != expected_shape:
        raise ValueError(
            f"calibration inputs must have shape (N>0,) + {expected_shape}, "
            f"got {inputs.shape}")
    return inputs


def calibrate_activation_ranges(
        student: tf_keras.Model,
        teacher: tf_keras.Model,
        inputs: np.ndarray,
        batch_size: int = DEFAULT_CALIBRATION_BATCH_SIZE,
        fit_low_bit_ranges: bool = False,
) -> Tuple[str, ...]:
    """Sets the student's activation ranges to the teacher's on `inputs`.

    Each activation quantizer of the student quantizes a tensor that the teacher
    also computes (a layer's output, or a Conv/Dense pre-activation for softmax,
    sigmoid and tanh). Its range becomes the min and max of that teacher tensor over
    `inputs` (widened to contain 0, as TFLite requires), or with `fit_low_bit_ranges`,
    for quantizers below 8 bits, the part of it with the least squared rounding error
    over those values (`range_fitting`). BatchNorm statistics are not touched, unlike
    a `training=True` pass.

    Args:
      student: a TF-MOT model from `quantize_student(teacher, ...)`.
      teacher: the float model it was built from.
      inputs: teacher-space inputs, shape (N, ...) matching the teacher's input.
      batch_size: samples per forward pass.
      fit_low_bit_ranges: fit the ranges of quantizers below 8 bits (a second pass).

    Returns:
      Names of student layers whose quantizers were left as they were because the
      teacher has no tensor of that name (layers TF-MOT's transforms created).

    Raises:
      ValueError: for empty or wrongly shaped inputs or a non-positive batch size.
    """
    inputs = validated_inputs(teacher, inputs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    targets, unmatched = _activation_range_targets(student, teacher)
    if not targets:
        return tuple(unmatched)

    # One tap per distinct teacher tensor: a layer's output, or its input when the
    # pre-activation has to be recomputed by a linear twin.
    tap_keys = [key for key in dict.fromkeys(
        (target.layer_name, target.before_activation) for target in targets)
        if key[0] != _MODEL_INPUT]
    tap_tensors, twins = [], {}
    for name, before_activation in tap_keys:
        teacher_layer = teacher.get_layer(name)
        if before_activation:
            tap_tensors.append(teacher_layer.input)
            twins[name] = _linear_twin(teacher_layer)
        else:
            tap_tensors.append(teacher_layer.output)
    tap_model = tf_keras.Model(teacher.inputs, tap_tensors) if tap_tensors else None

    def batches_of_values():
        """Per batch of `inputs`: {key: the values of that tensor}."""
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start:start + batch_size]
            values = {(_MODEL_INPUT, False): batch}
            if tap_model is not None:
                outputs = tap_model(batch, training=False)
                if not isinstance(outputs, (list, tuple)):
                    outputs = [outputs]
                for key, value in zip(tap_keys, outputs):
                    values[key] = np.asarray(twins[key[0]](value, training=False) if key[1] else value)
            yield values

    minimum = {key: np.inf for key in [(_MODEL_INPUT, False)] + tap_keys}
    maximum = {key: -np.inf for key in minimum}
    for values in batches_of_values():
        for key, value in values.items():
            minimum[key] = min(minimum[key], float(value.min()))
            maximum[key] = max(maximum[key], float(value.max()))
    ranges = {key: (min(minimum[key], 0.0), max(maximum[key], 0.0)) for key in minimum}

    low_bits = {}  # key -> the width of its quantizers to fit
    if fit_low_bit_ranges:
        for target in targets:
            if target.num_bits < range_fitting.FITTED_BELOW_BITS:
                key = (target.layer_name, target.before_activation)
                low_bits[key] = max(low_bits.get(key, 0), target.num_bits)
    fitted = {}
    if low_bits:
        counts = {key: np.zeros(range_fitting.HISTOGRAM_BINS) for key in low_bits}
        for values in batches_of_values():
            for key in low_bits:
                counts[key] += np.histogram(values[key], range_fitting.HISTOGRAM_BINS, range=ranges[key])[0]
        fitted = {key: range_fitting.histogram_range(counts[key], *ranges[key], bits)
                  for key, bits in low_bits.items() if ranges[key][1] > ranges[key][0]}

    for target in targets:
        key = (target.layer_name, target.before_activation)
        fits = target.num_bits < range_fitting.FITTED_BELOW_BITS
        low, high = fitted.get(key, ranges[key]) if fits else ranges[key]
        target.range_variables["min_var"].assign(low)
        target.range_variables["max_var"].assign(high)
    return tuple(unmatched)


