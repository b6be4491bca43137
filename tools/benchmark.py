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
settings, so a rerun after a crash skips finished rows. `results.json` and `results.md`
(a table per teacher and a verdict per target) are rewritten after every row.
Bad input prints one `error: ...` line and exits with status 2; Ctrl-C saves the running
stage's checkpoint and exits with status 130 (rerun the same command to resume).
"""

import hashlib
import json
import os
import sys
import time
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import zscgan_tf  # noqa: F401,E402  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from zscgan_tf import config as config_lib  # noqa: E402
from zscgan_tf import bn_stats, cli, data, distill, distilled_data, evaluate, export, pipeline  # noqa: E402
from zscgan_tf import progress, quantization_stages, quantize, reproducibility, teachers  # noqa: E402
from zscgan_tf import throughput, zero_shot  # noqa: E402
from zscgan_tf.errors import UserError  # noqa: E402
from zscgan_tf.files import read_json, write_json_atomic, write_text_atomic  # noqa: E402

ROWS_FILE = "rows.json"
RESULTS_JSON_FILE = "results.json"
RESULTS_MARKDOWN_FILE = "results.md"
EVALUATION_BATCH_SIZE = 256
# Seeds derived from --seed, so that no two random streams coincide.
CALIBRATION_SEED_OFFSET = quantization_stages.CALIBRATION_SEED_OFFSET
DISTILLATION_SEED_OFFSET = quantization_stages.DISTILLATION_SEED_OFFSET
NOISE_SEED_OFFSET = 5
EVALUATION_SEED_OFFSET = 6
SPREAD_SEED_OFFSET = 100  # Calibration draw k of the spread measurement uses seed + 100 + k.
W4A4_SPREAD_SEED_OFFSET = 200  # W4A4 QAT repeat k distils with seed + 200 + k.
# Further generator pool k (from 1) trains with seed + 1000 * pool size * k: its members'
# seeds (every 1000) follow the last member of the pool before it, so no two coincide.
POOL_DRAW_SEED_STRIDE = pipeline.POOL_MEMBER_SEED_STRIDE
SOURCE_LABELS = {"real": "real-data", "zscgan": "ZS-CGAN"}  # The calibration sources of the spread.
# The targets, in accuracy points.
W8A8_TOLERANCE_POINTS = 0.1
W4A4_VERSUS_REAL_QAT_POINTS = 1.0
W4A4_VERSUS_FP32_POINTS = 2.0  # Checked for ResNet teachers only.
MAX_INT8_SIZE_RATIO = 0.27
MIN_COMPILED_SPEEDUP = 1.5
REPRODUCIBILITY_POINTS = 0.3
LATENCY_THREADS = quantization_stages.LATENCY_THREADS
SPEED_TIMED_STEPS = 10
SPEED_WARMUP_STEPS = 2

FLAGS = flags.FLAGS
_generator = config_lib.GeneratorConfig()
flags.DEFINE_list("teachers", ["builtin:fashion_mnist_resnet20"], "Teachers: builtin:<name> or model files.")
flags.DEFINE_string("teacher_cache_dir", "", "Where built-in teachers are kept; empty = ~/.cache/zscgan_tf.")
flags.DEFINE_string("dataset", "", "Real data (data.load_dataset source); empty = the teacher's own dataset.")
flags.DEFINE_string("data_dir", "", "Where --dataset is read from (IDX or TFDS directory).")
flags.DEFINE_string("work_dir", "runs/benchmark", "Directory for generators, QAT checkpoints, models and results.")
flags.DEFINE_integer("eval_max_samples", 0, "Evaluate on at most this many test images (class-balanced); 0 = all.")
flags.DEFINE_integer("calibration_samples", 500, "Calibration samples of every source (class-balanced).")
flags.DEFINE_list("schemes", ["w8a8", "w4a4", "w4a8"], "QAT bit widths; w8a8 is exported, the others simulated.")
flags.DEFINE_enum("low_bit_ranges", quantize.QuantizationScheme.low_bit_ranges, list(quantize.LOW_BIT_RANGE_METHODS),
                  "Ranges of quantizers below 8 bits in the w4 rows (real and generated alike): mse = least squared "
                  "rounding error, held during QAT; min_max = TF-MOT's observed extremes.")
flags.DEFINE_integer("qat_steps", 1000, "Student updates of every QAT row.")
flags.DEFINE_integer("qat_batch_size", 128, "Samples per student update, real and generated alike.")
flags.DEFINE_float("qat_learning_rate", config_lib.DistillationConfig.learning_rate,
                   "Adam learning rate of the students (cosine decay to 0).")
flags.DEFINE_float("qat_feature_loss_weight", config_lib.DistillationConfig.feature_loss_weight,
                   "Every QAT row (real or generated): weight of the BatchNorm-feature term; 0 = off.")
flags.DEFINE_float("qat_mixed_fraction", config_lib.DistillationConfig.mixed_fraction,
                   "Fraction of every QAT batch (real or generated) replaced by mixtures of two samples.")
flags.DEFINE_float("qat_shift_fraction", config_lib.DistillationConfig.shift_fraction,
                   "Every QAT batch (real or generated): random shifts up to this fraction of the image size.")
flags.DEFINE_bool("qat_flip", config_lib.DistillationConfig.flip,
                  "Every QAT batch (real or generated): mirror a random half left to right.")
flags.DEFINE_bool("qat_joint_generator", config_lib.DistillationConfig.joint_generator,
                  "ZS-CGAN QAT rows keep training a copy of the generator along with the student (GDFQ).")
flags.DEFINE_integer("generator_steps", 1500, "Generator updates.")
flags.DEFINE_integer("generator_batch_size", 64, "Samples per generator update.")
flags.DEFINE_integer("noise_dim", _generator.noise_dim, "Length of the generator's noise vector.")
flags.DEFINE_integer("generator_channels", _generator.base_channels, "Channels of the generator trunk.")
flags.DEFINE_float("generator_blur_sigma", _generator.blur_sigma,
                   "Gaussian low-pass of every generated sample, sigma in pixels; 0 = off.")
flags.DEFINE_integer("generator_pool_size", _generator.pool_size,
                     "Generators trained apart (other seeds) and pooled for every ZS-CGAN row; 1 = one generator.")
flags.DEFINE_float("mode_seeking_loss_weight", config_lib.LossConfig.mode_seeking,
                   "Weight of the generator's mode-seeking term; 0 = off.")
flags.DEFINE_enum("bn_layer_weighting", config_lib.LossConfig.bn_layer_weighting, bn_stats.BN_LAYER_WEIGHTINGS,
                  "How the generator's BN-statistics term weighs the teacher's BN layers: uniform, or noise_floor "
                  "(each 1 / (1 + the KL a batch scores there by chance)).")
flags.DEFINE_integer("distilled_steps", distilled_data.DistilledDataConfig.steps,
                     "Adam updates of each batch of distilled-data (ZeroQ-style) calibration inputs.")
flags.DEFINE_integer("calibration_draws", 5, "Further calibration draws of real-data and ZS-CGAN PTQ, to measure how "
                     "much one int8 figure moves by chance; 0 = skip.")
flags.DEFINE_integer("w4a4_seed_draws", 0, "Further runs of ZS-CGAN and real-data W4A4 QAT with other "
                     "distillation seeds (the samples each step draws, their mixtures and shifts), to measure how "
                     "much one W4A4 figure moves by chance; the W4A4 targets then compare means over every run. "
                     "0 = skip.")
flags.DEFINE_integer("generator_pool_draws", 0, "Further generator pools, each trained as the benchmark's own but "
                     "with other seeds and distilled into W4A4 students at the W4A4 rows' distillation seeds (the "
                     "row's and --w4a4_seed_draws'), to measure how much the ZS-CGAN W4A4 figure moves with the "
                     "generators drawn; the W4A4 targets then take the ZS-CGAN mean over every pool. 0 = skip.")
flags.DEFINE_integer("latency_runs", 200, "Timed LiteRT runs per latency figure (the median is reported).")
flags.DEFINE_string("compare_to", "", "An earlier --work_dir: report how far each row computed there with the "
                    "same settings moved.")
flags.DEFINE_integer("seed", 0, "Seed of every random stream (offsets derive the others).")
flags.DEFINE_bool("deterministic", True, "Repeat every figure exactly for the same seeds (TensorFlow's deterministic "
                  "kernels, graph optimizer off); off, generator rows vary from run to run.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")


def _say(message: str):
    print(message, flush=True)


def _points(value: float) -> str:
    return f"{100 * value:.2f}"


def _summary(result: dict) -> str:
    """What a row's progress line shows: its top-1, if it has one."""
    return f" top-1 {_points(result['top1'])}%" if "top1" in result else " done"


