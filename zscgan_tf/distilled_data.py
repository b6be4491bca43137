"""Calibration inputs without a generator: Gaussian noise, and ZeroQ-style distilled data.

Distilled data (ZeroQ, CVPR 2020) optimises the input pixels themselves, starting from
Gaussian noise, until each batch reproduces the BN statistics the teacher stored. It
uses the same BN-statistics loss as the generator (`losses.bn_statistics_loss`) but no
generator and, by default, no labels, so it is the data-free baseline ZS-CGAN is
measured against, and a calibration source in its own right (`tools/convert.py
--data_source=distilled`).

Samples live in the teacher's input space and are kept inside its input range after
every update.
"""

import dataclasses
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, losses, reproducibility
from zscgan_tf.errors import UserError
from zscgan_tf.progress import ProgressBar
from zscgan_tf.teachers import Teacher


@dataclasses.dataclass(frozen=True)
class DistilledDataConfig:
    """How distilled inputs are optimised.

    Attributes:
      steps: Adam updates of each batch (ZeroQ: 500).
      batch_size: samples optimised together; the BN statistics are matched per batch.
      learning_rate: Adam step size, as a fraction of the half-width of the input range.
      bn_distance: `kl` (as the generator, the default) or `mse`.
      label_loss_weight: weight of a cross-entropy towards class-balanced labels; 0 (the
        default, as ZeroQ) matches the BN statistics alone.
    """

    steps: int = 500
    batch_size: int = 64
    learning_rate: float = 0.1
    bn_distance: str = "kl"
    label_loss_weight: float = 0.0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise UserError(f"distilled data needs positive steps and batch size, got {self.steps} and "
                            f"{self.batch_size}")
        if self.learning_rate <= 0 or self.label_loss_weight < 0:
            raise UserError(f"distilled data needs a positive learning rate and a non-negative label loss weight, "
                            f"got {self.learning_rate} and {self.label_loss_weight}")
        if self.bn_distance not in losses.BN_DISTANCES:
            raise UserError(f"unknown BN distance {self.bn_distance!r}; expected one of {losses.BN_DISTANCES}")


def gaussian_noise_inputs(teacher: Teacher, count: int, seed: int) -> np.ndarray:
    """`count` N(0, 1) samples clipped to the teacher's input range (the no-data calibration)."""
    low, high = teacher.input_range()
    noise = np.random.default_rng(seed).standard_normal((count, *teacher.image_shape))
    return np.clip(noise, low, high).astype(np.float32)


class _BatchOptimizer:
    """Compiled Adam updates of one batch of inputs against the teacher's BN statistics."""

    def __init__(self, teacher: Teacher, config: DistilledDataConfig):
        self.config = config
        self.statistics_model = bn_stats.build_statistics_model(teacher.model)
        low, high = teacher.input_range()
        self.low = tf.constant(np.asarray(low, np.float32))
        self.high = tf.constant(np.asarray(high, np.float32))
        half_width = float(np.max((np.asarray(high) - np.asarray(low)) / 2.0))
        self.inputs = tf.Variable(tf.zeros([config.batch_size, *teacher.image_shape]), name="distilled_inputs")
        self.labels = tf.Variable(tf.zeros([config.batch_size], tf.int32), trainable=False, name="labels")
        self.optimizer = tf_keras.optimizers.Adam(config.learning_rate * half_width)
        # Its variables made now, not in the first step, which is then traced once rather than twice.
        self.optimizer.build([self.inputs])
        self._step = tf.function(self._step_eager)

    def batch_losses(self):
        outputs = self.statistics_model(self.inputs, training=False)
        bn_loss = losses.bn_statistics_loss(bn_stats.split_statistics(outputs[1:]), self.config.bn_distance)
        cross_entropy = losses.conditional_cross_entropy(self.labels, outputs[0])
        return bn_loss, cross_entropy

    def _step_eager(self):
        with reproducibility.unfused_batchnorm(self.statistics_model), tf.GradientTape() as tape:
            bn_loss, cross_entropy = self.batch_losses()
            total = bn_loss + self.config.label_loss_weight * cross_entropy
        gradient = tape.gradient(total, self.inputs)
        self.optimizer.apply_gradients([(gradient, self.inputs)])
        self.inputs.assign(tf.clip_by_value(self.inputs, self.low, self.high))
        return bn_loss

    def optimise(self, start: np.ndarray, labels: np.ndarray, progress: Optional[ProgressBar], steps_before: int):
        """Optimises `start` (batch_size samples); returns (samples, first BN loss, last BN loss)."""
        self.inputs.assign(start)
        self.labels.assign(labels)
        for variable in self.optimizer.variables():
            variable.assign(tf.zeros_like(variable))  # A fresh Adam state for each batch.
        first = last = None
        for step in range(1, self.config.steps + 1):
            last = float(self._step())
            if first is None:
                first = last
            if not math.isfinite(last):
                raise UserError(f"distilled data: the BN-statistics loss became {last} at step {step}; "
                                "lower the learning rate")
            if progress is not None:
                progress.update(steps_before + step, {"bn_statistics": last})
        return self.inputs.numpy(), first, last


@dataclasses.dataclass(frozen=True)
class DistilledData:
    """Distilled inputs and how far the BN loss fell while making them.

    Attributes:
      inputs: float32 (count, H, W, C) in the teacher's input space.
      initial_bn_loss: mean over batches of the BN loss at the first step.
      final_bn_loss: mean over batches of the BN loss at the last step.
    """

    inputs: np.ndarray
    initial_bn_loss: float
    final_bn_loss: float


def distill_inputs(teacher: Teacher, count: int, config: DistilledDataConfig = DistilledDataConfig(), seed: int = 0,
                   progress: bool = True) -> DistilledData:
    """`count` inputs optimised from clipped Gaussian noise to match the teacher's BN statistics.

    Batches of `config.batch_size` are optimised one after the other; the last one is cut
    to `count`. With `label_loss_weight` > 0 the batches carry class-balanced labels.

    Raises:
      UserError: if `count` is not positive, the teacher has no BN layer, or the loss diverges.
    """
    if count < 1:
        raise UserError(f"distilled data needs a positive sample count, got {count}")
    optimizer = _BatchOptimizer(teacher, config)
    batches = math.ceil(count / config.batch_size)
    start = gaussian_noise_inputs(teacher, batches * config.batch_size, seed)
    labels = np.arange(batches * config.batch_size, dtype=np.int32) % teacher.num_classes
    bar = ProgressBar(batches * config.steps, "distilled data", samples_per_step=config.batch_size) if progress else None
    samples, first_losses, last_losses = [], [], []
    for batch in range(batches):
        rows = slice(batch * config.batch_size, (batch + 1) * config.batch_size)
        batch_samples, first, last = optimizer.optimise(start[rows], labels[rows], bar, batch * config.steps)
        samples.append(batch_samples)
        first_losses.append(first)
        last_losses.append(last)
    if bar is not None:
        bar.close()
    return DistilledData(np.concatenate(samples)[:count].astype(np.float32), float(np.mean(first_losses)),
                         float(np.mean(last_losses)))
