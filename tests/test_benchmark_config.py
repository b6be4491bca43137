"""The benchmark's settings: validation, and what the rows' cache keys depend on."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from zscgan_tf import benchmark_config
from zscgan_tf.benchmark_config import BenchmarkConfig
from zscgan_tf.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("changes, message", [
    ({"qat_steps": 0}, "--qat_steps must be positive, got 0"),
    ({"calibration_samples": 0}, "--calibration_samples must be positive, got 0"),
    ({"distilled_steps": 0}, "--distilled_steps must be positive, got 0"),
    ({"latency_runs": 0}, "--latency_runs must be positive, got 0"),
    ({"w4a4_seed_draws": -1}, "--w4a4_seed_draws must be non-negative, got -1"),
    ({"eval_max_samples": -1}, "--eval_max_samples must be non-negative, got -1"),
    ({"seed": -1}, "--seed must be non-negative, got -1"),
    ({"w4a4_seed_draws": 2, "schemes": ("w8a8",)}, "--w4a4_seed_draws repeats the W4A4 rows, but --schemes has no w4a4"),
    ({"generator_pool_draws": -1}, "--generator_pool_draws must be non-negative, got -1"),
    ({"generator_pool_draws": 1, "schemes": ("w8a8", "w4a8")},
     "--generator_pool_draws repeats the W4A4 rows, but --schemes has no w4a4"),
    ({"generator_pool_size": 9}, "--generator_pool_size must be in [1, 8], got 9"),
    ({"noise_dim": 0}, "--noise_dim must be positive, got 0"),
    # Before: "--batch_size must be positive", a run's flag, once a teacher and its data had loaded.
    ({"generator_batch_size": 1}, "--generator_batch_size must be at least 2 (BN statistics need a batch), got 1"),
    ({"qat_batch_size": 0}, "--qat_batch_size must be positive, got 0"),
    ({"qat_learning_rate": 0.0}, "--qat_learning_rate must be positive, got 0.0"),
    ({"qat_shift_fraction": 0.5}, "--qat_shift_fraction must be in [0, 0.5), got 0.5"),
    ({"qat_mixed_fraction": 1.5}, "--qat_mixed_fraction must be in [0, 1], got 1.5"),
    ({"mode_seeking_loss_weight": -1.0}, "--mode_seeking_loss_weight must be non-negative, got -1.0"),
    ({"bn_layer_weighting": "loud"}, "--bn_layer_weighting must be one of uniform, noise_floor, got 'loud'"),
    ({"low_bit_ranges": "max"}, "--low_bit_ranges must be one of"),
    ({"teachers": ()}, "--teachers names no teacher"),
    ({"work_dir": ""}, "--work_dir must not be empty"),
    ({"schemes": ("w8a8", "w4a16")}, "--schemes: "),
    ({"schemes": ("w8a8", "w4a4", "w8a8")}, "--schemes names w8a8 more than once"),
    ({"schemes": ("W4A4",)}, "--schemes: write 'W4A4' as 'w4a4'")])
def test_bad_settings_are_refused_naming_the_flag(changes, message):
    with pytest.raises(UserError) as error:
        benchmark_config.validate(BenchmarkConfig(**changes))
    assert str(error.value).startswith(message)


def test_the_defaults_are_valid_and_the_flags_defaults():
    benchmark_config.validate(BenchmarkConfig())
    # tools/benchmark.py in a process of its own: its flags share names with the train command's.
    script = (f"import sys; sys.path.insert(0, {os.path.join(REPO_ROOT, 'tools')!r}); import json, benchmark, "
              "dataclasses; benchmark.FLAGS(['benchmark']); "
              "print(json.dumps(dataclasses.asdict(benchmark.config_from_flags())))")
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    from_flags = json.loads(completed.stdout.strip().splitlines()[-1])
    assert from_flags == json.loads(json.dumps(dataclasses.asdict(BenchmarkConfig())))


def test_options_are_named_in_the_rows_settings_only_when_on():
    # Rows cached before an option existed were computed with it off; their keys must not change.
    plain = BenchmarkConfig(generator_pool_size=1, generator_blur_sigma=0.0, bn_layer_weighting="uniform",
                            mode_seeking_loss_weight=0.0, qat_feature_loss_weight=0.0)
    assert plain.generator_settings() == {"generator_steps": 1500, "generator_batch_size": 64,
                                          "noise_dim": plain.noise_dim, "generator_channels": plain.generator_channels}
    assert plain.optional_qat_settings() == {}
    assert BenchmarkConfig(low_bit_ranges="mse").low_bit_range_settings("w8a8") == {}
    on = dataclasses.replace(plain, generator_pool_size=3, generator_blur_sigma=1.0, bn_layer_weighting="noise_floor",
                             qat_flip=True, qat_mixed_fraction=0.5)
    assert {"generator_pool_size": 3, "generator_blur_sigma": 1.0,
            "bn_layer_weighting": "noise_floor"}.items() <= on.generator_settings().items()
    assert on.optional_qat_settings() == {"qat_flip": True, "qat_mixed_fraction": 0.5}
    assert BenchmarkConfig().optional_qat_settings() == {"qat_feature_loss_weight": 1.0}  # On by default.
    assert BenchmarkConfig(low_bit_ranges="mse").low_bit_range_settings("w4a4") == {"low_bit_ranges": "mse"}


def test_qat_and_generator_settings_carry_the_benchmark_values():
    benchmark = BenchmarkConfig(qat_steps=7, qat_batch_size=9, qat_learning_rate=0.01, qat_shift_fraction=0.125,
                                qat_flip=True, noise_dim=12, generator_channels=16, generator_blur_sigma=0.5,
                                generator_pool_size=2, mode_seeking_loss_weight=0.2, bn_layer_weighting="noise_floor")
    qat = benchmark.qat_settings(joint_generator=True)
    assert (qat.steps, qat.batch_size, qat.learning_rate, qat.shift_fraction, qat.flip, qat.joint_generator) == (
        7, 9, 0.01, 0.125, True, True)
    assert not benchmark.qat_settings().joint_generator
    generator = benchmark.generator_config()
    assert (generator.noise_dim, generator.base_channels, generator.blur_sigma, generator.pool_size) == (12, 16, 0.5, 2)
    loss = benchmark.generator_loss_config()
    assert (loss.mode_seeking, loss.bn_layer_weighting) == (0.2, "noise_floor")
    scheme = benchmark.quantization_scheme("w4a4")
    assert scheme.keep_first_and_last_at_8_bits and scheme.low_bit_ranges == benchmark.low_bit_ranges


def test_seeds_of_repeats_and_pools_never_coincide():
    benchmark = BenchmarkConfig(seed=3, generator_pool_size=3, generator_pool_draws=2, w4a4_seed_draws=2,
                                calibration_draws=2)
    assert benchmark.pool_draw_seed(0) == 3
    # Pool k's members train with pool_draw_seed(k) + 1000 * member: three members per pool.
    members = [benchmark.pool_draw_seed(pool) + 1000 * member for pool in range(3) for member in range(3)]
    assert len(set(members)) == len(members)
    recorded = benchmark.recorded()
    assert recorded["seeds"]["generator_pool_draws"] == [3003, 6003]
    assert recorded["seeds"]["w4a4_seed_draws"] == [203, 204]
    assert recorded["seeds"]["calibration_draws"] == [103, 104]
    assert recorded["teachers"] == ["builtin:fashion_mnist_resnet20"] and recorded["seed"] == 3
    assert list(recorded)[:-1] == list(benchmark_config.RECORDED_SETTINGS)
