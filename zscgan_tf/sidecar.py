"""A teacher's sidecar: the JSON description saved beside its model file.

`tools/train_teacher.py` (`teacher_training.save_teacher`) writes it as `<model file>.json`,
with the preprocessing, the dataset, the class names, the input shape and the training
metrics. `teachers.load_teacher` reads it back: the preprocessing the teacher takes pixels
with, the class names of the labels file, the data a run evaluates on by default. A user may
write one too, `<model file without its extension>.json`, holding only some of those.
"""

import json
import os
from typing import Tuple

from zscgan_tf.errors import UserError, first_line
from zscgan_tf.files import write_json_atomic
from zscgan_tf.progress import note

SIDECAR_SUFFIX = ".json"
# Keys of a teacher's description that a JSON file of another kind (a Keras architecture
# saved with `model.to_json()`) does not hold.
SIDECAR_KEYS = ("class_names", "preprocessing")
# What else `tools/train_teacher.py` writes into it, each a string: the data the teacher was trained on.
_TEXT_KEYS = ("dataset", "data_dir")


def read(model_path: str) -> dict:
    """The JSON description saved beside a model file, or {} when there is none.

    It is `<model file>.json` (`teacher.keras.json`, as `tools/train_teacher.py` writes it),
    else `<model file without its extension>.json` (`teacher.json`, as a user may name it)
    when that holds any of `SIDECAR_KEYS`. That one may be another program's JSON: where it
    is not valid JSON, a note says it is not read.

    Raises:
      UserError: if `<model file>.json` exists but is not valid JSON, or either file holds
        `SIDECAR_KEYS` but is not a description (`_check`).
    """
    return read_with_path(model_path)[0]


def read_with_path(model_path: str) -> Tuple[dict, str]:
    """`read`'s description and the file it was read from ("" for none), for messages about
    what it says."""
    path = os.path.normpath(model_path)
    first_path = path_of(path)
    if not os.path.exists(first_path):
        return _without_model_extension(path)
    description = _json_of(first_path)
    _check(description, first_path)
    return description, first_path


def path_of(model_path: str) -> str:
    """Where a model's description is written (`tools/train_teacher.py`) and read first:
    `<model file>.json`."""
    return model_path + SIDECAR_SUFFIX


def _json_of(path: str):
    """What the JSON file `path` holds; a `UserError` if it cannot be read."""
    try:
        with open(path) as sidecar:
            return json.load(sidecar)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read teacher description {path!r}: {first_line(error)}") from error


def _check(description, path: str) -> None:
    """Refuses a description whose parts are not of the kinds `tools/train_teacher.py` writes."""
    problem = None
    if not isinstance(description, dict):
        problem = f"it holds a JSON {type(description).__name__}, not an object such as {{\"class_names\": [...]}}"
    elif "class_names" in description and not (isinstance(description["class_names"], list) and all(
            isinstance(name, str) for name in description["class_names"])):
        problem = "its \"class_names\" is not a list of strings"
    elif "preprocessing" in description and not (isinstance(description["preprocessing"], dict)
                                                 and isinstance(description["preprocessing"].get("mode"), str)):
        # The file is read whatever the flags say: --teacher_preprocessing does not get past it.
        problem = ("its \"preprocessing\" is not an object with a \"mode\" such as {\"mode\": \"tf\"}; correct it, or "
                   "remove it from that file and pass --teacher_preprocessing")
    else:
        not_text = [key for key in _TEXT_KEYS  # None, as no dataset, read as before.
                    if description.get(key) is not None and not isinstance(description[key], str)]
        if not_text:  # The dataset named its evaluation data, which ended in an AttributeError's traceback.
            problem = f"its \"{not_text[0]}\" is not a string (the name or folder of the data it was trained on)"
    if problem:
        raise UserError(f"cannot use teacher description {path!r}: {problem}")


def _without_model_extension(path: str) -> Tuple[dict, str]:
    """`<path without its extension>.json` when it is a teacher's description, and its path; else {}, ""."""
    other_path = os.path.splitext(path)[0] + SIDECAR_SUFFIX
    if other_path == path_of(path) or not os.path.isfile(other_path):
        return {}, ""
    try:
        description = _json_of(other_path)
    except UserError as error:  # Perhaps not ours to read; perhaps the user's, with a typo, which went unsaid.
        note(f"note: {error}; it is not read as the teacher's description (class names, preprocessing): correct it "
             "if it is one")
        return {}, ""
    if not (isinstance(description, dict) and set(SIDECAR_KEYS) & set(description)):
        return {}, ""
    _check(description, other_path)
    return description, other_path


def write(model_path: str, description: dict) -> None:
    """Writes `description` atomically as `model_path`'s sidecar (`path_of`)."""
    write_json_atomic(path_of(model_path), description)
