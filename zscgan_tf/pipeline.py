"""The stages of a run, in order, each resumable and skipped once its output exists.

The work directory of a run holds:

- `config.json`: the resolved config; a rerun with a different one is refused.
- `state.json`: which stages finished, with what they measured and the SHA-256 of what
  they wrote (`run_state`), and the run whose generator this one took
  (`--generator_from`, `generator_reuse`), if any.
- `generator/checkpoints/`, `generator/history.json`: generator training state; with a
  pool of generators (`generator.pool_size` > 1) the others' in `generator_2/`, ...
- `generator.keras`: the trained generator (or the pool), a saved tf_keras model.
- `samples.png`: one row of generated samples per class.
- `logs/`: TensorBoard scalars and sample grids.
- `distillation/checkpoints/`, `student.h5`: the QAT student (`quantization_stages`).
- `qat_int8.tflite`, `ptq_int8.tflite`, `teacher_float.tflite`, `export_report.md`: the
  exported models and what was checked in them; `labels.txt`: the teacher's class names,
  when known (`quantization_stages`).
- `evaluation/predictions.npz`: the evaluation's predictions, saved as it goes
  (`evaluation_progress`).
- `report.json`, `report.md`: what the run measured (`run_report`).
"""

import contextlib
import functools
import json
import os
from typing import Callable, Optional, Sequence, Tuple, Union

import tf_keras

from zscgan_tf import config as config_lib
from zscgan_tf import config_changes
from zscgan_tf import (evaluation_progress, evaluation_stage, generator_reuse, generator_stage, memory_checks,
                       quantization_stages, run_report, seeds, start_up, teachers, training_loop, zero_shot)
from zscgan_tf.errors import UserError
from zscgan_tf.files import (check_not_in_use, exclusive_use, file_digest, read_json, strict_json_values,
                             unusable_directory_reason, write_json_atomic, write_json_if_changed, write_text_atomic)
from zscgan_tf.labeled_images import LabeledImages
from zscgan_tf.progress import count_of, say
from zscgan_tf.run_state import (GENERATED_SAMPLES_KEY, GENERATOR_DIR, GENERATOR_FROM_KEY, GENERATOR_MODEL_FILE,
                                 LOGS_DIR, STATE_FILE, STUDENT_CHECK_KEY, TEACHER_KEY, TEACHER_PREPROCESSING_KEY,
                                 TRAINED_HERE_KEY, UNCHECKED_TEACHER_NOTE, how_the_teacher_differs,
                                 pool_member_dirs, read_state, record_teacher, stage_finished, write_state)

# Evaluation data larger than this is checked before training, then let go and read again
# for the evaluation rather than held in memory through training: ImageNet's 50,000
# validation images at 224x224 are 7.5 GB of uint8, and reading them again takes minutes
# of a run that takes hours.
MAX_HELD_EVALUATION_BYTES = 2 ** 30
STAGE_OUTPUTS = (STATE_FILE, GENERATOR_DIR, quantization_stages.DISTILLATION_DIR)
# What a work directory trained against its teacher: a generator, its checkpoints, a student's.
_TRAINED_AGAINST_THE_TEACHER = (GENERATOR_MODEL_FILE, GENERATOR_DIR, quantization_stages.DISTILLATION_DIR)
# The stages whose `state.json` entries hold a training summary (loss terms, wall time, samples/s).
TRAINED_STAGES = ("generator", "distillation")


