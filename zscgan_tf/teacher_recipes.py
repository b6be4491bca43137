"""Teachers trained from a recipe: the built-in ones, cached on first use, and those
`tools/train_teacher.py` trains; a training stopped part-way goes on after its last epoch.

A `TeacherRecipe` says what to train (dataset, architecture, input shape, schedule);
`train_from_recipe` trains it with `teacher_training.train_teacher` and saves it with its
sidecar. Every epoch ends with a checkpoint in `<teacher>.keras.training/`, beside the
recipe it belongs to, so the same call after Ctrl-C, SIGTERM, a hangup or a crash goes on
after the last finished epoch; a backup left by another recipe is refused, not
overwritten. One process at a time trains a teacher: the backup directory is locked, and
a run that needs a built-in teacher another process is training waits for it.

Example:

  teacher_path = ensure_builtin_teacher("digits_resnet8")
  teacher = tf_keras.models.load_model(teacher_path)
"""

import contextlib
import dataclasses
import json
import os
import shutil
from typing import Any, Callable, Dict, Optional, Tuple

import tensorflow as tf
import tf_keras

from zscgan_tf import data, files, sidecar, teacher_training, training_loop
from zscgan_tf.architectures import ARCHITECTURES, build_architecture
from zscgan_tf.errors import UserError
from zscgan_tf.generator import MIN_IMAGE_SIZE
from zscgan_tf.labeled_images import CENTRAL_CROP_FRACTION, LabeledImages, MixedImageSizesError
from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.progress import note
from zscgan_tf.teacher_training import TEACHER_FILE_SUFFIX, TeacherMetrics

CACHE_ENVIRONMENT_VARIABLE = "ZSCGAN_TF_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "zscgan_tf", "teachers")
# `<teacher>.keras.training/` holds an unfinished training's epoch checkpoints (Keras's
# `BackupAndRestore`, under `chief/`) and the recipe they belong to; it goes once the
# teacher is saved.
TRAINING_BACKUP_SUFFIX = ".training"
BACKUP_RECIPE_FILE = "recipe.json"
BACKUP_CHECKPOINT_DIR = "chief"  # Where BackupAndRestore keeps its checkpoints.


@dataclasses.dataclass(frozen=True)
class TeacherRecipe:
    """Everything needed to train a teacher from scratch.

    Attributes:
      dataset: a `data.load_dataset` source with `train` and `test` splits.
      architecture: a name in `ARCHITECTURES`.
      input_shape: (height, width, channels); images are resized and converted to it.
        A None entry keeps the dataset's own size or channel count.
      epochs: training epochs.
      batch_size: training batch size.
      learning_rate: initial Adam learning rate (cosine decay).
      preprocessing_mode: a `Preprocessing` mode.
      architecture_options: (name, value) pairs passed to the architecture's builder.
      augment: random translations during training.
      seed: weight initialization and shuffling seed.
    """

    dataset: str
    architecture: str
    input_shape: Tuple[Optional[int], Optional[int], Optional[int]] = (None, None, None)
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    preprocessing_mode: str = "tf"
    architecture_options: Tuple[Tuple[str, Any], ...] = ()
    augment: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"unknown architecture {self.architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        if len(self.input_shape) != 3 or any(size is not None and size < 1 for size in self.input_shape):
            raise UserError(f"input shape must be (height, width, channels) with positive sizes or None, "
                            f"got {self.input_shape}")
        _check_generator_can_draw(self.input_shape)
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise UserError(f"epochs and batch size must be positive and the learning rate above zero, got "
                            f"epochs={self.epochs}, batch_size={self.batch_size}, learning_rate={self.learning_rate}")
        Preprocessing(self.preprocessing_mode)

    def resolved_input_shape(self, dataset: LabeledImages) -> Tuple[int, int, int]:
        """`input_shape` with None entries taken from `dataset`."""
        return tuple(int(wanted if wanted is not None else native)
                     for wanted, native in zip(self.input_shape, dataset.image_shape))


