"""Training small batch-normalized teachers, so the package has something to quantize offline,
and saving them with the sidecar that describes them.

The zero-shot method reads each BatchNormalization layer's moving mean and variance as
the statistics of the data the teacher was trained on. A few epochs of training leave
those moving averages lagging behind the weights (with momentum 0.999, as in
MobileNetV2, a teacher at 88% in training mode scored 10% in inference mode), so after
training every BN layer's statistics are recomputed exactly from training images and
the inference-mode accuracy is checked against the training-mode accuracy.

What to train (a recipe), the built-in teachers and resuming a stopped training are in
`teacher_recipes`.
"""

import contextlib
import dataclasses
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, data, files, sidecar, training_loop
from zscgan_tf.errors import UserError
from zscgan_tf.labeled_images import LabeledImages
from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.progress import ProgressBar, count_of, note

# BN statistics are re-estimated on at most this many training images (a random subset);
# even where feature maps are 1x1, 4096 images pin each channel's mean to about 1.6% of its
# standard deviation, and the exact per-layer rounds cost several forward passes per image.
BATCHNORM_REESTIMATION_MAX_IMAGES = 4096
# The re-estimation's progress line shows once it has run this long (a small teacher's takes a second or two).
REESTIMATION_QUIET_SECONDS = 5.0
# A test accuracy below this many times chance is warned of: the teacher has not learned its task.
NEAR_CHANCE_FACTOR = 1.5
# train_teacher fails when inference-mode test accuracy trails training mode by more.
MAXIMUM_INFERENCE_ACCURACY_GAP = 0.10
# Random translations (augment=True) of up to this fraction of the image side.
AUGMENT_SHIFT_FRACTION = 0.125
EVALUATION_BATCH_SIZE = 512

TEACHER_FILE_SUFFIX = ".keras"


# ----------------------------------------------------------------------------------
# Training.


@dataclasses.dataclass(frozen=True)
class TeacherMetrics:
    """How well a trained teacher does.

    Attributes:
      train_accuracy: inference-mode accuracy on the training images used for BN statistics
        (up to `BATCHNORM_REESTIMATION_MAX_IMAGES`, a random subset).
      test_accuracy: inference-mode (moving BN statistics) accuracy on the test set.
      test_accuracy_training_mode: accuracy on the test set with per-batch BN statistics.
      epochs: training epochs.
      wall_seconds: time spent in `train_teacher`, over every process that trained it
        (`TrainingTime`; an epoch a stopped process left unfinished is not counted).
    """

    train_accuracy: float
    test_accuracy: float
    test_accuracy_training_mode: float
    epochs: int
    wall_seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _training_dataset(train: LabeledImages, preprocessing: Preprocessing, batch_size: int,
                      seed: int, augment: bool) -> tf.data.Dataset:
    """Shuffled, optionally translated batches, preprocessed on the fly from uint8 pixels."""
    height, width, channels = train.image_shape
    scale, offset = preprocessing.scale_and_offset(channels)
    reverse = preprocessing.reverses_channels(channels)
    pad_height = int(round(height * AUGMENT_SHIFT_FRACTION))
    pad_width = int(round(width * AUGMENT_SHIFT_FRACTION))

    def prepare(pixels, label):
        pixels = tf.cast(pixels, tf.float32)
        if augment and (pad_height or pad_width):
            # Reflection keeps the border's texture; zero padding would invent black edges.
            padded = tf.pad(pixels, [[pad_height, pad_height], [pad_width, pad_width], [0, 0]], mode="REFLECT")
            pixels = tf.image.random_crop(padded, (height, width, channels))
        if reverse:
            pixels = pixels[..., ::-1]
        return pixels * scale + offset, label

    dataset = tf.data.Dataset.from_tensor_slices((train.images, train.labels))
    dataset = dataset.shuffle(len(train), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _accuracy(model: tf_keras.Model, inputs: np.ndarray, labels: np.ndarray, batch_size: int, training: bool) -> float:
    inputs = np.asarray(inputs, np.float32)
    # One trace for every batch size: the last, smaller batch must not retrace.
    signature = [tf.TensorSpec((None,) + tuple(inputs.shape[1:]), tf.float32)]
    predict = tf.function(lambda batch: tf.argmax(model(batch, training=training), axis=-1),
                          input_signature=signature, autograph=False)
    correct = 0
    for start in range(0, inputs.shape[0], batch_size):
        predicted = predict(inputs[start:start + batch_size]).numpy()
        correct += int(np.sum(predicted == labels[start:start + batch_size]))
    return correct / max(inputs.shape[0], 1)


def _training_mode_accuracy(model, inputs, labels, batch_size: int) -> float:
    """Accuracy with per-batch BN statistics, over the images in a fixed shuffled order (a
    folder's are stored class by class, and batches of one class have other statistics than
    training's mixed ones: the figure fell to 0.52 from 0.66); the moving statistics are
    restored after."""
    order = np.random.default_rng(0).permutation(len(labels))
    # Calling a tf_keras model with training=True updates BN moving statistics.
    saved = [variable.numpy() for variable in model.non_trainable_variables]
    try:
        return _accuracy(model, np.asarray(inputs)[order], np.asarray(labels)[order], batch_size, training=True)
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)


