import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from zscgan_tf import logits
from zscgan_tf.errors import UserError


def _body():
    inputs = tf_keras.Input((6,))
    hidden = tf_keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    return inputs, hidden


def _features(count=16, seed=0):
    return np.random.RandomState(seed).normal(0, 2, (count, 6)).astype(np.float32)


def _probability_of_class_one(model):
    return tf.nn.softmax(model(_features())).numpy()[:, 1]


@pytest.mark.parametrize("head", ["sigmoid_activation", "sigmoid_layer", "sigmoid_op", "logit"])
def test_binary_output_becomes_two_logits_with_the_same_probabilities(head):
    tf_keras.utils.set_random_seed(0)
    inputs, hidden = _body()
    if head == "sigmoid_activation":
        outputs = tf_keras.layers.Dense(1, activation="sigmoid", name="score")(hidden)
    else:
        outputs = tf_keras.layers.Dense(1, name="score")(hidden)
        if head == "sigmoid_layer":
            outputs = tf_keras.layers.Activation("sigmoid")(outputs)
        elif head == "sigmoid_op":  # A TFOpLambda, as Keras 3's keras.ops.sigmoid becomes.
            outputs = tf.nn.sigmoid(outputs)
    model = tf_keras.Model(inputs, outputs)
    model.get_layer("score").set_weights([np.full((5, 1), 0.7, np.float32), np.array([-0.3], np.float32)])
    expected = model(_features()).numpy()[:, 0]
    if head == "logit":
        expected = tf.sigmoid(expected).numpy()

    two_logits, note = logits.logits_model(model)

    assert two_logits.output.shape[-1] == 2
    assert [layer.name for layer in two_logits.layers][-1] == "score_two_logits"
    np.testing.assert_allclose(_probability_of_class_one(two_logits), expected, rtol=1e-5, atol=1e-6)
    assert expected.min() < 0.5 < expected.max()  # Both classes occur, so agreeing means something.
    assert "binary classifier" in note and "'score'" in note


@pytest.mark.parametrize("softmax_as", ["activation", "layer", "op"])
def test_final_softmax_is_removed_and_the_note_says_the_exports_output_logits(softmax_as):
    tf_keras.utils.set_random_seed(0)
    inputs, hidden = _body()
    if softmax_as == "activation":
        outputs = tf_keras.layers.Dense(3, activation="softmax")(hidden)
    elif softmax_as == "layer":
        outputs = tf_keras.layers.Softmax()(tf_keras.layers.Dense(3)(hidden))
    else:  # A TFOpLambda, as Keras 3's keras.ops.softmax becomes.
        outputs = tf.nn.softmax(tf_keras.layers.Dense(3)(hidden))
    model = tf_keras.Model(inputs, outputs)
    logit_model, note = logits.logits_model(model)
    assert note == logits.SOFTMAX_REMOVED_NOTE and "output logits, not probabilities" in note
    np.testing.assert_allclose(tf.nn.softmax(logit_model(_features())).numpy(), model(_features()).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_logits_are_returned_as_they_are():
    inputs, hidden = _body()
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(hidden))
    assert logits.logits_model(model) == (model, None)


def test_multi_label_sigmoids_are_refused():
    inputs, hidden = _body()
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation="sigmoid")(hidden))
    with pytest.raises(UserError, match="3 sigmoids"):
        logits.logits_model(model)


def test_single_output_not_from_a_dense_layer_is_refused():
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Conv2D(1, 3, name="score_map")(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D(name="score")(x))
    with pytest.raises(UserError, match="GlobalAveragePooling2D 'score'.*must end in Dense"):
        logits.logits_model(model)


def test_a_single_output_dense_with_another_activation_is_refused():
    # Dense(1, relu) is no logit: halving it as one would give wrong class probabilities.
    inputs, hidden = _body()
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation="relu", name="score")(hidden))
    with pytest.raises(UserError, match="Dense 'score'.*must end in Dense\\(1\\), with or without a sigmoid"):
        logits.logits_model(model)
