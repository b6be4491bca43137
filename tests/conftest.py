"""Shared tiny models for the tests: fast on 2 CPU cores, real Conv+BN graphs."""

import os

import numpy as np
import pytest

import zscgan_tf  # noqa: F401  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import tf_keras

from zscgan_tf import teacher_training, teachers
from zscgan_tf.preprocessing import Preprocessing


def build_tiny_classifier(input_shape=(8, 8, 1), num_classes=4, seed=0, softmax=False):
    """Conv-BN-ReLU, DepthwiseConv-BN-ReLU, GAP, Dense-BN, Dense: BN after all three kinds."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(input_shape, name="image")
    x = tf_keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="conv_bn")(x)
    x = tf_keras.layers.ReLU(name="conv_relu")(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = tf_keras.layers.BatchNormalization(name="depthwise_bn")(x)
    x = tf_keras.layers.ReLU(name="depthwise_relu")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = tf_keras.layers.Dense(8, name="dense")(x)
    x = tf_keras.layers.BatchNormalization(name="dense_bn")(x)
    x = tf_keras.layers.ReLU(name="dense_relu")(x)
    outputs = tf_keras.layers.Dense(num_classes, activation="softmax" if softmax else None, name="logits")(x)
    model = tf_keras.Model(inputs, outputs, name="tiny")
    randomize_batchnorm_statistics(model, seed)
    return model


def randomize_batchnorm_statistics(model, seed=0):
    """Gives BN layers non-trivial moving statistics, as a trained model has."""
    random = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(random.normal(0.0, 0.5, channels).astype("float32"))
            layer.moving_variance.assign(random.uniform(0.5, 2.0, channels).astype("float32"))


def tiny_teacher(input_shape=(8, 8, 1), num_classes=4, seed=0, preprocessing="tf"):
    model = build_tiny_classifier(input_shape, num_classes, seed)
    model.trainable = False
    return teachers.Teacher(model=model, preprocessing=Preprocessing(preprocessing), image_shape=tuple(input_shape),
                            num_classes=num_classes, name="tiny", description={})


@pytest.fixture
def teacher():
    return tiny_teacher()


@pytest.fixture
def tiny_teacher_file(tmp_path):
    """A saved tiny teacher with its sidecar, as tools/train_teacher.py writes them."""
    path = str(tmp_path / "tiny_teacher.keras")
    teacher_training.save_teacher(build_tiny_classifier(), path, Preprocessing("tf"), dataset_name="synthetic",
                                  class_names=["a", "b", "c", "d"], metrics=None)
    assert os.path.exists(path + ".json")
    return path
