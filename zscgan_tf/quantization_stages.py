"""Stages 2 to 4 of a run: data-free QAT, fully-integer TFLite export, evaluation on real data.

Each stage writes its outputs atomically and records itself in `state.json` only once
they are whole, with each output's SHA-256, so a rerun skips finished stages and redoes or
resumes the rest, including a stage whose output was since truncated or replaced.

Work directory files added here:

- `distillation/checkpoints/`, `distillation/history.json`: QAT state.
- `student.h5`: the trained TF-MOT student (`load_student`).
- `teacher_float.tflite`: the float teacher, for size and latency comparison.
- `ptq_int8.tflite`: the teacher quantized post-training, calibrated on generator samples.
- `qat_int8.tflite`: the distilled student, fully integer (W8A8 only).
- `export_report.md`: each model's tensors, ops, integer check and Edge TPU report.
- `labels.txt`: the teacher's class names, one a line in output order, when it has them.
- `evaluation/predictions.npz`: the evaluation's predicted classes, saved as it goes, so
  that an interrupted evaluation resumes (`evaluation_progress`).
"""

import collections
import math
import os
import time
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from zscgan_tf import (data, distill, edge_tpu, evaluate, evaluation_progress, export, quantize, quantizer_ranges,
                       teachers, tflite_model, zero_shot)
from zscgan_tf.config import RunConfig
from zscgan_tf.errors import UserError
from zscgan_tf.files import bytes_digest, file_digest, save_keras_model_atomic, write_text_atomic
from zscgan_tf.labeled_images import CENTRAL_CROP_FRACTION, LabeledImages, MixedImageSizesError
from zscgan_tf.progress import ProgressBar, count_of, say
from zscgan_tf.teachers import Teacher

# TF-MOT students don't survive the .keras format (the input quantizer's variables are
# renamed on load); HDF5 round-trips them exactly.
STUDENT_MODEL_FILE = "student.h5"
DISTILLATION_DIR = "distillation"
FLOAT_TFLITE_FILE = "teacher_float.tflite"
PTQ_TFLITE_FILE = "ptq_int8.tflite"
QAT_TFLITE_FILE = "qat_int8.tflite"
EXPORT_REPORT_FILE = "export_report.md"
LABELS_FILE = "labels.txt"
# How every quantized model's input range is set, part of the keys that decide what is reused (the
# export stage's, and the benchmark's rows and QAT directories): it covers pixels 0 to 255
# (`Teacher.input_range`), not only the calibration samples' range. Models exported before are
# converted again.
INPUT_RANGE = "covers_pixels_0_255"
CALIBRATION_SEED_OFFSET = 3
DISTILLATION_SEED_OFFSET = 4
JOINT_GENERATOR_SEED_OFFSET = 7  # Benchmarks use 5 and 6.
NO_EVALUATION = "none"
# Where an int8 model with float ops inside runs whole, and where it does not.
FLOAT_OPS_DEVICES = ("a CPU or GPU delegate runs them; an Edge TPU or integer-only NPU leaves everything from "
                     "the first of them to the CPU")
# Uniform samples of the teacher's input range that calibrate `check_integer_export`'s conversion.
INTEGER_CHECK_SAMPLES = 4
# Each int8 export is run on this many calibration samples against the Keras model it came from;
# below this argmax agreement the run warns that the conversion went wrong. Trained models agree on
# 99% or more of their own generated samples; the bar is low enough that a barely trained
# generator's unsure samples do not trip it, and a broken conversion (0% once) does.
EXPORT_CHECK_SAMPLES = 100
MIN_EXPORT_AGREEMENT = 0.5
LATENCY_THREADS = (1, 2)
EVALUATION_BATCH_SIZE = 256
# Evaluation images preprocessed at a time: a whole number of Keras batches, 20,000 or so at
# Fashion-MNIST's size and 256 at 224x224 (150 MB of float32).
EVALUATION_CHUNK_PIXELS = 4096 * 64 * 64


def evaluation_chunk_size(image_shape) -> int:
    """Evaluation images preprocessed and run through every model at a time (see `EVALUATION_CHUNK_PIXELS`)."""
    batches = EVALUATION_CHUNK_PIXELS // (image_shape[0] * image_shape[1]) // EVALUATION_BATCH_SIZE
    return max(1, batches) * EVALUATION_BATCH_SIZE


