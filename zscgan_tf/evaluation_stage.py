"""Stage 4 of a run: the FP32 teacher, the QAT student and every TFLite model measured on
held-out real data (top-1, agreement, the class each lowers most), with the files' sizes
and their LiteRT latency.

The evaluation data (`evaluation_dataset`) is `--eval_dataset`, else the teacher's own
training data as its sidecar names it, shaped for the teacher. Its images run through the
models a chunk at a time, and the predictions are saved as they go, so that an interrupted
evaluation resumes.

Work directory files added here:

- `evaluation/predictions.npz`: the evaluation's predicted classes, saved as it goes, so
  that an interrupted evaluation resumes (`evaluation_progress`).
"""

import collections
import dataclasses
import os
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from zscgan_tf import data, edge_tpu, evaluate, evaluation_progress, image_folders, quantizer_ranges, stop_signals
from zscgan_tf import teachers, tflite_model
from zscgan_tf.config import NO_EVALUATION, EvaluationConfig, RunConfig
from zscgan_tf.errors import UserError
from zscgan_tf.files import bytes_digest
from zscgan_tf.labeled_images import CENTRAL_CROP_FRACTION, LabeledImages, MixedImageSizesError
from zscgan_tf.preprocessing import PIXEL_MAX
from zscgan_tf.progress import ProgressBar, count_of, listed, say
from zscgan_tf.quantization_stages import scheme_of
from zscgan_tf.teachers import Teacher
from zscgan_tf.training_loop import TrainingInterrupted

TRAINING_SPLIT = "train"
# Class names a refusal lists, at most.
NAMES_SHOWN = 5
# The int8 file of the QAT student (`tflite_paths`' key), and the student's predictions on its input.
QAT_KIND = "qat_int8"
STUDENT_ON_INT8_INPUT = "qat_keras_on_int8_input"
LATENCY_THREADS = (1, 2)
EVALUATION_BATCH_SIZE = 256
# Evaluation images preprocessed and run through every model at a time, and the steps of the
# progress line: a whole number of Keras batches, 2,560 at Fashion-MNIST's size (10 s or so for its
# five models on 2 CPU cores) and 256 at 224x224 (150 MB of float32).
EVALUATION_CHUNK_PIXELS = 512 * 64 * 64


def evaluation_chunk_size(image_shape) -> int:
    """Evaluation images preprocessed and run through every model at a time (see `EVALUATION_CHUNK_PIXELS`)."""
    batches = EVALUATION_CHUNK_PIXELS // (image_shape[0] * image_shape[1]) // EVALUATION_BATCH_SIZE
    return max(1, batches) * EVALUATION_BATCH_SIZE


def _resizes(settings: EvaluationConfig, source: str, teacher: Teacher) -> bool:
    """Whether images of `source` of another shape than the teacher's are resized to it rather
    than refused: with `--eval_resize`, or when `source` is the teacher's training data, which
    it was trained on resized to its input shape."""
    return settings.resize or (teacher.trained_on(source)
                               and tuple(teacher.description.get("input_shape", ())) == tuple(teacher.image_shape))


def _matched_to_teacher_classes(dataset: LabeledImages, teacher: Teacher, source: str) -> LabeledImages:
    """`dataset` relabelled by class name when its classes are some of the teacher's, in
    another order or fewer (a folder holding only some classes), named alike or as a folder
    can name them (`class_name_key`); else `dataset` as it is, its labels taken as the
    teacher's output indices.

    Raises:
      UserError: for class names half or more of which are the teacher's but not all
        (`_partly_matched_refusal`): neither the names nor their sorted order would say
        which output each is.
    """
    teacher_names = teacher.class_names()
    if dataset.class_names == teacher_names:
        return dataset
    teacher_labels = _teacher_labels_by_name(dataset.class_names, teacher_names)
    if teacher_labels is None:
        refusal = _partly_matched_refusal(source, dataset.class_names, teacher_names)
        if refusal:
            raise refusal
        return dataset
    preparation = dataset.preparation
    if tuple(teacher_labels) == tuple(range(teacher.num_classes)):
        say(f"evaluation: {source}'s class names are the teacher's, written as a folder can write them")
    else:
        say(f"evaluation: {source} holds {dataset.num_classes} of the teacher's {teacher.num_classes} classes, "
            "matched to them by name")
        # In the reports' description of the images too: a top-1 over 3 classes reads as one over all 10.
        preparation += (f"{dataset.num_classes} of the teacher's {teacher.num_classes} classes, matched by name",)
    return LabeledImages(dataset.images, teacher_labels[dataset.labels], num_classes=teacher.num_classes,
                         name=dataset.name, class_names=teacher_names, preparation=preparation)


