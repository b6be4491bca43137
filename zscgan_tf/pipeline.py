"""The stages of a run, in order, each resumable and skipped once its output exists.

The work directory of a run holds:

- `config.json`: the resolved config; a rerun with a different one is refused.
- `state.json`: which stages finished, with what they measured and the SHA-256 of what
  they wrote (an output that no longer matches is redone), and the run whose generator
  this one took (`--generator_from`, `take_generator`), if any.
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
- `report.json`, `report.md`: what the run measured.
"""

import dataclasses
import os
import shutil
import sys
from typing import Optional

import tensorflow as tf
import tf_keras

from zscgan_tf import config as config_lib
from zscgan_tf import generator as generator_lib
from zscgan_tf import quantization_stages, quantize, teachers, training_loop, zero_shot
from zscgan_tf.errors import UserError
from zscgan_tf.files import (TEMPORARY_PREFIX, exclusive_use, file_digest, read_json, save_keras_model_atomic,
                             unusable_directory_reason, write_json_atomic, write_text_atomic)
from zscgan_tf.progress import count_of, format_duration

STATE_FILE = "state.json"
GENERATOR_MODEL_FILE = "generator.keras"
SAMPLES_FILE = "samples.png"
REPORT_JSON_FILE = "report.json"
REPORT_MARKDOWN_FILE = "report.md"
# Rows of report.md's per-class table of generated samples; beyond it, the classes of lowest agreement.
PER_CLASS_ROWS_SHOWN = 20
# The fully-integer models' names in the report's top-1 table, and their files.
INTEGER_TFLITE_FILES = {"ptq_int8_tflite": quantization_stages.PTQ_TFLITE_FILE,
                        "qat_int8_tflite": quantization_stages.QAT_TFLITE_FILE}
# Below this share of generated samples the teacher classifies as requested, the generator
# has not learned the classes, and what learned from its samples is suspect.
MIN_GENERATED_AGREEMENT = 0.5
# Seeds derived from the run seed, so evaluation never reuses the training stream.
EVALUATION_SEED_OFFSET = 1
GRID_SEED_OFFSET = 2
POOL_MEMBER_SEED_STRIDE = 1000  # Pool member k (from 0) trains with seed + 1000 k.
STAGE_OUTPUTS = (STATE_FILE, "generator", "distillation")
# The state.json key naming the run a work directory took its generator from.
GENERATOR_FROM_KEY = "generator_from"
# Marks the generator stage's state as trained (or pooled) in this work directory, so that a
# generator taken with `--generator_from` is told from one trained on after it was taken (states
# from before the mark read as taken as they were).
TRAINED_HERE_KEY = "trained_here"
# The state.json key of the teacher's fingerprint (`teachers.fingerprint`) its stages trained against.
TEACHER_KEY = "teacher_sha256"


def _say(message: str):
    print(message, file=sys.stdout, flush=True)


def check_work_dir(run_config: config_lib.RunConfig):
    """Checks that the work directory could be created and written; creates nothing.

    Raises:
      UserError: if it could not.
    """
    reason = unusable_directory_reason(run_config.work_dir)
    if reason:
        raise UserError(f"cannot create work directory {run_config.work_dir!r}: {reason}")


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
    config_lib.save_or_check(run_config, write_json_atomic, same_teacher)


def read_state(work_dir: str) -> dict:
    # Unreadable state means no stage is trusted as finished: they redo or resume.
    return read_json(os.path.join(work_dir, STATE_FILE), {})


def write_state(work_dir: str, state: dict):
    write_json_atomic(os.path.join(work_dir, STATE_FILE), state)


def build_generator_for(teacher: teachers.Teacher, generator_config: config_lib.GeneratorConfig,
                        name: str = "generator") -> tf_keras.Model:
    """One generator of `generator_config`'s architecture for `teacher` (a pool's member)."""
    spec = generator_lib.GeneratorSpec(num_classes=teacher.num_classes, image_shape=teacher.image_shape,
                                       noise_dim=generator_config.noise_dim,
                                       base_channels=generator_config.base_channels, variant=generator_config.variant,
                                       blur_sigma=generator_config.blur_sigma)
    return generator_lib.build_generator(spec, teacher.preprocessing, name=name)


def pool_member_names(pool_size: int) -> list:
    """Names of a pool's generators' training directories, in pool order: `generator`, `generator_2`, ..."""
    return ["generator" if index == 0 else f"generator_{index + 1}" for index in range(pool_size)]