def row_key(row_id: str, settings: dict) -> str:
    """The cache key of a row: its id and every setting its result depends on."""
    return json.dumps({"row": row_id, **settings}, sort_keys=True)


def generator_settings() -> dict:
    """The settings the generator, and every row using it, depend on."""
    settings = {"generator_steps": FLAGS.generator_steps, "generator_batch_size": FLAGS.generator_batch_size,
                "noise_dim": FLAGS.noise_dim, "generator_channels": FLAGS.generator_channels}
    # Named only when on, so rows cached before they existed stay valid.
    if FLAGS.mode_seeking_loss_weight:
        settings["mode_seeking_loss_weight"] = FLAGS.mode_seeking_loss_weight
    if FLAGS.generator_blur_sigma:
        settings["generator_blur_sigma"] = FLAGS.generator_blur_sigma
    if FLAGS.generator_pool_size != 1:
        settings["generator_pool_size"] = FLAGS.generator_pool_size
    if FLAGS.bn_layer_weighting != "uniform":
        settings["bn_layer_weighting"] = FLAGS.bn_layer_weighting
    return settings


def generator_config() -> config_lib.GeneratorConfig:
    """The generator architecture the flags describe (trained and speed-measured alike)."""
    return config_lib.GeneratorConfig(noise_dim=FLAGS.noise_dim, base_channels=FLAGS.generator_channels,
                                      blur_sigma=FLAGS.generator_blur_sigma, pool_size=FLAGS.generator_pool_size)


def generator_loss_config() -> config_lib.LossConfig:
    """The generator loss the flags describe (its own training and joint training alike)."""
    return config_lib.LossConfig(mode_seeking=FLAGS.mode_seeking_loss_weight,
                                 bn_layer_weighting=FLAGS.bn_layer_weighting)


# The benchmark's flag for each QAT setting it sets, as error messages name it.
QAT_FLAGS = {"steps": "qat_steps", "batch_size": "qat_batch_size", "learning_rate": "qat_learning_rate",
             "feature_loss_weight": "qat_feature_loss_weight", "mixed_fraction": "qat_mixed_fraction",
             "shift_fraction": "qat_shift_fraction"}


def qat_settings(joint_generator: bool = False) -> config_lib.DistillationConfig:
    """The settings of every QAT row (real or generated); `joint_generator` only for ZS-CGAN rows."""
    return config_lib.DistillationConfig(steps=FLAGS.qat_steps, batch_size=FLAGS.qat_batch_size,
                                         learning_rate=FLAGS.qat_learning_rate,
                                         feature_loss_weight=FLAGS.qat_feature_loss_weight,
                                         mixed_fraction=FLAGS.qat_mixed_fraction,
                                         shift_fraction=FLAGS.qat_shift_fraction, flip=FLAGS.qat_flip,
                                         joint_generator=joint_generator)


def optional_qat_settings() -> dict:
    """The QAT options that are on; named only when on, so rows cached before they existed stay valid."""
    settings = {"qat_feature_loss_weight": FLAGS.qat_feature_loss_weight, "qat_mixed_fraction": FLAGS.qat_mixed_fraction,
                "qat_shift_fraction": FLAGS.qat_shift_fraction, "qat_flip": FLAGS.qat_flip}
    return {name: value for name, value in settings.items() if value}


def quantization_scheme(name: str) -> quantize.QuantizationScheme:
    """The scheme of a QAT row: first and last layers at 8 bits, `--low_bit_ranges`."""
    return quantize.QuantizationScheme.from_name(name, keep_first_and_last_at_8_bits=True,
                                                 low_bit_ranges=FLAGS.low_bit_ranges)


def low_bit_range_settings(scheme_name: str) -> dict:
    """The range setting a QAT row depends on; named only for fitted ranges of a scheme below 8 bits,
    so that rows cached before the setting existed (min/max) stay valid."""
    if quantization_scheme(scheme_name).holds_ranges_in_training:
        return {"low_bit_ranges": FLAGS.low_bit_ranges}
    return {}


def current_rows(cache: dict, rows: list) -> dict:
    """The cached results of `rows` computed with their present settings: a row cached under other
    settings (a rerun with changed flags, not yet recomputed) is left out, not shown as current."""
    return {row_id: cache[row_id]["result"] for row_id, _, _, settings in rows
            if row_id in cache and cache[row_id]["key"] == row_key(row_id, settings)}


def compare_rows(cache: dict, earlier_cache: dict, earlier_dir: str) -> dict:
    """How far each accuracy row moved from an earlier run with the same settings (same cache key)."""
    compared = []
    for row_id, entry in cache.items():
        earlier = earlier_cache.get(row_id)
        if "top1" not in entry["result"] or not earlier or earlier["key"] != entry["key"]:
            continue
        difference = 100 * (entry["result"]["top1"] - earlier["result"]["top1"])
        compared.append({"id": row_id, "label": entry["result"]["label"], "top1": entry["result"]["top1"],
                         "earlier_top1": earlier["result"]["top1"], "difference_points": round(difference, 4)})
    largest = max((abs(row["difference_points"]) for row in compared), default=None)
    return {"compared_to": earlier_dir, "rows": compared, "max_difference_points": largest,
            "met": largest is not None and largest <= REPRODUCIBILITY_POINTS}


# Measurement helpers.

