"""The teacher's output as class logits, whatever head the classifier was saved with.

Distillation with a temperature and the generator's conditional cross-entropy need
logits. `logits_model` removes a final softmax, and turns the single output of a binary
classifier (a sigmoid probability, or the logit before it) into two logits with the
same probabilities, so that it is a two-class classifier like any other.
"""

from typing import Optional, Tuple

import numpy as np
import tf_keras

from zscgan_tf.errors import UserError

# The API names under which a TFOpLambda records TensorFlow's softmax and sigmoid.
SOFTMAX_SYMBOLS = frozenset({"nn.softmax", "math.softmax"})
SIGMOID_SYMBOLS = frozenset({"math.sigmoid", "nn.sigmoid", "sigmoid"})


SOFTMAX_REMOVED_NOTE = ("the teacher's final softmax is removed, since distillation works on logits: the student "
                        "and the exported models output logits, not probabilities (the predicted class, their "
                        "argmax, is the same; apply a softmax on the device for probabilities)")


def logits_model(model: tf_keras.Model) -> Tuple[tf_keras.Model, Optional[str]]:
    """The same classifier returning logits, and a note for the user if its output changed form.

    Handles:
    - a last `Softmax` layer, `Activation('softmax')` or `tf.nn.softmax` over the last
      axis (a TFOpLambda, as Keras 3's `keras.ops.softmax` becomes), which is removed,
      and a last layer with `activation='softmax'`, rebuilt with a linear activation,
      same weights;
    - a binary classifier ending in `Dense(1)`, with a sigmoid (as its activation, as
      a last `Activation('sigmoid')` or `tf.nn.sigmoid`) or without one (a logit `z`): the `Dense(1)` is
      replaced by a `Dense(2)` giving `[-z/2, z/2]`, whose softmax is
      `[1 - sigmoid(z), sigmoid(z)]`; class 1 is the positive class.

    Returns:
      (model, note): `model` itself when its output already is logits, and note None;
      otherwise a note saying what the student and the exported models output instead
      (logits; two of them in the binary case), which a device app must know.

    Raises:
      UserError: for a subclassed model, a model with several outputs, a sigmoid output of
        several units (multi-label, not one class per image), or a single output that no
        `Dense(1)` computes.
    """
    if not getattr(model, "_is_graph_network", False):
        raise UserError(f"the teacher {model.name!r} is a subclassed model; TF-MOT and the BN taps need a "
                        "functional or Sequential tf_keras model")
    # Before the last layer is read: it is one head's of several, and the model rebuilt on it would be that head.
    check_single_output(model)
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    units = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    if units == 1:
        return _binary_as_two_logits(model)
    if activation is tf_keras.activations.sigmoid:
        raise UserError(f"the teacher's output is {units} sigmoids (multi-label); a classifier with one class per "
                        "image (softmax or logits) is required")
    is_softmax_layer = isinstance(last, tf_keras.layers.Softmax) or (
        isinstance(last, tf_keras.layers.Activation) and activation is tf_keras.activations.softmax) or (
        _is_tensorflow_call(last, SOFTMAX_SYMBOLS) and last.inbound_nodes[0].call_kwargs.get("axis", -1) in (
            -1, len(last.input.shape) - 1))
    if is_softmax_layer:
        return tf_keras.Model(model.inputs, last.input, name=model.name), SOFTMAX_REMOVED_NOTE
    if activation is tf_keras.activations.softmax:
        replacement = _rebuilt(last, name=f"{last.name}_logits")
        logits = replacement(last.input)
        replacement.set_weights(last.get_weights())
        return tf_keras.Model(model.inputs, logits, name=model.name), SOFTMAX_REMOVED_NOTE
    return model, None


def check_single_output(model: tf_keras.Model) -> None:
    """Refuses a model with several outputs (a main and an auxiliary head), naming them.

    Raises:
      UserError: if `model` has more than one output.
    """
    if len(model.outputs) != 1:
        heads = ", ".join(f"{name!r} {tuple(tensor.shape)}" for name, tensor in zip(model.output_names, model.outputs))
        raise UserError(f"the teacher has {len(model.outputs)} outputs ({heads}); one class vector is required: "
                        "save the head to quantize alone, e.g. tf_keras.Model(model.input, model.outputs[0])")


def _binary_as_two_logits(model: tf_keras.Model) -> Tuple[tf_keras.Model, str]:
    last = model.layers[-1]
    dense = last
    if (isinstance(last, tf_keras.layers.Activation) and last.activation is tf_keras.activations.sigmoid) or (
            _is_tensorflow_call(last, SIGMOID_SYMBOLS)):
        dense = last.inbound_nodes[0].inbound_layers
    if not (isinstance(dense, tf_keras.layers.Dense) and dense.units == 1
            and dense.activation in (tf_keras.activations.sigmoid, tf_keras.activations.linear)):
        raise UserError(f"the teacher has a single output, computed by {type(dense).__name__} {dense.name!r}; a "
                        "binary classifier must end in Dense(1), with or without a sigmoid")
    replacement = _rebuilt(dense, name=f"{dense.name}_two_logits", units=2)
    two_logits = replacement(dense.input)
    weights = dense.get_weights()
    halved = [np.concatenate([-weight / 2, weight / 2], axis=-1) for weight in weights]
    replacement.set_weights(halved)
    note = (f"the teacher is a binary classifier with one output ({dense.name!r}); it is read as two classes, "
            "0 and 1, with logits [-z/2, z/2] for its logit z (softmax gives [1 - sigmoid(z), sigmoid(z)]), and the "
            "student and exported models output those two logits")
    return tf_keras.Model(model.inputs, two_logits, name=model.name), note


def _is_tensorflow_call(layer: tf_keras.layers.Layer, symbols) -> bool:
    """Whether `layer` is a call, on one tensor, of the TensorFlow function known by one of the
    API names `symbols` (a TFOpLambda, which records the name it was called by)."""
    return (type(layer).__name__ == "TFOpLambda" and layer.symbol in symbols and len(layer.inbound_nodes) == 1
            and not isinstance(layer.input, (list, tuple)))


def _rebuilt(layer: tf_keras.layers.Layer, name: str, **changes) -> tf_keras.layers.Layer:
    """A new layer like `layer`, with a linear activation, another name and `changes` to its config."""
    config = layer.get_config()
    config.update(activation="linear", name=name, **changes)
    return layer.__class__.from_config(config)