def check_work_dir(run_config: config_lib.RunConfig):
    """Checks that the work directory could be created and written; creates nothing.

    Raises:
      UserError: if it could not.
    """
    work_dir = run_config.work_dir
    reason = unusable_directory_reason(work_dir)
    if reason:  # A finished run's directory on a read-only mount exists: "cannot create" it misled.
        raise UserError(f"cannot {'write to' if os.path.isdir(work_dir) else 'create'} work directory {work_dir!r}: "
                        f"{reason}")
    _check_layout(run_config)
    config_path = os.path.join(work_dir, config_lib.CONFIG_FILE)
    trained = [name for name in STAGE_OUTPUTS if os.path.exists(os.path.join(work_dir, name))]
    start_fresh = "choose another --work_dir, or delete that directory to start fresh"
    if os.path.isfile(config_path) and not _is_a_runs_config(config_path):
        if trained:  # Damaged: a run writes it whole, but a disk or a hand may not.
            raise UserError(f"{config_path} cannot be read as a run's config, yet {work_dir!r} holds a run's stages "
                            f"({', '.join(trained)}), which it records the settings of: put a whole copy back, or "
                            f"{start_fresh}")
        raise UserError(f"work directory {work_dir!r} holds a {config_lib.CONFIG_FILE} that is not a run's "
                        "(a file of your own?), which a run would replace; choose another --work_dir")
    if trained and not os.path.exists(config_path):
        # Without it, any settings would be taken for those the stages trained with.
        raise UserError(f"{work_dir!r} holds a run's stages ({', '.join(trained)}) but no {config_lib.CONFIG_FILE}, "
                        f"which records the settings they trained with: put it back, or {start_fresh}")
    replaced = [name for name in _REPLACED_OUTPUTS if os.path.exists(os.path.join(work_dir, name))]
    if replaced and not os.path.exists(config_path):  # A run writes its config before any of them.
        raise UserError(f"work directory {work_dir!r} holds {', '.join(replaced)} but no run's "
                        f"{config_lib.CONFIG_FILE} (files of your own?), which a run would replace; choose another "
                        "--work_dir")


# Files a run writes over, whatever they held; a work directory without a run's config holding one
# holds files of someone else's.
_REPLACED_OUTPUTS = (GENERATOR_MODEL_FILE, quantization_stages.STUDENT_MODEL_FILE,
                     quantization_stages.FLOAT_TFLITE_FILE, quantization_stages.PTQ_TFLITE_FILE,
                     quantization_stages.QAT_TFLITE_FILE,
                     quantization_stages.EXPORT_REPORT_FILE, quantization_stages.LABELS_FILE,
                     run_report.REPORT_JSON_FILE, run_report.REPORT_MARKDOWN_FILE, run_report.SAMPLES_FILE)


def _check_layout(run_config: config_lib.RunConfig):
    """Refuses a file where a run keeps a directory, or a directory where it keeps a file,
    which would stop the run with a traceback (some only once trained)."""
    work_dir = run_config.work_dir
    directories = [*pool_member_dirs(run_config), os.path.join(work_dir, quantization_stages.DISTILLATION_DIR),
                   os.path.join(work_dir, LOGS_DIR),
                   os.path.join(work_dir, os.path.dirname(evaluation_progress.PREDICTIONS_FILE))]
    files = [os.path.join(work_dir, name) for name in (config_lib.CONFIG_FILE, STATE_FILE, *_REPLACED_OUTPUTS)]
    for path in directories:
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{path} is a file where a run keeps a directory; move it away")
    for path in files:
        if os.path.isdir(path):
            raise UserError(f"{path} is a directory where a run keeps a file; move it away")


def _is_a_runs_config(path: str) -> bool:
    """Whether `path` holds a config a run saved (whole: runs write it atomically), of this
    version or an older one, rather than a file of the user's own."""
    try:
        with open(path) as config_file:
            saved = json.load(config_file)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"teacher", "generator", "quantization"} <= set(saved)


def prepare_work_dir(run_config: config_lib.RunConfig):
    """Creates the work directory, which `check_work_dir` found could be created and written.

    Raises:
      UserError: if creating it fails all the same.
    """
    work_dir = run_config.work_dir
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create work directory {work_dir!r}: {error.strerror}") from error


