"""Benchmarks data-free quantization against real-data and noise baselines on real test images.

For each teacher, measures top-1 on the test split of `--dataset` of:

- FP32: the float teacher (Keras).
- real-data / noise / distilled-data / ZS-CGAN PTQ: int8 TFLite calibrated with
  `--calibration_samples` class-balanced real training images, Gaussian noise clipped to
  the input range, ZeroQ-style inputs optimised to match the BN statistics (no
  generator), or generator samples; ZS-CGAN PTQ once more with per-tensor weights, the
  smallest int8 file.
- ZS-CGAN / real-data QAT at each of `--schemes`: the TF-MOT student distilled from the
  teacher on generator samples or on the real training images, with the same step
  budget. W8A8 students are exported to int8 TFLite and measured there; lower widths
  can't be exported and are measured in Keras (simulated quantization).

and, per teacher, the spread of the real-data and ZS-CGAN PTQ figures over
`--calibration_draws` further calibration draws (how much a single int8 top-1 moves by
chance: the noise floor against which the targets' small margins are read), of the
ZS-CGAN and real-data W4A4 QAT figures over `--w4a4_seed_draws` further distillation
seeds (with them measured, the W4A4 targets compare means), of the ZS-CGAN W4A4 figure
over `--generator_pool_draws` further generator pools trained with other seeds (with them
measured, the W4A4 targets take the ZS-CGAN mean over every pool), the float
and int8 TFLite sizes, LiteRT latency at 1 and 2 threads,
the generator step's speed compiled and eager with its share of the CPU's peak FLOP
rate, and each stage's wall time. `--compare_to=<an earlier --work_dir>` checks that
every row computed there with the same settings is reproduced within 0.3 point; runs
are deterministic (`--deterministic`, the default), so a rerun repeats every figure.

  python tools/benchmark.py --flagfile configs/bench_fashion_mnist.cfg

Everything lands in `--work_dir`: per teacher, the generator run (`<teacher>/generator/`,
resumable as `python -m zscgan_tf.train` runs are; further pools in `generator_draw<k>/`),
the QAT checkpoints (`<teacher>/qat/`),
the .tflite models and `rows.json`, which caches each finished row's result keyed by its
settings, so a rerun after a crash skips finished rows (a damaged or edited `rows.json` means
those rows are computed again). `results.json` and `results.md`
(a table per teacher and a verdict per target) are rewritten after every row.
Bad input prints one `error: ...` line and exits with status 2, a work directory another
benchmark holds with 75; Ctrl-C saves the running stage's checkpoint and exits with status
130, SIGTERM the same with 143, a terminal's hangup (SIGHUP) with 129 and output no one can
read any more with 141 (rerun the same command to resume).

This file only turns flags into a `zscgan_tf.benchmark_config.BenchmarkConfig`; the rows
are measured by `zscgan_tf.benchmark_run.run_benchmark` and judged and written up by
`zscgan_tf.benchmark_report`.
"""

import dataclasses
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import zscgan_tf  # noqa: F401,E402  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
from absl import flags  # noqa: E402

from zscgan_tf import benchmark_config, benchmark_run, bn_stats, cli, quantize  # noqa: E402

FLAGS = flags.FLAGS
_defaults = benchmark_config.BenchmarkConfig()
flags.DEFINE_list("teachers", list(_defaults.teachers), "Teachers: builtin:<name> or model files.")
flags.DEFINE_string("teacher_cache_dir", _defaults.teacher_cache_dir,
                    "Where built-in teachers are kept; empty = $ZSCGAN_TF_CACHE, else ~/.cache/zscgan_tf/teachers.")
flags.DEFINE_string("dataset", _defaults.dataset,
                    "Real data (data.load_dataset source); empty = the teacher's own dataset.")
flags.DEFINE_string("data_dir", _defaults.data_dir, "fashion_mnist's IDX directory, or the TFDS data_dir of "
                    "fashion_mnist or tfds:<name>; a directory --dataset is the data itself.")
flags.DEFINE_string("work_dir", _defaults.work_dir, "Directory for generators, QAT checkpoints, models and results.")
flags.DEFINE_integer("eval_max_samples", _defaults.eval_max_samples,
                     "Evaluate on at most this many test images (class-balanced); 0 = all.")
flags.DEFINE_integer("calibration_samples", _defaults.calibration_samples,
                     "Calibration samples of every source (class-balanced).")
flags.DEFINE_list("schemes", list(_defaults.schemes), "QAT bit widths; w8a8 is exported, the others simulated.")
flags.DEFINE_enum("low_bit_ranges", _defaults.low_bit_ranges, list(quantize.LOW_BIT_RANGE_METHODS),
                  "Ranges of quantizers below 8 bits in the w4 rows (real and generated alike): mse = least squared "
                  "rounding error, held during QAT; min_max = TF-MOT's observed extremes.")
flags.DEFINE_bool("depthwise_per_channel", _defaults.depthwise_per_channel,
                  "W4 rows (real and generated alike): quantize DepthwiseConv2D kernels with one range per channel, "
                  "as TFLite's int8 depthwise kernels are, not TF-MOT's one range per tensor; W8A8 rows unchanged.")
