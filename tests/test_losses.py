import numpy as np
import pytest
import tensorflow as tf

from zscgan_tf import losses
from zscgan_tf.bn_stats import LayerStatistics


def _statistics(batch_mean, batch_variance, moving_mean, moving_variance):
    return LayerStatistics(*(tf.constant(np.asarray(v, "float32")) for v in
                             (batch_mean, batch_variance, moving_mean, moving_variance)))


@pytest.mark.parametrize("distance", ["kl", "mse"])
def test_bn_loss_is_zero_when_statistics_match(distance):
    matching = _statistics([0.5, -1.0], [2.0, 0.3], [0.5, -1.0], [2.0, 0.3])
    assert float(losses.bn_statistics_loss([matching, matching], distance)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distance", ["kl", "mse"])
@pytest.mark.parametrize("batch_mean, batch_variance", [([0.6, -1.0], [2.0, 0.3]), ([0.5, -1.0], [1.0, 0.3])])
def test_bn_loss_is_positive_when_statistics_differ(distance, batch_mean, batch_variance):
    differing = _statistics(batch_mean, batch_variance, [0.5, -1.0], [2.0, 0.3])
    assert float(losses.bn_statistics_loss([differing], distance)) > 0


def test_gaussian_kl_matches_closed_form():
    batch_mean, batch_variance, mean, variance = 1.0, 0.5, 0.0, 2.0
    epsilon = 0.0
    expected = (np.log(np.sqrt(variance) / np.sqrt(batch_variance))
                + (batch_variance + (batch_mean - mean) ** 2) / (2 * variance) - 0.5)
    value = losses.gaussian_kl_divergence(tf.constant([batch_mean]), tf.constant([batch_variance]),
                                          tf.constant([mean]), tf.constant([variance]), variance_epsilon=epsilon)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_bn_loss_averages_layers_and_sums_channels():
    one = _statistics([1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0])
    zero = _statistics([0.0], [1.0], [0.0], [1.0])
    single = float(losses.gaussian_kl_divergence(*(tf.constant([v]) for v in (1.0, 1.0, 0.0, 1.0))))
    assert float(losses.bn_statistics_loss([one, zero])) == pytest.approx(single, rel=1e-5)


@pytest.mark.parametrize("distance", ["kl", "mse"])
def test_bn_loss_layer_weights_scale_each_layer_in_the_mean(distance):
    near = _statistics([0.1], [1.0], [0.0], [1.0])
    far = _statistics([2.0], [3.0], [0.0], [1.0])
    near_alone, far_alone = (float(losses.bn_statistics_loss([s], distance)) for s in (near, far))
    weighted = float(losses.bn_statistics_loss([near, far], distance, layer_weights=[2.0, 0.25]))
    assert weighted == pytest.approx((2.0 * near_alone + 0.25 * far_alone) / 2, rel=1e-5)
    uniform = float(losses.bn_statistics_loss([near, far], distance, layer_weights=[1.0, 1.0]))
    assert uniform == pytest.approx(float(losses.bn_statistics_loss([near, far], distance)), rel=1e-6)
    with pytest.raises(ValueError, match="1 layer weights for 2 BN layers"):
        losses.bn_statistics_loss([near, far], distance, layer_weights=[1.0])


def test_bn_loss_rejects_unknown_distance_and_empty_input():
    with pytest.raises(ValueError, match="unknown BN distance"):
        losses.bn_statistics_loss([_statistics([0.0], [1.0], [0.0], [1.0])], "l1")
    with pytest.raises(ValueError):
        losses.bn_statistics_loss([])


def test_conditional_cross_entropy_prefers_the_requested_class():
    labels = tf.constant([0, 1])
    right = tf.constant([[5.0, 0.0], [0.0, 5.0]])
    wrong = tf.constant([[0.0, 5.0], [5.0, 0.0]])
    assert float(losses.conditional_cross_entropy(labels, right)) < 0.01
    assert float(losses.conditional_cross_entropy(labels, wrong)) > 4.0


def test_diversity_is_lowest_for_confident_varied_batches():
    confident_varied = tf.constant([[9.0, 0.0], [0.0, 9.0]])
    confident_same = tf.constant([[9.0, 0.0], [9.0, 0.0]])
    uncertain = tf.constant([[0.0, 0.0], [0.0, 0.0]])
    values = [float(losses.diversity_loss(logits)) for logits in (confident_varied, confident_same, uncertain)]
    assert values[0] < values[1] and values[0] < values[2]


def test_distillation_loss_zero_for_equal_logits_and_positive_otherwise():
    logits = tf.constant([[1.0, 2.0, 0.5]])
    assert float(losses.distillation_loss(logits, logits, temperature=4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.distillation_loss(logits, logits[:, ::-1], temperature=4.0)) > 0
    with pytest.raises(ValueError, match="temperature"):
        losses.distillation_loss(logits, logits, temperature=0.0)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_distillation_loss_is_the_teachers_kl_to_the_student_times_t_squared(temperature):
    teacher = np.array([[2.0, 0.0, 0.0], [0.5, -1.0, 3.0]])
    student = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])

    def log_softmax(logits):
        shifted = logits / temperature
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    p_teacher = np.exp(log_softmax(teacher))
    expected = np.mean(np.sum(p_teacher * (log_softmax(teacher) - log_softmax(student)), -1)) * temperature ** 2
    computed = float(losses.distillation_loss(tf.constant(teacher, tf.float32), tf.constant(student, tf.float32),
                                              temperature))
    assert computed == pytest.approx(expected, rel=1e-5)
    # KL is not symmetric: the student's distribution in the teacher's place gives another figure.
    reversed_kl = float(losses.distillation_loss(tf.constant(student, tf.float32), tf.constant(teacher, tf.float32),
                                                 temperature))
    assert reversed_kl != pytest.approx(expected, rel=1e-4)


