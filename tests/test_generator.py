import os

import numpy as np
import pytest
import tensorflow as tf

from zscgan_tf import generator as generator_lib
from zscgan_tf.errors import UserError
from zscgan_tf.preprocessing import Preprocessing


def _sample(generator, num_classes, batch=8):
    noise = tf.random.normal([batch, generator.inputs[0].shape[-1]], seed=0)
    labels = tf.constant(np.arange(batch) % num_classes, tf.int32)
    return generator([noise, labels], training=False).numpy()


@pytest.mark.parametrize("variant", generator_lib.VARIANTS)
@pytest.mark.parametrize("image_shape, mode", [((8, 8, 1), "tf"), ((30, 30, 3), "caffe"), ((32, 28, 3), "torch")])
def test_output_has_teacher_shape_and_range(variant, image_shape, mode):
    preprocessing = Preprocessing(mode)
    spec = generator_lib.GeneratorSpec(num_classes=10, image_shape=image_shape, noise_dim=16, base_channels=8,
                                       variant=variant)
    generator = generator_lib.build_generator(spec, preprocessing)
    images = _sample(generator, 10)
    assert images.shape == (8,) + image_shape
    low, high = preprocessing.input_range(image_shape[2])
    assert np.all(images >= low - 1e-3) and np.all(images <= high + 1e-3)


def test_conditional_bn_makes_the_label_matter():
    spec = generator_lib.GeneratorSpec(num_classes=3, image_shape=(8, 8, 1), noise_dim=4, base_channels=4)
    generator = generator_lib.build_generator(spec, Preprocessing("tf"))
    layer = next(l for l in generator.layers if isinstance(l, generator_lib.ConditionalBatchNormalization))
    layer.class_shift.assign(np.random.default_rng(0).normal(size=layer.class_shift.shape).astype("float32"))
    noise = tf.random.normal([1, 4], seed=1)
    first = generator([noise, tf.constant([0])], training=False)
    second = generator([noise, tf.constant([1])], training=False)
    assert not np.allclose(first, second)


def test_conditional_bn_scales_and_shifts_the_normalized_features_by_the_labels_class():
    layer = generator_lib.ConditionalBatchNormalization(num_classes=3)
    features = tf.constant(np.random.default_rng(0).normal(size=(2, 4, 4, 5)).astype("float32"))
    layer([features, tf.constant([0, 1])])
    rng = np.random.default_rng(1)
    scale, shift = rng.normal(size=(3, 5)).astype("float32"), rng.normal(size=(3, 5)).astype("float32")
    layer.class_scale.assign(scale)
    layer.class_shift.assign(shift)
    labels = np.array([2, 1])
    normalized = layer.normalization(features, training=False).numpy()
    expected = normalized * scale[labels][:, None, None, :] + shift[labels][:, None, None, :]
    np.testing.assert_allclose(layer([features, tf.constant(labels)], training=False).numpy(), expected, rtol=1e-5,
                               atol=1e-6)


def test_generator_for_1000_classes_at_224_builds():
    spec = generator_lib.GeneratorSpec(num_classes=1000, image_shape=(224, 224, 3), noise_dim=8, base_channels=4)
    generator = generator_lib.build_generator(spec, Preprocessing("caffe"))
    assert tuple(generator.output.shape[1:]) == (224, 224, 3)


@pytest.mark.parametrize("blur_sigma", [0.0, 1.0])
def test_saved_generator_reloads_with_same_outputs(tmp_path, blur_sigma):
    spec = generator_lib.GeneratorSpec(num_classes=4, image_shape=(8, 8, 1), noise_dim=8, base_channels=4,
                                       blur_sigma=blur_sigma)
    generator = generator_lib.build_generator(spec, Preprocessing("tf"))
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    os.symlink(tmp_path / "sub" / "deeper", tmp_path / "link")
    path = str(tmp_path / "sub" / "generator.keras")
    generator.save(path)
    # Through a link and up, where the system goes: TensorFlow's loader took "link/.." as text and found nothing.
    reloaded = generator_lib.load_generator(str(tmp_path / "link" / ".." / "generator.keras"))
    noise = tf.random.normal([4, 8], seed=2)
    labels = tf.constant([0, 1, 2, 3])
    np.testing.assert_allclose(generator([noise, labels], training=False), reloaded([noise, labels], training=False),
                               atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(num_classes=1), dict(image_shape=(2, 2, 1)), dict(image_shape=(8, 8, 2)),
                                    dict(variant="bogus"), dict(noise_dim=0), dict(blur_sigma=-1.0),
                                    dict(blur_sigma=2.5)])
