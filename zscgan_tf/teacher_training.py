"""Training small batch-normalized teachers, so the package has something to quantize offline.

The zero-shot method reads each BatchNormalization layer's moving mean and variance as
the statistics of the data the teacher was trained on. A few epochs of training leave
those moving averages lagging behind the weights (with momentum 0.999, as in
MobileNetV2, a teacher at 88% in training mode scored 10% in inference mode), so after
training every BN layer's statistics are recomputed exactly from training images and
the inference-mode accuracy is checked against the training-mode accuracy.

Example:

  teacher_path = ensure_builtin_teacher("digits_resnet8")
  teacher = tf_keras.models.load_model(teacher_path)
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, data, files
from zscgan_tf.architectures import ARCHITECTURES, build_architecture
from zscgan_tf.errors import UserError
from zscgan_tf.labeled_images import CENTRAL_CROP_FRACTION, LabeledImages, MixedImageSizesError
from zscgan_tf.preprocessing import Preprocessing

# BN statistics are re-estimated on at most this many (class-balanced) training images;
# even where feature maps are 1x1, 4096 images pin each channel's mean to about 1.6% of its
# standard deviation, and the exact per-layer rounds cost several forward passes per image.
BATCHNORM_REESTIMATION_MAX_IMAGES = 4096
# train_teacher fails when inference-mode test accuracy trails training mode by more.
MAXIMUM_INFERENCE_ACCURACY_GAP = 0.10
# Random translations (augment=True) of up to this fraction of the image side.
AUGMENT_SHIFT_FRACTION = 0.125
EVALUATION_BATCH_SIZE = 512

CACHE_ENVIRONMENT_VARIABLE = "ZSCGAN_TF_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "zscgan_tf", "teachers")
TEACHER_FILE_SUFFIX = ".keras"
SIDECAR_SUFFIX = ".json"
# `<teacher>.keras.training/` holds an unfinished training's epoch checkpoints (Keras's
# `BackupAndRestore`, under `chief/`) and the recipe they belong to; it goes once the
# teacher is saved.
TRAINING_BACKUP_SUFFIX = ".training"
BACKUP_RECIPE_FILE = "recipe.json"
BACKUP_CHECKPOINT_DIR = "chief"  # Where BackupAndRestore keeps its checkpoints.


# ----------------------------------------------------------------------------------
# BatchNormalization statistics.


def _reduction_axes(layer, rank: int):
    channel_axes = {axis % rank for axis in layer.axis}
    return [axis for axis in range(rank) if axis not in channel_axes]


def reestimate_batchnorm_statistics(model: tf_keras.Model, images: np.ndarray, batch_size: int) -> None:
    """Sets every BN layer's moving mean and variance to the exact moments of its input.

    The moments are those of the layer's input over all of `images` when the model
    runs in inference mode, i.e. the input the layer sees once deployed, whose
    normalization depends on the statistics of the BN layers before it. Layers are
    therefore settled in rounds: each round measures, in one pass, every BN layer whose
    upstream BN layers are all settled. Means and variances are merged across batches
    exactly (Chan et al.'s parallel algorithm, in float64); the variance is the
    population variance, which is what inference-mode BN divides by. Only the moving
    statistics change: weights, momenta and the optimizer are untouched.

    Args:
      model: a flat functional model; BN layers are found by type (`bn_stats.batchnorm_layers`).
      images: preprocessed inputs, shape (N,) + the model's input shape.
      batch_size: images per forward pass.

    Raises:
      ValueError: if the images do not fit the model or `batch_size` is not positive.
      UserError: if BN layers sit in a nested model or are shared (see `bn_stats.batchnorm_layers`).
    """
    images = np.asarray(images, np.float32)
    expected_shape = tuple(model.input_shape[1:])
    if images.ndim != len(expected_shape) + 1 or any(
            expected not in (None, got) for expected, got in zip(expected_shape, images.shape[1:])):
        raise ValueError(f"images of shape {images.shape} do not fit the model input {model.input_shape}")
    if images.shape[0] < 1:
        raise ValueError("BN statistics need at least one image")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    pending = bn_stats.batchnorm_layers(model)
    upstream = {id(layer): {id(other) for other in tf_keras.Model(model.inputs, layer.input).layers}
                for layer in pending}
    # Each round traces its own tap model once, by design; TensorFlow's frequent-retracing
    # warning counts traces per source function, not per tf.function, and would cry wolf.
    tensorflow_logger = tf.get_logger()
    saved_level = tensorflow_logger.level
    tensorflow_logger.setLevel(logging.ERROR)
    try:
        while pending:
            pending_ids = {id(layer) for layer in pending}
            ready = [layer for layer in pending if not upstream[id(layer)] & pending_ids]
            _set_moments_from_inputs(model, ready, images, batch_size)
            pending = [layer for layer in pending if layer not in ready]
    finally:
        tensorflow_logger.setLevel(saved_level)


def _set_moments_from_inputs(model, layers, images: np.ndarray, batch_size: int) -> None:
    taps = tf_keras.Model(model.inputs, [layer.input for layer in layers])

    @tf.function(input_signature=[tf.TensorSpec((None,) + tuple(images.shape[1:]), tf.float32)], autograph=False)
    def batch_moments(batch):
        outputs = taps(batch, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        moments = []
        for layer, output in zip(layers, outputs):
            output = tf.cast(output, tf.float32)
            axes = _reduction_axes(layer, output.shape.rank)
            mean = tf.reduce_mean(output, axis=axes)
            sum_of_squares = tf.reduce_sum(tf.square(output - tf.reduce_mean(output, axis=axes, keepdims=True)), axis=axes)
            count = tf.cast(tf.size(output, out_type=tf.int64) // tf.size(mean, out_type=tf.int64), tf.float64)
            moments.append((count, mean, sum_of_squares))
        return moments

    totals = [None] * len(layers)
    for start in range(0, images.shape[0], batch_size):
        for index, (count, mean, sum_of_squares) in enumerate(batch_moments(images[start:start + batch_size])):
            count = float(count.numpy())
            mean = mean.numpy().astype(np.float64)
            sum_of_squares = sum_of_squares.numpy().astype(np.float64)
            if totals[index] is None:
                totals[index] = (count, mean, sum_of_squares)
                continue
            total_count, total_mean, total_squares = totals[index]
            merged_count = total_count + count
            delta = mean - total_mean
            totals[index] = (merged_count, total_mean + delta * (count / merged_count),
                             total_squares + sum_of_squares + delta ** 2 * (total_count * count / merged_count))
    for layer, (count, mean, sum_of_squares) in zip(layers, totals):
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign((sum_of_squares / count).astype(np.float32))


# ----------------------------------------------------------------------------------
# Training.


@dataclasses.dataclass(frozen=True)
class TeacherMetrics:
    """How well a trained teacher does.

    Attributes:
      train_accuracy: inference-mode accuracy on the training images used for BN statistics.
      test_accuracy: inference-mode (moving BN statistics) accuracy on the test set.
      test_accuracy_training_mode: accuracy on the test set with per-batch BN statistics.
      epochs: training epochs.
      wall_seconds: time spent in `train_teacher`.
    """

    train_accuracy: float
    test_accuracy: float
    test_accuracy_training_mode: float
    epochs: int
    wall_seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _log(message: str) -> None:
    print(f"zscgan_tf: {message}", file=sys.stderr, flush=True)


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
    """Accuracy with per-batch BN statistics; the moving statistics are restored after."""
    # Calling a tf_keras model with training=True updates BN moving statistics.
    saved = [variable.numpy() for variable in model.non_trainable_variables]
    try:
        return _accuracy(model, inputs, labels, batch_size, training=True)
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)


def check_inference_mode_accuracy(metrics: TeacherMetrics,
                                  maximum_gap: float = MAXIMUM_INFERENCE_ACCURACY_GAP) -> None:
    """Raises RuntimeError if inference-mode test accuracy trails training mode by more than `maximum_gap`.

    The zero-shot method trusts BN moving statistics; a teacher whose inference mode is
    much worse than its training mode has statistics that do not describe its data.
    """
    gap = metrics.test_accuracy_training_mode - metrics.test_accuracy
    if gap > maximum_gap:
        raise RuntimeError(
            f"the teacher's inference-mode test accuracy {metrics.test_accuracy:.3f} is {gap:.3f} below its "
            f"training-mode accuracy {metrics.test_accuracy_training_mode:.3f} (limit {maximum_gap}): its "
            f"BatchNormalization moving statistics do not match the data, even after re-estimation")


def train_teacher(model: tf_keras.Model, train: LabeledImages, test: LabeledImages,
                  preprocessing: Preprocessing, epochs: int, batch_size: int, learning_rate: float, seed: int,
                  augment: bool = False, progress: bool = True,
                  maximum_inference_accuracy_gap: float = MAXIMUM_INFERENCE_ACCURACY_GAP,
                  backup_dir: Optional[str] = None) -> TeacherMetrics:
    """Trains a classifier returning logits, re-estimates its BN statistics and measures it.

    Adam with a cosine-decayed learning rate minimizes sparse categorical cross-entropy.
    After training, BN statistics are recomputed on up to
    `BATCHNORM_REESTIMATION_MAX_IMAGES` class-balanced training images (see
    `reestimate_batchnorm_statistics`), which are also the images of `train_accuracy`.

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
      progress: print one line per epoch, to stderr.
      maximum_inference_accuracy_gap: see `check_inference_mode_accuracy`.
      backup_dir: where to keep a checkpoint of weights and optimizer after every epoch,
        and to resume from one left there (Keras's `BackupAndRestore`). A resumed
        training's later epochs see other shuffles than they would have in one go.

    Returns:
      The teacher's `TeacherMetrics`.

    Raises:
      UserError: if the data do not fit the model or the settings are invalid.
      RuntimeError: if inference-mode test accuracy is far below training mode.
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
    # Keras prints progress to stdout; it goes to stderr with our own, leaving stdout to results.
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(_training_dataset(train, preprocessing, batch_size, seed, augment), epochs=epochs,
                  verbose=2 if progress else 0,
                  callbacks=[tf_keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False)]
                  if backup_dir else None)

    statistics_images = train.class_balanced(BATCHNORM_REESTIMATION_MAX_IMAGES, seed)
    statistics_inputs = preprocessing.apply(statistics_images.images)
    if progress:
        _log(f"re-estimating BatchNormalization statistics on {len(statistics_images)} training images")
    reestimate_batchnorm_statistics(model, statistics_inputs, EVALUATION_BATCH_SIZE)
    test_inputs = preprocessing.apply(test.images)
    metrics = TeacherMetrics(
        train_accuracy=_accuracy(model, statistics_inputs, statistics_images.labels, EVALUATION_BATCH_SIZE,
                                 training=False),
        test_accuracy=_accuracy(model, test_inputs, test.labels, EVALUATION_BATCH_SIZE, training=False),
        # Training mode at the training batch size: the statistics the weights were fitted with.
        test_accuracy_training_mode=_training_mode_accuracy(model, test_inputs, test.labels, batch_size),
        epochs=epochs,
        wall_seconds=time.monotonic() - start_time)
    if progress:
        _log(f"teacher {model.name}: test accuracy {metrics.test_accuracy:.4f} (inference mode), "
             f"{metrics.test_accuracy_training_mode:.4f} (training mode), {metrics.wall_seconds:.0f} s")
    check_inference_mode_accuracy(metrics, maximum_inference_accuracy_gap)
    return metrics


# ----------------------------------------------------------------------------------
# Teacher files.


def sidecar_path(teacher_path: str) -> str:
    """The JSON file describing a teacher: `<teacher_path>.json`."""
    return teacher_path + SIDECAR_SUFFIX


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
    files.write_json_atomic(sidecar_path(path), {
        "preprocessing": preprocessing.to_dict(),
        "dataset": data.portable_source(dataset),
        **({"data_dir": os.path.abspath(data_dir)} if data_dir else {}),
        "num_classes": num_classes,
        "class_names": class_names,
        "input_shape": [int(size) for size in model.input_shape[1:]],
        "metrics": metrics.to_dict() if metrics is not None else {},
    })


# ----------------------------------------------------------------------------------
# Built-in teachers.


@dataclasses.dataclass(frozen=True)
class TeacherRecipe:
    """Everything needed to train a teacher from scratch.

    Attributes:
      dataset: a `data.load_dataset` source with `train` and `test` splits.
      architecture: a name in `ARCHITECTURES`.
      input_shape: (height, width, channels); images are resized and converted to it.
        A None entry keeps the dataset's own size or channel count.
      epochs: training epochs.
      batch_size: training batch size.
      learning_rate: initial Adam learning rate (cosine decay).
      preprocessing_mode: a `Preprocessing` mode.
      architecture_options: (name, value) pairs passed to the architecture's builder.
      augment: random translations during training.
      seed: weight initialization and shuffling seed.
    """

    dataset: str
    architecture: str
    input_shape: Tuple[Optional[int], Optional[int], Optional[int]] = (None, None, None)
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    preprocessing_mode: str = "tf"
    architecture_options: Tuple[Tuple[str, Any], ...] = ()
    augment: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"unknown architecture {self.architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        if len(self.input_shape) != 3 or any(size is not None and size < 1 for size in self.input_shape):
            raise UserError(f"input shape must be (height, width, channels) with positive sizes or None, "
                            f"got {self.input_shape}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise UserError(f"epochs and batch size must be positive and the learning rate above zero, got "
                            f"epochs={self.epochs}, batch_size={self.batch_size}, learning_rate={self.learning_rate}")
        Preprocessing(self.preprocessing_mode)

    def resolved_input_shape(self, dataset: LabeledImages) -> Tuple[int, int, int]:
        """`input_shape` with None entries taken from `dataset`."""
        return tuple(int(wanted if wanted is not None else native)
                     for wanted, native in zip(self.input_shape, dataset.image_shape))


BUILTIN_TEACHERS: Dict[str, TeacherRecipe] = {
    "digits_resnet8": TeacherRecipe(
        dataset="digits", architecture="resnet8", input_shape=(8, 8, 1),
        epochs=30, batch_size=64, learning_rate=3e-3),
    "fashion_mnist_resnet20": TeacherRecipe(
        dataset="fashion_mnist", architecture="resnet20", input_shape=(28, 28, 1),
        epochs=4, batch_size=128, learning_rate=2e-3),
    "fashion_mnist_mobilenet_v2": TeacherRecipe(
        dataset="fashion_mnist", architecture="mobilenet_v2", input_shape=(32, 32, 1),
        epochs=15, batch_size=128, learning_rate=2e-3, architecture_options=(("alpha", 0.35),)),
}


def cache_directory(cache_dir: Optional[str] = None) -> str:
    """`cache_dir`, else $ZSCGAN_TF_CACHE, else ~/.cache/zscgan_tf/teachers."""
    return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENVIRONMENT_VARIABLE) or DEFAULT_CACHE_DIR)


