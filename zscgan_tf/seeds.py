"""The random streams of a run and of the benchmark: each is the one `--seed` plus a fixed
offset, so that no two streams coincide and none reuses the generator's training stream
(`--seed` itself). Numpy streams that only pick images or samples take `--seed` itself: a
run's `--eval_max_samples` subset, the samples of the check before QAT, the benchmark's
student check.

A pool's generator k (from 0) trains from `seed + POOL_MEMBER_SEED_STRIDE * k`; the
benchmark's further pool j (from 1) from `seed + POOL_MEMBER_SEED_STRIDE * pool size * j`,
so that its members follow the last member of the pool before it.
"""

# A run's streams.
GENERATED_SAMPLES_SEED_OFFSET = 1  # The samples whose classes the teacher judges.
GRID_SEED_OFFSET = 2  # The samples.png grid.
CALIBRATION_SEED_OFFSET = 3  # The PTQ calibration samples (also the benchmark's).
DISTILLATION_SEED_OFFSET = 4  # QAT's sample stream (also the benchmark's).
JOINT_GENERATOR_SEED_OFFSET = 7  # The generator copy trained on during QAT (`--joint_generator`).
POOL_MEMBER_SEED_STRIDE = 1000

# The benchmark's own streams.
BENCHMARK_NOISE_SEED_OFFSET = 5  # Gaussian-noise calibration, and the distilled-data rows' start.
BENCHMARK_EVALUATION_SUBSET_SEED_OFFSET = 6  # The class-balanced subset of --eval_max_samples.
CALIBRATION_DRAW_SEED_OFFSET = 100  # Calibration draw k of the spread measurement: + k.
W4A4_REPEAT_SEED_OFFSET = 200  # W4A4 QAT repeat k: + k.

_SINGLE_OFFSETS = (GENERATED_SAMPLES_SEED_OFFSET, GRID_SEED_OFFSET, CALIBRATION_SEED_OFFSET, DISTILLATION_SEED_OFFSET,
                   JOINT_GENERATOR_SEED_OFFSET, BENCHMARK_NOISE_SEED_OFFSET, BENCHMARK_EVALUATION_SUBSET_SEED_OFFSET)
assert len(set(_SINGLE_OFFSETS)) == len(_SINGLE_OFFSETS) and max(_SINGLE_OFFSETS) < CALIBRATION_DRAW_SEED_OFFSET