def class_name_key(name: str) -> str:
    """A class name as a folder may spell it: lower case, and nothing but letters and digits
    ("T-shirt/top", which no folder can be named, and the folder "t-shirt_top" agree)."""
    return "".join(character for character in name.casefold() if character.isalnum())


def _teacher_labels_by_name(class_names: Optional[Tuple[str, ...]],
                            teacher_names: Optional[Tuple[str, ...]]) -> Optional[np.ndarray]:
    """The teacher's output index of each of `class_names`, matched to `teacher_names` as they
    are, else by `class_name_key`; None unless every name matches one output, and only one."""
    if not teacher_names or not class_names:
        return None
    for key in (str, class_name_key):
        index_of = {key(name): index for index, name in enumerate(teacher_names)}
        if len(index_of) < len(teacher_names):  # ImageNet's has two "crane"s: no name is a class.
            return None
        keys = [key(name) for name in class_names]
        if len(set(keys)) == len(keys) and all(name_key in index_of for name_key in keys):
            return np.asarray([index_of[name_key] for name_key in keys], np.int64)
    return None


def _partly_matched_refusal(source: str, class_names: Optional[Tuple[str, ...]],
                            teacher_names: Optional[Tuple[str, ...]]) -> Optional[UserError]:
    """The refusal of data half or more of whose class names are the teacher's
    (`class_name_key`) and the rest not; None otherwise. Sorted folder names are taken as
    the teacher's outputs where none of them is a class name of the teacher ("class_0",
    ...), but a "T-shirt" folder among nine named after the teacher's classes would be
    read as whichever output its place in the sorted names gives it."""
    if not teacher_names or not class_names or len({class_name_key(name) for name in teacher_names}) < len(
            teacher_names):
        return None
    teacher_keys = {class_name_key(name) for name in teacher_names}
    unmatched = [name for name in class_names if class_name_key(name) not in teacher_keys]
    if not unmatched or 2 * len(unmatched) > len(class_names):
        return None
    matched_keys = {class_name_key(name) for name in class_names} & teacher_keys
    left = [name for name in teacher_names if class_name_key(name) not in matched_keys]
    return UserError(f"evaluation dataset {source!r}: {len(class_names) - len(unmatched)} of its "
                     f"{len(class_names)} class names are the teacher's, but not "
                     f"{listed([repr(name) for name in unmatched], NAMES_SHOWN)}, "
                     "so neither their names nor their sorted order say which of the teacher's outputs those are; "
                     "name each class folder after the teacher's class it holds, and leave out classes it does "
                     "not predict (the teacher's other classes: "
                     f"{listed([repr(name) for name in left], NAMES_SHOWN)})")


def _shape_refusal(source: str, image_shape: Tuple[int, int, int], teacher: Teacher) -> UserError:
    """The refusal of images of another shape than the teacher's, without --eval_resize."""
    resize = tuple(image_shape[:2]) != tuple(teacher.image_shape[:2])
    convert = ("" if image_shape[2] == teacher.image_shape[2] else
               "convert them to gray (by luminance)" if teacher.image_shape[2] == 1 else
               f"repeat their gray over {teacher.image_shape[2]} channels")
    return UserError(f"evaluation dataset {source!r} has images of shape {tuple(image_shape)} but the teacher reads "
                     f"{tuple(teacher.image_shape)}; pass --eval_resize to "
                     + " and ".join(what for what in ("resize them" if resize else "", convert) if what))


