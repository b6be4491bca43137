"""A teacher's inference graph as one flat functional model: nested models replaced by
their own layers, augmentation layers removed.

Transfer-learning classifiers usually call a whole Keras Applications model as one
layer (`x = base_model(x, training=False)`), often after a nested `Sequential` of
random augmentation layers. TF-MOT quantizes only flat models, and the BatchNorm taps
need every BN layer in the outer graph, so `load_teacher` flattens such a classifier:
it computes the same function with the same weights and layer names. Random
augmentation layers pass images through unchanged at inference, which is all a teacher
does; they are left out, so that neither the student nor the TFLite models carry them
(their random-number state can stop the TFLite converter).

Usage:

    flat = flat_inference_model(model)  # `model` itself when nothing is nested or left out
"""

from typing import Dict, List, Set

import tensorflow as tf
import tf_keras
from tf_keras.src.saving import serialization_lib

from zscgan_tf.errors import UserError

# Random augmentation layers of tf_keras and Keras 3, by class name: identity at inference.
AUGMENTATION_LAYERS = frozenset({
    "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast", "RandomBrightness",
    "RandomHeight", "RandomWidth",
    # Keras 3 only.
    "RandomGrayscale", "RandomHue", "RandomSaturation", "RandomColorJitter", "RandomColorDegeneration",
    "RandomSharpness", "RandomShear", "RandomPerspective", "RandomErasing", "RandomGaussianBlur",
    "RandomPosterization", "RandomInvert", "RandomElasticTransform",
})
# Keyword arguments of a nested model's call that the flat model can do without: the
# caller of the flat model decides the mode, and TF-MOT's models are called without a mask.
DROPPABLE_CALL_ARGUMENTS = frozenset({"training", "mask"})


def has_nested_models(model: tf_keras.Model) -> bool:
    """Whether any layer of `model` is itself a model."""
    return any(isinstance(layer, tf_keras.Model) for layer in model.layers)


def is_augmentation_layer(layer) -> bool:
    """Whether `layer` is one of tf_keras' or Keras 3's random augmentation layers, which pass
    their input through unchanged at inference (`AUGMENTATION_LAYERS`; not `RandomCrop`,
    which crops the centre at inference, nor a user's layer of the same name)."""
    layer_type = type(layer)
    return (layer_type.__name__ in AUGMENTATION_LAYERS
            and layer_type.__module__.split(".")[0] in ("keras", "tf_keras"))


def undroppable_call_arguments(kwargs) -> List[str]:
    """The keyword arguments of a nested model's call that a flat model cannot keep, sorted:
    all but `training` and `mask=None` (`DROPPABLE_CALL_ARGUMENTS`)."""
    return sorted(name for name, value in kwargs.items()
                  if name not in DROPPABLE_CALL_ARGUMENTS or (name == "mask" and value is not None))


def claim_name(name: str, prefix: str, taken_names: Set[str]) -> str:
    """The name a nested model's layer keeps in the flat model, added to `taken_names`: `name`,
    or with the nested model's `prefix` if it is taken (and a number if that is taken too).
    The outer model's own layers (empty `prefix`) keep theirs."""
    claimed = name
    if prefix and claimed in taken_names:
        claimed = f"{prefix}{name}"
    suffix = 1
    while prefix and claimed in taken_names:
        suffix += 1
        claimed = f"{prefix}{name}_{suffix}"
    taken_names.add(claimed)
    return claimed


