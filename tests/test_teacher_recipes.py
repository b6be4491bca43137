"""Tests for zscgan_tf.teacher_recipes and tools/train_teacher.py: built-in teachers trained once and cached,
a stopped training resumed after its last epoch, one training of a teacher at a time."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

from zscgan_tf import data, files, sidecar, teacher_recipes, teacher_training
from zscgan_tf.errors import InUseError, UserError
from zscgan_tf.preprocessing import Preprocessing

from conftest import build_tiny_classifier, lock_held_by_another_process
from tool_process import ToolProcess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RECIPE = teacher_recipes.TeacherRecipe(
    dataset="digits", architecture="resnet8", input_shape=(8, 8, 1), epochs=1, batch_size=64,
    learning_rate=3e-3, architecture_options=(("base_width", 4),))


def _forbid_training(monkeypatch, why: str) -> None:
    def must_not_train(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr(teacher_training, "train_teacher", must_not_train)


def _made_backup_dir(teacher_path: str) -> str:
    backup_dir = teacher_recipes.training_backup_path(teacher_path)
    os.makedirs(backup_dir)
    return backup_dir


def test_ensure_builtin_teacher_trains_once_then_reuses(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(teacher_recipes, "BUILTIN_TEACHERS", {"tiny_digits": TINY_RECIPE})
    monkeypatch.setenv(teacher_recipes.CACHE_ENVIRONMENT_VARIABLE, str(tmp_path))

    path = teacher_recipes.ensure_builtin_teacher("tiny_digits", progress=False)

    assert path == str(tmp_path / "tiny_digits.keras")
    assert os.path.isfile(path) and os.path.isfile(path + ".json")
    assert "training built-in teacher 'tiny_digits' on first use" in capsys.readouterr().err
    modified = os.path.getmtime(path)

    _forbid_training(monkeypatch, "the cached teacher was trained again")
    assert teacher_recipes.ensure_builtin_teacher("tiny_digits", progress=False) == path
    assert os.path.getmtime(path) == modified
    assert "training" not in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown built-in teacher 'nope'; known: tiny_digits"):
        teacher_recipes.ensure_builtin_teacher("nope")


def test_images_smaller_than_a_generator_draws_are_refused_before_training(tmp_path, monkeypatch):
    # A teacher of 2x2 images trained, and `zscgan_tf.train` then refused it for its generator.
    with pytest.raises(UserError, match="^images of 2x8 pixels are too small for a teacher to quantize: its "
                                        "generator draws at least 4x4 \\(--image_size resizes them\\)$"):
        dataclasses.replace(TINY_RECIPE, input_shape=(2, 8, 1))
    # Images of 3x3 kept at their size (no --image_size): refused once their size is known.
    folder = tmp_path / "tiny_images"
    for split in ("train", "test"):
        for label in ("a", "b"):
            os.makedirs(folder / split / label)
            pixels = np.full((3, 3), 200 if label == "a" else 50, np.uint8)
            Image.fromarray(pixels).save(folder / split / label / "0.png")
    _forbid_training(monkeypatch, "trained a teacher of images its generator cannot draw")
    native_size = dataclasses.replace(TINY_RECIPE, dataset=str(folder), input_shape=(None, None, 1))
    with pytest.raises(UserError, match="^images of 3x3 pixels are too small"):
        teacher_recipes.train_from_recipe(native_size, str(tmp_path / "teacher.keras"), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["tiny_images"]


def test_a_cache_that_cannot_be_written_says_how_to_choose_another(monkeypatch):
    # Before, it said only that the place was not writable.
    monkeypatch.setattr(teacher_recipes, "BUILTIN_TEACHERS", {"tiny_digits": TINY_RECIPE})
    _forbid_training(monkeypatch, "trained without a place to save the teacher")
    with pytest.raises(UserError) as raised:
        teacher_recipes.ensure_builtin_teacher("tiny_digits", cache_dir="/proc/zscgan_tf_cache", progress=False)
    assert str(raised.value).startswith("cannot write the teacher '/proc/zscgan_tf_cache/tiny_digits.keras': ")
    assert str(raised.value).endswith(f"; set {teacher_recipes.CACHE_ENVIRONMENT_VARIABLE} to a writable directory "
                                      "to cache built-in teachers in (train, tools/convert.py and tools/benchmark.py "
                                      "also take --teacher_cache_dir)")


class _StopAfterSecondEpoch(tf_keras.callbacks.BackupAndRestore):
    """Keras's backup, then Ctrl-C as the second epoch ends."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_teacher_training_resumes_after_its_last_epoch(tmp_path, monkeypatch, capfd):
    recipe = dataclasses.replace(TINY_RECIPE, epochs=4)
    path = str(tmp_path / "teacher.keras")
    backup_dir = teacher_recipes.training_backup_path(path)
    monkeypatch.setattr(tf_keras.callbacks, "BackupAndRestore", _StopAfterSecondEpoch)
    with pytest.raises(KeyboardInterrupt):
        teacher_recipes.train_from_recipe(recipe, path, progress=True)
    assert not os.path.exists(path)
    assert {"chief", "recipe.json"} <= set(os.listdir(backup_dir))
    first_two = json.loads(pathlib.Path(backup_dir, "wall_time.json").read_text())
    assert first_two["step"] == 2 and first_two["seconds"] > 0
    monkeypatch.undo()
    capfd.readouterr()

    resumed = time.monotonic()
    metrics = teacher_recipes.train_from_recipe(recipe, path, progress=True)
    this_process = time.monotonic() - resumed
    printed = capfd.readouterr().err
    assert f"resuming the teacher's training after epoch 2 of 4, from {backup_dir}" in printed
    assert "epoch 1/4" not in printed and "epoch 2/4" not in printed
    assert "epoch 3/4: loss " in printed and "epoch 4/4: loss " in printed
    assert metrics.epochs == 4 and os.path.isfile(path) and os.path.isfile(path + ".json")
    # Its time counts both processes, as its epochs do (it was the last process's only).
    assert first_two["seconds"] < metrics.wall_seconds <= first_two["seconds"] + this_process
    assert not os.path.exists(backup_dir)  # Gone once the teacher is saved.