def keras_top1(model, inputs: np.ndarray, labels: np.ndarray) -> float:
    return evaluate.top1_accuracy(evaluate.keras_predict(model, inputs, EVALUATION_BATCH_SIZE), labels)


def tflite_top1(model_bytes: bytes, inputs: np.ndarray, labels: np.ndarray) -> float:
    return evaluate.top1_accuracy(evaluate.TfliteClassifier(model_bytes).predict(inputs), labels)


def real_inputs(dataset: data.LabeledImages, teacher: teachers.Teacher):
    """(teacher-space inputs, labels) of `dataset` shaped for the teacher."""
    dataset = dataset.to_input_shape(teacher.image_shape)
    return teacher.preprocessing.apply(dataset.images), dataset.labels


def int8_ptq(model, calibration: np.ndarray, output_path: Optional[str], per_channel: bool = True) -> bytes:
    """Int8 TFLite of `model` calibrated on `calibration`, written to `output_path` unless it is None."""
    return export.convert_to_tflite(model, export.representative_dataset_from_array(calibration), mode="int8",
                                    per_channel=per_channel, output_path=output_path)


# One teacher.

class TeacherBenchmark:
    """The rows of one teacher, each computed at most once per settings (cached in rows.json)."""

    def __init__(self, source: str):
        self.teacher = teachers.load_teacher(teachers.TeacherSource(model=source, cache_dir=FLAGS.teacher_cache_dir),
                                             progress=FLAGS.progress)
        self.dir = os.path.join(FLAGS.work_dir, self.teacher.name)
        os.makedirs(self.dir, exist_ok=True)
        dataset_name = FLAGS.dataset or self.teacher.description.get("dataset", "")
        if not dataset_name:
            raise UserError(f"teacher {self.teacher.name!r} names no dataset; pass --dataset")
        self.dataset_name = dataset_name
        train = data.load_dataset(dataset_name, "train", data_dir=FLAGS.data_dir or None)
        test = data.load_dataset(dataset_name, "test", data_dir=FLAGS.data_dir or None)
        if train.num_classes != self.teacher.num_classes:
            raise UserError(f"{dataset_name} has {train.num_classes} classes but teacher {self.teacher.name!r} "
                            f"predicts {self.teacher.num_classes}")
        if FLAGS.eval_max_samples:
            test = test.class_balanced(FLAGS.eval_max_samples, seed=FLAGS.seed + EVALUATION_SEED_OFFSET)
        self.test_inputs, self.test_labels = real_inputs(test, self.teacher)
        self.train_inputs, self.train_labels = real_inputs(train, self.teacher)
        self.train = train
        calibration_seed = FLAGS.seed + CALIBRATION_SEED_OFFSET
        self.calibration = {
            "real": self.calibration_draw("real", calibration_seed),
            "noise": distilled_data.gaussian_noise_inputs(self.teacher, FLAGS.calibration_samples,
                                                          FLAGS.seed + NOISE_SEED_OFFSET)}
        self.generators = {}  # Pool draw (0 = the benchmark's own pool) -> trained generator.
        # Seconds spent loading or training the benchmark's own pool. It has its own entry in the
        # stage times, so the row that first needs it does not count them. Further pools have no
        # entry of their own: their training stays in the time of the row that trains them.
        self.own_pool_seconds = 0.0
        self.cache_path = os.path.join(self.dir, ROWS_FILE)
        self.cache = read_json(self.cache_path, {})  # An unreadable cache means every row is recomputed.

    def rows(self):
        """(row id, label, function computing it, the settings it depends on), in the order they run."""
        common = {"teacher": self.teacher.name, "dataset": self.dataset_name, "eval_images": len(self.test_labels),
                  "calibration_samples": FLAGS.calibration_samples, "seed": FLAGS.seed}
        generated = generator_settings()
        qat = {"qat_steps": FLAGS.qat_steps, "qat_batch_size": FLAGS.qat_batch_size,
               "qat_learning_rate": FLAGS.qat_learning_rate}
        qat.update(optional_qat_settings())
        zscgan_qat = {**qat, "qat_joint_generator": True} if FLAGS.qat_joint_generator else qat
        rows = [("fp32", "FP32", self.fp32, common),
                ("real_ptq", "real-data PTQ", lambda: self.ptq("real"), common),
                ("noise_ptq", "noise PTQ", lambda: self.ptq("noise"), common),
                ("distilled_ptq", "distilled-data PTQ", lambda: self.ptq("distilled"),
                 {**common, "distilled_steps": FLAGS.distilled_steps}),
                ("zscgan_ptq", "ZS-CGAN PTQ", lambda: self.ptq("zscgan"), {**common, **generated}),
                ("zscgan_ptq_per_tensor", "ZS-CGAN PTQ, per-tensor weights",
                 lambda: self.ptq("zscgan", per_channel=False), {**common, **generated})]
        for scheme in FLAGS.schemes:
            ranges = low_bit_range_settings(scheme)
            rows.append((f"zscgan_qat_{scheme}", f"ZS-CGAN QAT {scheme.upper()}",
                         lambda scheme=scheme: self.qat(scheme, "zscgan"),
                         {**common, **generated, **zscgan_qat, **ranges}))
            rows.append((f"real_qat_{scheme}", f"real-data QAT {scheme.upper()}",
                         lambda scheme=scheme: self.qat(scheme, "real"), {**common, **qat, **ranges}))
        # Measurements other than accuracy, cached the same way.
        rows.append(("latency", "LiteRT latency", self.latency, {**common, **generated}))
        rows.append(("generator_speed", "generator step speed", self.generator_speed, {**common, **generated}))
        if FLAGS.calibration_draws:
            rows.append(("ptq_spread", "PTQ over calibration draws", self.ptq_spread,
                         {**common, **generated, "calibration_draws": FLAGS.calibration_draws}))
        if FLAGS.w4a4_seed_draws and "w4a4" in FLAGS.schemes:
            rows.append(("w4a4_spread", "W4A4 QAT over distillation seeds", self.w4a4_spread,
                         {**common, **generated, **zscgan_qat, **low_bit_range_settings("w4a4"),
                          "w4a4_seed_draws": FLAGS.w4a4_seed_draws}))
        if FLAGS.generator_pool_draws and "w4a4" in FLAGS.schemes:
            rows.append(("w4a4_pool_spread", "ZS-CGAN W4A4 QAT over generator pools", self.w4a4_pool_spread,
                         {**common, **generated, **zscgan_qat, **low_bit_range_settings("w4a4"),
                          "w4a4_seed_draws": FLAGS.w4a4_seed_draws, "generator_pool_draws": FLAGS.generator_pool_draws}))
        return rows

    def run(self, publish) -> dict:
        """Computes every row not cached yet; calls `publish()` after each."""
        rows = self.rows()
        for index, (row_id, label, compute, settings) in enumerate(rows, 1):
            key = row_key(row_id, settings)
            cached = self.cache.get(row_id)
            if cached and cached["key"] == key:
                _say(f"[{self.teacher.name}] row {index}/{len(rows)} {label}: cached{_summary(cached['result'])}")
                continue
            _say(f"[{self.teacher.name}] row {index}/{len(rows)} {label}: computing")
            started, own_pool_seconds = time.monotonic(), self.own_pool_seconds
            computed = compute()
            seconds = time.monotonic() - started - (self.own_pool_seconds - own_pool_seconds)
            result = {"id": row_id, "label": label, **computed, "seconds": round(seconds, 1)}
            self.cache[row_id] = {"key": key, "result": result}
            write_json_atomic(self.cache_path, self.cache)
            _say(f"[{self.teacher.name}] row {index}/{len(rows)} {label}:{_summary(result)} ({result['seconds']:.0f} s)")
            publish()
        return self.results()

    def results(self) -> dict:
        rows = current_rows(self.cache, self.rows())
        entry = {"dataset": self.dataset_name, "eval_images": int(len(self.test_labels)),
                 "rows": {row_id: row for row_id, row in rows.items() if "top1" in row},
                 "measurements": {row_id: row for row_id, row in rows.items() if "top1" not in row}}
        generator_state = pipeline.read_state(os.path.join(self.dir, "generator")).get("generator")
        if generator_state:
            entry["generator_training"] = pipeline.generator_training_summary(generator_state)
        if FLAGS.compare_to:
            entry["reproducibility"] = compare_rows(self.cache, read_json(
                os.path.join(FLAGS.compare_to, self.teacher.name, ROWS_FILE), {}), FLAGS.compare_to)
        return entry

    def fp32(self) -> dict:
        path = os.path.join(self.dir, "teacher_float.tflite")
        float_bytes = export.convert_to_tflite(self.teacher.model, mode="float", output_path=path)
        return {"top1": keras_top1(self.teacher.model, self.test_inputs, self.test_labels), "measured": "Keras",
                "tflite_bytes": len(float_bytes)}

    def calibration_draw(self, source: str, seed: int, pool_draw: int = 0) -> np.ndarray:
        """`--calibration_samples` class-balanced samples of `source` ("real" or "zscgan") drawn with `seed`;
        generated ones from generator pool `pool_draw` (0 = the benchmark's own)."""
        if source == "real":
            return real_inputs(self.train.class_balanced(FLAGS.calibration_samples, seed), self.teacher)[0]
        return quantization_stages.calibration_samples(self.trained_generator(pool_draw), self.teacher,
                                                       FLAGS.calibration_samples, seed=seed)

    def calibration_for(self, source: str, pool_draw: int = 0) -> np.ndarray:
        """The rows' calibration samples of `source`; generated ones from generator pool `pool_draw`."""
        if source == "zscgan":
            key = f"zscgan_pool_draw{pool_draw}" if pool_draw else source
            if key not in self.calibration:
                self.calibration[key] = self.calibration_draw(source, FLAGS.seed + CALIBRATION_SEED_OFFSET, pool_draw)
            return self.calibration[key]
        if source == "distilled" and source not in self.calibration:
            distilled = distilled_data.distill_inputs(
                self.teacher, FLAGS.calibration_samples, distilled_data.DistilledDataConfig(steps=FLAGS.distilled_steps),
                seed=FLAGS.seed + NOISE_SEED_OFFSET, progress=FLAGS.progress)
            _say(f"[{self.teacher.name}] distilled data: BN-statistics loss {distilled.initial_bn_loss:.4g} -> "
                 f"{distilled.final_bn_loss:.4g}")
            self.calibration[source] = distilled.inputs
        return self.calibration[source]

    def ptq(self, source: str, per_channel: bool = True) -> dict:
        name = f"{source}_ptq_int8{'' if per_channel else '_per_tensor'}.tflite"
        model_bytes = int8_ptq(self.teacher.model, self.calibration_for(source), os.path.join(self.dir, name),
                               per_channel=per_channel)
        return {"top1": tflite_top1(model_bytes, self.test_inputs, self.test_labels), "measured": "TFLite int8",
                "tflite_bytes": len(model_bytes)}

    def ptq_spread(self) -> dict:
        """Real-data and ZS-CGAN PTQ, each calibrated on `--calibration_draws` other draws.

        Each draw's top-1 and its agreement with the float teacher (the fraction of test
        images on which the int8 model picks the teacher's class).
        """
        float_logits = evaluate.keras_predict(self.teacher.model, self.test_inputs, EVALUATION_BATCH_SIZE)
        result = {"draws": FLAGS.calibration_draws}
        for source in SOURCE_LABELS:
            draws = []
            for draw in range(FLAGS.calibration_draws):
                seed = FLAGS.seed + SPREAD_SEED_OFFSET + draw
                model_bytes = int8_ptq(self.teacher.model, self.calibration_draw(source, seed), output_path=None)
                logits = evaluate.TfliteClassifier(model_bytes).predict(self.test_inputs)
                draws.append({"seed": seed, "top1": evaluate.top1_accuracy(logits, self.test_labels),
                              "agreement_with_fp32": evaluate.agreement(logits, float_logits)})
                _say(f"[{self.teacher.name}] {SOURCE_LABELS[source]} PTQ, calibration draw {draw + 1}/"
                     f"{FLAGS.calibration_draws}: top-1 {_points(draws[-1]['top1'])}%")
            result[source] = draws
        return result

    def w4a4_spread(self) -> dict:
        """ZS-CGAN and real-data W4A4 QAT, each run `--w4a4_seed_draws` more times with other
        distillation seeds (the generator, calibration and student initialisation unchanged)."""
        result = {"draws": FLAGS.w4a4_seed_draws}
        for source in SOURCE_LABELS:
            runs = []
            for draw, seed in enumerate(w4a4_spread_seeds()):
                runs.append({"seed": seed, "top1": self.qat("w4a4", source, distillation_seed=seed)["top1"]})
                _say(f"[{self.teacher.name}] {SOURCE_LABELS[source]} QAT W4A4, distillation seed {draw + 1}/"
                     f"{FLAGS.w4a4_seed_draws}: top-1 {_points(runs[-1]['top1'])}%")
            result[source] = runs
        return result

    def w4a4_pool_spread(self) -> dict:
        """ZS-CGAN W4A4 QAT on `--generator_pool_draws` further generator pools, each trained as the
        benchmark's own with other seeds, at the W4A4 rows' distillation seeds (the row's own and those
        of `--w4a4_seed_draws`); calibration and student initialisation as the row's, from that pool."""
        distillation_seeds = [FLAGS.seed + DISTILLATION_SEED_OFFSET] + w4a4_spread_seeds()
        result = {"draws": FLAGS.generator_pool_draws, "generator_seed": pool_draw_seed(0), "pools": []}
        for pool_draw in range(1, FLAGS.generator_pool_draws + 1):
            runs = []
            for seed in distillation_seeds:
                runs.append({"seed": seed, "top1": self.qat("w4a4", "zscgan", distillation_seed=seed,
                                                             pool_draw=pool_draw)["top1"]})
                _say(f"[{self.teacher.name}] ZS-CGAN QAT W4A4, further generator pool {pool_draw}/"
                     f"{FLAGS.generator_pool_draws} (seed {pool_draw_seed(pool_draw)}), distillation seed {seed}: "
                     f"top-1 {_points(runs[-1]['top1'])}%")
            result["pools"].append({"generator_seed": pool_draw_seed(pool_draw), "runs": runs})
        return result

    def latency(self) -> dict:
        """Median LiteRT latency per image of the float teacher and the ZS-CGAN int8 model."""
        result = {}
        for model_name, file_name in (("float", "teacher_float.tflite"), ("int8", "zscgan_ptq_int8.tflite")):
            if not os.path.exists(os.path.join(self.dir, file_name)):
                raise UserError(f"{os.path.join(self.dir, file_name)} is missing; delete {self.cache_path} to "
                                "recompute every row")
            with open(os.path.join(self.dir, file_name), "rb") as model_file:
                model_bytes = model_file.read()
            for threads in LATENCY_THREADS:
                measured = evaluate.measure_latency(model_bytes, num_threads=threads, runs=FLAGS.latency_runs)
                result[f"{model_name}_{threads}_threads_ms"] = measured.median_ms
        return result

    def generator_speed(self) -> dict:
        """The generator step compiled and eager, on a throwaway generator of the benchmark's shape."""
        generator = pipeline.build_generator_for(self.teacher, generator_config())
        trainer = zero_shot.GeneratorTrainer(self.teacher, generator, config_lib.LossConfig(),
                                             config_lib.GeneratorTrainingConfig(batch_size=FLAGS.generator_batch_size),
                                             seed=FLAGS.seed)
        return throughput.measure_generator_step(trainer, SPEED_TIMED_STEPS, SPEED_WARMUP_STEPS).to_dict()

    def trained_generator(self, pool_draw: int = 0):
        """The benchmark's generator pool (`pool_draw` 0, in `generator/`) or further pool `pool_draw`
        (in `generator_draw<k>/`), trained on first use and resumable as a train run is."""
        if pool_draw not in self.generators:
            run_config = config_lib.RunConfig(
                work_dir=os.path.join(self.dir, f"generator_draw{pool_draw}" if pool_draw else "generator"),
                seed=pool_draw_seed(pool_draw),
                teacher=teachers.TeacherSource(model=self.teacher.description["source"],
                                               cache_dir=FLAGS.teacher_cache_dir),
                generator=generator_config(),
                loss=generator_loss_config(),
                generator_training=config_lib.GeneratorTrainingConfig(steps=FLAGS.generator_steps,
                                                                      batch_size=FLAGS.generator_batch_size),
                # This run only trains the generator. Its QAT and quantization settings are never
                # used; they are pinned to those its directory was first saved with, so that a
                # change of their defaults does not orphan a trained generator.
                distillation=config_lib.DistillationConfig(feature_loss_weight=0.0),
                quantization=config_lib.QuantizationConfig(low_bit_ranges="min_max"))
            pipeline.prepare_work_dir(run_config)
            pipeline.record_config(run_config)
            state = pipeline.read_state(run_config.work_dir)
            started = time.monotonic()
            self.generators[pool_draw] = pipeline.generator_stage(run_config, self.teacher, state,
                                                                  progress=FLAGS.progress)
            if pool_draw == 0:
                self.own_pool_seconds += time.monotonic() - started
        return self.generators[pool_draw]

    def qat(self, scheme_name: str, source: str, distillation_seed: Optional[int] = None, pool_draw: int = 0) -> dict:
        """QAT of the teacher on `source` ("zscgan" or "real"); the row's own distillation seed unless
        `distillation_seed` is given, generated samples from the benchmark's pool unless `pool_draw` is."""
        scheme = quantization_scheme(scheme_name)
        calibration = self.calibration_for(source, pool_draw)
        student, _ = quantize.quantize_student(self.teacher.model, scheme, calibration_inputs=calibration)
        settings = qat_settings(joint_generator=FLAGS.qat_joint_generator and source == "zscgan")
        row_seed = FLAGS.seed + DISTILLATION_SEED_OFFSET
        seed = row_seed if distillation_seed is None else distillation_seed
        if source == "zscgan":
            trainer = None
            if settings.joint_generator:
                trainer = zero_shot.GeneratorTrainer(
                    self.teacher, zero_shot.copy_generator(self.trained_generator(pool_draw)),
                    generator_loss_config(),
                    config_lib.GeneratorTrainingConfig(batch_size=FLAGS.generator_batch_size),
                    seed=FLAGS.seed + quantization_stages.JOINT_GENERATOR_SEED_OFFSET)
            distiller = distill.Distiller(self.teacher.model, student, self.trained_generator(pool_draw),
                                          self.teacher.num_classes, settings, seed=seed, generator_trainer=trainer,
                                          hold_quantizer_ranges=scheme.holds_ranges_in_training)
        else:
            distiller = distill.Distiller(self.teacher.model, student, None, self.teacher.num_classes, settings,
                                          seed=seed, real_data=(self.train_inputs, self.train_labels),
                                          hold_quantizer_ranges=scheme.holds_ranges_in_training)
        teacher_weights = self.teacher.model.get_weights()
        # The directory names the settings, so a checkpoint never resumes under other ones.
        tag = hashlib.sha1(json.dumps([settings.steps, settings.batch_size, settings.learning_rate,
                                       settings.mixed_fraction, settings.joint_generator, FLAGS.seed,
                                       generator_settings()] + sorted(optional_qat_settings().items())
                                      + sorted(low_bit_range_settings(scheme_name).items()),
                                      sort_keys=True).encode()).hexdigest()[:8]
        run_name = (f"{source}_{scheme.name}_{tag}" + ("" if seed == row_seed else f"_seed{seed}")
                    + (f"_pool{pool_draw}" if pool_draw else ""))
        distiller.train(os.path.join(self.dir, "qat", run_name), progress=FLAGS.progress)
        zero_shot.check_teacher_unchanged(self.teacher, teacher_weights)
        keras_accuracy = keras_top1(student, self.test_inputs, self.test_labels)
        if not scheme.exportable:
            return {"top1": keras_accuracy, "measured": "Keras (simulated)"}
        model_bytes = int8_ptq(student, calibration, os.path.join(self.dir, f"{source}_qat_{scheme.name}_int8.tflite"))
        return {"top1": tflite_top1(model_bytes, self.test_inputs, self.test_labels), "measured": "TFLite int8",
                "keras_top1": keras_accuracy, "tflite_bytes": len(model_bytes)}


