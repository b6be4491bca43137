"""The benchmark's settings: one frozen dataclass, validated, and what each row's result depends on.

`tools/benchmark.py` turns its flags into a `BenchmarkConfig`; `benchmark_rows` runs it.
Error messages name the flags (`--qat_steps`), as the pipeline's config does.

Rows are cached by the settings they depend on (`benchmark_cache.row_key`). Options added
after rows were first cached are named in those settings only when on, so that rows
cached before the option existed stay valid.
"""

import dataclasses
from typing import Any, Dict, List, Tuple

from zscgan_tf import config as config_lib
from zscgan_tf import distilled_data, quantize, seeds
from zscgan_tf.errors import UserError


# The benchmark's flag for each QAT setting it sets, as error messages name it.
QAT_FLAGS = {"steps": "qat_steps", "batch_size": "qat_batch_size", "learning_rate": "qat_learning_rate",
             "feature_loss_weight": "qat_feature_loss_weight", "mixed_fraction": "qat_mixed_fraction",
             "shift_fraction": "qat_shift_fraction"}
# The settings results.json records, in this order.
RECORDED_SETTINGS = (
    "teachers", "dataset", "eval_max_samples", "calibration_samples", "schemes", "qat_steps", "qat_batch_size",
    "qat_learning_rate", "generator_steps", "generator_batch_size", "noise_dim", "generator_channels",
    "generator_blur_sigma", "generator_pool_size", "mode_seeking_loss_weight", "bn_layer_weighting",
    "qat_feature_loss_weight", "qat_mixed_fraction", "qat_shift_fraction", "qat_flip", "qat_joint_generator",
    "low_bit_ranges", "depthwise_per_channel", "deterministic", "distilled_steps", "calibration_draws",
    "w4a4_seed_draws", "generator_pool_draws", "latency_runs", "seed")