def flat_inference_model(model: tf_keras.Model) -> tf_keras.Model:
    """`model` with every nested functional or Sequential model replaced by its layers and
    every random augmentation layer (`is_augmentation_layer`) left out.

    Each layer is rebuilt from its config and given the original's weights, so the
    result shares nothing with `model`. Names are kept; a nested layer whose name is
    already taken gets its model's name as a prefix. A layer called several times
    stays one (shared) layer. The `training` argument a nested model was called with
    is dropped: whoever calls the flat model chooses training or inference mode for
    all its layers (the pipeline runs the teacher in inference mode).

    Args:
      model: a functional or Sequential tf_keras model; returned unchanged if it nests
        no model and has no augmentation layer, or is not a graph network (its own
        checks then speak for it).

    Returns:
      A functional model with the same inputs, outputs, weights and name.

    Raises:
      UserError: if a nested model is subclassed (its graph is unknown) or is called
        with arguments other than its inputs, `training` and `mask=None`.
    """
    if not getattr(model, "_is_graph_network", False) or not any(
            isinstance(layer, tf_keras.Model) or is_augmentation_layer(layer) for layer in model.layers):
        return model
    inputs = [tf_keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name.split(":")[0])
              for tensor in model.inputs]
    replay = _Replay(taken_names={layer.name for layer in model.layers if not isinstance(layer, tf_keras.Model)})
    # The model has loaded, so its Lambda layers (if any) were already trusted.
    with serialization_lib.SafeModeScope(safe_mode=False):
        outputs = replay.run(model, inputs, prefix="")
    return tf_keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


class _Replay:
    """Rebuilds the layers of nested graphs on new tensors, one clone per original layer."""

    def __init__(self, taken_names: Set[str]):
        self.taken_names = taken_names
        self.clones: Dict[int, tf_keras.layers.Layer] = {}

    def run(self, model: tf_keras.Model, inputs: List[tf.Tensor], prefix: str) -> List[tf.Tensor]:
        """The outputs of `model`'s graph computed from `inputs` by cloned layers, as in Keras' own
        `Functional._run_internal_graph`."""
        usage_count = model._tensor_usage_count  # pylint: disable=protected-access
        computed = {}
        for reference, tensor in zip(model.inputs, inputs):
            key = str(id(reference))
            computed[key] = [tensor] * usage_count[key]
        nodes_by_depth = model._nodes_by_depth  # pylint: disable=protected-access
        for depth in sorted(nodes_by_depth, reverse=True):
            for node in nodes_by_depth[depth]:
                if node.is_input:
                    continue
                args, kwargs = node.map_arguments(computed)
                layer = node.layer
                if isinstance(layer, tf_keras.Model):
                    outputs = self._run_nested(layer, args, kwargs, prefix)
                elif is_augmentation_layer(layer):
                    outputs = args[0]
                else:
                    clone = self._clone(layer, prefix)
                    outputs = clone(*args, **kwargs)
                    # The clone has weights once called; copying again for a shared layer is harmless.
                    clone.set_weights(layer.get_weights())
                for key, output in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                    computed[key] = [output] * usage_count[key]
        return [computed[str(id(reference))].pop() for reference in model.outputs]

    def _run_nested(self, nested: tf_keras.Model, args, kwargs, prefix: str) -> List[tf.Tensor]:
        if not getattr(nested, "_is_graph_network", False):
            raise UserError(f"the teacher nests the subclassed model {nested.name!r}, which cannot be flattened for "
                            "TF-MOT; save a functional model built from its layers")
        unexpected = undroppable_call_arguments(kwargs)
        if unexpected:
            raise UserError(f"the teacher calls its nested model {nested.name!r} with {', '.join(unexpected)}, "
                            "which a flat model cannot keep; save a functional model built from its layers")
        inputs = tf.nest.flatten(args)
        if len(inputs) != len(nested.inputs):
            raise UserError(f"the teacher calls its nested model {nested.name!r} on {len(inputs)} tensors, but it "
                            f"takes {len(nested.inputs)}")
        return self.run(nested, inputs, prefix=f"{prefix}{nested.name}_")

    def _clone(self, layer: tf_keras.layers.Layer, prefix: str) -> tf_keras.layers.Layer:
        if id(layer) not in self.clones:
            config = layer.get_config()
            config["name"] = claim_name(layer.name, prefix, self.taken_names)
            self.clones[id(layer)] = layer.__class__.from_config(config)
        return self.clones[id(layer)]