def _check_generator_can_draw(input_shape: Tuple[Optional[int], Optional[int], Optional[int]]) -> None:
    """Refuses images smaller than a generator draws (`generator.MIN_IMAGE_SIZE`): a teacher of
    them trained, and `zscgan_tf.train` then refused it."""
    sides = [size for size in input_shape[:2] if size is not None]
    if sides and min(sides) < MIN_IMAGE_SIZE:
        raise UserError(f"images of {'x'.join(str(size) for size in input_shape[:2])} pixels are too small for a "
                        f"teacher to quantize: its generator draws at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} "
                        "(--image_size resizes them)")


BUILTIN_TEACHERS: Dict[str, TeacherRecipe] = {
    "digits_resnet8": TeacherRecipe(
        dataset="digits", architecture="resnet8", input_shape=(8, 8, 1),
        epochs=30, batch_size=64, learning_rate=3e-3),
    "fashion_mnist_resnet20": TeacherRecipe(
        dataset="fashion_mnist", architecture="resnet20", input_shape=(28, 28, 1),
        epochs=4, batch_size=128, learning_rate=2e-3),
    "fashion_mnist_mobilenet_v2": TeacherRecipe(
        dataset="fashion_mnist", architecture="mobilenet_v2", input_shape=(32, 32, 1),
        epochs=15, batch_size=128, learning_rate=2e-3, architecture_options=(("alpha", 0.35),)),
}


def cache_directory(cache_dir: Optional[str] = None) -> str:
    """`cache_dir`, else $ZSCGAN_TF_CACHE, else ~/.cache/zscgan_tf/teachers, its ".." where the system
    takes it (`files.system_path`): TensorFlow reads the teacher, which took "link/.." as text."""
    return files.system_path(os.path.expanduser(cache_dir or os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
                                                or DEFAULT_CACHE_DIR))


def builtin_recipe(name: str) -> TeacherRecipe:
    """The recipe of the built-in teacher `name`, or a UserError listing the known names."""
    if name not in BUILTIN_TEACHERS:
        raise UserError(f"unknown built-in teacher {name!r}; known: {', '.join(sorted(BUILTIN_TEACHERS))}")
    return BUILTIN_TEACHERS[name]


def builtin_teacher_path(name: str, cache_dir: Optional[str] = None) -> str:
    """Where the built-in teacher `name` is cached."""
    builtin_recipe(name)
    return os.path.join(cache_directory(cache_dir), name + TEACHER_FILE_SUFFIX)


def train_from_recipe(recipe: TeacherRecipe, path: str, progress: bool = True,
                      data_dir: Optional[str] = None) -> TeacherMetrics:
    """Trains a teacher from scratch as `recipe` says and saves it to `path`.

    Args:
      recipe: what to train.
      path: the `.keras` file to write (with its sidecar).
      progress: print training progress.
      data_dir: passed to `data.load_dataset`.

    Returns:
      The teacher's metrics, also stored in the sidecar.
    """
    if not path.endswith(TEACHER_FILE_SUFFIX):
        raise UserError(f"teacher files are {TEACHER_FILE_SUFFIX} files, got {path!r}")
    # A folder by its absolute path, as the sidecar names it: the backup's recipe named it as typed, so that a
    # training resumed from another directory read another folder of that name, or refused the same one.
    recipe = dataclasses.replace(recipe, dataset=data.portable_source(recipe.dataset))
    data.check_held_out_split(recipe.dataset)
    train = _load_split(recipe, "train", data_dir, progress)
    input_shape = recipe.resolved_input_shape(train)
    _check_generator_can_draw(input_shape)
    train = train.to_input_shape(input_shape)
    test = _load_split(recipe, "test", data_dir, progress).to_input_shape(input_shape)
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(recipe.seed)
    model = build_architecture(recipe.architecture, input_shape, train.num_classes,
                               **dict(recipe.architecture_options))
    preprocessing = Preprocessing(recipe.preprocessing_mode)
    backup_dir = training_backup_path(path)
    with _training_lock(path):
        epochs_done = claim_training_backup(path, recipe, data_dir)
        if epochs_done and progress:
            note(f"resuming the teacher's training after epoch {epochs_done} of {recipe.epochs}, from {backup_dir}")
        try:
            metrics = teacher_training.train_teacher(
                model, train, test, preprocessing, epochs=recipe.epochs, batch_size=recipe.batch_size,
                learning_rate=recipe.learning_rate, seed=recipe.seed, augment=recipe.augment, progress=progress,
                backup_dir=backup_dir)
        except teacher_training.InferenceModeGapError:
            # Its epochs would give the same refused teacher: a training with the advised settings starts anew,
            # where the backup of other settings refused it.
            shutil.rmtree(backup_dir, ignore_errors=True)
            raise
        teacher_training.save_teacher(model, path, preprocessing, recipe.dataset, train.class_names, metrics,
                                      data_dir=data_dir)
        shutil.rmtree(backup_dir, ignore_errors=True)
    return metrics


