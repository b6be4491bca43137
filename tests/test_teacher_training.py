"""Tests for zscgan_tf.teacher_training: training, teacher files."""

import json
import os
import re

import numpy as np
import pytest

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

from zscgan_tf import architectures, bn_stats, data, teacher_training
from zscgan_tf.errors import UserError
from zscgan_tf.preprocessing import Preprocessing

from conftest import bn_input_moments


def test_training_mode_accuracy_does_not_depend_on_the_images_being_stored_class_by_class():
    import tf_keras

    features = tf_keras.Input((1,))
    model = tf_keras.Model(features, tf_keras.layers.Dense(2, use_bias=False, kernel_initializer=tf_keras.initializers
                                                           .Constant([[-1.0, 1.0]]))(
        tf_keras.layers.BatchNormalization(center=False, scale=False)(features)))
    labels = np.repeat([0, 1], 64)  # As a folder of class folders is read: one class, then the other.
    inputs = (2.0 * labels - 1 + np.random.default_rng(0).normal(0, 0.1, 128))[:, None].astype(np.float32)
    # Batch statistics of one class would centre it on 0 and split it at random: 0.5 before.
    assert teacher_training._training_mode_accuracy(model, inputs, labels, batch_size=16) > 0.95


def test_check_inference_mode_accuracy():
    fine = teacher_training.TeacherMetrics(0.9, 0.85, 0.9, epochs=1, wall_seconds=1.0)
    lagging = teacher_training.TeacherMetrics(0.9, 0.10, 0.88, epochs=1, wall_seconds=1.0)
    teacher_training.check_inference_mode_accuracy(fine)
    # A UserError: one line, not a traceback.
    with pytest.raises(teacher_training.InferenceModeGapError, match="inference-mode test accuracy 0.100 is 0.780 "
                                                                      "below"):
        teacher_training.check_inference_mode_accuracy(lagging)


@pytest.fixture(name="trained", scope="module")
def fixture_trained():
    """A ResNet-8 of width 4 trained for a few epochs on 600 digits."""
    train = data.load_digits("train").take(600)
    test = data.load_digits("test")
    preprocessing = Preprocessing("tf")
    tf_keras.utils.set_random_seed(0)
    model = architectures.build_resnet(8, (8, 8, 1), 10, base_width=4)
    metrics = teacher_training.train_teacher(model, train, test, preprocessing, epochs=4, batch_size=32,
                                             learning_rate=1e-2, seed=0, progress=False)
    return model, train, test, preprocessing, metrics


def test_train_teacher_learns_and_leaves_reestimated_statistics(trained):
    model, train, _, preprocessing, metrics = trained
    chance = 0.1
    assert metrics.test_accuracy > 3 * chance and metrics.train_accuracy > 3 * chance
    assert metrics.test_accuracy_training_mode > 3 * chance
    assert metrics.epochs == 4 and metrics.wall_seconds > 0
    # The training-mode evaluation must not leave its batch statistics behind.
    first_bn = bn_stats.batchnorm_layers(model)[0]
    mean, variance = bn_input_moments(model, first_bn, preprocessing.apply(train.images))
    np.testing.assert_allclose(first_bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first_bn.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)


