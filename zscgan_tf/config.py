"""The run configuration: frozen dataclasses grouped by concern, validated, saved as JSON.

Entry points turn flags into a `RunConfig`; library code takes its sections. The
resolved config is saved in the work directory so a rerun can check that it continues
the same run rather than mixing two (`config_changes`).
"""

import dataclasses
import json
import typing
from typing import Any, Dict, Optional

from zscgan_tf.bn_stats import BN_LAYER_WEIGHTINGS
from zscgan_tf.data import portable_source
from zscgan_tf.errors import UserError
from zscgan_tf.files import paths_as_strings, portable_path
from zscgan_tf.generator import MIN_BASE_CHANNELS, VARIANTS
from zscgan_tf.losses import BN_DISTANCES
from zscgan_tf.quantize import LOW_BIT_RANGE_METHODS, MAX_BITS, MIN_BITS, SCHEME_NAME_PATTERN
from zscgan_tf.teachers import TeacherSource

CONFIG_FILE = "config.json"
IO_DTYPES = ("int8", "uint8")
MAX_GENERATOR_POOL_SIZE = 8
# The evaluation dataset that measures nothing on real data.
NO_EVALUATION = "none"
# The largest --seed: numpy takes seeds below 2**32, and streams derive theirs by adding offsets
# (pool members 1000 apart, benchmark draws) that this leaves room for.
MAX_SEED = 2 ** 31 - 1
# The longest value a type refusal quotes.
MAX_QUOTED_VALUE = 80


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Generator architecture; see `generator.GeneratorSpec`.

    `pool_size` > 1 trains that many generators of this architecture apart, with other
    seeds, and pools them (`generator.pool_generators`): sample i of every batch comes
    from generator i mod pool_size. Each costs a full generator training. Configs saved
    before this setting existed read as 1.
    """

    variant: str = "conditional_bn"
    noise_dim: int = 128
    base_channels: int = 128
    blur_sigma: float = 0.0
    pool_size: int = 1


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the zero-shot generator loss
    cross_entropy * CE + bn_statistics * BN + diversity * DIV + mode_seeking * MS.

    Attributes:
      cross_entropy: weight of the conditional cross-entropy.
      bn_statistics: weight of the BN-statistics distance.
      bn_distance: `kl` (Gaussian KL, default) or `mse` (GDFQ).
      bn_layer_weighting: how the BN term weighs its layers: `uniform` (default) or
        `noise_floor` (each layer 1 / (1 + the KL a batch scores there by chance); see
        `bn_stats.bn_layer_weights`).
      diversity: weight of sample entropy minus batch entropy; 0 turns it off.
      mode_seeking: weight of MSGAN's mode-seeking term, which spreads the samples of a
        class apart (batches then pair each label's two noises); 0 turns it off.
    """

    cross_entropy: float = 1.0
    bn_statistics: float = 0.1
    bn_distance: str = "kl"
    bn_layer_weighting: str = "uniform"
    diversity: float = 0.0
    mode_seeking: float = 0.0


@dataclasses.dataclass(frozen=True)
class GeneratorTrainingConfig:
    """How the generator is trained and how often its progress is recorded.

    Attributes:
      steps: generator updates in total.
      batch_size: samples per update.
      learning_rate: Adam learning rate.
      beta_1: Adam's first-moment decay (0.5 is the GAN-family default).
      beta_2: Adam's second-moment decay.
      checkpoint_every: steps between checkpoints (and at the end).
      log_every: steps between TensorBoard scalars.
      image_every: steps between TensorBoard sample grids.
    """

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    beta_1: float = 0.5
    beta_2: float = 0.999
    checkpoint_every: int = 250
    log_every: int = 10
    image_every: int = 250


