import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, flattening, logits, quantize, teachers
from zscgan_tf.errors import UserError


def _with_trained_statistics(model: tf_keras.Model, seed: int = 0) -> tf_keras.Model:
    """Gives every BN layer moving statistics and an affine map far from their defaults, so that
    a flat model computing in the wrong mode, or with the wrong weights, gives other outputs."""
    random = np.random.RandomState(seed)
    for layer in model.submodules:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([random.uniform(0.5, 2.0, gamma.shape), random.normal(0, 1, beta.shape),
                               random.normal(0, 1, mean.shape), random.uniform(0.5, 2.0, variance.shape)])
    return model


def _backbone(name: str = "backbone") -> tf_keras.Model:
    """A Keras Applications-like base: Conv+BN+ReLU twice, with names of its own."""
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.ReLU(name="relu")(x)
    x = tf_keras.layers.Conv2D(6, 3, strides=2, use_bias=False, name="conv_2")(x)
    x = tf_keras.layers.BatchNormalization(name="bn_2")(x)
    return tf_keras.Model(inputs, tf_keras.layers.ReLU(name="out_relu")(x), name=name)


def _transfer_learning_classifier() -> tf_keras.Model:
    """The Keras transfer-learning tutorial's shape: augmentation Sequential, pixel scaling, the
    base called with training=False, pooling, dropout, a softmax head. One outer layer shares
    a name with a layer of the base."""
    augmentation = tf_keras.Sequential([tf_keras.layers.RandomFlip("horizontal", name="flip")], name="augment")
    base = _backbone()
    inputs = tf_keras.Input((8, 8, 3), name="image")
    x = augmentation(inputs)
    x = tf_keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale")(x)
    x = base(x, training=False)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = tf_keras.layers.Dropout(0.2, name="dropout")(x)
    x = tf_keras.layers.Dense(5, name="conv")(x)  # The base has a "conv" too.
    outputs = tf_keras.layers.Softmax(name="probabilities")(x)
    return _with_trained_statistics(tf_keras.Model(inputs, outputs, name="classifier"))


