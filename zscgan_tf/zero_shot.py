"""Stage 1: zero-shot training of the conditional generator against the frozen teacher.

`GeneratorTrainer` owns the generator, the teacher's BN statistics model, the Adam
optimizer, a seeded random generator and a step counter, all in one `tf.train.Checkpoint`,
so an interrupted run resumes at its last checkpoint with the same random stream.
Only the generator's variables are ever updated; the teacher is called with
`training=False`.
"""

import dataclasses
import math
from typing import Dict, Iterator, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, losses, reproducibility, training_loop
from zscgan_tf.config import GeneratorTrainingConfig, LossConfig
from zscgan_tf.errors import UserError
from zscgan_tf.files import write_bytes_atomic
from zscgan_tf.preprocessing import PIXEL_MAX
from zscgan_tf.progress import ProgressBar
from zscgan_tf.teachers import Teacher

# A generation this long (seconds) shows a progress bar from then on.
SLOW_GENERATION_SECONDS = 10.0

LOSS_TERMS = ("total", "cross_entropy", "bn_statistics", "diversity", "mode_seeking")
PROGRESS_TERMS = ("total", "cross_entropy", "bn_statistics", "accuracy")
MIN_GRID_TILE_PIXELS = 32
# Samples in the grid of generated samples, made again for TensorBoard every --image_every steps:
# 100,000 columns held the first steps for minutes unsaid.
MAX_GRID_SAMPLES = 1000
# Samples generated before each checkpoint to check they are finite (`GeneratorTrainer.train`).
FINITE_CHECK_SAMPLES = 16
# Samples per inference pass of a generator: at most 256, and fewer for images larger than 64x64,
# so that a pass holds a few GB of full-resolution feature maps (224x224: 20 samples), not tens.
MAX_GENERATION_BATCH_SIZE = 256
GENERATION_PIXELS_PER_BATCH = MAX_GENERATION_BATCH_SIZE * 64 * 64


