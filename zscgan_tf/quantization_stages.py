"""Stages 2 and 3 of a run: data-free QAT and fully-integer TFLite export (the evaluation on
real data that follows is `evaluation_stage`'s).

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
"""

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import sys
import shutil
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from tf_keras.src.saving import serialization_lib

from zscgan_tf import __version__
from zscgan_tf import distill, edge_tpu, evaluate, export, exported_model, model_files, quantize, quantizer_ranges
from zscgan_tf import representative_data, seeds, tflite_model
from zscgan_tf import training_loop, zero_shot
from zscgan_tf.config import RunConfig
from zscgan_tf.errors import UserError
from zscgan_tf.files import (file_digest, read_json, save_keras_model_atomic, system_path, write_json_atomic,
                             write_text_if_changed)
from zscgan_tf.progress import count_of, say
from zscgan_tf.run_state import LOGS_DIR, stage_finished
from zscgan_tf.teachers import Teacher

# TF-MOT students don't survive the .keras format (the input quantizer's variables are
# renamed on load); HDF5 round-trips them exactly.
STUDENT_MODEL_FILE = "student.h5"
DISTILLATION_DIR = "distillation"
FLOAT_TFLITE_FILE = "teacher_float.tflite"
PTQ_TFLITE_FILE = "ptq_int8.tflite"
QAT_TFLITE_FILE = "qat_int8.tflite"
EXPORT_REPORT_FILE = "export_report.md"
# In the distillation directory: the generator its checkpoints were distilled from.
DISTILLED_FROM_FILE = "generator.json"
# The weights digest of the generator a student was distilled from, in that file and in the state.
GENERATOR_WEIGHTS_KEY = "generator_weights_sha256"
LABELS_FILE = "labels.txt"
# How every quantized model's input range is set, part of the keys that decide what is reused (the
# export stage's, and the benchmark's rows and QAT directories): it covers pixels 0 to 255
# (`Teacher.input_range`), not only the calibration samples' range. Models exported before are
# converted again.
INPUT_RANGE = "covers_pixels_0_255"
# How a QAT student's int8 file reads its input, part of the same keys for QAT files: on the levels the
# student's input quantizer computes on (`quantizer_ranges.model_input_ranges_as_quantized`). Files
# exported before read every pixel a level below, and are converted again.
QAT_INPUT = "on_student_input_levels"
# Uniform samples of the teacher's input range that calibrate `check_integer_export`'s conversion.
INTEGER_CHECK_SAMPLES = 4


# What the progress bar of a long generation of calibration samples says.
CALIBRATION_PROGRESS = "calibration samples generated"
EXPORT_CALIBRATION_PROGRESS = "export calibration"
# Copies of the calibration samples held at once while they are made: gathered in passes,
# joined, then reordered (2 at the peak; `memory_checks.check_samples_fit_in_memory` counts them).
CALIBRATION_COPIES = 2


def calibration_samples_generated(count: int, num_classes: int) -> int:
    """How many samples `calibration_samples` generates for `count`: one each of `count`
    classes, or as many of each class, so a whole number of each class's (1,001 of 1,000
    classes: 2,000)."""
    return count if count < num_classes else math.ceil(count / num_classes) * num_classes


def calibration_samples(generator, teacher: Teacher, count: int, seed: int, progress: bool = False) -> np.ndarray:
    """`count` class-balanced generator samples (classes interleaved), teacher-space float32.

    With fewer samples than classes (the default 500 for ImageNet's 1000), one sample each
    of `count` classes drawn at random, rather than of the first `count` classes. With
    `progress`, a progress bar if generating them takes long.
    """
    noise_dim = int(generator.inputs[0].shape[-1])
    shown = CALIBRATION_PROGRESS if progress else ""
    if count < teacher.num_classes:
        labels = np.sort(np.random.default_rng(seed).choice(teacher.num_classes, count, replace=False))
        return zero_shot.generate_for_labels(generator, labels, noise_dim, seed, shown)
    per_class = calibration_samples_generated(count, teacher.num_classes) // teacher.num_classes
    images, labels = zero_shot.generate(generator, teacher.num_classes, per_class, noise_dim, seed, shown)
    # `generate` sorts samples by class; interleaving them keeps any prefix balanced too.
    index_within_class = np.tile(np.arange(per_class), teacher.num_classes)
    return images[np.argsort(index_within_class, kind="stable")][:count]


