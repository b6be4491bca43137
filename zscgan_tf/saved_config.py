"""A saved model's config, read without loading the model.

A `.keras` file keeps its config in `config.json`, an `.h5` file in its `model_config`
attribute and a tf_keras SavedModel directory in `keras_metadata.pb`. Reading it first
tells what the file holds (a TF-MOT model, layers Keras does not know) before loading it
fails or succeeds.

Example:

  names = {entry["class_name"] for entry in class_entries(read_configs("model.keras"))}
"""

import json
import os
import zipfile
from typing import Iterator, List


def read_configs(path: str) -> List[dict]:
    """The configs saved in the model file or directory at `path`; empty when there is no
    readable one (loading the file is what reports that)."""
    try:
        if os.path.isdir(path):
            from tf_keras.protobuf import saved_metadata_pb2  # pylint: disable=import-outside-toplevel
            metadata = saved_metadata_pb2.SavedMetadata()
            with open(os.path.join(path, "keras_metadata.pb"), "rb") as metadata_file:
                metadata.ParseFromString(metadata_file.read())
            return [json.loads(node.metadata) for node in metadata.nodes]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return [json.loads(archive.read("config.json"))]
        import h5py  # pylint: disable=import-outside-toplevel  # A dependency of tf_keras.
        with h5py.File(path, "r") as h5_file:
            saved_config = h5_file.attrs.get("model_config")
        return [json.loads(saved_config)] if saved_config is not None else []
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # A protobuf DecodeError is a ValueError.
        return []


def class_entries(config) -> Iterator[dict]:
    """Every dict in `config` (nested dicts and lists, depth first) that names a class."""
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str):
            yield config
        for value in config.values():
            yield from class_entries(value)
    elif isinstance(config, list):
        for value in config:
            yield from class_entries(value)
