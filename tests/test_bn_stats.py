import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, keras_applications, losses, teachers
from zscgan_tf.errors import UserError

from conftest import bn_input_moments, build_tiny_classifier


def _check_taps_against_layers(model, inputs):
    statistics_model = bn_stats.build_statistics_model(model)
    layers = bn_stats.batchnorm_layers(model)
    outputs = statistics_model(inputs, training=False)
    np.testing.assert_allclose(outputs[0], model(inputs, training=False), rtol=1e-5, atol=1e-5)
    layer_inputs = tf_keras.Model(model.inputs, [layer.input for layer in layers])(inputs, training=False)
    if len(layers) == 1:
        layer_inputs = [layer_inputs]
    for layer, layer_input, statistics in zip(layers, layer_inputs, bn_stats.split_statistics(outputs[1:])):
        axes = list(range(layer_input.shape.rank - 1))
        mean, variance = tf.nn.moments(layer_input, axes=axes)
        np.testing.assert_allclose(statistics.batch_mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(statistics.batch_variance, variance, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(statistics.moving_mean, layer.moving_mean.numpy())
        np.testing.assert_array_equal(statistics.moving_variance, layer.moving_variance.numpy())
    return statistics_model, layers


def test_taps_after_conv_depthwise_and_dense_equal_layer_variables_and_moments():
    model = build_tiny_classifier()
    inputs = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    statistics_model, layers = _check_taps_against_layers(model, inputs)
    assert [layer.name for layer in layers] == ["conv_bn", "depthwise_bn", "dense_bn"]
    assert len(statistics_model.outputs) == 1 + 3


def test_taps_read_moving_statistics_live_not_a_copy():
    model = build_tiny_classifier()
    statistics_model = bn_stats.build_statistics_model(model)
    layer = bn_stats.batchnorm_layers(model)[0]
    layer.moving_mean.assign(np.full(layer.moving_mean.shape, 3.25, "float32"))
    outputs = statistics_model(np.zeros((2, 8, 8, 1), "float32"), training=False)
    np.testing.assert_array_equal(outputs[1][2], np.full(layer.moving_mean.shape, 3.25, "float32"))


def test_taps_share_the_teacher_variables():
    model = build_tiny_classifier()
    statistics_model = bn_stats.build_statistics_model(model)
    assert {id(v) for v in statistics_model.weights} == {id(v) for v in model.weights}


def test_taps_on_mobilenet_v2_32x32():
    model = tf_keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35,
                                              classifier_activation=None)
    inputs = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    statistics_model, layers = _check_taps_against_layers(model, inputs)
    assert len(layers) == 52


def test_teacher_without_batchnorm_is_a_user_error():
    inputs = tf_keras.Input((4, 4, 1))
    outputs = tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(inputs))
    with pytest.raises(UserError, match="no BatchNormalization"):
        bn_stats.build_statistics_model(tf_keras.Model(inputs, outputs))


def test_nested_model_with_batchnorm_is_a_user_error():
    inner = build_tiny_classifier()
    inputs = tf_keras.Input((8, 8, 1))
    outer = tf_keras.Model(inputs, inner(inputs))
    with pytest.raises(UserError, match="nests model"):
        bn_stats.batchnorm_layers(outer)


