"""ZeroQ-style distilled inputs on a tiny teacher."""

import numpy as np
import pytest

from zscgan_tf import bn_stats, distilled_data, losses
from zscgan_tf.errors import UserError


def _bn_loss(teacher, inputs):
    outputs = bn_stats.build_statistics_model(teacher.model)(inputs, training=False)
    return float(losses.bn_statistics_loss(bn_stats.split_statistics(outputs[1:])))


def test_noise_inputs_are_seeded_and_inside_the_input_range(teacher):
    first = distilled_data.gaussian_noise_inputs(teacher, 6, seed=1)
    low, high = teacher.preprocessing.input_range(teacher.image_shape[2])
    assert first.shape == (6, *teacher.image_shape) and first.dtype == np.float32
    assert first.min() >= np.min(low) and first.max() <= np.max(high)
    np.testing.assert_array_equal(first, distilled_data.gaussian_noise_inputs(teacher, 6, seed=1))
    assert not np.array_equal(first, distilled_data.gaussian_noise_inputs(teacher, 6, seed=2))


def test_distilled_inputs_match_the_bn_statistics_better_than_their_noise_start(teacher):
    settings = distilled_data.DistilledDataConfig(steps=40, batch_size=8)
    distilled = distilled_data.distill_inputs(teacher, 12, settings, seed=0, progress=False)
    low, high = teacher.preprocessing.input_range(teacher.image_shape[2])
    assert distilled.inputs.shape == (12, *teacher.image_shape)
    assert distilled.inputs.min() >= np.min(low) and distilled.inputs.max() <= np.max(high)
    assert distilled.final_bn_loss < 0.5 * distilled.initial_bn_loss
    start = distilled_data.gaussian_noise_inputs(teacher, 16, seed=0)
    assert _bn_loss(teacher, distilled.inputs[:8]) < 0.5 * _bn_loss(teacher, start[:8])
    again = distilled_data.distill_inputs(teacher, 12, settings, seed=0, progress=False)
    np.testing.assert_allclose(again.inputs, distilled.inputs, atol=1e-5)
    # Each batch starts from a fresh Adam state, in one traced step: the optimizer's variables exist before it.
    optimizer = distilled_data._BatchOptimizer(teacher, settings)
    first, _, _ = optimizer.optimise(start[:8], np.arange(8) % 4, None, 0)
    second, _, _ = optimizer.optimise(start[:8], np.arange(8) % 4, None, 0)
    np.testing.assert_array_equal(first, second)
    assert optimizer._step.experimental_get_tracing_count() == 1


def test_the_label_term_steers_samples_to_their_class(teacher):
    settings = distilled_data.DistilledDataConfig(steps=40, batch_size=8, label_loss_weight=1.0)
    distilled = distilled_data.distill_inputs(teacher, 8, settings, seed=0, progress=False)
    predictions = np.argmax(teacher.model.predict(distilled.inputs, verbose=0), axis=-1)
    labels = np.arange(8) % teacher.num_classes
    assert np.mean(predictions == labels) >= 0.75


@pytest.mark.parametrize("settings", [dict(steps=0), dict(batch_size=0), dict(learning_rate=0.0),
                                      dict(label_loss_weight=-1.0), dict(bn_distance="l1")])
def test_bad_settings_are_user_errors(settings):
    with pytest.raises(UserError):
        distilled_data.DistilledDataConfig(**settings)


def test_a_count_below_one_is_a_user_error(teacher):
    with pytest.raises(UserError, match="positive sample count"):
        distilled_data.distill_inputs(teacher, 0, progress=False)
