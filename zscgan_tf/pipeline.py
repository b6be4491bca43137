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
  exported models and what was checked in them.
- `evaluation/predictions.npz`: the evaluation's predictions, saved as it goes
  (`evaluation_progress`).
- `report.json`, `report.md`: what the run measured (`run_report`).
"""

import functools
import json
import os
import shutil
from typing import Callable, Optional, Union

import numpy as np
import tensorflow as tf
import tf_keras

from zscgan_tf import cgroups
from zscgan_tf import config as config_lib
from zscgan_tf import generator as generator_lib
from zscgan_tf import (evaluation_progress, evaluation_stage, generator_reuse, quantization_stages, run_report, seeds,
                       start_up, teachers, training_loop, zero_shot)
from zscgan_tf.errors import UserError
from zscgan_tf.files import (check_not_in_use, exclusive_use, file_digest, save_keras_model_atomic,
                             unusable_directory_reason, write_json_atomic, write_text_atomic)
from zscgan_tf.labeled_images import LabeledImages
from zscgan_tf.progress import count_of, say
from zscgan_tf.run_state import (GENERATED_SAMPLES_KEY, GENERATOR_DIR, GENERATOR_FROM_KEY, GENERATOR_MODEL_FILE,
                                 LOGS_DIR, STATE_FILE, STUDENT_CHECK_KEY, TEACHER_KEY, TEACHER_PREPROCESSING_KEY,
                                 TRAINED_HERE_KEY,
                                 checkpoint_steps, how_the_teacher_differs, pool_member_dirs, pool_member_names,
                                 read_state, record_teacher, write_state)

# Evaluation data larger than this is checked before training, then let go and read again
# for the evaluation rather than held in memory through training: ImageNet's 50,000
# validation images at 224x224 are 7.5 GB of uint8, and reading them again takes minutes
# of a run that takes hours.
MAX_HELD_EVALUATION_BYTES = 2 ** 30
STAGE_OUTPUTS = (STATE_FILE, GENERATOR_DIR, quantization_stages.DISTILLATION_DIR)


def check_work_dir(run_config: config_lib.RunConfig):
    """Checks that the work directory could be created and written; creates nothing.

    Raises:
      UserError: if it could not.
    """
    work_dir = run_config.work_dir
    reason = unusable_directory_reason(work_dir)
    if reason:
        raise UserError(f"cannot create work directory {work_dir!r}: {reason}")
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


def _check_layout(run_config: config_lib.RunConfig):
    """Refuses a file where a run keeps a directory, or a directory where it keeps a file,
    which would stop the run with a traceback (some only once trained)."""
    work_dir = run_config.work_dir
    directories = [*pool_member_dirs(run_config), os.path.join(work_dir, quantization_stages.DISTILLATION_DIR),
                   os.path.join(work_dir, LOGS_DIR),
                   os.path.join(work_dir, os.path.dirname(evaluation_progress.PREDICTIONS_FILE))]
    files = [os.path.join(work_dir, name) for name in (
        config_lib.CONFIG_FILE, STATE_FILE, GENERATOR_MODEL_FILE, quantization_stages.STUDENT_MODEL_FILE,
        quantization_stages.FLOAT_TFLITE_FILE, quantization_stages.PTQ_TFLITE_FILE,
        quantization_stages.QAT_TFLITE_FILE, quantization_stages.EXPORT_REPORT_FILE, quantization_stages.LABELS_FILE,
        run_report.REPORT_JSON_FILE, run_report.REPORT_MARKDOWN_FILE, run_report.SAMPLES_FILE)]
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
    its files may have moved.
    """
    started = any(os.path.exists(os.path.join(run_config.work_dir, name)) for name in STAGE_OUTPUTS)
    if not started:
        config_path = os.path.join(run_config.work_dir, config_lib.CONFIG_FILE)
        if os.path.exists(config_path):
            os.remove(config_path)
    distilled = any(os.path.exists(os.path.join(run_config.work_dir, name))
                    for name in (quantization_stages.DISTILLATION_DIR, quantization_stages.STUDENT_MODEL_FILE))
    config_lib.save_or_check(run_config, write_json_atomic, same_teacher, distilled)


