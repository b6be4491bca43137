"""The float type a model's layers compute in.

The pipeline computes in float32: TF-MOT's fake quantization and TensorFlow's TFLite
converter take nothing else. A model built under a mixed-precision policy computes in
float16 or bfloat16 (its weights stay float32), one built under
`tf_keras.backend.set_floatx("float64")` in float64. `teachers.load_teacher` rebuilds a
saved teacher to compute in float32; a model handed to the Python API is refused with
these phrases instead.
"""

from typing import List, Optional

import tf_keras

from zscgan_tf.progress import count_of, listed

REDUCED_PRECISION_DTYPES = ("float16", "bfloat16")

# Layers a refusal names before it counts the rest.
LAYERS_LISTED = 5


def reduced_precision_layers(model: tf_keras.Model) -> List[str]:
    """Names of the layers that compute in float16 or bfloat16 (a mixed-precision policy)."""
    return [layer.name for layer in model.layers
            if getattr(layer, "compute_dtype", "float32") in REDUCED_PRECISION_DTYPES]


def double_precision_layers(model: tf_keras.Model) -> List[str]:
    """Names of the layers that compute in float64 (a model built under `set_floatx("float64")`)."""
    return [layer.name for layer in model.layers if getattr(layer, "compute_dtype", "float32") == "float64"
            and not isinstance(layer, tf_keras.layers.InputLayer)]


def reduced_precision_phrase(model: tf_keras.Model) -> Optional[str]:
    """"2 layers compute in float16 (policy mixed_float16: conv, pool)", naming at most
    `LAYERS_LISTED` of them, or None when no layer of `model` computes in float16 or bfloat16."""
    reduced = reduced_precision_layers(model)
    if not reduced:
        return None
    first = model.get_layer(reduced[0])
    return (f"{count_of(len(reduced), 'layer')} compute in {first.compute_dtype} "
            f"(policy {first.dtype_policy.name}: {listed(reduced, LAYERS_LISTED)})")