def calibration_samples(generator, teacher: Teacher, count: int, seed: int) -> np.ndarray:
    """`count` class-balanced generator samples (classes interleaved), teacher-space float32.

    With fewer samples than classes (the default 500 for ImageNet's 1000), one sample each
    of `count` classes drawn at random, rather than of the first `count` classes.
    """
    noise_dim = int(generator.inputs[0].shape[-1])
    if count < teacher.num_classes:
        labels = np.sort(np.random.default_rng(seed).choice(teacher.num_classes, count, replace=False))
        return zero_shot.generate_for_labels(generator, labels, noise_dim, seed)
    per_class = math.ceil(count / teacher.num_classes)
    images, labels = zero_shot.generate(generator, teacher.num_classes, per_class, noise_dim, seed)
    # `generate` sorts samples by class; interleaving them keeps any prefix balanced too.
    index_within_class = np.tile(np.arange(per_class), teacher.num_classes)
    return images[np.argsort(index_within_class, kind="stable")][:count]


def check_integer_export(run_config: RunConfig, teacher: Teacher) -> Optional[str]:
    """Converts the teacher to int8 TFLite as the export stage will, calibrated on a few
    uniform samples of its input range, so that a teacher the converter cannot make fully
    integer (an op it leaves float, such as ELU) is refused before hours of training rather
    than at export. About a second for a small model, 8 s for ResNet50 at 224x224 on 2 cores.

    Returns:
      With `quantization.allow_float_ops`, a note naming the ops the int8 models will keep
      float; otherwise (and when there are none) None.

    Raises:
      UserError: if the conversion fails, or the result is not fully integer and float ops
        are not allowed.
    """
    input_range = teacher.input_range()
    samples = np.random.default_rng(run_config.seed).uniform(
        *input_range, (INTEGER_CHECK_SAMPLES,) + tuple(teacher.image_shape)).astype(np.float32)
    settings = run_config.quantization
    try:
        model_bytes = export.convert_to_tflite(
            teacher.model, export.representative_dataset_from_array(samples, input_range),
            mode="int8", io_dtype=settings.io_dtype, per_channel=settings.per_channel,
            allow_float_ops=settings.allow_float_ops)
    except export.NotFullyIntegerError as error:
        if settings.allow_float_ops:  # Float ops are allowed, but the input or output is float too.
            raise UserError(f"the teacher cannot be exported as int8 TFLite, so this run would fail at export, "
                            f"after training: {error.summary}") from error
        raise UserError(f"the teacher cannot be exported as fully-integer TFLite, so this run would fail at "
                        f"export, after training: {error.summary} Pass --allow_float_ops to export int8 models "
                        f"that keep these ops float ({FLOAT_OPS_DEVICES})") from error
    except export.TfliteConversionError as error:
        raise UserError(f"the teacher cannot be exported as fully-integer TFLite, so this run would fail at "
                        f"export, after training: {error}") from error
    float_ops = export.float_ops_description(tflite_model.inspect_tflite(model_bytes), teacher.model)
    if not float_ops:
        return None
    return f"the int8 models will keep float ops (--allow_float_ops): {float_ops} ({FLOAT_OPS_DEVICES})"


def scheme_of(run_config: RunConfig) -> quantize.QuantizationScheme:
    settings = run_config.quantization
    return quantize.QuantizationScheme.from_name(
        settings.scheme, keep_first_and_last_at_8_bits=settings.keep_first_and_last_at_8_bits,
        per_channel=settings.per_channel, low_bit_ranges=settings.low_bit_ranges)


def load_student(path: str, input_range=None) -> tf_keras.Model:
    """Loads a TF-MOT student saved by `distillation_stage`.

    With `input_range` (`Teacher.input_range()`), the model input's range is widened to
    it: a student saved before that range covered every pixel level exports with it.
    """
    with tfmot.quantization.keras.quantize_scope():
        student = tf_keras.models.load_model(path, compile=False)
    if input_range is not None:
        quantizer_ranges.cover_model_input_range(student, *input_range)
    return student


