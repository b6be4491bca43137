"""Stage 2: data-free knowledge distillation into the TF-MOT quantized student.

The student is the teacher's architecture with fake quantization (`quantize.py`),
initialised from the teacher's weights. Each step draws fresh samples from the frozen
generator; the loss is KL(softmax(teacher / T) || softmax(student / T)) * T^2 plus an
optional cross-entropy with the label the samples were generated for, plus (on by
default) a feature term: the student's output of every BatchNorm layer against the
teacher's (`feature_loss_weight`), which keeps teaching the student where its
predictions already agree with the teacher's on the synthetic samples. Optionally the
samples are shifted and mirrored at random (`shift_fraction`, `flip`). With a
`generator_trainer` (joint training, GDFQ), the generator it holds takes one zero-shot
update before each student update and the samples come from it.

The student's BatchNorm layers are frozen at the teacher's statistics (they run in
inference mode): synthetic batches are good enough to teach the student the teacher's
outputs, but the teacher's BN statistics are the better estimate of the real data.
Only the weights TF-MOT quantizes (conv, depthwise and dense kernels) are trained:
they are what rounding changes. Biases (int32 in TFLite, rounded finely), BN scales and
offsets and layers left float keep the teacher's values; training BN scales and offsets
and the biases as well was no better at W4A4 on MobileNetV2 (`docs/experiments.md`).
The weights a pruned teacher holds at zero stay zero (`pruning_masks`) and the weights
a clustered teacher ties stay tied (`weight_clusters`), so the int8 student keeps its
sparsity and its clusters.
Fake-quant ranges still adapt, since the student is called with `training=True`,
unless they are held (`hold_quantizer_ranges`, for the fitted ranges of schemes below
8 bits, see `range_fitting`): the student then runs in inference mode throughout,
which TF-MOT's quantizers take as "use the stored ranges".
"""

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
import tensorflow_model_optimization as tfmot

from zscgan_tf import bn_stats, losses, reproducibility, training_loop
from zscgan_tf.config import DistillationConfig

LOSS_TERMS = ("total", "distillation", "cross_entropy", "features")
PROGRESS_TERMS = ("total", "distillation", "features", "agreement")
# How likely `flip` mirrors each QAT sample.
FLIP_PROBABILITY = 0.5
# A quantized weight of which at least this share is exactly zero was pruned (training
# leaves no weight exactly zero): QAT keeps those zeros.
MIN_PRUNED_FRACTION = 0.1
# A quantized weight with at most this many distinct values other than zero, each shared
# by this many of its elements on average, was clustered (weight sharing; training leaves every value
# distinct): QAT keeps its elements tied.
MAX_WEIGHT_CLUSTERS = 256
MIN_ELEMENTS_PER_CLUSTER = 4


def _unwrapped(layer: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
    return layer.layer if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) else layer


def freeze_batchnorm(model: tf_keras.Model) -> int:
    """Puts every BatchNormalization layer (bare or inside a TF-MOT wrapper) in inference mode.

    Returns:
      How many BN layers were frozen.
    """
    frozen = 0
    for layer in model.layers:
        if isinstance(_unwrapped(layer), tf_keras.layers.BatchNormalization):
            # tf_keras BN runs in inference mode when not trainable. A TF-MOT wrapper does not
            # pass its own flag on to the layer it wraps, so both are set.
            layer.trainable = False
            _unwrapped(layer).trainable = False
            frozen += 1
    return frozen


def quantized_weights(student: tf_keras.Model) -> List[tf.Variable]:
    """The float weights behind the student's weight quantizers, in layer order: what QAT trains.

    TF-MOT's wrappers list these as trainable whatever the layers' `trainable` flags say;
    naming them here keeps the trained set the same for a student cloned from a frozen
    teacher (as `teachers.load_teacher` returns) and from a trainable one.
    """
    weights = []
    for layer in student.layers:
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            # `_weight_vars` holds (weight, quantizer, range variables).
            weights.extend(weight for weight, _, _ in layer._weight_vars)  # pylint: disable=protected-access
    return weights


def pruning_masks(weights: List[tf.Variable]) -> List[Tuple[tf.Variable, tf.Tensor]]:
    """(weight, 1.0 where it is not zero) for each of `weights` that was pruned: at least
    `MIN_PRUNED_FRACTION` of it exactly zero, which training alone leaves no weight."""
    masks = []
    for weight in weights:
        kept = tf.cast(tf.not_equal(weight, 0), weight.dtype)
        if 1 - float(tf.reduce_mean(kept)) >= MIN_PRUNED_FRACTION:
            masks.append((weight, kept))
    return masks


