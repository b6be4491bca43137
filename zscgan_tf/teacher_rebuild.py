"""A loaded classifier rebuilt into the form every stage needs of a teacher.

`teachers.load_teacher` reads a model, then rebuilds it where it differs from that form:
a grayscale model without a channel axis is given one (`with_channel_axis`), a (batch,
1, 1, classes) output becomes a class vector (`with_class_vector_output`), and a model
on another input type, size or batch, computing in another precision or with
SyncBatchNormalization, is rebuilt on a float32 input of the generator's size,
computing in float32 (`float32_model`, and `float32_notes` to say so). Layers keep
their names and weights.
"""

from typing import List, Optional, Tuple

import tensorflow as tf
import tf_keras
from tf_keras.src.saving import serialization_lib

from zscgan_tf import precision
from zscgan_tf.errors import UserError, first_line
from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.progress import count_of, listed

# The most layers a message names; the rest are counted.
LAYERS_NAMED = 4


def with_channel_axis(model: tf_keras.Model) -> Tuple[tf_keras.Model, Optional[str]]:
    """`model`, and a note, given a channel axis if it reads grayscale images without one.

    A model whose input is (batch, height, width), as TF-MOT's own Keras example builds one
    (`Reshape((28, 28, 1))` after a (28, 28) input), becomes one that reads (batch,
    height, width, 1) and drops the axis before its first layer; `teachers.load_teacher` flattens
    it. The generator, the student and the TFLite models all work on image tensors.
    """
    # A subclassed model has no inputs to read: `logits.logits_model` refuses it in a line.
    if not getattr(model, "_is_graph_network", False) or len(model.inputs) != 1 or len(model.inputs[0].shape) != 3:
        return model, None
    _, height, width = model.inputs[0].shape
    inputs = tf_keras.Input((height, width, 1), dtype=model.inputs[0].dtype,
                            name=model.inputs[0].name.split(":")[0])
    images = tf_keras.layers.Reshape((height, width), name=f"{model.name}_drop_channel_axis")(inputs)
    note = (f"the teacher reads ({height}, {width}) images without a channel axis; it is given one: it reads "
            f"({height}, {width}, 1) grayscale images, as the generator and the TFLite models make and take them")
    return tf_keras.Model(inputs, model(images), name=model.name), note


def _synchronized_batchnorm_layers(model: tf_keras.Model) -> List[str]:
    """Names of the SyncBatchNormalization layers (a model trained under a distribution
    strategy): at inference they are BatchNormalization, which TF-MOT and the BN loss know."""
    return [layer.name for layer in model.layers
            if isinstance(layer, tf_keras.layers.experimental.SyncBatchNormalization)]


def float32_notes(model: tf_keras.Model, preprocessing: Preprocessing) -> List[str]:
    """What the user should know when `float32_model` changes how `model` computes."""
    notes = []
    dtype = model.inputs[0].dtype
    double = precision.double_precision_layers(model)
    if dtype != tf.float32 and not (dtype == tf.float64 and double):  # A float64 model: the note below.
        notes.append(f"the teacher reads {dtype.name} input; it is rebuilt on a float32 input, since the "
                     "generator's samples are not whole numbers and their gradient must reach the generator, and "
                     f"fed with '{preprocessing.mode}' preprocessing")
    reduced = precision.reduced_precision_layers(model)
    if reduced:
        policy = model.get_layer(reduced[0]).dtype_policy.name
        notes.append(f"the teacher was saved with mixed precision ({count_of(len(reduced), 'layer')} computing in "
                     f"{policy}); it is rebuilt to compute in float32 with the same weights, as the TFLite converter "
                     "and TF-MOT need")
    if double:
        notes.append(f"the teacher computes in float64 ({count_of(len(double), 'layer')}); it is rebuilt to compute "
                     "in float32 with the same weights, as the TFLite converter and TF-MOT need")
    batch = model.inputs[0].shape[0]
    if batch is not None:
        notes.append(f"the teacher's input takes batches of {batch} only; it is rebuilt to take any batch size, "
                     "as generator training, calibration and the batch-1 TFLite model need")
    synchronized = _synchronized_batchnorm_layers(model)
    if synchronized:
        notes.append(f"its SyncBatchNormalization layers ({listed(synchronized, LAYERS_NAMED)}) are read as the "
                     "BatchNormalization layers they are at inference")
    return notes


def float32_model(model: tf_keras.Model, image_shape: Tuple[int, int, int]) -> tf_keras.Model:
    """`model`, rebuilt where the pipeline needs it to be other: on a float32 input of
    `image_shape`, with any batch size, if it takes any image size, a fixed batch size or
    another type (uint8 pixels, say),
    computing in float32 if its layers have a mixed-precision policy or compute in float64,
    and with BatchNormalization for SyncBatchNormalization (the same at inference).

    TF-MOT's student and the TFLite export need a fixed size: the one the generator
    makes, `--teacher_input_size`. The generator makes float32 samples and trains through
    the teacher's input gradient, which an integer input (and its cast) does not have.
    The TFLite converter cannot quantize float16 ops (it stops at every one). Layers keep
    their names and weights (which mixed precision keeps in float32).
    """
    other_precision = frozenset(precision.reduced_precision_layers(model) + precision.double_precision_layers(model))
    synchronized = frozenset(_synchronized_batchnorm_layers(model))
    if (tuple(model.inputs[0].shape[1:]) == tuple(image_shape) and model.inputs[0].dtype == tf.float32
            and model.inputs[0].shape[0] is None and not other_precision and not synchronized):
        return model

    def clone(layer):
        config = layer.get_config()
        if layer.name in other_precision:
            config["dtype"] = "float32"
        if layer.name in synchronized:
            return tf_keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    inputs = tf_keras.Input(image_shape, dtype=tf.float32, name=model.inputs[0].name.split(":")[0])
    try:
        # The model has loaded, so its Lambda layers (if any) were already trusted.
        with serialization_lib.SafeModeScope(safe_mode=False):
            rebuilt = tf_keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
        rebuilt.set_weights(model.get_weights())
    except Exception as error:  # pylint: disable=broad-except
        raise UserError(f"the teacher {model.name!r} could not be rebuilt on a float32 input of "
                        f"{image_shape[0]}x{image_shape[1]}: {first_line(error)}") from error
    return rebuilt


def with_class_vector_output(model: tf_keras.Model) -> Tuple[tf_keras.Model, Optional[str]]:
    """`model`, and a note, with a (batch, 1, 1, classes) output reshaped to (batch, classes).

    A fully convolutional classifier (a 1x1 convolution and pooling that keeps its
    dimensions, as SqueezeNet ends) gives its class scores that way. The reshape is one
    more layer at the end, after any softmax has been taken off (`logits.logits_model`).
    """
    if len(model.outputs) != 1 or not getattr(model, "_is_graph_network", False):
        return model, None
    shape = tuple(model.outputs[0].shape)
    if len(shape) < 3 or any(size != 1 for size in shape[1:-1]) or shape[-1] is None or shape[-1] < 2:
        return model, None
    classes = int(shape[-1])
    vector = tf_keras.layers.Reshape((classes,), name=f"{model.name}_class_vector")(model.outputs[0])
    note = (f"the teacher's output has shape {shape[1:]}; it is read as {classes} class scores, and the TFLite "
            f"models output (1, {classes})")
    return tf_keras.Model(model.inputs, vector, name=model.name), note