def restore_student(run_config: RunConfig, teacher: Teacher, generator, calibration: np.ndarray,
                    checkpoint_dir: str) -> tf_keras.Model:
    """Rebuilds the student of `run_config` and loads the latest QAT checkpoint in `checkpoint_dir`.

    Raises:
      UserError: if there is no checkpoint.
    """
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if not latest:
        raise UserError(f"no QAT checkpoint in {checkpoint_dir!r}; run the distillation stage first")
    student, _ = quantize.quantize_student(teacher.model, scheme_of(run_config), calibration_inputs=calibration)
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes, run_config.distillation)
    distiller.checkpoint.restore(latest).expect_partial()
    # After the restore, which sets the input's range too: a checkpoint may predate its covering every pixel.
    quantizer_ranges.cover_model_input_range(student, *teacher.input_range())
    return student


def joint_generator_trainer(run_config: RunConfig, teacher: Teacher, generator):
    """The trainer of a copy of `generator` for joint training during QAT, or None when it stays frozen."""
    if not run_config.distillation.joint_generator:
        return None
    return zero_shot.GeneratorTrainer(teacher, zero_shot.copy_generator(generator), run_config.loss,
                                      run_config.generator_training, seed=run_config.seed + JOINT_GENERATOR_SEED_OFFSET)


def distillation_stage(run_config: RunConfig, teacher: Teacher, generator, calibration: np.ndarray, state: dict,
                       write_state, progress: bool = True) -> Optional[tf_keras.Model]:
    """Data-free QAT of the student; returns it, or None when `distillation.steps` is 0."""
    settings = run_config.distillation
    if settings.steps == 0:
        return None
    work_dir = run_config.work_dir
    model_path = os.path.join(work_dir, STUDENT_MODEL_FILE)
    finished = state.get("distillation", {})
    if finished.get("steps") == settings.steps and finished.get("sha256") == file_digest(model_path):
        say(f"distillation: already done ({settings.steps} steps), loading {model_path}")
        return load_student(model_path, teacher.input_range())
    scheme = scheme_of(run_config)
    student, float_layers = quantize.quantize_student(teacher.model, scheme, calibration_inputs=calibration,
                                                      input_range=teacher.input_range())
    if float_layers:
        say(f"distillation: {count_of(len(float_layers), 'layer')} TF-MOT cannot quantize "
            f"{'stays' if len(float_layers) == 1 else 'stay'} float (listed in "
            f"report.md): {quantize.summarize_layer_names(teacher.model, float_layers)}")
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes, settings,
                                  seed=run_config.seed + DISTILLATION_SEED_OFFSET,
                                  generator_trainer=joint_generator_trainer(run_config, teacher, generator),
                                  hold_quantizer_ranges=scheme.holds_ranges_in_training)
    pruned = sum(int(tf.size(kept)) - int(tf.reduce_sum(kept)) for _, kept in distiller.pruning_masks)
    if pruned:
        trained = sum(int(tf.size(weight)) for weight in distiller.trained_weights)
        say(f"distillation: {pruned:,} of the {trained:,} weights QAT trains are zero in the teacher (pruned, in "
            f"{count_of(len(distiller.pruning_masks), 'layer')}); they stay zero")
    if distiller.weight_clusters:
        most = max(count for _, _, count in distiller.weight_clusters)
        say(f"distillation: {count_of(len(distiller.weight_clusters), 'weight tensor')} of the teacher "
            f"{'is' if len(distiller.weight_clusters) == 1 else 'are'} clustered (at most {most} distinct values "
            "each); their clusters stay tied")
    teacher_weights = teacher.model.get_weights()
    say(f"distillation: {count_of(settings.steps, 'step')} of {settings.batch_size} generated samples into the "
        f"{scheme.name} student" + (", training a copy of the generator along" if settings.joint_generator else ""))
    writer = tf.summary.create_file_writer(os.path.join(work_dir, "logs", "distillation"))
    summary = distiller.train(os.path.join(work_dir, DISTILLATION_DIR), progress=progress, summary_writer=writer)
    zero_shot.check_teacher_unchanged(teacher, teacher_weights)
    save_keras_model_atomic(student, model_path)
    state["distillation"] = {"steps": settings.steps, "scheme": scheme.name, "float_layers": list(float_layers),
                             "summary": summary.to_dict(), "sha256": file_digest(model_path)}
    write_state(state)
    return student