def generator_spec_for(teacher: teachers.Teacher,
                       generator_config: config_lib.GeneratorConfig) -> generator_lib.GeneratorSpec:
    """The spec of `generator_config`'s generators for `teacher`.

    Raises:
      UserError: for settings this teacher's images do not allow (a blur wider than a
        quarter of their side).
    """
    return generator_lib.GeneratorSpec(num_classes=teacher.num_classes, image_shape=teacher.image_shape,
                                       noise_dim=generator_config.noise_dim,
                                       base_channels=generator_config.base_channels, variant=generator_config.variant,
                                       blur_sigma=generator_config.blur_sigma)


def build_generator_for(teacher: teachers.Teacher, generator_config: config_lib.GeneratorConfig,
                        name: str = "generator") -> tf_keras.Model:
    """One generator of `generator_config`'s architecture for `teacher` (a pool's member)."""
    return generator_lib.build_generator(generator_spec_for(teacher, generator_config), teacher.preprocessing,
                                         name=name)


def load_generator(path: str) -> tf_keras.Model:
    """Loads a generator saved by this package."""
    return tf_keras.models.load_model(path, compile=False, custom_objects={
        "ConditionalBatchNormalization": generator_lib.ConditionalBatchNormalization,
        "InputSpaceMapping": generator_lib.InputSpaceMapping, "GaussianBlur": generator_lib.GaussianBlur,
        "RoundRobinSplit": generator_lib.RoundRobinSplit, "RoundRobinMerge": generator_lib.RoundRobinMerge})


# What a run builds from its generator's samples: QAT state and student, int8 models
# calibrated on or distilled from them, and the reports that measure them.
BUILT_FROM_GENERATOR = (quantization_stages.DISTILLATION_DIR, quantization_stages.STUDENT_MODEL_FILE,
                        quantization_stages.QAT_TFLITE_FILE, quantization_stages.PTQ_TFLITE_FILE,
                        quantization_stages.EXPORT_REPORT_FILE, run_report.REPORT_MARKDOWN_FILE,
                        run_report.REPORT_JSON_FILE)