def test_batchnorm_statistics_are_re_estimated_on_the_classes_in_their_proportions(monkeypatch):
    # A class-balanced subset of imbalanced data gave statistics of neither the training nor the test data: a
    # Fashion-MNIST teacher with one class twenty times the others lost 3 points of test accuracy.
    from zscgan_tf.labeled_images import LabeledImages

    digits = data.load_digits("train")
    chosen = np.concatenate([np.flatnonzero(digits.labels == 0), np.flatnonzero(digits.labels == 1)[:12]])
    train = LabeledImages(digits.images[chosen], digits.labels[chosen], num_classes=10, name="imbalanced")
    rare = {image.tobytes() for image in Preprocessing("tf").apply(train.images[train.labels == 1])}
    assert len(rare) / len(train) < 0.1
    seen = []
    reestimate = bn_stats.reestimate_batchnorm_statistics
    monkeypatch.setattr(teacher_training.bn_stats, "reestimate_batchnorm_statistics",
                        lambda model, images, *args: (seen.append(images), reestimate(model, images, *args)))
    monkeypatch.setattr(teacher_training, "BATCHNORM_REESTIMATION_MAX_IMAGES", 20)  # 10 of the 12 rare ones, balanced.
    tf_keras.utils.set_random_seed(0)
    model = architectures.build_resnet(8, (8, 8, 1), 10, base_width=4)
    teacher_training.train_teacher(model, train, data.load_digits("test").take(16), Preprocessing("tf"), epochs=1,
                                   batch_size=32, learning_rate=1e-2, seed=0, progress=False,
                                   maximum_inference_accuracy_gap=1.0)
    (images,) = seen
    rare_share = np.mean([image.tobytes() in rare for image in images])
    assert len(images) == 20 and rare_share < 0.3  # Half of them, class-balanced.


def test_train_teacher_shows_progress_within_each_epoch_and_a_line_after_it(capsys, monkeypatch):
    monkeypatch.setattr(teacher_training, "REESTIMATION_QUIET_SECONDS", 0.0)  # As if it took long.
    train = data.load_digits("train").take(64)
    tf_keras.utils.set_random_seed(0)
    model = architectures.build_resnet(8, (8, 8, 1), 10, base_width=4)
    teacher_training.train_teacher(model, train, data.load_digits("test").take(32), Preprocessing("tf"), epochs=2,
                                   batch_size=16, learning_rate=1e-2, seed=0, progress=True)
    captured = capsys.readouterr()
    printed = captured.err
    assert captured.out == ""  # stdout is the tool's JSON result.
    # The first step's line comes before its epoch ends (Keras' verbose=2 wrote nothing until then).
    assert 0 <= printed.index("teacher 1/8 [") < printed.index("zscgan_tf: epoch 1/2: loss ")
    assert "teacher 8/8 [========================] loss " in printed and " accuracy " in printed
    assert printed.index("teacher 8/8 [") < printed.index("zscgan_tf: epoch 2/2: loss ")
    # The BN statistics' re-estimation, silent for 37 s on MobileNetV2 at 32x32, counts its layers.
    layers = len(bn_stats.batchnorm_layers(model))
    assert f"\nBatchNormalization layers {layers}/{layers} [========================] | " in printed
    assert printed.index("re-estimating BatchNormalization statistics on 64 training images") < printed.index(
        f"BatchNormalization layers {layers}/{layers}") < printed.index("zscgan_tf: teacher ")


def test_a_teacher_near_chance_is_warned_of(capsys):
    # A learning rate of 1e6 kept the loss finite (5.9e12) and saved a teacher at 14% on 10 classes, exit 0, unsaid.
    train = data.load_digits("train").take(64)
    tf_keras.utils.set_random_seed(0)
    model = architectures.build_resnet(8, (8, 8, 1), 10, base_width=4)
    metrics = teacher_training.train_teacher(model, train, data.load_digits("test").take(64), Preprocessing("tf"),
                                             epochs=1, batch_size=16, learning_rate=1e-9, seed=0, progress=False,
                                             maximum_inference_accuracy_gap=1.0)
    assert metrics.test_accuracy < 0.15
    assert (f"zscgan_tf: warning: the teacher's test accuracy {metrics.test_accuracy:.3f} is near chance (0.100 for "
            "10 classes): it has not learned its task (a lower --learning_rate, or more --epochs?)\n"
            ) in capsys.readouterr().err