def pool_member_dirs(run_config: config_lib.RunConfig) -> list:
    """Training directories of `run_config`'s generators, in pool order."""
    return [os.path.join(run_config.work_dir, name) for name in pool_member_names(run_config.generator.pool_size)]


def load_generator(path: str) -> tf_keras.Model:
    """Loads a generator saved by this package."""
    return tf_keras.models.load_model(path, compile=False, custom_objects={
        "ConditionalBatchNormalization": generator_lib.ConditionalBatchNormalization,
        "InputSpaceMapping": generator_lib.InputSpaceMapping, "GaussianBlur": generator_lib.GaussianBlur,
        "RoundRobinSplit": generator_lib.RoundRobinSplit, "RoundRobinMerge": generator_lib.RoundRobinMerge})


def _discard_downstream_of_generator(work_dir: str, state: dict):
    """A generator that trains further makes the student and exports built from it stale."""
    stale = [name for name in (quantization_stages.DISTILLATION_DIR, quantization_stages.STUDENT_MODEL_FILE)
             if os.path.exists(os.path.join(work_dir, name))]
    if not stale and "distillation" not in state and "export" not in state:
        return
    _say(f"generator: training changes the generator, so the QAT state built on the old one is discarded "
         f"({', '.join(stale) or 'state only'})")
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
    trained = [(os.path.basename(member_dir), training_loop.latest_step(member_dir), "generator_steps", generator_steps)
               for member_dir in pool_member_dirs(run_config)]
    # Without QAT an earlier student is not used at all, and a generator that trains further discards it.
    if run_config.distillation.steps and all(step == generator_steps for _, step, _, _ in trained):
        student_dir = os.path.join(run_config.work_dir, quantization_stages.DISTILLATION_DIR)
        trained.append(("QAT student", training_loop.latest_step(student_dir), "distillation_steps",
                        run_config.distillation.steps))
    for what, step, flag, asked in trained:
        if step is not None and step > asked:
            raise UserError(f"{run_config.work_dir}'s {what} has trained {step} steps, more than --{flag}={asked}; "
                            f"training cannot be undone: ask for {step} or more, or use another --work_dir")


def check_same_teacher(work_dir: str, teacher: teachers.Teacher, state: dict) -> str:
    """The teacher's fingerprint, checked against the one `state` recorded when the work
    directory's stages started training (runs from before it was recorded pass).

    Raises:
      UserError: if the directory has trained a generator or student against another
        teacher (the model file replaced by a retrained one, or other preprocessing).
    """
    current = teachers.fingerprint(teacher)
    recorded = state.get(TEACHER_KEY)
    trained = [name for name in (GENERATOR_MODEL_FILE, "generator", quantization_stages.DISTILLATION_DIR)
               if os.path.exists(os.path.join(work_dir, name))]
    if recorded and recorded != current and trained:
        raise UserError(f"{work_dir}'s generator and student were trained against another teacher than "
                        f"{teacher.name} is now (its weights or preprocessing differ: was the model file replaced?); "
                        "train this one in another work directory, or delete that one to start fresh")
    return current


@dataclasses.dataclass(frozen=True)
class GeneratorSource:
    """Another run's finished generator, which this run starts from (`--generator_from`).

    Attributes:
      work_dir: that run's work directory, absolute.
      finished: its `state.json` entry for the generator stage (steps, summary, SHA-256).
      teacher_sha256: the fingerprint of the teacher it trained against, if recorded.
    """

    work_dir: str
    finished: dict
    teacher_sha256: Optional[str] = None

    @property
    def pool_size(self) -> int:
        """How many generators its finished pool holds."""
        return len(self.finished.get("members", ())) or 1

    def shared_member_names(self, run_config: config_lib.RunConfig) -> list:
        """Its generators that `run_config`'s pool holds too (the first ones: a pool's
        generator i trains from seed `seed + 1000 (i - 1)` whatever the pool's size)."""
        return pool_member_names(min(self.pool_size, run_config.generator.pool_size))


