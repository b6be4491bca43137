"""An exported TFLite model made ready to deploy: its signature, its labels, its agreement check.

`export.convert_to_tflite` gives every file the serving signature LiteRT's signature
runner and Android's `runSignature` call it by (`with_serving_signature`). Beside an
exported model, `write_labels` writes the class names Coral's examples read, and
`export_agreement_warning` checks that an int8 model picks the classes the Keras model
it came from picks.
"""

import contextlib
import os
from typing import Optional, Tuple

import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

from zscgan_tf import evaluate
from zscgan_tf.files import write_text_if_changed

# The signature every exported file carries (`with_serving_signature`): a SavedModel's conversion's
# key, and the names a deploying script passes its pixels and reads the logits by.
SIGNATURE_KEY = "serving_default"
SIGNATURE_INPUT = "inputs"
SIGNATURE_OUTPUT = "logits"
# Each int8 export is run on this many calibration samples against the Keras model it came from;
# below this argmax agreement the run warns that the conversion went wrong. Trained models agree on
# 99% or more of their own generated samples; the bar is low enough that a barely trained
# generator's unsure samples do not trip it, and a broken conversion (0% once) does.
EXPORT_CHECK_SAMPLES = 100
MIN_EXPORT_AGREEMENT = 0.5


def with_serving_signature(model_bytes: bytes) -> bytes:
    """`model_bytes` with the signature `SIGNATURE_KEY`, which names the model's one input
    `SIGNATURE_INPUT` and its output `SIGNATURE_OUTPUT`, for LiteRT's `get_signature_runner`
    and Android's `runSignature`; the graph and its buffers are untouched. A conversion from a
    concrete function without the SavedModel round trip (`convert_to_tflite`) writes none; a
    model that has one is returned as it is."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    if model.signatureDefs:
        return model_bytes
    subgraph = model.subgraphs[0]
    signature = tflite_schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY, 0
    signature.inputs = [_tensor_map(SIGNATURE_INPUT, subgraph.inputs[0])]
    signature.outputs = [_tensor_map(SIGNATURE_OUTPUT, subgraph.outputs[0])]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor_map(name: str, tensor_index: int):
    tensor_map = tflite_schema.TensorMapT()
    tensor_map.name, tensor_map.tensorIndex = name, tensor_index
    return tensor_map


def write_labels(path: str, class_names: Tuple[str, ...]) -> bool:
    """Writes a labels file: `class_names` one a line, output i on line i + 1, as Coral's
    examples read one. Without names, writes nothing and removes a file an earlier model
    left at `path`; so does a write that fails (a full disk), before its error is raised:
    another model's labels must not stay beside this one. Returns whether it wrote one."""
    try:
        if class_names:
            write_text_if_changed(path, "".join(f"{name}\n" for name in class_names))
            return True
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(path)
        raise
    if os.path.exists(path):
        os.remove(path)
    return False


def export_agreement_warning(kind: str, model_bytes: bytes, keras_model, samples: np.ndarray) -> Optional[str]:
    """A warning when the int8 TFLite model picks another class than the Keras model it was
    converted from (the teacher for PTQ, the student for QAT) on too many of the first
    `EXPORT_CHECK_SAMPLES` samples; None when they agree. A converter that mishandles a
    pattern yields a fully-integer model that computes something else, which nothing else
    would catch without real data."""
    samples = samples[:EXPORT_CHECK_SAMPLES]
    agreement = evaluate.agreement(evaluate.TfliteClassifier(model_bytes).predict(samples),
                                   evaluate.keras_predict(keras_model, samples))
    if agreement >= MIN_EXPORT_AGREEMENT:
        return None
    return (f"the {kind} TFLite model picks the class its Keras model picks on only {100 * agreement:.0f}% of "
            f"{len(samples)} generated samples (expected {100 * MIN_EXPORT_AGREEMENT:.0f}% or more): the conversion "
            "may have gone wrong; compare the two before deploying it")