def test_a_training_that_diverges_is_an_error_that_says_what_to_change(tmp_path):
    # Before, a teacher with NaN weights was saved, and the tool exited 0.
    train = data.load_digits("train").take(64)
    tf_keras.utils.set_random_seed(0)
    model = architectures.build_resnet(8, (8, 8, 1), 10, base_width=4)
    backup_dir = str(tmp_path / "teacher.keras.training")
    with pytest.raises(UserError) as raised:
        teacher_training.train_teacher(model, train, data.load_digits("test").take(32), Preprocessing("tf"), epochs=50,
                                       batch_size=16, learning_rate=1e30, seed=0, progress=False,
                                       backup_dir=backup_dir)
    # It stops at the first step whose loss is not finite, not after the 50 epochs.
    assert re.fullmatch(r"training diverged: the loss is NaN or infinite at step [1-4] of epoch 1 of 50, where it "
                        rf"stopped; delete {re.escape(backup_dir)}, which holds the diverged epochs, and rerun with a "
                        r"lower --learning_rate \(now 1e\+30\)", str(raised.value)), str(raised.value)


def test_weights_that_are_not_finite_after_training_are_an_error_too(monkeypatch):
    # A loss that stayed finite vouches for nothing if the weights are not (an overflow in the last update).
    train = data.load_digits("train").take(32)
    model = architectures.build_resnet(8, (8, 8, 1), 10, base_width=4)
    fit = model.fit

    def fit_then_spoil(*args, **kwargs):
        history = fit(*args, **kwargs)
        model.layers[-1].set_weights([np.full_like(weight, np.inf) for weight in model.layers[-1].get_weights()])
        return history

    monkeypatch.setattr(model, "fit", fit_then_spoil)
    with pytest.raises(UserError, match=r"^training diverged: the weights are NaN or infinite after 1 epoch and rerun "
                                        r"with a lower --learning_rate \(now 0.001\)$"):
        teacher_training.train_teacher(model, train, data.load_digits("test").take(16), Preprocessing("tf"), epochs=1,
                                       batch_size=16, learning_rate=1e-3, seed=0, progress=False)


def test_train_teacher_rejects_data_of_another_shape(trained):
    model, train, test, preprocessing, _ = trained
    with pytest.raises(UserError, match=r"train images are \(16, 16, 1\) but the model takes \(8, 8, 1\)"):
        teacher_training.train_teacher(model, train.resized(16, 16), test, preprocessing, epochs=1, batch_size=8,
                                       learning_rate=1e-3, seed=0, progress=False)


def test_save_teacher_writes_a_loadable_model_and_sidecar(trained, tmp_path):
    model, _, test, preprocessing, metrics = trained
    path = str(tmp_path / "teacher.keras")
    teacher_training.save_teacher(model, path, preprocessing, "digits", test.class_names, metrics)

    loaded = tf_keras.models.load_model(path, compile=False)
    inputs = preprocessing.apply(test.images[:16])
    np.testing.assert_allclose(loaded(inputs, training=False).numpy(), model(inputs, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
    with open(path + ".json", encoding="utf-8") as stream:
        description = json.load(stream)
    assert description == {
        "preprocessing": {"mode": "tf", "mean": [], "std": []},
        "dataset": "digits",
        "num_classes": 10,
        "class_names": [str(digit) for digit in range(10)],
        "input_shape": [8, 8, 1],
        "metrics": metrics.to_dict(),
    }
    assert sorted(os.listdir(tmp_path)) == ["teacher.keras", "teacher.keras.json"]  # no temporary files left
    with pytest.raises(UserError, match="got 2 class names"):
        teacher_training.save_teacher(model, path, preprocessing, "digits", ["a", "b"], metrics)


def test_the_data_directory_a_teacher_was_trained_from_is_its_default(tmp_path, trained):
    from zscgan_tf import teachers

    model, _, test, preprocessing, metrics = trained
    path = str(tmp_path / "teacher.keras")
    teacher_training.save_teacher(model, path, preprocessing, "tfds:cifar10", test.class_names, metrics,
                                  data_dir="relative/tfds")
    teacher = teachers.load_teacher(teachers.TeacherSource(model=path), progress=False)

    assert teacher.real_data() == ("tfds:cifar10", os.path.abspath("relative/tfds"))
    assert teacher.real_data(data_dir="/mine") == ("tfds:cifar10", "/mine")
    assert teacher.real_data("fashion_mnist") == ("fashion_mnist", "")