@dataclasses.dataclass(frozen=True)
class DistillationConfig:
    """How the quantized student learns from the teacher on generated samples.

    Attributes:
      steps: student updates; 0 skips quantization-aware training (post-training quantization only).
      batch_size: generated samples per update.
      learning_rate: initial Adam learning rate, decayed to 0 by a cosine schedule.
      temperature: softmax temperature of the distillation KL.
      label_loss_weight: weight of the cross-entropy with the generation label; 0 = off.
      feature_loss_weight: weight of the feature term: each BatchNorm layer's output in the
        student against the teacher's, squared error relative to the teacher's feature
        energy, averaged over layers; 0 = off. On synthetic samples the student soon
        agrees with the teacher's predictions and the KL term stops teaching; the
        feature maps still differ, most at 4 bits. Configs saved before this setting
        existed read as 0, as they ran.
      mixed_fraction: fraction of each generated batch replaced by convex mixtures, in pixel
        space, of two of its samples (the partner drawn from the batch, at times the sample
        itself; after Qimera's boundary-supporting samples, which mix class embeddings): the teacher's
        outputs on them teach the student the regions between classes, which
        class-conditional samples alone leave empty. Mixed samples carry no label term.
      joint_generator: keep training (a copy of) the generator with its zero-shot loss,
        one update before each student update (GDFQ's fine-tuning); off = generator frozen.
      shift_fraction: each sample is moved by a random whole number of pixels, up to this
        fraction of its height and width (at least one pixel), edges repeated; 0 = off.
        Like the flips, it widens the student's inputs beyond the generator's
        near-identical samples of a class; the teacher's outputs on the moved sample are
        the targets, so nothing is mislabelled for the distillation term.
      flip: mirror a random half of the samples left to right (for classes that look alike
        mirrored, as most photographs and clothes do; not digits or text).
      checkpoint_every: steps between checkpoints.
      log_every: steps between history records and TensorBoard scalars.
    """

    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-4
    temperature: float = 1.0
    label_loss_weight: float = 0.0
    feature_loss_weight: float = 1.0
    mixed_fraction: float = 0.0
    joint_generator: bool = False
    shift_fraction: float = 0.0
    flip: bool = False
    checkpoint_every: int = 250
    log_every: int = 10