def w4a4_spread_seeds() -> list:
    """The distillation seeds of the `--w4a4_seed_draws` W4A4 repeats."""
    return [FLAGS.seed + W4A4_SPREAD_SEED_OFFSET + draw for draw in range(FLAGS.w4a4_seed_draws)]


def pool_draw_seed(pool_draw: int) -> int:
    """The seed generator pool `pool_draw` trains with (0: the benchmark's own, `--seed`)."""
    return FLAGS.seed + POOL_DRAW_SEED_STRIDE * FLAGS.generator_pool_size * pool_draw


# Targets and reports.

def targets(teacher_name: str, rows: dict, measurements: dict) -> list:
    """Each target as {target, met, detail}; targets whose rows are missing are left out."""
    top1 = {row_id: 100 * row["top1"] for row_id, row in rows.items()}
    checks = []

    def check(name, ids, condition, detail):
        if all(row_id in top1 for row_id in ids):
            checks.append({"target": name, "met": bool(condition()), "detail": detail()})

    spread = measurements.get("ptq_spread")
    # The real-data PTQ figure is one calibration draw; with the spread measured, say how far others go.
    real_draws = "" if not spread else (
        f" (over {spread['draws']} other draws {100 * min(draw['top1'] for draw in spread['real']):.2f}-"
        f"{100 * max(draw['top1'] for draw in spread['real']):.2f})")
    for row_id in ("zscgan_ptq", "zscgan_qat_w8a8"):
        check(f"{rows.get(row_id, {}).get('label', row_id)} within {W8A8_TOLERANCE_POINTS} point of FP32 and not "
              "below real-data PTQ", (row_id, "fp32", "real_ptq"),
              lambda r=row_id: top1[r] >= top1["fp32"] - W8A8_TOLERANCE_POINTS - 1e-9 and top1[r] >= top1["real_ptq"],
              lambda r=row_id: f"{top1[r]:.2f} vs FP32 {top1['fp32']:.2f} ({top1[r] - top1['fp32']:+.2f}), "
                               f"real-data PTQ {top1['real_ptq']:.2f}{real_draws}")
    # W4A4 QAT moves by a point or more with the distillation seed and the generators drawn; with
    # repeats measured, the targets compare the means over the row's own run and the repeats.
    w4a4, w4a4_runs = w4a4_figures(top1, measurements.get("w4a4_spread"), measurements.get("w4a4_pool_spread"))
    check(f"ZS-CGAN QAT W4A4 within {W4A4_VERSUS_REAL_QAT_POINTS} point of real-data QAT W4A4{w4a4_runs}",
          ("zscgan_qat_w4a4", "real_qat_w4a4"),
          lambda: w4a4["zscgan"] >= w4a4["real"] - W4A4_VERSUS_REAL_QAT_POINTS,
          lambda: f"{w4a4['zscgan']:.2f} vs {w4a4['real']:.2f} ({w4a4['zscgan'] - w4a4['real']:+.2f})")
    if "resnet" in teacher_name.lower():
        check(f"ZS-CGAN QAT W4A4 within {W4A4_VERSUS_FP32_POINTS} points of FP32 (ResNet){w4a4_runs}",
              ("zscgan_qat_w4a4", "fp32"),
              lambda: w4a4["zscgan"] >= top1["fp32"] - W4A4_VERSUS_FP32_POINTS,
              lambda: f"{w4a4['zscgan']:.2f} vs {top1['fp32']:.2f} ({w4a4['zscgan'] - top1['fp32']:+.2f})")
    for baseline in ("noise_ptq", "distilled_ptq"):
        check(f"ZS-CGAN PTQ above {rows.get(baseline, {}).get('label', baseline)}", ("zscgan_ptq", baseline),
              lambda b=baseline: top1["zscgan_ptq"] > top1[b],
              lambda b=baseline: f"{top1['zscgan_ptq']:.2f} vs {top1[b]:.2f}")
    sizes = {row_id: row["tflite_bytes"] for row_id, row in rows.items() if "tflite_bytes" in row}
    for row_id in ("zscgan_ptq", "zscgan_ptq_per_tensor"):
        if row_id in sizes and "fp32" in sizes:
            ratio = sizes[row_id] / sizes["fp32"]
            checks.append({"target": f"{rows[row_id]['label']}: int8 file at most {MAX_INT8_SIZE_RATIO} of the "
                                     "float file", "met": ratio <= MAX_INT8_SIZE_RATIO,
                           "detail": f"{sizes[row_id] / 1024:.1f} KiB / {sizes['fp32'] / 1024:.1f} KiB = {ratio:.3f}"})
    latency = measurements.get("latency")
    if latency:
        for threads in LATENCY_THREADS:
            float_ms, int8_ms = latency[f"float_{threads}_threads_ms"], latency[f"int8_{threads}_threads_ms"]
            checks.append({"target": f"int8 faster than float in LiteRT ({threads} thread{'s' * (threads > 1)})",
                           "met": int8_ms < float_ms,
                           "detail": f"{int8_ms:.3f} ms vs {float_ms:.3f} ms ({float_ms / int8_ms:.2f}x)"})
    speed = measurements.get("generator_speed")
    if speed:
        checks.append({"target": f"compiled generator step at least {MIN_COMPILED_SPEEDUP}x the eager one",
                       "met": speed["speedup"] >= MIN_COMPILED_SPEEDUP,
                       "detail": f"{speed['compiled_samples_per_second']:.0f} vs "
                                 f"{speed['eager_samples_per_second']:.0f} samples/s ({speed['speedup']:.2f}x)"})
    return checks