def test_bad_spec_is_a_user_error(kwargs):
    values = dict(num_classes=4, image_shape=(8, 8, 1))
    values.update(kwargs)
    with pytest.raises(UserError):
        generator_lib.GeneratorSpec(**values)


def test_too_few_base_channels_say_why_the_least_is_two():
    # One is positive, but the second upsampling block would have none.
    with pytest.raises(UserError, match=r"^base_channels must be at least 2 \(each upsampling block after the first "
                                        r"halves them\), got 1$"):
        generator_lib.GeneratorSpec(num_classes=4, image_shape=(8, 8, 1), base_channels=1)
    assert generator_lib.GeneratorSpec(num_classes=4, image_shape=(8, 8, 1), base_channels=2).base_channels == 2


@pytest.mark.parametrize("variant", generator_lib.VARIANTS)
def test_labels_make_samples_differ_before_any_training(variant):
    spec = generator_lib.GeneratorSpec(num_classes=3, image_shape=(8, 8, 1), noise_dim=4, base_channels=4,
                                       variant=variant)
    generator = generator_lib.build_generator(spec, Preprocessing("tf"))
    noise = tf.random.normal([1, 4], seed=1)
    first = generator([noise, tf.constant([0])], training=False)
    second = generator([noise, tf.constant([1])], training=False)
    assert not np.allclose(first, second, atol=1e-6)


