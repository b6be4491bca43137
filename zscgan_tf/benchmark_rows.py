"""A teacher's benchmark rows, each measured once per settings and cached.

`TeacherBenchmark(source, BenchmarkConfig).run(publish)` measures every row of one teacher
(`TeacherBenchmark.rows`) not yet cached in `<work_dir>/<teacher>/rows.json` under its present
settings, calling `publish()` after each (`benchmark_run` runs the teachers in turn). The
rows: FP32; int8 PTQ calibrated on real images, noise, distilled data and generated samples;
ZS-CGAN and real-data QAT per scheme; latency, generator speed, and the spreads over
calibration draws, distillation seeds and generator pools.
"""

import hashlib
import json
import os
import time
from typing import Optional

import numpy as np
import tf_keras

from zscgan_tf import config as config_lib
from zscgan_tf import config_changes
from zscgan_tf import data, distill, distilled_data, evaluate, export, generator_stage, pipeline, quantization_stages
from zscgan_tf import quantize, representative_data
from zscgan_tf import labeled_images, run_report, run_state, seeds, teachers, throughput, zero_shot
from zscgan_tf.benchmark_config import BenchmarkConfig
from zscgan_tf.benchmark_cache import (ROWS_FILE, cache_entry, compare_with_earlier, current_rows, read_row_cache,
                                      row_key)
from zscgan_tf.benchmark_report import SOURCE_LABELS, points
from zscgan_tf.errors import UserError
from zscgan_tf.files import read_json, write_json_atomic
from zscgan_tf.progress import say
from zscgan_tf.evaluation_stage import LATENCY_THREADS
from zscgan_tf.quantization_stages import INPUT_RANGE, QAT_INPUT

# The fingerprint (`teachers.fingerprint`) of the teacher a teacher's rows and generators are of.
TEACHER_FILE = "teacher.json"
# Where a teacher's QAT rows keep their checkpoints, a directory per row, in its directory.
QAT_DIR = "qat"
EVALUATION_BATCH_SIZE = 256
SPEED_TIMED_STEPS = 10
SPEED_WARMUP_STEPS = 2
# How TFLite rows feed test images (part of their cache key): uint8 pixels through
# `TfliteClassifier.pixel_table`, not re-quantized float inputs.
TFLITE_INPUT = "pixel_table"


def _summary(result: dict) -> str:
    """What a row's progress line shows: its top-1, if it has one."""
    return f" top-1 {points(result['top1'])}%" if "top1" in result else " done"


# Measurement helpers.

def keras_top1(model, inputs: np.ndarray, labels: np.ndarray) -> float:
    return evaluate.top1_accuracy(evaluate.keras_predict(model, inputs, EVALUATION_BATCH_SIZE), labels)


def real_inputs(dataset: labeled_images.LabeledImages, teacher: teachers.Teacher):
    """(teacher-space inputs, labels) of `dataset` shaped for the teacher."""
    dataset = dataset.to_input_shape(teacher.image_shape)
    return teacher.preprocessing.apply(dataset.images), dataset.labels


def int8_ptq(model, calibration: np.ndarray, input_range, output_path: Optional[str],
             per_channel: bool = True) -> bytes:
    """Int8 TFLite of `model` calibrated on `calibration` with its input covering `input_range`, written
    to `output_path` unless it is None."""
    calibration_samples = representative_data.representative_dataset_from_array(calibration, input_range)
    return export.convert_to_tflite(model, calibration_samples, mode="int8", per_channel=per_channel,
                                    output_path=output_path)


# One teacher.