@dataclasses.dataclass(frozen=True)
class QuantizationConfig:
    """What the student and the exported model look like.

    Attributes:
      scheme: `w<weight bits>a<activation bits>`, each width 2..8: `w8a8` is exportable, lower
        widths (`w4a8`, `w4a4`, ...) are simulated with TF-MOT's n-bit scheme.
      keep_first_and_last_at_8_bits: the first and last layers stay 8-bit in n-bit schemes.
      per_channel: per-channel weight scales.
      low_bit_ranges: ranges of quantizers below 8 bits: `mse` (least squared rounding
        error, held during QAT) or `min_max` (TF-MOT's observed extremes). Configs saved
        before this setting existed read as `min_max`, as they ran.
      io_dtype: `int8` or `uint8` input and output of the exported model.
      calibration_samples: class-balanced generator samples for calibration.
      allow_float_ops: the int8 models may keep ops TFLite has no int8 kernel for (ELU,
        ...) float inside, their input and output integer; without it a teacher with such
        an op is refused before training.
    """

    scheme: str = "w8a8"
    keep_first_and_last_at_8_bits: bool = True
    per_channel: bool = True
    low_bit_ranges: str = "mse"
    io_dtype: str = "int8"
    calibration_samples: int = 500
    allow_float_ops: bool = False


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """How generated samples are judged and shown.

    Attributes:
      samples_per_class: generated samples per class the teacher classifies for the report.
      grid_samples_per_class: columns of the PNG grid (one row per class).
      grid_max_classes: at most this many rows (classes 0, 1, ...), for 1000-class teachers.
      dataset: held-out real data for accuracy (`data.load_dataset` source); empty means
        the dataset named in the teacher's description, `none` skips real-data evaluation.
      data_dir: for `fashion_mnist`, a directory of its IDX files or a TFDS data_dir; for
        `tfds:<name>`, the TFDS data_dir; unused for `digits` and for a directory (which is
        the dataset itself).
      manual_dir: TFDS manual download directory (imagenet2012).
      split: the split evaluated.
      max_samples: evaluate at most this many images (class-balanced); 0 = all.
      resize: resize and convert images whose shape differs from the teacher's input; without
        it such a dataset is refused, unless it is the teacher's own training data at the
        shape the teacher was trained on (its description says so).
      latency_runs: timed single-image TFLite invocations per model and thread count.
    """

    samples_per_class: int = 100
    grid_samples_per_class: int = 10
    grid_max_classes: int = 20
    dataset: str = ""
    data_dir: str = ""
    manual_dir: str = ""
    split: str = "test"
    max_samples: int = 0
    latency_runs: int = 200
    resize: bool = False

    def __post_init__(self):
        paths_as_strings(self, ("dataset", "data_dir", "manual_dir"))  # A pathlib.Path, as a program may give.


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run of `python -m zscgan_tf.train` does."""

    work_dir: str = "runs/demo"
    seed: int = 0
    teacher: TeacherSource = TeacherSource()
    generator: GeneratorConfig = GeneratorConfig()
    loss: LossConfig = LossConfig()
    generator_training: GeneratorTrainingConfig = GeneratorTrainingConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    distillation: DistillationConfig = DistillationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    def __post_init__(self):
        paths_as_strings(self, ("work_dir",))  # A pathlib.Path, as a program may give.
        check_types(self)
        validate(self)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def portable(self) -> "RunConfig":
        """This config as a run records it: the paths of files and directories that exist made
        absolute (`TeacherSource.portable`, `data.portable_source`), so that the run resumed
        from another directory, and `tools/convert.py --run_dir`, find them there; `none` as
        the evaluation dataset in lower case."""
        evaluation = self.evaluation
        dataset = (NO_EVALUATION if evaluation.dataset.lower() == NO_EVALUATION
                   else portable_source(evaluation.dataset))
        return dataclasses.replace(self, teacher=self.teacher.portable(), evaluation=dataclasses.replace(
            evaluation, dataset=dataset, data_dir=portable_path(evaluation.data_dir),
            manual_dir=portable_path(evaluation.manual_dir)))

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "RunConfig":
        sections = {field.name: field.type for field in dataclasses.fields(cls)}
        kwargs = {}
        for name, value in values.items():
            if name not in sections:
                raise UserError(f"unknown config key {name!r}")
            section_type = _SECTION_TYPES.get(name)
            kwargs[name] = _section_from_dict(section_type, value, name) if section_type else value
        return cls(**kwargs)


_SECTION_TYPES = {"teacher": TeacherSource, "generator": GeneratorConfig, "loss": LossConfig,
                  "generator_training": GeneratorTrainingConfig, "quantization": QuantizationConfig,
                  "distillation": DistillationConfig, "evaluation": EvaluationConfig}
# Each field's type, by class (`check_types`).
_FIELD_TYPES = {cls: typing.get_type_hints(cls) for cls in (RunConfig, *_SECTION_TYPES.values())}


# Settings whose default changed when they were added: a config saved before then ran with
# the value here, not with today's default.
_VALUES_BEFORE_THEY_EXISTED = {"distillation": {"feature_loss_weight": 0.0},
                               "generator": {"blur_sigma": 0.0, "pool_size": 1},
                               "quantization": {"low_bit_ranges": "min_max"}}


def _section_from_dict(section_type, values: Dict[str, Any], section_name: str):
    values = {**_VALUES_BEFORE_THEY_EXISTED.get(section_name, {}), **values}
    known = {field.name: field for field in dataclasses.fields(section_type)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown config key {section_name}.{unknown[0]}")
    return section_type(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})


def _require(condition: bool, message: str):
    if not condition:
        raise UserError(message)


def validate_generator(generator: GeneratorConfig):
    """Checks a generator architecture's ranges (a run's, or the benchmark's before any teacher loads)."""
    _require(generator.variant in VARIANTS,
             f"--generator_variant must be one of {', '.join(VARIANTS)}, got {generator.variant!r}")
    _require(generator.noise_dim >= 1, f"--noise_dim must be positive, got {generator.noise_dim}")
    _require(generator.base_channels >= MIN_BASE_CHANNELS,
             f"--generator_channels must be at least {MIN_BASE_CHANNELS}, got {generator.base_channels}")
    _require(generator.blur_sigma >= 0, f"--generator_blur_sigma must be non-negative, got {generator.blur_sigma}")
    _require(1 <= generator.pool_size <= MAX_GENERATOR_POOL_SIZE,
             f"--generator_pool_size must be in [1, {MAX_GENERATOR_POOL_SIZE}], got {generator.pool_size}")


