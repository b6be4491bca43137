"""Tests of zscgan_tf.evaluate: TFLite and Keras predictions, metrics, latency."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tf_keras

from zscgan_tf import evaluate
from zscgan_tf import export
from zscgan_tf.errors import UserError

INPUT_SHAPE = (8, 8, 3)
NUM_CLASSES = 5
NUM_SAMPLES = 24
FLOAT_TOLERANCE = 1e-5


def build_small_classifier(seed=0):
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(INPUT_SHAPE, name="image")
    x = tf_keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="small_classifier")


@pytest.fixture(scope="module")
def model():
    return build_small_classifier()


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).uniform(-1, 1, (NUM_SAMPLES,) + INPUT_SHAPE).astype(
        np.float32)


@pytest.fixture(scope="module")
def float_bytes(model):
    return export.convert_to_tflite(model, mode="float")


@pytest.fixture(scope="module")
def int8_bytes(model, inputs):
    return export.convert_to_tflite(model, export.representative_dataset_from_array(inputs))


def test_float_tflite_predictions_match_keras(model, inputs, float_bytes):
    classifier = evaluate.TfliteClassifier(float_bytes, num_threads=2)
    assert classifier.input_shape == (1,) + INPUT_SHAPE
    tflite_logits = classifier.predict(inputs)
    assert tflite_logits.shape == (NUM_SAMPLES, NUM_CLASSES)
    assert tflite_logits.dtype == np.float32
    np.testing.assert_allclose(tflite_logits, evaluate.keras_predict(model, inputs),
                               atol=FLOAT_TOLERANCE)


def test_int8_classifier_quantizes_inputs_and_dequantizes_outputs(model, inputs, int8_bytes):
    classifier = evaluate.TfliteClassifier(int8_bytes)
    assert classifier.input_details["dtype"] == np.int8
    tflite_logits = classifier.predict(inputs)
    keras_logits = evaluate.keras_predict(model, inputs)
    # Dequantized: on the Keras scale, not raw int8 codes.
    relative_error = np.abs(tflite_logits - keras_logits).max() / np.abs(keras_logits).max()
    assert relative_error < 0.1
    assert evaluate.agreement(tflite_logits, keras_logits) >= 0.9


def test_out_of_range_inputs_are_clipped_not_wrapped(inputs, int8_bytes):
    classifier = evaluate.TfliteClassifier(int8_bytes)
    scale, zero_point = classifier.input_details["quantization"]
    largest = (np.iinfo(np.int8).max - zero_point) * scale
    far_out = np.full((1,) + INPUT_SHAPE, 1e6, np.float32)
    at_limit = np.full((1,) + INPUT_SHAPE, largest, np.float32)
    np.testing.assert_array_equal(classifier.predict(far_out), classifier.predict(at_limit))


def test_predict_rejects_wrong_shapes(float_bytes):
    classifier = evaluate.TfliteClassifier(float_bytes)
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 3\)"):
        classifier.predict(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError):
        classifier.predict(np.zeros((0,) + INPUT_SHAPE))


def test_classifier_rejects_bad_model_bytes():
    with pytest.raises(UserError):
        evaluate.TfliteClassifier(b"not a model at all")
    with pytest.raises(ValueError, match="0"):
        evaluate.TfliteClassifier(b"x", num_threads=0)


def test_keras_predict_batches_like_one_call(model, inputs):
    np.testing.assert_allclose(evaluate.keras_predict(model, inputs, batch_size=5),
                               model(inputs, training=False).numpy(), atol=FLOAT_TOLERANCE)
    with pytest.raises(ValueError, match="0"):
        evaluate.keras_predict(model, inputs, batch_size=0)


def test_top1_accuracy_and_agreement():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert evaluate.top1_accuracy(logits, np.array([1, 0, 0, 0])) == pytest.approx(0.75)
    assert evaluate.agreement(logits, logits[:, ::-1]) == 0.0
    assert evaluate.agreement(logits, logits * 3) == 1.0
    with pytest.raises(ValueError, match=r"\(3,\)"):
        evaluate.top1_accuracy(logits, np.array([1, 0, 0]))
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        evaluate.agreement(logits, np.zeros((4, 3)))


def test_measure_latency(int8_bytes):
    result = evaluate.measure_latency(int8_bytes, num_threads=2, runs=5, warmup=1)
    assert (result.runs, result.threads) == (5, 2)
    assert 0 < result.median_ms <= result.p90_ms
    assert "median" in result.format()
    with pytest.raises(ValueError, match="-1"):
        evaluate.measure_latency(int8_bytes, warmup=-1)