@pytest.mark.parametrize("name", sorted(keras_applications.KERAS_APPLICATIONS))
def test_taps_on_every_named_keras_application(name):
    teacher = teachers.load_teacher(teachers.TeacherSource(model=name, weights="none", input_size=32, num_classes=10,
                                                           alpha=0.25 if "mobilenet" in name else 1.0))
    statistics_model = bn_stats.build_statistics_model(teacher.model)
    layers = bn_stats.batchnorm_layers(teacher.model)
    assert len(statistics_model.outputs) == 1 + len(layers) > 1
    inputs = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    outputs = statistics_model(inputs, training=False)
    last = layers[-1]
    last_input = tf_keras.Model(teacher.model.inputs, last.input)(inputs, training=False)
    mean, variance = tf.nn.moments(last_input, axes=list(range(last_input.shape.rank - 1)))
    statistics = bn_stats.split_statistics(outputs[1:])[-1]
    np.testing.assert_allclose(statistics.batch_mean, mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(statistics.batch_variance, variance, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(statistics.moving_variance, last.moving_variance.numpy())


def test_noise_floor_is_the_kl_a_batch_of_the_stored_gaussian_scores():
    # 16 samples of 4x4 positions: each channel's statistics come from 256 values.
    channels, batch_size, positions = 64, 16, 16
    floor = bn_stats.finite_batch_noise_floor((4, 4, channels), batch_size)
    assert floor == pytest.approx(channels / (batch_size * positions))
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=channels), rng.uniform(0.5, 2.0, size=channels)
    scores = []
    for _ in range(50):
        values = rng.normal(mean, std, size=(batch_size * positions, channels))
        scores.append(float(losses.gaussian_kl_divergence(
            tf.constant(values.mean(0), tf.float32), tf.constant(values.var(0), tf.float32),
            tf.constant(mean, tf.float32), tf.constant(std ** 2, tf.float32), variance_epsilon=0.0)))
    assert np.mean(scores) == pytest.approx(floor, rel=0.15)


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (None, None, 1)])
def test_noise_floor_weighting_weighs_each_layer_by_its_shape(input_shape):
    # conv_bn and depthwise_bn: 8x8x6 on 8x8 images; dense_bn: 8 features. A teacher that
    # takes any image size is measured at the size it is given.
    model = build_tiny_classifier(input_shape=input_shape)
    weights = bn_stats.bn_layer_weights(model, "noise_floor", batch_size=4, image_shape=(8, 8, 1))
    assert weights == pytest.approx([1 / (1 + 6 / (4 * 64)), 1 / (1 + 6 / (4 * 64)), 1 / (1 + 8 / 4)])
    assert bn_stats.bn_layer_weights(model, "uniform", batch_size=4, image_shape=(8, 8, 1)) is None
    with pytest.raises(ValueError, match="unknown BN layer weighting 'bogus'"):
        bn_stats.bn_layer_weights(model, "bogus", batch_size=4, image_shape=(8, 8, 1))


def _branching_model():
    """Conv-BN-ReLU then two BN branches (one behind another conv) joined, GAP, Dense."""
    tf_keras.utils.set_random_seed(1)
    inputs = tf_keras.Input((6, 6, 2))
    x = tf_keras.layers.Conv2D(3, 3, padding="same")(inputs)
    x = tf_keras.layers.BatchNormalization(momentum=0.999)(x)
    x = tf_keras.layers.ReLU()(x)
    left = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(3, 1)(x))
    right = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.Add()([left, right])
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    x = tf_keras.layers.Dense(4)(x)
    x = tf_keras.layers.BatchNormalization()(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x))


def test_reestimated_statistics_are_the_exact_moments_of_each_bn_input():
    model = _branching_model()
    images = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 6, 6, 2)).astype(np.float32)
    trainable_before = [variable.numpy() for variable in model.trainable_variables]
    momenta_before = [layer.momentum for layer in bn_stats.batchnorm_layers(model)]
    first_bn = bn_stats.batchnorm_layers(model)[0]
    assert not np.allclose(first_bn.moving_mean.numpy(), bn_input_moments(model, first_bn, images)[0], atol=0.1)

    # 16 does not divide 50: the merge across unequal batches must still be exact.
    bn_stats.reestimate_batchnorm_statistics(model, images, batch_size=16)

    for layer in bn_stats.batchnorm_layers(model):
        mean, variance = bn_input_moments(model, layer, images)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5, err_msg=layer.name)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5, err_msg=layer.name)
    for before, variable in zip(trainable_before, model.trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), before)
    assert [layer.momentum for layer in bn_stats.batchnorm_layers(model)] == momenta_before


def test_reestimation_rejects_images_of_the_wrong_shape():
    with pytest.raises(ValueError, match="do not fit the model input"):
        bn_stats.reestimate_batchnorm_statistics(_branching_model(), np.zeros((4, 5, 5, 2)), batch_size=2)