def test_a_save_cut_short_between_model_and_sidecar_is_made_again_without_training_again(tmp_path, monkeypatch,
                                                                                         capfd):
    recipe = dataclasses.replace(TINY_RECIPE, epochs=2)
    path = str(tmp_path / "teacher.keras")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # As a kill after the model file is written, before its sidecar.

    monkeypatch.setattr(sidecar, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        teacher_recipes.train_from_recipe(recipe, path, progress=True)
    monkeypatch.undo()
    assert os.path.isfile(path) and not os.path.exists(path + ".json")
    assert teacher_recipes.save_cut_short(path)  # `tools/train_teacher.py` trains it again, not "exists".
    capfd.readouterr()

    metrics = teacher_recipes.train_from_recipe(recipe, path, progress=True)
    printed = capfd.readouterr().err
    assert "resuming the teacher's training after epoch 2 of 2" in printed and "epoch 1/2" not in printed
    assert metrics.epochs == 2 and json.loads(pathlib.Path(path + ".json").read_text())["metrics"]["epochs"] == 2
    assert not teacher_recipes.save_cut_short(path)
    assert not os.path.exists(teacher_recipes.training_backup_path(path))


def test_a_backup_of_another_recipe_is_refused_and_a_finished_ones_starts_again(tmp_path, monkeypatch):
    recipe = dataclasses.replace(TINY_RECIPE, epochs=3)
    path = str(tmp_path / "teacher.keras")
    monkeypatch.setattr(tf_keras.callbacks, "BackupAndRestore", _StopAfterSecondEpoch)
    with pytest.raises(KeyboardInterrupt):
        teacher_recipes.train_from_recipe(recipe, path, progress=False)
    monkeypatch.undo()
    backup_dir = teacher_recipes.training_backup_path(path)
    other = dataclasses.replace(recipe, epochs=5, learning_rate=1e-3)
    with pytest.raises(UserError, match=re.escape(
            f"{backup_dir} holds an unfinished training of this teacher with another epochs ({recipe.epochs}, now 5), "
            f"learning_rate ({recipe.learning_rate}, now 0.001); rerun with the settings it was started with")):
        teacher_recipes.claim_training_backup(path, other, None)
    with pytest.raises(UserError, match="another data_dir"):
        teacher_recipes.claim_training_backup(path, recipe, str(tmp_path))
    assert teacher_recipes.claim_training_backup(path, recipe, None) == 2
    # A teacher saved after the backup was made (its model, then its sidecar) means that training
    # finished: it starts again.
    pathlib.Path(path).write_bytes(b"a teacher saved after the backup")
    pathlib.Path(path + ".json").write_text("{}")
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert teacher_recipes.claim_training_backup(path, other, None) == 0
    assert set(os.listdir(backup_dir)) - {files.LOCK_FILE} == {"recipe.json"}


def test_a_teacher_refused_for_its_statistics_leaves_no_backup_to_refuse_the_advised_rerun(tmp_path, monkeypatch):
    # The refusal advised more epochs; the backup it left then refused that ("another epochs (1, now 2)").
    path = str(tmp_path / "teacher.keras")

    def refuse(metrics, maximum_gap):
        raise teacher_training.InferenceModeGapError("its inference-mode accuracy trails")

    monkeypatch.setattr(teacher_training, "check_inference_mode_accuracy", refuse)
    with pytest.raises(teacher_training.InferenceModeGapError):
        teacher_recipes.train_from_recipe(TINY_RECIPE, path, progress=False)
    assert not os.path.exists(teacher_recipes.training_backup_path(path)) and not os.path.exists(path)
    monkeypatch.undo()
    teacher_recipes.train_from_recipe(dataclasses.replace(TINY_RECIPE, epochs=TINY_RECIPE.epochs + 1), path,
                                      progress=False)
    assert os.path.exists(path) and not os.path.exists(teacher_recipes.training_backup_path(path))


def test_a_backup_from_someone_else_neither_restores_nor_deletes_files_elsewhere(tmp_path, monkeypatch):
    # Keras' BackupAndRestore read the weights of, then deleted, checkpoints its state file named anywhere; and a
    # backup directory that was a link had its target emptied when the training started again.
    path = str(tmp_path / "teacher.keras")
    monkeypatch.setattr(tf_keras.callbacks, "BackupAndRestore", _StopAfterSecondEpoch)
    with pytest.raises(KeyboardInterrupt):
        teacher_recipes.train_from_recipe(dataclasses.replace(TINY_RECIPE, epochs=3), path, progress=False)
    monkeypatch.undo()
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001", "notes.txt"):
        (elsewhere / name).write_text("mine")
    state_file = pathlib.Path(teacher_recipes.training_backup_path(path)) / "chief" / "checkpoint"
    state_file.write_text(f'model_checkpoint_path: "{elsewhere / "ckpt-1"}"\n'
                          f'all_model_checkpoint_paths: "{elsewhere / "ckpt-1"}"\n')
    backup_dir = teacher_recipes.training_backup_path(path)
    with pytest.raises(UserError) as refusal:
        teacher_recipes.claim_training_backup(path, dataclasses.replace(TINY_RECIPE, epochs=3), None)
    assert str(refusal.value) == (
        f"{state_file} names a checkpoint outside its directory ({elsewhere / 'ckpt-1'}), which a training would "
        f"delete in turn as it saves its own; a training names only its own: if {backup_dir!r} comes from someone "
        "else, do not resume from it (removing it trains the teacher from its first epoch)")
    linked = str(tmp_path / "linked.keras")
    os.symlink(elsewhere, teacher_recipes.training_backup_path(linked))
    with pytest.raises(UserError, match=re.escape(
            f"{linked}.training is a symbolic link, where the training of {linked!r} keeps its backup in a directory "
            "of its own: remove the link")):
        teacher_recipes.train_from_recipe(TINY_RECIPE, linked, progress=False)
    assert sorted(os.listdir(elsewhere)) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index", "notes.txt"]


def test_a_teacher_in_training_elsewhere_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "teacher.keras")
    backup_dir = _made_backup_dir(path)
    _forbid_training(monkeypatch, "trained while another process trains the same teacher")
    with lock_held_by_another_process(backup_dir, what="training of this teacher") as other:
        with pytest.raises(InUseError, match=re.escape(  # Exit status 75 in train_teacher.py: retry later.
                f"{backup_dir!r} is in use by another training of this teacher (process {other.pid}); wait for it to "
                "finish, then use the teacher it saves")):
            teacher_recipes.train_from_recipe(TINY_RECIPE, path, progress=False)
    assert not os.path.exists(path)