def generator_source(run_config: config_lib.RunConfig, source_dir: str) -> GeneratorSource:
    """Checks that `source_dir` is a run whose finished generator this run can start from:
    one trained with this run's generator settings and not longer than this run asks.

    Raises:
      UserError: saying why not.
    """
    source_dir = os.path.abspath(source_dir)
    flag = f"--generator_from={source_dir}"
    if source_dir == os.path.abspath(run_config.work_dir):
        raise UserError(f"{flag} is this run's own --work_dir; it names another run to take the generator from")
    taken = read_state(run_config.work_dir)
    if taken.get(GENERATOR_FROM_KEY) == source_dir and "generator" in taken:  # By an earlier run of this command.
        return GeneratorSource(source_dir, taken["generator"])
    config_path = os.path.join(source_dir, config_lib.CONFIG_FILE)
    if os.path.isfile(source_dir):
        raise UserError(f"{flag} is a file; name the work directory of the run that trained it")
    if not os.path.isfile(config_path):
        raise UserError(f"{flag}: " + ("no such directory" if not os.path.isdir(source_dir) else
                                       f"not a run directory (it has no {config_lib.CONFIG_FILE})"))
    source_state = read_state(source_dir)
    finished = source_state.get("generator", {})
    if not finished or finished.get("sha256") != file_digest(os.path.join(source_dir, GENERATOR_MODEL_FILE)):
        raise UserError(f"{flag}: that run's generator has not finished training; run it to the end first")
    # Where the teacher's files are may differ when that run recorded its teacher's fingerprint,
    # which `take_generator` compares with this run's.
    changed = config_lib.generator_differences(config_lib.read_saved(config_path), config_lib.current_dict(run_config),
                                               same_teacher=TEACHER_KEY in source_state)
    if changed:
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        raise UserError(f"{flag}: that run's generator was trained with other settings ({shown}); a run takes "
                        "another's generator only with the same teacher, generator, loss and generator training")
    # Checkpoints at another step: training on since (or now). Without checkpoints (deleted to save
    # space) the generator is taken all the same; only training it further would start afresh.
    source = GeneratorSource(source_dir, finished, source_state.get(TEACHER_KEY))
    beyond = [step for step in _checkpoint_steps(source_dir, source.shared_member_names(run_config))
              if step not in (None, finished["steps"])]
    if beyond:
        raise UserError(f"{flag}: that run's generator has trained on from its finished {finished['steps']} steps "
                        f"(to step {max(beyond)}); finish that run first")
    if finished["steps"] > run_config.generator_training.steps:
        raise UserError(f"{flag}: that run's generator has trained {finished['steps']} steps, more than "
                        f"--generator_steps={run_config.generator_training.steps}; ask for {finished['steps']} or more")
    return source


def _checkpoint_steps(work_dir: str, member_names: list) -> list:
    """The latest checkpoint step (or None) of each of `work_dir`'s generators named."""
    return [training_loop.latest_step(os.path.join(work_dir, name)) for name in member_names]


def _link_or_copy(source: str, destination: str):
    """Hard-links a file where the file system allows (another file system, or one without
    links, gets a copy). Safe for what a run keeps: checkpoints, histories, logs and models
    are replaced by new files, never rewritten in place, so neither run changes the other's."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _copy_directory(source: str, destination: str):
    """Copies a directory into place whole (`_link_or_copy`): to a temporary name beside it,
    then renamed. The ImageNet configs' generator is about 1.2 GB with its checkpoints."""
    temporary = os.path.join(os.path.dirname(destination), TEMPORARY_PREFIX + os.path.basename(destination))
    for path in (temporary, destination):
        if os.path.exists(path):
            shutil.rmtree(path)
    shutil.copytree(source, temporary, copy_function=_link_or_copy)
    os.replace(temporary, destination)