flags.DEFINE_integer("qat_steps", _defaults.qat_steps, "Student updates of every QAT row.")
flags.DEFINE_integer("qat_batch_size", _defaults.qat_batch_size,
                     "Samples per student update, real and generated alike.")
flags.DEFINE_float("qat_learning_rate", _defaults.qat_learning_rate,
                   "Adam learning rate of the students (cosine decay to 0).")
flags.DEFINE_float("qat_feature_loss_weight", _defaults.qat_feature_loss_weight,
                   "Every QAT row (real or generated): weight of the BatchNorm-feature term; 0 = off.")
flags.DEFINE_float("qat_mixed_fraction", _defaults.qat_mixed_fraction,
                   "Fraction of every QAT batch (real or generated) replaced by mixtures of two samples.")
flags.DEFINE_float("qat_shift_fraction", _defaults.qat_shift_fraction,
                   "Every QAT batch (real or generated): random shifts up to this fraction of the image size.")
flags.DEFINE_bool("qat_flip", _defaults.qat_flip,
                  "Every QAT batch (real or generated): mirror a random half left to right.")
flags.DEFINE_bool("qat_joint_generator", _defaults.qat_joint_generator,
                  "ZS-CGAN QAT rows keep training a copy of the generator along with the student (GDFQ).")
flags.DEFINE_integer("generator_steps", _defaults.generator_steps, "Generator updates.")
flags.DEFINE_integer("generator_batch_size", _defaults.generator_batch_size, "Samples per generator update.")
flags.DEFINE_integer("noise_dim", _defaults.noise_dim, "Length of the generator's noise vector.")
flags.DEFINE_integer("generator_channels", _defaults.generator_channels, "Channels of the generator trunk.")
flags.DEFINE_float("generator_blur_sigma", _defaults.generator_blur_sigma,
                   "Gaussian low-pass of every generated sample, sigma in pixels; 0 = off.")
flags.DEFINE_integer("generator_pool_size", _defaults.generator_pool_size,
                     "Generators trained apart (other seeds) and pooled for every ZS-CGAN row; 1 = one generator.")
flags.DEFINE_float("mode_seeking_loss_weight", _defaults.mode_seeking_loss_weight,
                   "Weight of the generator's mode-seeking term; 0 = off.")
flags.DEFINE_enum("bn_layer_weighting", _defaults.bn_layer_weighting, bn_stats.BN_LAYER_WEIGHTINGS,
                  "How the generator's BN-statistics term weighs the teacher's BN layers: uniform, or noise_floor "
                  "(each 1 / (1 + the KL a batch scores there by chance)).")
flags.DEFINE_integer("distilled_steps", _defaults.distilled_steps,
                     "Adam updates of each batch of distilled-data (ZeroQ-style) calibration inputs.")
flags.DEFINE_integer("calibration_draws", _defaults.calibration_draws,
                     "Further calibration draws of real-data and ZS-CGAN PTQ, to measure how "
                     "much one int8 figure moves by chance; 0 = skip.")
flags.DEFINE_integer("w4a4_seed_draws", _defaults.w4a4_seed_draws,
                     "Further runs of ZS-CGAN and real-data W4A4 QAT with other "
                     "distillation seeds (the samples each step draws, their mixtures and shifts), to measure how "
                     "much one W4A4 figure moves by chance; the W4A4 targets then compare means over every run. "
                     "0 = skip.")
flags.DEFINE_integer("generator_pool_draws", _defaults.generator_pool_draws,
                     "Further generator pools, each trained as the benchmark's own but "
                     "with other seeds and distilled into W4A4 students at the W4A4 rows' distillation seeds (the "
                     "row's and --w4a4_seed_draws'), to measure how much the ZS-CGAN W4A4 figure moves with the "
                     "generators drawn; the W4A4 targets then take the ZS-CGAN mean over every pool. 0 = skip.")
flags.DEFINE_integer("latency_runs", _defaults.latency_runs,
                     "Timed LiteRT runs per latency figure (the median is reported).")
flags.DEFINE_string("compare_to", _defaults.compare_to,
                    "An earlier --work_dir: report how far each row computed there with the "
                    "same settings moved.")
flags.DEFINE_integer("seed", _defaults.seed, "Seed of every random stream (offsets derive the others).")
flags.DEFINE_bool("deterministic", _defaults.deterministic,
                  "Repeat every figure exactly for the same seeds (TensorFlow's deterministic "
                  "kernels, graph optimizer off); off, generator rows vary from run to run.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")


def config_from_flags() -> benchmark_config.BenchmarkConfig:
    """The parsed flags as a `BenchmarkConfig` (validated when the benchmark starts)."""
    values = {field.name: FLAGS[field.name].value for field in dataclasses.fields(benchmark_config.BenchmarkConfig)}
    values["teachers"] = tuple(values["teachers"])
    # Scheme names are case-insensitive (`W4A4`); the benchmark's rows and targets use `w4a4`.
    values["schemes"] = tuple(scheme.strip().lower() for scheme in values["schemes"])
    return benchmark_config.BenchmarkConfig(**values)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    return cli.run_command(FLAGS, argv, lambda: benchmark_run.run_benchmark(config_from_flags(),
                                                                             progress=FLAGS.progress))


if __name__ == "__main__":
    sys.exit(main())