_generator = config_lib.GeneratorConfig()
_loss = config_lib.LossConfig()
_distillation = config_lib.DistillationConfig()


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """Every setting of a benchmark; the fields are `tools/benchmark.py`'s flags, which document them."""
    teachers: Tuple[str, ...] = ("builtin:fashion_mnist_resnet20",)
    teacher_cache_dir: str = ""
    dataset: str = ""  # Empty: each teacher's own dataset.
    data_dir: str = ""
    work_dir: str = "runs/benchmark"
    eval_max_samples: int = 0
    calibration_samples: int = 500
    schemes: Tuple[str, ...] = ("w8a8", "w4a4", "w4a8")
    low_bit_ranges: str = quantize.QuantizationScheme.low_bit_ranges
    depthwise_per_channel: bool = quantize.QuantizationScheme.depthwise_per_channel
    qat_steps: int = 1000
    qat_batch_size: int = 128
    qat_learning_rate: float = _distillation.learning_rate
    qat_feature_loss_weight: float = _distillation.feature_loss_weight
    qat_mixed_fraction: float = _distillation.mixed_fraction
    qat_shift_fraction: float = _distillation.shift_fraction
    qat_flip: bool = _distillation.flip
    qat_joint_generator: bool = _distillation.joint_generator
    generator_steps: int = 1500
    generator_batch_size: int = 64
    noise_dim: int = _generator.noise_dim
    generator_channels: int = _generator.base_channels
    generator_blur_sigma: float = _generator.blur_sigma
    generator_pool_size: int = _generator.pool_size
    mode_seeking_loss_weight: float = _loss.mode_seeking
    bn_layer_weighting: str = _loss.bn_layer_weighting
    distilled_steps: int = distilled_data.DistilledDataConfig.steps
    calibration_draws: int = 5
    w4a4_seed_draws: int = 0
    generator_pool_draws: int = 0
    latency_runs: int = 200
    compare_to: str = ""
    seed: int = 0
    deterministic: bool = True

    def generator_settings(self) -> Dict[str, Any]:
        """The settings the generator, and every row using it, depend on."""
        settings = {"generator_steps": self.generator_steps, "generator_batch_size": self.generator_batch_size,
                    "noise_dim": self.noise_dim, "generator_channels": self.generator_channels}
        if self.mode_seeking_loss_weight:
            settings["mode_seeking_loss_weight"] = self.mode_seeking_loss_weight
        if self.generator_blur_sigma:
            settings["generator_blur_sigma"] = self.generator_blur_sigma
        if self.generator_pool_size != 1:
            settings["generator_pool_size"] = self.generator_pool_size
        if self.bn_layer_weighting != "uniform":
            settings["bn_layer_weighting"] = self.bn_layer_weighting
        return settings

    def generator_config(self) -> config_lib.GeneratorConfig:
        """The generator architecture (trained and speed-measured alike)."""
        return config_lib.GeneratorConfig(noise_dim=self.noise_dim, base_channels=self.generator_channels,
                                          blur_sigma=self.generator_blur_sigma, pool_size=self.generator_pool_size)

    def generator_loss_config(self) -> config_lib.LossConfig:
        """The generator loss (its own training and joint training alike)."""
        return config_lib.LossConfig(mode_seeking=self.mode_seeking_loss_weight,
                                     bn_layer_weighting=self.bn_layer_weighting)

    def qat_settings(self, joint_generator: bool = False) -> config_lib.DistillationConfig:
        """The settings of every QAT row (real or generated); `joint_generator` only for ZS-CGAN rows."""
        return config_lib.DistillationConfig(steps=self.qat_steps, batch_size=self.qat_batch_size,
                                             learning_rate=self.qat_learning_rate,
                                             feature_loss_weight=self.qat_feature_loss_weight,
                                             mixed_fraction=self.qat_mixed_fraction,
                                             shift_fraction=self.qat_shift_fraction, flip=self.qat_flip,
                                             joint_generator=joint_generator)

    def optional_qat_settings(self) -> Dict[str, Any]:
        """The QAT options that are on."""
        settings = {"qat_feature_loss_weight": self.qat_feature_loss_weight,
                    "qat_mixed_fraction": self.qat_mixed_fraction, "qat_shift_fraction": self.qat_shift_fraction,
                    "qat_flip": self.qat_flip}
        return {name: value for name, value in settings.items() if value}

    def quantization_scheme(self, name: str) -> quantize.QuantizationScheme:
        """The scheme of a QAT row: first and last layers at 8 bits, `low_bit_ranges`."""
        return quantize.QuantizationScheme.from_name(name, keep_first_and_last_at_8_bits=True,
                                                     low_bit_ranges=self.low_bit_ranges,
                                                     depthwise_per_channel=self.depthwise_per_channel)

    def low_bit_range_settings(self, scheme_name: str) -> Dict[str, Any]:
        """The range settings a QAT row depends on; `low_bit_ranges` named only for fitted ranges of a
        scheme below 8 bits, so that rows cached before the setting existed (min/max) stay valid, and
        `depthwise_per_channel` only where it is on and changes the scheme's quantizers (below 8 bits)."""
        scheme = self.quantization_scheme(scheme_name)
        settings = {}
        if scheme.holds_ranges_in_training:
            settings["low_bit_ranges"] = self.low_bit_ranges
        if self.depthwise_per_channel and scheme.uses_n_bit_scheme:
            settings["depthwise_per_channel"] = True
        return settings

    def w4a4_spread_seeds(self) -> List[int]:
        """The distillation seeds of the `w4a4_seed_draws` W4A4 repeats."""
        return [self.seed + seeds.W4A4_REPEAT_SEED_OFFSET + draw for draw in range(self.w4a4_seed_draws)]

    def pool_draw_seed(self, pool_draw: int) -> int:
        """The seed generator pool `pool_draw` trains with (0: the benchmark's own, `seed`)."""
        return self.seed + seeds.POOL_MEMBER_SEED_STRIDE * self.generator_pool_size * pool_draw

    def recorded(self) -> Dict[str, Any]:
        """The settings results.json records, with every seed they derive."""
        settings = {name: getattr(self, name) for name in RECORDED_SETTINGS}
        settings["teachers"], settings["schemes"] = list(self.teachers), list(self.schemes)  # As JSON reads back.
        settings["seeds"] = {
            "calibration": self.seed + seeds.CALIBRATION_SEED_OFFSET,
            "noise": self.seed + seeds.BENCHMARK_NOISE_SEED_OFFSET,
            "distilled_data_start": self.seed + seeds.BENCHMARK_NOISE_SEED_OFFSET,
            "distillation": self.seed + seeds.DISTILLATION_SEED_OFFSET, "generator": self.seed,
            "eval_subset": self.seed + seeds.BENCHMARK_EVALUATION_SUBSET_SEED_OFFSET,
            "calibration_draws": [self.seed + seeds.CALIBRATION_DRAW_SEED_OFFSET + draw
                                  for draw in range(self.calibration_draws)],
            "w4a4_seed_draws": self.w4a4_spread_seeds(),
            "generator_pool_draws": [self.pool_draw_seed(draw) for draw in range(1, self.generator_pool_draws + 1)]}
        return settings