def test_a_builtin_teacher_in_training_elsewhere_is_waited_for_and_taken(tmp_path, monkeypatch, capsys):
    # Two runs started at once on an empty cache: the second takes the teacher the first trains.
    monkeypatch.setattr(teacher_recipes, "BUILTIN_TEACHERS", {"tiny_digits": TINY_RECIPE})
    monkeypatch.setenv(teacher_recipes.CACHE_ENVIRONMENT_VARIABLE, str(tmp_path))
    path = teacher_recipes.builtin_teacher_path("tiny_digits")
    backup_dir = _made_backup_dir(path)
    _forbid_training(monkeypatch, "the teacher another process trained was trained again")
    # The other process saves the teacher once ensure_builtin_teacher says it waits for it: it slept 2 s for
    # that, which a slow machine could outlast.
    waiting = threading.Event()
    say = teacher_recipes.note

    def note(message):
        say(message)
        if message.startswith("waiting for "):
            waiting.set()

    monkeypatch.setattr(teacher_recipes, "note", note)
    with lock_held_by_another_process(backup_dir, what="training of this teacher") as other:
        def the_other_saves_it_and_ends():
            waiting.wait(timeout=120)
            teacher_training.save_teacher(build_tiny_classifier(), path, Preprocessing("tf"), "digits", [], None)
            shutil.rmtree(backup_dir)  # As train_from_recipe does before it lets go.
            other.stdin.close()

        the_other = threading.Thread(target=the_other_saves_it_and_ends)
        the_other.start()
        assert teacher_recipes.ensure_builtin_teacher("tiny_digits", progress=False) == path
        the_other.join()
    assert waiting.is_set()
    assert f"waiting for process {other.pid}, which is training built-in teacher 'tiny_digits'" in (
        capsys.readouterr().err)