def _discard_downstream_of_generator(work_dir: str, state: dict):
    """A new generator makes what was built from the old one's samples stale
    (`BUILT_FROM_GENERATOR`). Called once the new one is trained: a run stopped before
    that leaves the old generator's student, models and reports whole."""
    stale = [name for name in BUILT_FROM_GENERATOR if os.path.exists(os.path.join(work_dir, name))]
    if not stale and "distillation" not in state and "export" not in state:
        return
    say(f"generator: the student, int8 models and reports built on the old generator are discarded, to be "
        f"built on this one ({', '.join(stale) or 'state only'})")
    for name in stale:
        path = os.path.join(work_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    state.pop("distillation", None)
    state.pop("export", None)
    write_state(work_dir, state)


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
    _check_trainable_on(run_config, finished)  # Before the config is recorded, as the refusals below are.
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


def _physical_memory_bytes() -> Optional[int]:
    """The machine's memory, or the less its cgroups allow this process (a container's limit:
    the host's memory is what the machine reports), or None where neither is known."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Not a POSIX system that tells.
        physical = None
    limits = [limit for limit in (physical, cgroups.memory_limit()) if limit]
    return min(limits) if limits else None


# Bytes of one float32 value, as generated samples and preprocessed images are held.
FLOAT32_BYTES = 4
GIGABYTE = 10 ** 9


# Copies of the sample grid held at once while it is made: scaled, rounded and clipped.
GRID_COPIES = 3


def check_samples_fit_in_memory(flag: str, count: int, samples: int, image_shape, copies: int = 1) -> None:
    """Refuses `--flag=count` if the `samples` float32 images of `image_shape` it asks for,
    held `copies` times over while they are made, would alone exceed this machine's memory.

    Raises:
      UserError: naming the flag, the memory it would take and the machine's.
    """
    memory = _physical_memory_bytes()
    needed = copies * samples * FLOAT32_BYTES * int(np.prod(image_shape))
    if memory and needed > memory:
        held = f", {copies} copies while they are made" if copies > 1 else ""
        raise UserError(f"--{flag}={count} would hold {samples:,} samples of {tuple(image_shape)} in memory "
                        f"({_in_gigabytes(needed)}{held}), more than this machine's {_in_gigabytes(memory)}")


def _in_gigabytes(size: int) -> str:
    """`256 GB`, or to two significant figures below 10 GB: `0.001 GB`."""
    return f"{size / GIGABYTE:,.0f} GB" if size >= 10 * GIGABYTE else f"{size / GIGABYTE:.2g} GB"


def check_held_samples_fit_in_memory(run_config: config_lib.RunConfig, teacher: teachers.Teacher) -> None:
    """`check_samples_fit_in_memory` for the samples a run holds at once: 10**9 calibration
    samples were allocated once the generator had trained, then filled for minutes, and 10**12
    were a numpy traceback there. The generator's evaluation holds one class at a time."""
    evaluation = run_config.evaluation
    count = run_config.quantization.calibration_samples
    check_samples_fit_in_memory("calibration_samples", count,
                                quantization_stages.calibration_samples_generated(count, teacher.num_classes),
                                teacher.image_shape, quantization_stages.CALIBRATION_COPIES)
    check_samples_fit_in_memory("eval_samples_per_class", evaluation.samples_per_class, evaluation.samples_per_class,
                                teacher.image_shape)
    grid_rows = min(teacher.num_classes, evaluation.grid_max_classes)
    check_samples_fit_in_memory("grid_samples_per_class", evaluation.grid_samples_per_class,
                                evaluation.grid_samples_per_class * grid_rows, teacher.image_shape, GRID_COPIES)


def check_same_teacher(work_dir: str, teacher: teachers.Teacher, state: dict,
                       fingerprint: Optional[str] = None) -> str:
    """The teacher's fingerprint, checked against the one `state` recorded when the work
    directory's stages started training (runs from before it was recorded pass);
    `fingerprint`, where the caller has it already.

    Raises:
      UserError: if the directory has trained a generator or student against another
        teacher (the model file replaced by a retrained one, or other preprocessing).
    """
    current = fingerprint or teachers.fingerprint(teacher)
    recorded = state.get(TEACHER_KEY)
    trained = [name for name in (GENERATOR_MODEL_FILE, "generator", quantization_stages.DISTILLATION_DIR)
               if os.path.exists(os.path.join(work_dir, name))]
    if recorded and recorded != current and trained:
        raise UserError(f"{work_dir}'s generator and student were trained against another teacher than "
                        f"{teacher.name} is now ({how_the_teacher_differs(state, teacher.preprocessing)}); "
                        "train this one in another work directory, or delete that one to start fresh")
    return current


def _kept_without_checkpoints(run_config: config_lib.RunConfig, saved_pool: list, finished: dict) -> dict:
    """Of a finished pool (`saved_pool`, its generator stage's state `finished`) that another
    `--generator_pool_size` rebuilds, the generators it keeps whose checkpoints were deleted (to
    save space), by pool index, with their recorded summaries; says what the rebuild does."""
    work_dir, pool_size = run_config.work_dir, run_config.generator.pool_size
    kept = min(len(saved_pool), pool_size)
    saved_summaries = finished.get("members") or [finished.get("summary", {})]
    without_checkpoints = {}
    for index, step in enumerate(checkpoint_steps(work_dir, pool_member_names(kept))):
        if step is None:
            without_checkpoints[index] = (saved_pool[index],
                                          saved_summaries[index] if index < len(saved_summaries) else {})
    restored = ("the first restored" if kept == 1 else f"the first {kept} restored") + (
        " from generator.keras" if len(without_checkpoints) == kept else " from its checkpoint" if kept == 1 else
        " from their checkpoints" if not without_checkpoints else " from their checkpoints or generator.keras")
    to_train = [step for step in checkpoint_steps(work_dir, pool_member_names(pool_size)[kept:])
                if step != run_config.generator_training.steps]
    say(f"generator: {os.path.join(work_dir, GENERATOR_MODEL_FILE)} holds {count_of(len(saved_pool), 'generator')} "
        f"and --generator_pool_size={pool_size}: {restored}" + (f", {len(to_train)} more to train" if to_train else ""))
    return without_checkpoints


def _check_trainable_on(run_config: config_lib.RunConfig, finished: dict):
    """Refuses more `--generator_steps` for finished generators whose checkpoints were deleted:
    each would start afresh, and its pool replace the trained `generator.keras` (where that is
    still there: without it, starting afresh loses nothing more).

    Raises:
      UserError: naming them and the flag.
    """
    model_path = os.path.join(run_config.work_dir, GENERATOR_MODEL_FILE)
    if (not finished.get("steps") or finished["steps"] == run_config.generator_training.steps
            or finished.get("sha256") != file_digest(model_path)):  # Nothing trained left to keep.
        return
    trained = pool_member_names(min(len(finished.get("members") or [finished]), run_config.generator.pool_size))
    lost = [name for name, step in zip(trained, checkpoint_steps(run_config.work_dir, trained)) if step is None]
    if lost:
        raise UserError(f"{', '.join(lost)} in {run_config.work_dir} finished {finished['steps']} steps but "
                        f"{'has no checkpoint' if len(lost) == 1 else 'have no checkpoints'} to train on from: "
                        f"--generator_steps={run_config.generator_training.steps} would train "
                        f"{'it' if len(lost) == 1 else 'them'} afresh and replace {GENERATOR_MODEL_FILE}; keep "
                        f"--generator_steps={finished['steps']}, or train in another --work_dir")


def generator_stage(run_config: config_lib.RunConfig, teacher: teachers.Teacher, state: dict,
                    progress: bool = True) -> tf_keras.Model:
    """Trains the generator, or each generator of a pool one after the other (resuming any
    that has a checkpoint), or loads the finished one. A finished pool of another size
    (`--generator_pool_size` changed) is rebuilt: the generators it keeps from their
    checkpoints (from `generator.keras` where those were deleted), the ones it lacks trained."""
    work_dir = run_config.work_dir
    model_path = os.path.join(work_dir, GENERATOR_MODEL_FILE)
    finished = state.get("generator", {})
    pool_changed = False
    saved_members = {}  # Pool index: (finished generator, its summary) of those kept without a checkpoint.
    if (finished.get("steps") == run_config.generator_training.steps
            and finished.get("sha256") == file_digest(model_path)):
        generator = load_generator(model_path)
        saved_pool = generator_lib.pool_members(generator)
        if len(saved_pool) == run_config.generator.pool_size:
            say(f"generator: already trained ({finished['steps']} steps), loading {model_path}")
            return generator
        saved_members = _kept_without_checkpoints(run_config, saved_pool, finished)
        pool_changed = True
    else:
        _check_trainable_on(run_config, finished)
    member_dirs = pool_member_dirs(run_config)
    teacher_weights = teacher.model.get_weights()
    grid_seed = run_config.seed + seeds.GRID_SEED_OFFSET
    members, summaries = [], []
    for index, member_dir in enumerate(member_dirs):
        name = os.path.basename(member_dir)
        seed = run_config.seed + seeds.POOL_MEMBER_SEED_STRIDE * index
        tf_keras.utils.set_random_seed(seed)  # The initial weights depend on the seed alone.
        generator = build_generator_for(teacher, run_config.generator, name=name)
        which = "" if len(member_dirs) == 1 else f" {index + 1} of {len(member_dirs)} (seed {seed})"
        steps = run_config.generator_training.steps
        if index in saved_members:
            saved, summary = saved_members[index]
            say(f"generator{which}: already trained ({count_of(steps, 'step')}), taken from {model_path} (its "
                "checkpoints were deleted)")
            generator.set_weights(saved.get_weights())
            # Nothing trained this session; the loss terms are those recorded when it did.
            summaries.append(training_loop.idle_session_summary(steps, summary))
            members.append(generator)
            continue
        trainer = zero_shot.GeneratorTrainer(teacher, generator, run_config.loss, run_config.generator_training,
                                             seed=seed)
        writer = tf.summary.create_file_writer(os.path.join(work_dir, LOGS_DIR, os.path.basename(member_dir)))

        def grid(generator=generator):
            return zero_shot.sample_grid(generator, teacher, run_config.evaluation.grid_samples_per_class,
                                         run_config.evaluation.grid_max_classes, grid_seed)

        if training_loop.latest_step(member_dir) == steps:
            say(f"generator{which}: already trained ({count_of(steps, 'step')}), restoring its checkpoint")
        else:
            say(f"generator{which}: training {count_of(steps, 'step')} of "
                f"{run_config.generator_training.batch_size} samples against {teacher.name} "
                f"({generator.count_params():,} generator parameters)")
        summaries.append(trainer.train(member_dir, progress=progress, summary_writer=writer,
                                       sample_grid_fn=grid).to_dict())
        members.append(generator)
    zero_shot.check_teacher_unchanged(teacher, teacher_weights)
    generator = members[0] if len(members) == 1 else generator_lib.pool_generators(members)
    # Another generator than the one the state records (more steps, another pool), rather than
    # the same one restored from its checkpoints (a damaged generator.keras).
    if finished and (finished.get("steps") != run_config.generator_training.steps or pool_changed):
        _discard_downstream_of_generator(work_dir, state)
    save_keras_model_atomic(generator, model_path)
    # The first generator's summary stands for the stage (the report's BN figures); the pool's in "members".
    state["generator"] = {"steps": summaries[0]["steps"], "summary": summaries[0],
                          "sha256": file_digest(model_path), TRAINED_HERE_KEY: True}
    if len(summaries) > 1:
        state["generator"]["members"] = summaries
    write_state(work_dir, state)
    return generator


def report_stage(run_config: config_lib.RunConfig, teacher: teachers.Teacher, generator, state: dict,
                 quantization_results: dict, progress: bool = True) -> dict:
    """Judges generated samples with the teacher (unless this generator's samples were judged
    with these settings already, and their grid is the one written then), writes the grid and
    the reports."""
    work_dir = run_config.work_dir
    settings = run_config.evaluation
    samples_path = os.path.join(work_dir, run_report.SAMPLES_FILE)
    key = json.dumps({"generator": file_digest(os.path.join(work_dir, GENERATOR_MODEL_FILE)),
                      "teacher": state.get(TEACHER_KEY), "seed": run_config.seed,
                      "samples_per_class": settings.samples_per_class,
                      "grid": [settings.grid_samples_per_class, settings.grid_max_classes]}, sort_keys=True)
    judged = state.get(GENERATED_SAMPLES_KEY) or {}
    if judged.get("key") == key and judged.get("samples_sha256") == file_digest(samples_path):
        say(f"generated samples: already judged by the teacher ({count_of(settings.samples_per_class, 'sample')} "
            f"per class), as recorded in {STATE_FILE}")
        generated = judged["result"]
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
    report = {
        "teacher": teachers.describe(teacher),
        "generator": {**run_config.to_dict()["generator"], "parameters": int(generator.count_params())},
        "generator_training": summary,
        GENERATOR_FROM_KEY: state.get(GENERATOR_FROM_KEY),
        "generator_trained_here": (not state.get(GENERATOR_FROM_KEY)
                                   or state.get("generator", {}).get(TRAINED_HERE_KEY, False)),
        "bn_statistics_reduction": (first_bn / last_bn) if first_bn and last_bn else None,
        "generated_samples": generated,
        "quantization": {"scheme": run_config.quantization.scheme,
                         "low_bit_ranges": run_config.quantization.low_bit_ranges,
                         **(state.get("distillation", {}) if run_config.distillation.steps else {}),
                         **quantization_results},
        "outputs": {"generator": GENERATOR_MODEL_FILE, "checkpoints": "generator/checkpoints",
                    "samples": run_report.SAMPLES_FILE, "tensorboard": LOGS_DIR, "config": config_lib.CONFIG_FILE,
                    "export_report": quantization_stages.EXPORT_REPORT_FILE},
    }
    write_json_atomic(os.path.join(work_dir, run_report.REPORT_JSON_FILE), report)
    write_text_atomic(os.path.join(work_dir, run_report.REPORT_MARKDOWN_FILE), run_report.format_report(report))
    return report


def run(run_config: config_lib.RunConfig, progress: bool = True, generator_from: str = "") -> dict:
    """Runs every stage of `run_config`; returns the report dict.

    Args:
      run_config: the run.
      progress: show progress lines.
      generator_from: another run's work directory whose finished generator this run
        starts from, instead of training one (`generator_reuse.take_generator`); "" trains its own.
    """
    check_work_dir(run_config)
    check_not_in_use(run_config.work_dir)  # Refused now, not once the teacher and data have loaded.
    check_not_shortened(run_config)
    for note in config_lib.unused_settings_notes(run_config):
        say(f"note: {note}")
    source = generator_reuse.generator_source(run_config, generator_from) if generator_from else None
    tf_keras.utils.set_random_seed(run_config.seed)
    teacher = teachers.load_teacher(run_config.teacher, progress=progress)
    check_held_samples_fit_in_memory(run_config, teacher)  # Before the evaluation data, which may take minutes.
    # Loaded before training, so a bad dataset is reported now rather than after hours of it.
    evaluation_data = evaluation_stage.evaluation_dataset(run_config, teacher, progress=progress)
    if evaluation_data is not None and evaluation_data.images.nbytes > MAX_HELD_EVALUATION_BYTES:
        say(f"evaluation: {len(evaluation_data.labels)} images ({evaluation_data.images.nbytes / 1e9:.1f} GB) "
            "checked; they are read again for the evaluation rather than held in memory through training")
        evaluation_data = functools.partial(evaluation_stage.evaluation_dataset, run_config, teacher,
                                            progress=progress)
    # Likewise for float ops, and for a QAT student that would fail: once the generator has trained,
    # the distillation stage that follows at once finds that as soon.
    # A generator stage resumed with the teacher and settings of a check that passed does not repeat it.
    state = read_state(run_config.work_dir)
    fingerprint = teachers.fingerprint(teacher)  # Hashes every weight: computed once a run.
    student_check = quantization_stages.student_check_key(run_config, teacher, fingerprint)
    check_student = "generator" not in state and (student_check is None
                                                  or state.get(STUDENT_CHECK_KEY) != student_check)
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
    fingerprint = check_same_teacher(run_config.work_dir, teacher, state, fingerprint)
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
    generator = generator_stage(run_config, teacher, state, progress=progress)

    def save_state(updated):
        write_state(run_config.work_dir, updated)

    calibration = quantization_stages.calibration_samples(
        generator, teacher, run_config.quantization.calibration_samples,
        seed=run_config.seed + seeds.CALIBRATION_SEED_OFFSET, progress=progress)
    student = quantization_stages.distillation_stage(run_config, teacher, generator, calibration, state, save_state,
                                                     progress=progress)
    tflite_paths = quantization_stages.export_stage(
        run_config, teacher, student, calibration, state, save_state,
        reports=(quantization_stages.EXPORT_REPORT_FILE, run_report.REPORT_MARKDOWN_FILE,
                 run_report.REPORT_JSON_FILE))
    if callable(evaluation_data):
        say("evaluation: reading the evaluation images again")
        evaluation_data = evaluation_data()
    quantization_results = evaluation_stage.run(run_config, teacher, student, tflite_paths, evaluation_data,
                                                progress=progress)
    report = report_stage(run_config, teacher, generator, state, quantization_results, progress=progress)
    samples = report["generated_samples"]
    warning = run_report.generated_samples_warning(report)
    if warning:
        say(f"warning: {warning}")
    top1 = report["quantization"].get("top1", {})
    accuracy = ", ".join(f"{name} {100 * value:.2f}%" for name, value in top1.items())
    say(f"done: {100 * samples['teacher_agreement']:.2f}% of generated samples classified as requested "
        f"(worst class {100 * samples['worst_class_agreement']:.2f}%)" + (f"; top-1 {accuracy}" if accuracy else "")
        + f"; report in {os.path.join(run_config.work_dir, run_report.REPORT_MARKDOWN_FILE)}")
    return report