def record_config(run_config: config_lib.RunConfig, same_teacher: bool = False):
    """Saves the config, refusing a work directory whose stages ran under another one.

    A config saved by a run that failed before any stage produced output binds nothing.
    With `same_teacher` (the teacher's fingerprint is the one the directory recorded),
    its files may have moved. A saved config this one would write byte for byte is left
    as it is (`write_json_if_changed`).
    """
    if not _holds_any(run_config.work_dir, *STAGE_OUTPUTS):
        config_path = os.path.join(run_config.work_dir, config_lib.CONFIG_FILE)
        if os.path.exists(config_path):
            os.remove(config_path)
    config_changes.save_or_check(run_config, write_json_if_changed, same_teacher,
                                 *_what_binds_the_config(run_config))


def check_config_unchanged(run_config: config_lib.RunConfig, teacher: teachers.Teacher, fingerprint: str):
    """Refuses a teacher or settings that the work directory's trained stages did not train
    with, as `check_same_teacher` and `record_config` do under the lock, but before the
    evaluation data loads: a changed flag on a rerun is refused in seconds, not after minutes
    of reading ImageNet's validation images. Only where the directory recorded the fingerprint
    of the teacher its generator or student trained against, which tells whether `teacher`
    (`fingerprint`) is that one, as `record_config` will be told.

    Raises:
      UserError: as `check_same_teacher` or `record_config` would, in that order.
    """
    work_dir = run_config.work_dir
    state = read_state(work_dir)
    if not state.get(TEACHER_KEY) or not _holds_any(work_dir, *_TRAINED_AGAINST_THE_TEACHER):
        return
    check_same_teacher(work_dir, teacher, state, fingerprint, run_config.teacher.model)
    config_changes.check_saved(run_config, True, *_what_binds_the_config(run_config))


def _holds_any(work_dir: str, *names: str) -> bool:
    return any(os.path.exists(os.path.join(work_dir, name)) for name in names)


def _what_binds_the_config(run_config: config_lib.RunConfig) -> Tuple[bool, bool]:
    """(`distilled`, `built_on_generator`) of `config_changes.check_saved` for the work directory:
    whether it holds a QAT student or its checkpoints, and anything made from its generator."""
    work_dir = run_config.work_dir
    distilled = _holds_any(work_dir, quantization_stages.DISTILLATION_DIR, quantization_stages.STUDENT_MODEL_FILE)
    exported = _holds_any(work_dir, quantization_stages.PTQ_TFLITE_FILE, quantization_stages.QAT_TFLITE_FILE,
                          quantization_stages.FLOAT_TFLITE_FILE)
    return distilled, distilled or exported


def check_not_shortened(run_config: config_lib.RunConfig):
    """Refuses step counts below those a work directory's generators or student have trained.

    Training cannot be undone: resumed at a later step than asked, the loop would do
    nothing and the run would report the fewer steps for what trained more (and, for the
    generator, retrain the student on the unchanged generator).

    Raises:
      UserError: naming the stage, the steps trained and the flag.
    """
    generator_steps = run_config.generator_training.steps
    finished = read_state(run_config.work_dir).get("generator", {})
    generator_stage.check_trainable_on(run_config, finished)  # Before the config is recorded, as the refusals below are.
    finished_members = len(finished.get("members") or [finished]) if finished.get("steps") else 0
    trained = []
    for index, member_dir in enumerate(pool_member_dirs(run_config)):
        step = training_loop.latest_step(member_dir)
        if step is None and index < finished_members:  # Its checkpoints deleted (to save space): the finished steps.
            step = finished["steps"]
        trained.append((os.path.basename(member_dir), step, "generator_steps", generator_steps))
    # Without QAT an earlier student is not used at all, and a generator that trains further discards it.
    if run_config.distillation.steps and all(step == generator_steps for _, step, _, _ in trained):
        student_dir = os.path.join(run_config.work_dir, quantization_stages.DISTILLATION_DIR)
        trained.append(("QAT student", training_loop.latest_step(student_dir), "distillation_steps",
                        run_config.distillation.steps))
    for what, step, flag, asked in trained:
        if step is not None and step > asked:
            raise UserError(f"{run_config.work_dir}'s {what} has trained {step} steps, more than --{flag}={asked}; "
                            f"training cannot be undone: ask for {step} or more, or use another --work_dir")


