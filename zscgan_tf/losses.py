"""Pure loss functions of the zero-shot generator and of data-free distillation.

Every function takes tensors and returns a scalar tensor; every constant is an
argument with a documented default.
"""

from typing import Optional, Sequence

import tensorflow as tf

from zscgan_tf.bn_stats import LayerStatistics

# A floor under both variances, Keras' BatchNormalization default epsilon. A teacher built
# with a smaller one (1e-5, as the built-in digits teacher and many PyTorch ports) had
# channels of smaller variance; the floor damps their term (a channel of variance 1e-5
# matched by 1e-3 scores 0.15 rather than 47), on purpose: near-dead channels would rule the loss.
DEFAULT_VARIANCE_EPSILON = 1e-3
# Floor under probabilities before taking logs in entropy terms.
DEFAULT_PROBABILITY_EPSILON = 1e-8
BN_DISTANCES = ("kl", "mse")
# MSGAN's floor under the distance ratio of the mode-seeking term.
DEFAULT_MODE_SEEKING_EPSILON = 1e-5
# Floor under a teacher feature map's energy in the feature term (a map of zeros).
DEFAULT_FEATURE_ENERGY_EPSILON = 1e-8


def conditional_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, sample_weights=None) -> tf.Tensor:
    """Mean cross-entropy between the labels a batch was generated for and the logits.

    Args:
      labels: int class ids, shape (batch,).
      logits: shape (batch, classes).
      sample_weights: optional (batch,) weights (0 drops a sample); the mean is over
        the weighted samples.
    """
    labels = tf.cast(labels, tf.int32)
    per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if sample_weights is None:
        return tf.reduce_mean(per_sample)
    sample_weights = tf.cast(sample_weights, per_sample.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_sample * sample_weights), tf.reduce_sum(sample_weights))


def gaussian_kl_divergence(batch_mean, batch_variance, moving_mean, moving_variance,
                           variance_epsilon: float = DEFAULT_VARIANCE_EPSILON) -> tf.Tensor:
    """KL(N(batch_mean, batch_variance) || N(moving_mean, moving_variance)), summed over channels.

    KL = log(sigma / sigma_hat) + (sigma_hat^2 + (mu_hat - mu)^2) / (2 sigma^2) - 1/2,
    with `variance_epsilon` added to both variances so that dead channels stay finite.
    It is zero exactly when the two Gaussians agree.
    """
    batch_variance = batch_variance + variance_epsilon
    moving_variance = moving_variance + variance_epsilon
    per_channel = (0.5 * tf.math.log(moving_variance / batch_variance)
                   + (batch_variance + tf.square(batch_mean - moving_mean)) / (2.0 * moving_variance) - 0.5)
    return tf.reduce_sum(per_channel)


def moment_mean_squared_error(batch_mean, batch_variance, moving_mean, moving_variance) -> tf.Tensor:
    """GDFQ's distance: mean squared error of the means plus that of the variances."""
    return (tf.reduce_mean(tf.square(batch_mean - moving_mean))
            + tf.reduce_mean(tf.square(batch_variance - moving_variance)))


def bn_statistics_loss(statistics: Sequence[LayerStatistics], distance: str = "kl",
                       variance_epsilon: float = DEFAULT_VARIANCE_EPSILON,
                       layer_weights: Optional[Sequence[float]] = None) -> tf.Tensor:
    """Distance between batch and stored BN statistics, averaged over BN layers.

    Args:
      statistics: one `LayerStatistics` per BN layer.
      distance: `kl` (Gaussian KL, summed over channels; the default) or `mse` (GDFQ).
      variance_epsilon: added to variances in the KL distance.
      layer_weights: optional weight of each layer's distance (the mean is then of the
        weighted distances); None weights every layer 1.

    Raises:
      ValueError: for an unknown distance, no statistics, or a weight per layer missing.
    """
    if distance not in BN_DISTANCES:
        raise ValueError(f"unknown BN distance {distance!r}; expected one of {BN_DISTANCES}")
    if not statistics:
        raise ValueError("bn_statistics_loss needs statistics of at least one BN layer")
    if distance == "kl":
        per_layer = [gaussian_kl_divergence(s.batch_mean, s.batch_variance, s.moving_mean, s.moving_variance,
                                            variance_epsilon) for s in statistics]
    else:
        per_layer = [moment_mean_squared_error(s.batch_mean, s.batch_variance, s.moving_mean, s.moving_variance)
                     for s in statistics]
    if layer_weights is not None:
        if len(layer_weights) != len(per_layer):
            raise ValueError(f"{len(layer_weights)} layer weights for {len(per_layer)} BN layers")
        per_layer = [float(weight) * distance_value for weight, distance_value in zip(layer_weights, per_layer)]
    return tf.add_n(per_layer) / float(len(per_layer))