def validate_loss(loss: LossConfig):
    """Checks the generator loss weights (a run's, or the benchmark's before any teacher loads)."""
    _require(loss.bn_distance in BN_DISTANCES,
             f"--bn_distance must be one of {', '.join(BN_DISTANCES)}, got {loss.bn_distance!r}")
    _require(loss.bn_layer_weighting in BN_LAYER_WEIGHTINGS,
             f"--bn_layer_weighting must be one of {', '.join(BN_LAYER_WEIGHTINGS)}, got {loss.bn_layer_weighting!r}")
    for name, weight in (("ce_loss_weight", loss.cross_entropy), ("bn_loss_weight", loss.bn_statistics),
                         ("diversity_loss_weight", loss.diversity),
                         ("mode_seeking_loss_weight", loss.mode_seeking)):
        _require(weight >= 0, f"--{name} must be non-negative, got {weight}")
    _require(loss.cross_entropy > 0 or loss.bn_statistics > 0, "at least one of --ce_loss_weight and "
             "--bn_loss_weight must be positive")


def validate_low_bit_ranges(method: str):
    """Checks the range method of quantizers below 8 bits (a run's, or the benchmark's)."""
    _require(method in LOW_BIT_RANGE_METHODS,
             f"--low_bit_ranges must be one of {', '.join(LOW_BIT_RANGE_METHODS)}, got {method!r}")


# The pipeline's flag for each DistillationConfig field, as error messages name it.
DISTILLATION_FLAGS = {"steps": "distillation_steps", "batch_size": "distillation_batch_size",
                      "checkpoint_every": "distillation_checkpoint_every", "log_every": "distillation_log_every",
                      "learning_rate": "distillation_learning_rate", "temperature": "temperature",
                      "mixed_fraction": "mixed_fraction", "shift_fraction": "shift_fraction",
                      "label_loss_weight": "label_loss_weight", "feature_loss_weight": "feature_loss_weight"}


def validate_distillation(distillation: DistillationConfig, flag_names: Optional[Dict[str, str]] = None):
    """Checks the QAT settings' ranges.

    Args:
      distillation: the settings.
      flag_names: the flag each field is set by, for the messages (the benchmark's are
        `--qat_...`); fields not named take `DISTILLATION_FLAGS`' names.
    """
    flag = {**DISTILLATION_FLAGS, **(flag_names or {})}
    _require(distillation.steps >= 0, f"--{flag['steps']} must be non-negative, got {distillation.steps}")
    for field in ("batch_size", "checkpoint_every", "log_every"):
        value = getattr(distillation, field)
        _require(value >= 1, f"--{flag[field]} must be positive, got {value}")
    _require(distillation.learning_rate > 0,
             f"--{flag['learning_rate']} must be positive, got {distillation.learning_rate}")
    _require(distillation.temperature > 0, f"--{flag['temperature']} must be positive, got {distillation.temperature}")
    _require(0 <= distillation.mixed_fraction <= 1,
             f"--{flag['mixed_fraction']} must be in [0, 1], got {distillation.mixed_fraction}")
    _require(0 <= distillation.shift_fraction < 0.5,
             f"--{flag['shift_fraction']} must be in [0, 0.5), got {distillation.shift_fraction}")
    _require(distillation.label_loss_weight >= 0,
             f"--{flag['label_loss_weight']} must be non-negative, got {distillation.label_loss_weight}")
    _require(distillation.feature_loss_weight >= 0,
             f"--{flag['feature_loss_weight']} must be non-negative, got {distillation.feature_loss_weight}")


def check_types(config: RunConfig) -> None:
    """Refuses a section or a value of another type than its field's, naming the field: a
    `RunConfig` built in Python may hold a dict for a section or "10" for a step count, which
    the range checks would meet as an AttributeError or TypeError.

    Raises:
      UserError: "generator_training.steps must be an int, got '10'".
    """
    for field in dataclasses.fields(config):
        section = getattr(config, field.name)
        expected = _FIELD_TYPES[RunConfig][field.name]
        if not dataclasses.is_dataclass(expected):
            _check_type(section, expected, field.name)
            continue
        if not isinstance(section, expected):
            raise UserError(f"{field.name} must be a {expected.__name__}, got {type(section).__name__} "
                            f"{_quoted(section)}" + (f" (a {expected.__name__}(...) of its values)"
                                                     if isinstance(section, dict) else ""))
        for inner in dataclasses.fields(section):
            _check_type(getattr(section, inner.name), _FIELD_TYPES[expected][inner.name],
                        f"{field.name}.{inner.name}")


