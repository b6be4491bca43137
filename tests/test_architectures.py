"""Tests for zscgan_tf.architectures: the teachers' builders."""

import pytest

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

from zscgan_tf import architectures
from zscgan_tf.errors import UserError


def _batchnorm_layers(model):
    return [layer for layer in model.layers if isinstance(layer, tf_keras.layers.BatchNormalization)]


def test_resnet8_on_8x8_inputs_has_projection_shortcuts_and_stable_names():
    model = architectures.build_architecture("resnet8", (8, 8, 1), 10)
    assert model.output_shape == (None, 10)
    assert model.layers[-1].activation is tf_keras.activations.linear
    names = [layer.name for layer in model.layers]
    # Stem, two per block, and a 1x1 projection where stages 2 and 3 halve the resolution.
    assert len(_batchnorm_layers(model)) == 1 + 2 * 3 + 2
    assert "stage2_block1_shortcut_conv" in names and "stage1_block1_shortcut_conv" not in names
    assert model.get_layer("stage3_block1_shortcut_conv").strides == (2, 2)
    assert names == [layer.name for layer in architectures.build_resnet(8, (8, 8, 1), 10).layers]
    assert len(_batchnorm_layers(architectures.build_resnet(20, (8, 8, 1), 10))) == 1 + 2 * 9 + 2


def test_architecture_errors():
    with pytest.raises(UserError, match="6n \\+ 2"):
        architectures.build_resnet(10, (8, 8, 1), 10)
    with pytest.raises(UserError, match="known: mobilenet_v2, mobilenet_v3_small, resnet14, resnet20, resnet8"):
        architectures.build_architecture("vgg", (8, 8, 1), 10)
    with pytest.raises(UserError, match="at least 32x32"):
        architectures.build_mobilenet_v2((28, 28, 1), 10)
    with pytest.raises(UserError, match="MobileNetV3Small alpha must be positive"):
        architectures.build_mobilenet_v3_small((32, 32, 1), 10, alpha=0)


def test_mobilenet_v2_takes_one_channel_and_returns_logits():
    model = architectures.build_architecture("mobilenet_v2", (32, 32, 1), 10, alpha=0.35)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 10)
    assert model.layers[-1].activation is tf_keras.activations.linear
    assert _batchnorm_layers(model)[0].momentum == pytest.approx(0.999)


def test_mobilenet_v3_small_takes_one_channel_reads_tf_inputs_and_returns_logits():
    model = architectures.build_architecture("mobilenet_v3_small", (32, 32, 1), 10, alpha=0.75)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 10)
    assert model.layers[-1].activation is tf_keras.activations.linear
    # Hard-swish and squeeze-excite, and no pixel scaling of its own.
    assert any(isinstance(layer, tf_keras.layers.Multiply) for layer in model.layers)
    assert not any(isinstance(layer, tf_keras.layers.Rescaling) for layer in model.layers)


def test_an_option_of_another_family_is_refused_naming_the_options_there_are():
    # Before, tools/train_teacher.py --architecture=resnet8 --alpha=0.5 was a TypeError traceback.
    with pytest.raises(UserError, match=r"^resnet8 takes no alpha \(its options: base_width\)$"):
        architectures.build_architecture("resnet8", (8, 8, 1), 10, alpha=0.5)
    with pytest.raises(UserError, match=r"^mobilenet_v2 takes no base_width \(its options: alpha\)$"):
        architectures.build_architecture("mobilenet_v2", (32, 32, 3), 10, base_width=4)
    assert architectures.build_architecture("resnet8", (8, 8, 1), 10, base_width=2).output_shape == (None, 10)