def export_stage(run_config: RunConfig, teacher: Teacher, student, calibration: np.ndarray, state: dict,
                 write_state) -> Dict[str, str]:
    """Writes the float, PTQ and (W8A8) QAT TFLite models; returns {kind: path}."""
    work_dir = run_config.work_dir
    settings = run_config.quantization
    representative = export.representative_dataset_from_array(calibration, teacher.input_range())
    integer_options = dict(mode="int8", representative_dataset=representative, io_dtype=settings.io_dtype,
                           per_channel=settings.per_channel, allow_float_ops=settings.allow_float_ops)
    exports = {"float": (FLOAT_TFLITE_FILE, teacher.model, dict(mode="float")),
               "ptq_int8": (PTQ_TFLITE_FILE, teacher.model, integer_options)}
    scheme = scheme_of(run_config)
    if student is not None:
        if scheme.exportable:
            exports["qat_int8"] = (QAT_TFLITE_FILE, student, integer_options)
        else:
            say(f"export: the {scheme.name} student is simulation only (TFLite has no kernels below 8 bits); "
                "it is evaluated in Keras but not exported")
    done = state.setdefault("export", {})
    paths, report_lines = {}, [f"# Exported models ({run_config.work_dir})", ""]
    for kind, (file_name, model, options) in exports.items():
        path = os.path.join(work_dir, file_name)
        key = (f"{kind}:{settings.io_dtype}:{settings.per_channel}:{state.get('distillation', {}).get('steps')}:"
               f"{INPUT_RANGE}" + (":float_ops_allowed" if settings.allow_float_ops else ""))
        if done.get(kind) != {"settings": key, "sha256": file_digest(path)}:
            say(f"export: converting {kind} -> {path}")
            export.convert_to_tflite(model, output_path=path, **options)
            done[kind] = {"settings": key, "sha256": file_digest(path)}
            write_state(state)
        paths[kind] = path
        with open(path, "rb") as model_file:
            model_bytes = model_file.read()
        try:
            warning = export_agreement_warning(kind, model_bytes, model, calibration) if kind != "float" else None
        except UserError as error:  # LiteRT refuses it: a device would too; say which file.
            raise UserError(f"the exported {kind} model {path} does not run in LiteRT: {error}") from error
        if warning:
            say(f"warning: {warning}")
        report = tflite_model.inspect_tflite(model_bytes)
        float_ops = export.float_ops_description(report, model) if kind != "float" else ""
        if float_ops:
            say(f"export: {kind} keeps float ops (--allow_float_ops): {float_ops}")
        pixel_input = evaluate.TfliteClassifier(model_bytes).describe_pixel_input(teacher.preprocessing)
        report_lines += [f"## {kind}: `{file_name}`", ""] + ([f"Warning: {warning}", ""] if warning else []) + (
            report.format()) + ([f"- {pixel_input}"] if pixel_input else []) + [""]
        if kind != "float":
            report_lines += edge_tpu.compatibility_report(report).format() + [""]
    report_lines += _write_labels(work_dir, teacher)
    write_text_atomic(os.path.join(work_dir, EXPORT_REPORT_FILE), "\n".join(report_lines))
    return paths


def teacher_class_names(teacher: Teacher) -> Tuple[str, ...]:
    """The teacher's class names in output order, from its description (the sidecar
    `tools/train_teacher.py` writes); () when it has none, not one per output, or one that
    would not fit on a line of a labels file."""
    names = tuple(str(name) for name in teacher.description.get("class_names") or ())
    if len(names) != teacher.num_classes or any("\n" in name or "\r" in name for name in names):
        return ()
    return names


def write_labels(path: str, class_names: Tuple[str, ...]) -> bool:
    """Writes a labels file: `class_names` one a line, output i on line i + 1, as Coral's
    examples read one. Without names, writes nothing and removes a file an earlier model
    left at `path`. Returns whether it wrote one."""
    if not class_names:
        if os.path.exists(path):
            os.remove(path)
        return False
    write_text_atomic(path, "".join(f"{name}\n" for name in class_names))
    return True


def _write_labels(work_dir: str, teacher: Teacher) -> list:
    """Writes `LABELS_FILE` when the teacher's class names are known; returns the export report's lines."""
    names = teacher_class_names(teacher)
    if not write_labels(os.path.join(work_dir, LABELS_FILE), names):
        return ["## Labels", "", "No class names are known for this teacher (its description has none, or not one "
                "per output, each on one line): the models' outputs are class indices.", ""]
    return ["## Labels", "", f"`{LABELS_FILE}`: the teacher's {len(names)} class names, one a line in output order "
            f"(output 0 is `{names[0]}`).", ""]


