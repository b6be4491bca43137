"""The evaluation stage's predictions, saved as it goes, so that an interrupted evaluation resumes.

ImageNet's 50,000 validation images through ResNet50 (13 images a second here), its QAT
student and three TFLite models take hours on a few CPU cores. The stage keeps each
model's predicted class for every image in `PREDICTIONS_FILE`, written atomically at
most every `SAVE_INTERVAL_SECONDS`, at the end, and when Ctrl-C, SIGTERM or SIGHUP stops it
(`evaluation_stage`), under a key made of the images, their
labels and a digest of every model. A rerun whose key matches goes on after the images
done (a finished evaluation is not run again); any other starts afresh.
"""

import hashlib
import io
import json
import os
import zipfile
from typing import Dict, List, Tuple

import numpy as np

from zscgan_tf.files import write_bytes_atomic

PREDICTIONS_FILE = os.path.join("evaluation", "predictions.npz")
SAVE_INTERVAL_SECONDS = 60.0
_KEY = "key"
_DONE = "images_done"


def key(images: np.ndarray, labels: np.ndarray, model_digests: Dict[str, str]) -> str:
    """What the saved predictions are of: SHA-256 of the images, labels and models (by name)."""
    digest = hashlib.sha256(json.dumps({"shape": list(images.shape), "models": model_digests},
                                       sort_keys=True).encode())
    digest.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    digest.update(np.asarray(labels, np.int64).tobytes())
    return digest.hexdigest()


def load(path: str, expected_key: str, names: List[str], count: int) -> Tuple[int, Dict[str, np.ndarray]]:
    """(images done, {model name: int32 (count,) predicted classes}) saved at `path` under
    `expected_key`; (0, arrays of -1) when there are none, or they are of something else."""
    fresh = {name: np.full(count, -1, np.int32) for name in names}
    try:
        with np.load(path) as saved:
            if str(saved[_KEY]) != expected_key or any(saved[name].shape != (count,) for name in names):
                return 0, fresh
            return int(saved[_DONE]), {name: saved[name].astype(np.int32) for name in names}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # Missing or unreadable: start afresh.
        return 0, fresh


def save(path: str, saved_key: str, done: int, predictions: Dict[str, np.ndarray]) -> None:
    """Writes the predictions of the first `done` images atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{_KEY: np.array(saved_key), _DONE: np.array(done)}, **predictions)
    write_bytes_atomic(path, buffer.getvalue())