def take_generator(run_config: config_lib.RunConfig, source: GeneratorSource, state: dict):
    """Starts this run's generator stage from `source`: copies its generators' training
    directories (checkpoints, history), their TensorBoard logs and `generator.keras`, and
    its finished state. A rerun of the same command finds it taken; one interrupted while
    copying copies again. Of a pool, only the generators this run's pool holds too are
    copied; `generator_stage` trains those it lacks.

    Raises:
      UserError: if this work directory has a generator of its own, or the source's
        changed while it was copied.
    """
    work_dir = run_config.work_dir
    if state.get(GENERATOR_FROM_KEY) == source.work_dir and "generator" in state:
        return
    own = [name for name in (GENERATOR_MODEL_FILE, *pool_member_names(run_config.generator.pool_size))
           if os.path.exists(os.path.join(work_dir, name))]
    if state.get(GENERATOR_FROM_KEY) != source.work_dir and (own or "generator" in state):
        raise UserError(f"{work_dir} already has a generator ({', '.join(own) or STATE_FILE}); --generator_from "
                        "starts a new work directory from another run's generator")
    if source.teacher_sha256 not in (None, state[TEACHER_KEY]):
        raise UserError(f"the generator of {source.work_dir} was trained against another teacher than this run's "
                        "(its weights or preprocessing differ: was the model file replaced?)")
    member_names = source.shared_member_names(run_config)
    taken = ("the generator" if source.pool_size == 1 else
             f"{len(member_names)} of the {source.pool_size} generators" if len(member_names) < source.pool_size
             else f"the {source.pool_size} generators")
    _say(f"generator: taking {taken} of {source.work_dir} ({source.finished['steps']} steps)")
    state[GENERATOR_FROM_KEY] = source.work_dir  # What is copied from here on is this run's to copy again.
    write_state(work_dir, state)
    for name in member_names:
        for directory in (name, os.path.join("logs", name)):  # Checkpoints and history; TensorBoard logs.
            if os.path.isdir(os.path.join(source.work_dir, directory)):
                os.makedirs(os.path.dirname(os.path.join(work_dir, directory)), exist_ok=True)
                _copy_directory(os.path.join(source.work_dir, directory), os.path.join(work_dir, directory))
    model_path = os.path.join(work_dir, GENERATOR_MODEL_FILE)
    temporary = os.path.join(work_dir, TEMPORARY_PREFIX + GENERATOR_MODEL_FILE)
    if os.path.exists(temporary):
        os.remove(temporary)
    _link_or_copy(os.path.join(source.work_dir, GENERATOR_MODEL_FILE), temporary)
    os.replace(temporary, model_path)
    copied_steps = _checkpoint_steps(work_dir, member_names)
    if (file_digest(model_path) != source.finished["sha256"]
            or any(step not in (None, source.finished["steps"]) for step in copied_steps)):
        raise UserError(f"the generator of {source.work_dir} changed while it was copied (is a run training it?); "
                        "rerun this command once that run has finished")
    # Not marked as trained here: the report says its figures are the source's until this run trains it on.
    state["generator"] = {key: value for key, value in source.finished.items() if key != TRAINED_HERE_KEY}
    write_state(work_dir, state)


