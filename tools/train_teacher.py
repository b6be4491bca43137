r"""Trains a small batch-normalized teacher to quantize: a built-in recipe or your own.

Built-in teacher into the default cache (~/.cache/zscgan_tf/teachers, or $ZSCGAN_TF_CACHE):

  python tools/train_teacher.py --builtin=fashion_mnist_resnet20

Your own:

  python tools/train_teacher.py --architecture=resnet14 --dataset=/data/my_idx_dir \
      --image_size=32 --channels=1 --epochs=10 --output=/tmp/teacher.keras

Prints the teacher's path and metrics as one JSON object. Bad input prints one
`error: ...` line and exits with status 2; a teacher another process is training, with 75.
Every epoch ends with a checkpoint in
`<output>.training/`: after Ctrl-C (status 130), SIGTERM (143), a terminal's hangup
(SIGHUP, 129) or a crash, the same command goes on after the last finished epoch.
"""

import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import zscgan_tf  # pylint: disable=unused-import,wrong-import-position  (sets TF_USE_LEGACY_KERAS first)
from absl import flags  # pylint: disable=wrong-import-position

from zscgan_tf import architectures, cli, sidecar, teacher_recipes  # pylint: disable=wrong-import-position
from zscgan_tf.errors import UserError  # pylint: disable=wrong-import-position
from zscgan_tf.preprocessing import MODES as PREPROCESSING_MODES  # pylint: disable=wrong-import-position

DEFAULT_RECIPE = teacher_recipes.TeacherRecipe(dataset="digits", architecture="resnet8")

FLAGS = flags.FLAGS
flags.DEFINE_string("builtin", None, f"a built-in teacher: {', '.join(sorted(teacher_recipes.BUILTIN_TEACHERS))}")
flags.DEFINE_string("output", None, "the .keras file to write (default for --builtin: the teacher cache)")
flags.DEFINE_bool("overwrite", False, "replace an existing --output (or cached built-in teacher)")
flags.DEFINE_string("architecture", None, f"one of {', '.join(sorted(architectures.ARCHITECTURES))}")
flags.DEFINE_string("dataset", None, "digits, fashion_mnist, tfds:<name>, or a directory (IDX files or class folders)")
flags.DEFINE_string("data_dir", None, "IDX or TFDS data directory")
flags.DEFINE_integer("image_size", None, "resize images to this square size, at least 4 (default: keep); "
                     "photographs of different sizes are cropped to their central 87.5% first")
flags.DEFINE_integer("channels", None, "convert images to 1 or 3 channels (default: keep)")
flags.DEFINE_integer("epochs", DEFAULT_RECIPE.epochs, "training epochs")
flags.DEFINE_integer("batch_size", DEFAULT_RECIPE.batch_size, "training batch size")
flags.DEFINE_float("learning_rate", DEFAULT_RECIPE.learning_rate, "initial Adam learning rate (cosine decay)")
flags.DEFINE_integer("seed", DEFAULT_RECIPE.seed, "weight initialization and shuffling seed")
# `custom` needs a mean and a std, which a recipe does not carry.
flags.DEFINE_enum("preprocessing", DEFAULT_RECIPE.preprocessing_mode,
                  [mode for mode in PREPROCESSING_MODES if mode != "custom"],
                  "how the teacher reads pixels 0 to 255 (recorded in its sidecar): tf (x / 127.5 - 1), raw, torch "
                  "or caffe")
flags.DEFINE_bool("augment", DEFAULT_RECIPE.augment, "random translations during training")
flags.DEFINE_integer("base_width", None, "ResNet first-stage width (default: the builder's)")
flags.DEFINE_float("alpha", None, "MobileNet width multiplier (default: the builder's)")
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")

# Recipe flags: a built-in teacher has its own recipe, so these are refused with --builtin.
RECIPE_FLAGS = ("architecture", "dataset", "image_size", "channels", "epochs", "batch_size", "learning_rate",
                "seed", "preprocessing", "augment", "base_width", "alpha")


def _custom_recipe() -> teacher_recipes.TeacherRecipe:
    if FLAGS.architecture is None or FLAGS.dataset is None:
        raise UserError("pass --builtin=<name>, or --architecture, --dataset and --output")
    if FLAGS.output is None:
        raise UserError("--output is required when training your own teacher")
    options = []
    if FLAGS.base_width is not None:
        options.append(("base_width", FLAGS.base_width))
    if FLAGS.alpha is not None:
        options.append(("alpha", FLAGS.alpha))
    return teacher_recipes.TeacherRecipe(
        dataset=FLAGS.dataset, architecture=FLAGS.architecture,
        input_shape=(FLAGS.image_size, FLAGS.image_size, FLAGS.channels), epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, preprocessing_mode=FLAGS.preprocessing,
        architecture_options=tuple(options), augment=FLAGS.augment, seed=FLAGS.seed)


def run() -> dict:
    """Trains (or finds) the teacher the flags ask for; returns its path and metrics."""
    if FLAGS.builtin is not None:
        given = [name for name in RECIPE_FLAGS if FLAGS[name].present]
        if given:
            raise UserError(f"--builtin takes its own recipe; drop --{', --'.join(given)}")
        recipe = teacher_recipes.builtin_recipe(FLAGS.builtin)
        path = FLAGS.output or teacher_recipes.builtin_teacher_path(FLAGS.builtin)
    else:
        recipe = _custom_recipe()
        path = FLAGS.output
    if os.path.isdir(path):  # --overwrite replaces a model file, not a directory.
        raise UserError(f"--output {path!r} is a directory; name the .keras file to write")
    # A save cut short (a model file without its sidecar, beside its training's backup) is finished.
    if os.path.exists(path) and not FLAGS.overwrite and not teacher_recipes.save_cut_short(path):
        if FLAGS.builtin is not None and FLAGS.output is None:
            description = sidecar.read(path)
            return {"teacher": path, "already_trained": True, **description.get("metrics", {})}
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    try:
        metrics = teacher_recipes.train_from_recipe(recipe, path, progress=True, data_dir=FLAGS.data_dir)
    except architectures.InputTooSmallError as error:  # It did not say which flag resizes them.
        raise UserError(f"{error}; pass --image_size={error.minimum} (or more) to resize the images") from error
    return {"teacher": path, "already_trained": False, **metrics.to_dict()}


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    return cli.run_command(FLAGS, argv, lambda: print(json.dumps(run(), indent=2)))


if __name__ == "__main__":
    sys.exit(main())