def export_agreement_warning(kind: str, model_bytes: bytes, keras_model, samples: np.ndarray) -> Optional[str]:
    """A warning when the int8 TFLite model picks another class than the Keras model it was
    converted from (the teacher for PTQ, the student for QAT) on too many of the first
    `EXPORT_CHECK_SAMPLES` samples; None when they agree. A converter that mishandles a
    pattern yields a fully-integer model that computes something else, which nothing else
    would catch without real data."""
    samples = samples[:EXPORT_CHECK_SAMPLES]
    agreement = evaluate.agreement(evaluate.TfliteClassifier(model_bytes).predict(samples),
                                   evaluate.keras_predict(keras_model, samples))
    if agreement >= MIN_EXPORT_AGREEMENT:
        return None
    return (f"the {kind} TFLite model picks the class its Keras model picks on only {100 * agreement:.0f}% of "
            f"{len(samples)} generated samples (expected {100 * MIN_EXPORT_AGREEMENT:.0f}% or more): the conversion "
            "may have gone wrong; compare the two before deploying it")


def _trained_on_resized(source: str, teacher: Teacher) -> bool:
    """Whether `source` is the teacher's training data, which it was trained on at its input shape."""
    description = teacher.description
    return (data.portable_source(source) == description.get("dataset")
            and tuple(description.get("input_shape", ())) == tuple(teacher.image_shape))


def _matched_to_teacher_classes(dataset: LabeledImages, teacher: Teacher, source: str) -> LabeledImages:
    """`dataset` relabelled by class name when its classes are some of the teacher's, in
    another order or fewer (a folder holding only some classes); else `dataset` as it is,
    its labels taken as the teacher's output indices."""
    teacher_names = teacher_class_names(teacher)
    if (not teacher_names or not dataset.class_names or dataset.class_names == teacher_names
            or not set(dataset.class_names) <= set(teacher_names)
            or len(set(teacher_names)) < len(teacher_names)):  # ImageNet's has two "crane"s: no name is a class.
        return dataset
    index_of = {name: index for index, name in enumerate(teacher_names)}
    teacher_labels = np.asarray([index_of[name] for name in dataset.class_names], np.int64)
    say(f"evaluation: {source} holds {dataset.num_classes} of the teacher's {teacher.num_classes} classes, "
        "matched to them by name")
    return LabeledImages(dataset.images, teacher_labels[dataset.labels], num_classes=teacher.num_classes,
                         name=dataset.name, class_names=teacher_names)


def _load_evaluation_data(run_config: RunConfig, teacher: Teacher, source: str, data_dir: str,
                          progress: bool) -> LabeledImages:
    settings = run_config.evaluation
    # A folder of photographs decodes only the subset it keeps; other sources are subset after.
    subset = {"max_samples": settings.max_samples, "seed": run_config.seed}
    try:
        return data.load_dataset(source, settings.split, data_dir=data_dir or None,
                                 manual_dir=settings.manual_dir or None, progress=progress, **subset)
    except MixedImageSizesError as error:
        height, width = teacher.image_shape[:2]
        if not (settings.resize or _trained_on_resized(source, teacher)):
            raise UserError(f"{error}; pass --eval_resize to crop and resize them to the teacher's "
                            f"{height}x{width}") from None
        say(f"evaluation: {source} images differ in size; each is cropped to its central "
            f"{CENTRAL_CROP_FRACTION:.1%} and resized to {height}x{width} as it loads")
        return data.load_dataset(source, settings.split, data_dir=data_dir or None,
                                 manual_dir=settings.manual_dir or None, image_size=(height, width),
                                 progress=progress, **subset)