def test_builtin_recipes_are_consistent():
    for name, recipe in teacher_recipes.BUILTIN_TEACHERS.items():
        assert recipe.preprocessing_mode == "tf", name
        assert None not in recipe.input_shape, name
    assert teacher_recipes.cache_directory("/x/y") == "/x/y"


def _run_tool(*arguments, environment=None):
    return subprocess.run([sys.executable, os.path.join("tools", "train_teacher.py"), *arguments],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False, env=environment)


@pytest.fixture(scope="module")
def train_teacher_tool():
    """`tools/train_teacher.py *arguments`, run in the module's one tool process (the first
    test below starts it as a script too)."""
    with ToolProcess("train_teacher") as process:
        yield process


def test_tool_answers_with_a_cached_builtin_teacher_and_refuses_recipe_flags_beside_builtin(tmp_path,
                                                                                            train_teacher_tool):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = teacher_recipes.builtin_teacher_path("digits_resnet8", str(cache))
    metrics = teacher_training.TeacherMetrics(train_accuracy=0.99, test_accuracy=0.97, test_accuracy_training_mode=0.96,
                                              epochs=3, wall_seconds=10.0)
    teacher_training.save_teacher(build_tiny_classifier(), path, Preprocessing("tf"), "digits", list("abcd"), metrics)
    environment = {**os.environ, teacher_recipes.CACHE_ENVIRONMENT_VARIABLE: str(cache)}
    result = _run_tool("--builtin=digits_resnet8", environment=environment)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["teacher"] == path and printed["already_trained"] is True and printed["test_accuracy"] == 0.97
    for arguments, message in (
            (["--builtin=digits_resnet8", "--epochs=1", "--dataset=digits"],
             "--builtin takes its own recipe; drop --dataset, --epochs"),
            (["--builtin=no_such_teacher"], "unknown built-in teacher 'no_such_teacher'; known: "),
            (["--architecture=resnet8"], "pass --builtin=<name>, or --architecture, --dataset and --output")):
        result = train_teacher_tool(*arguments)  # Refused before any cache is read.
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")