class InferenceModeGapError(UserError):
    """A trained teacher's inference-mode accuracy trails its training-mode accuracy too far."""


def check_inference_mode_accuracy(metrics: TeacherMetrics,
                                  maximum_gap: float = MAXIMUM_INFERENCE_ACCURACY_GAP) -> None:
    """Raises `InferenceModeGapError` if inference-mode test accuracy trails training mode by
    more than `maximum_gap`.

    The zero-shot method trusts BN moving statistics; a teacher whose inference mode is
    much worse than its training mode has statistics that do not describe its data.
    """
    gap = metrics.test_accuracy_training_mode - metrics.test_accuracy
    if gap > maximum_gap:
        raise InferenceModeGapError(
            f"the teacher's inference-mode test accuracy {metrics.test_accuracy:.3f} is {gap:.3f} below its "
            f"training-mode accuracy {metrics.test_accuracy_training_mode:.3f} (limit {maximum_gap}): its "
            f"BatchNormalization moving statistics do not match the data, even after re-estimation, so it is not "
            "saved; train it with more epochs or a larger batch size")


class TrainingProgress(tf_keras.callbacks.Callback):
    """The progress of `model.fit` on stderr: a bar over every epoch's steps with the epoch's
    loss and accuracy so far and the whole training's ETA (redrawn on a terminal, a line every
    10 s in a log), and a line at the end of each epoch. Keras' `verbose=2` wrote only the
    epoch's line: nothing for the hours of an epoch on a large dataset.

    Must follow `BackupAndRestore` among the callbacks: a resumed training starts at the
    epoch that restores, and the bar at its first step.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, batch_size: int):
        super().__init__()
        self.epochs, self.steps_per_epoch, self.batch_size = epochs, steps_per_epoch, batch_size
        self.bar, self.epoch, self.epoch_start = None, 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        if self.bar is None:
            self.bar = ProgressBar(self.epochs * self.steps_per_epoch, "teacher", stream=sys.stderr,
                                   initial_step=epoch * self.steps_per_epoch, samples_per_step=self.batch_size)
        self.epoch, self.epoch_start = epoch, time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(self.epoch * self.steps_per_epoch + batch + 1, _loss_and_accuracy(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()  # Ends a terminal's line; the epoch's figures follow on one of their own.
        figures = ", ".join(f"{name} {value:.4f}" for name, value in _loss_and_accuracy(logs).items())
        seconds = time.monotonic() - self.epoch_start
        note(f"epoch {epoch + 1}/{self.epochs}: {figures} ({seconds:.{1 if seconds < 10 else 0}f} s)")


class StopOnNonFiniteLoss(tf_keras.callbacks.Callback):
    """Stops `model.fit` at the first step whose loss is NaN or infinite, and records where
    (`diverged_at`: epoch and step, from 1), so that a training that diverges is said to at
    once rather than after its last epoch. Keras' `TerminateOnNaN` stops too, but prints
    its line to stdout and keeps no record of where."""

    def __init__(self):
        super().__init__()
        self.epoch, self.diverged_at = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss) and self.diverged_at is None:
            self.diverged_at = (self.epoch + 1, batch + 1)
            self.model.stop_training = True


class TrainingTime(tf_keras.callbacks.Callback):
    """Keeps, in a training's backup directory, the seconds spent up to each finished epoch
    (`training_loop.WALL_TIME_FILE`), so that a training resumed there counts the time of
    the processes before it: `total_seconds` once training ends. Where the record does not
    match the epoch resumed from (a backup of an earlier version), only this process counts.

    Goes before `BackupAndRestore` among the callbacks: an epoch's record is written before
    its checkpoint, and the epoch a backup restores is the first one `on_epoch_begin` gets.
    """

    def __init__(self, backup_dir: str, started: float):
        super().__init__()
        self.path, self.started = os.path.join(backup_dir, training_loop.WALL_TIME_FILE), started
        self.earlier_seconds, self.first_epoch = None, None

    def _resumed_from(self, epoch: int) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
            self.earlier_seconds = training_loop.earlier_wall_seconds(self.path, epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self._resumed_from(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.earlier_seconds is not None:
            files.write_json_atomic(self.path, {"step": epoch + 1,
                                                "seconds": self.earlier_seconds + time.monotonic() - self.started})

    def total_seconds(self, epochs: int) -> float:
        """The training's seconds so far; `epochs` is where a backup that ran no epoch here stood."""
        self._resumed_from(epochs)  # A backup holding every epoch (a save cut short) runs none.
        return (self.earlier_seconds or 0.0) + time.monotonic() - self.started


