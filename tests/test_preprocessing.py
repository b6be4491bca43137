import numpy as np
import pytest

import zscgan_tf  # noqa: F401
from tf_keras.applications import imagenet_utils

from zscgan_tf.errors import UserError
from zscgan_tf.preprocessing import Preprocessing


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_matches_keras_applications_preprocess_input(mode):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    np.testing.assert_allclose(Preprocessing(mode).apply(pixels), expected, atol=1e-4)


@pytest.mark.parametrize("preprocessing", [Preprocessing("tf"), Preprocessing("caffe"), Preprocessing("torch"),
                                           Preprocessing("raw"), Preprocessing("custom", (0.5,), (0.25,))])
def test_invert_recovers_pixels(preprocessing):
    pixels = np.random.default_rng(1).uniform(0, 255, (3, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(preprocessing.invert(preprocessing.apply(pixels)), pixels, atol=1e-2)


def test_input_range_is_image_of_pixel_range():
    preprocessing = Preprocessing("custom", (0.5,), (0.5,))
    low, high = preprocessing.input_range(1)
    np.testing.assert_allclose([low[0], high[0]], [-1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(mode="bogus"), dict(mode="custom"), dict(mode="tf", mean=(0.5,)),
                                    dict(mode="custom", mean=(0.5,), std=(0.0,))])
def test_bad_preprocessing_is_a_user_error(kwargs):
    with pytest.raises(UserError):
        Preprocessing(**kwargs)


def test_custom_statistics_must_fit_channels():
    with pytest.raises(UserError, match="2 values"):
        Preprocessing("custom", (0.1, 0.2), (1.0, 1.0)).apply(np.zeros((1, 2, 2, 3)))


def test_a_grayscale_teacher_reads_caffe_and_torch_with_the_channel_means():
    pixels = np.array([0.0, 100.0, 255.0], "float32").reshape(1, 1, 3, 1)
    np.testing.assert_allclose(Preprocessing("caffe").apply(pixels)[0, 0, :, 0],
                               [0.0 - 114.7993, 100.0 - 114.7993, 255.0 - 114.7993], atol=1e-3)
    torch_mean, torch_std = (0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3
    np.testing.assert_allclose(Preprocessing("torch").apply(pixels)[0, 0, :, 0],
                               [(value / 255 - torch_mean) / torch_std for value in (0.0, 100.0, 255.0)], rtol=1e-5)