def _class_count_refusal(source: str, num_classes: int, teacher: Teacher,
                         labels: Optional[np.ndarray] = None) -> UserError:
    """The refusal of data of `num_classes` classes; `labels`, read from files without a class
    count, may say they count from 1, or which of them lie beyond the teacher's outputs."""
    from_one = (labels is not None and labels.size and int(labels.min()) == 1
                and num_classes == teacher.num_classes + 1)
    beyond = np.flatnonzero(labels >= teacher.num_classes) if labels is not None and not from_one else ()
    detail = ""
    if from_one:
        detail = (f"; its labels run from 1 to {num_classes - 1}: if they count from 1, subtract 1 from them (the "
                  "teacher's outputs count from 0)")
    elif len(beyond):
        detail = (f"; {len(beyond):,} of its {labels.size:,} labels {'is' if len(beyond) == 1 else 'are'} "
                  f"{teacher.num_classes} or more, the first {int(labels[beyond[0]])} (image {int(beyond[0]):,}, "
                  "counting from 0)")
    elif labels is not None:  # Counted from the other split's labels as well.
        detail = (f"; its labels stop at {int(labels.max()) if labels.size else 0}, but another split's reach "
                  f"{num_classes - 1}, and the class count is read from both: correct that split's labels, or move "
                  "its files out of the folder")
    return UserError(f"evaluation dataset {source!r} has {num_classes} classes but the teacher predicts "
                     f"{teacher.num_classes}{detail}")


def _class_names_check(teacher: Teacher, source: str):
    """For a folder of images: refuses class folders the teacher's outputs cannot be read
    as (another number, not matched by name; half of them named after the teacher's classes
    and the rest not) before any image is decoded."""
    def check(class_names: Tuple[str, ...]) -> None:
        matched = _teacher_labels_by_name(class_names, teacher.class_names()) is not None
        if not matched:
            refusal = _partly_matched_refusal(source, class_names, teacher.class_names())
            if refusal:
                raise refusal
        if len(class_names) != teacher.num_classes and not matched:
            raise _class_count_refusal(source, len(class_names), teacher)
    return check


def _load_evaluation_data(run_config: RunConfig, teacher: Teacher, source: str, data_dir: str,
                          progress: bool) -> LabeledImages:
    settings = run_config.evaluation
    # A folder of photographs decodes only the subset it keeps; other sources are subset after.
    subset = {"max_samples": settings.max_samples, "seed": run_config.seed,
              "check_class_names": _class_names_check(teacher, source)}
    if not _resizes(settings, source, teacher):
        def check_image_shape(image_shape: Tuple[int, int, int]) -> None:  # From the headers, before decoding.
            if tuple(image_shape) != tuple(teacher.image_shape):
                raise _shape_refusal(source, image_shape, teacher)
        subset["check_image_shape"] = check_image_shape
    try:
        return data.load_dataset(source, settings.split, data_dir=data_dir or None,
                                 manual_dir=settings.manual_dir or None, progress=progress, **subset)
    except MixedImageSizesError as error:
        height, width = teacher.image_shape[:2]
        if not _resizes(settings, source, teacher):
            raise UserError(f"{error}; pass --eval_resize to crop and resize them to the teacher's "
                            f"{height}x{width}") from None
        commonest = f" ({error.commonest})" if error.commonest else ""
        say(f"evaluation: {source} images differ in size{commonest}; each is cropped to its central "
            f"{CENTRAL_CROP_FRACTION:.1%} and resized to {height}x{width} as it loads")
        return data.load_dataset(source, settings.split, data_dir=data_dir or None,
                                 manual_dir=settings.manual_dir or None, image_size=(height, width),
                                 progress=progress, **subset)


# Which evaluation settings each kind of source reads (`data.load_dataset`); "" is no data.
# The data settings every dataset reads; `data.reads_data_dir` and `reads_manual_dir` say which read those too.
_EVERY_SOURCE_SETTINGS = ("split", "max_samples", "resize")
_DATA_SETTING_FLAGS = {"data_dir": "eval_data_dir", "manual_dir": "eval_manual_dir", "split": "eval_split",
                       "max_samples": "eval_max_samples", "resize": "eval_resize"}