def student_check_key(run_config: RunConfig, teacher: Teacher, teacher_fingerprint: str) -> Optional[str]:
    """What the early student check (`check_integer_export`'s `check_student`) depends on, as
    a SHA-256: the teacher (its `teachers.fingerprint` and its architecture), the quantization
    settings, whether the run distils a student, the TensorFlow and TF-MOT versions that build
    and convert the student, and the code that does it here (this module's, `quantize`'s,
    `export`'s and `exported_model`'s source: the package's version number has not moved with
    it). A work directory records it once the check has passed, so that a generator stage
    resumed with the same key does not build and convert the student again (up to 30 s for
    ResNet50 at 224x224).

    Returns:
      The key, or None for a teacher whose architecture has no JSON form (checked until its
      QAT has started).
    """
    try:
        architecture = teacher.model.to_json()
    except (NotImplementedError, TypeError, ValueError):
        return None
    described = json.dumps({"teacher": teacher_fingerprint, "version": __version__,
                            "tensorflow": tf.__version__, "tfmot": tfmot.__version__,
                            "quantization": dataclasses.asdict(run_config.quantization),
                            "distils": bool(run_config.distillation.steps)}, sort_keys=True)
    digest = hashlib.sha256(described.encode() + architecture.encode())
    for module in (sys.modules[__name__], quantize, export, exported_model):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


def check_integer_export(run_config: RunConfig, teacher: Teacher, check_student: bool = True) -> Optional[str]:
    """Converts the teacher to int8 TFLite as the export stage will, calibrated on a few
    uniform samples of its input range, so that a teacher the converter cannot make fully
    integer (an op it leaves float, such as ELU) is refused before hours of training rather
    than at export. About a second for a small model, 8 s for ResNet50 at 224x224 on 2 cores.
    With `check_student` (a run whose generator has not finished, or that distils its first
    student with settings no check has passed), the student is built and, for W8A8,
    converted too (`_check_student_export`): 4 s more for the demo's teacher, about 15 s for
    MobileNetV2 and 30 s for ResNet50 at 224x224 on 2 cores.

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
            teacher.model, representative_data.representative_dataset_from_array(samples, input_range),
            mode="int8", io_dtype=settings.io_dtype, per_channel=settings.per_channel,
            allow_float_ops=settings.allow_float_ops, check_loads=False)
    except export.NotFullyIntegerError as error:
        if settings.allow_float_ops:  # Float ops are allowed, but the input or output is float too.
            raise UserError(f"the teacher cannot be exported as int8 TFLite, so this run would fail at export, "
                            f"after training: {error.summary}") from error
        raise UserError(f"the teacher cannot be exported as fully-integer TFLite, so this run would fail at "
                        f"export, after training: {error.summary} Pass --allow_float_ops to export int8 models "
                        f"that keep these ops float ({export.FLOAT_OPS_DEVICES})") from error
    except export.TfliteConversionError as error:
        raise UserError(f"the teacher cannot be exported as fully-integer TFLite, so this run would fail at "
                        f"export, after training: {error}") from error
    teacher_report = tflite_model.inspect_tflite(model_bytes)
    if check_student:
        _check_student_export(run_config, teacher, samples, input_range, teacher_report)
    float_ops = export.float_ops_description(teacher_report, teacher.model)
    if not float_ops:
        return None
    return f"the int8 models will keep float ops (--allow_float_ops): {float_ops} ({export.FLOAT_OPS_DEVICES})"


def trial_student(model: tf_keras.Model, scheme: quantize.QuantizationScheme, samples: np.ndarray,
                  input_range) -> tf_keras.Model:
    """The QAT student of `model` as the distillation stage builds it, for a check made before
    training: the automatic layer names are left as they were, so that the student trained
    later gets the same ones. Raises TF-MOT's refusal as a `UserError`."""
    with quantize.automatic_names_unchanged():
        student, _ = quantize.quantize_student(model, scheme, calibration_inputs=samples, input_range=input_range)
    return student


def trial_int8_report(student: tf_keras.Model, samples: np.ndarray, input_range, io_dtype: str = "int8",
                      per_channel: bool = True) -> tflite_model.TfliteModelReport:
    """`student` converted to int8 TFLite on `samples` as the export will, but with float ops
    allowed, so that a check can count and name the ops left float. Raises
    `export.TfliteConversionError` for a conversion that fails."""
    return tflite_model.inspect_tflite(export.convert_to_tflite(
        student, representative_data.representative_dataset_from_array(samples, input_range), mode="int8",
        io_dtype=io_dtype, per_channel=per_channel, allow_float_ops=True, check_loads=False))