def weight_clusters(weights: List[tf.Variable]) -> List[Tuple[tf.Variable, tf.Tensor, int]]:
    """(weight, each element's cluster index, the number of clusters) for each of `weights`
    that was clustered: at most `MAX_WEIGHT_CLUSTERS` distinct values other than zero, each
    shared by `MIN_ELEMENTS_PER_CLUSTER` elements on average. Elements of equal value are a
    cluster. Zeros do not count, so that a pruned weight whose other values are all
    different is not taken for a clustered one (`pruning_masks` keeps its zeros)."""
    clusters = []
    for weight in weights:
        values, index = tf.unique(tf.reshape(weight, [-1]))
        count = int(tf.size(values))
        nonzero_values = int(tf.math.count_nonzero(values))
        if (0 < nonzero_values <= MAX_WEIGHT_CLUSTERS
                and int(tf.math.count_nonzero(weight)) >= MIN_ELEMENTS_PER_CLUSTER * nonzero_values):
            clusters.append((weight, index, count))
    return clusters


def feature_tap_models(teacher: tf_keras.Model, student: tf_keras.Model
                       ) -> Tuple[tf_keras.Model, tf_keras.Model, List[str]]:
    """Models that return [logits, the output of each BatchNorm layer] of the teacher and the student.

    The student's layers are paired with the teacher's by name (TF-MOT wrappers keep the
    wrapped layer's name). The two models share their layers with `teacher` and `student`.

    Returns:
      (teacher taps, student taps, the tapped layer names in order).

    Raises:
      ValueError: if the teacher has no BatchNorm layer or the student lacks one of them.
    """
    names = [layer.name for layer in bn_stats.batchnorm_layers(teacher)]
    if not names:
        raise ValueError("feature distillation taps the teacher's BatchNormalization layers and it has none")
    student_layers = {_unwrapped(layer).name: layer for layer in student.layers}
    missing = [name for name in names if name not in student_layers]
    if missing:
        raise ValueError(f"the student has no layer {missing[0]!r} of the teacher ({len(missing)} missing); "
                         "feature distillation needs the student built from the teacher")
    teacher_taps = tf_keras.Model(teacher.inputs, [teacher.output] + [teacher.get_layer(name).output for name in names])
    student_taps = tf_keras.Model(student.inputs, [student.output]
                                  + [_output_in(student, student_layers[name]) for name in names])
    return teacher_taps, student_taps, names


def _output_in(model: tf_keras.Model, layer: tf_keras.layers.Layer):
    """`layer`'s output in `model`'s graph. TF-MOT's `quantize_apply` puts the layers it leaves
    float (a BN that follows no conv, a Lambda) into the student as they are, so they also keep
    a call in the model it transformed, and `layer.output` may name that one."""
    own_nodes = model._network_nodes  # pylint: disable=protected-access
    for index in range(len(layer.inbound_nodes)):
        if f"{layer.name}_ib-{index}" in own_nodes:
            return layer.get_output_at(index)
    raise ValueError(f"layer {layer.name!r} is not called in {model.name!r}")