def check_checkpoints_readable(run_config: config_lib.RunConfig, taking_generator: bool = False):
    """Refuses checkpoints that a stage still to train would restore and cannot read, or whose
    state file names checkpoints elsewhere (`training_loop.check_checkpoints_readable`), before
    anything is written: the stage refuses them as it starts, once `config.json` has recorded the
    new settings and its TensorBoard log has begun. A finished stage loads its model file and
    reads no checkpoint. `taking_generator`: the run takes another run's generator
    (`--generator_from`), whose copied checkpoints are checked only as they are restored.

    Raises:
      UserError: naming the directory to delete.
    """
    work_dir = run_config.work_dir
    state = read_state(work_dir)
    recorded_generator = state.get("generator", {})
    saved_pool_size = len(recorded_generator.get("members") or [recorded_generator])
    generator_kept = (stage_finished(work_dir, recorded_generator, run_config.generator_training.steps,
                                     GENERATOR_MODEL_FILE)
                      and saved_pool_size == run_config.generator.pool_size)
    to_read = []
    if not taking_generator and not generator_kept:  # Trained on, or a new pool's kept members restored.
        to_read += [(member_dir, "generator") for member_dir in pool_member_dirs(run_config)]
    # A generator that trains on discards the QAT checkpoints distilled from it unread.
    if run_config.distillation.steps and generator_kept and not stage_finished(
            work_dir, state.get("distillation", {}), run_config.distillation.steps,
            quantization_stages.STUDENT_MODEL_FILE):
        to_read.append((os.path.join(work_dir, quantization_stages.DISTILLATION_DIR), "distillation"))
    for training_dir, name in to_read:
        training_loop.check_checkpoints_readable(training_dir, name)


def check_same_teacher(work_dir: str, teacher: teachers.Teacher, state: dict,
                       fingerprint: Optional[str] = None, teacher_model: str = "") -> str:
    """The teacher's fingerprint, checked against the one `state` recorded when the work
    directory's stages started training; `fingerprint`, where the caller has it already;
    `teacher_model`, the name this run gives the teacher, which a refusal compares with the
    name the directory's config recorded.
    A directory that trained without recording one (an earlier version's) cannot be
    checked: a note says so, and the teacher is taken to be the one it trained against.

    Raises:
      UserError: if the directory has trained a generator or student against another
        teacher (the model file replaced by a retrained one, or other preprocessing).
    """
    current = fingerprint or teachers.fingerprint(teacher)
    recorded = state.get(TEACHER_KEY)
    trained = [name for name in _TRAINED_AGAINST_THE_TEACHER if os.path.exists(os.path.join(work_dir, name))]
    if recorded and recorded != current and trained:
        then = config_changes.saved_teacher_model(read_json(os.path.join(work_dir, config_lib.CONFIG_FILE), {}))
        if config_changes.names_another_teacher(then, teacher_model):
            raise UserError(f"{work_dir}'s generator and student were trained against another teacher ({then}) than "
                            f"this run's ({teacher_model}); train this one in another work directory, or delete that "
                            "one to start fresh")
        raise UserError(f"{work_dir}'s generator and student were trained against another teacher than "
                        f"{teacher.name} is now ({how_the_teacher_differs(state, teacher.preprocessing)}); "
                        "train this one in another work directory, or delete that one to start fresh")
    if not recorded and trained:
        say(f"note: {work_dir} {UNCHECKED_TEACHER_NOTE}")
    return current


# What the report says of the generated samples, as `state.json` records it for a rerun.
_GENERATED_SAMPLES_FIELDS = ("samples_per_class", "teacher_agreement", "worst_class_agreement", "per_class_agreement",
                             "mean_confidence", "within_class_spread")