def test_tool_reports_bad_input_as_one_line(tmp_path, train_teacher_tool):
    result = train_teacher_tool("--architecture=resnet8", "--dataset=no_such_dataset", "--output=/tmp/never.keras")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: unknown dataset 'no_such_dataset'; expected digits, fashion_mnist, tfds:<name> or an existing directory")
    result = train_teacher_tool("--no_such_flag")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: Unknown command line flag 'no_such_flag'"
    # A recipe carries no mean and std: before, custom was taken and then always failed for want of them.
    result = train_teacher_tool("--architecture=resnet8", "--dataset=digits", "--preprocessing=custom",
                                "--output=/tmp/x.keras")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: flag --preprocessing=custom: value should be one of <tf|caffe|torch|raw>")
    result = train_teacher_tool("--architecture=mobilenet_v2", "--dataset=digits", "--epochs=1",
                                f"--output={tmp_path / 'small.keras'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == ("error: MobileNetV2 needs inputs of at least 32x32, got 8x8; "
                                                      "pass --image_size=32 (or more) to resize the images")
    # A directory, even with --overwrite, is refused before training, not when the model is saved.
    directory = tmp_path / "teacher.keras"
    directory.mkdir()
    result = train_teacher_tool("--architecture=resnet8", "--dataset=digits", "--overwrite", "--epochs=1",
                                f"--output={directory}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: --output '{directory}' is a directory; name the .keras "
                                                      "file to write")
    assert os.listdir(tmp_path) == ["teacher.keras"]  # No training backup beside it: refused before training.
    # A place the access check allows but the kernel refuses (as root too): it was a PermissionError traceback.
    result = train_teacher_tool("--architecture=resnet8", "--dataset=digits", "--epochs=1",
                                "--output=/proc/zscgan_tf.keras")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: cannot write the teacher '/proc/zscgan_tf.keras': creating /proc/zscgan_tf.keras.training: ")


def test_tool_trains_a_custom_teacher_and_refuses_to_overwrite_it(tmp_path, train_teacher_tool):
    output = str(tmp_path / "custom.keras")
    arguments = ["--architecture=resnet8", "--base_width=4", "--dataset=digits", "--epochs=1", f"--output={output}"]
    result = train_teacher_tool(*arguments)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["teacher"] == output and printed["epochs"] == 1 and 0 <= printed["test_accuracy"] <= 1
    assert printed["already_trained"] is False  # The key was absent: a script had to use .get().
    assert tf_keras.models.load_model(output, compile=False).input_shape == (None, 8, 8, 1)
    result = train_teacher_tool(*arguments)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {output} exists; pass --overwrite to replace it"