def test_moment_mean_squared_error_is_that_of_the_means_plus_that_of_the_variances():
    assert float(losses.moment_mean_squared_error(tf.constant([1.0, 3.0]), tf.constant([1.0, 4.0]),
                                                  tf.constant([0.0, 0.0]), tf.constant([1.0, 1.0]))) == \
        pytest.approx((1 + 9) / 2 + (0 + 9) / 2)


def test_cross_entropy_sample_weights_drop_samples():
    labels = tf.constant([0, 1])
    logits = tf.constant([[5.0, 0.0], [5.0, 0.0]])
    only_first = float(losses.conditional_cross_entropy(labels, logits, tf.constant([1.0, 0.0])))
    assert only_first == pytest.approx(float(losses.conditional_cross_entropy(labels[:1], logits[:1])))


def test_mode_seeking_is_lower_when_samples_spread_as_their_noises_differ():
    noise_a, noise_b = tf.zeros([4, 8]), tf.ones([4, 8])
    images = tf.zeros([4, 6, 6, 1])
    collapsed = float(losses.mode_seeking_loss(images, images + 0.01, noise_a, noise_b))
    spread = float(losses.mode_seeking_loss(images, images + 1.0, noise_a, noise_b))
    assert spread == pytest.approx(1.0 / (1.0 + losses.DEFAULT_MODE_SEEKING_EPSILON))
    assert collapsed > 50 * spread


def test_feature_distillation_is_zero_for_equal_features_and_weighs_layers_alike_whatever_their_scale():
    small = tf.constant([[1.0, -1.0, 2.0]])
    large = 1000.0 * small
    assert float(losses.feature_distillation_loss([small, large], [small, large])) == pytest.approx(0.0, abs=1e-7)
    # A 10% error costs 0.01 relative to the feature energy in either layer, so the mean is 0.01.
    loss = float(losses.feature_distillation_loss([small, large], [1.1 * small, 1.1 * large]))
    assert loss == pytest.approx(0.01, rel=1e-4)
    # An error in one of two layers counts half.
    assert float(losses.feature_distillation_loss([small, large], [1.1 * small, large])) == pytest.approx(0.005, rel=1e-4)
    with pytest.raises(ValueError, match="as many student as teacher features"):
        losses.feature_distillation_loss([small], [small, large])
    with pytest.raises(ValueError, match="at least one"):
        losses.feature_distillation_loss([], [])