class GeneratorTrainer:
    """Trains a conditional generator so the frozen teacher sees its training data in it.

    Args:
      teacher: the frozen teacher.
      generator: a model from `generator.build_generator` for this teacher.
      loss_config: loss weights and BN distance.
      training_config: optimizer and schedule settings.
      seed: seeds the noise and label stream.
    """

    def __init__(self, teacher: Teacher, generator: tf_keras.Model, loss_config: LossConfig,
                 training_config: GeneratorTrainingConfig, seed: int = 0):
        if tuple(generator.output.shape[1:]) != tuple(teacher.image_shape):
            raise ValueError(f"generator makes {tuple(generator.output.shape[1:])} images but the teacher "
                             f"reads {teacher.image_shape}")
        self.teacher = teacher
        self.generator = generator
        self.loss_config = loss_config
        self.training_config = training_config
        self.noise_dim = int(generator.inputs[0].shape[-1])
        self.statistics_model = bn_stats.build_statistics_model(teacher.model)
        self.bn_layer_weights = bn_stats.bn_layer_weights(teacher.model, loss_config.bn_layer_weighting,
                                                          training_config.batch_size, teacher.image_shape)
        self.optimizer = tf_keras.optimizers.Adam(training_config.learning_rate, beta_1=training_config.beta_1,
                                                  beta_2=training_config.beta_2)
        # Its variables made now, not in the first update, which is then traced once rather than twice.
        self.optimizer.build(generator.trainable_variables)
        self.random = tf.random.Generator.from_seed(seed)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(generator=generator, optimizer=self.optimizer, random=self.random,
                                              step=self.step)
        self._train_step = tf.function(self.update_step)

    def sample_inputs(self, batch_size: int):
        """Gaussian noise and uniform labels from the trainer's seeded stream.

        With the mode-seeking term on, the second half of the labels repeats the first
        (an odd last sample keeps its own), so each label comes with two noises.
        """
        noise = self.random.normal([batch_size, self.noise_dim])
        labels = self.random.uniform([batch_size], 0, self.teacher.num_classes, dtype=tf.int32)
        if self.loss_config.mode_seeking > 0:
            half = batch_size // 2
            labels = tf.concat([labels[:half], labels[:half], labels[2 * half:]], axis=0)
        return noise, labels

    def compute_losses(self, noise, labels, training: bool = True) -> Dict[str, tf.Tensor]:
        """All loss terms and the teacher's accuracy on one batch generated from (noise, labels)."""
        images = self.generator([noise, labels], training=training)
        outputs = self.statistics_model(images, training=False)
        logits, taps = outputs[0], outputs[1:]
        cross_entropy = losses.conditional_cross_entropy(labels, logits)
        bn_statistics = losses.bn_statistics_loss(bn_stats.split_statistics(taps), self.loss_config.bn_distance,
                                                  layer_weights=self.bn_layer_weights)
        diversity = losses.diversity_loss(logits) if self.loss_config.diversity > 0 else tf.constant(0.0)
        mode_seeking = tf.constant(0.0)
        if self.loss_config.mode_seeking > 0:
            half = int(noise.shape[0]) // 2
            mode_seeking = losses.mode_seeking_loss(images[:half], images[half:2 * half], noise[:half],
                                                    noise[half:2 * half])
        total = (self.loss_config.cross_entropy * cross_entropy + self.loss_config.bn_statistics * bn_statistics
                 + self.loss_config.diversity * diversity + self.loss_config.mode_seeking * mode_seeking)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
        return {"total": total, "cross_entropy": cross_entropy, "bn_statistics": bn_statistics,
                "diversity": diversity, "mode_seeking": mode_seeking, "accuracy": accuracy}

    def update_step(self) -> Dict[str, tf.Tensor]:
        """One generator update as TensorFlow ops: compiled by `train_step`, run op by op by
        `eager_train_step`, and traced into the student's step by joint distillation."""
        noise, labels = self.sample_inputs(self.training_config.batch_size)
        variables = self.generator.trainable_variables
        with reproducibility.unfused_batchnorm(self.statistics_model), tf.GradientTape() as tape:
            values = self.compute_losses(noise, labels, training=True)
        gradients = tape.gradient(values["total"], variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.step.assign_add(1)
        return values

    def train_step(self) -> Dict[str, float]:
        """One compiled generator update; returns its loss terms as floats."""
        return {name: float(value) for name, value in self._train_step().items()}

    def eager_train_step(self) -> Dict[str, float]:
        """The same update run eagerly, op by op: the plain implementation speed is measured against."""
        return {name: float(value) for name, value in self.update_step().items()}

    def train(self, work_dir: str, progress: bool = True, log_dir: Optional[str] = None,
              sample_grid_fn=None) -> training_loop.TrainingSummary:
        """Trains up to `training_config.steps`, resuming from `work_dir`'s checkpoint if any.

        Args:
          work_dir: holds `checkpoints/` and the loss history.
          progress: show a progress line.
          log_dir: optional directory of TensorBoard's scalars and images.
          sample_grid_fn: optional `callable()` -> uint8 grid image (H, W, C) for TensorBoard.

        Raises:
          NonFiniteLossError: if a loss term becomes NaN or Inf (last good checkpoint kept).
          TrainingInterrupted: on Ctrl-C, SIGTERM, SIGHUP or a closed output, after saving a checkpoint.
          LostWritesError: if the events file in `log_dir` lost records (`training_loop.run`).
          UserError: if no checkpoint there can be read, or its state file names checkpoints
            outside the directory (`training_loop.run`).
        """
        config = self.training_config
        schedule = training_loop.LoopSchedule(steps=config.steps, checkpoint_every=config.checkpoint_every,
                                              log_every=config.log_every, image_every=config.image_every,
                                              samples_per_step=config.batch_size)
        return training_loop.run(lambda: self.train_step(), self.step, self.checkpoint, work_dir, schedule,
                                 name="generator", checked_terms=LOSS_TERMS, progress_terms=PROGRESS_TERMS,
                                 log_dir=log_dir, image_fn=sample_grid_fn, progress=progress,
                                 checked_weights=self.generator.weights, checked_outputs=self._samples_to_check)

    def _samples_to_check(self) -> tf.Tensor:
        """A batch of samples, one of each of the first classes, in inference mode: finite weights
        too large for float32's products make samples of infinities and NaNs."""
        labels = tf.range(min(self.teacher.num_classes, FINITE_CHECK_SAMPLES), dtype=tf.int32)
        noise = tf.random.stateless_normal([int(labels.shape[0]), self.noise_dim], seed=[0, 0])
        return self.generator([noise, labels], training=False)


def copy_generator(generator: tf_keras.Model) -> tf_keras.Model:
    """A new generator with the same architecture and weights (for joint training during QAT)."""
    copy = tf_keras.models.clone_model(generator)
    copy.set_weights(generator.get_weights())
    return copy


def generation_batch_size(image_shape) -> int:
    """Samples per inference pass of a generator of (H, W, C) `image_shape`; see `GENERATION_PIXELS_PER_BATCH`."""
    return max(1, min(MAX_GENERATION_BATCH_SIZE, GENERATION_PIXELS_PER_BATCH // (image_shape[0] * image_shape[1])))


def _generated_batches(generator, labels: np.ndarray, noise_dim: int, seed: int) -> Iterator[np.ndarray]:
    """The samples for `labels`, in their order, one inference pass at a time."""
    random = tf.random.Generator.from_seed(seed)
    batch_size = generation_batch_size(generator.output.shape[1:])
    for start in range(0, len(labels), MAX_GENERATION_BATCH_SIZE):
        # Noise is drawn MAX_GENERATION_BATCH_SIZE samples at a time whatever the pass size, so the samples do not
        # depend on it.
        chunk_labels = labels[start:start + MAX_GENERATION_BATCH_SIZE]
        noise = random.normal([len(chunk_labels), noise_dim])
        for offset in range(0, len(chunk_labels), batch_size):
            yield generator([noise[offset:offset + batch_size], tf.constant(chunk_labels[offset:offset + batch_size])],
                            training=False).numpy()


def _generate_in_batches(generator, labels: np.ndarray, noise_dim: int, seed: int,
                         progress_description: str = "") -> np.ndarray:
    """`_generated_batches` joined; with `progress_description`, a progress bar once the generation
    has taken `SLOW_GENERATION_SECONDS` (minutes for thousands of samples at 224x224 on a CPU,
    which said nothing), none for the usual second or two."""
    batches = []
    bar = ProgressBar(len(labels), progress_description, quiet_seconds=SLOW_GENERATION_SECONDS) \
        if progress_description else None
    for batch in _generated_batches(generator, labels, noise_dim, seed):
        batches.append(batch)
        if bar:
            bar.update(sum(len(done) for done in batches), {})
    if bar:
        bar.close()
    return np.concatenate(batches)


def generate(generator, num_classes: int, samples_per_class: int, noise_dim: int, seed: int,
             progress_description: str = ""):
    """Class-balanced samples: `samples_per_class` of each class, in class order (with a progress
    bar under `progress_description` if it takes long: `_generate_in_batches`).

    Returns:
      (images float32 (N, H, W, C) in teacher input space, labels int32 (N,)).
    """
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), samples_per_class)
    return generate_for_labels(generator, labels, noise_dim, seed, progress_description), labels


def generate_for_labels(generator, labels: np.ndarray, noise_dim: int, seed: int,
                        progress_description: str = "") -> np.ndarray:
    """One sample of each of `labels` (int32 class indices), in their order, float32 in teacher input
    space (with a progress bar under `progress_description` if it takes long)."""
    return _generate_in_batches(generator, np.asarray(labels, np.int32), noise_dim, seed, progress_description)


@dataclasses.dataclass(frozen=True)
class GeneratorEvaluation:
    """How the teacher classifies generated samples.

    Attributes:
      per_class_accuracy: fraction of each class's samples the teacher labels as that class.
      mean_confidence: mean teacher probability of the requested class.
      samples_per_class: samples judged per class.
      within_class_spread: standard deviation over the samples of a class, averaged over
        pixels and classes, in teacher input units; near 0 when the generator gives one
        image per class whatever the noise (mode collapse).
    """

    per_class_accuracy: List[float]
    mean_confidence: float
    samples_per_class: int
    within_class_spread: float

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.per_class_accuracy))

    @property
    def worst_class_accuracy(self) -> float:
        return float(np.min(self.per_class_accuracy))