def unused_evaluation_settings(settings: EvaluationConfig, source: str) -> Optional[str]:
    """What a note says of the data settings changed from their defaults that `source` (the
    dataset evaluated, "" for none) never reads, or None: `--eval_data_dir` with digits, say,
    or `--eval_split` with no evaluation data."""
    read = () if source in ("", NO_EVALUATION) else (
        _EVERY_SOURCE_SETTINGS + (("data_dir",) if data.reads_data_dir(source) else ())
        + (("manual_dir",) if data.reads_manual_dir(source) else ()))
    defaults = EvaluationConfig()
    unused = [f"--{flag}" for name, flag in _DATA_SETTING_FLAGS.items()
              if name not in read and getattr(settings, name) != getattr(defaults, name)]
    if not unused:
        return None
    data_named = {"": "no evaluation data (the teacher names none)",
                  NO_EVALUATION: f"no evaluation data (--eval_dataset={NO_EVALUATION})"}.get(
                      source, f"{source} as the evaluation data")
    return f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} nothing with {data_named}"


def split_read(source: str, split: str) -> str:
    """The split of `source` that `data.load_dataset` reads for `split`: `split`, or "" for a folder of
    class folders without split sub-folders, which is read whole."""
    if data.is_image_folder(source) and image_folders.image_split_folder(source, split) == source:
        return ""
    return split


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
    unused = unused_evaluation_settings(settings, source)
    if not source or source == NO_EVALUATION:
        if unused:
            say(f"note: {unused}")
        return None
    try:
        dataset = _load_evaluation_data(run_config, teacher, source, data_dir, progress)
    except UserError as error:
        if settings.dataset:
            raise
        raise UserError(f"{error} (the teacher's training data, as its sidecar names it; pass --eval_dataset for "
                        f"other data, or --eval_dataset={NO_EVALUATION})") from None
    if unused:  # Said once the data has loaded: a source that fails to load is the error to read.
        say(f"note: {unused}")
    dataset = _matched_to_teacher_classes(dataset, teacher, source)
    # The report calls it held-out data; a teacher knows its training images (TFDS slices too: train[:10%]).
    if not split_read(source, settings.split):
        say(f"note: {source} has no {settings.split!r} sub-folder, so every image of its class folders is evaluated "
            "(--eval_split names a sub-folder): if the teacher was trained on them, its top-1 there is not "
            "held-out accuracy")
    elif settings.split.split("[")[0] == TRAINING_SPLIT:
        say(f"note: --eval_split={settings.split} measures every model on the training images of {source}: if the "
            "teacher was trained on them, its top-1 there is not held-out accuracy, and the int8 models' gaps may "
            "differ")
    if dataset.classes_from_labels and dataset.num_classes < teacher.num_classes:
        say(f"evaluation: {source}'s labels reach {dataset.num_classes - 1}; read as the teacher's outputs 0 to "
            f"{teacher.num_classes - 1}")
        dataset = dataclasses.replace(dataset, num_classes=teacher.num_classes, classes_from_labels=False)
    if dataset.num_classes != teacher.num_classes:
        raise _class_count_refusal(source, dataset.num_classes, teacher,
                                   dataset.labels if dataset.classes_from_labels else None)
    if settings.max_samples:  # Before any resize: the subset depends on the labels alone, and resizes less.
        dataset = dataset.class_balanced(settings.max_samples, seed=run_config.seed)
    if tuple(dataset.image_shape) != tuple(teacher.image_shape):
        if not _resizes(settings, source, teacher):
            raise _shape_refusal(source, dataset.image_shape, teacher)
        say(f"evaluation: {source} images are {tuple(dataset.image_shape)}; converted to the teacher's "
            f"{tuple(teacher.image_shape)}")
        dataset = dataset.to_input_shape(teacher.image_shape)
    return dataset