def _pixels(count: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.RandomState(seed).uniform(0, 255, (count, 8, 8, 3)).astype(np.float32)


def test_transfer_learning_classifier_becomes_flat_with_the_same_outputs_names_and_weights():
    model = _transfer_learning_classifier()
    flat = flattening.flat_inference_model(model)

    assert not flattening.has_nested_models(flat)
    assert flat.name == "classifier"
    names = [layer.name for layer in flat.layers]
    assert names == ["image", "scale", "backbone_conv", "bn", "relu", "conv_2", "bn_2", "out_relu", "pool",
                     "dropout", "conv", "probabilities"]
    expected = model(_pixels(), training=False).numpy()
    np.testing.assert_allclose(flat(_pixels(), training=False).numpy(), expected, rtol=1e-5, atol=1e-7)
    assert expected.std() > 0.01  # The outputs differ between images, so agreeing means something.
    assert len(bn_stats.batchnorm_layers(flat)) == 2


def test_flat_model_shares_no_weights_with_the_original():
    model = _transfer_learning_classifier()
    before = [weight.copy() for weight in model.get_weights()]
    flat = flattening.flat_inference_model(model)
    flat.set_weights([np.zeros_like(weight) for weight in flat.get_weights()])
    for original, kept in zip(before, model.get_weights()):
        np.testing.assert_array_equal(original, kept)


def test_nested_model_called_twice_stays_one_shared_set_of_layers():
    encoder = _with_trained_statistics(_backbone("encoder"))
    inputs = tf_keras.Input((8, 8, 3))
    mirrored = tf_keras.layers.Lambda(lambda images: images[:, :, ::-1, :], name="mirror")(inputs)
    x = tf_keras.layers.Add(name="sum")([encoder(inputs), encoder(mirrored)])
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="logits")(x))
    flat = flattening.flat_inference_model(model)

    convs = [layer for layer in flat.layers if isinstance(layer, tf_keras.layers.Conv2D)]
    assert len(convs) == 2 and all(len(layer.inbound_nodes) == 2 for layer in convs)
    np.testing.assert_allclose(flat(_pixels(), training=False).numpy(), model(_pixels(), training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_augmentation_layers_of_a_flat_model_are_left_out():
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.RandomFlip(name="flip")(inputs)
    x = tf_keras.layers.RandomRotation(0.2, name="rotate")(x)
    x = tf_keras.layers.RandomCrop(6, 6, name="crop")(x)  # Crops the centre at inference: kept.
    x = tf_keras.layers.Conv2D(3, 3, name="conv")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D(name="pool")(x))
    flat = flattening.flat_inference_model(model)
    assert [layer.name for layer in flat.layers][1:] == ["crop", "conv", "pool"]
    np.testing.assert_allclose(flat(_pixels(), training=False).numpy(), model(_pixels(), training=False).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_a_users_layer_named_like_an_augmentation_layer_is_kept():
    class RandomFlip(tf_keras.layers.Layer):  # Not Keras' own: it may do anything at inference.
        def call(self, inputs):
            return inputs * 2.0

    assert not flattening.is_augmentation_layer(RandomFlip())
    assert flattening.is_augmentation_layer(tf_keras.layers.RandomFlip())


def test_flat_model_is_returned_unchanged():
    model = _backbone()
    assert flattening.flat_inference_model(model) is model


def test_nested_subclassed_model_is_a_user_error():
    class Inner(tf_keras.Model):
        def __init__(self):
            super().__init__(name="inner")
            self.conv = tf_keras.layers.Conv2D(2, 3)

        def call(self, inputs):
            return self.conv(inputs)

    inputs = tf_keras.Input((8, 8, 3))
    model = tf_keras.Model(inputs, tf_keras.layers.Flatten()(Inner()(inputs)))
    with pytest.raises(UserError, match="nests the subclassed model 'inner'"):
        flattening.flat_inference_model(model)


def test_saved_transfer_learning_teacher_loads_flat_as_logits_and_quantizes(tmp_path):
    model = _transfer_learning_classifier()
    path = str(tmp_path / "transfer.keras")
    model.save(path)
    teacher = teachers.load_teacher(teachers.TeacherSource(model=path, preprocessing="raw"))

    assert not flattening.has_nested_models(teacher.model)
    assert teacher.num_classes == 5 and teacher.image_shape == (8, 8, 3)
    logits = teacher.model(_pixels(), training=False).numpy()
    probabilities = model(_pixels(), training=False).numpy()
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probabilities, rtol=1e-5, atol=1e-7)
    student, float_layers = quantize.quantize_student(teacher.model)
    assert set(float_layers) == {"scale"}
    assert {"quant_backbone_conv", "quant_bn", "quant_conv_2", "quant_bn_2"} <= {layer.name for layer in student.layers}


def test_teacher_that_scales_pixels_itself_read_with_assumed_preprocessing_gets_a_warning(tmp_path):
    path = str(tmp_path / "transfer.keras")
    _transfer_learning_classifier().save(path)

    assumed = teachers.load_teacher(teachers.TeacherSource(model=path))
    assert assumed.preprocessing.mode == "tf"
    assert assumed.warnings[0] == logits.SOFTMAX_REMOVED_NOTE  # Its head is a softmax.
    assert len(assumed.warnings) == 2
    assert "'scale' is a Rescaling" in assumed.warnings[1]
    assert "--teacher_preprocessing=raw" in assumed.warnings[1]
    for mode in ("raw", "tf"):  # Said on purpose: no doubt left.
        assert teachers.load_teacher(teachers.TeacherSource(model=path, preprocessing=mode)).warnings == (
            logits.SOFTMAX_REMOVED_NOTE,)


def test_only_training_and_an_absent_mask_are_dropped_from_a_nested_call():
    assert flattening.undroppable_call_arguments({"training": False, "mask": None}) == []
    assert flattening.undroppable_call_arguments({"mask": object(), "training": True}) == ["mask"]
    assert flattening.undroppable_call_arguments({"scale": 2.0, "mask": None}) == ["scale"]