def generator_stage(run_config: config_lib.RunConfig, teacher: teachers.Teacher, state: dict,
                    progress: bool = True) -> tf_keras.Model:
    """Trains the generator, or each generator of a pool one after the other (resuming any
    that has a checkpoint), or loads the finished one. A finished pool of another size
    (`--generator_pool_size` changed) is rebuilt: its generators from their checkpoints,
    the ones it lacks trained."""
    work_dir = run_config.work_dir
    model_path = os.path.join(work_dir, GENERATOR_MODEL_FILE)
    finished = state.get("generator", {})
    pool_changed = False
    if (finished.get("steps") == run_config.generator_training.steps
            and finished.get("sha256") == file_digest(model_path)):
        generator = load_generator(model_path)
        saved_pool_size = len(generator_lib.pool_members(generator))
        if saved_pool_size == run_config.generator.pool_size:
            _say(f"generator: already trained ({finished['steps']} steps), loading {model_path}")
            return generator
        pool_size = run_config.generator.pool_size
        kept = min(saved_pool_size, pool_size)
        unsaved = [name for name in pool_member_names(kept) if training_loop.latest_step(os.path.join(work_dir, name))
                   is None]
        if unsaved:  # Deleted to save space: the pool would train them again from scratch.
            raise UserError(f"{', '.join(unsaved)} in {work_dir} has no checkpoint, from which a pool of another "
                            f"size is built; keep --generator_pool_size={saved_pool_size}, or train the pool in "
                            "another --work_dir")
        restored = "the first restored from its checkpoint" if kept == 1 else \
            f"the first {kept} restored from their checkpoints"
        _say(f"generator: {model_path} holds {count_of(saved_pool_size, 'generator')} and "
             f"--generator_pool_size={pool_size}: {restored}"
             + (f", {pool_size - kept} more to train" if pool_size > kept else ""))
        pool_changed = True
    member_dirs = pool_member_dirs(run_config)
    if pool_changed or any(training_loop.latest_step(member_dir) != run_config.generator_training.steps
                           for member_dir in member_dirs):
        _discard_downstream_of_generator(work_dir, state)
    teacher_weights = teacher.model.get_weights()
    grid_seed = run_config.seed + GRID_SEED_OFFSET
    members, summaries = [], []
    for index, member_dir in enumerate(member_dirs):
        name = "generator" if len(member_dirs) == 1 else f"generator_{index + 1}"
        seed = run_config.seed + POOL_MEMBER_SEED_STRIDE * index
        tf_keras.utils.set_random_seed(seed)  # The initial weights depend on the seed alone.
        generator = build_generator_for(teacher, run_config.generator, name=name)
        trainer = zero_shot.GeneratorTrainer(teacher, generator, run_config.loss, run_config.generator_training,
                                             seed=seed)
        writer = tf.summary.create_file_writer(os.path.join(work_dir, "logs", os.path.basename(member_dir)))

        def grid(generator=generator):
            return zero_shot.sample_grid(generator, teacher, run_config.evaluation.grid_samples_per_class,
                                         run_config.evaluation.grid_max_classes, grid_seed)

        which = "" if len(member_dirs) == 1 else f" {index + 1} of {len(member_dirs)} (seed {seed})"
        steps = run_config.generator_training.steps
        if training_loop.latest_step(member_dir) == steps:
            _say(f"generator{which}: already trained ({count_of(steps, 'step')}), restoring its checkpoint")
        else:
            _say(f"generator{which}: training {count_of(steps, 'step')} of "
                 f"{run_config.generator_training.batch_size} samples against {teacher.name} "
                 f"({generator.count_params():,} generator parameters)")
        summaries.append(trainer.train(member_dir, progress=progress, summary_writer=writer, sample_grid_fn=grid))
        members.append(generator)
    zero_shot.check_teacher_unchanged(teacher, teacher_weights)
    generator = members[0] if len(members) == 1 else generator_lib.pool_generators(members)
    save_keras_model_atomic(generator, model_path)
    # The first generator's summary stands for the stage (the report's BN figures); the pool's in "members".
    state["generator"] = {"steps": summaries[0].steps, "summary": summaries[0].to_dict(),
                          "sha256": file_digest(model_path), TRAINED_HERE_KEY: True}
    if len(summaries) > 1:
        state["generator"]["members"] = [summary.to_dict() for summary in summaries]
    write_state(work_dir, state)
    return generator


def generator_training_summary(generator_state: dict) -> dict:
    """The generator stage's training summary from its `state.json` entry.

    One generator: its summary. A pool: the first generator's (its loss terms stand for
    the stage), with the wall time, samples/s and resume point of all the trainings,
    which ran one after the other, and `generators`, their number.
    """
    summary = generator_state.get("summary", {})
    members = generator_state.get("members")
    if not members:
        return summary
    wall_seconds = sum(member["wall_seconds"] for member in members)
    samples = sum(member["samples_per_second"] * member["wall_seconds"] for member in members)
    return {**summary, "generators": len(members), "wall_seconds": wall_seconds,
            "wall_time": format_duration(wall_seconds),
            "samples_per_second": samples / wall_seconds if wall_seconds else 0.0,
            "resumed_from_step": max(member["resumed_from_step"] for member in members)}


# How the metrics `tools/train_teacher.py` records read in a report.
TEACHER_METRIC_WORDS = {"test_accuracy": "test top-1", "test_accuracy_training_mode": "test top-1 in training mode",
                        "train_accuracy": "train top-1"}


def _teacher_metrics(metrics: dict) -> str:
    """A sidecar's training metrics in words: "test top-1 92.78%, ..., 2 epochs, trained in 0m03s"."""
    parts = []
    for name, value in metrics.items():
        number = isinstance(value, (int, float))
        if (name in TEACHER_METRIC_WORDS or name.endswith("accuracy")) and number:
            parts.append(f"{TEACHER_METRIC_WORDS.get(name, name.replace('_', ' '))} {100 * value:.2f}%")
        elif name == "epochs" and number:
            parts.append(count_of(int(value), "epoch"))
        elif name == "wall_seconds" and number:
            parts.append(f"trained in {format_duration(value)}")
        else:
            parts.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join(parts)