class Distiller:
    """Trains a TF-MOT student to reproduce the teacher on generator samples.

    Args:
      teacher: the frozen float teacher model (logits output).
      student: the TF-MOT model built from it (`quantize.quantize_student`).
      generator: the trained conditional generator; frozen. None when `real_data` is given.
      num_classes: the teacher's classes.
      config: the distillation settings.
      seed: seeds the noise and label stream.
      real_data: (teacher-space images, labels) to distill on instead of generated
        samples: the data-dependent QAT reference of benchmarks.
      generator_trainer: a `zero_shot.GeneratorTrainer` whose generator is trained on
        along with the student (joint training) and sampled from; give it a copy of the
        trained generator (`zero_shot.copy_generator`). Its state is checkpointed with the
        student's.
      hold_quantizer_ranges: keep every weight and activation range of the student as it
        is (`QuantizationScheme.holds_ranges_in_training`); otherwise TF-MOT recomputes
        weight ranges and moves activation ranges towards each batch's extremes.
    """

    def __init__(self, teacher: tf_keras.Model, student: tf_keras.Model, generator: Optional[tf_keras.Model],
                 num_classes: int, config: DistillationConfig, seed: int = 0,
                 real_data: Optional[Tuple[np.ndarray, np.ndarray]] = None, generator_trainer=None,
                 hold_quantizer_ranges: bool = False):
        if tuple(teacher.output.shape[1:]) != tuple(student.output.shape[1:]):
            raise ValueError(f"student outputs {student.output.shape} but the teacher {teacher.output.shape}")
        if generator_trainer is not None:
            generator = generator_trainer.generator
        if (generator is None) == (real_data is None):
            raise ValueError("give exactly one sample source: a generator (or generator_trainer) or real_data")
        self.teacher = teacher
        self.student = student
        self.generator = generator
        self.generator_trainer = generator_trainer
        self.num_classes = num_classes
        self.config = config
        # TF-MOT's quantizers update their ranges only in training mode.
        self.student_training_mode = not hold_quantizer_ranges
        if generator is not None:
            self.noise_dim = int(generator.inputs[0].shape[-1])
        else:
            real_images, real_labels = real_data
            if len(real_images) != len(real_labels) or not len(real_images):
                raise ValueError(f"real_data needs as many labels as images, got {len(real_images)} images and "
                                 f"{len(real_labels)} labels")
            self.real_images = tf.constant(np.asarray(real_images, np.float32))
            self.real_labels = tf.constant(np.asarray(real_labels, np.int32))
        freeze_batchnorm(student)
        self.trained_weights = quantized_weights(student)
        if not self.trained_weights:
            raise ValueError(f"the student {student.name!r} has no quantized weights to train")
        # A clustered teacher's tied weights stay tied (each cluster moves by its members'
        # mean update) and a pruned teacher's zeros stay zero, so the student's int8 file is
        # as clustered and as sparse.
        self.weight_clusters = weight_clusters(self.trained_weights)
        self.pruning_masks = pruning_masks(self.trained_weights)
        # With the feature term, models that also return every BatchNorm layer's output.
        self.teacher_taps, self.student_taps = (feature_tap_models(teacher, student)[:2]
                                                if config.feature_loss_weight else (None, None))
        schedule = tf_keras.optimizers.schedules.CosineDecay(config.learning_rate, config.steps)
        self.optimizer = tf_keras.optimizers.Adam(schedule)
        # Its variables made now, not in the first step, which is then traced once rather than twice.
        self.optimizer.build(self.trained_weights)
        self.random = tf.random.Generator.from_seed(seed)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        trained_generator = {} if generator_trainer is None else {
            "generator": generator_trainer.generator, "generator_optimizer": generator_trainer.optimizer,
            "generator_random": generator_trainer.random, "generator_step": generator_trainer.step}
        self.checkpoint = tf.train.Checkpoint(student=student, optimizer=self.optimizer, random=self.random,
                                              step=self.step, **trained_generator)
        self._train_step = tf.function(self._train_step_eager)

    def sample_batch(self):
        """A batch of (teacher-space images, labels) from the generator or the real data."""
        if self.generator is None:
            index = self.random.uniform([self.config.batch_size], 0, tf.shape(self.real_labels)[0], dtype=tf.int32)
            return tf.gather(self.real_images, index), tf.gather(self.real_labels, index)
        noise = self.random.normal([self.config.batch_size, self.noise_dim])
        labels = self.random.uniform([self.config.batch_size], 0, self.num_classes, dtype=tf.int32)
        return self.generator([noise, labels], training=False), labels

    def mix_batch(self, images):
        """Replaces the first `mixed_fraction` of the batch by convex mixtures of two samples.

        Returns:
          (images, mask): the new batch and 1.0 where a sample is unmixed (has a label).
        """
        batch_size = self.config.batch_size
        mixed_count = int(round(self.config.mixed_fraction * batch_size))
        if mixed_count == 0:
            return images, tf.ones([batch_size])
        partners = tf.gather(images, self.random.uniform([mixed_count], 0, batch_size, dtype=tf.int32))
        weights = self.random.uniform([mixed_count, 1, 1, 1])
        mixed = weights * images[:mixed_count] + (1.0 - weights) * partners
        mask = tf.concat([tf.zeros([mixed_count]), tf.ones([batch_size - mixed_count])], axis=0)
        return tf.concat([mixed, images[mixed_count:]], axis=0), mask

    def augment_batch(self, images):
        """Moves each sample by a random whole number of pixels and mirrors each with probability
        `FLIP_PROBABILITY` (half the batch on average).

        Shifts go up to `shift_fraction` of the height and width (at least one pixel), with
        the edge pixels repeated into the uncovered border; flips only when `flip` is on.
        Either off leaves the batch as it is.
        """
        batch_size = tf.shape(images)[0]
        if self.config.flip:
            mirrored = self.random.uniform([batch_size, 1, 1, 1]) < FLIP_PROBABILITY
            images = tf.where(mirrored, tf.reverse(images, axis=[2]), images)
        if self.config.shift_fraction:
            height, width = int(images.shape[1]), int(images.shape[2])
            # Whole pixels, and at least one, so that a small fraction of a small image still moves it.
            largest = tf.maximum(tf.floor(tf.constant([[width, height]], tf.float32) * self.config.shift_fraction),
                                 1.0)
            shifts = tf.round((self.random.uniform([batch_size, 2]) * 2.0 - 1.0) * largest)
            # Output pixel (x, y) reads input pixel (x + dx, y + dy).
            transforms = tf.concat([tf.ones([batch_size, 1]), tf.zeros([batch_size, 1]), shifts[:, :1],
                                    tf.zeros([batch_size, 1]), tf.ones([batch_size, 1]), shifts[:, 1:],
                                    tf.zeros([batch_size, 2])], axis=1)
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images, transforms=transforms, output_shape=tf.constant([height, width]),
                fill_value=0.0, interpolation="NEAREST", fill_mode="NEAREST")
        return images

    def _train_step_eager(self):
        if self.generator_trainer is not None:
            self.generator_trainer.update_step()
        images, labels = self.sample_batch()
        images, labelled = self.mix_batch(self.augment_batch(images))
        if self.teacher_taps is None:
            teacher_logits = self.teacher(images, training=False)
        else:
            teacher_logits, *teacher_features = self.teacher_taps(images, training=False)
        variables = self.trained_weights
        with reproducibility.unfused_batchnorm(self.student), tf.GradientTape() as tape:
            if self.student_taps is None:
                student_logits = self.student(images, training=self.student_training_mode)
                features = tf.constant(0.0)
            else:
                student_logits, *student_features = self.student_taps(images, training=self.student_training_mode)
                features = losses.feature_distillation_loss(teacher_features, student_features)
            distillation = losses.distillation_loss(teacher_logits, student_logits, self.config.temperature)
            cross_entropy = losses.conditional_cross_entropy(labels, student_logits, labelled)
            total = (distillation + self.config.label_loss_weight * cross_entropy
                     + self.config.feature_loss_weight * features)
        gradients = tape.gradient(total, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        for weight, index, count in self.weight_clusters:
            flat = tf.reshape(weight, [-1])
            weight.assign(tf.reshape(tf.gather(tf.math.unsorted_segment_mean(flat, index, count), index), weight.shape))
        for weight, kept in self.pruning_masks:
            weight.assign(weight * kept)
        self.step.assign_add(1)
        agreement = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(student_logits, -1), tf.argmax(teacher_logits, -1)),
                                           tf.float32))
        return {"total": total, "distillation": distillation, "cross_entropy": cross_entropy,
                "features": features, "agreement": agreement}

    def train_step(self) -> Dict[str, float]:
        """One compiled student update; returns its loss terms as floats."""
        return {name: float(value) for name, value in self._train_step().items()}

    def train(self, work_dir: str, progress: bool = True, log_dir: Optional[str] = None,
              after_restore: Optional[Callable[[], None]] = None) -> training_loop.TrainingSummary:
        """Distills up to `config.steps`, resuming from `work_dir`'s checkpoint if any (then
        `after_restore()`, before the first step: `training_loop.run`)."""
        schedule = training_loop.LoopSchedule(steps=self.config.steps, checkpoint_every=self.config.checkpoint_every,
                                              log_every=self.config.log_every,
                                              samples_per_step=self.config.batch_size)
        return training_loop.run(lambda: self.train_step(), self.step, self.checkpoint, work_dir, schedule,
                                 name="distillation", checked_terms=LOSS_TERMS, progress_terms=PROGRESS_TERMS,
                                 log_dir=log_dir, progress=progress, after_restore=after_restore,
                                 checked_weights=self.student.weights)
