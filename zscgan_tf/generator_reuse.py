"""Starting a run from another run's finished generator (`--generator_from`).

The new run's generator stage begins from copies (hard links where the file system
allows) of the other run's generator training directories, TensorBoard logs and
`generator.keras`, so that only its student is trained. The two runs must share the
teacher and every generator setting; the new run may ask for more generator steps, which
train on from the copy, and for a larger or smaller pool, which takes the generators both
pools hold.
"""

import dataclasses
import os
import shutil
from typing import List, Optional

from zscgan_tf import config as config_lib
from zscgan_tf import config_changes
from zscgan_tf.errors import UserError
from zscgan_tf.files import TEMPORARY_PREFIX, file_digest
from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.progress import listed, say
from zscgan_tf.run_state import (GENERATOR_FROM_KEY, GENERATOR_MODEL_FILE, LOGS_DIR, STATE_FILE, TEACHER_KEY,
                                 TEACHER_PREPROCESSING_KEY, TRAINED_HERE_KEY, UNCHECKED_TEACHER_NOTE, checkpoint_steps,
                                 how_the_teacher_differs, pool_member_names, read_state, write_state)


@dataclasses.dataclass(frozen=True)
class GeneratorSource:
    """Another run's finished generator, which this run starts from (`--generator_from`).

    Attributes:
      work_dir: that run's work directory, absolute.
      finished: its `state.json` entry for the generator stage (steps, summary, SHA-256).
      teacher: that run's `state.json` record of the teacher it trained against (its
        fingerprint and preprocessing), empty if none was recorded.
      teacher_model: the teacher its config names (a path, a Keras application or a built-in),
        "" where not known.
    """

    work_dir: str
    finished: dict
    teacher: dict = dataclasses.field(default_factory=dict)
    teacher_model: str = ""

    @property
    def teacher_sha256(self) -> Optional[str]:
        return self.teacher.get(TEACHER_KEY)

    @property
    def pool_size(self) -> int:
        """How many generators its finished pool holds."""
        return len(self.finished.get("members", ())) or 1

    def shared_member_names(self, run_config: config_lib.RunConfig) -> list:
        """Its generators that `run_config`'s pool holds too (the first ones: a pool's
        generator i trains from seed `seed + seeds.POOL_MEMBER_SEED_STRIDE * (i - 1)` whatever the pool's size)."""
        return pool_member_names(min(self.pool_size, run_config.generator.pool_size))


def _taken_from(taken: dict, source_dir: str) -> bool:
    """Whether the run whose state is `taken` took its generator from `source_dir`: the directory it
    recorded, named through a symbolic link or not, or a copy of it, whose generator is the one taken
    (both directories copied or moved elsewhere, the same command was refused)."""
    recorded, generator = taken.get(GENERATOR_FROM_KEY), taken.get("generator")
    if isinstance(recorded, str) and os.path.realpath(recorded) == os.path.realpath(source_dir):
        return True
    model_path = os.path.join(source_dir, GENERATOR_MODEL_FILE)
    return (isinstance(recorded, str) and isinstance(generator, dict) and os.path.isfile(model_path)
            and generator.get("sha256") == file_digest(model_path))


