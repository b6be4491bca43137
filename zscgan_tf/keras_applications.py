"""The Keras Applications a teacher can be named by (`--teacher=mobilenet_v2`): how each is
built and fed, and the ImageNet class names of their ImageNet weights."""

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Callable, Dict, Tuple

import tf_keras

from zscgan_tf.errors import UserError, first_line

if TYPE_CHECKING:  # teachers imports this module.
    from zscgan_tf.teachers import TeacherSource

IMAGENET_CLASSES = 1000
# The ImageNet class index Keras Applications' `decode_predictions` reads ({"0": ["n01440764",
# "tench"], ...}), downloaded once into ~/.keras/models as their weights are, and its MD5.
IMAGENET_CLASS_INDEX_FILE = "imagenet_class_index.json"
IMAGENET_CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


@dataclasses.dataclass(frozen=True)
class KerasApplication:
    """How to build one Keras Applications family member and feed it."""

    builder: Callable
    preprocessing_mode: str
    default_input_size: int
    takes_alpha: bool = False


KERAS_APPLICATIONS: Dict[str, KerasApplication] = {
    "resnet50": KerasApplication(tf_keras.applications.ResNet50, "caffe", 224),
    "resnet101": KerasApplication(tf_keras.applications.ResNet101, "caffe", 224),
    "resnet152": KerasApplication(tf_keras.applications.ResNet152, "caffe", 224),
    "resnet50_v2": KerasApplication(tf_keras.applications.ResNet50V2, "tf", 224),
    "resnet101_v2": KerasApplication(tf_keras.applications.ResNet101V2, "tf", 224),
    "mobilenet": KerasApplication(tf_keras.applications.MobileNet, "tf", 224, takes_alpha=True),
    "mobilenet_v2": KerasApplication(tf_keras.applications.MobileNetV2, "tf", 224, takes_alpha=True),
    # These four scale pixels inside the model (Rescaling, Normalization): they read raw 0-255 pixels.
    "mobilenet_v3_small": KerasApplication(tf_keras.applications.MobileNetV3Small, "raw", 224, takes_alpha=True),
    "mobilenet_v3_large": KerasApplication(tf_keras.applications.MobileNetV3Large, "raw", 224, takes_alpha=True),
    "efficientnet_b0": KerasApplication(tf_keras.applications.EfficientNetB0, "raw", 224),
    "efficientnet_v2_b0": KerasApplication(tf_keras.applications.EfficientNetV2B0, "raw", 224),
    "densenet121": KerasApplication(tf_keras.applications.DenseNet121, "torch", 224),
}


def build_keras_application(source: "TeacherSource") -> tf_keras.Model:
    """The Keras Applications model `source` names (`source.model`, a key of `KERAS_APPLICATIONS`),
    built with its weights: ImageNet's (downloaded by Keras), none (random) or a file's.

    Raises:
      UserError: if it cannot be built, or its weights cannot be had.
    """
    application = KERAS_APPLICATIONS[source.model]
    input_size = source.input_size or application.default_input_size
    weights = source.weights
    if weights.lower() == "none":
        weights = None
    elif weights != "imagenet" and not os.path.exists(weights):
        raise UserError(f"weights file {weights!r} does not exist (use 'imagenet', 'none' or a file path)")
    channels = 3 if weights == "imagenet" else source.channels
    num_classes = source.num_classes or IMAGENET_CLASSES
    if weights == "imagenet" and num_classes != IMAGENET_CLASSES:
        raise UserError(f"ImageNet weights have {IMAGENET_CLASSES} classes, not {num_classes}")
    kwargs = dict(weights=weights if weights == "imagenet" else None, input_shape=(input_size, input_size, channels),
                  classes=num_classes, classifier_activation=None)
    if application.takes_alpha:
        kwargs["alpha"] = source.alpha
    try:
        model = application.builder(**kwargs)
    except ValueError as error:
        raise UserError(f"cannot build {source.model}: {first_line(error)}") from error
    except Exception as error:  # Keras downloads weights: network failures surface here.
        message = first_line(error)
        offline = (" (without the network here: fetch that file where there is one, then pass "
                   "--teacher_weights=<its path>)" if "URL fetch failure" in message else "")
        described = "random weights (--teacher_weights=none)" if weights is None else f"{weights} weights"
        raise UserError(f"cannot build {source.model} with {described}: {message}{offline}") from error
    if weights not in (None, "imagenet"):
        try:
            model.load_weights(weights)
        except Exception as error:
            raise UserError(f"cannot load weights {weights!r} into {source.model}: {first_line(error)}") from error
    return model


def imagenet_class_names() -> Tuple[str, ...]:
    """ImageNet's class names in the output order of Keras Applications' ImageNet weights
    ("tench", "goldfish", ...), from `IMAGENET_CLASS_INDEX_FILE`.

    Raises:
      UserError: if the class index cannot be downloaded or read.
    """
    from tf_keras.src.applications import imagenet_utils  # pylint: disable=import-outside-toplevel
    try:
        path = tf_keras.utils.get_file(IMAGENET_CLASS_INDEX_FILE, imagenet_utils.CLASS_INDEX_PATH,
                                       cache_subdir="models", file_hash=IMAGENET_CLASS_INDEX_MD5)
        with open(path) as index_file:
            index = json.load(index_file)
        return tuple(str(index[str(label)][1]) for label in range(IMAGENET_CLASSES))
    except Exception as error:  # pylint: disable=broad-except  # A download fails in many ways.
        raise UserError(f"cannot fetch ImageNet's class names ({first_line(error)})") from error
