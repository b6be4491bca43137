"""tools/convert.py as users run it: its `main` in a process of its own.

One test starts `python tools/convert.py` itself; the others share one process
(tests/tool_process.py), which calls `main` afresh for each, to save TensorFlow's start-up.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tool_process import ToolProcess
from zscgan_tf import files, run_state, tflite_model, train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _convert_in_a_new_process(*arguments):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "convert.py"), *arguments],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run: teacher file, generator, QAT student and checkpoints."""
    from zscgan_tf import teacher_training
    from zscgan_tf.preprocessing import Preprocessing
    from conftest import build_tiny_classifier
    root = tmp_path_factory.mktemp("convert")
    teacher_path = str(root / "teacher.keras")
    teacher_training.save_teacher(build_tiny_classifier(), teacher_path, Preprocessing("tf"), "synthetic",
                                  ["a", "b", "c", "d"], None)
    work_dir = root / "run"
    assert _tiny_run(teacher_path, work_dir) == 0
    return work_dir, teacher_path


@pytest.fixture(scope="module")
def convert():
    """`tools/convert.py *arguments`, run in the module's one tool process."""
    with ToolProcess("convert") as process:
        yield process


def _tiny_run(teacher_path, work_dir, eval_dataset="none", *flags) -> int:
    """The pipeline's exit status on a tiny run of `teacher_path` in `work_dir`."""
    return train.main(["train", f"--teacher={teacher_path}", f"--work_dir={work_dir}", "--generator_steps=3",
                       "--batch_size=16", "--noise_dim=8", "--generator_channels=8", "--distillation_steps=2",
                       "--distillation_batch_size=8", "--distillation_checkpoint_every=1",
                       "--calibration_samples=16", "--eval_samples_per_class=2", "--latency_runs=1",
                       f"--eval_dataset={eval_dataset}", "--noprogress", *flags])


def _model_report(path):
    with open(path, "rb") as model_file:
        return tflite_model.inspect_tflite(model_file.read())


def test_run_student_exports_fully_integer(run_dir, tmp_path):
    work_dir, _ = run_dir
    output = tmp_path / "student.tflite"
    result = _convert_in_a_new_process(f"--run_dir={work_dir}", f"--output={output}", "--calibration_samples=16")
    assert result.returncode == 0, result.stderr
    assert "fully integer: yes" in result.stdout and "Edge TPU" in result.stdout
    assert "- from uint8 pixels: int8 input = " in result.stdout  # How a device feeds it camera pixels.
    # Said before the conversion, which said nothing until it was written (50 s for 10,000 samples).
    assert (f"converting student {work_dir / 'student.h5'} to int8 TFLite with 16 calibration samples\nwrote "
            f"{output} (") in result.stdout
    report = _model_report(output)
    assert report.is_fully_integer and report.has_static_batch_one
    assert [tensor.dtype for tensor in report.inputs + report.outputs] == ["int8", "int8"]
    # The teacher's class names beside it, as a device app reads a labels file.
    assert (tmp_path / "student_labels.txt").read_text() == "a\nb\nc\nd\n"
    assert f"- labels: {tmp_path / 'student_labels.txt'}, the teacher's 4 class names" in result.stdout