def generator_source(run_config: config_lib.RunConfig, source_dir: str) -> GeneratorSource:
    """Checks that `source_dir` is a run whose finished generator this run can start from:
    one trained with this run's generator settings and not longer than this run asks, into
    a work directory without a generator of its own.

    Raises:
      UserError: saying why not.
    """
    source_dir = os.path.abspath(source_dir)
    flag = f"--generator_from={source_dir}"
    if source_dir == os.path.abspath(run_config.work_dir):
        raise UserError(f"{flag} is this run's own --work_dir; it names another run to take the generator from")
    taken = read_state(run_config.work_dir)
    if "generator" in taken and _taken_from(taken, source_dir):  # By an earlier run of this command.
        return GeneratorSource(source_dir, taken["generator"])
    # Refused before config.json records this command's settings (a copied directory's work_dir, say).
    _check_no_generator_of_its_own(run_config, source_dir, taken)
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
    # How the teacher is found and read may differ when that run recorded its teacher's fingerprint,
    # which `take_generator` compares with this run's.
    # That run is not ours to mend: removing its config would lose what it was trained with.
    saved = config_changes.read_saved(config_path, advice=f"{flag} cannot be checked against this run's settings; "
                                      "restore that file or train a generator in this run")
    changed = config_changes.generator_differences(saved, config_lib.current_dict(run_config),
                                                   same_teacher=TEACHER_KEY in source_state)
    if changed:
        shown = listed(changed, config_changes.CHANGED_SETTINGS_SHOWN)
        raise UserError(f"{flag}: that run's generator was trained with other settings ({shown}); a run takes "
                        "another's generator only with the same teacher, generator, loss and generator training")
    # Checkpoints at another step: training on since (or now). Without checkpoints (deleted to save
    # space) the generator is taken all the same, but cannot train further.
    source = GeneratorSource(source_dir, finished, {key: source_state[key] for key in
                                                    (TEACHER_KEY, TEACHER_PREPROCESSING_KEY) if key in source_state},
                             config_changes.saved_teacher_model(saved))
    member_names = source.shared_member_names(run_config)
    link = _first_symbolic_link(source_dir, [GENERATOR_MODEL_FILE, *_copied_directories(member_names)])
    if link:  # Copied, a link carried the next write (and a linked directory's files) from elsewhere into this run.
        raise UserError(f"{flag}: {link} is a symbolic link, and a run takes only files from another's directory: "
                        "copy that run's directory without links (cp -rL), or train a generator in this run")
    steps = checkpoint_steps(source_dir, member_names)
    without = [name for name, step in zip(member_names, steps) if step is None]
    if without and finished["steps"] < run_config.generator_training.steps:
        raise UserError(f"{flag}: that run's {', '.join(without)} {'has' if len(without) == 1 else 'have'} no "
                        f"checkpoints to train on from its {finished['steps']} steps; ask for "
                        f"--generator_steps={finished['steps']}")
    beyond = [step for step in steps if step not in (None, finished["steps"])]
    if beyond:
        # Its saved config holds the steps its command trains to: the count this run then asks for.
        target = max(saved.get("generator_training", {}).get("steps", 0), *beyond)
        raise UserError(f"{flag}: that run's generator has trained on from its finished {finished['steps']} steps "
                        f"(to step {max(beyond)}); finish that run's {target} steps first, then ask for "
                        f"--generator_steps={target} or more")
    if finished["steps"] > run_config.generator_training.steps:
        raise UserError(f"{flag}: that run's generator has trained {finished['steps']} steps, more than "
                        f"--generator_steps={run_config.generator_training.steps}; ask for {finished['steps']} or more")
    return source


def check_source_teacher(source: GeneratorSource, run_config: config_lib.RunConfig, fingerprint: str,
                         preprocessing: Preprocessing) -> None:
    """Refuses `source` when it recorded another teacher's fingerprint than `fingerprint`, that
    of `run_config`'s teacher read with `preprocessing`: checked as soon as the teacher is loaded
    (`pipeline.run`), and again as the generator is taken.

    Raises:
      UserError: naming both teachers where they are named differently, else how they differ.
    """
    if source.teacher_sha256 is None or source.teacher_sha256 == fingerprint:
        return
    ours = run_config.teacher.model
    if config_changes.names_another_teacher(source.teacher_model, ours):  # Not a model file replaced: another teacher.
        raise UserError(f"the generator of {source.work_dir} was trained against another teacher "
                        f"({source.teacher_model}) than this run's ({ours}); train a generator in this run")
    raise UserError(f"the generator of {source.work_dir} was trained against another teacher than this run's "
                    f"({how_the_teacher_differs(source.teacher, preprocessing)})")