def _check_student_export(run_config: RunConfig, teacher: Teacher, samples: np.ndarray,
                          input_range, teacher_report: tflite_model.TfliteModelReport) -> None:
    """Builds the QAT student as the distillation stage starts it, and converts a W8A8 one as
    the export stage will, so that what fails there fails before the generator trains:
    - a teacher TF-MOT cannot quantize (a layer used twice);
    - a student the converter keeps more ops float in than in the teacher converted
      post-training (`teacher_report`, which may keep the ops `--allow_float_ops` allows):
      a BatchNormalization over another axis than the channels', or per-tensor weight scales
      (`--noper_channel`): TF-MOT fake-quantizes a convolution's weights before the BatchNorm
      after it is folded into them, and the converter keeps the folded convolution float
      rather than give it per-tensor scales it was not trained with
      (tensorflow/model-optimization#1131)."""
    scheme = scheme_of(run_config)
    if not run_config.distillation.steps:
        return
    try:
        student = trial_student(teacher.model, scheme, samples, input_range)
    except UserError as error:
        raise UserError(f"{error}. This run would stop there, once its generator had trained: pass "
                        "--distillation_steps=0 for a run whose only int8 model is the post-training one") from error
    if not scheme.exportable:
        return
    per_channel = run_config.quantization.per_channel
    # Float ops allowed here, so that the ones the teacher's check has answered for (an ELU) do not count twice.
    try:
        report = trial_int8_report(student, samples, input_range, run_config.quantization.io_dtype, per_channel)
    except export.TfliteConversionError as error:
        raise UserError(f"the W8A8 QAT student cannot be exported as int8 TFLite, so this run would fail at export, "
                        f"after training: {error} Pass --distillation_steps=0 for a run whose only int8 model is the "
                        "post-training one") from error
    if len(report.non_integer_ops) <= len(teacher_report.non_integer_ops):
        return
    if per_channel and not run_config.quantization.allow_float_ops:
        raise UserError(
            f"the W8A8 QAT student cannot be exported as fully-integer TFLite, so this run would fail at export, "
            f"after training: it would keep {export.float_ops_description(report, student)} float, where the "
            "teacher quantized post-training keeps none of these. Pass --allow_float_ops to export it with them "
            f"float ({export.FLOAT_OPS_DEVICES}), or --distillation_steps=0 for a run whose only int8 model is the "
            "post-training one")
    if not per_channel:
        # Kept float, these convolutions would be the model's bulk: not what --allow_float_ops is for.
        not_covered = (" --allow_float_ops does not cover these: it keeps float the ops TFLite has no int8 kernel "
                       "for, and convolutions have one." if run_config.quantization.allow_float_ops else "")
        raise UserError(
            f"the W8A8 QAT student cannot be exported as fully-integer TFLite with per-tensor weight scales "
            f"(--noper_channel), so this run would fail at export, after training: it would keep "
            f"{export.float_ops_description(report, student)} float. TF-MOT fake-quantizes each convolution's "
            "weights before the BatchNorm after it is folded into them, and the folded weights need a scale per "
            f"channel (tensorflow/model-optimization#1131).{not_covered} Keep per-channel weights, or pass "
            "--distillation_steps=0 for a run whose only int8 model is the post-training one, with per-tensor weights")


def scheme_of(run_config: RunConfig) -> quantize.QuantizationScheme:
    settings = run_config.quantization
    return quantize.QuantizationScheme.from_name(
        settings.scheme, keep_first_and_last_at_8_bits=settings.keep_first_and_last_at_8_bits,
        per_channel=settings.per_channel, low_bit_ranges=settings.low_bit_ranges)