def evaluation_dataset(run_config: RunConfig, teacher: Teacher,
                       progress: bool = False) -> Optional[LabeledImages]:
    """The held-out real data, shaped for the teacher, or None when there is none to use.

    `progress` shows a progress line while a folder of images loads.

    Raises:
      UserError: if the data can't be loaded, has another number of classes than the
        teacher, or images of another shape (unless `evaluation.resize`, or the data is
        the teacher's own training data, resized the same way when it was trained).
    """
    settings = run_config.evaluation
    source, data_dir = teacher.real_data(settings.dataset, settings.data_dir)
    if not source or source == NO_EVALUATION:
        return None
    try:
        dataset = _load_evaluation_data(run_config, teacher, source, data_dir, progress)
    except UserError as error:
        if settings.dataset:
            raise
        raise UserError(f"{error} (the teacher's training data, as its sidecar names it; pass --eval_dataset for "
                        f"other data, or --eval_dataset={NO_EVALUATION})") from None
    dataset = _matched_to_teacher_classes(dataset, teacher, source)
    if dataset.num_classes != teacher.num_classes:
        raise UserError(f"evaluation dataset {source!r} has {dataset.num_classes} classes but the teacher "
                        f"predicts {teacher.num_classes}")
    if tuple(dataset.image_shape) != tuple(teacher.image_shape):
        if not (settings.resize or _trained_on_resized(source, teacher)):
            raise UserError(f"evaluation dataset {source!r} has images of shape {tuple(dataset.image_shape)} but "
                            f"the teacher reads {tuple(teacher.image_shape)}; pass --eval_resize to resize them")
        say(f"evaluation: {source} images are {tuple(dataset.image_shape)}; converted to the teacher's "
            f"{tuple(teacher.image_shape)}")
        dataset = dataset.to_input_shape(teacher.image_shape)
    if settings.max_samples:
        dataset = dataset.class_balanced(settings.max_samples, seed=run_config.seed)
    return dataset


def _predicted_classes(run_config: RunConfig, teacher: Teacher, dataset: LabeledImages, predictors: dict,
                       digests: Dict[str, str], progress: bool) -> Dict[str, np.ndarray]:
    """Each predictor's class for every image of `dataset`, a chunk at a time, going on from
    the predictions an interrupted run saved for the same images and models
    (`evaluation_progress`) and saving its own as it goes."""
    labels = dataset.labels
    path = os.path.join(run_config.work_dir, evaluation_progress.PREDICTIONS_FILE)
    key = evaluation_progress.key(dataset.images, labels, digests)
    done, predicted = evaluation_progress.load(path, key, list(predictors), len(labels))
    if done == len(labels):
        say("evaluation: every model's predictions on these images were saved by an earlier run; using them")
        return predicted
    if done:
        say(f"evaluation: resuming at image {done} of {len(labels)}, with the predictions an earlier run saved")
    # Preprocessed a chunk at a time: ImageNet's 50,000 validation images are 30 GB as float32.
    chunk = evaluation_chunk_size(teacher.image_shape)
    bar = ProgressBar(len(labels), f"evaluation ({count_of(len(predictors), 'model')})", initial_step=done) \
        if progress else None
    last_saved, saved_done = time.monotonic(), done
    try:
        for start in range(done, len(labels), chunk):
            pixels = dataset.images[start:start + chunk]
            inputs = teacher.preprocessing.apply(pixels)
            for name, predict in predictors.items():
                predicted[name][start:start + len(pixels)] = np.argmax(predict(pixels, inputs), axis=-1)
            done = start + len(pixels)
            if done == len(labels) or time.monotonic() - last_saved >= evaluation_progress.SAVE_INTERVAL_SECONDS:
                evaluation_progress.save(path, key, done, predicted)
                last_saved, saved_done = time.monotonic(), done
            if bar:
                bar.update(done, {})
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: the chunks done since the last save are kept too.
        if done > saved_done:
            evaluation_progress.save(path, key, done, predicted)
        raise
    finally:
        if bar:
            bar.close()
    return predicted