def _is_samples_judgement(recorded) -> bool:
    """Whether `recorded` has the fields and types of the generated samples' judgement a run records:
    a hand's edit of `state.json` ended in a traceback as the report was written."""
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return (isinstance(recorded, dict) and set(_GENERATED_SAMPLES_FIELDS) <= set(recorded)
            and all(number(recorded[field]) for field in _GENERATED_SAMPLES_FIELDS if field != "per_class_agreement")
            and isinstance(recorded["per_class_agreement"], list)
            and all(number(value) for value in recorded["per_class_agreement"]))


def report_stage(run_config: config_lib.RunConfig, teacher: teachers.Teacher, generator, state: dict,
                 quantization_results: dict, progress: bool = True, trained_earlier: Sequence[str] = ()) -> dict:
    """Judges generated samples with the teacher (unless this generator's samples were judged
    with these settings already, and their grid is the one written then), writes the grid and
    the reports. `trained_earlier`: the stages of `TRAINED_STAGES` that this session found
    done, whose training figures the reports give as an earlier session's."""
    work_dir = run_config.work_dir
    settings = run_config.evaluation
    samples_path = os.path.join(work_dir, run_report.SAMPLES_FILE)
    key = json.dumps({"generator": file_digest(os.path.join(work_dir, GENERATOR_MODEL_FILE)),
                      "teacher": state.get(TEACHER_KEY), "seed": run_config.seed,
                      "samples_per_class": settings.samples_per_class,
                      "grid": [settings.grid_samples_per_class, settings.grid_max_classes]}, sort_keys=True)
    judged = state.get(GENERATED_SAMPLES_KEY) or {}
    recorded = judged.get("result")
    if (judged.get("key") == key and judged.get("samples_sha256") == file_digest(samples_path)
            and _is_samples_judgement(recorded)):
        say(f"generated samples: already judged by the teacher ({count_of(settings.samples_per_class, 'sample')} "
            f"per class), as recorded in {STATE_FILE}")
        generated = recorded
    else:
        evaluation = zero_shot.evaluate_generator(generator, teacher, settings.samples_per_class, progress=progress,
                                                  seed=run_config.seed + seeds.GENERATED_SAMPLES_SEED_OFFSET)
        grid = zero_shot.sample_grid(generator, teacher, settings.grid_samples_per_class, settings.grid_max_classes,
                                     run_config.seed + seeds.GRID_SEED_OFFSET)
        zero_shot.write_png(samples_path, grid)
        generated = {
            "samples_per_class": evaluation.samples_per_class,
            "teacher_agreement": evaluation.accuracy,
            "worst_class_agreement": evaluation.worst_class_accuracy,
            "per_class_agreement": evaluation.per_class_accuracy,
            "mean_confidence": evaluation.mean_confidence,
            "within_class_spread": evaluation.within_class_spread,
        }
        state[GENERATED_SAMPLES_KEY] = {"key": key, "result": json.loads(json.dumps(generated)),
                                        "samples_sha256": file_digest(samples_path)}
        write_state(work_dir, state)
    summary = run_report.generator_training_summary(state.get("generator", {}))
    first_bn = summary.get("first", {}).get("bn_statistics")
    last_bn = summary.get("last", {}).get("bn_statistics")
    distilled = dict(state.get("distillation", {})) if run_config.distillation.steps else {}
    # Named with its file: a bare `sha256` beside the exported files' was `student.h5`'s without saying so.
    student_sha256 = distilled.pop("sha256", None)
    distilled.pop(quantization_stages.GENERATOR_WEIGHTS_KEY, None)  # The state's, for the stages' keys.
    report = {
        "teacher": teachers.describe(teacher),
        "generator": {**run_config.to_dict()["generator"], "parameters": int(generator.count_params())},
        "generator_training": {**summary, **({run_report.EARLIER_SESSION_KEY: True}
                                             if summary and "generator" in trained_earlier else {})},
        GENERATOR_FROM_KEY: state.get(GENERATOR_FROM_KEY),
        "generator_trained_here": (not state.get(GENERATOR_FROM_KEY)
                                   or state.get("generator", {}).get(TRAINED_HERE_KEY, False)),
        "bn_statistics_reduction": (first_bn / last_bn) if first_bn and last_bn else None,
        "generated_samples": generated,
        "quantization": {**_quantization_settings(run_config), **distilled,
                         **({"student": {"file": quantization_stages.STUDENT_MODEL_FILE, "sha256": student_sha256}}
                            if student_sha256 else {}),
                         **({run_report.EARLIER_SESSION_KEY: True}
                            if run_config.distillation.steps and "distillation" in trained_earlier else {}),
                         **quantization_results},
        "outputs": {"generator": GENERATOR_MODEL_FILE, "checkpoints": "generator/checkpoints",
                    "samples": run_report.SAMPLES_FILE, "tensorboard": LOGS_DIR, "config": config_lib.CONFIG_FILE,
                    "export_report": quantization_stages.EXPORT_REPORT_FILE},
    }
    report = strict_json_values(report)  # As report.json holds it: what `run` returns.
    write_reports(work_dir, report)
    return report