def load_student(path, input_range=None, trust_model_code: bool = False) -> tf_keras.Model:
    """Loads a TF-MOT student saved by `distillation_stage` (a run's `student.h5`).

    With `input_range` (`Teacher.input_range()`), the model input's range is widened to
    it: a student saved before that range covered every pixel level exports with it.

    It loads any tf_keras model file; `export.is_quantization_aware` tells a student from a
    float model. Keras safe mode is on unless `trust_model_code` (the teacher's setting: the
    student of a teacher with Lambda layers has them too): serialized Python is refused
    rather than run.

    Raises:
      OSError, ValueError: as `tf_keras.models.load_model` raises them, for a file it cannot read.
      ValueError: for an `input_range` that is not (low, high).
      UserError: for a file holding serialized Python, or naming a module for Keras to import
        (`model_files.modules_outside_keras_refused`), without `trust_model_code`.
    """
    path = system_path(os.fspath(path))  # TensorFlow's loader took "link/.." as text.
    # The scope covers HDF5 files, whose loader would run a Lambda layer's code without one.
    with tfmot.quantization.keras.quantize_scope(), serialization_lib.SafeModeScope(safe_mode=not trust_model_code):
        try:
            with contextlib.ExitStack() as guard:
                if not trust_model_code:
                    guard.enter_context(model_files.modules_outside_keras_refused())
                student = tf_keras.models.load_model(path, compile=False)
        except model_files.ModuleImportRefused as error:
            raise UserError(model_files.imported_module_refusal(error, f"student {path!r}")) from error
        except ValueError as error:
            if not model_files.refused_as_python_code(error):
                raise
            raise UserError(f"student {path!r} holds serialized Python code (e.g. a Lambda layer, as the "
                            "student of a teacher with one does) and was not loaded; pass --trust_model_code only if "
                            "you trust its author") from error
    if input_range is not None:
        if len(input_range) != 2:
            raise ValueError(f"the input range must be (low, high), got {input_range!r}")
        quantizer_ranges.cover_model_input_range(student, *input_range)
    return student


def restore_student(run_config: RunConfig, teacher: Teacher, generator, calibration: np.ndarray,
                    checkpoint_dir: str) -> tf_keras.Model:
    """Rebuilds the student of `run_config` and loads the latest QAT checkpoint in `checkpoint_dir`.

    Raises:
      UserError: if there is no checkpoint.
    """
    training_loop.check_checkpoints_inside(checkpoint_dir)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if not latest:
        raise UserError(f"no QAT checkpoint in {checkpoint_dir!r}: its run has trained no student yet; rerun the "
                        "run's command (python -m zscgan_tf.train) to train one")
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
                                      run_config.generator_training,
                                      seed=run_config.seed + seeds.JOINT_GENERATOR_SEED_OFFSET)


def distillation_stage(run_config: RunConfig, teacher: Teacher, generator, calibration: np.ndarray, state: dict,
                       write_state, generator_sha256: str, progress: bool = True) -> Optional[tf_keras.Model]:
    """Data-free QAT of the student; returns it, or None when `distillation.steps` is 0.
    `generator_sha256`: the generator's weights digest (`weights_digest`), which the student
    records it was distilled from."""
    settings = run_config.distillation
    work_dir = run_config.work_dir
    if settings.steps == 0:
        left = [name for name in (STUDENT_MODEL_FILE, QAT_TFLITE_FILE) if os.path.exists(os.path.join(work_dir, name))]
        if left:
            say(f"distillation: none asked (--distillation_steps=0); {' and '.join(left)} of an earlier run with QAT "
                "are kept as they were, neither measured nor reported")
        return None
    model_path = os.path.join(work_dir, STUDENT_MODEL_FILE)
    finished = state.get("distillation", {})
    distilled_from = _distilled_from(work_dir, finished)
    if stage_finished(work_dir, finished, settings.steps, STUDENT_MODEL_FILE):
        if distilled_from in (None, generator_sha256):  # None: a student of a version that did not record it.
            say(f"distillation: already done ({settings.steps} steps), loading {model_path}")
            return load_student(model_path, teacher.input_range(),
                                trust_model_code=run_config.teacher.trust_model_code)
        # A generator trained again from nothing (its files lost), which came out otherwise: the student was
        # kept as built on it.
        say(f"distillation: {model_path} was distilled from another generator than this one; distilling again")
    _start_distilling_from(os.path.join(work_dir, DISTILLATION_DIR), generator_sha256)
    scheme = scheme_of(run_config)
    # Said before the student is built: its ranges are calibrated first, 20 s for 5,000 samples on 2 CPU cores.
    say(f"distillation: {count_of(settings.steps, 'step')} of {settings.batch_size} generated samples into the "
        f"{scheme.name} student" + (", training a copy of the generator along" if settings.joint_generator else ""))
    student, float_layers = quantize.quantize_student(teacher.model, scheme, calibration_inputs=calibration,
                                                      input_range=teacher.input_range())
    if float_layers:
        say(f"distillation: {count_of(len(float_layers), 'layer')} TF-MOT cannot quantize "
            f"{'stays' if len(float_layers) == 1 else 'stay'} float (listed in "
            f"report.md): {quantize.summarize_layer_names(teacher.model, float_layers)}")
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes, settings,
                                  seed=run_config.seed + seeds.DISTILLATION_SEED_OFFSET,
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
    # A checkpoint from before the input's range covered every pixel level restores the narrower one: widened
    # again before the steps that resume from it (TF-MOT's input quantizer only widens it further).
    summary = distiller.train(os.path.join(work_dir, DISTILLATION_DIR), progress=progress,
                              log_dir=os.path.join(work_dir, LOGS_DIR, DISTILLATION_DIR),
                              after_restore=lambda: quantizer_ranges.cover_model_input_range(
                                  student, *teacher.input_range()))
    zero_shot.check_teacher_unchanged(teacher, teacher_weights, "quantization-aware training")
    save_keras_model_atomic(student, model_path)
    state["distillation"] = {"steps": settings.steps, "scheme": scheme.name, "float_layers": list(float_layers),
                             "summary": summary.to_dict(), "sha256": file_digest(model_path),
                             GENERATOR_WEIGHTS_KEY: generator_sha256}
    write_state(state)
    return student


