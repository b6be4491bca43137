"""A work directory's `state.json`, and the names of what the stages keep beside it.

`state.json` says which stages finished, with what they measured and the SHA-256 of
what they wrote (an output that no longer matches is redone), the fingerprint of the
teacher they trained against, the run whose generator this one took
(`--generator_from`), if any, and the key of the early student check that passed.
Unreadable state means no stage is trusted as finished.
"""

import os

from zscgan_tf import config as config_lib
from zscgan_tf import training_loop
from zscgan_tf.files import file_digest, read_json, write_json_atomic
from zscgan_tf.preprocessing import Preprocessing

STATE_FILE = "state.json"
GENERATOR_MODEL_FILE = "generator.keras"
GENERATOR_DIR = "generator"  # The first generator's checkpoints and history (`pool_member_names`).
LOGS_DIR = "logs"  # TensorBoard scalars and sample grids, a directory per training.
# The state.json key naming the run a work directory took its generator from.
GENERATOR_FROM_KEY = "generator_from"
# Marks the generator stage's state as trained (or pooled) in this work directory, so that a
# generator taken with `--generator_from` is told from one trained on after it was taken (states
# from before the mark read as taken as they were).
TRAINED_HERE_KEY = "trained_here"
# The state.json key of the teacher's fingerprint (`teachers.fingerprint`) its stages trained against.
TEACHER_KEY = "teacher_sha256"
# Beside it, the preprocessing it covers, so that a refusal can say which of the two changed.
TEACHER_PREPROCESSING_KEY = "teacher_preprocessing"
# The key (`quantization_stages.student_check_key`) of the last early student check that passed,
# so that a generator stage resumed with the same teacher and settings does not repeat it.
STUDENT_CHECK_KEY = "student_check"
# The teacher's verdict on generated samples and the sample grid, with what they were made from,
# so that a finished run measured again (on other data) does not judge them again: hours for
# 1000 classes at 224x224 on a CPU.
GENERATED_SAMPLES_KEY = "generated_samples"


# The entries a run writes as JSON objects.
OBJECT_ENTRIES = ("generator", "distillation", "export", GENERATED_SAMPLES_KEY, TEACHER_PREPROCESSING_KEY)


def read_state(work_dir: str) -> dict:
    """The work directory's state, {} when there is none. Unreadable state means no stage is
    trusted as finished: they redo or resume. So does state of another shape than a run writes
    (a hand's edit, a file from elsewhere): not an object, or an entry of `OBJECT_ENTRIES` that
    is not one, reads as absent, and so does a generator pool's "members" that is not a list
    of objects."""
    state = read_json(os.path.join(work_dir, STATE_FILE), {})
    if not isinstance(state, dict):
        return {}
    state = {key: value for key, value in state.items() if key not in OBJECT_ENTRIES or isinstance(value, dict)}
    members = state.get("generator", {}).get("members")
    if members is not None and not (isinstance(members, list) and all(isinstance(member, dict) for member in members)):
        state["generator"] = {key: value for key, value in state["generator"].items() if key != "members"}
    return state


def stage_finished(work_dir: str, recorded: dict, steps: int, model_file: str) -> bool:
    """Whether a stage's state entry `recorded` says it finished `steps` steps, and its
    `model_file` in `work_dir` is still the file it wrote then: the stage loads that file
    rather than training or restoring its checkpoints."""
    return (recorded.get("steps") == steps
            and recorded.get("sha256") == file_digest(os.path.join(work_dir, model_file)))


def write_state(work_dir: str, state: dict):
    write_json_atomic(os.path.join(work_dir, STATE_FILE), state)


# Of a work directory that trained without recording its teacher's fingerprint (`record_teacher`).
UNCHECKED_TEACHER_NOTE = (
    f"records no fingerprint of the teacher it trained against (a run of an earlier version of zscgan_tf, or "
    f"its {STATE_FILE} lost), so it is taken to be this one: if the teacher's file was replaced since, "
    "train in another work directory")


def record_teacher(state: dict, fingerprint: str, preprocessing: Preprocessing):
    """Records in `state` the teacher its stages train against: its fingerprint
    (`teachers.fingerprint`) and the preprocessing that fingerprint covers."""
    state[TEACHER_KEY] = fingerprint
    state[TEACHER_PREPROCESSING_KEY] = preprocessing.to_dict()


def how_the_teacher_differs(recorded: dict, preprocessing: Preprocessing) -> str:
    """In words, for a refusal: how the teacher that reads `preprocessing` now differs from
    the one the state `recorded` (whose fingerprint is known to differ)."""
    then = recorded.get(TEACHER_PREPROCESSING_KEY)
    if then is None:  # Recorded before its preprocessing was.
        return "its weights or preprocessing differ: was the model file replaced?"
    then = Preprocessing.from_dict(then)
    if then != preprocessing:
        return (f"its preprocessing differs: {then.describe()} then, {preprocessing.describe()} now "
                "(--teacher_preprocessing or the model's sidecar)")
    return "its weights differ: was the model file replaced?"


def pool_member_names(pool_size: int) -> list:
    """Names of a pool's generators' training directories, in pool order: `generator`, `generator_2`, ..."""
    return [GENERATOR_DIR if index == 0 else f"{GENERATOR_DIR}_{index + 1}" for index in range(pool_size)]


def pool_member_dirs(run_config: config_lib.RunConfig) -> list:
    """Training directories of `run_config`'s generators, in pool order."""
    return [os.path.join(run_config.work_dir, name) for name in pool_member_names(run_config.generator.pool_size)]


def checkpoint_steps(work_dir: str, member_names: list) -> list:
    """The latest checkpoint step (or None) of each of `work_dir`'s generators named."""
    return [training_loop.latest_step(os.path.join(work_dir, name)) for name in member_names]