def _check_type(value, expected, where: str) -> None:
    element = typing.get_args(expected)[0] if typing.get_origin(expected) is tuple else None
    if element is not None:
        fits = isinstance(value, tuple) and all(_is_a(item, element) for item in value)
        kind = f"a tuple of {element.__name__}s"
    else:
        fits = _is_a(value, expected)
        kind = f"{'an' if expected.__name__[0] in 'aeiou' else 'a'} {expected.__name__}"
    if not fits:
        raise UserError(f"{where} must be {kind}, got {_quoted(value)}")


def _is_a(value, expected) -> bool:
    """`isinstance`, but a bool is no number, and an int is a float."""
    if expected in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if expected is float else expected)


def _quoted(value) -> str:
    text = repr(value)
    return text if len(text) <= MAX_QUOTED_VALUE else text[:MAX_QUOTED_VALUE] + "..."


def validate(config: RunConfig):
    """Checks every value's range; raises `UserError` quoting the first bad one."""
    _require(bool(config.work_dir), "--work_dir must not be empty")
    _require(0 <= config.seed <= MAX_SEED, f"--seed must be in [0, {MAX_SEED}], got {config.seed}")
    teacher = config.teacher
    _require(bool(teacher.model), "--teacher must name a model")
    _require(teacher.alpha > 0, f"--teacher_alpha must be positive, got {teacher.alpha}")
    _require(teacher.input_size >= 0, f"--teacher_input_size must be non-negative, got {teacher.input_size}")
    _require(teacher.num_classes == 0 or teacher.num_classes >= 2,
             f"--teacher_num_classes must be at least 2 (or 0 for the model's own), got {teacher.num_classes}")
    _require(teacher.channels in (1, 3), f"--teacher_channels must be 1 or 3, got {teacher.channels}")
    validate_generator(config.generator)
    validate_loss(config.loss)
    training = config.generator_training
    for name, value in (("generator_steps", training.steps), ("batch_size", training.batch_size),
                        ("checkpoint_every", training.checkpoint_every), ("log_every", training.log_every),
                        ("image_every", training.image_every)):
        _require(value >= 1, f"--{name} must be positive, got {value}")
    _require(training.batch_size >= 2, f"--batch_size must be at least 2 (BN statistics need a batch), "
             f"got {training.batch_size}")
    _require(training.learning_rate > 0, f"--generator_learning_rate must be positive, got {training.learning_rate}")
    for name, value in (("generator_beta_1", training.beta_1), ("generator_beta_2", training.beta_2)):
        _require(0 <= value < 1, f"--{name} must be in [0, 1), got {value}")
    quantization = config.quantization
    scheme = SCHEME_NAME_PATTERN.match(quantization.scheme)
    _require(bool(scheme) and all(MIN_BITS <= int(bits) <= MAX_BITS for bits in scheme.groups()),
             f"--quantization must be w<weight bits>a<activation bits> with each width in {MIN_BITS}..{MAX_BITS} "
             f"(w8a8, w4a8, w4a4, ...), got {quantization.scheme!r}")
    validate_low_bit_ranges(quantization.low_bit_ranges)
    _require(quantization.io_dtype in IO_DTYPES,
             f"--io_dtype must be one of {', '.join(IO_DTYPES)}, got {quantization.io_dtype!r}")
    _require(quantization.calibration_samples >= 1,
             f"--calibration_samples must be positive, got {quantization.calibration_samples}")
    validate_distillation(config.distillation)
    evaluation = config.evaluation
    for name, value in (("eval_samples_per_class", evaluation.samples_per_class),
                        ("grid_samples_per_class", evaluation.grid_samples_per_class),
                        ("grid_max_classes", evaluation.grid_max_classes),
                        ("latency_runs", evaluation.latency_runs)):
        _require(value >= 1, f"--{name} must be positive, got {value}")
    _require(evaluation.max_samples >= 0, f"--eval_max_samples must be non-negative, got {evaluation.max_samples}")


def current_dict(config: RunConfig) -> Dict[str, Any]:
    """`config` as the JSON dict a work directory saves."""
    return json.loads(json.dumps(config.to_dict()))