def _distilled_from(work_dir: str, finished: dict) -> Optional[str]:
    """The weights digest of the generator the finished student was distilled from: as the
    state records it, else as its checkpoints' directory does (`DISTILLED_FROM_FILE`); None
    where neither does (a student of an earlier version)."""
    return finished.get(GENERATOR_WEIGHTS_KEY) or _recorded_generator(os.path.join(work_dir, DISTILLATION_DIR))


def _recorded_generator(distillation_dir: str) -> Optional[str]:
    """The generator weights digest `distillation_dir`'s `DISTILLED_FROM_FILE` records, or None."""
    record = read_json(os.path.join(distillation_dir, DISTILLED_FROM_FILE), {})
    return record.get(GENERATOR_WEIGHTS_KEY) if isinstance(record, dict) else None


def _start_distilling_from(distillation_dir: str, generator_sha256: str) -> None:
    """Records in `distillation_dir` the generator its QAT checkpoints are distilled from
    (`DISTILLED_FROM_FILE`: `generator_sha256`, its weights digest), discarding checkpoints
    distilled from another one: without state.json (deleted or damaged) a generator trained
    further was not seen to change, and the old student resumed as if built on it.
    Checkpoints from before the record are kept."""
    recorded = _recorded_generator(distillation_dir)
    if os.path.isdir(distillation_dir) and recorded not in (None, generator_sha256):
        say(f"distillation: {distillation_dir} was distilled from another generator than this one; discarded, to "
            "distil from this one")
        if os.path.islink(distillation_dir):  # The link goes, not the files it points to (rmtree refused it).
            os.remove(distillation_dir)
        else:
            shutil.rmtree(distillation_dir)
    os.makedirs(distillation_dir, exist_ok=True)
    if recorded != generator_sha256:
        write_json_atomic(os.path.join(distillation_dir, DISTILLED_FROM_FILE),
                          {GENERATOR_WEIGHTS_KEY: generator_sha256})