def w4a4_figures(top1: dict, spread, pool_spread=None) -> tuple:
    """({"zscgan": points, "real": points}, how they were formed) for the W4A4 targets: the rows'
    own top-1; with `spread` measured the mean over each row and its repeats; with `pool_spread`
    measured as well, ZS-CGAN's is the mean over every generator pool of those means."""
    figures = {source: top1.get(f"{source}_qat_w4a4") for source in SOURCE_LABELS}
    if None in figures.values() or not (spread or pool_spread):
        return figures, ""
    means = {source: float(np.mean([figures[source]] + [100 * run["top1"] for run in spread[source]]))
             if spread else figures[source] for source in SOURCE_LABELS}
    parts = [f"means over {spread['draws'] + 1} distillation seeds each"] if spread else []
    if pool_spread:
        means["zscgan"] = float(np.mean([means["zscgan"]] + [pool_mean(pool) for pool in pool_spread["pools"]]))
        parts.append(f"ZS-CGAN's {'' if spread else 'mean '}over {pool_spread['draws'] + 1} generator pools")
    return means, f" ({', '.join(parts)})"


def pool_mean(pool: dict) -> float:
    """A further generator pool's mean W4A4 top-1 over its distillation seeds, in points."""
    return float(np.mean([100 * run["top1"] for run in pool["runs"]]))


