"""Generator step speed and FLOP counting."""

import pytest
import tf_keras

from zscgan_tf import config, generator_stage, throughput, zero_shot


def test_forward_flops_of_a_dense_layer_are_two_per_multiply_add():
    inputs = tf_keras.Input((6,))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(5, use_bias=False)(inputs))
    assert throughput.forward_flops(model, batch_size=4) == 2 * 4 * 6 * 5


def test_peak_rate_is_a_plausible_cpu_rate():
    peak = throughput.peak_flops_per_second(size=256, repeats=3)
    assert 1e8 < peak < 1e14


def test_seconds_per_call_is_the_median_of_the_timed_calls_and_rejects_no_calls(monkeypatch):
    # A clock that moves only inside the calls: 9 s each warm-up call, then 1, 5 and 2 s.
    clock = [0.0]
    durations = iter([9.0, 9.0, 1.0, 5.0, 2.0])
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: clock[0])

    def call():
        clock[0] += next(durations)

    assert throughput.seconds_per_call(call, calls=3, warmup=2) == 2.0  # Not the mean (2.67), nor the warm-ups.
    assert next(durations, None) is None  # Every call made, none more.
    with pytest.raises(ValueError):
        throughput.seconds_per_call(lambda: None, calls=0, warmup=0)


def test_generator_step_speed_counts_both_models_and_updates_only_the_generator(teacher):
    generator = generator_stage.build_generator_for(teacher, config.GeneratorConfig(noise_dim=8, base_channels=8))
    trainer = zero_shot.GeneratorTrainer(teacher, generator, config.LossConfig(),
                                         config.GeneratorTrainingConfig(batch_size=8))
    teacher_weights = teacher.model.get_weights()
    generator_weights = [weight.copy() for weight in generator.get_weights()]
    speed = throughput.measure_generator_step(trainer, calls=2, warmup=1)
    assert speed.batch_size == 8 and speed.compiled_seconds > 0 and speed.eager_seconds > 0
    assert speed.flops_per_step == (2 * throughput.forward_flops(teacher.model, 8)
                                    + 3 * throughput.forward_flops(generator, 8)) > 0
    assert speed.speedup == pytest.approx(speed.eager_seconds / speed.compiled_seconds)
    assert speed.compiled_samples_per_second == pytest.approx(8 / speed.compiled_seconds)
    assert 0 < speed.fraction_of_peak < 1
    assert int(trainer.step.numpy()) == 6  # 3 compiled and 3 eager updates.
    zero_shot.check_teacher_unchanged(teacher, teacher_weights, "the timed steps")
    assert any((before != after).any() for before, after in zip(generator_weights, generator.get_weights()))