def report_stage(run_config: config_lib.RunConfig, teacher: teachers.Teacher, generator, state: dict,
                 quantization_results: dict, progress: bool = True) -> dict:
    """Judges generated samples with the teacher, writes the grid and the reports."""
    work_dir = run_config.work_dir
    evaluation = zero_shot.evaluate_generator(generator, teacher, run_config.evaluation.samples_per_class,
                                              seed=run_config.seed + EVALUATION_SEED_OFFSET, progress=progress)
    grid = zero_shot.sample_grid(generator, teacher, run_config.evaluation.grid_samples_per_class,
                                 run_config.evaluation.grid_max_classes, run_config.seed + GRID_SEED_OFFSET)
    zero_shot.write_png(os.path.join(work_dir, SAMPLES_FILE), grid)
    summary = generator_training_summary(state.get("generator", {}))
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
        "generated_samples": {
            "samples_per_class": evaluation.samples_per_class,
            "teacher_agreement": evaluation.accuracy,
            "worst_class_agreement": evaluation.worst_class_accuracy,
            "per_class_agreement": evaluation.per_class_accuracy,
            "mean_confidence": evaluation.mean_confidence,
            "within_class_spread": evaluation.within_class_spread,
        },
        "quantization": {"scheme": run_config.quantization.scheme,
                         "low_bit_ranges": run_config.quantization.low_bit_ranges,
                         **state.get("distillation", {}),
                         **quantization_results},
        "outputs": {"generator": GENERATOR_MODEL_FILE, "checkpoints": "generator/checkpoints",
                    "samples": SAMPLES_FILE, "tensorboard": "logs", "config": config_lib.CONFIG_FILE,
                    "export_report": quantization_stages.EXPORT_REPORT_FILE},
    }
    write_json_atomic(os.path.join(work_dir, REPORT_JSON_FILE), report)
    write_text_atomic(os.path.join(work_dir, REPORT_MARKDOWN_FILE), format_report(report))
    return report


def generated_samples_warning(report: dict) -> Optional[str]:
    """A warning when the teacher classifies too few generated samples as requested; else None."""
    agreement = report["generated_samples"]["teacher_agreement"]
    if agreement >= MIN_GENERATED_AGREEMENT:
        return None
    steps = report["generator_training"].get("steps")
    trained = f" in {count_of(steps, 'step')}" if steps else ""
    return (f"the teacher classifies only {100 * agreement:.0f}% of generated samples as the class asked for: the "
            f"generator has not learned the classes{trained}, and the int8 models were calibrated (and any QAT "
            "student trained) on its samples; train it longer (--generator_steps)")