def _checkerboard(size, channels):
    rows, columns = np.indices((size, size))
    board = np.where((rows + columns) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return np.repeat(board[None, :, :, None], channels, axis=-1)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_blur_keeps_plain_images_and_removes_pixel_patterns(sigma):
    blur = generator_lib.GaussianBlur(sigma)
    plain = np.full((2, 9, 9, 3), -0.75, np.float32)
    np.testing.assert_allclose(blur(plain), plain, atol=1e-6)  # Edges mirrored, not zero-padded.
    board = _checkerboard(9, 3)
    blurred = blur(board).numpy()
    assert blurred.shape == board.shape
    assert np.all(np.abs(blurred) <= 1.0 + 1e-6)
    # A checkerboard is the finest pattern an image holds: the 3x3 kernel of sigma 0.5 passes a third of it
    # (0.33), wider ones under 1% (the kernel's cut at 2 sigma lets a little through).
    assert np.abs(blurred[:, 2:-2, 2:-2]).max() < {0.5: 0.4, 1.0: 0.01, 2.0: 0.02}[sigma]


def test_gaussian_blur_kernel_is_normalised_and_cut_at_two_sigma():
    kernel = generator_lib.GaussianBlur(1.5).kernel(channels=2)
    assert kernel.shape == (7, 7, 2, 1)
    np.testing.assert_allclose(kernel.sum(axis=(0, 1)), 1.0, rtol=1e-6)
    assert kernel[3, 3, 0, 0] == kernel.max()


def test_blurred_generator_makes_smooth_samples_in_range():
    preprocessing = Preprocessing("caffe")
    spec = dict(num_classes=3, image_shape=(16, 16, 3), noise_dim=8, base_channels=8)
    sharp = generator_lib.build_generator(generator_lib.GeneratorSpec(**spec), preprocessing)
    blurred = generator_lib.build_generator(generator_lib.GeneratorSpec(**spec, blur_sigma=1.0), preprocessing)
    blurred.set_weights(sharp.get_weights())  # The blur has no weights: same trunk, same samples before it.
    noise = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    labels = np.arange(8) % 3
    sharp_images, blurred_images = (generator([noise, labels], training=False).numpy()
                                    for generator in (sharp, blurred))
    low, high = preprocessing.input_range(3)
    assert np.all(blurred_images >= low - 1e-3) and np.all(blurred_images <= high + 1e-3)

    # The blur follows the tanh and the fixed per-channel affine map commutes with it, so the blurred
    # generator's samples are exactly the low-pass of the sharp one's.
    np.testing.assert_allclose(blurred_images, generator_lib.GaussianBlur(1.0)(sharp_images).numpy(),
                               rtol=1e-5, atol=1e-3)

    def total_variation(images):
        return np.abs(np.diff(images, axis=1)).mean() + np.abs(np.diff(images, axis=2)).mean()

    # How much smoother depends on the random trunk's samples (0.27 to 0.61 of the variation over 15
    # seeds); the filter's strength on pixel patterns is tested on a checkerboard above.
    assert total_variation(blurred_images) < total_variation(sharp_images)
    assert any(isinstance(layer, generator_lib.GaussianBlur) for layer in blurred.layers)
    assert not any(isinstance(layer, generator_lib.GaussianBlur) for layer in sharp.layers)


def test_pooled_generator_draws_sample_i_from_member_i_mod_k_and_reloads(tmp_path):
    spec = generator_lib.GeneratorSpec(num_classes=3, image_shape=(8, 8, 1), noise_dim=8, base_channels=8,
                                       blur_sigma=0.5)
    members = [generator_lib.build_generator(spec, Preprocessing("tf"), name=f"generator_{k}") for k in (1, 2, 3)]
    pool = generator_lib.pool_generators(members)
    noise = tf.random.normal([7, 8], seed=1)
    labels = tf.constant([0, 1, 2, 0, 1, 2, 0], tf.int32)
    pooled = pool([noise, labels], training=False).numpy()
    for index in range(7):
        alone = members[index % 3]([noise[index:index + 1], labels[index:index + 1]], training=False).numpy()
        np.testing.assert_allclose(pooled[index], alone[0], atol=1e-5)
    # Members differ (their own initial weights), so the routing shows.
    assert not np.allclose(pooled[0], members[1]([noise[:1], labels[:1]], training=False).numpy()[0], atol=1e-3)
    # Batches smaller than the pool: the members left without samples are not run on empty batches.
    for size in (1, 2):
        np.testing.assert_allclose(pool([noise[:size], labels[:size]], training=False).numpy(), pooled[:size],
                                   atol=1e-5)
    path = str(tmp_path / "pool.keras")
    pool.save(path)
    reloaded = generator_lib.load_generator(path)
    np.testing.assert_allclose(reloaded([noise, labels], training=False).numpy(), pooled, atol=1e-6)
    assert [member.name for member in generator_lib.pool_members(reloaded)] == ["generator_1", "generator_2",
                                                                                 "generator_3"]
    assert generator_lib.pool_members(members[0]) == [members[0]]
    with pytest.raises(ValueError, match="at least 2"):
        generator_lib.pool_generators(members[:1])


@pytest.mark.parametrize("preprocessing, channels", [
    (Preprocessing("tf"), 1), (Preprocessing("raw"), 3), (Preprocessing("torch"), 3), (Preprocessing("caffe"), 3),
    (Preprocessing("caffe"), 1), (Preprocessing("custom", mean=(0.0,), std=(1.0,)), 1),
    (Preprocessing("custom", mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 1.0)), 3)])
def test_a_saved_generator_says_which_input_space_it_was_trained_for(tmp_path, preprocessing, channels):
    spec = generator_lib.GeneratorSpec(num_classes=3, image_shape=(8, 8, channels), noise_dim=4, base_channels=4)
    members = [generator_lib.build_generator(spec, preprocessing, name=f"generator_{k}") for k in (1, 2)]
    for generator in (members[0], generator_lib.pool_generators(members)):
        path = str(tmp_path / "generator.keras")
        generator.save(path)
        reloaded = generator_lib.load_generator(path)
        assert generator_lib.preprocessing_of_input_space(*generator_lib.input_space(reloaded)) == preprocessing
        assert generator_lib.same_input_space(reloaded, preprocessing, channels) is True
        other = Preprocessing("raw" if preprocessing.mode != "raw" else "tf")
        assert generator_lib.same_input_space(reloaded, other, channels) is False
    # The same input space under another name is the same: custom mean 0.5, std 0.5 is tf's [-1, 1].
    tf_generator = generator_lib.build_generator(spec, Preprocessing("tf"))
    assert generator_lib.same_input_space(tf_generator, Preprocessing("custom", mean=(0.5,), std=(0.5,)), channels)
    assert generator_lib.input_space(_model_without_an_input_space_mapping()) is None


def _model_without_an_input_space_mapping():
    import tf_keras
    image = tf_keras.Input((2,))
    return tf_keras.Model(image, tf_keras.layers.Dense(2)(image))