def builtin_recipe(name: str) -> TeacherRecipe:
    """The recipe of the built-in teacher `name`, or a UserError listing the known names."""
    if name not in BUILTIN_TEACHERS:
        raise UserError(f"unknown built-in teacher {name!r}; known: {', '.join(sorted(BUILTIN_TEACHERS))}")
    return BUILTIN_TEACHERS[name]


def builtin_teacher_path(name: str, cache_dir: Optional[str] = None) -> str:
    """Where the built-in teacher `name` is cached."""
    builtin_recipe(name)
    return os.path.join(cache_directory(cache_dir), name + TEACHER_FILE_SUFFIX)


def train_from_recipe(recipe: TeacherRecipe, path: str, progress: bool = True,
                      data_dir: Optional[str] = None) -> TeacherMetrics:
    """Trains a teacher from scratch as `recipe` says and saves it to `path`.

    Args:
      recipe: what to train.
      path: the `.keras` file to write (with its sidecar).
      progress: print training progress.
      data_dir: passed to `data.load_dataset`.

    Returns:
      The teacher's metrics, also stored in the sidecar.
    """
    if not path.endswith(TEACHER_FILE_SUFFIX):
        raise UserError(f"teacher files are {TEACHER_FILE_SUFFIX} files, got {path!r}")
    train = _load_split(recipe, "train", data_dir, progress)
    input_shape = recipe.resolved_input_shape(train)
    train = train.to_input_shape(input_shape)
    test = _load_split(recipe, "test", data_dir, progress).to_input_shape(input_shape)
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(recipe.seed)
    model = build_architecture(recipe.architecture, input_shape, train.num_classes,
                               **dict(recipe.architecture_options))
    preprocessing = Preprocessing(recipe.preprocessing_mode)
    backup_dir = training_backup_path(path)
    with _training_lock(path):
        epochs_done = claim_training_backup(path, recipe, data_dir)
        if epochs_done and progress:
            _log(f"resuming the teacher's training after epoch {epochs_done} of {recipe.epochs}, from {backup_dir}")
        metrics = train_teacher(model, train, test, preprocessing, epochs=recipe.epochs,
                                batch_size=recipe.batch_size, learning_rate=recipe.learning_rate, seed=recipe.seed,
                                augment=recipe.augment, progress=progress, backup_dir=backup_dir)
        save_teacher(model, path, preprocessing, recipe.dataset, train.class_names, metrics, data_dir=data_dir)
        shutil.rmtree(backup_dir, ignore_errors=True)
    return metrics