def evaluate_generator(generator, teacher: Teacher, samples_per_class: int, seed: int,
                       progress: bool = False) -> GeneratorEvaluation:
    """Classifies class-balanced generated samples with the teacher (both in inference mode).

    The samples are judged one inference pass at a time and a class's are kept only until
    its spread is measured: ImageNet's 1,000 classes at 100 samples each would be 60 GB.
    With `progress`, a progress line (ImageNet's 1,000 classes at 10 samples each through
    ResNet50 take minutes on a few CPU cores).
    """
    noise_dim = int(generator.inputs[0].shape[-1])
    labels = np.repeat(np.arange(teacher.num_classes, dtype=np.int32), samples_per_class)
    correct, confidences, spreads, open_class = [], [], [], []
    start = 0
    bar = ProgressBar(len(labels), "generated samples judged by the teacher") if progress else None
    for images in _generated_batches(generator, labels, noise_dim, seed):
        batch_labels = labels[start:start + len(images)]
        start += len(images)
        logits = teacher.model.predict(images, batch_size=len(images), verbose=0)
        correct.append(np.argmax(logits, axis=-1) == batch_labels)
        confidences.append(tf.nn.softmax(logits).numpy()[np.arange(len(images)), batch_labels])
        for label in np.unique(batch_labels):  # Samples come in class order.
            open_class.append(images[batch_labels == label])
            if sum(len(part) for part in open_class) == samples_per_class:
                spreads.append(np.std(np.concatenate(open_class), axis=0).mean())
                open_class = []
        if bar:
            bar.update(start, {})
    if bar:
        bar.close()
    correct = np.concatenate(correct)
    per_class = [float(np.mean(correct[labels == label])) for label in range(teacher.num_classes)]
    confidence = float(np.mean(np.concatenate(confidences)))
    return GeneratorEvaluation(per_class, confidence, samples_per_class, float(np.mean(spreads)))