def _check_no_generator_of_its_own(run_config: config_lib.RunConfig, source_dir: str, state: dict) -> None:
    """Refuses a work directory with a generator of its own, unless it is one this run took
    from `source_dir` (or was copying from it when stopped)."""
    own = [name for name in (GENERATOR_MODEL_FILE, *pool_member_names(run_config.generator.pool_size))
           if os.path.exists(os.path.join(run_config.work_dir, name))]
    if not _taken_from(state, source_dir) and (own or "generator" in state):
        raise UserError(f"{run_config.work_dir} already has a generator ({', '.join(own) or STATE_FILE}); "
                        "--generator_from starts a new work directory from another run's generator")


def _copied_directories(member_names: List[str]) -> List[str]:
    """The directories `take_generator` copies of each pool member: its checkpoints and history, and its
    TensorBoard logs (`generator_source` checks the same ones for links)."""
    return [directory for name in member_names for directory in (name, os.path.join(LOGS_DIR, name))]


def _first_symbolic_link(work_dir: str, names: List[str]) -> Optional[str]:
    """The first symbolic link among `names` in `work_dir` and what their directories hold, or None."""
    for name in names:
        path = os.path.join(work_dir, name)
        if os.path.islink(path):
            return path
        for root, directories, file_names in os.walk(path):  # Nothing for a file, or a path that is not there.
            for entry in directories + file_names:
                if os.path.islink(os.path.join(root, entry)):
                    return os.path.join(root, entry)
    return None


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
    copied; `generator_stage.run` trains those it lacks.

    Raises:
      UserError: if this work directory has a generator of its own (which `generator_source`
        refused already, unless one appeared since), or the source's changed while it was
        copied, or was trained against another teacher.
    """
    work_dir = run_config.work_dir
    if "generator" in state and _taken_from(state, source.work_dir):
        return
    # Again, now that this run holds the directory: `generator_source` checked before it was locked.
    _check_no_generator_of_its_own(run_config, source.work_dir, state)
    if source.teacher_sha256 is None:
        say(f"note: {source.work_dir} {UNCHECKED_TEACHER_NOTE}")
    check_source_teacher(source, run_config, state[TEACHER_KEY],
                         Preprocessing.from_dict(state[TEACHER_PREPROCESSING_KEY]))
    member_names = source.shared_member_names(run_config)
    taken = ("the generator" if source.pool_size == 1 else
             f"{len(member_names)} of the {source.pool_size} generators" if len(member_names) < source.pool_size
             else f"the {source.pool_size} generators")
    say(f"generator: taking {taken} of {source.work_dir} ({source.finished['steps']} steps)")
    state[GENERATOR_FROM_KEY] = source.work_dir  # What is copied from here on is this run's to copy again.
    write_state(work_dir, state)
    for directory in _copied_directories(member_names):
        if os.path.isdir(os.path.join(source.work_dir, directory)):
            os.makedirs(os.path.dirname(os.path.join(work_dir, directory)), exist_ok=True)
            _copy_directory(os.path.join(source.work_dir, directory), os.path.join(work_dir, directory))
    model_path = os.path.join(work_dir, GENERATOR_MODEL_FILE)
    temporary = os.path.join(work_dir, TEMPORARY_PREFIX + GENERATOR_MODEL_FILE)
    if os.path.exists(temporary):
        os.remove(temporary)
    _link_or_copy(os.path.join(source.work_dir, GENERATOR_MODEL_FILE), temporary)
    os.replace(temporary, model_path)
    copied_steps = checkpoint_steps(work_dir, member_names)
    if (file_digest(model_path) != source.finished["sha256"]
            or any(step not in (None, source.finished["steps"]) for step in copied_steps)):
        raise UserError(f"the generator of {source.work_dir} changed while it was copied (is a run training it?); "
                        "rerun this command once that run has finished")
    # Not marked as trained here: the report says its figures are the source's until this run trains it on.
    state["generator"] = {key: value for key, value in source.finished.items() if key != TRAINED_HERE_KEY}
    write_state(work_dir, state)