def _quantization_settings(run_config: config_lib.RunConfig) -> dict:
    """How this run's models were quantized, for the report: the QAT scheme where a student was
    trained (with --distillation_steps=0 it named none, yet was reported), and the export's
    settings, which only config.json held."""
    settings = run_config.quantization
    scheme = quantization_stages.scheme_of(run_config)
    trained = {"scheme": settings.scheme, "low_bit_ranges": settings.low_bit_ranges,
               **({"keep_first_and_last_at_8_bits": settings.keep_first_and_last_at_8_bits}
                  if scheme.uses_n_bit_scheme else {})}
    return {**(trained if run_config.distillation.steps else {}), "per_channel": settings.per_channel,
            "io_dtype": settings.io_dtype, "calibration_samples": settings.calibration_samples,
            "allow_float_ops": settings.allow_float_ops}


def write_reports(work_dir: str, report: dict) -> None:
    """Writes `report.json` and `report.md`. Where either write fails (a full disk), neither
    file is left, rather than one of this run beside one of an earlier state; a rerun writes both."""
    paths = [os.path.join(work_dir, name) for name in (run_report.REPORT_JSON_FILE, run_report.REPORT_MARKDOWN_FILE)]
    try:
        write_json_atomic(paths[0], report)
        write_text_atomic(paths[1], run_report.format_report(report))
    except OSError:
        for path in paths:
            with contextlib.suppress(OSError):
                os.remove(path)
        raise