def _predicted_classes(run_config: RunConfig, teacher: Teacher, dataset: LabeledImages, predictors: dict,
                       digests: Dict[str, str], progress: bool,
                       label_order_check: Callable[[np.ndarray, np.ndarray], Optional[str]]) -> Dict[str, np.ndarray]:
    """Each predictor's class for every image of `dataset`, a chunk at a time, going on from
    the predictions an interrupted run saved for the same images and models
    (`evaluation_progress`) and saving its own as it goes.

    After the first chunk of images of a longer evaluation, `label_order_check` (the FP32
    teacher's classes and the labels so far; a warning or None) is said at once: labels in
    another order than the teacher's outputs show there, where the whole evaluation of
    ImageNet takes hours."""
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
            if start == 0 and done < len(labels):
                warning = label_order_check(predicted["fp32_keras"][:done], labels[:done])
                if warning:
                    say(f"warning: on the first {done:,} of {len(labels):,} images, {warning}; the evaluation goes "
                        "on (Ctrl-C stops it)")  # Before the bar's first line: nothing is drawn yet.
            if done == len(labels) or time.monotonic() - last_saved >= evaluation_progress.SAVE_INTERVAL_SECONDS:
                evaluation_progress.save(path, key, done, predicted)
                last_saved, saved_done = time.monotonic(), done
            if bar:
                bar.update(done, {})
    # A stop (`stop_signals`): what was done since the last save is kept too.
    except (KeyboardInterrupt, OSError) as stop:
        if not stop_signals.is_stop(stop):
            raise
        if done > saved_done:
            evaluation_progress.save(path, key, done, predicted)
        # Where it stopped, as a training stage's stop says its step ("stopped: interrupted" said nothing of it).
        signal_number = stop_signals.stop_signal_of(stop)
        raise TrainingInterrupted(
            f"{stop_signals.how_stopped(signal_number)} at evaluation image {done:,} of {len(labels):,}", signal_number,
            advice=f"{'predictions saved, ' if done else ''}rerun the same command to resume") from None
    finally:
        if bar:
            bar.close()
    return predicted


def run(run_config: RunConfig, teacher: Teacher, student, tflite_paths: Dict[str, str],
        dataset: Optional[LabeledImages], progress: bool = True) -> dict:
    """Top-1 of the teacher, the student and every TFLite model on `dataset` (see `evaluation_dataset`);
    sizes; latency. With `progress`, a progress line over the images (ImageNet's 50,000 through
    ResNet50 and its students take hours on a few CPU cores)."""
    model_bytes = {}  # Read once: for latency, the evaluation and its saved predictions' key.
    for kind, path in tflite_paths.items():
        with open(path, "rb") as model_file:
            model_bytes[kind] = model_file.read()
    results = {"sizes_bytes": {kind: len(contents) for kind, contents in model_bytes.items()}}
    file_reports = {kind: tflite_model.inspect_tflite(contents) for kind, contents in model_bytes.items()}
    # What a script deploying a file needs, without parsing export_report.md.
    results["files"] = {kind: {"file": os.path.basename(tflite_paths[kind]), "sha256": bytes_digest(contents),
                               "input": _tensor_quantization(file_reports[kind].inputs[0]),
                               "output": _tensor_quantization(file_reports[kind].outputs[0])}
                        for kind, contents in model_bytes.items()}
    integer_reports = {kind: report for kind, report in file_reports.items() if kind != "float"}
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
    results["latency_runs"] = run_config.evaluation.latency_runs
    results["latency_median_ms"] = {kind: {str(threads): measured[threads][kind].median_ms
                                           for threads in LATENCY_THREADS} for kind in model_bytes}
    if dataset is None:
        why = (f"--eval_dataset={NO_EVALUATION}" if run_config.evaluation.dataset == NO_EVALUATION
               else "set --eval_dataset")
        say(f"evaluation: no real data to evaluate on ({why})")
        return results
    labels = dataset.labels
    source = teacher.real_data(run_config.evaluation.dataset, run_config.evaluation.data_dir)[0]
    split = split_read(source, run_config.evaluation.split)
    say(f"evaluation: {len(labels):,} images of {dataset.name} ({split or 'the whole folder'})")
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
        if kind == QAT_KIND and student is not None and not reads_pixels_as(student, classifier, teacher.preprocessing):
            # For the agreement, the student on the input its int8 file computes on: a file exported before
            # `quantizer_ranges.model_input_ranges_as_quantized` reads each pixel a step off the student's level.
            predictors[STUDENT_ON_INT8_INPUT] = lambda pixels, inputs, classifier=classifier: evaluate.keras_predict(
                student, classifier.input_as_seen(pixels, teacher.preprocessing), EVALUATION_BATCH_SIZE)
            digests[STUDENT_ON_INT8_INPUT] = f"{digests[student_name]} on {digests[f'{kind}_tflite']}"
    from_class_folders = data.is_image_folder(source)

    def label_order_check(reference_classes: np.ndarray, labels_seen: np.ndarray) -> Optional[str]:
        return evaluate.label_order_warning(reference_classes, labels_seen, teacher.num_classes,
                                            dataset.class_names or (), teacher.class_names(), from_class_folders)

    predicted = _predicted_classes(run_config, teacher, dataset, predictors, digests, progress, label_order_check)
    student_on_int8_input = predicted.pop(STUDENT_ON_INT8_INPUT, predicted.get(student_name))
    accuracy = {name: float(np.mean(classes == labels)) for name, classes in predicted.items()}
    warning = label_order_check(predicted["fp32_keras"], labels)
    if warning:
        say(f"warning: {warning}")
    agreement = {}
    if student_on_int8_input is not None and f"{QAT_KIND}_tflite" in predicted:
        agreement["qat_keras_vs_tflite"] = float(np.mean(student_on_int8_input == predicted[f"{QAT_KIND}_tflite"]))
    if warning:
        results["label_order_warning"] = warning
    results.update({"dataset": dataset.name, "split": split, "images": int(len(labels)),
                    "preparation": list(dataset.preparation),
                    "top1": accuracy, "agreement": agreement,
                    **_against_fp32(predicted, labels, class_names_of(dataset, teacher))})
    return results