def _loss_and_accuracy(logs) -> dict:
    return {name: float(logs[name]) for name in ("loss", "accuracy") if logs and name in logs}


def train_teacher(model: tf_keras.Model, train: LabeledImages, test: LabeledImages,
                  preprocessing: Preprocessing, epochs: int, batch_size: int, learning_rate: float, seed: int,
                  augment: bool = False, progress: bool = True,
                  maximum_inference_accuracy_gap: float = MAXIMUM_INFERENCE_ACCURACY_GAP,
                  backup_dir: Optional[str] = None) -> TeacherMetrics:
    """Trains a classifier returning logits, re-estimates its BN statistics and measures it.

    Adam with a cosine-decayed learning rate minimizes sparse categorical cross-entropy.
    After training, BN statistics are recomputed on up to
    `BATCHNORM_REESTIMATION_MAX_IMAGES` training images, a random subset with the classes in
    their proportions (see `bn_stats.reestimate_batchnorm_statistics`), which are also the
    images of `train_accuracy`.

    Args:
      model: an untrained (or pre-trained) functional model; it is trained in place.
      train: training images, already of the model's input shape.
      test: test images of the same shape.
      preprocessing: maps pixels to model inputs.
      epochs: passes over `train`.
      batch_size: training batch size.
      learning_rate: initial learning rate, decayed to zero along a cosine.
      seed: shuffling and augmentation seed (weights are initialized by the caller).
      augment: random translations by up to `AUGMENT_SHIFT_FRACTION` of the image side;
        no flips, which would change what a digit means.
      progress: show a progress bar over the epochs and a line after each, on stderr.
      maximum_inference_accuracy_gap: see `check_inference_mode_accuracy`.
      backup_dir: where to keep a checkpoint of weights and optimizer after every epoch,
        and to resume from one left there (Keras's `BackupAndRestore`), with the time spent
        (`TrainingTime`). A resumed training's later epochs see other shuffles than they
        would have in one go.

    Returns:
      The teacher's `TeacherMetrics`.

    Raises:
      UserError: if the data do not fit the model or the settings are invalid.
      UserError: if inference-mode test accuracy is far below training mode.
    """
    model_shape = tuple(model.input_shape[1:])
    for split, images in (("train", train), ("test", test)):
        if images.image_shape != model_shape:
            raise UserError(f"{split} images are {images.image_shape} but the model takes {model_shape}")
        if images.num_classes != model.output_shape[-1]:
            raise UserError(f"{split} data have {images.num_classes} classes but the model has "
                            f"{model.output_shape[-1]} outputs")
        if not len(images):
            raise UserError(f"the {split} set is empty")
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise UserError(f"epochs and batch size must be positive and the learning rate above zero, got "
                        f"epochs={epochs}, batch_size={batch_size}, learning_rate={learning_rate}")
    start_time = time.monotonic()
    tf_keras.utils.set_random_seed(seed)
    steps_per_epoch = -(-len(train) // batch_size)
    schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps_per_epoch)
    model.compile(optimizer=tf_keras.optimizers.Adam(schedule),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    timer = TrainingTime(backup_dir, start_time) if backup_dir else None
    callbacks = [timer, tf_keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False)] if timer else []
    divergence = StopOnNonFiniteLoss()
    callbacks.append(divergence)
    if progress:
        callbacks.append(TrainingProgress(epochs, steps_per_epoch, batch_size))
    # Keras prints warnings to stdout; they go to stderr with our own, leaving stdout to results.
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(_training_dataset(train, preprocessing, batch_size, seed, augment), epochs=epochs, verbose=0,
                  callbacks=callbacks)

    if divergence.diverged_at or not all(np.all(np.isfinite(weight)) for weight in model.get_weights()):
        where = (f"the loss is NaN or infinite at step {divergence.diverged_at[1]} of epoch "
                 f"{divergence.diverged_at[0]} of {epochs}, where it stopped" if divergence.diverged_at
                 else f"the weights are NaN or infinite after {count_of(epochs, 'epoch')}")
        backup = f"; delete {backup_dir}, which holds the diverged epochs," if backup_dir else ""
        raise UserError(f"training diverged: {where}{backup} and rerun with a lower --learning_rate "
                        f"(now {learning_rate:g})")
    # A random subset, the classes in the training data's proportions: the statistics the weights were
    # trained with (a class-balanced one of imbalanced data cost 3 points of test accuracy).
    statistics_images = train.random_subset(BATCHNORM_REESTIMATION_MAX_IMAGES, seed)
    statistics_inputs = preprocessing.apply(statistics_images.images)
    bar = None
    if progress:
        note(f"re-estimating BatchNormalization statistics on {len(statistics_images)} training images")
        # A pass over the images per round of layers: half a minute for MobileNetV2's 52, without a line before.
        bar = ProgressBar(len(bn_stats.batchnorm_layers(model)), "BatchNormalization layers", stream=sys.stderr,
                          samples_per_step=len(statistics_images), quiet_seconds=REESTIMATION_QUIET_SECONDS)

    def settled(done: int, total: int) -> None:  # pylint: disable=unused-argument
        if bar:
            bar.update(done, {})

    try:
        bn_stats.reestimate_batchnorm_statistics(model, statistics_inputs, EVALUATION_BATCH_SIZE, settled)
    finally:
        if bar:
            bar.close()
    test_inputs = preprocessing.apply(test.images)
    metrics = TeacherMetrics(
        train_accuracy=_accuracy(model, statistics_inputs, statistics_images.labels, EVALUATION_BATCH_SIZE,
                                 training=False),
        test_accuracy=_accuracy(model, test_inputs, test.labels, EVALUATION_BATCH_SIZE, training=False),
        # Training mode at the training batch size: the statistics the weights were fitted with.
        test_accuracy_training_mode=_training_mode_accuracy(model, test_inputs, test.labels, batch_size),
        epochs=epochs,
        wall_seconds=timer.total_seconds(epochs) if timer else time.monotonic() - start_time)
    if progress:
        note(f"teacher {model.name}: test accuracy {metrics.test_accuracy:.4f} (inference mode), "
             f"{metrics.test_accuracy_training_mode:.4f} (training mode), {metrics.wall_seconds:.0f} s")
    chance = 1 / max(train.num_classes, 1)
    if metrics.test_accuracy < NEAR_CHANCE_FACTOR * chance:  # A finite but huge loss: no divergence stop.
        note(f"warning: the teacher's test accuracy {metrics.test_accuracy:.3f} is near chance ({chance:.3f} for "
             f"{train.num_classes} classes): it has not learned its task (a lower --learning_rate, or "
             "more --epochs?)")
    check_inference_mode_accuracy(metrics, maximum_inference_accuracy_gap)
    return metrics