def run(run_config: config_lib.RunConfig, progress: bool = True, generator_from: str = "") -> dict:
    """Runs every stage of `run_config`, resuming or skipping what its work directory holds
    (`zscgan_tf.run` from Python).

    TensorFlow's process-wide settings are left as they are: after
    `reproducibility.enable_deterministic_execution()`, as the command's `--deterministic`
    calls it, a rerun repeats bit for bit.

    Args:
      run_config: the run.
      progress: show progress bars; the lines saying what each stage does are printed either way.
      generator_from: another run's work directory whose finished generator this run
        starts from, instead of training one (`generator_reuse.take_generator`); "" trains its own.

    Returns:
      The report, as `report.json` holds it.

    Raises:
      TypeError: if `run_config` is not a `RunConfig` (`RunConfig.from_dict` makes one of a dict).
      UserError: for bad input, as the command prints it in one line.
      InUseError: a `UserError` for a work directory another process holds: the same call
        succeeds once that process ends (the command's exit status 75).
      training_loop.TrainingInterrupted: on Ctrl-C (a notebook's interrupt), SIGTERM or SIGHUP,
        once a checkpoint (or, in the evaluation, the predictions so far) is saved: the same
        call resumes from it.
      training_loop.NonFiniteLossError: when a loss term becomes NaN or infinite.
    """
    if not isinstance(run_config, config_lib.RunConfig):
        raise TypeError(f"run takes a RunConfig (RunConfig.from_dict makes one of a dict), got "
                        f"{type(run_config).__name__}")
    run_config = run_config.portable()  # As `train` makes it: a RunConfig from Python may name relative paths.
    check_work_dir(run_config)
    check_not_in_use(run_config.work_dir)  # Refused now, not once the teacher and data have loaded.
    check_not_shortened(run_config)
    for note in config_changes.unused_settings_notes(run_config):
        say(f"note: {note}")
    source = generator_reuse.generator_source(run_config, generator_from) if generator_from else None
    check_checkpoints_readable(run_config, taking_generator=bool(generator_from))
    tf_keras.utils.set_random_seed(run_config.seed)
    teacher = teachers.load_teacher(run_config.teacher, progress=progress)
    fingerprint = teachers.fingerprint(teacher)  # Hashes every weight: computed once a run.
    check_config_unchanged(run_config, teacher, fingerprint)
    if source:  # Refused before anything is written, as are the generator settings these images do not allow.
        generator_reuse.check_source_teacher(source, run_config, fingerprint, teacher.preprocessing)
    generator_stage.generator_spec_for(teacher, run_config.generator)
    zero_shot.check_grid_size(run_config.evaluation.grid_samples_per_class, run_config.evaluation.grid_max_classes,
                              teacher)
    memory_checks.check_held_samples_fit_in_memory(run_config, teacher)  # Before the evaluation data, which may take minutes.
    # Loaded before training, so a bad dataset is reported now rather than after hours of it.
    evaluation_data = evaluation_stage.evaluation_dataset(run_config, teacher, progress=progress)
    if evaluation_data is not None and evaluation_data.images.nbytes > MAX_HELD_EVALUATION_BYTES:
        say(f"evaluation: {len(evaluation_data.labels)} images ({evaluation_data.images.nbytes / 1e9:.1f} GB) "
            "checked; they are read again for the evaluation rather than held in memory through training")
        evaluation_data = functools.partial(evaluation_stage.evaluation_dataset, run_config, teacher,
                                            progress=progress)
    # Likewise for float ops, and for a QAT student that would fail. Once the generator has trained, the
    # distillation stage that follows finds that as soon, but after config.json records the new settings: a run
    # without QAT rerun with it is checked here too, when no check with these settings has passed.
    # A generator stage resumed with the teacher and settings of a check that passed does not repeat it.
    state = read_state(run_config.work_dir)
    student_check = quantization_stages.student_check_key(run_config, teacher, fingerprint)
    unchecked = student_check is None or state.get(STUDENT_CHECK_KEY) != student_check
    # A teacher without a key is checked until its QAT has started: it cannot record a check that passed.
    first_student = bool(run_config.distillation.steps) and "distillation" not in state and (
        student_check is not None
        or not os.path.isdir(os.path.join(run_config.work_dir, quantization_stages.DISTILLATION_DIR)))
    check_student = unchecked and ("generator" not in state or first_student)
    float_ops_note = quantization_stages.check_integer_export(run_config, teacher, check_student=check_student)
    if float_ops_note:
        say(f"note: {float_ops_note}")
    # Created only now: a bad teacher or dataset leaves no empty work directory behind.
    prepare_work_dir(run_config)
    # A run started twice on one directory would interleave its checkpoints and outputs.
    with exclusive_use(run_config.work_dir):
        # Only a check that ran records its key: one skipped after the generator trained vouches for nothing.
        return _run_stages(run_config, teacher, evaluation_data, source, progress, fingerprint,
                           student_check if check_student else None)