def _tensor_quantization(tensor: tflite_model.TensorInfo) -> dict:
    """A model input's or output's dtype and shape, and for an integer one its scale and zero
    point: real value = scale * (integer - zero point)."""
    described = {"dtype": tensor.dtype, "shape": list(tensor.shape)}
    if tensor.scales:
        described.update(scale=float(tensor.scales[0]), zero_point=int(tensor.zero_points[0]))
    return described


def reads_pixels_as(student, classifier: evaluate.TfliteClassifier, preprocessing) -> bool:
    """Whether int8 file `classifier` puts every pixel level on the input value that the QAT `student`'s
    input quantizer gives it, so that the two compute on the same input; False where the student has
    no input quantizer (its first layer left float) or the file a float input."""
    table = classifier.pixel_table(preprocessing)
    quantizer = quantizer_ranges.model_input_quantizer(student)
    if table is None or quantizer is None:
        return False
    levels = np.repeat(np.arange(int(PIXEL_MAX) + 1, dtype=np.uint8)[:, None], table.shape[0], axis=1)
    scale, zero_point = classifier.input_details["quantization"]
    as_quantized = quantizer(preprocessing.apply(levels), training=False).numpy()
    return bool(np.allclose((table.T.astype(np.float32) - zero_point) * scale, as_quantized, rtol=0, atol=scale / 4))


def class_names_of(dataset: LabeledImages, teacher: Teacher) -> Tuple[str, ...]:
    """The names of `dataset`'s labels, which are the teacher's outputs by now: the data's own (class
    folders, TFDS labels), else the teacher's (its sidecar's, for IDX files, which name none), else ()."""
    return dataset.class_names if len(dataset.class_names) == teacher.num_classes else teacher.class_names()


def _against_fp32(predicted: Dict[str, np.ndarray], labels: np.ndarray, class_names: Tuple[str, ...]) -> dict:
    """How often each model predicts the FP32 teacher's class, and the class on which its
    top-1 falls furthest below the teacher's (`evaluate.largest_class_drop`), named from
    `class_names` where there are any."""
    reference = predicted["fp32_keras"]
    others = {name: classes for name, classes in predicted.items() if name != "fp32_keras"}
    drops = {}
    for name, classes in others.items():
        drop = evaluate.largest_class_drop(reference, classes, labels)
        if drop is not None:
            drops[name] = {"class": drop.label, "images": drop.images, "fp32": drop.reference, "model": drop.model,
                           **({"name": class_names[drop.label]} if class_names else {})}
    return {"same_class_as_fp32": {name: float(np.mean(classes == reference)) for name, classes in others.items()},
            "largest_class_drop": drops}