# ----------------------------------------------------------------------------------
# Teacher files.


def save_teacher(model: tf_keras.Model, path: str, preprocessing: Preprocessing, dataset: str,
                 class_names: Sequence[str], metrics: Optional[TeacherMetrics], data_dir: Optional[str] = None) -> None:
    """Writes the model (without optimizer state) to `path` and its description beside it.

    Both files are written atomically. The sidecar `path + '.json'` holds
    `preprocessing`, `dataset`, `num_classes`, `class_names`, `input_shape` and `metrics`,
    and `data_dir` when one is given. A run evaluates the teacher on `dataset` (from
    `data_dir`) unless told otherwise.

    Args:
      model: the trained teacher.
      path: a `.keras` file.
      preprocessing: how pixels become the model's input.
      dataset: the training data's `data.load_dataset` source (a directory is recorded
        as its absolute path).
      class_names: one name per output, or empty.
      metrics: the training metrics, or None.
      data_dir: the data directory the source was loaded from, if any.
    """
    if not path.endswith(TEACHER_FILE_SUFFIX):
        raise UserError(f"teacher files are {TEACHER_FILE_SUFFIX} files, got {path!r}")
    num_classes = int(model.output_shape[-1])
    class_names = [str(name) for name in class_names]
    if class_names and len(class_names) != num_classes:
        raise UserError(f"got {len(class_names)} class names for a model with {num_classes} outputs")
    # A fresh copy has no optimizer, so loading the file needs no optimizer classes or state.
    clean_copy = tf_keras.models.clone_model(model)
    clean_copy.set_weights(model.get_weights())
    files.save_keras_model_atomic(clean_copy, path)
    sidecar.write(path, {
        "preprocessing": preprocessing.to_dict(),
        "dataset": data.portable_source(dataset),
        **({"data_dir": os.path.abspath(data_dir)} if data_dir else {}),
        "num_classes": num_classes,
        "class_names": class_names,
        "input_shape": [int(size) for size in model.input_shape[1:]],
        "metrics": metrics.to_dict() if metrics is not None else {},
    })