def _run_stages(run_config: config_lib.RunConfig, teacher: teachers.Teacher,
                evaluation_data: Union[Optional[LabeledImages], Callable[[], Optional[LabeledImages]]],
                source: Optional[generator_reuse.GeneratorSource], progress: bool, fingerprint: str,
                student_check: Optional[str] = None) -> dict:
    """The stages; `evaluation_data` is the held-out data, or what loads it when it is too
    large to hold through training; `fingerprint` the teacher's (`teachers.fingerprint`);
    `student_check` the key of the early student check that passed
    (`quantization_stages.student_check_key`), recorded in the state."""
    state = read_state(run_config.work_dir)
    fingerprint = check_same_teacher(run_config.work_dir, teacher, state, fingerprint, run_config.teacher.model)
    record_config(run_config, same_teacher=state.get(TEACHER_KEY) == fingerprint)
    say(f"teacher: {teacher.name}, input {teacher.image_shape}, {teacher.num_classes} classes")
    say(f"device: {start_up.device_summary()}")
    for warning in teacher.warnings:
        say(f"warning: {warning}")
    if (state.get(TEACHER_KEY) != fingerprint or TEACHER_PREPROCESSING_KEY not in state
            or (student_check and state.get(STUDENT_CHECK_KEY) != student_check)):
        record_teacher(state, fingerprint, teacher.preprocessing)
        if student_check:
            state[STUDENT_CHECK_KEY] = student_check
        write_state(run_config.work_dir, state)
    if source:
        generator_reuse.take_generator(run_config, source, state)
    # The training summaries a rerun finds, or that --generator_from took: a stage that is done trains nothing
    # and keeps its summary.
    earlier_summaries = {stage: (state.get(stage) or {}).get("summary") for stage in TRAINED_STAGES}
    generator = generator_stage.run(run_config, teacher, state, progress=progress)

    def save_state(updated):
        write_state(run_config.work_dir, updated)

    calibration = quantization_stages.calibration_samples(
        generator, teacher, run_config.quantization.calibration_samples,
        seed=run_config.seed + seeds.CALIBRATION_SEED_OFFSET, progress=progress)
    generator_sha256 = teachers.weights_digest(generator)  # What the student and the PTQ file are made from.
    student = quantization_stages.distillation_stage(run_config, teacher, generator, calibration, state, save_state,
                                                     generator_sha256, progress=progress)
    tflite_paths = quantization_stages.export_stage(
        run_config, teacher, student, calibration, state, save_state,
        reports=(quantization_stages.EXPORT_REPORT_FILE, run_report.REPORT_MARKDOWN_FILE,
                 run_report.REPORT_JSON_FILE), progress=progress, generator_sha256=generator_sha256)
    if callable(evaluation_data):
        say("evaluation: reading the evaluation images again")
        evaluation_data = evaluation_data()
    quantization_results = evaluation_stage.run(run_config, teacher, student, tflite_paths, evaluation_data,
                                                progress=progress)
    trained_earlier = [stage for stage, summary in earlier_summaries.items()
                       if summary is not None and (state.get(stage) or {}).get("summary") == summary]
    report = report_stage(run_config, teacher, generator, state, quantization_results, progress=progress,
                          trained_earlier=trained_earlier)
    samples = report["generated_samples"]
    warning = run_report.generated_samples_warning(report)
    if warning:
        say(f"warning: {warning}")
    top1 = report["quantization"].get("top1", {})
    decimals = run_report.percent_decimals(report["quantization"].get("images", 0))
    accuracy = ", ".join(f"{name} {100 * value:.{decimals}f}%" for name, value in top1.items())
    say(f"done: {100 * samples['teacher_agreement']:.2f}% of generated samples classified as requested "
        f"(worst class {100 * samples['worst_class_agreement']:.2f}%)" + (f"; top-1 {accuracy}" if accuracy else "")
        + f"; report in {os.path.join(run_config.work_dir, run_report.REPORT_MARKDOWN_FILE)}")
    return report
