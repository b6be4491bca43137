"""Stage 1 of a run: zero-shot training of the conditional generator, or of a pool of them,
against the teacher (`zero_shot` trains one), and the generator of a run's settings built for
a teacher.

Each generator of a pool trains in its own directory and resumes from its checkpoint; the
finished generator (or pool) is saved as `generator.keras`, with its SHA-256 in
`state.json`, and loaded from there on a rerun. A generator other than the one the state
records (more steps, another pool size) discards what was built from the old one's samples.

Work directory files added here:

- `generator/checkpoints/`, `generator/history.json`: the first generator's training state;
  a pool's others' in `generator_2/`, ...
- `generator.keras`: the trained generator, or the pool (`generator.load_generator`).
- `logs/generator/`, ...: TensorBoard scalars and sample grids of each.
"""

import os
import shutil

import tf_keras

from zscgan_tf import config as config_lib
from zscgan_tf import generator as generator_lib
from zscgan_tf import quantization_stages, run_report, seeds, teachers, training_loop, zero_shot
from zscgan_tf.errors import UserError
from zscgan_tf.files import file_digest, save_keras_model_atomic
from zscgan_tf.progress import count_of, say
from zscgan_tf.run_state import (GENERATOR_MODEL_FILE, LOGS_DIR, TRAINED_HERE_KEY, checkpoint_steps, pool_member_dirs,
                                 pool_member_names, stage_finished, write_state)

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
    if not stale and "distillation" not in state and set(state.get("export", {})) <= {"float"}:
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
    # The float file is the teacher's alone: it was converted again with the rest.
    kept = {kind: done for kind, done in state.pop("export", {}).items() if kind == "float"}
    if kept:
        state["export"] = kept
    write_state(work_dir, state)


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


def check_trainable_on(run_config: config_lib.RunConfig, finished: dict):
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


def run(run_config: config_lib.RunConfig, teacher: teachers.Teacher, state: dict,
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
    if stage_finished(work_dir, finished, run_config.generator_training.steps, GENERATOR_MODEL_FILE):
        generator = generator_lib.load_generator(model_path)
        saved_pool = generator_lib.pool_members(generator)
        if len(saved_pool) == run_config.generator.pool_size:
            say(f"generator: already trained ({finished['steps']} steps), loading {model_path}")
            return generator
        saved_members = _kept_without_checkpoints(run_config, saved_pool, finished)
        pool_changed = True
    else:
        check_trainable_on(run_config, finished)
    member_dirs = pool_member_dirs(run_config)
    teacher_weights = teacher.model.get_weights()
    grid_seed = run_config.seed + seeds.GRID_SEED_OFFSET
    members, summaries = [], []
    for index, member_dir in enumerate(member_dirs):
        # A pool's models are generator_1, generator_2, ...; their directories generator, generator_2, ...
        name = "generator" if len(member_dirs) == 1 else f"generator_{index + 1}"
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

        def grid(generator=generator):
            return zero_shot.sample_grid(generator, teacher, run_config.evaluation.grid_samples_per_class,
                                         run_config.evaluation.grid_max_classes, grid_seed)

        if training_loop.latest_step(member_dir) == steps:
            say(f"generator{which}: already trained ({count_of(steps, 'step')}), restoring its checkpoint")
        else:
            say(f"generator{which}: training {count_of(steps, 'step')} of "
                f"{run_config.generator_training.batch_size} samples against {teacher.name} "
                f"({generator.count_params():,} generator parameters)")
        summaries.append(trainer.train(member_dir, progress=progress,
                                       log_dir=os.path.join(work_dir, LOGS_DIR, os.path.basename(member_dir)),
                                       sample_grid_fn=grid).to_dict())
        members.append(generator)
    zero_shot.check_teacher_unchanged(teacher, teacher_weights, "generator training")
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