class TeacherBenchmark:
    """The rows of one teacher, each computed at most once per settings (cached in rows.json)."""

    def __init__(self, source: str, benchmark: BenchmarkConfig, progress: bool = True):
        """Loads the teacher `source` and its dataset, and reads the rows cached for it.

        Args:
          source: a teacher model file or builtin:<name>.
          benchmark: the settings (validated by `benchmark_config.validate`).
          progress: show progress bars.
        """
        self.config = benchmark
        self.progress = progress
        self.teacher = teachers.load_teacher(
            teachers.TeacherSource(model=source, cache_dir=benchmark.teacher_cache_dir), progress=progress)
        self.dir = os.path.join(self.config.work_dir, self.teacher.name)
        # Generator settings this teacher's images refuse (a blur too wide) fail now, not at the ZS-CGAN rows.
        generator_stage.generator_spec_for(self.teacher, self.config.generator_config())
        dataset_name, data_dir = self.teacher.real_data(self.config.dataset, self.config.data_dir)
        if not dataset_name:
            raise UserError(f"teacher {self.teacher.name!r} names no dataset; pass --dataset")
        # A folder as a run records it: its rows' cache keys name it absolutely, not as typed, which named another
        # folder of the same name from another directory and took its cached rows for this one's.
        self.dataset_name = dataset_name = data.portable_source(dataset_name)
        data.check_held_out_split(dataset_name)  # Real-data rows train and calibrate on train, measure on test.
        train = data.load_dataset(dataset_name, "train", data_dir=data_dir or None)
        test = data.load_dataset(dataset_name, "test", data_dir=data_dir or None)
        if train.num_classes != self.teacher.num_classes:
            raise UserError(f"{dataset_name} has {train.num_classes} classes but teacher {self.teacher.name!r} "
                            f"predicts {self.teacher.num_classes}")
        if self.config.eval_max_samples:
            test = test.class_balanced(self.config.eval_max_samples,
                                       seed=self.config.seed + seeds.BENCHMARK_EVALUATION_SUBSET_SEED_OFFSET)
        if self.config.data_dir and not data.reads_data_dir(dataset_name):  # As a run notes --eval_data_dir.
            say(f"[{self.teacher.name}] note: --data_dir does nothing with {dataset_name}")
        if tuple(test.image_shape) != tuple(self.teacher.image_shape):
            own = self.teacher.trained_on(dataset_name)
            say(f"[{self.teacher.name}] {dataset_name} images are {tuple(test.image_shape)}; converted to the "
                f"teacher's {tuple(self.teacher.image_shape)}"
                + ("" if own else f" (the teacher was not trained on {dataset_name}: is --dataset right?)"))
        test = test.to_input_shape(self.teacher.image_shape)
        self.test_pixels, self.test_labels, self.test_preparation = test.images, test.labels, test.preparation
        self.test_inputs = self.teacher.preprocessing.apply(self.test_pixels)
        self.train_inputs, self.train_labels = real_inputs(train, self.teacher)
        self.train = train
        calibration_seed = self.config.seed + seeds.CALIBRATION_SEED_OFFSET
        self.calibration = {
            "real": self.calibration_draw("real", calibration_seed),
            "noise": distilled_data.gaussian_noise_inputs(self.teacher, self.config.calibration_samples,
                                                          self.config.seed + seeds.BENCHMARK_NOISE_SEED_OFFSET)}
        # Created only once the teacher and its data have loaded: a bad one leaves no empty directory.
        os.makedirs(self.dir, exist_ok=True)
        self.generators = {}  # Pool draw (0 = the benchmark's own pool) -> trained generator.
        # Seconds spent loading or training the benchmark's own pool. It has its own entry in the
        # stage times, so the row that first needs it does not count them. Further pools have no
        # entry of their own: their training stays in the time of the row that trains them.
        self.own_pool_seconds = 0.0
        self.cache_path = os.path.join(self.dir, ROWS_FILE)
        self.cache = read_row_cache(self.cache_path)

    def rows(self):
        """(row id, label, function computing it, the settings it depends on), in the order they run."""
        # The teacher's own figure depends on the test images only (the seed picks a subset of them).
        test_images = {"teacher": self.teacher.name, "dataset": self.dataset_name,
                       "eval_images": len(self.test_labels), "seed": self.config.seed}
        common = {**test_images, "calibration_samples": self.config.calibration_samples}
        # Rows measured in TFLite: their figures depend on how test pixels reach an integer input.
        tflite = {**common, "tflite_input": TFLITE_INPUT, "input_range": INPUT_RANGE}
        generated = self.config.generator_settings()
        qat = {"qat_steps": self.config.qat_steps, "qat_batch_size": self.config.qat_batch_size,
               "qat_learning_rate": self.config.qat_learning_rate, "input_range": INPUT_RANGE}
        qat.update(self.config.optional_qat_settings())
        zscgan_qat = {**qat, "qat_joint_generator": True} if self.config.qat_joint_generator else qat
        rows = [("fp32", "FP32", self.fp32, test_images),
                ("real_ptq", "real-data PTQ", lambda: self.ptq("real"), tflite),
                ("noise_ptq", "noise PTQ", lambda: self.ptq("noise"), tflite),
                ("distilled_ptq", "distilled-data PTQ", lambda: self.ptq("distilled"),
                 {**tflite, "distilled_steps": self.config.distilled_steps}),
                ("zscgan_ptq", "ZS-CGAN PTQ", lambda: self.ptq("zscgan"), {**tflite, **generated}),
                ("zscgan_ptq_per_tensor", "ZS-CGAN PTQ, per-tensor weights",
                 lambda: self.ptq("zscgan", per_channel=False), {**tflite, **generated})]
        for scheme in self.config.schemes:
            ranges = self.config.low_bit_range_settings(scheme)
            measured = ({**tflite, "qat_input": QAT_INPUT} if self.config.quantization_scheme(scheme).exportable
                        else common)
            rows.append((f"zscgan_qat_{scheme}", f"ZS-CGAN QAT {scheme.upper()}",
                         lambda scheme=scheme: self.qat(scheme, "zscgan"),
                         {**measured, **generated, **zscgan_qat, **ranges}))
            rows.append((f"real_qat_{scheme}", f"real-data QAT {scheme.upper()}",
                         lambda scheme=scheme: self.qat(scheme, "real"), {**measured, **qat, **ranges}))
        # Measurements other than accuracy, cached the same way.
        rows.append(("latency", "LiteRT latency", self.latency,
                     {**common, **generated, "latency_runs": self.config.latency_runs}))
        # Timed with the benchmark's loss: a figure cached when it took the default loss is measured again.
        rows.append(("generator_speed", "generator step speed", self.generator_speed,
                     {**common, **generated, "speed_loss": "benchmark"}))
        if self.config.calibration_draws:
            rows.append(("ptq_spread", "PTQ over calibration draws", self.ptq_spread,
                         {**tflite, **generated, "calibration_draws": self.config.calibration_draws}))
        if self.config.w4a4_seed_draws and "w4a4" in self.config.schemes:
            rows.append(("w4a4_spread", "W4A4 QAT over distillation seeds", self.w4a4_spread,
                         {**common, **generated, **zscgan_qat, **self.config.low_bit_range_settings("w4a4"),
                          "w4a4_seed_draws": self.config.w4a4_seed_draws}))
        if self.config.generator_pool_draws and "w4a4" in self.config.schemes:
            rows.append(("w4a4_pool_spread", "ZS-CGAN W4A4 QAT over generator pools", self.w4a4_pool_spread,
                         {**common, **generated, **zscgan_qat, **self.config.low_bit_range_settings("w4a4"),
                          "w4a4_seed_draws": self.config.w4a4_seed_draws,
                          "generator_pool_draws": self.config.generator_pool_draws}))
        return rows

    def check_same_teacher(self):
        """Records the teacher's fingerprint with its rows, refusing rows and generators cached
        for another teacher under the same name (a model file retrained since)."""
        path = os.path.join(self.dir, TEACHER_FILE)
        current = teachers.fingerprint(self.teacher)
        recorded = read_json(path, {})
        recorded = recorded.get("teacher_sha256") if isinstance(recorded, dict) else None
        recorded = recorded if isinstance(recorded, str) else None  # Damaged, not another teacher's.
        if recorded and recorded != current:
            raise UserError(f"{self.dir} holds rows and generators of another teacher than {self.teacher.name} is "
                            "now (its weights or preprocessing differ: was the model file retrained?); pass another "
                            f"--work_dir, or delete {self.dir} to measure this one")
        if not recorded:  # Rows cached before fingerprints were recorded are taken as this teacher's.
            write_json_atomic(path, {"teacher_sha256": current})

    def check(self) -> list:
        """Refuses, before any row, what would stop this teacher's rows: another teacher's rows
        cached under its name, generator settings its trained pools cannot take, a scheme whose
        student would fail. Returns its rows."""
        self.check_same_teacher()
        self.check_generators()
        rows = self.rows()
        self.check_students(rows)
        return rows

    def run(self, publish) -> dict:
        """Computes every row not cached yet; calls `publish()` after each."""
        rows = self.check()
        for index, (row_id, label, compute, settings) in enumerate(rows, 1):
            key = row_key(row_id, settings)
            cached = self.cache.get(row_id)
            if cached and cached["key"] == key:
                say(f"[{self.teacher.name}] row {index}/{len(rows)} {label}: cached{_summary(cached['result'])}")
                continue
            say(f"[{self.teacher.name}] row {index}/{len(rows)} {label}: computing")
            started, own_pool_seconds = time.monotonic(), self.own_pool_seconds
            computed = compute()
            # The pool's training is reported on its own (the generator's line), not as this row's.
            pool_seconds = self.own_pool_seconds - own_pool_seconds
            seconds = time.monotonic() - started - pool_seconds
            result = {"id": row_id, "label": label, **computed, "seconds": round(seconds, 1)}
            self.cache[row_id] = cache_entry(key, result)
            write_json_atomic(self.cache_path, self.cache)
            pool_note = f", after {pool_seconds:.0f} s training the generator pool" if pool_seconds >= 0.5 else ""
            say(f"[{self.teacher.name}] row {index}/{len(rows)} {label}:{_summary(result)} "
                f"({result['seconds']:.0f} s{pool_note})")
            publish()
        return self.results()

    def results(self) -> dict:
        rows = current_rows(self.cache, self.rows())
        entry = {"dataset": self.dataset_name, "eval_images": int(len(self.test_labels)),
                 "eval_preparation": list(self.test_preparation),
                 "rows": {row_id: row for row_id, row in rows.items() if "top1" in row},
                 "measurements": {row_id: row for row_id, row in rows.items() if "top1" not in row}}
        generator_state = run_state.read_state(os.path.join(self.dir, "generator")).get("generator")
        if generator_state:
            entry["generator_training"] = run_report.generator_training_summary(generator_state)
        if self.config.compare_to:
            entry["reproducibility"] = compare_with_earlier(self.cache, self.config.compare_to, self.teacher.name)
        return entry

    def fp32(self) -> dict:
        path = os.path.join(self.dir, "teacher_float.tflite")
        float_bytes = export.convert_to_tflite(self.teacher.model, mode="float", output_path=path)
        return {"top1": keras_top1(self.teacher.model, self.test_inputs, self.test_labels), "measured": "Keras",
                "tflite_bytes": len(float_bytes)}

    def calibration_draw(self, source: str, seed: int, pool_draw: int = 0) -> np.ndarray:
        """`calibration_samples` class-balanced samples of `source` ("real" or "zscgan") drawn with `seed`;
        generated ones from generator pool `pool_draw` (0 = the benchmark's own)."""
        if source == "real":
            return real_inputs(self.train.class_balanced(self.config.calibration_samples, seed), self.teacher)[0]
        return quantization_stages.calibration_samples(self.trained_generator(pool_draw), self.teacher,
                                                       self.config.calibration_samples, seed=seed,
                                                       progress=self.progress)

    def calibration_for(self, source: str, pool_draw: int = 0) -> np.ndarray:
        """The rows' calibration samples of `source`; generated ones from generator pool `pool_draw`."""
        if source == "zscgan":
            key = f"zscgan_pool_draw{pool_draw}" if pool_draw else source
            if key not in self.calibration:
                self.calibration[key] = self.calibration_draw(source, self.config.seed + seeds.CALIBRATION_SEED_OFFSET,
                                                              pool_draw)
            return self.calibration[key]
        if source == "distilled" and source not in self.calibration:
            distilled = distilled_data.distill_inputs(
                self.teacher, self.config.calibration_samples,
                distilled_data.DistilledDataConfig(steps=self.config.distilled_steps),
                seed=self.config.seed + seeds.BENCHMARK_NOISE_SEED_OFFSET, progress=self.progress)
            say(f"[{self.teacher.name}] distilled data: BN-statistics loss {distilled.initial_bn_loss:.4g} -> "
                f"{distilled.final_bn_loss:.4g}")
            self.calibration[source] = distilled.inputs
        return self.calibration[source]

    def ptq(self, source: str, per_channel: bool = True) -> dict:
        name = f"{source}_ptq_int8{'' if per_channel else '_per_tensor'}.tflite"
        model_bytes = int8_ptq(self.teacher.model, self.calibration_for(source), self.teacher.input_range(),
                               os.path.join(self.dir, name), per_channel=per_channel)
        return {**self.tflite_int8_top1(model_bytes), "tflite_bytes": len(model_bytes)}

    def tflite_int8_top1(self, model_bytes: bytes) -> dict:
        """An int8 model's top-1 on the test pixels, and the float teacher's on the input it computes on."""
        classifier = evaluate.TfliteClassifier(model_bytes, num_threads=evaluate.evaluation_threads())
        seen = classifier.input_as_seen(self.test_pixels, self.teacher.preprocessing)
        return {"top1": evaluate.top1_accuracy(classifier.predict_pixels(self.test_pixels, self.teacher.preprocessing),
                                               self.test_labels),
                "measured": "TFLite int8", "fp32_on_its_input": keras_top1(self.teacher.model, seen, self.test_labels)}

    def ptq_spread(self) -> dict:
        """Real-data and ZS-CGAN PTQ, each calibrated on `calibration_draws` other draws.

        Each draw's top-1 and its agreement with the float teacher (the fraction of test
        images on which the int8 model picks the teacher's class).
        """
        float_logits = evaluate.keras_predict(self.teacher.model, self.test_inputs, EVALUATION_BATCH_SIZE)
        result = {"draws": self.config.calibration_draws}
        threads = evaluate.evaluation_threads()
        for source in SOURCE_LABELS:
            draws = []
            for draw in range(self.config.calibration_draws):
                seed = self.config.seed + seeds.CALIBRATION_DRAW_SEED_OFFSET + draw
                model_bytes = int8_ptq(self.teacher.model, self.calibration_draw(source, seed),
                                       self.teacher.input_range(), output_path=None)
                classifier = evaluate.TfliteClassifier(model_bytes, num_threads=threads)
                logits = classifier.predict_pixels(self.test_pixels, self.teacher.preprocessing)
                draws.append({"seed": seed, "top1": evaluate.top1_accuracy(logits, self.test_labels),
                              "agreement_with_fp32": evaluate.agreement(logits, float_logits)})
                say(f"[{self.teacher.name}] {SOURCE_LABELS[source]} PTQ, calibration draw {draw + 1}/"
                    f"{self.config.calibration_draws}: top-1 {points(draws[-1]['top1'])}%")
            result[source] = draws
        return result

    def w4a4_spread(self) -> dict:
        """ZS-CGAN and real-data W4A4 QAT, each run `w4a4_seed_draws` more times with other
        distillation seeds (the generator, calibration and student initialisation unchanged)."""
        result = {"draws": self.config.w4a4_seed_draws}
        for source in SOURCE_LABELS:
            runs = []
            for draw, seed in enumerate(self.config.w4a4_spread_seeds()):
                runs.append({"seed": seed, "top1": self.qat("w4a4", source, distillation_seed=seed)["top1"]})
                say(f"[{self.teacher.name}] {SOURCE_LABELS[source]} QAT W4A4, distillation seed {draw + 1}/"
                    f"{self.config.w4a4_seed_draws}: top-1 {points(runs[-1]['top1'])}%")
            result[source] = runs
        return result

    def w4a4_pool_spread(self) -> dict:
        """ZS-CGAN W4A4 QAT on `generator_pool_draws` further generator pools, each trained as the
        benchmark's own with other seeds, at the W4A4 rows' distillation seeds (the row's own and those
        of `w4a4_seed_draws`); calibration and student initialisation as the row's, from that pool."""
        distillation_seeds = [self.config.seed + seeds.DISTILLATION_SEED_OFFSET] + self.config.w4a4_spread_seeds()
        result = {"draws": self.config.generator_pool_draws, "generator_seed": self.config.pool_draw_seed(0),
                  "pools": []}
        for pool_draw in range(1, self.config.generator_pool_draws + 1):
            runs = []
            for seed in distillation_seeds:
                runs.append({"seed": seed, "top1": self.qat("w4a4", "zscgan", distillation_seed=seed,
                                                             pool_draw=pool_draw)["top1"]})
                say(f"[{self.teacher.name}] ZS-CGAN QAT W4A4, further generator pool {pool_draw}/"
                    f"{self.config.generator_pool_draws} (seed {self.config.pool_draw_seed(pool_draw)}), "
                    f"distillation seed {seed}: top-1 {points(runs[-1]['top1'])}%")
            result["pools"].append({"generator_seed": self.config.pool_draw_seed(pool_draw), "runs": runs})
        return result

    def latency(self) -> dict:
        """Median LiteRT latency per image of the float teacher and the ZS-CGAN int8 model."""
        model_bytes = {}
        for model_name, file_name in (("float", "teacher_float.tflite"), ("int8", "zscgan_ptq_int8.tflite")):
            if not os.path.exists(os.path.join(self.dir, file_name)):
                raise UserError(f"{os.path.join(self.dir, file_name)} is missing; delete {self.cache_path} to "
                                "recompute every row")
            with open(os.path.join(self.dir, file_name), "rb") as model_file:
                model_bytes[model_name] = model_file.read()
        # The two models in turns, so that they compare fairly.
        measured = {threads: evaluate.measure_latencies(model_bytes, num_threads=threads, runs=self.config.latency_runs)
                    for threads in LATENCY_THREADS}
        return {f"{model_name}_{threads}_threads_ms": measured[threads][model_name].median_ms
                for model_name in model_bytes for threads in LATENCY_THREADS}

    def generator_speed(self) -> dict:
        """The generator step compiled and eager, on a throwaway generator of the benchmark's shape
        and with its loss (it took the default loss: no mode-seeking term, uniform BN weighting)."""
        generator = generator_stage.build_generator_for(self.teacher, self.config.generator_config())
        trainer = zero_shot.GeneratorTrainer(
            self.teacher, generator, self.config.generator_loss_config(),
            config_lib.GeneratorTrainingConfig(batch_size=self.config.generator_batch_size), seed=self.config.seed)
        return throughput.measure_generator_step(trainer, SPEED_TIMED_STEPS, SPEED_WARMUP_STEPS).to_dict()

    def generator_run_config(self, pool_draw: int = 0) -> config_lib.RunConfig:
        """The run that trains the benchmark's generator pool (`pool_draw` 0, in `generator/`) or
        further pool `pool_draw` (in `generator_draw<k>/`)."""
        return config_lib.RunConfig(
            work_dir=os.path.join(self.dir, f"generator_draw{pool_draw}" if pool_draw else "generator"),
            seed=self.config.pool_draw_seed(pool_draw),
            teacher=teachers.TeacherSource(model=self.teacher.description["source"],
                                           cache_dir=self.config.teacher_cache_dir),
            generator=self.config.generator_config(),
            loss=self.config.generator_loss_config(),
            generator_training=config_lib.GeneratorTrainingConfig(steps=self.config.generator_steps,
                                                                  batch_size=self.config.generator_batch_size),
            # This run only trains the generator. Its QAT and quantization settings are never
            # used; they are pinned to those its directory was first saved with, so that a
            # change of their defaults does not orphan a trained generator.
            distillation=config_lib.DistillationConfig(feature_loss_weight=0.0),
            # As a run records it (the teacher file's absolute path), so that the teacher named otherwise, from
            # another directory, is not refused as another config.
            quantization=config_lib.QuantizationConfig(low_bit_ranges="min_max")).portable()

    def check_generators(self):
        """Refuses, before any row, generator settings its trained pools cannot take: fewer steps
        than trained (training cannot be undone), or other settings (their directories keep one
        config each), as `trained_generator` would refuse them only once rows before had run; and
        a file where a generator run or the QAT checkpoints go."""
        draws = range(1 + (self.config.generator_pool_draws if "w4a4" in self.config.schemes else 0))
        for pool_draw in draws:
            run_config = self.generator_run_config(pool_draw)
            if os.path.isdir(run_config.work_dir):
                pipeline.check_not_shortened(run_config)
                config_changes.check_saved(run_config)
            elif os.path.lexists(run_config.work_dir):  # Refused as its pool trained, after the rows before it.
                raise UserError(f"{run_config.work_dir} is a file where the benchmark keeps a generator run; move it "
                                "away")
        qat_dir = os.path.join(self.dir, QAT_DIR)
        if os.path.lexists(qat_dir) and not os.path.isdir(qat_dir):
            raise UserError(f"{qat_dir} is a file where the benchmark keeps its QAT checkpoints; move it away")

    def check_students(self, rows) -> None:
        """Builds the QAT student of each scheme whose rows in `rows` are not cached, and converts
        an exportable one to int8 TFLite as its rows will, on a few uniform samples: a teacher
        TF-MOT cannot quantize, or a student the converter keeps float ops in, is refused
        before any row rather than once the generator rows before have trained (a few seconds
        a scheme for this benchmark's teachers).

        Raises:
          UserError: naming the scheme and the flag to change.
        """
        uncached = {row_id for row_id, _, _, settings in rows
                    if (self.cache.get(row_id) or {}).get("key") != row_key(row_id, settings)}
        input_range = self.teacher.input_range()
        samples = np.random.default_rng(self.config.seed).uniform(
            *input_range, (quantization_stages.INTEGER_CHECK_SAMPLES,) + tuple(self.teacher.image_shape)
        ).astype(np.float32)
        for scheme_name in self.config.schemes:
            spreads = {"w4a4_spread", "w4a4_pool_spread"} if scheme_name == "w4a4" else set()
            if not uncached & ({f"zscgan_qat_{scheme_name}", f"real_qat_{scheme_name}"} | spreads):
                continue
            scheme = self.config.quantization_scheme(scheme_name)
            problem = ""
            try:
                student = quantization_stages.trial_student(self.teacher.model, scheme, samples, input_range)
                if scheme.exportable:
                    report = quantization_stages.trial_int8_report(student, samples, input_range)
                    if report.non_integer_ops:
                        problem = (f"its int8 TFLite would keep {export.float_ops_description(report, student)} "
                                   "float")
            except UserError as error:
                problem = str(error).rstrip(".")
            if problem:
                raise UserError(f"[{self.teacher.name}] the {scheme_name.upper()} QAT rows would fail once the rows "
                                f"before them had run: {problem}; drop {scheme_name} from --schemes")

    def trained_generator(self, pool_draw: int = 0):
        """The benchmark's generator pool (`pool_draw` 0) or further pool `pool_draw`
        (`generator_run_config`), trained on first use and resumable as a train run is."""
        if pool_draw not in self.generators:
            run_config = self.generator_run_config(pool_draw)
            pipeline.check_not_shortened(run_config)
            pipeline.prepare_work_dir(run_config)
            pipeline.record_config(run_config)
            state = run_state.read_state(run_config.work_dir)
            started = time.monotonic()
            self.generators[pool_draw] = generator_stage.run(run_config, self.teacher, state,
                                                                  progress=self.progress)
            if pool_draw == 0:
                self.own_pool_seconds += time.monotonic() - started
        return self.generators[pool_draw]

    def qat(self, scheme_name: str, source: str, distillation_seed: Optional[int] = None, pool_draw: int = 0) -> dict:
        """QAT of the teacher on `source` ("zscgan" or "real"); the row's own distillation seed unless
        `distillation_seed` is given, generated samples from the benchmark's pool unless `pool_draw` is."""
        scheme = self.config.quantization_scheme(scheme_name)
        calibration = self.calibration_for(source, pool_draw)
        student, _ = quantize.quantize_student(self.teacher.model, scheme, calibration_inputs=calibration,
                                               input_range=self.teacher.input_range())
        settings = self.config.qat_settings(joint_generator=self.config.qat_joint_generator and source == "zscgan")
        row_seed = self.config.seed + seeds.DISTILLATION_SEED_OFFSET
        seed = row_seed if distillation_seed is None else distillation_seed
        # TensorFlow's global seed for the student's own random ops (a Dropout layer in training mode): from the
        # run's seed, not from whatever ran before in the process. Under op determinism an unseeded one fails,
        # and did where no generator had trained in the process (a benchmark resumed with its generators done).
        tf_keras.utils.set_random_seed(seed)
        if source == "zscgan":
            trainer = None
            if settings.joint_generator:
                trainer = zero_shot.GeneratorTrainer(
                    self.teacher, zero_shot.copy_generator(self.trained_generator(pool_draw)),
                    self.config.generator_loss_config(),
                    config_lib.GeneratorTrainingConfig(batch_size=self.config.generator_batch_size),
                    seed=self.config.seed + seeds.JOINT_GENERATOR_SEED_OFFSET)
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
                                       settings.mixed_fraction, settings.joint_generator, self.config.seed,
                                       self.config.generator_settings(), INPUT_RANGE]
                                      + sorted(self.config.optional_qat_settings().items())
                                      + sorted(self.config.low_bit_range_settings(scheme_name).items()),
                                      sort_keys=True).encode()).hexdigest()[:8]
        run_name = (f"{source}_{scheme.name}_{tag}" + ("" if seed == row_seed else f"_seed{seed}")
                    + (f"_pool{pool_draw}" if pool_draw else ""))
        distiller.train(os.path.join(self.dir, QAT_DIR, run_name), progress=self.progress)
        zero_shot.check_teacher_unchanged(self.teacher, teacher_weights, f"the QAT row {run_name!r}")
        keras_accuracy = keras_top1(student, self.test_inputs, self.test_labels)
        if not scheme.exportable:
            return {"top1": keras_accuracy, "measured": "Keras (simulated)"}
        model_bytes = int8_ptq(student, calibration, self.teacher.input_range(),
                               os.path.join(self.dir, f"{source}_qat_{scheme.name}_int8.tflite"))
        return {**self.tflite_int8_top1(model_bytes), "keras_top1": keras_accuracy, "tflite_bytes": len(model_bytes)}