@contextlib.contextmanager
def _training_lock(teacher_path: str, on_wait: Optional[Callable[[str], None]] = None, advice: str = ""):
    """Holds the lock of `teacher_path`'s training (on its backup directory) for the block.

    Two processes training one teacher would restore each other's epochs. With `on_wait`,
    another process's training is waited for; without, it is refused. `advice` follows the
    refusal of a place that cannot be written.
    """
    backup_dir = training_backup_path(teacher_path)
    if os.path.islink(backup_dir):  # Its contents are removed when it starts again: another directory's.
        raise UserError(f"{backup_dir} is a symbolic link, where the training of {teacher_path!r} keeps its backup "
                        "in a directory of its own: remove the link")
    reason = files.unusable_directory_reason(backup_dir)
    if reason:
        raise UserError(f"cannot write the teacher {teacher_path!r}: {reason}{advice}")
    try:
        os.makedirs(backup_dir, exist_ok=True)
    except OSError as error:  # Writable to os.access, yet refused: /sys, /proc, a read-only mount as root.
        raise UserError(f"cannot write the teacher {teacher_path!r}: creating {backup_dir}: "
                        f"{error.strerror}{advice}") from error
    with files.exclusive_use(backup_dir, what="training of this teacher",
                             advice="wait for it to finish, then use the teacher it saves", on_wait=on_wait):
        yield


def training_backup_path(teacher_path: str) -> str:
    """The directory of `teacher_path`'s unfinished training: `<teacher_path>.training`."""
    return teacher_path + TRAINING_BACKUP_SUFFIX


def save_cut_short(teacher_path: str) -> bool:
    """Whether the teacher at `teacher_path` is a save cut short: its model file written (first)
    but not its sidecar, with its training's backup still there; training it again resumes
    from that backup and makes the save again."""
    return (os.path.isfile(teacher_path) and not os.path.exists(sidecar.path_of(teacher_path))
            and os.path.isdir(training_backup_path(teacher_path)))