def format_results(results: dict) -> str:
    settings = results["settings"]
    lines = ["# Data-free quantization benchmark", "",
             f"QAT: {settings['qat_steps']} steps of {settings['qat_batch_size']} samples (lr "
             f"{settings['qat_learning_rate']}"
             + ("; ranges below 8 bits fitted by least squares and held" if settings.get("low_bit_ranges") == "mse"
                else "") + f"); generator: {settings['generator_steps']} steps of "
             f"{settings['generator_batch_size']}"
             + (f", blur sigma {settings['generator_blur_sigma']:g} px" if settings.get("generator_blur_sigma") else "")
             + (f", {settings['generator_pool_size']} generators pooled"
                if settings.get("generator_pool_size", 1) > 1 else "")
             + (f", BN layers weighted by {settings['bn_layer_weighting']}"
                if settings.get("bn_layer_weighting", "uniform") != "uniform" else "")
             + f"; calibration: {settings['calibration_samples']} samples; "
             f"seed {settings['seed']}.", ""]
    if "wall_seconds_this_session" in results:
        lines += [f"This invocation took {progress.format_duration(results['wall_seconds_this_session'])} "
                  "(rows already in the work directory are reused, not recomputed).", ""]
    for name, result in results["teachers"].items():
        lines += [f"## {name}", "", f"Top-1 on {result['eval_images']} {result['dataset']} test images.", "",
                  "| row | top-1 | measured | time |", "|---|---|---|---|"]
        # JSON files sort their keys; the table keeps the order the rows run in.
        order = ["fp32", "real_ptq", "noise_ptq", "distilled_ptq", "zscgan_ptq", "zscgan_ptq_per_tensor"] + [
            f"{source}_qat_{scheme}" for scheme in settings["schemes"] for source in ("zscgan", "real")]
        for row in sorted(result["rows"].values(), key=lambda row: order.index(row["id"])):
            measured = row["measured"] + (f" (Keras {_points(row['keras_top1'])}%)" if "keras_top1" in row else "")
            lines.append(f"| {row['label']} | {_points(row['top1'])}% | {measured} | {row['seconds']:.0f} s |")
        lines += format_measurements(result)
        lines += ["", "Targets:", ""]
        lines += [f"- {'met' if t['met'] else 'MISSED'}: {t['target']}: {t['detail']}" for t in result["targets"]]
        lines += format_reproducibility(result.get("reproducibility"))
        lines.append("")
    return "\n".join(lines)