def sample_entropy(logits: tf.Tensor, epsilon: float = DEFAULT_PROBABILITY_EPSILON) -> tf.Tensor:
    """Mean entropy of each sample's predicted distribution (minimise: confident samples)."""
    probabilities = tf.nn.softmax(logits)
    return tf.reduce_mean(-tf.reduce_sum(probabilities * tf.math.log(probabilities + epsilon), axis=-1))


def batch_entropy(logits: tf.Tensor, epsilon: float = DEFAULT_PROBABILITY_EPSILON) -> tf.Tensor:
    """Entropy of the batch-averaged predicted distribution (maximise: all classes used)."""
    mean_probabilities = tf.reduce_mean(tf.nn.softmax(logits), axis=0)
    return -tf.reduce_sum(mean_probabilities * tf.math.log(mean_probabilities + epsilon))


def diversity_loss(logits: tf.Tensor, epsilon: float = DEFAULT_PROBABILITY_EPSILON) -> tf.Tensor:
    """Sample entropy minus batch entropy: low when each sample is confident and classes vary."""
    return sample_entropy(logits, epsilon) - batch_entropy(logits, epsilon)


def mode_seeking_loss(images_a: tf.Tensor, images_b: tf.Tensor, noise_a: tf.Tensor, noise_b: tf.Tensor,
                      epsilon: float = DEFAULT_MODE_SEEKING_EPSILON) -> tf.Tensor:
    """MSGAN's mode-seeking term (CVPR 2019): 1 / (image distance / noise distance + epsilon).

    `images_a[i]` and `images_b[i]` are generated for the same label from the noises
    `noise_a[i]` and `noise_b[i]`; distances are mean absolute differences. Minimising it
    pushes samples of one class apart as their noises differ, against mode collapse.
    """
    image_distance = tf.reduce_mean(tf.abs(images_a - images_b))
    noise_distance = tf.reduce_mean(tf.abs(noise_a - noise_b))
    return 1.0 / (image_distance / noise_distance + epsilon)


def distillation_loss(teacher_logits: tf.Tensor, student_logits: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over the batch.

    Raises:
      ValueError: if `temperature` is not positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    teacher_log_probabilities = tf.nn.log_softmax(teacher_logits / temperature)
    student_log_probabilities = tf.nn.log_softmax(student_logits / temperature)
    per_sample = tf.reduce_sum(tf.exp(teacher_log_probabilities)
                               * (teacher_log_probabilities - student_log_probabilities), axis=-1)
    return tf.reduce_mean(per_sample) * temperature ** 2


def feature_distillation_loss(teacher_features: Sequence[tf.Tensor], student_features: Sequence[tf.Tensor],
                              epsilon: float = DEFAULT_FEATURE_ENERGY_EPSILON) -> tf.Tensor:
    """Mean over layers of the student's squared feature error relative to the teacher's feature energy.

    For each pair, mean((student - teacher)^2) / (mean(teacher^2) + epsilon): every layer
    counts alike whatever the scale of its activations. It is zero exactly when every
    student feature map equals the teacher's.

    Raises:
      ValueError: if no features are given or the two lists differ in length.
    """
    if not teacher_features or len(teacher_features) != len(student_features):
        raise ValueError(f"need as many student as teacher features (at least one), got {len(student_features)} and "
                         f"{len(teacher_features)}")
    per_layer = [tf.reduce_mean(tf.square(student - teacher)) / (tf.reduce_mean(tf.square(teacher)) + epsilon)
                 for teacher, student in zip(teacher_features, student_features)]
    return tf.add_n(per_layer) / float(len(per_layer))