def evaluation_stage(run_config: RunConfig, teacher: Teacher, student, tflite_paths: Dict[str, str],
                     dataset: Optional[LabeledImages], progress: bool = True) -> dict:
    """Top-1 of the teacher, the student and every TFLite model on `dataset` (see `evaluation_dataset`);
    sizes; latency. With `progress`, a progress line over the images (ImageNet's 50,000 through
    ResNet50 and its students take hours on a few CPU cores)."""
    model_bytes = {}  # Read once: for latency, the evaluation and its saved predictions' key.
    for kind, path in tflite_paths.items():
        with open(path, "rb") as model_file:
            model_bytes[kind] = model_file.read()
    results = {"sizes_bytes": {kind: len(contents) for kind, contents in model_bytes.items()}}
    integer_reports = {kind: tflite_model.inspect_tflite(contents) for kind, contents in model_bytes.items()
                       if kind != "float"}
    float_ops = {kind: dict(sorted(collections.Counter(op.name for op in report.non_integer_ops).items()))
                 for kind, report in integer_reports.items() if not report.is_fully_integer}
    if float_ops:  # Int8 models exported with --allow_float_ops: the ops they keep float, counted.
        results["float_ops"] = float_ops
    # A phrase per int8 file; `export_report.md` has the whole check.
    results["edge_tpu"] = {kind: edge_tpu.compatibility_report(report).summary()
                           for kind, report in integer_reports.items()}
    say(f"evaluation: latency of {count_of(len(tflite_paths), 'TFLite model')}, "
        f"{count_of(run_config.evaluation.latency_runs, 'run')} at each of {' and '.join(map(str, LATENCY_THREADS))} "
        "threads")
    # The models in turns, so that they compare fairly.
    measured = {threads: evaluate.measure_latencies(model_bytes, threads, runs=run_config.evaluation.latency_runs)
                for threads in LATENCY_THREADS}
    results["latency_median_ms"] = {kind: {str(threads): measured[threads][kind].median_ms
                                           for threads in LATENCY_THREADS} for kind in model_bytes}
    if dataset is None:
        say("evaluation: no real data to evaluate on (set --eval_dataset)")
        return results
    labels = dataset.labels
    say(f"evaluation: {len(labels)} images of {dataset.name} ({run_config.evaluation.split})")
    # Each predictor takes a chunk's pixels and its preprocessed inputs: Keras models run on the
    # inputs, TFLite models on the pixels, quantized as a device would (`predict_pixels`). Each
    # has a digest, so that saved predictions are used only for the same models.
    predictors = {"fp32_keras": lambda pixels, inputs: evaluate.keras_predict(teacher.model, inputs,
                                                                              EVALUATION_BATCH_SIZE)}
    digests = {"fp32_keras": teachers.fingerprint(teacher)}
    student_name = f"{scheme_of(run_config).name}_qat_keras"
    if student is not None:
        predictors[student_name] = lambda pixels, inputs: evaluate.keras_predict(student, inputs, EVALUATION_BATCH_SIZE)
        digests[student_name] = teachers.weights_digest(student)
    threads = evaluate.evaluation_threads()
    for kind, contents in model_bytes.items():
        classifier = evaluate.TfliteClassifier(contents, num_threads=threads)
        predictors[f"{kind}_tflite"] = (
            lambda pixels, inputs, classifier=classifier: classifier.predict_pixels(pixels, teacher.preprocessing))
        digests[f"{kind}_tflite"] = bytes_digest(contents)  # As `file_digest` gives it for the file.
    predicted = _predicted_classes(run_config, teacher, dataset, predictors, digests, progress)
    accuracy = {name: float(np.mean(classes == labels)) for name, classes in predicted.items()}
    agreement = {}
    if "qat_int8_tflite" in predicted:
        agreement["qat_keras_vs_tflite"] = float(np.mean(predicted[student_name] == predicted["qat_int8_tflite"]))
    results.update({"dataset": dataset.name, "split": run_config.evaluation.split, "images": int(len(labels)),
                    "top1": accuracy, "agreement": agreement, **_against_fp32(predicted, dataset)})
    return results


def _against_fp32(predicted: Dict[str, np.ndarray], dataset: LabeledImages) -> dict:
    """How often each model predicts the FP32 teacher's class, and the class on which its
    top-1 falls furthest below the teacher's (`evaluate.largest_class_drop`)."""
    reference = predicted["fp32_keras"]
    others = {name: classes for name, classes in predicted.items() if name != "fp32_keras"}
    drops = {}
    for name, classes in others.items():
        drop = evaluate.largest_class_drop(reference, classes, dataset.labels)
        if drop is not None:
            drops[name] = {"class": drop.label, "images": drop.images, "fp32": drop.reference, "model": drop.model,
                           **({"name": dataset.class_names[drop.label]} if dataset.class_names else {})}
    return {"same_class_as_fp32": {name: float(np.mean(classes == reference)) for name, classes in others.items()},
            "largest_class_drop": drops}