def format_measurements(result: dict) -> list:
    """Sizes, latency, generator speed and stage times of one teacher, as markdown lines."""
    lines = []
    sizes = {row_id: row["tflite_bytes"] for row_id, row in result["rows"].items() if "tflite_bytes" in row}
    if "fp32" in sizes and "zscgan_ptq" in sizes:
        line = (f"TFLite sizes: float {sizes['fp32'] / 1024:.1f} KiB, int8 {sizes['zscgan_ptq'] / 1024:.1f} KiB "
                f"(ratio {sizes['zscgan_ptq'] / sizes['fp32']:.3f})")
        if "zscgan_ptq_per_tensor" in sizes:
            line += (f", int8 with per-tensor weights {sizes['zscgan_ptq_per_tensor'] / 1024:.1f} KiB "
                     f"(ratio {sizes['zscgan_ptq_per_tensor'] / sizes['fp32']:.3f})")
        lines += ["", line + "."]
    latency = result["measurements"].get("latency")
    if latency:
        lines += ["", "LiteRT latency per image (median, ms):", "", "| model | "
                  + " | ".join(f"{threads} thread{'s' * (threads > 1)}" for threads in LATENCY_THREADS) + " |",
                  "|---|" + "---|" * len(LATENCY_THREADS)]
        for model_name in ("float", "int8"):
            lines.append(f"| {model_name} | " + " | ".join(f"{latency[f'{model_name}_{threads}_threads_ms']:.3f}"
                                                          for threads in LATENCY_THREADS) + " |")
    lines += format_spread(result["measurements"].get("ptq_spread"), result["rows"])
    lines += format_w4a4_spread(result["measurements"].get("w4a4_spread"), result["rows"])
    lines += format_w4a4_pool_spread(result["measurements"], result["rows"])
    speed = result["measurements"].get("generator_speed")
    if speed:
        lines += ["", f"Generator step (batch {speed['batch_size']}): compiled {speed['compiled_samples_per_second']:.0f}"
                      f" samples/s, eager {speed['eager_samples_per_second']:.0f} samples/s ({speed['speedup']:.2f}x); "
                      f"{speed['flops_per_step'] / 1e9:.1f} GFLOP per step, "
                      f"{speed['flops_per_step'] / speed['compiled_seconds'] / 1e9:.0f} GFLOP/s = "
                      f"{100 * speed['fraction_of_peak']:.0f}% of this CPU's measured peak "
                      f"({speed['peak_flops_per_second'] / 1e9:.0f} GFLOP/s, float32 matrix product)."]
    training = result.get("generator_training")
    stage_times = [f"{row['label']} {row['seconds']:.0f} s"
                   for row in [*result["rows"].values(), *result["measurements"].values()]]
    if training:
        pool = f"{training['generators']} generators, " if training.get("generators") else ""
        stage_times.insert(0, f"generator training {training['wall_time']} ({pool}{training['samples_per_second']:.0f} "
                              f"samples/s{', resumed' if training['resumed_from_step'] else ''})")
    lines += ["", "Wall time of each stage: " + "; ".join(stage_times) + "."]
    if "wall_seconds_this_session" in result:
        took = progress.format_duration(result["wall_seconds_this_session"])
        lines += ["", f"This teacher in this invocation: {took}."]
    return lines


def format_spread(spread, rows: dict) -> list:
    """The PTQ spread over calibration draws as a markdown table, with the rows' own draws beside it."""
    if not spread:
        return []
    lines = ["", f"PTQ over {spread['draws']} further calibration draws (how far one int8 top-1 moves by chance; "
                 "agreement: test images on which the int8 model picks the FP32 class):", "",
             "| calibration | top-1 mean | min | max | agreement with FP32 | the row's own draw |",
             "|---|---|---|---|---|---|"]
    for source, label in SOURCE_LABELS.items():
        top1 = [draw["top1"] for draw in spread[source]]
        agreement = float(np.mean([draw["agreement_with_fp32"] for draw in spread[source]]))
        own = rows.get(f"{source}_ptq")
        lines.append(f"| {label} | {_points(float(np.mean(top1)))}% | {_points(min(top1))}% | {_points(max(top1))}% | "
                     f"{_points(agreement)}% | {_points(own['top1']) + '%' if own else '-'} |")
    return lines


def format_w4a4_spread(spread, rows: dict) -> list:
    """W4A4 QAT over further distillation seeds as a markdown table, with the rows' own runs beside it."""
    if not spread:
        return []
    seeds = f"{spread['draws']} further distillation seed{'s' * (spread['draws'] > 1)}"
    lines = ["", f"W4A4 QAT with {seeds} (how far one W4A4 top-1 moves by chance):", "",
             "| source | the row's own run | further seeds | mean of all | min | max |",
             "|---|---|---|---|---|---|"]
    for source, label in SOURCE_LABELS.items():
        own = rows.get(f"{source}_qat_w4a4")
        if not own:
            continue
        top1 = [own["top1"]] + [run["top1"] for run in spread[source]]
        lines.append(f"| {label} | {_points(own['top1'])}% | {', '.join(_points(t) + '%' for t in top1[1:])} | "
                     f"{_points(float(np.mean(top1)))}% | {_points(min(top1))}% | {_points(max(top1))}% |")
    return lines