@contextlib.contextmanager
def _training_lock(teacher_path: str, on_wait: Optional[Callable[[str], None]] = None):
    """Holds the lock of `teacher_path`'s training (on its backup directory) for the block.

    Two processes training one teacher would restore each other's epochs. With `on_wait`,
    another process's training is waited for; without, it is refused.
    """
    backup_dir = training_backup_path(teacher_path)
    reason = files.unusable_directory_reason(backup_dir)
    if reason:
        raise UserError(f"cannot write the teacher {teacher_path!r}: {reason}")
    os.makedirs(backup_dir, exist_ok=True)
    with files.exclusive_use(backup_dir, what="training of this teacher",
                             advice="wait for it to finish, then use the teacher it saves", on_wait=on_wait):
        yield


def training_backup_path(teacher_path: str) -> str:
    """The directory of `teacher_path`'s unfinished training: `<teacher_path>.training`."""
    return teacher_path + TRAINING_BACKUP_SUFFIX


def claim_training_backup(teacher_path: str, recipe: TeacherRecipe, data_dir: Optional[str]) -> int:
    """Readies `training_backup_path(teacher_path)` for a training of `recipe`; returns how
    many epochs a backup left there holds.

    A new directory records the recipe. A backup older than the teacher file beside it is
    one whose teacher was saved, and it starts again. One that holds another recipe's
    training is refused rather than resumed or overwritten: its epochs may be hours of work.

    Raises:
      UserError: if the backup belongs to an unfinished training of another recipe or data directory.
    """
    backup_dir = training_backup_path(teacher_path)
    wanted = json.loads(json.dumps({"recipe": dataclasses.asdict(recipe),
                                    "data_dir": os.path.abspath(data_dir) if data_dir else None}))
    recipe_path = os.path.join(backup_dir, BACKUP_RECIPE_FILE)
    recorded = files.read_json(recipe_path, None)
    checkpoint = tf.train.latest_checkpoint(os.path.join(backup_dir, BACKUP_CHECKPOINT_DIR))
    saved_since = os.path.exists(teacher_path) and os.path.exists(recipe_path) and (
        os.path.getmtime(teacher_path) >= os.path.getmtime(recipe_path))
    if recorded is None or checkpoint is None or saved_since:  # Nothing to resume: (re)start it.
        os.makedirs(backup_dir, exist_ok=True)
        for name in os.listdir(backup_dir):
            if name != files.LOCK_FILE:  # Held by this process (`train_from_recipe`).
                entry = os.path.join(backup_dir, name)
                if os.path.isdir(entry):
                    shutil.rmtree(entry)
                else:
                    os.remove(entry)
        files.write_json_atomic(recipe_path, wanted)
        return 0
    if recorded != wanted:
        differences = sorted(key for key in set(recorded["recipe"]) | set(wanted["recipe"])
                             if recorded["recipe"].get(key) != wanted["recipe"].get(key))
        if recorded.get("data_dir") != wanted["data_dir"]:
            differences.append("data_dir")
        raise UserError(f"{backup_dir} holds an unfinished training of this teacher with another "
                        f"{', '.join(differences)}; rerun with the settings it was started with to resume it, or "
                        "delete that directory to start again")
    # Keras records the index of the last epoch it saved.
    return int(tf.train.load_variable(checkpoint, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1


def _load_split(recipe: TeacherRecipe, split: str, data_dir: Optional[str], progress: bool) -> LabeledImages:
    """A split of the recipe's dataset; photographs of different sizes are cropped to their
    central part and resized to the recipe's image size as they load, as evaluation does."""
    try:
        return data.load_dataset(recipe.dataset, split, data_dir=data_dir)
    except MixedImageSizesError as error:
        height, width = recipe.input_shape[:2]
        if height is None or width is None:
            raise UserError(f"{error}; pass --image_size to crop and resize them") from None
        _log(f"{recipe.dataset} {split}: images differ in size; each is cropped to its central "
             f"{CENTRAL_CROP_FRACTION:.1%} and resized to {height}x{width} as it loads")
        return data.load_dataset(recipe.dataset, split, data_dir=data_dir, image_size=(height, width),
                                 progress=progress)


def train_builtin_teacher(name: str, path: str, progress: bool = True,
                          data_dir: Optional[str] = None) -> TeacherMetrics:
    """Trains the built-in teacher `name` from scratch and saves it to `path`."""
    return train_from_recipe(builtin_recipe(name), path, progress=progress, data_dir=data_dir)


def ensure_builtin_teacher(name: str, cache_dir: Optional[str] = None, progress: bool = True) -> str:
    """The path of the built-in teacher `name`, training and caching it on first use.

    A teacher counts as cached when both its `.keras` file and its sidecar exist (the
    sidecar is written last).

    Args:
      name: a key of `BUILTIN_TEACHERS`.
      cache_dir: see `cache_directory`.
      progress: print training progress.

    Returns:
      The `.keras` path.

    Raises:
      UserError: for an unknown name.
    """
    path = builtin_teacher_path(name, cache_dir)
    if _is_saved(path):
        return path

    def waiting(holder):
        _log(f"waiting for {holder or 'another process'}, which is training built-in teacher {name!r}")

    # Two runs started at once on an empty cache: the second waits and takes the first's teacher.
    with _training_lock(path, on_wait=waiting):
        if _is_saved(path):
            return path
        _log(f"training built-in teacher {name!r} on first use; it will be cached at {path}")
        train_builtin_teacher(name, path, progress=progress)
    return path


def _is_saved(teacher_path: str) -> bool:
    """Whether a teacher is saved there: its `.keras` file and its sidecar (written last)."""
    return os.path.isfile(teacher_path) and os.path.isfile(sidecar_path(teacher_path))