def check_grid_size(samples_per_class: int, max_classes: int, teacher: Teacher) -> None:
    """Refuses a sample grid of more than `MAX_GRID_SAMPLES` samples (`samples_per_class` columns,
    a row for each of the teacher's classes up to `max_classes`)."""
    rows = min(teacher.num_classes, max_classes)
    if samples_per_class * rows > MAX_GRID_SAMPLES:
        raise UserError(f"the sample grid holds at most {MAX_GRID_SAMPLES:,} samples, got {samples_per_class:,} "
                        f"columns (--grid_samples_per_class) x {rows:,} rows (the teacher's classes, at most "
                        "--grid_max_classes)")


def sample_grid(generator, teacher: Teacher, samples_per_class: int, max_classes: int, seed: int) -> np.ndarray:
    """A uint8 image grid of generated samples in pixel space: one row per class."""
    noise_dim = int(generator.inputs[0].shape[-1])
    classes = min(teacher.num_classes, max_classes)
    labels = np.repeat(np.arange(classes, dtype=np.int32), samples_per_class)
    images = _generate_in_batches(generator, labels, noise_dim, seed)
    # A diverging generator's NaN samples show black, without numpy's warning of a cast of NaN.
    pixels = np.clip(np.nan_to_num(np.round(teacher.preprocessing.invert(images))), 0, PIXEL_MAX).astype(np.uint8)
    height, width, channels = pixels.shape[1:]
    zoom = max(1, math.ceil(MIN_GRID_TILE_PIXELS / max(height, width)))
    pixels = pixels.repeat(zoom, axis=1).repeat(zoom, axis=2)
    tile_height, tile_width = height * zoom, width * zoom
    grid = pixels.reshape(classes, samples_per_class, tile_height, tile_width, channels)
    return grid.transpose(0, 2, 1, 3, 4).reshape(classes * tile_height, samples_per_class * tile_width, channels)


def write_png(path: str, image: np.ndarray) -> str:
    """Writes a uint8 (H, W, C) image as PNG atomically."""
    return write_bytes_atomic(path, tf.io.encode_png(image).numpy())


def check_teacher_unchanged(teacher: Teacher, reference_weights: List[np.ndarray], stage: str):
    """Raises if any teacher variable changed during `stage` (named in the error): the
    teacher must stay frozen."""
    for before, after in zip(reference_weights, teacher.model.get_weights()):
        if not np.array_equal(before, after):
            raise RuntimeError(f"the teacher's weights changed during {stage}")