def validate(benchmark: BenchmarkConfig) -> None:
    """Checks every value before any teacher loads; raises `UserError` quoting the first bad one."""
    # qat_batch_size is checked by validate_distillation below; qat_steps here, since a benchmark
    # needs at least one QAT step where a run may skip QAT.
    for name in ("calibration_samples", "qat_steps", "generator_steps", "distilled_steps", "latency_runs"):
        value = getattr(benchmark, name)
        if value < 1:
            raise UserError(f"--{name} must be positive, got {value}")
    # Checked here under its own name: the generator trainer's check names a run's --batch_size, and
    # came only once a teacher and its data had loaded.
    if benchmark.generator_batch_size < 2:
        raise UserError(f"--generator_batch_size must be at least 2 (BN statistics need a batch), got "
                        f"{benchmark.generator_batch_size}")
    for name in ("calibration_draws", "w4a4_seed_draws", "generator_pool_draws", "eval_max_samples", "seed"):
        value = getattr(benchmark, name)
        if value < 0:
            raise UserError(f"--{name} must be non-negative, got {value}")
    if not benchmark.schemes:  # `--schemes=` ran no QAT row, and the targets that compare them were left out.
        raise UserError("--schemes names no QAT scheme; name at least one, e.g. --schemes=w8a8")
    for scheme in benchmark.schemes:
        try:
            name = quantize.QuantizationScheme.from_name(scheme).name
        except UserError as error:
            raise UserError(f"--schemes: {error}") from error
        if scheme != name:  # The rows and targets look schemes up by these names.
            raise UserError(f"--schemes: write {scheme!r} as {name!r}")
    repeated = sorted({scheme for scheme in benchmark.schemes if benchmark.schemes.count(scheme) > 1})
    if repeated:
        raise UserError(f"--schemes names {', '.join(repeated)} more than once")
    for name in ("w4a4_seed_draws", "generator_pool_draws"):
        if getattr(benchmark, name) and "w4a4" not in benchmark.schemes:
            raise UserError(f"--{name} repeats the W4A4 rows, but --schemes has no w4a4")
    if not benchmark.work_dir:
        raise UserError("--work_dir must not be empty")
    config_lib.validate_low_bit_ranges(benchmark.low_bit_ranges)
    config_lib.validate_generator(benchmark.generator_config())
    config_lib.validate_loss(benchmark.generator_loss_config())
    config_lib.validate_distillation(benchmark.qat_settings(), QAT_FLAGS)
    if not benchmark.teachers:
        raise UserError("--teachers names no teacher")