def format_report(report: dict) -> str:
    """The report as markdown for people."""
    teacher = report["teacher"]
    training = report["generator_training"]
    samples = report["generated_samples"]
    lines = [
        f"# zscgan_tf report: {teacher['name']}",
        "",
        f"Teacher: {teacher['name']}, input {'x'.join(str(v) for v in teacher['image_shape'])}, "
        f"{teacher['num_classes']} classes, {teacher['batchnorm_layers']} BN layers, "
        f"{teacher['parameters']:,} parameters, preprocessing `{teacher['preprocessing']['mode']}`.",
    ]
    if teacher.get("metrics"):
        lines.append(f"Teacher metrics from training: {_teacher_metrics(teacher['metrics'])}.")
    lines += [f"Warning: {warning}." for warning in teacher.get("warnings", ())]
    lines += ["", "## Generator training", ""]
    if report.get(GENERATOR_FROM_KEY):
        lines += [f"Taken from the run in {report[GENERATOR_FROM_KEY]} (`--generator_from`), where it trained; "
                  + ("then trained on or pooled anew here: the loss terms span its whole training, the wall time is "
                     "this session's." if report.get("generator_trained_here") else "the figures below are from there."),
                  ""]
    if training:
        first, last = training["first"], training["last"]
        lines += [
            f"- steps: {training['steps']} (this session from step {training['resumed_from_step']})",
            f"- wall time of this session: {training['wall_time']}, {training['samples_per_second']:.0f} samples/s"
            + (f" ({training['generators']} generators, one after the other)" if training.get("generators") else ""),
            "",
            "| term | first step | last step |",
            "|---|---|---|",
        ]
        for term in ("total", "cross_entropy", "bn_statistics", "diversity", "mode_seeking", "accuracy"):
            if term in first and term in last:  # Histories from before a term existed lack it.
                lines.append(f"| {term} | {first[term]:.4g} | {last[term]:.4g} |")
        if report["bn_statistics_reduction"]:
            lines += ["", f"BN-statistics loss fell {report['bn_statistics_reduction']:.1f}-fold."]
    lines += [
        "", "## Generated samples judged by the teacher", "",
        f"{samples['samples_per_class']} samples per class, generator and teacher in inference mode: "
        f"{100 * samples['teacher_agreement']:.2f}% classified as the requested class "
        f"(worst class {100 * samples['worst_class_agreement']:.2f}%), mean confidence "
        f"{samples['mean_confidence']:.3f}. "
        + (f"Within-class spread (standard deviation over a class's samples, in teacher input units): "
           f"{samples['within_class_spread']:.3g}; near 0 means one image per class."
           if samples["samples_per_class"] > 1 else "Within-class spread: needs at least 2 samples per class."),
        "",
    ]
    warning = generated_samples_warning(report)
    if warning:
        lines += [f"Warning: {warning}.", ""]
    agreement = samples["per_class_agreement"]
    shown = range(len(agreement))
    if len(agreement) > PER_CLASS_ROWS_SHOWN:  # ImageNet's 1,000 rows would bury the rest of the report.
        shown = sorted(sorted(shown, key=lambda label: agreement[label])[:PER_CLASS_ROWS_SHOWN])
        lines += [f"The {PER_CLASS_ROWS_SHOWN} classes of lowest agreement ({REPORT_JSON_FILE} has all "
                  f"{len(agreement)}):", ""]
    lines += ["| class | agreement |", "|---|---|"]
    lines += [f"| {label} | {100 * agreement[label]:.1f}% |" for label in shown]
    lines += ["", f"![samples]({SAMPLES_FILE})", ""]
    lines += _format_quantization(report["quantization"])
    return "\n".join(lines)


def _format_quantization(quantization: dict) -> list:
    scheme = quantize.QuantizationScheme.from_name(quantization["scheme"],
                                                   low_bit_ranges=quantization.get("low_bit_ranges", "min_max"))
    lines = ["## Quantization", "", f"Scheme: {scheme.name}"
             + (" (ranges below 8 bits fitted by least squares, held during QAT)." if scheme.holds_ranges_in_training
                else ".")]
    if "summary" in quantization:
        summary = quantization["summary"]
        lines.append(f"Data-free QAT: {summary['steps']} steps, {summary['wall_time']} this session, "
                     f"{summary['samples_per_second']:.0f} samples/s; distillation loss "
                     f"{summary['first']['distillation']:.4g} -> {summary['last']['distillation']:.4g}"
                     + (f", feature term {summary['first']['features']:.4g} -> {summary['last']['features']:.4g}"
                        if summary['first'].get('features') else "") + ".")
    if quantization.get("float_layers"):
        lines.append(f"Layers left float by TF-MOT: {', '.join(quantization['float_layers'])}.")
    if "top1" in quantization:
        top1, images = quantization["top1"], quantization["images"]
        reference = top1.get("fp32_keras")
        lines += ["", f"Top-1 on {images} {quantization['dataset']} {quantization['split']} images "
                  f"(one image is {100 / images:.2g} points):", "",
                  "| model | top-1 | against FP32 | same class as FP32 | class furthest below FP32 |",
                  "|---|---|---|---|---|"]
        same_class = quantization.get("same_class_as_fp32", {})
        drops = quantization.get("largest_class_drop", {})
        for name, value in top1.items():
            against = "" if reference is None or name == "fp32_keras" else f"{100 * (value - reference):+.2f}"
            same = f"{100 * same_class[name]:.2f}%" if name in same_class else ""
            lines.append(f"| {name} | {100 * value:.2f}% | {against} | {same} | {_class_drop(drops.get(name))} |")
        for name, value in quantization.get("agreement", {}).items():
            lines.append(f"\nArgmax agreement {name}: {100 * value:.2f}%.")
        integer = {name: value for name, value in top1.items() if name in INTEGER_TFLITE_FILES}
        if integer:
            best = max(integer.values())
            files = " and ".join(f"`{INTEGER_TFLITE_FILES[name]}`" for name, value in integer.items() if value == best)
            lines.append(f"\nMost accurate fully-integer model on these images: {files} ({100 * best:.2f}%).")
    if "sizes_bytes" in quantization:
        lines += ["", "| TFLite model | size | latency 1 thread | latency 2 threads |", "|---|---|---|---|"]
        for kind, size in quantization["sizes_bytes"].items():
            latency = quantization["latency_median_ms"][kind]
            lines.append(f"| {kind} | {size / 1024:.1f} KiB | {latency['1']:.3f} ms | {latency['2']:.3f} ms |")
    lines.append("")
    return lines