def format_w4a4_pool_spread(measurements: dict, rows: dict) -> list:
    """ZS-CGAN W4A4 QAT on each generator pool as a markdown table, the benchmark's own pool first."""
    pool_spread = measurements.get("w4a4_pool_spread")
    if not pool_spread or "zscgan_qat_w4a4" not in rows or "real_qat_w4a4" not in rows:
        return []
    spread = measurements.get("w4a4_spread")
    top1 = {row_id: 100 * row["top1"] for row_id, row in rows.items()}
    real = w4a4_figures(top1, spread)[0]["real"]
    own_runs = [rows["zscgan_qat_w4a4"]["top1"]] + [run["top1"] for run in (spread or {}).get("zscgan", [])]
    pools = [("the benchmark's own", pool_spread["generator_seed"], own_runs)] + [
        (f"further pool {index}", pool["generator_seed"], [run["top1"] for run in pool["runs"]])
        for index, pool in enumerate(pool_spread["pools"], 1)]
    lines = ["", f"ZS-CGAN W4A4 QAT on {pool_spread['draws']} further generator pool"
                 f"{'s' * (pool_spread['draws'] > 1)} (how far the W4A4 figure moves with the generators drawn; "
                 f"real-data QAT: {real:.2f}%):", "",
             "| generator pool | first member's seed | top-1 at each distillation seed | mean | gap to real-data QAT |",
             "|---|---|---|---|---|"]
    for label, seed, runs in pools:
        mean = float(np.mean([100 * run for run in runs]))
        lines.append(f"| {label} | {seed} | {', '.join(_points(run) + '%' for run in runs)} | {mean:.2f}% | "
                     f"{real - mean:.2f} |")
    return lines


def format_reproducibility(reproducibility) -> list:
    if not reproducibility:
        return []
    lines = ["", f"Reproducibility against {reproducibility['compared_to']} (rows with the same settings):", ""]
    if not reproducibility["rows"]:
        return lines + ["- no row there has the same settings"]
    lines += [f"- {row['label']}: {_points(row['top1'])}% vs {_points(row['earlier_top1'])}% "
              f"({row['difference_points']:+.2f})" for row in reproducibility["rows"]]
    verdict = "met" if reproducibility["met"] else "MISSED"
    return lines + [f"- {verdict}: every row within {REPRODUCIBILITY_POINTS} point (largest difference "
                    f"{reproducibility['max_difference_points']:.2f})"]


def benchmark() -> dict:
    # --qat_batch_size is checked by validate_distillation below; --qat_steps here, since a benchmark
    # needs at least one QAT step where a run may skip QAT.
    for name, value in (("calibration_samples", FLAGS.calibration_samples), ("qat_steps", FLAGS.qat_steps),
                        ("generator_steps", FLAGS.generator_steps)):
        if value < 1:
            raise UserError(f"--{name} must be positive, got {value}")
    for name in ("calibration_draws", "w4a4_seed_draws", "generator_pool_draws"):
        if FLAGS[name].value < 0:
            raise UserError(f"--{name} must be non-negative, got {FLAGS[name].value}")
    for name in ("w4a4_seed_draws", "generator_pool_draws"):
        if FLAGS[name].value and "w4a4" not in FLAGS.schemes:
            raise UserError(f"--{name} repeats the W4A4 rows, but --schemes has no w4a4")
    if FLAGS.distilled_steps < 1 or FLAGS.latency_runs < 1:
        raise UserError(f"--distilled_steps and --latency_runs must be positive, got {FLAGS.distilled_steps} and "
                        f"{FLAGS.latency_runs}")
    if FLAGS.compare_to and not os.path.isdir(FLAGS.compare_to):
        raise UserError(f"--compare_to {FLAGS.compare_to!r} is not a directory")
    # Before any teacher loads: one line, at once.
    config_lib.validate_generator(generator_config())
    config_lib.validate_loss(generator_loss_config())
    config_lib.validate_distillation(qat_settings(), QAT_FLAGS)
    if FLAGS.eval_max_samples < 0:
        raise UserError(f"--eval_max_samples must be non-negative, got {FLAGS.eval_max_samples}")
    if not FLAGS.teachers:
        raise UserError("--teachers names no teacher")
    for scheme in FLAGS.schemes:
        quantize.QuantizationScheme.from_name(scheme)  # Raises UserError for a bad name.
    settings = {name: FLAGS[name].value for name in (
        "teachers", "dataset", "eval_max_samples", "calibration_samples", "schemes", "qat_steps", "qat_batch_size",
        "qat_learning_rate", "generator_steps", "generator_batch_size", "noise_dim", "generator_channels",
        "generator_blur_sigma", "generator_pool_size", "mode_seeking_loss_weight", "bn_layer_weighting",
        "qat_feature_loss_weight",
        "qat_mixed_fraction",
        "qat_shift_fraction", "qat_flip", "qat_joint_generator", "low_bit_ranges",
        "deterministic", "distilled_steps", "calibration_draws", "w4a4_seed_draws", "generator_pool_draws",
        "latency_runs", "seed")}
    settings["seeds"] = {"calibration": FLAGS.seed + CALIBRATION_SEED_OFFSET, "noise": FLAGS.seed + NOISE_SEED_OFFSET,
                         "distilled_data_start": FLAGS.seed + NOISE_SEED_OFFSET,
                         "distillation": FLAGS.seed + DISTILLATION_SEED_OFFSET, "generator": FLAGS.seed,
                         "eval_subset": FLAGS.seed + EVALUATION_SEED_OFFSET,
                         "calibration_draws": [FLAGS.seed + SPREAD_SEED_OFFSET + draw
                                               for draw in range(FLAGS.calibration_draws)],
                         "w4a4_seed_draws": w4a4_spread_seeds(),
                         "generator_pool_draws": [pool_draw_seed(draw)
                                                  for draw in range(1, FLAGS.generator_pool_draws + 1)]}
    if FLAGS.deterministic:
        reproducibility.enable_deterministic_execution()
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    results = {"settings": settings, "teachers": {}}
    run_started = time.monotonic()

    def publish(bench=None, started=None):
        # One clock reading for both figures, so a teacher's time never exceeds the invocation's.
        now = time.monotonic()
        results["wall_seconds_this_session"] = round(now - run_started, 1)
        if bench is not None:
            entry = bench.results()
            entry["targets"] = targets(bench.teacher.name, entry["rows"], entry["measurements"])
            entry["wall_seconds_this_session"] = round(now - started, 1)
            results["teachers"][bench.teacher.name] = entry
        write_json_atomic(os.path.join(FLAGS.work_dir, RESULTS_JSON_FILE), results)
        write_text_atomic(os.path.join(FLAGS.work_dir, RESULTS_MARKDOWN_FILE), format_results(results))

    for source in FLAGS.teachers:
        started = time.monotonic()
        bench = TeacherBenchmark(source)
        bench.run(lambda: publish(bench, started))
        publish(bench, started)
    _say(f"results in {os.path.join(FLAGS.work_dir, RESULTS_MARKDOWN_FILE)}")
    return results


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    return cli.run_command(FLAGS, argv, benchmark)


if __name__ == "__main__":
    sys.exit(main())