def claim_training_backup(teacher_path: str, recipe: TeacherRecipe, data_dir: Optional[str]) -> int:
    """Readies `training_backup_path(teacher_path)` for a training of `recipe`; returns how
    many epochs a backup left there holds.

    A new directory records the recipe. A backup older than the teacher file and sidecar
    beside it is one whose teacher was saved, and it starts again; one older than a teacher
    file without its sidecar, whose save was cut short (`save_cut_short`), resumes, so
    that the save is made again without training again. One that holds another recipe's
    training is refused rather than resumed or overwritten: its epochs may be hours of work.

    Raises:
      UserError: if the backup belongs to an unfinished training of another recipe or data directory.
    """
    backup_dir = training_backup_path(teacher_path)
    wanted = json.loads(json.dumps({"recipe": dataclasses.asdict(recipe),
                                    "data_dir": os.path.abspath(data_dir) if data_dir else None}))
    recipe_path = os.path.join(backup_dir, BACKUP_RECIPE_FILE)
    recorded = files.read_json(recipe_path, None)
    # Keras' BackupAndRestore restores and deletes what the checkpoint state file names, wherever it is.
    training_loop.check_checkpoints_inside(
        os.path.join(backup_dir, BACKUP_CHECKPOINT_DIR), who="training",
        advice=f"if {backup_dir!r} comes from someone else, do not resume from it (removing it trains the teacher "
               "from its first epoch)")
    checkpoint = tf.train.latest_checkpoint(os.path.join(backup_dir, BACKUP_CHECKPOINT_DIR))
    saved_since = not save_cut_short(teacher_path) and os.path.exists(teacher_path) and os.path.exists(
        recipe_path) and os.path.getmtime(teacher_path) >= os.path.getmtime(recipe_path)
    if recorded is None or checkpoint is None or saved_since:  # Nothing to resume: (re)start it.
        os.makedirs(backup_dir, exist_ok=True)
        for name in os.listdir(backup_dir):
            if name != files.LOCK_FILE:  # Held by this process (`train_from_recipe`).
                entry = os.path.join(backup_dir, name)
                if os.path.isdir(entry):
                    shutil.rmtree(entry)
                else:
                    os.remove(entry)
        files.write_json_atomic(recipe_path, wanted)
        return 0
    if recorded != wanted:
        # Each with the value it was started with, which the advice asks for.
        was = {**recorded["recipe"], "data_dir": recorded.get("data_dir")}
        now = {**wanted["recipe"], "data_dir": wanted["data_dir"]}
        differences = [f"{key} ({was.get(key)}, now {now.get(key)})" for key in sorted(set(was) | set(now))
                       if was.get(key) != now.get(key)]
        raise UserError(f"{backup_dir} holds an unfinished training of this teacher with another "
                        f"{', '.join(differences)}; rerun with the settings it was started with to resume it, or "
                        "delete that directory to start again")
    # Keras records the index of the last epoch it saved.
    return int(tf.train.load_variable(checkpoint, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1


def _load_split(recipe: TeacherRecipe, split: str, data_dir: Optional[str], progress: bool) -> LabeledImages:
    """A split of the recipe's dataset; photographs of different sizes are cropped to their
    central part and resized to the recipe's image size as they load, as evaluation does."""
    try:
        return data.load_dataset(recipe.dataset, split, data_dir=data_dir)
    except MixedImageSizesError as error:
        height, width = recipe.input_shape[:2]
        if height is None or width is None:
            raise UserError(f"{error}; pass --image_size to crop and resize them") from None
        note(f"{recipe.dataset} {split}: images differ in size; each is cropped to its central "
             f"{CENTRAL_CROP_FRACTION:.1%} and resized to {height}x{width} as it loads")
        return data.load_dataset(recipe.dataset, split, data_dir=data_dir, image_size=(height, width),
                                 progress=progress)


def train_builtin_teacher(name: str, path: str, progress: bool = True,
                          data_dir: Optional[str] = None) -> TeacherMetrics:
    """Trains the built-in teacher `name` from scratch and saves it to `path`."""
    return train_from_recipe(builtin_recipe(name), path, progress=progress, data_dir=data_dir)


def ensure_builtin_teacher(name: str, cache_dir: Optional[str] = None, progress: bool = True) -> str:
    """The path of the built-in teacher `name`, training and caching it on first use.

    A teacher counts as cached when both its `.keras` file and its sidecar exist (the
    sidecar is written last).

    Args:
      name: a key of `BUILTIN_TEACHERS`.
      cache_dir: see `cache_directory`.
      progress: print training progress.

    Returns:
      The `.keras` path.

    Raises:
      UserError: for an unknown name.
    """
    path = builtin_teacher_path(name, cache_dir)
    if _is_saved(path):
        return path

    def waiting(holder):
        note(f"waiting for {holder or 'another process'}, which is training built-in teacher {name!r}")

    # Two runs started at once on an empty cache: the second waits and takes the first's teacher.
    cache_advice = (f"; set {CACHE_ENVIRONMENT_VARIABLE} to a writable directory to cache built-in teachers in "
                    "(train, tools/convert.py and tools/benchmark.py also take --teacher_cache_dir)")
    with _training_lock(path, on_wait=waiting, advice=cache_advice):
        if _is_saved(path):
            return path
        note(f"training built-in teacher {name!r} on first use; it will be cached at {path}")
        train_builtin_teacher(name, path, progress=progress)
    return path


def _is_saved(teacher_path: str) -> bool:
    """Whether a teacher is saved there: its `.keras` file and its sidecar (written last)."""
    return os.path.isfile(teacher_path) and os.path.isfile(sidecar.path_of(teacher_path))