def export_stage(run_config: RunConfig, teacher: Teacher, student, calibration: np.ndarray, state: dict,
                 write_state, generator_sha256: str, reports: Sequence[str] = (EXPORT_REPORT_FILE,),
                 progress: bool = True) -> Dict[str, str]:
    """Writes the float, PTQ and (W8A8) QAT TFLite models; returns {kind: path}.

    A file is converted again when what it was converted from changed: the PTQ model's
    calibration generator (`generator_sha256`, its weights digest), the QAT model's student
    (the state's digest of `student.h5`), or an export setting.

    `reports`: the work directory's files that describe or measure these models; those there
    are removed before a model is converted again (other settings, a changed file), so that
    a run stopped mid-export leaves no report of the models it replaced. `progress` shows a
    progress bar while a conversion calibrates, once that takes long.
    """
    work_dir = run_config.work_dir
    settings = run_config.quantization
    representative = representative_data.representative_dataset_from_array(
        calibration, teacher.input_range(), progress_description=EXPORT_CALIBRATION_PROGRESS if progress else "")
    integer_options = dict(mode="int8", representative_dataset=representative, io_dtype=settings.io_dtype,
                           per_channel=settings.per_channel, allow_float_ops=settings.allow_float_ops)
    exports = {"float": (FLOAT_TFLITE_FILE, teacher.model, dict(mode="float")),
               "ptq_int8": (PTQ_TFLITE_FILE, teacher.model, integer_options)}
    scheme = scheme_of(run_config)
    simulated_student = []
    if student is not None:
        if scheme.exportable:
            exports["qat_int8"] = (QAT_TFLITE_FILE, student, integer_options)
        else:
            say(f"export: the {scheme.name} student is simulation only (TFLite has no kernels below 8 bits); "
                "it is evaluated in Keras but not exported")
            simulated_student = [f"The {scheme.name} QAT student is simulation only (TFLite has no kernels below 8 "
                                 "bits): it is evaluated in Keras, not exported.", ""]
    done = state.setdefault("export", {})
    paths, report_lines = {}, [f"# Exported models ({run_config.work_dir})", ""]
    for kind, (file_name, model, options) in exports.items():
        path = os.path.join(work_dir, file_name)
        # The float model depends on none of the integer export's settings. The others name what they were
        # converted from: the step count they named let a student or generator trained again (their files lost)
        # keep the old one's file, reported as the new one's.
        source = (state.get("distillation", {}).get("sha256") if kind == "qat_int8" else generator_sha256)
        # The signature's key: files of a version that wrote none are converted again, the float one too.
        key = f"float:{INPUT_RANGE}:{exported_model.SIGNATURE_KEY}" if kind == "float" else (
            f"{kind}:{settings.io_dtype}:{settings.per_channel}:{source}:"
            f"{INPUT_RANGE}" + (":float_ops_allowed" if settings.allow_float_ops else "")
            + (f":{QAT_INPUT}" if kind == "qat_int8" else ""))
        if done.get(kind) != {"settings": key, "sha256": file_digest(path)}:
            _remove_reports(work_dir, reports)
            say(f"export: converting {kind} -> {path}")
            try:
                export.convert_to_tflite(model, output_path=path, **options)
            except export.NotFullyIntegerError as error:  # Its hint names the API's argument, not the flag.
                advice = "" if settings.allow_float_ops else (
                    f" Pass --allow_float_ops to export int8 models that keep these ops float ({export.FLOAT_OPS_DEVICES})")
                raise UserError(f"{error.summary}{advice}") from error
            done[kind] = {"settings": key, "sha256": file_digest(path)}
            write_state(state)
        paths[kind] = path
        with open(path, "rb") as model_file:
            model_bytes = model_file.read()
        try:
            warning = (exported_model.export_agreement_warning(kind, model_bytes, model, calibration)
                       if kind != "float" else None)
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
            report.format()) + ([f"- the Keras layers of the ops not integer: {float_ops}"] if float_ops else []) + (
            [f"- {pixel_input}"] if pixel_input else []) + [""]
        if kind != "float":
            report_lines += edge_tpu.compatibility_report(report).format() + [""]
    report_lines += simulated_student + _write_labels(work_dir, teacher)
    write_text_if_changed(os.path.join(work_dir, EXPORT_REPORT_FILE), "\n".join(report_lines))
    return paths


def _remove_reports(work_dir: str, reports: Sequence[str]) -> None:
    stale = [name for name in reports if os.path.exists(os.path.join(work_dir, name))]
    if stale:
        say(f"export: {', '.join(stale)} described the models converted again here; removed until this run "
            "has measured the new ones")
    for name in stale:
        os.remove(os.path.join(work_dir, name))


def _write_labels(work_dir: str, teacher: Teacher) -> list:
    """Writes `LABELS_FILE` when the teacher's class names are known; returns the export report's lines."""
    names = teacher.class_names()
    if not exported_model.write_labels(os.path.join(work_dir, LABELS_FILE), names):
        return ["## Labels", "", "No class names are known for this teacher (its description has none, or not one "
                "per output, each on one line): the models' outputs are class indices.", ""]
    return ["## Labels", "", f"`{LABELS_FILE}`: the teacher's {len(names)} class names, one a line in output order "
            f"(output 0 is `{names[0]}`).", ""]