def _class_drop(drop: Optional[dict]) -> str:
    """A `largest_class_drop` entry in words: "6 (Shirt): 75.30% against 78.10%, 1000 images"."""
    if not drop:
        return ""
    name = f" ({drop['name']})" if drop.get("name") not in (None, str(drop["class"])) else ""
    return (f"{drop['class']}{name}: {100 * drop['model']:.2f}% against {100 * drop['fp32']:.2f}%, "
            f"{count_of(drop['images'], 'image')}")


def run(run_config: config_lib.RunConfig, progress: bool = True, generator_from: str = "") -> dict:
    """Runs every stage of `run_config`; returns the report dict.

    Args:
      run_config: the run.
      progress: show progress lines.
      generator_from: another run's work directory whose finished generator this run
        starts from, instead of training one (`take_generator`); "" trains its own.
    """
    check_work_dir(run_config)
    check_not_shortened(run_config)
    source = generator_source(run_config, generator_from) if generator_from else None
    tf_keras.utils.set_random_seed(run_config.seed)
    teacher = teachers.load_teacher(run_config.teacher, progress=progress)
    # Loaded before training, so a bad dataset is reported now rather than after hours of it.
    evaluation_data = quantization_stages.evaluation_dataset(run_config, teacher, progress=progress)
    quantization_stages.check_integer_export(run_config, teacher)  # Likewise for an op TFLite keeps float.
    # Created only now: a bad teacher or dataset leaves no empty work directory behind.
    prepare_work_dir(run_config)
    # A run started twice on one directory would interleave its checkpoints and outputs.
    with exclusive_use(run_config.work_dir):
        return _run_stages(run_config, teacher, evaluation_data, source, progress)


def _run_stages(run_config: config_lib.RunConfig, teacher: teachers.Teacher, evaluation_data,
                source: Optional[GeneratorSource], progress: bool) -> dict:
    state = read_state(run_config.work_dir)
    fingerprint = check_same_teacher(run_config.work_dir, teacher, state)
    record_config(run_config, same_teacher=state.get(TEACHER_KEY) == fingerprint)
    _say(f"teacher: {teacher.name}, input {teacher.image_shape}, {teacher.num_classes} classes")
    for warning in teacher.warnings:
        _say(f"warning: {warning}")
    if state.get(TEACHER_KEY) != fingerprint:
        state[TEACHER_KEY] = fingerprint
        write_state(run_config.work_dir, state)
    if source:
        take_generator(run_config, source, state)
    generator = generator_stage(run_config, teacher, state, progress=progress)

    def save_state(updated):
        write_state(run_config.work_dir, updated)

    calibration = quantization_stages.calibration_samples(generator, teacher,
                                                          run_config.quantization.calibration_samples,
                                                          seed=run_config.seed + quantization_stages.CALIBRATION_SEED_OFFSET)
    student = quantization_stages.distillation_stage(run_config, teacher, generator, calibration, state, save_state,
                                                     progress=progress)
    tflite_paths = quantization_stages.export_stage(run_config, teacher, student, calibration, state, save_state)
    quantization_results = quantization_stages.evaluation_stage(run_config, teacher, student, tflite_paths,
                                                                evaluation_data, progress=progress)
    report = report_stage(run_config, teacher, generator, state, quantization_results, progress=progress)
    samples = report["generated_samples"]
    warning = generated_samples_warning(report)
    if warning:
        _say(f"warning: {warning}")
    top1 = report["quantization"].get("top1", {})
    accuracy = ", ".join(f"{name} {100 * value:.2f}%" for name, value in top1.items())
    _say(f"done: {100 * samples['teacher_agreement']:.2f}% of generated samples classified as requested "
         f"(worst class {100 * samples['worst_class_agreement']:.2f}%)" + (f"; top-1 {accuracy}" if accuracy else "")
         + f"; report in {os.path.join(run_config.work_dir, REPORT_MARKDOWN_FILE)}")
    return report