def test_a_teacher_trained_on_a_folder_is_evaluated_on_it_from_anywhere(tmp_path, monkeypatch):
    from PIL import Image

    from zscgan_tf import config as config_lib, evaluation_stage, teachers

    digits = {split: data.load_digits(split).take(200) for split in data.SPLITS}
    for split, dataset in digits.items():
        for index, (pixels, label) in enumerate(zip(dataset.images, dataset.labels)):
            os.makedirs(tmp_path / "digit_pngs" / split / str(label), exist_ok=True)
            Image.fromarray(pixels[..., 0]).save(tmp_path / "digit_pngs" / split / str(label) / f"{index}.png")
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "folder_teacher.keras")
    recorded_recipes, write_json_atomic = [], files.write_json_atomic

    def recording(json_path, values):
        if json_path.endswith(teacher_recipes.BACKUP_RECIPE_FILE):
            recorded_recipes.append(values["recipe"]["dataset"])
        write_json_atomic(json_path, values)

    monkeypatch.setattr(teacher_recipes.files, "write_json_atomic", recording)
    teacher_recipes.train_from_recipe(dataclasses.replace(TINY_RECIPE, dataset="digit_pngs"), path, progress=False)
    with open(path + ".json") as sidecar:
        assert json.load(sidecar)["dataset"] == str(tmp_path / "digit_pngs")  # Not "digit_pngs", found only here.
    # So does the backup's recipe, which a training resumed from another directory checks its data against: it read
    # another folder called digit_pngs there, or refused this one named otherwise.
    assert recorded_recipes == [str(tmp_path / "digit_pngs")]

    monkeypatch.chdir(REPO_ROOT)
    teacher = teachers.load_teacher(teachers.TeacherSource(model=path), progress=False)
    dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(), teacher)

    assert dataset.name == "digit_pngs" and len(dataset) == 200
    assert sorted(np.bincount(dataset.labels)) == sorted(np.bincount(digits["test"].labels))


def test_a_teacher_is_trained_and_evaluated_on_photographs_of_different_sizes_at_its_image_size(tmp_path):
    from PIL import Image

    from zscgan_tf import config as config_lib, evaluation_stage, teachers

    rng = np.random.default_rng(0)
    for split in data.SPLITS:
        for label in range(3):
            os.makedirs(tmp_path / "photos" / split / f"class_{label}")
            for index in range(4):
                height, width = rng.integers(10, 30, size=2)
                Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                    tmp_path / "photos" / split / f"class_{label}" / f"{index}.jpg")
    recipe = dataclasses.replace(TINY_RECIPE, dataset=str(tmp_path / "photos"), input_shape=(None, None, 1))
    path = str(tmp_path / "photo_teacher.keras")
    with pytest.raises(UserError, match=r"differ in size: .*; pass --image_size to crop and resize them$"):
        teacher_recipes.train_from_recipe(recipe, path, progress=False)

    recipe = dataclasses.replace(recipe, input_shape=(8, 8, 1))
    teacher_recipes.train_from_recipe(recipe, path, progress=False)

    teacher = teachers.load_teacher(teachers.TeacherSource(model=path), progress=False)
    assert teacher.image_shape == (8, 8, 1)
    # Its own photographs, cropped and resized as for training, with no --eval_resize.
    dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(), teacher)
    assert dataset.images.shape == (12, 8, 8, 1)


def test_a_cache_directory_goes_up_from_a_symbolic_link_where_the_system_goes(tmp_path, monkeypatch):
    # $ZSCGAN_TF_CACHE=<dir>/link/../cache found the teacher there and loaded it from <dir>/cache, which TensorFlow
    # took "link/.." to mean: "No such file or directory"; a program's cache_dir "~/link/../cache" became "~/cache".
    (tmp_path / "disk" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "disk" / "sub", tmp_path / "link")
    monkeypatch.setenv(teacher_recipes.CACHE_ENVIRONMENT_VARIABLE, str(tmp_path / "link" / ".." / "cache"))
    assert teacher_recipes.cache_directory() == str(tmp_path / "disk" / "cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    source = zscgan_tf.TeacherSource(cache_dir="~/link/../cache")
    assert source.portable().cache_dir == teacher_recipes.cache_directory(source.cache_dir) == str(
        tmp_path / "disk" / "cache")