def test_a_runs_student_with_a_layer_left_float_converts_as_the_run_converted_it(tmp_path, convert):
    from conftest import build_two_block_classifier
    teacher_path = str(tmp_path / "elu_teacher.keras")
    build_two_block_classifier(extra_layer="elu").save(teacher_path)
    work_dir = tmp_path / "run"
    assert _tiny_run(teacher_path, work_dir, "none", "--allow_float_ops", "--io_dtype=uint8") == 0
    output = tmp_path / "student.tflite"
    result = convert(f"--run_dir={work_dir}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    # The ranges after the ELU come from calibration samples: the run's (its seed and count) give the
    # run's file. (Other samples changed the last bits of two scales of a Fashion-MNIST ELU CNN.) Its
    # --allow_float_ops and --io_dtype are the run's too.
    assert output.read_bytes() == (work_dir / "qat_int8.tflite").read_bytes()
    assert [tensor.dtype for tensor in _model_report(output).inputs] == ["uint8"]
    # Flags given say otherwise.
    result = convert(f"--run_dir={work_dir}", f"--output={output}", "--io_dtype=int8")
    assert result.returncode == 0, result.stderr
    assert [tensor.dtype for tensor in _model_report(output).inputs] == ["int8"]
    result = convert(f"--run_dir={work_dir}", f"--output={tmp_path / 'refused.tflite'}", "--noallow_float_ops")
    assert result.returncode == 2 and "Pass --allow_float_ops to keep these ops float" in result.stderr


def test_qat_checkpoint_exports_when_the_student_file_is_missing(run_dir, tmp_path, convert):
    work_dir, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(work_dir, copy)
    os.remove(copy / "student.h5")
    output = tmp_path / "from_checkpoint.tflite"
    result = convert(f"--run_dir={copy}", f"--output={output}", "--calibration_samples=16", "--io_dtype=uint8")
    assert result.returncode == 0, result.stderr
    assert "QAT checkpoint" in result.stdout and "- from uint8 pixels: uint8 input = " in result.stdout
    assert [tensor.dtype for tensor in _model_report(output).inputs] == ["uint8"]
    assert "has not finished" not in result.stdout  # Its checkpoint is at the run's last step.
    # A run stopped before its last QAT step: the export says so (it said only "QAT checkpoint").
    (copy / "distillation" / "checkpoints" / "checkpoint").write_text(
        (copy / "distillation" / "checkpoints" / "checkpoint").read_text().replace("ckpt-2", "ckpt-1"))
    result = convert(f"--run_dir={copy}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert ("note: exporting the QAT checkpoint at step 1 of the run's 2: its distillation has not finished; rerun "
            "it to finish, then convert again") in result.stdout


def test_a_run_without_qat_says_where_its_int8_model_is_and_how_to_convert_it_again(run_dir, tmp_path, convert):
    work_dir, teacher_path = run_dir
    copy = tmp_path / "run"
    shutil.copytree(work_dir, copy)
    # As a run with --distillation_steps=0 leaves it: no student, no QAT checkpoints.
    for name in ("student.h5", "qat_int8.tflite"):
        (copy / name).unlink()
    shutil.rmtree(copy / "distillation")
    for name in ("config.json", "state.json"):
        saved = json.loads((copy / name).read_text())
        if name == "config.json":
            saved["distillation"]["steps"] = 0
        else:
            del saved["distillation"]
        (copy / name).write_text(json.dumps(saved))
    output = tmp_path / "converted.tflite"
    (copy / ".lock").write_text("the run's last holder")
    result = convert(f"--run_dir={copy}", f"--output={output}")
    assert (copy / ".lock").read_text() == "the run's last holder"  # Refused before the lock, as flags are.
    # Before: "no QAT checkpoint in ...; run the distillation stage first", and no command runs that stage alone.
    prefix = (f"error: the run in {str(copy)!r} trained no QAT student (--distillation_steps=0): its int8 model is "
              f"{copy / 'ptq_int8.tflite'}, the teacher quantized after training; to convert it again, pass ")
    suffix = "; for a student, rerun the run with --distillation_steps=<N>"
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and line.startswith(prefix) and line.endswith(suffix), line
    advised = line[len(prefix):-len(suffix)].split(" ")
    assert advised[0] == f"--teacher={teacher_path}" and f"--generator={copy / 'generator.keras'}" in advised
    result = convert(*advised, f"--output={output}")
    assert result.returncode == 0, result.stderr
    # The run's own file again: the teacher and generator alone gave another (500 samples, seed 0, its defaults).
    assert output.read_bytes() == (copy / "ptq_int8.tflite").read_bytes()


def test_a_damaged_student_file_is_passed_over_for_the_qat_checkpoint_or_is_one_line(run_dir, tmp_path, convert):
    work_dir, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(work_dir, copy)
    whole = (work_dir / "student.h5").read_bytes()
    (copy / "student.h5").write_bytes(whole[:len(whole) // 2])
    output = tmp_path / "from_checkpoint.tflite"
    # Before: "OSError: Unable to synchronously open file (truncated file ...)" and a traceback.
    result = convert(f"--run_dir={copy}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert (f"note: {copy / 'student.h5'} is not the student the run saved (damaged?); exporting its QAT checkpoint "
            "instead (rerunning the pipeline rebuilds the file)") in result.stdout
    assert output.read_bytes() == (work_dir / "qat_int8.tflite").read_bytes()
    shutil.rmtree(copy / "distillation")  # Nothing to fall back on.
    result = convert(f"--run_dir={copy}", f"--output={output}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot load the run's student {copy / 'student.h5'}: ")
    # Not "which rebuilds it from its QAT checkpoints": there are none; the rerun trains it from step 0.
    assert result.stderr.strip().endswith(f"rerun the pipeline on {str(copy)!r}, which trains it again: no QAT "
                                          "checkpoint of it is left")


def test_weight_scales_a_qat_student_was_not_trained_with_are_refused_saying_how_to_get_them(run_dir, tmp_path,
                                                                                               convert):
    work_dir, _ = run_dir  # Trained per-channel, the default.
    for source in ([f"--run_dir={work_dir}"],
                   [f"--student={work_dir / 'student.h5'}", f"--generator={work_dir / 'generator.keras'}"]):
        result = convert(*source, f"--output={tmp_path / 'per_tensor.tflite'}", "--noper_channel")
        assert result.returncode == 2 and not (tmp_path / "per_tensor.tflite").exists()
        assert result.stderr.startswith("error: --noper_channel applies to post-training quantization: this QAT "
                                        "student's weights were trained with per-channel scales"), result.stderr
        assert result.stderr.strip().endswith("For per-tensor weights, export the teacher with PTQ (--teacher and "
                                              "--generator) --noper_channel; a QAT student with per-tensor weights "
                                              "cannot export where BatchNorm follows its convolutions "
                                              "(tensorflow/model-optimization#1131)")
        assert convert(*source, f"--output={tmp_path / 'per_channel.tflite'}", "--per_channel").returncode == 0
    # Post-training quantization takes either.
    result = convert(f"--teacher={run_dir[1]}", f"--generator={work_dir / 'generator.keras'}",
                     f"--output={tmp_path / 'ptq_per_tensor.tflite'}", "--noper_channel", "--calibration_samples=16")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("saved_config, message", [
    ("{", "Expecting property name"), ('{"foo": 1}', "unknown config key 'foo'"), ("[1]", "")])
def test_a_run_directory_whose_config_cannot_be_read_is_one_line(tmp_path, convert, saved_config, message):
    (tmp_path / "config.json").write_text(saved_config)
    result = convert(f"--run_dir={tmp_path}", f"--output={tmp_path / 'x.tflite'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot read the run's config '{tmp_path / 'config.json'}': {message}")


def test_a_run_whose_qat_checkpoint_is_ahead_of_its_student_says_which_is_exported(run_dir, tmp_path, convert):
    work_dir, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(work_dir, copy)
    state = json.loads((copy / "state.json").read_text())
    assert state["distillation"]["steps"] == 2  # Its checkpoint is at step 2 too: no note.
    result = convert(f"--run_dir={copy}", f"--output={tmp_path / 'a.tflite'}")
    assert result.returncode == 0 and "note:" not in result.stdout
    state["distillation"]["steps"] = 1  # As a longer run stopped midway leaves it: the student of 1, a checkpoint at 2.
    (copy / "state.json").write_text(json.dumps(state))
    result = convert(f"--run_dir={copy}", f"--output={tmp_path / 'b.tflite'}")
    assert result.returncode == 0, result.stderr
    assert ("note: exporting the run's finished student (1 QAT step); its QAT checkpoint is at step 2 of a longer "
            "run not finished yet: rerun it to finish, then convert again") in result.stdout


def test_a_run_whose_teacher_moved_says_how_to_find_it(run_dir, tmp_path, convert):
    work_dir, teacher_path = run_dir
    copy = tmp_path / "run"  # A run directory taken to another machine, its teacher elsewhere there.
    shutil.copytree(work_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["teacher"]["model"] = str(tmp_path / "gone" / "teacher.keras")
    (copy / "config.json").write_text(json.dumps(config))
    result = convert(f"--run_dir={copy}", f"--output={tmp_path / 'x.tflite'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the run's teacher '{tmp_path / 'gone' / 'teacher.keras'}' is missing (moved since the run?): put it "
        f"back there, or rerun the pipeline on '{copy}' with --teacher=<where it is now>, which records it")
    # Rerun with its new place, the run takes it (the same weights), records it and converts.
    moved = tmp_path / "elsewhere" / "teacher.keras"
    os.makedirs(moved.parent)
    shutil.copy(teacher_path, moved)
    shutil.copy(teacher_path + ".json", str(moved) + ".json")
    assert _tiny_run(moved, copy) == 0
    assert json.loads((copy / "config.json").read_text())["teacher"]["model"] == str(moved)
    result = convert(f"--run_dir={copy}", f"--output={tmp_path / 'x.tflite'}", "--calibration_samples=16")
    assert result.returncode == 0, result.stderr


def test_a_run_started_with_relative_paths_converts_from_any_directory(run_dir, tmp_path, monkeypatch, convert):
    from PIL import Image
    _, teacher_path = run_dir
    shutil.copy(teacher_path, tmp_path / "teacher.keras")
    shutil.copy(teacher_path + ".json", tmp_path / "teacher.keras.json")
    (tmp_path / "my_layers.py").write_text("def halved(x):  # An activation of the user's, which the teacher "
                                           "does not use.\n    return x / 2\n")
    for label, name in enumerate("abcd"):  # Held-out images, one folder per class.
        os.makedirs(tmp_path / "images" / name)
        Image.fromarray(np.full((8, 8), 60 * label, np.uint8)).save(tmp_path / "images" / name / "0.png")
    monkeypatch.chdir(tmp_path)
    assert _tiny_run("teacher.keras", "run", "images", "--teacher_custom_objects=my_layers.py") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["teacher"]["model"] == str(tmp_path / "teacher.keras")
    assert config["teacher"]["custom_objects"] == [str(tmp_path / "my_layers.py")]
    assert config["evaluation"]["dataset"] == str(tmp_path / "images")
    # convert.py runs in the repository, not where the run started (the module it recorded, named again: a run
    # directory's config.json does not choose the code that runs).
    result = convert(f"--run_dir={tmp_path / 'run'}", f"--output={tmp_path / 'x.tflite'}", "--calibration_samples=16",
                     f"--teacher_custom_objects={tmp_path / 'my_layers.py'}")
    assert result.returncode == 0, result.stderr
    # A run recorded before paths were recorded in full: the error says where its path is from.
    config["teacher"]["model"] = "teacher.keras"
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    result = convert(f"--run_dir={tmp_path / 'run'}", f"--output={tmp_path / 'x.tflite'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: the run's teacher 'teacher.keras' is a path relative to the directory the run started in: run this "
        f"from there, or rerun the pipeline on '{tmp_path / 'run'}' with --teacher=<its path>, which records it in "
        "full")
    # Which that run, of a version that recorded no teacher fingerprint either, takes: it was refused as a run of
    # another config (teacher.model), from its own directory or any other.
    config.update(teacher={**config["teacher"], "custom_objects": ["my_layers.py"]},
                  evaluation={**config["evaluation"], "dataset": "images"})
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    del state[run_state.TEACHER_KEY]
    (tmp_path / "run" / "state.json").write_text(json.dumps(state))
    assert _tiny_run("teacher.keras", "run", "images", "--teacher_custom_objects=my_layers.py") == 0
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    os.makedirs(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert _tiny_run(tmp_path / "teacher.keras", tmp_path / "run", tmp_path / "images",
                     f"--teacher_custom_objects={tmp_path / 'my_layers.py'}") == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["teacher"]["model"] == str(tmp_path /
                                                                                                 "teacher.keras")


def test_float_teacher_with_generator_is_quantized_post_training(run_dir, tmp_path, convert):
    work_dir, teacher_path = run_dir
    output = tmp_path / "ptq.tflite"
    result = convert(f"--teacher={teacher_path}", f"--generator={work_dir / 'generator.keras'}",
                      f"--output={output}", "--calibration_samples=16", "--noper_channel", "--teacher_channels=1")
    assert result.returncode == 0, result.stderr
    assert (f"note: --teacher_channels is for Keras Applications teachers (mobilenet_v2, resnet50, ...); "
            f"--teacher={teacher_path} is not one and ignores it") in result.stdout
    assert _model_report(output).is_fully_integer
    assert (tmp_path / "ptq_labels.txt").read_text() == "a\nb\nc\nd\n"


@pytest.mark.parametrize("data_source", ["distilled", "noise"])
def test_float_teacher_is_quantized_post_training_without_generator_or_data(run_dir, tmp_path, data_source, convert):
    _, teacher_path = run_dir
    output = tmp_path / f"{data_source}.tflite"
    result = convert(f"--teacher={teacher_path}", f"--data_source={data_source}", "--distilled_steps=5",
                      f"--output={output}", "--calibration_samples=8")
    assert result.returncode == 0, result.stderr
    assert ("BN-statistics loss" in result.stdout) == (data_source == "distilled")
    report = _model_report(output)
    assert report.is_fully_integer and report.has_static_batch_one


def test_a_teacher_without_batchnorm_is_quantized_on_noise_and_refused_where_its_statistics_are_needed(
        tmp_path, convert):
    # A LayerNormalization model: the pipeline's refusal points here, and this was refused too.
    import tf_keras
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.LayerNormalization()(
        tf_keras.layers.Conv2D(4, 3)(inputs)))
    teacher_path = str(tmp_path / "layer_norm.keras")
    tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x)).save(teacher_path)
    output = tmp_path / "layer_norm.tflite"
    noise = convert(f"--teacher={teacher_path}", "--data_source=noise", "--calibration_samples=8",
                    f"--output={output}")
    assert noise.returncode == 0, noise.stderr
    assert _model_report(output).is_fully_integer
    distilled = convert(f"--teacher={teacher_path}", "--data_source=distilled", "--calibration_samples=8",
                        f"--output={tmp_path / 'distilled.tflite'}")
    assert distilled.returncode == 2
    assert distilled.stderr.strip().splitlines()[-1].startswith(
        "error: teacher 'layer_norm' has no BatchNormalization layer; ZS-CGAN needs the BN statistics it stores. "
        "Without them, python tools/convert.py --teacher=<the model> --data_source=noise")


def test_ops_tflite_keeps_float_are_refused_unless_allowed(tmp_path, convert):
    from conftest import build_two_block_classifier
    teacher_path = str(tmp_path / "elu_teacher.keras")
    build_two_block_classifier(extra_layer="elu").save(teacher_path)
    output = tmp_path / "elu.tflite"
    arguments = (f"--teacher={teacher_path}", "--data_source=noise", "--calibration_samples=8", f"--output={output}")
    refused = convert(*arguments)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert re.fullmatch(r"error: int8 export of 'tiny_teacher' is not fully integer: float ops DEQUANTIZE \(#1\), "
                        r"ELU \(#2, layer 'elu'\), QUANTIZE \(#3\); input int8, output int8. Pass --allow_float_ops "
                        r"to keep these ops float \(a CPU or GPU delegate runs them; .*\)",
                        refused.stderr.strip().splitlines()[-1])
    assert not output.exists()
    # Distilled inputs take minutes to make: the same refusal comes first (it came once they were made).
    refused = convert(f"--teacher={teacher_path}", "--data_source=distilled", "--calibration_samples=8",
                      f"--output={output}")
    assert refused.returncode == 2 and "distilled 8 inputs" not in refused.stdout
    assert refused.stderr.strip().splitlines()[-1].startswith("error: int8 export of 'tiny_teacher' is not fully "
                                                              "integer: float ops DEQUANTIZE (#1), ELU (#2")
    allowed = convert(*arguments, "--allow_float_ops")
    assert allowed.returncode == 0, allowed.stderr
    assert ("- float ops kept (--allow_float_ops): DEQUANTIZE (#1), ELU (#2, layer 'elu'), QUANTIZE (#3); a CPU or "
            "GPU delegate runs them") in allowed.stdout
    assert "  - ops from #1 on would run on the CPU" in allowed.stdout  # The Edge TPU report says where it stops.
    report = _model_report(output)
    assert [tensor.dtype for tensor in report.inputs + report.outputs] == ["int8", "int8"]
    assert [op.name for op in report.non_integer_ops] == ["DEQUANTIZE", "ELU", "QUANTIZE"]


def test_float_teacher_float_and_dynamic_exports(run_dir, tmp_path, convert):
    _, teacher_path = run_dir
    for mode in ("float", "dynamic"):
        output = tmp_path / f"{mode}.tflite"
        result = convert(f"--teacher={teacher_path}", f"--mode={mode}", f"--output={output}")
        assert result.returncode == 0, result.stderr
        assert [tensor.dtype for tensor in _model_report(output).inputs] == ["float32"]


def test_student_file_with_its_preprocessing_covers_every_pixel(run_dir, tmp_path, convert):
    work_dir, _ = run_dir
    output = tmp_path / "student.tflite"
    student = str(tmp_path / "copied.h5")  # Saved outside a run: nothing says what its input is.
    shutil.copy(work_dir / "student.h5", student)
    generator = f"--generator={work_dir / 'generator.keras'}"
    # TF-MOT puts no fake quantizer between the tiny student's Dense and its BN, and without
    # calibration inputs the converter leaves that FULLY_CONNECTED float.
    result = convert(f"--student={student}", f"--output={output}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "Layers TF-MOT left float need calibration inputs: pass --generator (the run's generator.keras) or "
        "--data_source=distilled or noise; an op TFLite has no int8 kernel for (ELU, ...) stays float with them too, "
        "and needs --allow_float_ops as well")
    stale_labels = tmp_path / "student_labels.txt"
    stale_labels.write_text("of another model\n")
    result = convert(f"--student={student}", generator, "--calibration_samples=16", f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert "from uint8 pixels" not in result.stdout  # Nothing says what the student's input is.
    # Nor what its classes are: no labels, and none left of the model the output replaced.
    assert not stale_labels.exists() and (f"- labels: removed {stale_labels}, which an earlier model left: this "
                                          "model's class names are not known") in result.stdout.splitlines()
    result = convert(f"--student={student}", generator, "--calibration_samples=16", "--teacher_preprocessing=tf",
                      f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert "- from uint8 pixels: int8 input = pixel - 128; all 256 pixel levels kept" in result.stdout
    # A run's own student.h5, as the README's example converts it: its run records the teacher's preprocessing. A
    # student saved before its input covered every pixel level was exported keeping 255 of them, without a word.
    result = convert(f"--student={work_dir / 'student.h5'}", generator, "--calibration_samples=16",
                     f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert (f"note: the student's input is read as its run records its teacher's ('tf' preprocessing, in "
            f"{work_dir / 'state.json'}); pass --teacher_preprocessing to read it otherwise") in result.stdout
    assert "- from uint8 pixels: int8 input = pixel - 128; all 256 pixel levels kept" in result.stdout
    # A run of an earlier version recorded no preprocessing: the note says how to read the student's input.
    old_run = tmp_path / "old_run"
    shutil.copytree(work_dir, old_run)
    state = json.loads((old_run / "state.json").read_text())
    del state[run_state.TEACHER_PREPROCESSING_KEY]
    (old_run / "state.json").write_text(json.dumps(state))
    result = convert(f"--student={old_run / 'student.h5'}", generator, "--calibration_samples=16",
                     f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert (f"note: {old_run}, the run of this student, records no teacher preprocessing (a run of an earlier version "
            f"of zscgan_tf): --run_dir={old_run} reads its teacher and covers every pixel level, and "
            "--teacher_preprocessing says what the student's input is") in result.stdout
    assert "from uint8 pixels" not in result.stdout


def test_an_output_that_cannot_be_written_is_refused_before_any_calibration(run_dir, tmp_path, convert):
    _, teacher_path = run_dir
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for output, message in ((tmp_path, f"--output {str(tmp_path)!r} is a directory; name the .tflite file to write"),
                            (a_file / "x.tflite", f"cannot write --output {str(a_file / 'x.tflite')!r}: "
                                                  f"{str(a_file)!r} is not a directory"),
                            # A directory not made yet: it was converted, then "Not a directory".
                            (f"{tmp_path / 'exports'}/",
                             f"--output '{tmp_path / 'exports'}/' ends in a separator, as a directory does; name the "
                             ".tflite file to write")):
        result = convert(f"--teacher={teacher_path}", "--data_source=distilled", f"--output={output}")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
        assert "distilled" not in result.stdout  # Refused before the distilled inputs were made.


def test_an_output_folder_the_command_made_goes_again_when_the_disk_is_full(run_dir, tmp_path):
    # A real full disk (a tmpfs): --output=<new folder>/x.tflite stopped with one line and exit 4, and left the empty
    # folder it had made. A full disk fails the write's fsync here, in a process of its own.
    _, teacher_path = run_dir
    (tmp_path / "exports").mkdir()  # There before: it stays, empty as it was.
    output = tmp_path / "exports" / "new" / "deeper" / "x.tflite"
    on_a_full_disk = ("import errno, os, sys\n"
                      "def disk_full(descriptor):\n"
                      "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
                      "os.fsync = disk_full\n"
                      f"sys.path.insert(0, {os.path.join(REPO_ROOT, 'tools')!r})\n"
                      "import convert\n"
                      "sys.exit(convert.main(['convert.py', *sys.argv[1:]]))\n")
    result = subprocess.run([sys.executable, "-c", on_a_full_disk, f"--teacher={teacher_path}", "--mode=float",
                             f"--output={output}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: the disk is full (writing {output}); free some space "
                                                      "and rerun the same command: what was written before stays")
    assert os.listdir(tmp_path / "exports") == []


def test_an_output_that_would_replace_a_file_other_than_a_tflite_model_is_refused(run_dir, tmp_path, convert):
    # The model converted, or a run's config, was replaced by the .tflite without a word.
    work_dir, teacher_path = run_dir
    teacher_copy = tmp_path / "teacher.keras"
    shutil.copy(teacher_path, teacher_copy)
    config_copy = tmp_path / "config.json"
    shutil.copy(work_dir / "config.json", config_copy)
    for output in (teacher_copy, config_copy):
        before = output.read_bytes()
        result = convert(f"--teacher={teacher_copy}", "--mode=float", f"--output={output}")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: --output {str(output)!r} exists and is not a TFLite model, which it would replace; name a new "
            ".tflite file, or delete that one first")
        assert output.read_bytes() == before
    # A TFLite model, or an empty file, is replaced.
    output = tmp_path / "float.tflite"
    for existing in (b"", (work_dir / "teacher_float.tflite").read_bytes()[:100]):
        output.write_bytes(existing)
        assert convert(f"--teacher={teacher_copy}", "--mode=float", f"--output={output}").returncode == 0
        assert _model_report(output).inputs[0].dtype == "float32"


def test_an_output_that_is_a_run_s_own_model_file_is_refused(run_dir, tmp_path, convert):
    # It was replaced, and the run's report.md and export_report.md went on describing the file they had measured.
    work_dir, teacher_path = run_dir
    for name in ("qat_int8.tflite", "ptq_int8.tflite", "teacher_float.tflite"):
        output = work_dir / name
        before = output.read_bytes() if output.exists() else None
        result = convert(f"--run_dir={work_dir}", "--io_dtype=uint8", f"--output={output}")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: --output {str(output)!r} is a file of the run in {str(work_dir)!r}, whose reports describe it and "
            "whose export stage would take it for its own; write the export elsewhere (python -m zscgan_tf.train on "
            "that run exports its own files again, with their reports)")
        assert (output.read_bytes() if output.exists() else None) == before
    # The same name in a folder that is not a run's is written.
    elsewhere = tmp_path / "qat_int8.tflite"
    assert convert(f"--teacher={teacher_path}", "--mode=float", f"--output={elsewhere}").returncode == 0
    assert elsewhere.exists()


def test_a_run_directory_in_use_by_a_run_is_refused_and_converts_once_it_is_free(run_dir, tmp_path, convert, capsys):
    # Its training deleted the checkpoint being read: a NotFoundError traceback.
    from conftest import lock_held_by_another_process
    work_dir, _ = run_dir
    output = tmp_path / "student.tflite"
    with lock_held_by_another_process(work_dir) as other:
        result = convert(f"--run_dir={work_dir}", f"--output={output}")
    assert result.returncode == 75 and not output.exists()
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {str(work_dir)!r} is in use by a run (process {other.pid}); convert it once that run has "
        "finished or stopped")
    # Another conversion of it shares the lock: two exports of one run at once.
    with lock_held_by_another_process(work_dir, what="conversion", shared=True):
        assert convert(f"--run_dir={work_dir}", f"--output={output}").returncode == 0 and output.exists()
        # A run started meanwhile is refused, naming the conversion (before its teacher loads).
        capsys.readouterr()
        assert train.main(["train", f"--work_dir={work_dir}", f"--teacher={run_dir[1]}"]) == 75
    assert re.fullmatch(rf"error: {re.escape(repr(str(work_dir)))} is in use by a conversion \(process \d+\); wait "
                        r"for it to finish, or pass another --work_dir\n", capsys.readouterr().err)


@pytest.mark.parametrize("arguments, message", [
    (["--student=/nonexistent/student.h5"], "student '/nonexistent/student.h5' does not exist"),
    (["--teacher=TEACHER"], "is a float model: an int8 export needs calibration inputs: --generator, or "
                            "--data_source=distilled"),
    (["--teacher=TEACHER", "--data_source=noise", "--generator=G"], "--generator is only used with "
                                                                   "--data_source=generator"),
    (["--teacher=TEACHER", "--data_source=distilled", "--distilled_steps=0"], "--distilled_steps must be positive"),
    (["--run_dir=/"], "is not a run directory"),  # Refused before its lock is taken (and strays looked for).
    # The calibration seed a run seeded at the largest --seed draws with, and convert.py's advice names: it was refused.
    (["--run_dir=/", "--seed=2147483650"], "is not a run directory"),
    (["--teacher=TEACHER", "--mode=float", "--data_source=distilled"],
     "--data_source calibrates an int8 export; --mode=float is not calibrated"),
    # Before, these were ignored: a float-input file and status 0.
    (["--teacher=TEACHER", "--mode=float", "--io_dtype=uint8", "--allow_float_ops"],
     "--io_dtype, --allow_float_ops apply to an int8 export; --mode=float keeps the input, output and activations "
     "float"),
    # These were ignored too: --seed is the calibration's, and a float file has no weight scales.
    (["--teacher=TEACHER", "--mode=float", "--seed=3"], "--seed calibrates an int8 export; --mode=float is not "
                                                          "calibrated"),
    (["--teacher=TEACHER", "--mode=float", "--noper_channel"],
     "--noper_channel sets the scales of integer weights; --mode=float keeps the weights float"),
    # Before, a file int8 inside with float input and output (dynamic), or one with 25 fake-quantization pairs (float).
    (["--run_dir=RUN", "--mode=dynamic"], "--mode=dynamic converts a float teacher (--teacher): the run's is "
                                          "RUN/teacher_float.tflite; a QAT student's fake quantization converts to "
                                          "integer ops, so it exports with --mode=int8 only"),
    (["--student=RUN/student.h5", "--mode=float"], "--mode=float converts a float teacher (--teacher); a QAT"),
    ([], "pass exactly one of --run_dir, --student and --teacher"),
    # Each kind of model given where the other belongs: the message names the right flag.
    (["--student=TEACHER", "--generator=RUN/generator.keras"],
     "is a float model, not a TF-MOT quantization-aware student: quantize it post-training with --teacher="),
    (["--teacher=RUN/student.h5", "--data_source=noise"],
     "is a TF-MOT quantization-aware student, not a float teacher: export it with --student=RUN/student.h5"),
    # Teacher flags where they would be ignored.
    (["--run_dir=RUN", "--teacher_preprocessing=raw"],
     "--teacher_preprocessing describes a --teacher (a --run_dir takes --teacher_custom_objects and "
     "--trust_model_code, to confirm the code its teacher runs), not a --run_dir"),
    (["--run_dir=RUN", "--teacher_custom_objects=layers.py"],
     "--teacher_custom_objects: the run in 'RUN' loaded its teacher without any; leave it out"),
    (["--student=RUN/student.h5", "--teacher_alpha=0.5", "--teacher_input_size=8"],
     "--teacher_alpha, --teacher_input_size describe a --teacher (a --student takes --teacher_preprocessing, "
     "--teacher_custom_objects and --trust_model_code), not a --student"),
    (["--student=RUN/student.h5", "--teacher_preprocessing_std=0.2"],
     "--teacher_preprocessing_mean and --teacher_preprocessing_std go with --teacher_preprocessing=custom"),
    # The teacher flags are read where the model is: what comes first is still reported first.
    (["--student=/nonexistent/student.h5", "--teacher_preprocessing_std=0.2"],
     "student '/nonexistent/student.h5' does not exist"),
    (["--teacher=TEACHER", "--teacher_preprocessing_mean=x", "--calibration_samples=0"],
     "--calibration_samples must be positive, got 0"),
    # Before: "a float model ...: quantize it post-training with --teacher=<the generator>", and "a binary
    # classifier must end in Dense(1)".
    (["--student=RUN/generator.keras"], "--student 'RUN/generator.keras' is a generator saved by this package (it makes "
                                        "images), not a quantization-aware student: pass the run's student.h5 as "
                                        "--student (tools/convert.py takes the generator as --generator)"),
    (["--teacher=RUN/generator.keras", "--data_source=noise"], "--teacher 'RUN/generator.keras' is a generator saved "
     "by this package (it makes images), not a classifier: pass the classifier it was trained against as --teacher"),
    # Before, "the generator makes (4,) samples but the model reads (8, 8, 1)".
    (["--teacher=TEACHER", "--generator=TEACHER"], "is not a generator saved by this package: it takes (8, 8, 1), not "
                                                   "noise and a class label (a classifier?); pass a run's generator.keras"),
    # A generator trained for another preprocessing than the one the teacher is read with.
    (["--teacher=TEACHER", "--generator=RUN/generator.keras", "--teacher_preprocessing=custom",
      "--teacher_preprocessing_mean=0.5", "--teacher_preprocessing_std=0.01"],
     "the generator was trained for a teacher that reads pixels with 'tf' preprocessing, not 'custom' (mean 0.5, "
     "std 0.01): pass --teacher_preprocessing=tf, or the generator trained for this teacher"),
    # Inside the range, only in a corner of it: its samples passed the range check this replaced.
    (["--teacher=TEACHER", "--generator=RUN/generator.keras", "--teacher_preprocessing=raw"],
     "the generator was trained for a teacher that reads pixels with 'tf' preprocessing, not 'raw': pass "
     "--teacher_preprocessing=tf"),
    (["--student=RUN/student.h5", "--generator=RUN/generator.keras", "--teacher_preprocessing=custom",
      "--teacher_preprocessing_mean=0", "--teacher_preprocessing_std=1"],
     "with 'tf' preprocessing, not 'custom' (mean 0, std 1): pass --teacher_preprocessing=tf"),
    # A .keras file cut short (CUT: the first half of the run's generator.keras): h5py's "file signature not found".
    (["--teacher=TEACHER", "--generator=CUT"],
     "cannot load generator 'CUT': not a Keras archive, though named .keras (not a whole zip file: a copy or download "
     "that did not finish?)"),
    (["--student=CUT"], "cannot load student 'CUT': not a Keras archive, though named .keras (not a whole zip file"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, convert, tmp_path, arguments, message):
    work_dir, teacher_path = run_dir
    cut = tmp_path / "cut_short.keras"
    cut.write_bytes((work_dir / "generator.keras").read_bytes()[:(work_dir / "generator.keras").stat().st_size // 2])
    arguments = [argument.replace("TEACHER", teacher_path).replace("RUN", str(work_dir)).replace("CUT", str(cut))
                 for argument in arguments]
    message = message.replace("CUT", str(cut))
    message = message.replace("RUN", str(work_dir))
    lock = work_dir / ".lock"
    lock.write_text("the run's last holder")
    os.utime(lock, ns=(1, 1))
    result = convert(*arguments, f"--output={tmp_path / 'x.tflite'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line
    assert not (tmp_path / "x.tflite").exists()
    if "--run_dir=" in " ".join(arguments):  # Before: its lock was taken, and the file rewritten, first.
        assert lock.read_text() == "the run's last holder" and lock.stat().st_mtime_ns == 1


def _save_model_running_code(path, marker):
    """Saves to `path`, in HDF5 whatever its name, a model whose Lambda layer's code creates `marker` when it
    runs: what a run directory from someone else could hold."""
    import tf_keras
    inputs = tf_keras.Input((8, 8, 1))
    creates_marker = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # pylint: disable=eval-used
    model = tf_keras.Model(inputs, tf_keras.layers.Lambda(creates_marker)(inputs))
    model.save(str(path), save_format="h5")
    os.remove(marker)  # Built by running that code once.


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")  # As someone else saved it.
def test_a_run_directory_from_someone_else_runs_no_code_its_files_name(run_dir, tmp_path, convert):
    # tf_keras ran the Lambda code of an HDF5 student or generator, and --run_dir took --trust_model_code and
    # --teacher_custom_objects from the directory's config.json.
    work_dir, teacher_path = run_dir
    marker = tmp_path / "code_ran"
    output = tmp_path / "model.tflite"
    received = tmp_path / "received_student"
    shutil.copytree(work_dir, received)
    _save_model_running_code(received / "student.h5", marker)
    state = json.loads((received / "state.json").read_text())
    state["distillation"]["sha256"] = files.file_digest(str(received / "student.h5"))  # Its state agrees.
    (received / "state.json").write_text(json.dumps(state))
    result = convert(f"--run_dir={received}", f"--output={output}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: student {str(received / 'student.h5')!r} holds serialized Python code (e.g. a Lambda layer, as the "
        "student of a teacher with one does) and was not loaded; pass --trust_model_code only if you trust its author")
    received = tmp_path / "received_generator"  # An HDF5 file under the name generator.keras.
    shutil.copytree(work_dir, received)
    _save_model_running_code(received / "generator.keras", marker)
    for arguments in ([f"--run_dir={received}"],
                      [f"--teacher={teacher_path}", f"--generator={received / 'generator.keras'}"]):
        result = convert(*arguments, f"--output={output}")
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
            f"error: generator {str(received / 'generator.keras')!r} holds serialized Python code (a Lambda layer), "
            "which no generator of zscgan_tf has, and was not loaded: that code would run as it loads")
    assert not marker.exists() and not output.exists()
    # A config.json that says its teacher loads with --trust_model_code: the command must say so too.
    received = tmp_path / "received_config"
    shutil.copytree(work_dir, received)
    config = json.loads((received / "config.json").read_text())
    config["teacher"]["trust_model_code"] = True
    (received / "config.json").write_text(json.dumps(config))
    result = convert(f"--run_dir={received}", f"--output={output}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: the run in {str(received)!r} loaded its teacher with code that runs as it loads; to convert it, pass "
        "--trust_model_code (its model files hold serialized Python, such as Lambda layers), only if you trust that "
        "code and this directory's author")
    assert convert(f"--run_dir={received}", f"--output={output}", "--trust_model_code").returncode == 0
    assert output.exists()


def test_a_runs_custom_objects_file_named_through_a_symbolic_link_is_the_same_file(tmp_path):
    # Named through a linked directory, the file the run recorded was refused: "pass --teacher_custom_objects=<it>".
    import types
    from zscgan_tf import run_conversion, teachers
    from zscgan_tf.errors import UserError

    def flags(*custom_objects):  # What the check reads of a ConversionConfig.
        return types.SimpleNamespace(run_dir=str(tmp_path), custom_objects=custom_objects, trust_model_code=False)

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "my_layers.py").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    recorded = teachers.TeacherSource(model=str(tmp_path / "t.keras"),
                                      custom_objects=(str(tmp_path / "real" / "my_layers.py"),))
    for named in (tmp_path / "real" / "my_layers.py", tmp_path / "link" / "my_layers.py"):
        run_conversion._check_code_confirmed(flags(str(named)), recorded)
    with pytest.raises(UserError, match="pass --teacher_custom_objects="):
        run_conversion._check_code_confirmed(flags("other.py"), recorded)
