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


@pytest.mark.parametrize("mean, std, message", [
    # A NaN or tiny std overflowed the input range (a traceback); an infinite one made every input one constant.
    ((float("nan"),), (0.5,), "custom preprocessing mean and std must be finite numbers, got mean nan, std 0.5"),
    ((0.5,), (float("inf"),), "custom preprocessing mean and std must be finite numbers, got mean 0.5, std inf"),
    ((0.5,), (1e-300,), "custom preprocessing std must be at least 0.001 (a quarter of a pixel level in [0, 1] "
                        "units), got 1e-300"),
    # Pixel units: the whole run trained and exported, and only its report found the teacher at chance.
    ((123.7, 116.3, 103.5), (58.4, 57.1, 57.4), "custom preprocessing mean and std are in [0, 1] units (pixels / "
     "255): each mean in [0, 1] and each std at most 1, got mean [123.7, 116.3, 103.5], std [58.4, 57.1, 57.4]: in "
     "pixel units, divide them by 255 (mean [0.4851, 0.4561, 0.4059], std [0.229, 0.2239, 0.2251])"),
    # Where dividing by 255 would not make them valid, no such advice.
    ((-1.0,), (1.0,), "custom preprocessing mean and std are in [0, 1] units (pixels / 255): each mean in [0, 1] and "
                      "each std at most 1, got mean -1, std 1"),
])
def test_custom_statistics_are_finite_and_in_the_units_of_0_to_1(mean, std, message):
    with pytest.raises(UserError) as raised:
        Preprocessing("custom", mean, std)
    assert str(raised.value) == message
    assert Preprocessing("custom", (0.0, 1.0), (0.001, 1.0)).std == (0.001, 1.0)  # The ends of the ranges.


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
