"""The entry point as users run it: flagfiles, outputs, resume, one-line errors."""

import contextlib
import dataclasses
import errno
import gc
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types
import warnings
import weakref

import numpy as np
import pytest

from zscgan_tf import config as config_lib
from zscgan_tf import config_changes
from zscgan_tf import (evaluation_stage, export, exported_model, generator_reuse, labeled_images, pipeline,
                       quantization_stages, run_report)
from zscgan_tf import generator as generator_lib
from zscgan_tf import distill, generator_stage, run_state, seeds
from zscgan_tf import quantize, quantizer_ranges, teachers, tflite_model, train, training_loop, zero_shot
from zscgan_tf import representative_data
from zscgan_tf.errors import UserError
from zscgan_tf.files import file_digest, save_keras_model_atomic
from zscgan_tf.teachers import TeacherSource

from conftest import DELIBERATE_TEST_WARNINGS, build_student_failing_classifier, build_two_block_classifier

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flagfile(tmp_path, teacher_path, work_dir, steps=4, extra=()):
    lines = [f"--teacher={teacher_path}", f"--work_dir={work_dir}", f"--generator_steps={steps}", "--batch_size=16",
             "--noise_dim=8", "--generator_channels=8", "--checkpoint_every=2", "--image_every=2",
             "--eval_samples_per_class=4", "--grid_samples_per_class=3", "--distillation_steps=3",
             "--distillation_batch_size=8", "--distillation_checkpoint_every=2", "--calibration_samples=16",
             "--latency_runs=2", "--eval_dataset=none", "--noprogress", *extra]
    path = tmp_path / "tiny.cfg"
    path.write_text("# a tiny run\n" + "\n".join(lines) + "\n")
    return str(path)


def _generator_stopped_at_step(monkeypatch, step):
    """Makes the generator's training stop at `step` as Ctrl-C stops it (the loop's handler raises
    KeyboardInterrupt); returns a function that takes the stop away."""
    from zscgan_tf import zero_shot
    original_step = zero_shot.GeneratorTrainer.train_step

    def stopped_at_step(trainer):
        if int(trainer.step.numpy()) == step:
            raise KeyboardInterrupt
        return original_step(trainer)

    monkeypatch.setattr(zero_shot.GeneratorTrainer, "train_step", stopped_at_step)
    return lambda: monkeypatch.setattr(zero_shot.GeneratorTrainer, "train_step", original_step)


@pytest.fixture
def finished_run(finished_run_copy, tiny_teacher_file, capsys):
    """`finished_run(work_dir)` puts in `work_dir` the finished run that
    `train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"])` leaves: a copy of one
    such run trained once (conftest's `finished_run_copy`), for the tests that start from a finished run."""
    def train_default_run(teacher, work_dir):
        assert train.main(["train", f"--flagfile={_flagfile(pathlib.Path(work_dir).parent, teacher, work_dir)}"]) == 0

    return lambda work_dir: pathlib.Path(finished_run_copy(("test_train", "default run"), train_default_run,
                                                           tiny_teacher_file, work_dir, capsys))


def test_smoke_run_writes_every_output(tmp_path, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    # With a setting no evaluation uses, as a flagfile written for one may have.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}",
                           "--eval_max_samples=7"]) == 0
    # The suite filters these for the tests that cause them on purpose; a run must not show them to its user.
    deliberate = [line.split(":")[1] for line in DELIBERATE_TEST_WARNINGS]
    assert not [str(warning.message) for warning in caught
                if any(str(warning.message).startswith(message) for message in deliberate)]
    for name in ("config.json", "state.json", "generator.keras", "samples.png", "report.json", "report.md",
                 "student.h5", "teacher_float.tflite", "ptq_int8.tflite", "qat_int8.tflite", "export_report.md"):
        assert (work_dir / name).is_file(), name
    assert any((work_dir / "generator" / "checkpoints").iterdir())
    assert any(files for _, _, files in os.walk(work_dir / "logs"))
    report = json.loads((work_dir / "report.json").read_text())
    assert report["generator_training"]["steps"] == 4
    assert report["quantization"]["summary"]["steps"] == 3
    # Each file as a deploying script needs it: its digest, and its input's and output's quantization as LiteRT
    # reads them (they were in export_report.md's prose only).
    from ai_edge_litert.interpreter import Interpreter
    files = report["quantization"]["files"]
    assert set(files) == {"float", "ptq_int8", "qat_int8"} and files["float"]["input"] == {
        "dtype": "float32", "shape": [1, 8, 8, 1]}
    for kind, described in files.items():
        assert described["sha256"] == file_digest(str(work_dir / described["file"]))
        details = Interpreter(model_path=str(work_dir / described["file"]))
        for side, tensor in (("input", details.get_input_details()[0]), ("output", details.get_output_details()[0])):
            assert described[side]["dtype"] == tensor["dtype"].__name__ and described[side]["shape"] == list(
                tensor["shape"])
            if kind != "float":
                assert (described[side]["scale"], described[side]["zero_point"]) == pytest.approx(
                    tensor["quantization"]), (kind, side)
    # The Keras student's digest is named with its file (it was a bare `sha256` beside the files').
    assert report["quantization"]["student"] == {"file": "student.h5",
                                                 "sha256": file_digest(str(work_dir / "student.h5"))}
    assert "sha256" not in report["quantization"]
    assert report["quantization"]["summary"]["first"]["features"] > 0  # The feature term is on by default.
    # How the files were made, which only config.json said.
    assert {key: report["quantization"][key] for key in ("scheme", "per_channel", "io_dtype", "calibration_samples")} \
        == {"scheme": "w8a8", "per_channel": True, "io_dtype": "int8", "calibration_samples": 16}
    assert "The int8 files: int8 input and output, per-channel weights, calibrated on 16 generated samples." in (
        work_dir / "report.md").read_text()
    assert "feature term" in (work_dir / "report.md").read_text()
    # Each training's speed after its first step, which compiles the step, is given apart.
    for summary in (report["generator_training"], report["quantization"]["summary"]):
        assert summary["steady_samples_per_second"] > summary["samples_per_second"] > 0
    assert (work_dir / "report.md").read_text().count("after the first step, which compiles the training step") == 2
    assert set(report["quantization"]["sizes_bytes"]) == {"float", "ptq_int8", "qat_int8"}
    assert report["quantization"]["edge_tpu"] == {"ptq_int8": "likely compatible", "qat_int8": "likely compatible"}
    assert ("`ptq_int8.tflite` likely compatible; `qat_int8.tflite` likely compatible."
            in (work_dir / "report.md").read_text())
    latency = report["quantization"]["latency_median_ms"]  # Each model at 1 and 2 threads.
    assert {kind: sorted(by_threads) for kind, by_threads in latency.items()} == {
        kind: ["1", "2"] for kind in ("float", "ptq_int8", "qat_int8")}
    runs = report["quantization"]["latency_runs"]
    assert (f"Latency: the median of {runs} runs on one image, in LiteRT's default interpreter (with its XNNPACK "
            "delegate), the files timed in turns.") in (work_dir / "report.md").read_text()
    assert all(milliseconds > 0 for by_threads in latency.values() for milliseconds in by_threads.values())
    assert len(report["generated_samples"]["per_class_agreement"]) == 4
    assert report["generated_samples"]["within_class_spread"] > 0
    assert json.loads((work_dir / "config.json").read_text())["generator_training"]["steps"] == 4
    assert (work_dir / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [name for name in os.listdir(work_dir) if name.startswith(".tmp-")]
    out = capsys.readouterr().out
    # Asked for no evaluation, it is not told to set the flag it set.
    assert "evaluation: no real data to evaluate on (--eval_dataset=none)\n" in out
    assert out.count("note: --eval_max_samples does nothing with no evaluation data (--eval_dataset=none)\n") == 1
    assert "done:" in out
    # What TensorFlow computes on, in place of its CUDA lines that start_up drops.
    assert re.search(r"^device: (the CPU \(TensorFlow sees no GPU\)|GPU:0 \(.+\))$", out, re.MULTILINE)
    export_report = (work_dir / "export_report.md").read_text()
    assert (work_dir / "labels.txt").read_text() == "a\nb\nc\nd\n"  # From the teacher's sidecar.
    assert export_report.count("- from uint8 pixels: int8 input = ") == 2  # The PTQ and QAT models; not the float.
    # The input covers pixels 0 to 255 though this barely trained generator's samples stop short of them.
    assert export_report.count("all 256 pixel levels kept") == 2
    assert "| 3 |" in (work_dir / "report.md").read_text()  # Every one of 4 classes has a row.
    # With ImageNet's 1,000 classes the table keeps the 20 of lowest agreement, in class order.
    samples = report["generated_samples"]
    samples.update(per_class_agreement=[(label % 7) / 7 for label in range(1000)], samples_per_class=1)
    markdown = run_report.format_report(report)
    rows = [line for line in markdown.splitlines() if re.fullmatch(r"\| \d+ \| [\d.]+% \|", line)]
    assert rows[:3] == ["| 0 | 0.0% |", "| 7 | 0.0% |", "| 14 | 0.0% |"] and len(rows) == 20
    assert "The 20 classes of lowest agreement (report.json has all 1000)" in markdown
    assert "Within-class spread: needs at least 2 samples per class." in markdown
    # Each model against FP32: top-1, how often it picks FP32's class, the class it lowers most.
    report["quantization"].update(
        dataset="digits", split="test", images=400, agreement={},
        top1={"fp32_keras": 0.95, "ptq_int8_tflite": 0.9475, "qat_int8_tflite": 0.9475},
        same_class_as_fp32={"ptq_int8_tflite": 0.99, "qat_int8_tflite": 0.9925},
        largest_class_drop={"qat_int8_tflite": {"class": 6, "name": "Shirt", "images": 40, "fp32": 0.8, "model": 0.75}})
    markdown = run_report.format_report(report)
    assert "Top-1 on 400 digits test images (one image is 0.25 points):" in markdown
    assert "Warning:" not in markdown.split("## Quantization")[1]
    # Labels that look misordered are warned of beside the figures, not only in the console.
    report["quantization"]["label_order_warning"] = "the FP32 teacher scores 10.00% on the evaluation data, ..."
    assert ("Warning: the FP32 teacher scores 10.00% on the evaluation data, ....\n\nTop-1 on 400 digits test "
            "images") in run_report.format_report(report)
    del report["quantization"]["label_order_warning"]
    # What the images are: a subset of the split (--eval_max_samples), resized (--eval_resize).
    report["quantization"]["preparation"] = ["a class-balanced subset of 10,000", "resized from 28x28 to 32x32"]
    assert ("Top-1 on 400 digits test images (a class-balanced subset of 10,000, resized from 28x28 to 32x32, one "
            "image is 0.25 points):") in run_report.format_report(report)
    assert "| fp32_keras | 95.00% |  |  |  |" in markdown
    # Above 20,000 images one image is under 0.005 points: a third decimal keeps it from rounding away.
    assert [run_report.percent_decimals(images) for images in (400, 20_000, 20_001, 50_000)] == [2, 2, 3, 3]
    at_scale = json.loads(json.dumps(report))
    at_scale["quantization"].update(images=50_000, top1={"fp32_keras": 0.76, "ptq_int8_tflite": 0.75998})
    assert "| ptq_int8_tflite | 75.998% | -0.002 |" in run_report.format_report(at_scale)
    assert "Top-1 on 50,000 digits test images (" in run_report.format_report(at_scale)
    # A pool shrunk, its generators kept as trained before: it said "wall time of this session: 0m00s, 0 samples/s".
    terms = {"first": report["generator_training"]["first"], "last": report["generator_training"]["last"]}
    kept = [{**terms, **training_loop.idle_session_summary(4, {"total_wall_seconds": 30.0})} for _ in range(2)]
    pooled = json.loads(json.dumps(report))
    pooled["generator_training"] = run_report.generator_training_summary({"summary": kept[0], "members": kept})
    assert ("- steps: 4 (trained in earlier sessions; this one trained none)\n- wall time: 1m00s over every session "
            "(2 generators, one after the other)\n\nLoss terms of generator 1 of 2:\n") in run_report.format_report(
        pooled)
    assert "| ptq_int8_tflite | 94.75% | -0.25 | 99.00% |  |" in markdown
    assert "| qat_int8_tflite | 94.75% | -0.25 | 99.25% | 6 (Shirt): 75.00% against 80.00%, 40 images |" in markdown
    assert ("Most accurate fully-integer model on these images: `ptq_int8.tflite` and `qat_int8.tflite` "
            "(94.75%).") in markdown
    # The more accurate of the two int8 files is named, not the other.
    report["quantization"]["top1"]["qat_int8_tflite"] = 0.94
    assert "Most accurate fully-integer model on these images: `ptq_int8.tflite` (94.75%)." in (
        run_report.format_report(report))
    # A generator whose samples the teacher mostly does not classify as asked is called out; at half, not.
    for agreement, warned in ((0.5, False), (0.1, True)):
        report["generated_samples"]["teacher_agreement"] = agreement
        markdown = run_report.format_report(report)
        assert ("Warning: the teacher classifies only 10% of generated samples as the class asked for: the generator "
                "has not learned the classes in 4 steps" in markdown) == warned
        assert ("of generated samples as the class asked for" in markdown) == warned
    report["generated_samples"]["teacher_agreement"] = 0.001  # Under one percent: not "only 0%".
    assert "the teacher classifies only 0.1% of generated samples" in run_report.format_report(report)
    # A student this session found trained, resumed in the session that trained it.
    quantization = report["quantization"]
    quantization["summary"].update(resumed_from_step=2, wall_time="0m15s", total_wall_time="0m23s")
    quantization[run_report.EARLIER_SESSION_KEY] = True
    assert ("Data-free QAT: 3 steps (the last session that trained it from step 2), 0m15s in that session (0m23s "
            "over every session; this one trained none), ") in run_report.format_report(report)
    # A student below 8 bits, simulated: the report says why there is no QAT file (only the console did).
    quantization["scheme"] = "w4a4"
    assert ("The w4a4 student is simulation only: TFLite has no kernels below 8 bits, so it is measured in Keras "
            "(`w4a4_qat_keras`) and not exported; the int8 model is the teacher's, quantized after training at 8 bits "
            "(`ptq_int8.tflite`).") in run_report.format_report(report)
    # No QAT (--distillation_steps=0): no scheme's QAT is described.
    del quantization["summary"]
    markdown = run_report.format_report(report)
    assert ("No QAT (--distillation_steps=0): the int8 model is the teacher's, quantized after training at 8 bits "
            "(`ptq_int8.tflite`).") in markdown and "w4a4" not in markdown


def test_a_pools_speed_after_the_first_step_sums_its_trainings():
    def member(wall, first, steady, steps=10, resumed=0):
        return {"steps": steps, "resumed_from_step": resumed, "wall_seconds": wall, "samples_per_second": 1.0,
                "first_step_seconds": first, "steady_samples_per_second": steady}

    # 80 samples in 10 s after the first step, 30 in 5 s, and one trained before this session.
    members = [member(20.0, 10.0, 8.0), member(7.0, 2.0, 6.0), member(0.0, 0.0, 0.0, resumed=10)]
    summary = run_report.generator_training_summary({"summary": {}, "members": members})
    # Two trained from step 0 this session, one before it: it said the stage resumed at step 10.
    assert summary["resumed_from_step"] == 0 and summary["generators_trained_before"] == 1
    assert summary["steady_samples_per_second"] == pytest.approx(110 / 15)
    assert summary["samples_per_second"] == pytest.approx(27 / 27)
    # A training recorded by an older version, which did not time its first step: no figure, and none in words.
    old = {name: value for name, value in member(5.0, 1.0, 9.0).items()
           if name not in ("first_step_seconds", "steady_samples_per_second")}
    summary = run_report.generator_training_summary({"summary": {}, "members": [members[0], old]})
    assert summary["steady_samples_per_second"] == 0.0
    assert run_report._samples_per_second(summary) == "1 samples/s"
    assert run_report._samples_per_second(member(20.0, 10.0, 8.0)) == (
        "1 samples/s (8 after the first step, which compiles the training step)")
    # Every session's time: the pool's when each training's is known, none when one is not.
    timed = [{**members[0], "total_wall_seconds": 20.0}, {**members[2], "total_wall_seconds": 60.0}]
    summary = run_report.generator_training_summary({"summary": {}, "members": timed})
    assert summary["total_wall_seconds"] == 80.0 and run_report._all_sessions(summary) == " (1m20s over every session)"
    assert "total_wall_seconds" not in run_report.generator_training_summary(
        {"summary": {}, "members": [timed[0], members[1]]})
    one_session = {key: value for key, value in summary.items() if key != "generators_trained_before"}
    assert run_report._all_sessions({**one_session, "resumed_from_step": 0}) == ""  # One session: said once.
    # Resumed from a checkpoint of an earlier version, which did not record its sessions' time: said so.
    assert run_report._all_sessions({"resumed_from_step": 5}) == " (the earlier sessions' time is not recorded)"
    # The first stopped at step 2 and resumed, the second trained from 0: from step 2, over every session.
    resumed = [{**member(20.0, 10.0, 8.0, resumed=2), "total_wall_seconds": 30.0},
               {**member(10.0, 2.0, 6.0), "total_wall_seconds": 10.0}]
    summary = run_report.generator_training_summary({"summary": {}, "members": resumed})
    assert summary["resumed_from_step"] == 2 and "generators_trained_before" not in summary
    assert run_report._all_sessions(summary) == " (0m40s over every session)"


def test_labels_file_holds_the_teachers_class_names_in_output_order(tmp_path):
    from conftest import tiny_teacher
    teacher = dataclasses.replace(tiny_teacher(), description={"class_names": ["cat", "dog", "bird", "T-shirt/top"]})
    lines = quantization_stages._write_labels(str(tmp_path), teacher)
    assert (tmp_path / "labels.txt").read_text() == "cat\ndog\nbird\nT-shirt/top\n"
    assert "`labels.txt`: the teacher's 4 class names, one a line in output order (output 0 is `cat`)." in lines
    # Names not one per output, one across lines, or none are no labels: a stale file of an earlier teacher goes.
    for description in ({"class_names": ["cat", "dog"]}, {"class_names": ["cat", "dog\nhouse", "bird", "x"]}, {}):
        lines = quantization_stages._write_labels(str(tmp_path), dataclasses.replace(teacher,
                                                                                             description=description))
        assert not (tmp_path / "labels.txt").exists()
        assert any("No class names are known for this teacher" in line for line in lines)


def test_evaluation_classes_are_not_matched_by_names_the_teacher_gives_twice():
    from conftest import tiny_teacher
    # ImageNet's names hold two "crane"s (a bird, a machine): a folder named "crane" is neither.
    teacher = dataclasses.replace(tiny_teacher(), description={"class_names": ["crane", "dog", "crane", "cat"]})
    folder = labeled_images.LabeledImages(np.zeros((2, 8, 8, 1), np.uint8), np.array([0, 1]), num_classes=2,
                                          name="photos", class_names=("cat", "crane"))
    assert evaluation_stage._matched_to_teacher_classes(folder, teacher, "photos") is folder
    unique = dataclasses.replace(teacher, description={"class_names": ["crane", "dog", "bird", "cat"]})
    np.testing.assert_array_equal(evaluation_stage._matched_to_teacher_classes(folder, unique, "photos").labels,
                                  [3, 0])


def test_rerun_skips_a_finished_stage_and_more_steps_resume(tmp_path, finished_run, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 0
    assert "already trained" in capsys.readouterr().out
    # This session trained nothing: the report gave the first session's figures as its own.
    markdown = (work_dir / "report.md").read_text()
    assert "- steps: 4 (the last session that trained it from step 0; this one trained none)\n" in markdown
    assert "- wall time of the last session that trained it: " in markdown and "this session" not in markdown
    assert "Data-free QAT: 3 steps, " in markdown and " in the last session that trained it (this one trained " \
        "none), " in markdown
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir, steps=6)}"]) == 0
    out = capsys.readouterr().out
    assert "int8 models and reports built on the old generator are discarded" in out
    # The teacher's float file does not depend on the generator: it was converted again all the same.
    assert re.findall(r"export: converting (\w+)", out) == ["ptq_int8", "qat_int8"]
    report = json.loads((work_dir / "report.json").read_text())
    assert report["generator_training"]["resumed_from_step"] == 4
    assert report["generator_training"]["steps"] == 6
    assert report["quantization"]["summary"]["resumed_from_step"] == 0  # The student is redone on the new generator.
    assert "trained_in_an_earlier_session" not in report["generator_training"] | report["quantization"]
    markdown = (work_dir / "report.md").read_text()
    assert "- steps: 6 (this session from step 4)\n" in markdown and "- wall time of this session: " in markdown
    assert "Data-free QAT: 3 steps, " in markdown and " this session, " in markdown


def test_a_generator_or_student_made_again_otherwise_gets_its_own_student_and_files(tmp_path, finished_run,
                                                                                      tiny_teacher_file, capsys):
    # Their files lost, a generator or student is trained again from nothing, and comes out otherwise without
    # --deterministic: the old student and the old int8 files were kept, reported as the new ones'.
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    flagfile = f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"
    state_path = work_dir / "state.json"
    before = {name: file_digest(str(work_dir / name)) for name in ("student.h5", "ptq_int8.tflite", "qat_int8.tflite")}
    generator = generator_lib.load_generator(str(work_dir / "generator.keras"))
    generator.set_weights([weight * 1.01 for weight in generator.get_weights()])
    save_keras_model_atomic(generator, str(work_dir / "generator.keras"))
    state = json.loads(state_path.read_text())
    state["generator"]["sha256"] = file_digest(str(work_dir / "generator.keras"))  # Done, as one trained again.
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert train.main(["train", flagfile]) == 0
    out = capsys.readouterr().out
    assert f"distillation: {work_dir / 'student.h5'} was distilled from another generator than this one; " \
        "distilling again" in out
    assert re.findall(r"export: converting (\w+)", out) == ["ptq_int8", "qat_int8"]
    after = {name: file_digest(str(work_dir / name)) for name in before}
    assert all(after[name] != before[name] for name in before), (before, after)
    # A student trained again otherwise (the generator as it was): its file alone is converted again.
    student = quantization_stages.load_student(str(work_dir / "student.h5"))
    student.set_weights([weight * 1.01 if weight.ndim > 1 else weight for weight in student.get_weights()])
    save_keras_model_atomic(student, str(work_dir / "student.h5"))
    state = json.loads(state_path.read_text())
    state["distillation"]["sha256"] = file_digest(str(work_dir / "student.h5"))
    state_path.write_text(json.dumps(state))
    assert train.main(["train", flagfile]) == 0
    out = capsys.readouterr().out
    assert "distillation: already done" in out and re.findall(r"export: converting (\w+)", out) == ["qat_int8"]
    assert file_digest(str(work_dir / "qat_int8.tflite")) != after["qat_int8.tflite"]


def test_a_run_of_an_earlier_version_gets_a_qat_file_and_student_that_read_every_pixel_level(
        tmp_path, finished_run, tiny_teacher_file, monkeypatch, capsys):
    # A QAT file exported before the file read pixels on its student's input levels: converted again, alone.
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    state = json.loads((work_dir / "state.json").read_text())
    qat_export = state["export"]["qat_int8"]
    assert qat_export["settings"].endswith(f":{quantization_stages.QAT_INPUT}")
    qat_export["settings"] = qat_export["settings"].rsplit(":", 1)[0]  # As that version recorded it.
    (work_dir / "state.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 0
    converted = re.findall(r"export: converting (\w+)", capsys.readouterr().out)
    assert converted == ["qat_int8"]
    # A QAT checkpoint from before the student's input range covered every pixel level, resumed: its
    # restore put the narrower range back, and the student and its file kept it.
    old_dir = tmp_path / "old"
    with monkeypatch.context() as earlier_version:
        earlier_version.setattr(quantizer_ranges, "cover_model_input_range", lambda student, low, high: False)
        assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, old_dir)}"]) == 0
    narrow = quantizer_ranges.model_input_quantizer(quantization_stages.load_student(str(old_dir / "student.h5")))
    assert float(narrow.quantizer_vars["min_var"].numpy()) > -1 or float(narrow.quantizer_vars["max_var"].numpy()) < 1
    # The steps that resume from it train with the range its file will have, not only the file.
    ranges_trained_with = []
    step_of_this_version = distill.Distiller.train_step

    def step_recording_the_input_range(distiller):
        quantizer = quantizer_ranges.model_input_quantizer(distiller.student)
        ranges_trained_with.append(tuple(float(quantizer.quantizer_vars[name].numpy())
                                         for name in ("min_var", "max_var")))
        return step_of_this_version(distiller)

    monkeypatch.setattr(distill.Distiller, "train_step", step_recording_the_input_range)
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, old_dir)}",
                       "--distillation_steps=5"]) == 0
    assert "distillation: resuming at step 3" in capsys.readouterr().out
    assert len(ranges_trained_with) == 2 and all(low <= -1 and high >= 1 for low, high in ranges_trained_with)
    assert "Data-free QAT: 5 steps (this session from step 3), " in (old_dir / "report.md").read_text()
    widened = quantizer_ranges.model_input_quantizer(quantization_stages.load_student(str(old_dir / "student.h5")))
    low, high = (float(widened.quantizer_vars[name].numpy()) for name in ("min_var", "max_var"))
    assert low <= -1 and high >= 1
    model_input = tflite_model.inspect_tflite((old_dir / "qat_int8.tflite").read_bytes()).inputs[0]
    assert list(model_input.zero_points) == [-1] and model_input.scales[0] == pytest.approx(2 / 255, rel=1e-4)


def test_a_longer_generator_run_stopped_midway_keeps_the_old_student_models_and_reports(tmp_path, finished_run,
                                                                                        tiny_teacher_file, monkeypatch,
                                                                                        capsys):
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    built = ("student.h5", "qat_int8.tflite", "ptq_int8.tflite", "export_report.md", "report.md", "report.json")
    digests = {name: file_digest(str(work_dir / name)) for name in built}
    unstopped = _generator_stopped_at_step(monkeypatch, 6)
    longer = _flagfile(tmp_path, tiny_teacher_file, work_dir, steps=8)
    assert train.main(["train", f"--flagfile={longer}"]) == 130
    assert "discarded" not in capsys.readouterr().out
    # The old generator's student, models and reports, whole and as they were (tools/convert.py exports them).
    assert {name: file_digest(str(work_dir / name)) for name in built} == digests
    assert json.loads((work_dir / "state.json").read_text())["distillation"]["steps"] == 3
    unstopped()
    assert train.main(["train", f"--flagfile={longer}"]) == 0
    output = capsys.readouterr().out
    assert "generator: the student, int8 models and reports built on the old generator are discarded" in output
    report = json.loads((work_dir / "report.json").read_text())
    assert report["generator_training"]["steps"] == 8 and report["quantization"]["summary"]["resumed_from_step"] == 0


def test_a_run_stopped_in_its_generator_takes_other_student_settings_and_not_other_generator_ones(
        tmp_path, tiny_teacher_file, monkeypatch, capsys):
    work_dir = tmp_path / "run"
    unstopped = _generator_stopped_at_step(monkeypatch, 3)
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 130
    unstopped()
    capsys.readouterr()
    # A setting its generator depends on is refused: the generator trained 3 steps under the other.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}",
                       "--noise_dim=9"]) == 2
    assert "holds a run with a different config (generator.noise_dim)" in capsys.readouterr().err
    # One of the student's is not: nothing is built on the generator yet. It was refused, with the advice to take
    # the generator into another directory with --generator_from, which refuses an unfinished generator.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}",
                       "--temperature=2"]) == 0
    assert "generator: resuming at step 3 of 4" in capsys.readouterr().out
    assert json.loads((work_dir / "config.json").read_text())["distillation"]["temperature"] == 2
    assert (work_dir / "qat_int8.tflite").exists()
    # Once a student is built on it, they bind the run again.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}",
                       "--temperature=3"]) == 2
    assert "holds a run with a different config (distillation.temperature)" in capsys.readouterr().err


def test_fewer_steps_than_trained_are_refused_and_nothing_is_discarded(tmp_path, finished_run, tiny_teacher_file,
                                                                       capsys):
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    kept = {name: file_digest(str(work_dir / name)) for name in ("state.json", "generator.keras", "student.h5")}
    capsys.readouterr()
    # Before, the loop resumed past its target and did nothing; the report gave 2 steps for 4, and
    # fewer generator steps retrained the student on the unchanged generator.
    for extra, message in ((["--generator_steps=2"], "'s generator has trained 4 steps, more than --generator_steps=2"),
                           (["--distillation_steps=2"],
                            "'s QAT student has trained 3 steps, more than --distillation_steps=2")):
        flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=extra)
        assert train.main(["train", f"--flagfile={flagfile}"]) == 2
        error = capsys.readouterr().err
        assert message in error and "ask for" in error and len(error.strip().splitlines()) == 1
        assert kept == {name: file_digest(str(work_dir / name)) for name in kept}
    # More generator steps retrain the student anyway, so its own count may then be lower.
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, steps=6, extra=["--distillation_steps=2"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    report = json.loads((work_dir / "report.json").read_text())
    summary = report["quantization"]["summary"]
    assert summary["steps"] == 2 and summary["resumed_from_step"] == 0


def test_w4a4_run_trains_a_student_with_fitted_held_ranges_and_says_so(tmp_path, tiny_teacher_file, capsys):
    from zscgan_tf import quantization_stages
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--quantization=w4a4"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert "simulation only" in capsys.readouterr().out
    assert not (work_dir / "qat_int8.tflite").exists()  # 4-bit students are not exported.
    # The trained student's ranges are those the fitted student started from: held through QAT.
    from zscgan_tf import quantize, teachers
    teacher = teachers.load_teacher(teachers.TeacherSource(model=tiny_teacher_file), progress=False)
    calibration = quantization_stages.calibration_samples(
        generator_lib.load_generator(str(work_dir / "generator.keras")), teacher, 16,
        seed=seeds.CALIBRATION_SEED_OFFSET)
    fitted, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme.from_name("w4a4"),
                                          calibration_inputs=calibration, input_range=teacher.input_range())
    trained = quantization_stages.load_student(str(work_dir / "student.h5"))

    def ranges(student):
        return [w.numpy() for w in student.weights if w.name.endswith(("_min:0", "_max:0"))]

    assert len(ranges(trained)) == len(ranges(fitted)) > 0
    for expected, actual in zip(ranges(fitted), ranges(trained)):
        np.testing.assert_array_equal(expected, actual)
    report = json.loads((work_dir / "report.json").read_text())
    assert report["quantization"]["low_bit_ranges"] == "mse"
    assert "Scheme: w4a4 (first and last layers at 8 bits; ranges below 8 bits fitted by least squares, held during " \
        "QAT)." in (work_dir / "report.md").read_text()
    # Why there is no qat_int8.tflite, in the reports as on the console.
    report_markdown = (work_dir / "report.md").read_text()
    assert "The w4a4 student is simulation only: TFLite has no kernels below 8 bits" in report_markdown
    assert ("The w4a4 QAT student is simulation only (TFLite has no kernels below 8 bits): it is evaluated in Keras, "
            "not exported.") in (work_dir / "export_report.md").read_text()


def test_work_dir_of_a_different_run_is_refused(tmp_path, finished_run, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    capsys.readouterr()
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--bn_distance=mse"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    error = capsys.readouterr().err
    assert "different config (loss.bn_distance)" in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("contents", ['{"foo": 1}', "not json", '{"teacher": 5}'])
def test_a_config_json_of_the_users_own_is_not_replaced(tmp_path, tiny_teacher_file, capsys, contents):
    work_dir = tmp_path / "my_project"
    work_dir.mkdir()
    (work_dir / "config.json").write_text(contents)
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"error: work directory '{work_dir}' holds a config.json that is not a run's (a file of your "
                     "own?), which a run would replace; choose another --work_dir")
    assert (work_dir / "config.json").read_text() == contents and os.listdir(work_dir) == ["config.json"]


def test_a_folder_of_the_users_own_files_a_run_would_replace_is_refused(tmp_path, tiny_teacher_file, capsys):
    # Without a config.json the folder was taken for a new run's: its report.md and labels.txt were replaced.
    work_dir = tmp_path / "my_project"
    work_dir.mkdir()
    (work_dir / "report.md").write_text("my notes")
    (work_dir / "labels.txt").write_text("cat\ndog\n")
    (work_dir / "notes.txt").write_text("kept whatever runs here")
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: work directory '{work_dir}' holds labels.txt, report.md but no run's config.json (files of your "
        "own?), which a run would replace; choose another --work_dir")
    assert sorted(os.listdir(work_dir)) == ["labels.txt", "notes.txt", "report.md"]
    assert (work_dir / "report.md").read_text() == "my notes"
    os.remove(work_dir / "report.md")
    os.remove(work_dir / "labels.txt")  # A folder of other files is a run's to write in.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 0
    assert (work_dir / "notes.txt").read_text() == "kept whatever runs here"


def test_a_finished_run_is_evaluated_on_other_data_and_exported_as_uint8_without_retraining(
        tmp_path, finished_run, tiny_teacher_file, capsys):
    from PIL import Image

    work_dir = tmp_path / "run"
    finished_run(work_dir)
    trained = {name: file_digest(str(work_dir / name)) for name in ("generator.keras", "student.h5")}
    for label, class_name in enumerate("abcd"):  # The teacher's own class names, 3 images each.
        os.makedirs(tmp_path / "photos" / "val" / class_name)
        for index in range(3):
            Image.fromarray(np.full((8, 8), 60 * label + index, np.uint8)).save(
                tmp_path / "photos" / "val" / class_name / f"{index}.png")
    capsys.readouterr()
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=[
        f"--eval_dataset={tmp_path / 'photos'}", "--eval_split=val", "--eval_max_samples=8", "--io_dtype=uint8",
        "--eval_samples_per_class=2", "--grid_samples_per_class=2"])

    assert train.main(["train", f"--flagfile={flagfile}"]) == 0

    out = capsys.readouterr().out
    assert "generator: already trained" in out and "distillation: already done" in out
    assert "evaluation: 8 images of photos (val)" in out
    assert trained == {name: file_digest(str(work_dir / name)) for name in trained}
    report = json.loads((work_dir / "report.json").read_text())
    assert report["quantization"]["images"] == 8 and report["quantization"]["split"] == "val"
    assert report["generated_samples"]["samples_per_class"] == 2
    markdown = (work_dir / "report.md").read_text()
    assert "Top-1 on 8 photos val images (a class-balanced subset of 12, one image is 12 points):" in markdown
    assert report["quantization"]["preparation"] == ["a class-balanced subset of 12"]
    top1 = report["quantization"]["top1"]
    against = 100 * (top1["ptq_int8_tflite"] - top1["fp32_keras"])
    assert f"| ptq_int8_tflite | {100 * top1['ptq_int8_tflite']:.2f}% | {against:+.2f} |" in markdown
    best = max(top1["ptq_int8_tflite"], top1["qat_int8_tflite"])
    assert "Most accurate fully-integer model on these images: `" in markdown and f"({100 * best:.2f}%)." in markdown
    for name in ("ptq_int8.tflite", "qat_int8.tflite"):  # Converted again with uint8 input and output.
        model = tflite_model.inspect_tflite((work_dir / name).read_bytes())
        assert [tensor.dtype for tensor in model.inputs + model.outputs] == ["uint8", "uint8"], name
    assert json.loads((work_dir / "config.json").read_text())["evaluation"]["split"] == "val"
    # A folder of class folders, without split sub-folders, is read whole: the report called it its "test" images.
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=[
        f"--eval_dataset={tmp_path / 'photos' / 'val'}", "--eval_max_samples=8", "--io_dtype=uint8",
        "--eval_samples_per_class=2", "--grid_samples_per_class=2"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    out = capsys.readouterr().out
    assert (f"note: {tmp_path / 'photos' / 'val'} has no 'test' sub-folder, so every image of its class folders is "
            "evaluated (--eval_split names a sub-folder): if the teacher was trained on them, its top-1 there is not "
            "held-out accuracy\n") in out
    assert "evaluation: 8 images of val (the whole folder)" in out
    assert json.loads((work_dir / "report.json").read_text())["quantization"]["split"] == ""
    markdown = (work_dir / "report.md").read_text()
    assert ("Top-1 on 8 images of val (the whole folder) (a class-balanced subset of 12, one image is 12 points):"
            in markdown)


def test_large_evaluation_data_is_checked_then_read_again_rather_than_held_through_training(
        tmp_path, tiny_teacher_file, capsys, monkeypatch):
    from PIL import Image

    for label, class_name in enumerate("abcd"):
        os.makedirs(tmp_path / "photos" / class_name)
        for index in range(3):
            Image.fromarray(np.full((8, 8), 60 * label + index, np.uint8)).save(
                tmp_path / "photos" / class_name / f"{index}.png")
    loaded = []  # A weak reference to each evaluation dataset loaded.
    load = evaluation_stage.evaluation_dataset

    def recorded_load(*args, **kwargs):
        dataset = load(*args, **kwargs)
        loaded.append(weakref.ref(dataset))
        return dataset

    monkeypatch.setattr(evaluation_stage, "evaluation_dataset", recorded_load)
    held_in_training = []  # Whether the first is still in memory when the generator stage starts.
    run_generator_stage = generator_stage.run

    def checked_generator_stage(*args, **kwargs):
        gc.collect()
        held_in_training.append(loaded[0]() is not None)
        return run_generator_stage(*args, **kwargs)

    monkeypatch.setattr(generator_stage, "run", checked_generator_stage)
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=[f"--eval_dataset={tmp_path / 'photos'}"])
    monkeypatch.setattr(pipeline, "MAX_HELD_EVALUATION_BYTES", 12 * 8 * 8 - 1)  # As if 12 images were gigabytes.
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    out = capsys.readouterr().out
    assert ("evaluation: 12 images (0.0 GB) checked; they are read again for the evaluation rather than held in "
            "memory through training") in out
    assert out.index("evaluation: reading the evaluation images again") > out.index("export: converting qat_int8")
    assert held_in_training == [False] and len(loaded) == 2
    assert json.loads((work_dir / "report.json").read_text())["quantization"]["images"] == 12
    # Data of the size it is stays in memory, and the images are those read again: the
    # predictions saved for them are used.
    monkeypatch.undo()
    loaded.clear(), held_in_training.clear()
    monkeypatch.setattr(evaluation_stage, "evaluation_dataset", recorded_load)
    monkeypatch.setattr(generator_stage, "run", checked_generator_stage)
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    out = capsys.readouterr().out
    assert "read again" not in out and "reading the evaluation images again" not in out
    assert "every model's predictions on these images were saved by an earlier run; using them" in out
    assert held_in_training == [True] and len(loaded) == 1


def test_another_student_trains_from_a_finished_runs_generator_without_training_one(tmp_path, finished_run,
                                                                                    tiny_teacher_file, capsys):
    first = tmp_path / "w8a8"
    finished_run(first)
    def digests(directory):  # Of every file but the lock, which names the last process that held it.
        return {path: file_digest(str(path)) for path in directory.rglob("*")
                if path.is_file() and path.name != ".lock"}

    first_files = digests(first)
    capsys.readouterr()
    # In the same directory another scheme is refused, with the way to keep the generator.
    other_scheme = _flagfile(tmp_path, tiny_teacher_file, first, extra=["--quantization=w4a8"])
    assert train.main(["train", f"--flagfile={other_scheme}"]) == 2
    assert f"pass another --work_dir and --generator_from={first}" in capsys.readouterr().err
    second = tmp_path / "w4a8"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, second, extra=["--quantization=w4a8"])

    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={first}"]) == 0

    out = capsys.readouterr().out
    assert f"generator: taking the generator of {first} (4 steps)" in out
    assert "generator: already trained (4 steps)" in out and "distillation: 3 steps" in out
    assert file_digest(str(second / "generator.keras")) == file_digest(str(first / "generator.keras"))
    assert sorted(os.listdir(second / "generator" / "checkpoints")) == sorted(
        os.listdir(first / "generator" / "checkpoints"))
    assert any((second / "logs" / "generator").iterdir())
    report = json.loads((second / "report.json").read_text())
    assert report["generator_from"] == str(first) and report["generator_training"]["steps"] == 4
    assert report["quantization"]["scheme"] == "w4a8"
    markdown = (second / "report.md").read_text()
    assert (f"Taken from the run in {first} (`--generator_from`), where it trained; the figures below are from there"
            in markdown)
    # Not "this session's": the first run said so of the generator it had taken.
    assert "- steps: 4 (the last session that trained it from step 0; this one trained none)\n" in markdown
    assert "- wall time of the last session that trained it: " in markdown
    assert first_files == digests(first)
    # The same command again finds everything done; so does it without the flag, and with the source named through
    # a symbolic link, or both runs copied elsewhere (both were refused as "already has a generator").
    (tmp_path / "link").symlink_to(first)
    for extra in ([f"--generator_from={first}"], [], [f"--generator_from={tmp_path / 'link'}"]):
        assert train.main(["train", f"--flagfile={flagfile}", *extra]) == 0
        out = capsys.readouterr().out
        assert "taking" not in out and "distillation: already done" in out
    copies = tmp_path / "copies"
    for run in (first, second):
        shutil.copytree(run, copies / run.name, symlinks=True)
    assert train.main(["train", f"--flagfile={flagfile}", f"--work_dir={copies / second.name}",
                       f"--generator_from={copies / first.name}"]) == 0
    assert "distillation: already done" in capsys.readouterr().out
    # More generator steps train the taken generator on, here.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, tmp_path / 'longer', steps=6)}",
                       f"--generator_from={first}"]) == 0
    assert json.loads((tmp_path / "longer" / "report.json").read_text())["generator_training"]["resumed_from_step"] == 4
    assert "then trained on or pooled anew here" in (tmp_path / "longer" / "report.md").read_text()


def test_a_generator_is_taken_only_from_a_finished_run_with_its_settings(tmp_path, finished_run, tiny_teacher_file,
                                                                         capsys):
    first = tmp_path / "first"
    finished_run(first)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(first, unfinished)
    os.remove(unfinished / "generator.keras")
    trained_on = tmp_path / "trained_on"  # Its checkpoints went past the finished generator (6 steps, stopped).
    shutil.copytree(first, trained_on)
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, trained_on, steps=6)}",
                       "--distillation_steps=0"]) == 0
    state = json.loads((trained_on / "state.json").read_text())
    state["generator"] = json.loads((first / "state.json").read_text())["generator"]
    (trained_on / "state.json").write_text(json.dumps(state))
    shutil.copy(first / "generator.keras", trained_on / "generator.keras")
    config = json.loads((trained_on / "config.json").read_text())
    config["generator_training"]["steps"] = 8  # Asked for 8 steps, stopped at step 6.
    (trained_on / "config.json").write_text(json.dumps(config))
    own = tmp_path / "own"
    finished_run(own)
    capsys.readouterr()
    cut_short = tmp_path / "cut_short"  # Its config.json cut short.
    shutil.copytree(first, cut_short)
    (cut_short / "config.json").write_text((first / "config.json").read_text()[:100])
    cases = [
        (first, [], "is this run's own --work_dir"),
        (tmp_path / "missing", [], "no such directory"),
        (first / "generator.keras", [],
         "generator.keras is a file; name the work directory of the run that trained it"),
        (tmp_path, [], "not a run directory (it has no config.json)"),
        (unfinished, [], "that run's generator has not finished training; run it to the end first"),
        (trained_on, [], "has trained on from its finished 4 steps (to step 6); finish that run's 8 steps first, then "
                     "ask for --generator_steps=8 or more"),
        (first, ["--bn_distance=mse", "--seed=3"], "trained with other settings (loss.bn_distance, seed)"),
        (first, ["--generator_steps=3"], "has trained 4 steps, more than --generator_steps=3; ask for 4 or more"),
        # Not "remove it", as for this run's own config: that would lose what that run was trained with.
        (cut_short, [], f"; --generator_from={cut_short} cannot be checked against this run's settings; restore that "
                        "file or train a generator in this run"),
    ]
    for source, extra, message in cases:
        work_dir = first if "own --work_dir" in message else tmp_path / "new"
        flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=extra)
        assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={source}"]) == 2, message
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1, error
        assert not (tmp_path / "new").exists()  # Refused before anything was written.
    # A work directory that trained a generator of its own keeps it, and its config: a copy of a run given the
    # run's own command with --generator_from recorded the copy's path as its work_dir.
    own_config = (own / "config.json").read_bytes()
    copied = tmp_path / "copied"
    shutil.copytree(own, copied)
    for work_dir in (own, copied):
        assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}",
                           f"--generator_from={first}"]) == 2
        assert "already has a generator (generator.keras, generator)" in capsys.readouterr().err
        assert (work_dir / "config.json").read_bytes() == own_config
    shutil.rmtree(copied)
    # A run directory from someone else with a link in it: copied, the link carried the next write elsewhere.
    linked = tmp_path / "linked"
    shutil.copytree(first, linked)
    elsewhere = tmp_path / "mine.json"
    elsewhere.write_text("mine")
    os.remove(linked / "generator" / "history.json")
    os.symlink(elsewhere, linked / "generator" / "history.json")
    flagfile = _flagfile(tmp_path, tiny_teacher_file, tmp_path / "new", extra=["--generator_steps=6"])
    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={linked}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --generator_from={linked}: {linked / 'generator' / 'history.json'} is a symbolic link, and a run "
        "takes only files from another's directory: copy that run's directory without links (cp -rL), or train a "
        "generator in this run")
    assert elsewhere.read_text() == "mine" and not (tmp_path / "new").exists()


def test_an_exported_model_litert_refuses_is_named_in_one_line(tmp_path, tiny_teacher_file, monkeypatch, capsys):
    work_dir = tmp_path / "run"

    def refused_by_xnnpack(kind, model_bytes, keras_model, samples):  # As LiteRT refused one with tiny scales.
        raise UserError("cannot load the TFLite model: failed to create XNNPACK runtimeNode number 5 "
                        "(TfLiteXNNPackDelegate) failed to prepare.")

    monkeypatch.setattr(exported_model, "export_agreement_warning", refused_by_xnnpack)
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1] == (f"error: the exported ptq_int8 model {work_dir / 'ptq_int8.tflite'} does not run in LiteRT: "
                         "cannot load the TFLite model: failed to create XNNPACK runtimeNode number 5 "
                         "(TfLiteXNNPackDelegate) failed to prepare."), error


def test_a_generator_copy_cut_short_by_a_full_disk_is_made_again(tmp_path, finished_run, tiny_teacher_file,
                                                                 monkeypatch, capsys):
    import errno
    first = tmp_path / "first"
    finished_run(first)
    second = tmp_path / "second"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, second)

    link_or_copy = generator_reuse._link_or_copy

    def disk_full_at_the_model(source, destination):  # After the checkpoints and logs were copied.
        if source.endswith("generator.keras"):
            raise OSError(errno.ENOSPC, "No space left on device", destination)
        link_or_copy(source, destination)

    with monkeypatch.context() as patch:
        patch.setattr(generator_reuse, "_link_or_copy", disk_full_at_the_model)
        assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={first}"]) == 4
    assert "the disk is full" in capsys.readouterr().err
    assert not (second / "generator.keras").exists() and (second / "generator" / "checkpoints").is_dir()

    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={first}"]) == 0

    assert "generator: taking the generator of" in capsys.readouterr().out
    assert file_digest(str(second / "generator.keras")) == file_digest(str(first / "generator.keras"))
    assert not [name for name in os.listdir(second) if name.startswith(".tmp-")]
    # Linked, not copied, where the file system allows: the ImageNet configs' generator is about 1.2 GB.
    assert os.path.samefile(second / "generator.keras", first / "generator.keras")
    # Training the copy on replaces its files rather than writing into them: the first run's stay as they were.
    before = file_digest(str(first / "generator.keras"))
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, second, steps=6)}"]) == 0
    assert file_digest(str(first / "generator.keras")) == before
    assert training_loop.latest_step(str(first / "generator")) == 4
    assert training_loop.latest_step(str(second / "generator")) == 6


def _retrained(teacher_path):
    """Replaces the saved teacher at `teacher_path` by one with other weights, as retraining would."""
    import tf_keras
    model = tf_keras.models.load_model(teacher_path)
    model.set_weights([weight * 1.01 for weight in model.get_weights()])
    model.save(teacher_path)


def test_a_teacher_replaced_since_its_run_trained_is_refused_there(tmp_path, finished_run, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir)
    finished_run(work_dir)
    kept = {name: file_digest(str(work_dir / name)) for name in ("generator.keras", "student.h5", "ptq_int8.tflite")}
    capsys.readouterr()
    _retrained(tiny_teacher_file)

    # Before, the run went on: the new teacher's FP32 top-1 and the old one's generator, student and exports.
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2

    error = capsys.readouterr().err
    assert ("run's generator and student were trained against another teacher than tiny_teacher is now (its "
            "weights differ: was the model file replaced?)") in error
    assert len(error.strip().splitlines()) == 1
    assert kept == {name: file_digest(str(work_dir / name)) for name in kept}
    # A run from before the teacher's preprocessing was recorded beside its fingerprint cannot tell which changed.
    state = json.loads((work_dir / "state.json").read_text())
    (work_dir / "state.json").write_text(json.dumps({key: value for key, value in state.items()
                                                     if key != run_state.TEACHER_PREPROCESSING_KEY}))
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    assert "(its weights or preprocessing differ: was the model file replaced?)" in capsys.readouterr().err
    # Another teacher under another name is not a model file replaced: both are named.
    (tmp_path / "other").mkdir()
    other = str(tmp_path / "other" / "other_teacher.keras")
    shutil.copy(tiny_teacher_file, other)
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path / 'other', other, work_dir)}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {work_dir}'s generator and student were trained against another teacher ({tiny_teacher_file}) "
        f"than this run's ({other}); train this one in another work directory, or delete that one to start fresh")
    assert kept == {name: file_digest(str(work_dir / name)) for name in kept}
    # A run from before fingerprints were recorded takes the teacher it finds, and now says so: it recorded the
    # new teacher's fingerprint without a word, and QAT seemed to beat its teacher by points.
    recorded = state.pop(run_state.TEACHER_KEY)
    (work_dir / "state.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert f"note: {work_dir} {run_state.UNCHECKED_TEACHER_NOTE}\n" in capsys.readouterr().out
    assert run_state.UNCHECKED_TEACHER_NOTE.startswith(
        "records no fingerprint of the teacher it trained against (a run of an earlier version of zscgan_tf, or its "
        "state.json lost)")
    assert recorded != json.loads((work_dir / "state.json").read_text())[run_state.TEACHER_KEY]
    # Its generator, taken by another run, likewise.
    source_state = json.loads((work_dir / "state.json").read_text())
    del source_state[run_state.TEACHER_KEY]
    (work_dir / "state.json").write_text(json.dumps(source_state))
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, tmp_path / 'taker')}",
                       f"--generator_from={work_dir}", "--distillation_steps=0"]) == 0
    assert f"note: {work_dir} {run_state.UNCHECKED_TEACHER_NOTE}\n" in capsys.readouterr().out
    # Another teacher recorded, but nothing trained against it left (deleted): the run starts afresh.
    os.remove(work_dir / "generator.keras")
    for name in ("generator", "distillation"):
        shutil.rmtree(work_dir / name)
    (work_dir / "state.json").write_text(json.dumps({**state, run_state.TEACHER_KEY: recorded}))
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0


def test_a_teacher_named_otherwise_is_another_teacher_and_a_path_saved_relative_is_the_same(tmp_path):
    full = str(tmp_path / "models" / "teacher.keras")
    assert not config_changes.names_another_teacher(full, full)
    assert not config_changes.names_another_teacher("models/teacher.keras", full)  # As an earlier version saved it.
    assert not config_changes.names_another_teacher("", full)  # Named by none: how the teachers differ is asked.
    assert config_changes.names_another_teacher("builtin:digits_resnet8", "builtin:fashion_mnist_resnet20")
    # Moved under the same file name, then replaced: another teacher, as named (by file name alone, a replaced file).
    assert config_changes.names_another_teacher(full, str(tmp_path / "elsewhere" / "teacher.keras"))
    assert config_changes.saved_teacher_model({"teacher": {"model": full}}) == full
    for saved in ({}, [], {"teacher": "x"}, {"teacher": {"model": None}}, {"teacher": None}):
        assert config_changes.saved_teacher_model(saved) == ""


def test_a_work_directory_that_exists_and_cannot_be_written_is_not_said_to_be_created(tmp_path, monkeypatch):
    work_dir = str(tmp_path / "run")  # A finished run's, on a read-only mount.
    os.mkdir(work_dir)
    real_access = os.access  # Root writes whatever the mode: CI containers run as root.
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: (
        False if os.fspath(path) == work_dir else real_access(path, mode, **kwargs)))
    with pytest.raises(UserError) as refusal:
        pipeline.check_work_dir(config_lib.RunConfig(work_dir=work_dir))
    assert str(refusal.value) == f"cannot write to work directory {work_dir!r}: {work_dir!r} is not writable"
    with pytest.raises(UserError) as refusal:  # One to make beneath it is made, as before.
        pipeline.check_work_dir(config_lib.RunConfig(work_dir=os.path.join(work_dir, "inner")))
    assert str(refusal.value).startswith(f"cannot create work directory '{work_dir}{os.sep}inner': ")


def test_a_teacher_read_with_other_preprocessing_is_refused_as_such(tmp_path, finished_run, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir)
    finished_run(work_dir)
    capsys.readouterr()
    kept = {name: file_digest(str(work_dir / name)) for name in ("config.json", "state.json", "student.h5")}
    # Before, this asked whether the model file had been replaced, which it had not.
    for flags, then_and_now in ((["--teacher_preprocessing=raw"], "'tf' then, 'raw' now"),
                                (["--teacher_preprocessing=custom", "--teacher_preprocessing_mean=0.5",
                                  "--teacher_preprocessing_std=0.25"], "'tf' then, 'custom' (mean 0.5, std 0.25) now")):
        assert train.main(["train", f"--flagfile={flagfile}", *flags]) == 2
        assert (f"trained against another teacher than tiny_teacher is now (its preprocessing differs: {then_and_now} "
                "(--teacher_preprocessing or the model's sidecar))") in capsys.readouterr().err
        assert kept == {name: file_digest(str(work_dir / name)) for name in kept}


def test_a_generator_trained_against_a_replaced_teacher_is_not_taken(tmp_path, finished_run, tiny_teacher_file, capsys):
    first = tmp_path / "first"
    finished_run(first)
    _retrained(tiny_teacher_file)
    capsys.readouterr()
    flagfile = _flagfile(tmp_path, tiny_teacher_file, tmp_path / "second")
    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={first}"]) == 2
    assert (f"the generator of {first} was trained against another teacher than this run's (its weights differ: "
            "was the model file replaced?)") in capsys.readouterr().err
    assert not (tmp_path / "second").exists()  # Refused once the teacher loaded: config.json was written first.
    # Another teacher under another name is not a model file replaced: both are named.
    other = str(tmp_path / "other_teacher.keras")
    shutil.copy(tiny_teacher_file, other)
    _retrained(other)
    flagfile = _flagfile(tmp_path, other, tmp_path / "third")
    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={first}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the generator of {first} was trained against another teacher ({tiny_teacher_file}) than this run's "
        f"({other}); train a generator in this run")
    assert not (tmp_path / "third").exists()


def test_a_sample_grid_too_large_is_refused_by_the_rows_the_teacher_gives_it(tmp_path, tiny_teacher_file, capsys):
    # 100,000 columns of samples, made again every --image_every steps, held the first steps for minutes unsaid.
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir)
    assert train.main(["train", f"--flagfile={flagfile}", "--grid_samples_per_class=251"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: the sample grid holds at most 1,000 samples, got 251 columns (--grid_samples_per_class) x 4 rows (the "
        "teacher's classes, at most --grid_max_classes)")
    assert not work_dir.exists()
    # 250 columns of a teacher's 4 classes are 1,000 samples, whatever --grid_max_classes allows.
    zero_shot.check_grid_size(250, 20, types.SimpleNamespace(num_classes=4))


def test_generator_settings_these_images_do_not_allow_are_refused_before_the_work_directory(
        tmp_path, tiny_teacher_file, capsys):
    # Refused as the generator stage began, after config.json, state.json and .lock were written.
    work_dir = tmp_path / "run"
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}",
                       "--generator_blur_sigma=3"]) == 2
    assert capsys.readouterr().err.strip().startswith(
        "error: generator blur sigma (--generator_blur_sigma) must be between 0 and 2 pixels for 8x8 images")
    assert not work_dir.exists()


def test_a_run_resumes_with_its_teacher_moved_and_not_with_another_in_its_place(tmp_path, finished_run,
                                                                                tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    moved = str(tmp_path / "models" / "teacher.keras")
    os.makedirs(os.path.dirname(moved))
    for suffix in ("", ".json"):
        shutil.move(tiny_teacher_file + suffix, moved + suffix)
    capsys.readouterr()
    # Before, another path was another config, refused: the run could not be evaluated or resumed.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, moved, work_dir)}"]) == 0
    out = capsys.readouterr().out
    assert "generator: already trained" in out and "distillation: already done" in out
    assert json.loads((work_dir / "config.json").read_text())["teacher"]["model"] == moved
    # A generator is taken from a run whose teacher was elsewhere then, if it is the same teacher.
    flagfile = _flagfile(tmp_path, moved, tmp_path / "second", extra=["--quantization=w4a8"])
    first_config = json.loads((work_dir / "config.json").read_text())
    first_config["teacher"]["model"] = tiny_teacher_file  # As it was recorded before the move.
    (work_dir / "config.json").write_text(json.dumps(first_config))
    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={work_dir}"]) == 0
    assert "generator: taking the generator of" in capsys.readouterr().out
    # Another model at the new place is another teacher: refused, as another path with it would be.
    _retrained(moved)
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, moved, work_dir)}"]) == 2
    # The config names the teacher where it trained, under another file name: both are named.
    assert (f"trained against another teacher ({tiny_teacher_file}) than this run's ({moved})"
            in capsys.readouterr().err)


def test_teacher_settings_that_leave_the_teacher_as_it_was_read_do_not_bind_its_work_directory(
        tmp_path, finished_run, tiny_teacher_file, capsys):
    # Before, each was "a different config (teacher.alpha)": a finished run refused over a flag
    # its model file ignores, or over naming the preprocessing the teacher already had.
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir)
    finished_run(work_dir)
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={flagfile}", "--teacher_alpha=0.5", "--teacher_num_classes=5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"note: --teacher_alpha, --teacher_num_classes are for Keras Applications teachers "
                          f"(mobilenet_v2, resnet50, ...); --teacher={tiny_teacher_file} is not one and ignores them\n")
    assert "generator: already trained" in out and "distillation: already done" in out
    assert train.main(["train", f"--flagfile={flagfile}", "--teacher_preprocessing=tf"]) == 0  # Its sidecar's.
    # Another preprocessing is another teacher as read: refused, as before.
    assert train.main(["train", f"--flagfile={flagfile}", "--teacher_preprocessing=raw"]) == 2
    assert "trained against another teacher than tiny_teacher is now (its preprocessing differs" in (
        capsys.readouterr().err)


def test_a_run_directory_copied_elsewhere_resumes_there(tmp_path, finished_run, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    copied = tmp_path / "archive" / "run"
    shutil.copytree(work_dir, copied)
    before = {name: file_digest(str(copied / name)) for name in ("generator.keras", "student.h5", "qat_int8.tflite")}
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, copied)}"]) == 0
    out = capsys.readouterr().out
    assert "generator: already trained" in out and "distillation: already done" in out
    assert "export: converting" not in out  # Nothing retrained or converted again.
    assert {name: file_digest(str(copied / name)) for name in before} == before
    assert json.loads((copied / "config.json").read_text())["work_dir"] == str(copied)
    assert f"# Exported models ({copied})" in (copied / "export_report.md").read_text()


def test_joint_generator_run_keeps_the_stage_one_generator_file(tmp_path, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--joint_generator", "--mode_seeking_loss_weight=0.1"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert "training a copy of the generator along" in capsys.readouterr().out
    state = json.loads((work_dir / "state.json").read_text())
    assert state["generator"]["sha256"] == file_digest(str(work_dir / "generator.keras"))
    assert (work_dir / "qat_int8.tflite").is_file()
    assert json.loads((work_dir / "config.json").read_text())["distillation"]["joint_generator"] is True


def test_two_runs_with_one_seed_train_the_same_generator(tmp_path, tiny_teacher_file):
    weights = []
    for name in ("first", "second"):
        work_dir = tmp_path / name
        flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--distillation_steps=0"])
        assert train.main(["train", f"--flagfile={flagfile}"]) == 0
        weights.append(generator_lib.load_generator(str(work_dir / "generator.keras")).get_weights())
    for first, second in zip(*weights):
        assert (first == second).all()
    # No QAT: no scheme is reported as the student's (it was, W8A8 or not), and the export's settings are.
    quantization = json.loads((tmp_path / "second" / "report.json").read_text())["quantization"]
    assert "scheme" not in quantization and "low_bit_ranges" not in quantization
    export_settings = ("per_channel", "io_dtype", "calibration_samples", "allow_float_ops")
    assert {key: quantization[key] for key in export_settings} == {
        "per_channel": True, "io_dtype": "int8", "calibration_samples": 16, "allow_float_ops": False}


def _run_saved_without(tmp_path, finished_run, teacher_file, section, name, extra=()):
    """A finished run (default, or with `extra` flags) whose saved config lacks `section.name`, as runs saved
    before it existed. Without `extra`, it is a copy of the module's default run (`finished_run`, whose teacher
    is `teacher_file`).

    Returns:
      (work directory, the value the run saved before it was removed).
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    work_dir = tmp_path / "run"
    if extra:
        assert train.main(["train", f"--flagfile={_flagfile(tmp_path, teacher_file, work_dir, extra=extra)}"]) == 0
    else:
        finished_run(work_dir)
    saved = json.loads((work_dir / "config.json").read_text())
    value = saved[section].pop(name)
    (work_dir / "config.json").write_text(json.dumps(saved))
    return work_dir, value


def test_run_saved_before_a_setting_existed_still_resumes(tmp_path, finished_run, tiny_teacher_file, capsys):
    work_dir, _ = _run_saved_without(tmp_path, finished_run, tiny_teacher_file, "loss", "mode_seeking")
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 0
    assert "already trained" in capsys.readouterr().out
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--mode_seeking_loss_weight=1"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    assert "different config (loss.mode_seeking)" in capsys.readouterr().err


def test_a_rerun_leaves_an_unchanged_config_json_as_it_is_and_writes_one_that_lacks_a_setting(
        tmp_path, finished_run, tiny_teacher_file, capsys):
    # A real full disk (a tmpfs): a rerun rewrote its unchanged config.json first, and stopped there, on a disk still
    # full, before resuming anything.
    work_dir, _ = _run_saved_without(tmp_path, finished_run, tiny_teacher_file, "loss", "mode_seeking")
    flagfile = f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"
    assert train.main(["train", flagfile]) == 0  # Written with the setting, as a run of this version saves it.
    config_path = work_dir / "config.json"
    saved = config_path.read_bytes()
    assert "mode_seeking" in json.loads(saved)["loss"]
    # The export's report and labels were rewritten too, though no model was converted again.
    unchanged = {path: path.read_bytes() for path in (config_path, work_dir / "export_report.md",
                                                      work_dir / "labels.txt")}
    for path in unchanged:
        os.utime(path, ns=(1, 1))
    capsys.readouterr()
    assert train.main(["train", flagfile]) == 0
    assert "already trained" in capsys.readouterr().out
    for path, contents in unchanged.items():
        assert path.read_bytes() == contents and path.stat().st_mtime_ns == 1, path


@pytest.mark.parametrize("name, value_before, flag", [("blur_sigma", 0.0, "--generator_blur_sigma=1")])
def test_run_saved_before_a_generator_setting_existed_reads_as_run_without_it(tmp_path, finished_run,
                                                                              tiny_teacher_file, capsys, name,
                                                                              value_before, flag):
    work_dir, saved_value = _run_saved_without(tmp_path, finished_run, tiny_teacher_file, "generator", name)
    assert saved_value == value_before
    capsys.readouterr()
    # Its generator was made without the setting: resuming with it would reuse it under the wrong settings.
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=[flag])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    assert f"different config (generator.{name})" in capsys.readouterr().err
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 0
    assert "already trained" in capsys.readouterr().out


def test_run_saved_before_a_changed_default_existed_reads_as_run_with_the_old_value(tmp_path, finished_run,
                                                                                    tiny_teacher_file, capsys):
    work_dir, saved_value = _run_saved_without(tmp_path, finished_run, tiny_teacher_file, "distillation",
                                               "feature_loss_weight")
    assert saved_value == 1.0
    capsys.readouterr()
    # That run ran with the old value, so today's default differs from it ...
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 2
    assert "different config (distillation.feature_loss_weight)" in capsys.readouterr().err
    # ... and asking for the old behaviour resumes it.
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--feature_loss_weight=0"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("saved, inert", [
    ({"quantization": {"scheme": "W8A8"}}, {"quantization.low_bit_ranges",
                                             "quantization.keep_first_and_last_at_8_bits"}),
    ({"quantization": {"scheme": "w4a8"}}, set()),
    ({"quantization": {"scheme": "w8a4"}}, set()),
    # Without QAT, every QAT setting but the step count is inert, and the scheme with its options.
    ({"distillation": {"steps": 0}}, {f"distillation.{field.name}"
                                      for field in dataclasses.fields(config_lib.DistillationConfig)} - {
                                          "distillation.steps"} | {"quantization.scheme",
                                                                   *config_changes.LOW_BIT_OPTIONS}),
    ({"distillation": {"steps": 3}}, set()),
    # Damaged configs: nothing is inert, so every difference is named.
    ({"quantization": 5}, set()), ({"quantization": {"scheme": 8}}, set()), ({"distillation": 0}, set()), ({}, set()),
    ([], set())])
def test_only_an_8_bit_run_ignores_the_low_bit_options_and_only_a_run_without_qat_its_settings(saved, inert):
    assert config_changes.inert_settings(saved) == inert


def test_a_finished_run_measured_again_does_not_judge_its_generated_samples_again(tmp_path, finished_run,
                                                                                  tiny_teacher_file, capsys,
                                                                                  monkeypatch):
    # Hours at 1000 classes and 224x224 on a CPU, at every rerun of a finished run (on other data, say).
    from zscgan_tf import zero_shot
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir)
    finished_run(work_dir)
    report = json.loads((work_dir / "report.json").read_text())
    samples_png = (work_dir / "samples.png").read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(zero_shot, "evaluate_generator", lambda *args, **kwargs: pytest.fail("judged again"))
        assert train.main(["train", f"--flagfile={flagfile}", "--latency_runs=3"]) == 0
    assert "generated samples: already judged by the teacher (4 samples per class), as recorded in state.json" in (
        capsys.readouterr().out)
    assert json.loads((work_dir / "report.json").read_text())["generated_samples"] == report["generated_samples"]
    assert (work_dir / "samples.png").read_bytes() == samples_png
    # A recorded result of another shape (a hand's edit) is judged again: before, a TypeError's traceback.
    state = json.loads((work_dir / "state.json").read_text())
    recorded = state["generated_samples"]["result"]
    for result in (2, {"teacher_agreement": 0.5}, {**recorded, "teacher_agreement": None},
                   {**recorded, "mean_confidence": "0.5"}, {**recorded, "per_class_agreement": [1.0, "x"]}):
        state["generated_samples"]["result"] = result
        (work_dir / "state.json").write_text(json.dumps(state))
        assert train.main(["train", f"--flagfile={flagfile}", "--latency_runs=3"]) == 0
        assert "already judged" not in capsys.readouterr().out
        assert json.loads((work_dir / "report.json").read_text())["generated_samples"] == report["generated_samples"]
    # Other settings, or a grid that is not the one recorded, judge them again.
    (work_dir / "samples.png").write_bytes(b"damaged")
    assert train.main(["train", f"--flagfile={flagfile}", "--eval_samples_per_class=5"]) == 0
    assert "already judged" not in capsys.readouterr().out
    assert json.loads((work_dir / "report.json").read_text())["generated_samples"]["samples_per_class"] == 5
    assert (work_dir / "samples.png").read_bytes() == samples_png


def test_qat_settings_bind_a_directory_only_once_it_holds_a_student(tmp_path, finished_run, tiny_teacher_file, capsys):
    without_qat = tmp_path / "ptq"
    no_qat = ["--distillation_steps=0"]
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, without_qat, extra=no_qat)}"]) == 0
    # No student yet: QAT settings changed in a run without QAT resume (they were refused as another config).
    flagfile = _flagfile(tmp_path, tiny_teacher_file, without_qat, extra=no_qat + ["--temperature=9"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert "note: --distillation_batch_size, --distillation_checkpoint_every, --temperature do nothing" in (
        capsys.readouterr().out)
    # Nor a scheme, which the note calls inert too (refused), nor QAT with settings of its own after it.
    flagfile = _flagfile(tmp_path, tiny_teacher_file, without_qat, extra=no_qat + ["--quantization=w4a4"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    flagfile = _flagfile(tmp_path, tiny_teacher_file, without_qat, extra=["--temperature=7"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert "distillation: 3 steps" in capsys.readouterr().out
    assert json.loads((without_qat / "config.json").read_text())["quantization"]["scheme"] == "w8a8"
    # A student trained with other QAT settings binds them, with or without QAT now: its settings must not be
    # replaced under it (a later run with QAT would take it as trained with them).
    with_qat = tmp_path / "qat"
    finished_run(with_qat)
    # A run without QAT first, which records its 0 steps (a resumable change) in config.json.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, with_qat, extra=no_qat)}"]) == 0
    capsys.readouterr()
    flagfile = _flagfile(tmp_path, tiny_teacher_file, with_qat, extra=no_qat + ["--temperature=9"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    assert "holds a run with a different config (distillation.temperature)" in capsys.readouterr().err
    assert json.loads((with_qat / "config.json").read_text())["distillation"]["temperature"] != 9


def test_settings_a_run_never_uses_are_noted_when_changed_from_their_defaults():
    def notes(**sections):
        return config_changes.unused_settings_notes(config_lib.RunConfig(**sections))

    distillation, quantization = config_lib.DistillationConfig, config_lib.QuantizationConfig
    assert notes() == []  # Defaults: W8A8 with QAT.
    assert notes(distillation=distillation(steps=0)) == []  # Set to their defaults, nothing to say.
    assert notes(distillation=distillation(steps=0, temperature=2.0, batch_size=16, flip=True)) == [
        "--distillation_batch_size, --flip, --temperature do nothing with --distillation_steps=0: no QAT student is "
        "trained"]
    assert notes(distillation=distillation(steps=0, joint_generator=True)) == [
        "--joint_generator does nothing with --distillation_steps=0: no QAT student is trained"]
    assert notes(distillation=distillation(temperature=2.0)) == []  # Used by QAT.
    assert notes(quantization=quantization(keep_first_and_last_at_8_bits=False, low_bit_ranges="min_max")) == [
        "--keep_first_and_last_at_8_bits, --low_bit_ranges are for widths below 8 bits and do nothing in "
        "--quantization=w8a8"]
    assert notes(quantization=quantization(scheme="w4a4", keep_first_and_last_at_8_bits=False)) == []
    # Without QAT the scheme names no model (the int8 one is the teacher's, at 8 bits): its report described the
    # QAT of a scheme that never trained, and only --distillation_batch_size was noted.
    assert notes(distillation=distillation(steps=0, batch_size=16),
                 quantization=quantization(scheme="w4a4", low_bit_ranges="min_max")) == [
        "--distillation_batch_size, --quantization, --low_bit_ranges do nothing with --distillation_steps=0: no QAT "
        "student is trained"]
    assert notes(distillation=distillation(steps=0), quantization=quantization(low_bit_ranges="min_max")) == [
        "--low_bit_ranges does nothing with --distillation_steps=0: no QAT student is trained"]


@pytest.mark.parametrize("source, settings, note", [
    ("digits", {"data_dir": "/data"}, "--eval_data_dir does nothing with digits as the evaluation data"),
    ("digits", {"manual_dir": "/m", "split": "train"},
     "--eval_manual_dir does nothing with digits as the evaluation data"),
    ("fashion_mnist", {"data_dir": "/idx"}, None),  # IDX files, or TFDS's data directory.
    ("fashion_mnist", {"manual_dir": "/m"},
     "--eval_manual_dir does nothing with fashion_mnist as the evaluation data"),
    ("tfds:imagenet2012", {"data_dir": "/d", "manual_dir": "/m", "max_samples": 5}, None),
    ("/data/images", {"data_dir": "/d", "resize": True}, "--eval_data_dir does nothing with /data/images as the "
     "evaluation data"),
    ("none", {"split": "val", "max_samples": 10, "resize": True},
     "--eval_split, --eval_max_samples, --eval_resize do nothing with no evaluation data (--eval_dataset=none)"),
    ("none", {"latency_runs": 5, "samples_per_class": 3}, None),  # Latency and the generated samples' report.
    ("", {"data_dir": "/d"}, "--eval_data_dir does nothing with no evaluation data (the teacher names none)"),
    ("digits", {}, None)])
def test_evaluation_settings_a_source_never_reads_are_noted(source, settings, note):
    evaluation = config_lib.EvaluationConfig(dataset=source, **settings)
    assert evaluation_stage.unused_evaluation_settings(evaluation, source) == note


def test_low_bit_range_method_binds_a_w4a4_run_and_not_an_8_bit_one(tmp_path, finished_run, tiny_teacher_file, capsys):
    # Saved before the setting existed, both read as min/max ranges; only the W4A4 run used them.
    eight_bit_dir, saved_value = _run_saved_without(tmp_path / "w8a8", finished_run, tiny_teacher_file, "quantization",
                                                    "low_bit_ranges")
    assert saved_value == "mse"
    four_bit_dir, _ = _run_saved_without(tmp_path / "w4a4", finished_run, tiny_teacher_file, "quantization",
                                         "low_bit_ranges", extra=["--quantization=w4a4"])
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, eight_bit_dir)}"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert json.loads((eight_bit_dir / "config.json").read_text())["quantization"]["low_bit_ranges"] == "mse"
    w4a4 = ["--quantization=w4a4"]
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, four_bit_dir, extra=w4a4)}"]) == 2
    # The refusal says which flag takes the run on as it was: it offered only another student or deleting it.
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {four_bit_dir} holds a run with a different config (quantization.low_bit_ranges), which its generator "
        f"does not depend on: to train with it from that generator, pass another --work_dir and --generator_from="
        f"{four_bit_dir}; to go on with that run as it was, pass --low_bit_ranges=min_max; or delete that directory "
        "to start fresh")
    flagfile = _flagfile(tmp_path, tiny_teacher_file, four_bit_dir, extra=w4a4 + ["--low_bit_ranges=min_max"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--low_bit_ranges=percentile"], "--low_bit_ranges=percentile: value should be one of <mse|min_max>"),
    (["--flagfile=/nonexistent/demo.cfg"], "flagfile '/nonexistent/demo.cfg' does not exist"),
    (["--flagfile", "/nonexistent/demo.cfg"], "flagfile '/nonexistent/demo.cfg' does not exist"),
    (["--flagfile", "/"], "flagfile '/' is not a file"),
    # A forgotten --flagfile= used to run the default pipeline into runs/demo.
    (["configs/demo.cfg"], "'configs/demo.cfg' is not a flag: flags start with -- (a flagfile is given as "
                           "--flagfile=<path>"),
    (["--teacher=resnet9000"], "unknown teacher model 'resnet9000'"),
    (["--teacher=/nonexistent/teacher.keras"], "does not exist"),
    (["--batch_size=0"], "--batch_size must be positive, got 0"),
    (["--bn_loss_weight=-1"], "--bn_loss_weight must be non-negative"),
    (["--generator_variant=bogus"], "--generator_variant must be one of"),
    (["--bn_layer_weighting=bogus"], "--bn_layer_weighting=bogus: value should be one of <uniform|noise_floor>"),
    (["--generator_blur_sigma=-1"], "--generator_blur_sigma must be non-negative"),
    (["--generator_pool_size=0"], "--generator_pool_size must be in [1, 8], got 0"),
    (["--teacher_preprocessing_mean=a,b"], "comma-separated list of numbers"),
    # Statistics without the mode they belong to used to be dropped without a word.
    (["--teacher_preprocessing_mean=0.5", "--teacher_preprocessing_std=0.2"],
     "--teacher_preprocessing_mean and --teacher_preprocessing_std go with --teacher_preprocessing=custom"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, arguments, message):
    status = train.main(["train", f"--work_dir={tmp_path / 'run'}", *arguments])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert error.startswith("error: ") and message in error
    assert len(error.splitlines()) == 1


def test_a_config_missing_outside_the_checkout_says_where_the_configs_are(tmp_path, capsys, monkeypatch):
    # As an installed package's user meets the README's command outside the checkout: "does not exist" alone.
    monkeypatch.chdir(tmp_path)
    assert train.main(["train", "--flagfile=configs/demo.cfg"]) == 2
    assert capsys.readouterr().err.strip() == ("error: flagfile 'configs/demo.cfg' does not exist here: the configs "
                                               "are in the source repository; pass the path of one there")
    (tmp_path / "configs").mkdir()  # In a checkout, a mistyped name: no such hint.
    assert train.main(["train", "--flagfile=configs/demoo.cfg"]) == 2
    assert capsys.readouterr().err.strip() == "error: flagfile 'configs/demoo.cfg' does not exist"


def test_a_flagfile_line_without_dashes_is_refused_where_it_was_ignored(tmp_path, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["generator_steps=2"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: 'generator_steps=2' is not a flag: flags start with --")
    assert len(error.splitlines()) == 1 and not work_dir.exists()


def test_blur_wider_than_the_teacher_image_is_one_line_before_training(tmp_path, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--generator_blur_sigma=5"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "--generator_blur_sigma" in error and len(error.splitlines()) == 1
    assert not (work_dir / "generator.keras").exists()


def test_teacher_the_converter_cannot_make_integer_is_one_line_before_training(tmp_path, capsys):
    teacher_path = str(tmp_path / "elu_teacher.keras")
    build_two_block_classifier(extra_layer="elu").save(teacher_path)
    work_dir = tmp_path / "run"
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, teacher_path, work_dir)}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: the teacher cannot be exported as fully-integer TFLite, so this run would fail "
                            "at export, after training") and "ELU (#" in error and "layer 'elu'" in error
    assert "Pass --allow_float_ops to export int8 models that keep these ops float (a CPU or GPU" in error
    assert len(error.splitlines()) == 1
    assert not work_dir.exists()


@pytest.mark.parametrize("kind, message", [
    ("shared_conv", "error: TF-MOT could not quantize the teacher "),
    ("bn_axis_1", "error: the W8A8 QAT student cannot be exported as fully-integer TFLite, so this run would fail "
                  "at export, after training: it would keep ")])
def test_a_student_that_would_fail_after_training_is_one_line_before_it_and_ptq_alone_runs(tmp_path, capsys, kind,
                                                                                            message, monkeypatch):
    # Both were found only once the generator had trained: a TF-MOT error naming its API, or an
    # export error telling to "pass allow_float_ops=True".
    teacher_path = str(tmp_path / f"{kind}.keras")
    build_student_failing_classifier(kind).save(teacher_path)
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, teacher_path, work_dir)
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(message) and "--distillation_steps=0 for a run whose only int8 model is the " in error
    assert len(error.splitlines()) == 1 and not work_dir.exists()
    assert kind != "shared_conv" or "(layer 'shared' is applied 2 times: TF-MOT quantizes layers applied once)" in error
    assert train.main(["train", f"--flagfile={flagfile}", "--distillation_steps=0"]) == 0
    with open(work_dir / "ptq_int8.tflite", "rb") as model_file:
        assert tflite_model.inspect_tflite(model_file.read()).is_fully_integer
    # The flagfile's QAT settings, which the advised run does not use, are named once, before the teacher loads.
    out = capsys.readouterr().out
    note = ("note: --distillation_batch_size, --distillation_checkpoint_every do nothing with --distillation_steps=0: "
            "no QAT student is trained\n")
    assert out.count(note) == 1 and out.index(note) < out.index("teacher: ")
    # Rerun with QAT: refused before the config records it (it did after, and left distillation/generator.json).
    saved_config = (work_dir / "config.json").read_bytes()
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    assert capsys.readouterr().err.strip().startswith(message)
    assert (work_dir / "config.json").read_bytes() == saved_config and not (work_dir / "distillation").exists()
    # So for a teacher whose architecture has no JSON form, which records no passed check.
    monkeypatch.setattr(quantization_stages, "student_check_key", lambda *args: None)
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    assert capsys.readouterr().err.strip().startswith(message)
    assert (work_dir / "config.json").read_bytes() == saved_config and not (work_dir / "distillation").exists()


def test_a_per_tensor_w8a8_student_that_cannot_export_is_one_line_before_training_and_ptq_alone_runs(
        tmp_path, tiny_teacher_file, capsys):
    # Each of the tiny teacher's convolutions is followed by a BatchNormalization.
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--noper_channel"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: the W8A8 QAT student cannot be exported as fully-integer TFLite with per-tensor "
                            "weight scales (--noper_channel), so this run would fail at export, after training")
    assert "after training: it would keep DEQUANTIZE (#0), QUANTIZE (#1) float" in error
    assert "tensorflow/model-optimization#1131" in error and "--distillation_steps=0" in error
    assert len(error.splitlines()) == 1 and not work_dir.exists()
    assert "--allow_float_ops" not in error
    # Allowing float ops does not let those convolutions stay float, and the message says why.
    assert train.main(["train", f"--flagfile={flagfile}", "--allow_float_ops"]) == 2
    error = capsys.readouterr().err.strip()
    assert ("(tensorflow/model-optimization#1131). --allow_float_ops does not cover these: it keeps float the ops "
            "TFLite has no int8 kernel for, and convolutions have one. Keep per-channel weights") in error
    assert len(error.splitlines()) == 1 and not work_dir.exists()
    # The way out it names: the post-training model, with per-tensor weights.
    assert train.main(["train", f"--flagfile={flagfile}", "--distillation_steps=0"]) == 0
    with open(work_dir / "ptq_int8.tflite", "rb") as model_file:
        assert tflite_model.inspect_tflite(model_file.read()).is_fully_integer
    assert not (work_dir / "qat_int8.tflite").exists()
    # Simulated schemes are not exported, so per-tensor weights are theirs to train.
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={flagfile}", f"--work_dir={tmp_path / 'w4a4'}",
                       "--quantization=w4a4"]) == 0


def test_a_resumed_generator_stage_repeats_the_student_check_only_when_what_it_checked_changed(
        tmp_path, tiny_teacher_file, monkeypatch):
    # The check costs up to 30 s a start (ResNet50 at 224x224); a generator stopped and
    # resumed with the same teacher and settings has passed it already.
    built = []
    quantize_student = quantize.quantize_student
    monkeypatch.setattr(quantize, "quantize_student",
                        lambda *args, **kwargs: built.append(args[1]) or quantize_student(*args, **kwargs))

    def stopped_generator_stage(*args, **kwargs):
        raise KeyboardInterrupt  # As a stop during generator training, after the state is written.

    monkeypatch.setattr(generator_stage, "run", stopped_generator_stage)
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir)
    for arguments in ([], [], ["--io_dtype=uint8"], ["--io_dtype=uint8"], ["--distillation_steps=0"]):
        assert train.main(["train", f"--flagfile={flagfile}", *arguments]) == 130  # Stopped, as by Ctrl-C.
    # A student built at the first start and again for another input type; none without a student.
    assert len(built) == 2
    assert re.fullmatch("[0-9a-f]{64}", json.loads((work_dir / "state.json").read_text())["student_check"])
    monkeypatch.undo()
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0  # The run goes on and finishes.


def test_the_student_check_key_changes_with_the_teacher_and_each_setting_the_check_depends_on(tiny_teacher_file,
                                                                                             monkeypatch):
    teacher = teachers.load_teacher(TeacherSource(model=tiny_teacher_file))
    run_config = config_lib.RunConfig()
    key = quantization_stages.student_check_key(run_config, teacher, "fingerprint")
    assert key == quantization_stages.student_check_key(config_lib.RunConfig(), teacher, "fingerprint")
    assert key == quantization_stages.student_check_key(  # Where its files go does not matter.
        dataclasses.replace(run_config, work_dir="elsewhere"), teacher, "fingerprint")
    others = [quantization_stages.student_check_key(run_config, teacher, "another teacher"),
              quantization_stages.student_check_key(
                  dataclasses.replace(run_config, distillation=dataclasses.replace(run_config.distillation, steps=0)),
                  teacher, "fingerprint")]
    for name, value in (("per_channel", False), ("allow_float_ops", True), ("io_dtype", "uint8"),
                        ("scheme", "w4a4")):
        quantization = dataclasses.replace(run_config.quantization, **{name: value})
        others.append(quantization_stages.student_check_key(dataclasses.replace(run_config, quantization=quantization),
                                                            teacher, "fingerprint"))
    # The same weights in another architecture (a layer renamed) is another teacher to check.
    renamed = teachers.load_teacher(TeacherSource(model=tiny_teacher_file))
    renamed.model.layers[-1]._name = "renamed"
    others.append(quantization_stages.student_check_key(run_config, renamed, "fingerprint"))
    # Another TensorFlow converts the student otherwise; the package's version number never moved.
    import tensorflow as tf
    monkeypatch.setattr(tf, "__version__", "2.99.0")
    others.append(quantization_stages.student_check_key(run_config, teacher, "fingerprint"))
    assert len({key, *others}) == len(others) + 1


def test_allowed_float_ops_stay_float_in_the_int8_models_and_every_report_says_so(tmp_path, capsys):
    teacher_path = str(tmp_path / "elu_teacher.keras")
    build_two_block_classifier(extra_layer="elu").save(teacher_path)
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, teacher_path, work_dir, extra=["--allow_float_ops"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    output = capsys.readouterr().out
    float_ops = r"DEQUANTIZE \(#\d+\), ELU \(#\d+, layer 'elu'\), QUANTIZE \(#\d+\)"
    assert re.search(rf"^note: the int8 models will keep float ops \(--allow_float_ops\): {float_ops} \(a CPU or GPU "
                     r"delegate runs them; an Edge TPU or integer-only NPU leaves everything from the first of them "
                     r"to the CPU\)$", output, re.MULTILINE)
    for kind in ("ptq_int8", "qat_int8"):
        assert re.search(rf"^export: {kind} keeps float ops \(--allow_float_ops\): {float_ops}$", output, re.MULTILINE)
        model = tflite_model.inspect_tflite((work_dir / f"{kind}.tflite").read_bytes())
        assert [tensor.dtype for tensor in model.inputs + model.outputs] == ["int8", "int8"]
        assert [op.name for op in model.non_integer_ops] == ["DEQUANTIZE", "ELU", "QUANTIZE"]
    report = json.loads((work_dir / "report.json").read_text())
    assert report["quantization"]["float_ops"] == {kind: {"DEQUANTIZE": 1, "ELU": 1, "QUANTIZE": 1}
                                                   for kind in ("ptq_int8", "qat_int8")}
    markdown = (work_dir / "report.md").read_text()
    assert ("`qat_int8.tflite` is int8 with float ops inside (--allow_float_ops; `export_report.md` names them): "
            "DEQUANTIZE x1, ELU x1, QUANTIZE x1.") in markdown
    # What that means for a Coral Edge TPU, in the report a user reads first.
    assert report["quantization"]["edge_tpu"] == {
        kind: "not as is: DEQUANTIZE x1, ELU x1 not in Coral's list; 3 ops not 8-bit" for kind in ("ptq_int8", "qat_int8")}
    assert ("Coral Edge TPU (a static check, the Edge TPU compiler was not run; `export_report.md` has the details): "
            "`ptq_int8.tflite` not as is: DEQUANTIZE x1, ELU x1 not in Coral's list; 3 ops not 8-bit; "
            "`qat_int8.tflite` not as is:") in markdown
    export_report = (work_dir / "export_report.md").read_text()
    assert export_report.count("- fully integer: no\n  - not integer: DEQUANTIZE") == 2
    assert export_report.count("  - not integer: ELU (#2), inputs float32; outputs float32") == 2
    # And the Keras layer each computes, as the console said (the report named the op alone).
    assert export_report.count("- the Keras layers of the ops not integer: DEQUANTIZE (#1), ELU (#2, layer 'elu'), "
                               "QUANTIZE (#3)") == 2
    # The best model on real data is named an int8 one, not a fully-integer one.
    report["quantization"].update(dataset="digits", split="test", images=400, agreement={},
                                  top1={"fp32_keras": 0.95, "ptq_int8_tflite": 0.94, "qat_int8_tflite": 0.9475})
    assert ("Most accurate int8 model on these images: `qat_int8.tflite` (94.75%)."
            in run_report.format_report(report))
    # The same directory without the flag is refused before anything in it changes.
    qat_digest = file_digest(str(work_dir / "qat_int8.tflite"))
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, teacher_path, work_dir)}"]) == 2
    assert "Pass --allow_float_ops" in capsys.readouterr().err
    assert file_digest(str(work_dir / "qat_int8.tflite")) == qat_digest


def test_float_ops_allowed_in_a_finished_run_convert_again_without_training(tmp_path, finished_run, tiny_teacher_file,
                                                                            capsys):
    work_dir = tmp_path / "run"
    finished_run(work_dir)
    qat_bytes = (work_dir / "qat_int8.tflite").read_bytes()
    capsys.readouterr()
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--allow_float_ops"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    output = capsys.readouterr().out
    assert "generator: already trained" in output and "distillation: already done" in output
    assert "export: converting qat_int8" in output and "keeps float ops" not in output and "note:" not in output
    # This teacher has no op TFLite keeps float: the models are what they were, fully integer.
    assert (work_dir / "qat_int8.tflite").read_bytes() == qat_bytes
    assert "float_ops" not in json.loads((work_dir / "report.json").read_text())["quantization"]
    assert json.loads((work_dir / "config.json").read_text())["quantization"]["allow_float_ops"] is True


def test_an_int8_export_that_computes_something_else_is_warned_about():
    teacher = build_two_block_classifier(seed=0)
    samples = np.random.default_rng(0).standard_normal((40, 16, 16, 1)).astype(np.float32)
    model_bytes = export.convert_to_tflite(teacher, representative_data.representative_dataset_from_array(samples))
    assert exported_model.export_agreement_warning("ptq_int8", model_bytes, teacher, samples) is None
    other = build_two_block_classifier(seed=1)  # As if the converter had computed another model.
    warning = exported_model.export_agreement_warning("ptq_int8", model_bytes, other, samples)
    assert warning.startswith("the ptq_int8 TFLite model picks the class its Keras model picks on only ")
    assert "of 40 generated samples (expected 50% or more)" in warning


def test_blurred_generator_run_saves_a_blurring_generator(tmp_path, tiny_teacher_file):
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--generator_blur_sigma=1",
                                                                       "--distillation_steps=0"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    generator = generator_lib.load_generator(str(work_dir / "generator.keras"))
    assert [layer.sigma for layer in generator.layers if isinstance(layer, generator_lib.GaussianBlur)] == [1.0]
    assert json.loads((work_dir / "config.json").read_text())["generator"]["blur_sigma"] == 1.0


def test_pooled_generators_train_apart_resume_and_feed_qat(tmp_path, tiny_teacher_file, capsys):
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, extra=["--generator_pool_size=2"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    assert "generator 2 of 2 (seed 1000)" in capsys.readouterr().out
    generator = generator_lib.load_generator(str(work_dir / "generator.keras"))
    first, second = generator_lib.pool_members(generator)
    assert (first.name, second.name) == ("generator_1", "generator_2")
    # Trained apart from other seeds: different weights.
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))
    assert any((work_dir / "generator_2" / "checkpoints").iterdir())
    state = json.loads((work_dir / "state.json").read_text())
    assert [member["steps"] for member in state["generator"]["members"]] == [4, 4]
    report = json.loads((work_dir / "report.json").read_text())
    assert report["generator_training"]["generators"] == 2  # Wall time and speed of both trainings.
    assert report["generator_training"]["steady_samples_per_second"] > report["generator_training"]["samples_per_second"]
    assert "2 generators, one after the other" in (work_dir / "report.md").read_text()
    assert (work_dir / "qat_int8.tflite").is_file()
    assert json.loads((work_dir / "config.json").read_text())["generator"]["pool_size"] == 2
    # More steps resume both generators from their checkpoints.
    flagfile = _flagfile(tmp_path, tiny_teacher_file, work_dir, steps=6, extra=["--generator_pool_size=2"])
    assert train.main(["train", f"--flagfile={flagfile}"]) == 0
    state = json.loads((work_dir / "state.json").read_text())
    assert [(member["resumed_from_step"], member["steps"]) for member in state["generator"]["members"]] == [(4, 6),
                                                                                                          (4, 6)]


def test_another_pool_size_keeps_the_trained_generators_and_trains_only_the_rest(tmp_path, finished_run,
                                                                                 tiny_teacher_file, capsys):
    # A run saved before pools existed reads as a pool of one.
    work_dir, saved_pool_size = _run_saved_without(tmp_path / "grown", finished_run, tiny_teacher_file, "generator",
                                                   "pool_size")
    assert saved_pool_size == 1
    single = generator_lib.load_generator(str(work_dir / "generator.keras"))
    capsys.readouterr()
    two = ["--generator_pool_size=2"]
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir, extra=two)}"]) == 0
    output = capsys.readouterr().out
    assert ("holds 1 generator and --generator_pool_size=2: the first restored from its checkpoint, 1 more to train"
            in output)
    assert "generator 1 of 2 (seed 0): already trained (4 steps), restoring its checkpoint" in output
    assert "generator 2 of 2 (seed 1000): training 4 steps" in output
    assert "int8 models and reports built on the old generator are discarded" in output  # Then redone from the pool.
    first, second = generator_lib.pool_members(generator_lib.load_generator(str(work_dir / "generator.keras")))
    for kept, reloaded in zip(single.get_weights(), first.get_weights()):  # Not retrained.
        np.testing.assert_array_equal(kept, reloaded)
    state = json.loads((work_dir / "state.json").read_text())
    assert [(member["resumed_from_step"], member["steps"]) for member in state["generator"]["members"]] == [(4, 4),
                                                                                                          (0, 4)]
    assert json.loads((work_dir / "config.json").read_text())["generator"]["pool_size"] == 2
    # The pool a run of two trains from the start: a pool's first generator is the single one.
    fresh = tmp_path / "fresh"
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, fresh, extra=two)}"]) == 0
    for grown, trained in zip(generator_lib.load_generator(str(work_dir / "generator.keras")).get_weights(),
                              generator_lib.load_generator(str(fresh / "generator.keras")).get_weights()):
        np.testing.assert_array_equal(grown, trained)
    assert file_digest(str(work_dir / "qat_int8.tflite")) == file_digest(str(fresh / "qat_int8.tflite"))
    capsys.readouterr()
    # And back to one generator: none trains, the QAT built on the pool is redone on the first.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir)}"]) == 0
    output = capsys.readouterr().out
    assert "holds 2 generators and --generator_pool_size=1: the first restored from its checkpoint\n" in output
    assert "generator: already trained (4 steps), restoring its checkpoint" in output
    assert "int8 models and reports built on the old generator are discarded" in output
    rebuilt = generator_lib.load_generator(str(work_dir / "generator.keras"))
    assert generator_lib.pool_members(rebuilt) == [rebuilt]
    for kept, reloaded in zip(single.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(kept, reloaded)
    assert (work_dir / "generator_2" / "checkpoints").is_dir()  # Kept, should the pool grow again.
    # Checkpoints deleted to save space: the generator is taken from generator.keras, not trained again.
    shutil.rmtree(work_dir / "generator" / "checkpoints")
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir, extra=two)}"]) == 0
    output = capsys.readouterr().out
    assert "holds 1 generator and --generator_pool_size=2: the first restored from generator.keras\n" in output
    assert (f"generator 1 of 2 (seed 0): already trained (4 steps), taken from {work_dir / 'generator.keras'} (its "
            "checkpoints were deleted)") in output
    assert "generator 2 of 2 (seed 1000): already trained (4 steps), restoring its checkpoint" in output
    assert "training 4 steps" not in output
    assert file_digest(str(work_dir / "qat_int8.tflite")) == file_digest(str(fresh / "qat_int8.tflite"))
    assert "steps: 4 (trained in earlier sessions; this one trained none)" in (work_dir / "report.md").read_text()
    # Such a generator cannot train on: more steps would start it afresh and replace the trained pool.
    student = file_digest(str(work_dir / "student.h5"))
    capsys.readouterr()
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir, 6, two)}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: generator in {work_dir} finished 4 steps but has no checkpoint to train on from: "
        "--generator_steps=6 would train it afresh and replace generator.keras; keep --generator_steps=4, or train "
        "in another --work_dir")
    assert file_digest(str(work_dir / "student.h5")) == student  # Refused before anything was discarded.
    os.remove(work_dir / "generator.keras")  # With the trained pool gone too, starting afresh loses nothing more.
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, work_dir, 6, two)}"]) == 0
    assert "generator 1 of 2 (seed 0): training 6 steps" in capsys.readouterr().out


def test_generator_from_takes_what_a_pool_of_another_size_shares(tmp_path, finished_run, tiny_teacher_file, capsys):
    one = tmp_path / "one"
    finished_run(one)
    one_files = {path: file_digest(str(path)) for path in one.rglob("*") if path.is_file() and path.name != ".lock"}
    capsys.readouterr()
    two = tmp_path / "two"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, two, extra=["--generator_pool_size=2"])
    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={one}"]) == 0
    output = capsys.readouterr().out
    assert f"generator: taking the generator of {one} (4 steps)" in output
    assert "generator 1 of 2 (seed 0): already trained (4 steps)" in output
    assert "generator 2 of 2 (seed 1000): training 4 steps" in output
    first, second = generator_lib.pool_members(generator_lib.load_generator(str(two / "generator.keras")))
    for taken, member in zip(generator_lib.load_generator(str(one / "generator.keras")).get_weights(), first.get_weights()):
        np.testing.assert_array_equal(taken, member)
    assert "then trained on or pooled anew here" in (two / "report.md").read_text()
    assert one_files == {path: file_digest(str(path)) for path in one_files}  # The source is as it was.
    # From a pool to one generator: only the first is taken, and nothing trains.
    one_again = tmp_path / "one_again"
    flagfile = _flagfile(tmp_path, tiny_teacher_file, one_again)
    assert train.main(["train", f"--flagfile={flagfile}", f"--generator_from={two}"]) == 0
    output = capsys.readouterr().out
    assert f"generator: taking 1 of the 2 generators of {two} (4 steps)" in output
    assert "training 4 steps" not in output
    assert not (one_again / "generator_2").exists()
    assert file_digest(str(one_again / "qat_int8.tflite")) == file_digest(str(one / "qat_int8.tflite"))
    # A generator whose checkpoints were deleted is taken, but not to train on.
    shutil.rmtree(one / "generator" / "checkpoints")
    more = tmp_path / "more"
    assert train.main(["train", f"--flagfile={_flagfile(tmp_path, tiny_teacher_file, more, steps=6)}",
                       f"--generator_from={one}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --generator_from={one}: that run's generator has no checkpoints to train on from its 4 steps; ask "
        "for --generator_steps=4")
    assert not more.exists()


def test_unknown_flagfile_key_is_one_line(tmp_path, capsys):
    flagfile = tmp_path / "bad.cfg"
    flagfile.write_text("--generator_stepz=3\n")
    assert train.main(["train", f"--flagfile={flagfile}"]) == 2
    assert "generator_stepz" in capsys.readouterr().err


def test_unreadable_model_file_from_a_real_process(tmp_path):
    garbage = tmp_path / "broken.keras"
    garbage.write_bytes(b"\x00" * 100)
    result = subprocess.run([sys.executable, "-m", "zscgan_tf.train", f"--teacher={garbage}",
                             f"--work_dir={tmp_path / 'run'}"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: '{garbage}' is not a Keras archive, though "
                                                             "named .keras (not a whole zip file")


def test_photographs_of_different_sizes_are_cropped_and_resized_with_eval_resize(tmp_path, capsys, monkeypatch):
    # TFDS's mock imagenet2012 has images of random sizes, as the real one has.
    import tensorflow_datasets as tfds

    from conftest import build_tiny_classifier
    from zscgan_tf.preprocessing import Preprocessing
    from zscgan_tf.teacher_training import save_teacher

    teacher_path = str(tmp_path / "imagenet_tiny.keras")
    save_teacher(build_tiny_classifier(input_shape=(8, 8, 3), num_classes=1000), teacher_path, Preprocessing("tf"),
                 dataset="imagenet2012", class_names=[], metrics=None)
    work_dir = tmp_path / "run"
    flagfile = _flagfile(tmp_path, teacher_path, work_dir, steps=2,
                         extra=["--eval_dataset=tfds:imagenet2012", "--eval_split=validation",
                                "--eval_samples_per_class=1", "--distillation_steps=1"])
    with tfds.testing.mock_data(num_examples=6):
        assert train.main(["train", f"--flagfile={flagfile}"]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]  # After the note that TFDS prepares the data.
        assert error.startswith("error: TFDS dataset 'imagenet2012': images of different sizes cannot be batched")
        assert error.endswith("; pass --eval_resize to crop and resize them to the teacher's 8x8")
        # Evaluated in chunks of 4 images (batches of 2), as a 224x224 teacher's are in chunks of 256.
        monkeypatch.setattr(evaluation_stage, "EVALUATION_BATCH_SIZE", 2)
        monkeypatch.setattr(evaluation_stage, "EVALUATION_CHUNK_PIXELS", 4 * 8 * 8)
        assert evaluation_stage.evaluation_chunk_size((8, 8, 3)) == 4
        assert train.main(["train", f"--flagfile={flagfile}", "--eval_resize"]) == 0
    assert "each is cropped to its central 87.5% and resized to 8x8 as it loads" in capsys.readouterr().out
    report = json.loads((work_dir / "report.json").read_text())
    assert report["quantization"]["images"] == 6
    assert set(report["quantization"]["top1"]) == {"fp32_keras", "w8a8_qat_keras", "float_tflite", "ptq_int8_tflite",
                                                   "qat_int8_tflite"}
    # Chunks put back in order: Keras and TFLite students agree over 1,000 classes.
    assert report["quantization"]["agreement"]["qat_keras_vs_tflite"] >= 0.5


def test_a_folder_of_photographs_of_different_sizes_is_cropped_and_resized_with_eval_resize(tmp_path, capsys):
    # ImageNet's validation set as many users hold it: val/<synset>/<JPEG of its own size>.
    from PIL import Image

    from conftest import tiny_teacher

    rng = np.random.default_rng(0)
    for label in range(4):
        os.makedirs(tmp_path / "imagenet" / "val" / f"n0{label}")
        for index, (height, width) in enumerate(((20, 30), (41, 17))):
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                tmp_path / "imagenet" / "val" / f"n0{label}" / f"{index}.JPEG")
    teacher = tiny_teacher(input_shape=(8, 8, 3), trained=False)
    settings = config_lib.EvaluationConfig(dataset=str(tmp_path / "imagenet"), split="val")
    with pytest.raises(UserError, match=r"differ in size: .* \(width x height; 4 of 8 are 30x20\); pass "
                                        r"--eval_resize to crop and resize them to the teacher's 8x8$"):
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)

    settings = dataclasses.replace(settings, resize=True)
    dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher,
                                                     progress=True)

    assert dataset.images.shape == (8, 8, 8, 3) and dataset.name == "imagenet"
    np.testing.assert_array_equal(dataset.labels, np.repeat(np.arange(4), 2))
    out = capsys.readouterr().out
    # How many have the commonest size: one odd file among images of the teacher's size crops them all.
    assert "images differ in size (4 of 8 are 30x20); each is cropped to its central 87.5% and resized to 8x8 as it " \
        "loads" in out
    assert "loading images 8/8" in out


def test_evaluation_chunks_are_whole_keras_batches():
    # Fashion-MNIST's test set in four and a part: its progress line moves every 2,560 images, where it
    # moved once, at the end, after 36 s of silence for a ResNet-20 teacher.
    assert evaluation_stage.evaluation_chunk_size((28, 28, 1)) == 2560
    assert evaluation_stage.evaluation_chunk_size((224, 224, 3)) == 256
    assert evaluation_stage.evaluation_chunk_size((1024, 1024, 3)) == 256


def test_evaluation_stage_feeds_tflite_models_the_pixels_through_their_table(tmp_path, capsys, monkeypatch):
    from conftest import quadrant_images, tiny_teacher
    from zscgan_tf import evaluate, export, labeled_images

    made, predicted_from_floats = [], []

    class MadeClassifier(evaluate.TfliteClassifier):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def predict(self, inputs):
            predicted_from_floats.append(len(inputs))
            return super().predict(inputs)

    monkeypatch.setattr(evaluate, "TfliteClassifier", MadeClassifier)
    monkeypatch.setattr(evaluate, "evaluation_threads", lambda: 3)  # As on a machine with 3 cores.

    teacher = tiny_teacher()
    pixels, labels = quadrant_images(40, seed=3)
    labels[:8] = (labels[:8] + 1) % 4  # Mislabelled: top-1 and agreement with FP32 differ.
    images = np.round(pixels).astype(np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255  # The calibration sees every level of [-1, 1].
    dataset = labeled_images.LabeledImages(images=images, labels=labels, num_classes=4, name="quadrants")
    inputs = teacher.preprocessing.apply(images)
    path = str(tmp_path / "ptq_int8.tflite")
    model_bytes = export.convert_to_tflite(teacher.model, representative_data.representative_dataset_from_array(inputs),
                                           output_path=path)
    made.clear()  # The one the conversion loaded its result with.
    config = config_lib.RunConfig(work_dir=str(tmp_path), evaluation=config_lib.EvaluationConfig(latency_runs=1))
    results = evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)
    assert predicted_from_floats == []  # Every TFLite figure is from the pixels, as a device reads them.
    assert results["top1"]["fp32_keras"] < results["same_class_as_fp32"]["ptq_int8_tflite"]
    assert (tmp_path / "evaluation" / "predictions.npz").is_file()  # In the run's directory, nowhere else.
    out = capsys.readouterr().out
    assert "evaluation: latency of 1 TFLite model, 1 run at each of 1 and 2 threads" in out
    # ImageNet's 50,000 images take hours: shown as they go.
    assert f"evaluation (2 models) {len(labels)}/{len(labels)} [" in out
    # Latency at the thread counts it names; accuracy on every core.
    assert sorted(classifier.num_threads for classifier in made) == [1, 2, 3]
    classifier = evaluate.TfliteClassifier(model_bytes)
    assert len(np.unique(classifier.pixel_table(teacher.preprocessing))) == 256  # Every level kept.
    # Re-quantizing the preprocessed floats instead rounds some tied levels the other way.
    assert not np.array_equal(classifier.predict(inputs), classifier.predict_pixels(images, teacher.preprocessing))
    expected = evaluate.top1_accuracy(classifier.predict_pixels(images, teacher.preprocessing), labels)
    assert results["top1"]["ptq_int8_tflite"] == expected
    fp32_logits = evaluate.keras_predict(teacher.model, inputs)
    assert results["top1"]["fp32_keras"] == evaluate.top1_accuracy(fp32_logits, labels)
    tflite_classes = np.argmax(classifier.predict_pixels(images, teacher.preprocessing), axis=1)
    assert results["same_class_as_fp32"] == {"ptq_int8_tflite": float(np.mean(tflite_classes == np.argmax(fp32_logits,
                                                                                                           axis=1)))}
    drop = evaluate.largest_class_drop(np.argmax(fp32_logits, axis=1), tflite_classes, labels)
    assert results["largest_class_drop"] == ({} if drop is None else {"ptq_int8_tflite": {
        "class": drop.label, "images": drop.images, "fp32": drop.reference, "model": drop.model}})


def test_a_qat_student_and_its_int8_file_compute_on_the_same_input_and_the_agreement_says_so(tmp_path, monkeypatch):
    # For [-1, 1] inputs the student's input quantizer (nudging in float32) had levels -127 to 128 of 2/255 and the
    # converter (in double) gave its file -128 to 127: each pixel reached the file a step below where the student
    # had trained on it, and the agreement compared the two on their own inputs.
    from conftest import quadrant_images, tiny_teacher
    from zscgan_tf import evaluate, export, labeled_images, quantizer_ranges

    keras_inputs = []
    keras_predict = evaluate.keras_predict
    monkeypatch.setattr(evaluate, "keras_predict", lambda model, inputs, *args, **kwargs: (
        keras_inputs.append((model, np.array(inputs))), keras_predict(model, inputs, *args, **kwargs))[1])
    teacher = tiny_teacher()
    pixels, labels = quadrant_images(40, seed=3)
    images = np.round(pixels).astype(np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255
    inputs = teacher.preprocessing.apply(images)
    student, _ = quantize.quantize_student(teacher.model, calibration_inputs=inputs,
                                           input_range=teacher.input_range())
    input_quantizer = quantizer_ranges.model_input_quantizer(student)
    as_trained = input_quantizer(inputs, training=False).numpy()
    dataset = labeled_images.LabeledImages(images=images, labels=labels, num_classes=4, name="quadrants")
    config = config_lib.RunConfig(work_dir=str(tmp_path), evaluation=config_lib.EvaluationConfig(latency_runs=1))
    path = str(tmp_path / "qat_int8.tflite")
    for io_dtype in ("int8", "uint8"):
        model_bytes = export.convert_to_tflite(student, representative_data.representative_dataset_from_array(inputs),
                                               io_dtype=io_dtype, output_path=path)
        classifier = evaluate.TfliteClassifier(model_bytes)
        # A device gives the file its pixels as they are (uint8) or less 128 (int8), and the file reads them
        # as the student's input quantizer does, every level distinct.
        np.testing.assert_array_equal(classifier.pixel_table(teacher.preprocessing)[0],
                                      np.arange(256) - (128 if io_dtype == "int8" else 0))
        seen = classifier.input_as_seen(images, teacher.preprocessing)
        np.testing.assert_allclose(seen, as_trained, rtol=0, atol=1e-6)
        assert evaluation_stage.reads_pixels_as(student, classifier, teacher.preprocessing)
    # The range the student trains with is left as it was.
    assert float(input_quantizer.quantizer_vars["min_var"].numpy()) == -1.0
    keras_inputs.clear()
    results = evaluation_stage.run(config, teacher, student, {"qat_int8": path}, dataset)
    assert sum(model is student for model, _ in keras_inputs) == 1  # Its own run serves the agreement.
    tflite_classes = np.argmax(classifier.predict_pixels(images, teacher.preprocessing), axis=1)
    own = np.argmax(evaluate.keras_predict(student, inputs), axis=1)
    assert results["agreement"] == {"qat_keras_vs_tflite": float(np.mean(own == tflite_classes))}
    # A file exported as before reads each pixel a step below the student: the agreement runs the student on it.
    monkeypatch.setattr(quantizer_ranges, "model_input_ranges_as_quantized", lambda model: contextlib.nullcontext())
    export.convert_to_tflite(student, representative_data.representative_dataset_from_array(inputs), output_path=path)
    classifier = evaluate.TfliteClassifier((tmp_path / "qat_int8.tflite").read_bytes())
    seen = classifier.input_as_seen(images, teacher.preprocessing)
    step = classifier.input_details["quantization"][0]
    np.testing.assert_allclose(as_trained - seen, step, rtol=1e-3)
    assert not evaluation_stage.reads_pixels_as(student, classifier, teacher.preprocessing)
    keras_inputs.clear()
    results = evaluation_stage.run(config, teacher, student, {"qat_int8": path}, dataset)
    assert sum(model is student and np.array_equal(given, seen) for model, given in keras_inputs) == 1
    tflite_classes = np.argmax(classifier.predict_pixels(images, teacher.preprocessing), axis=1)
    on_its_input = np.argmax(evaluate.keras_predict(student, seen), axis=1)
    assert results["agreement"] == {"qat_keras_vs_tflite": float(np.mean(on_its_input == tflite_classes))}
    # The student's own top-1 is on the preprocessed pixels, and the extra run is not a model of the table.
    assert set(results["top1"]) == {"fp32_keras", "w8a8_qat_keras", "qat_int8_tflite"}
    assert results["top1"]["w8a8_qat_keras"] == evaluate.top1_accuracy(evaluate.keras_predict(student, inputs), labels)


def _teacher_images_and_int8_file(tmp_path, per_class):
    """The tiny teacher, `per_class` quadrant images of each of its classes as uint8 evaluation data, and
    the teacher's int8 file (`ptq_int8.tflite` in `tmp_path`), calibrated on them."""
    from conftest import quadrant_images, tiny_teacher

    teacher = tiny_teacher()
    pixels, labels = quadrant_images(per_class, seed=3)
    dataset = labeled_images.LabeledImages(images=np.round(pixels).astype(np.uint8), labels=labels, num_classes=4,
                                           name="q")
    path = str(tmp_path / "ptq_int8.tflite")
    export.convert_to_tflite(teacher.model, representative_data.representative_dataset_from_array(
        teacher.preprocessing.apply(dataset.images)), output_path=path)
    return teacher, dataset, path


@pytest.mark.parametrize("save_interval, stop", [(0.0, KeyboardInterrupt()), (3600.0, KeyboardInterrupt()),
                                                 (3600.0, BrokenPipeError(errno.EPIPE, "Broken pipe"))])
def test_an_interrupted_evaluation_resumes_from_the_predictions_it_saved(tmp_path, monkeypatch, capsys,
                                                                          save_interval, stop):
    from zscgan_tf import evaluate, evaluation_progress, stop_signals
    from zscgan_tf.training_loop import TrainingInterrupted

    teacher, dataset, path = _teacher_images_and_int8_file(tmp_path, 10)  # 40 images, evaluated 8 at a time.
    config = config_lib.RunConfig(work_dir=str(tmp_path), evaluation=config_lib.EvaluationConfig(latency_runs=1))
    monkeypatch.setattr(evaluation_stage, "evaluation_chunk_size", lambda image_shape: 8)
    # Saved at the interval (after every chunk here), or when interrupted between two saves.
    monkeypatch.setattr(evaluation_progress, "SAVE_INTERVAL_SECONDS", save_interval)
    expected = evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)
    os.remove(tmp_path / evaluation_progress.PREDICTIONS_FILE)
    keras_predict, chunks, interrupt_at = evaluate.keras_predict, [], [4]

    def interrupted_at_the_fourth_chunk(model, inputs, batch_size=None):
        chunks.append(len(inputs))
        if len(chunks) in interrupt_at:
            interrupt_at.clear()
            raise stop  # Ctrl-C, or the machine going down, hours into ImageNet.
        return keras_predict(model, inputs, batch_size)

    monkeypatch.setattr(evaluate, "keras_predict", interrupted_at_the_fourth_chunk)
    # A BrokenPipeError is a stop when stdout's reader has gone (`| head`), as `stop_signals` finds out.
    monkeypatch.setattr(stop_signals, "output_closed", lambda: True)
    with pytest.raises(TrainingInterrupted) as interruption:
        evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)
    # Where it stopped, as a training stage says its step: the command's line said "stopped: interrupted" alone.
    how = "interrupted" if isinstance(stop, KeyboardInterrupt) else "output closed"
    assert str(interruption.value) == (f"{how} at evaluation image 24 of 40; predictions saved, rerun the same "
                                       "command to resume")
    chunks.clear()
    capsys.readouterr()

    resumed = evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)

    assert "evaluation: resuming at image 24 of 40" in capsys.readouterr().out
    assert chunks == [8, 8]  # Only the images not done before.
    assert resumed["top1"] == expected["top1"]
    chunks.clear()
    assert evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)["top1"] == (
        expected["top1"])
    assert chunks == [] and "predictions on these images were saved by an earlier run" in capsys.readouterr().out
    # Another model, or other images, start afresh.
    export.convert_to_tflite(teacher.model, representative_data.representative_dataset_from_array(
        teacher.preprocessing.apply(dataset.images[:4])), output_path=path)
    evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)
    assert len(chunks) == 5
    chunks.clear()
    fewer = labeled_images.LabeledImages(images=dataset.images[:16], labels=dataset.labels[:16], num_classes=4, name="q")
    evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, fewer)
    assert len(chunks) == 2
    chunks.clear()
    (tmp_path / evaluation_progress.PREDICTIONS_FILE).write_bytes(b"cut short")  # Unreadable: started afresh.
    assert evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, fewer)["images"] == 16
    assert len(chunks) == 2


def test_an_evaluation_whose_first_save_meets_a_full_disk_leaves_no_evaluation_folder(tmp_path, monkeypatch):
    # A real full disk (a tmpfs): the run stopped with one line and exit 4, and left an empty evaluation/ behind.
    from zscgan_tf import evaluation_progress, files

    teacher, dataset, path = _teacher_images_and_int8_file(tmp_path, 2)
    config = config_lib.RunConfig(work_dir=str(tmp_path), evaluation=config_lib.EvaluationConfig(latency_runs=1))
    save = evaluation_progress.save

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    def saved_on_a_full_disk(*args):
        with monkeypatch.context() as full:
            full.setattr(files.os, "fsync", disk_full)
            save(*args)

    monkeypatch.setattr(evaluation_progress, "save", saved_on_a_full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)
    assert raised.value.filename == str(tmp_path / evaluation_progress.PREDICTIONS_FILE)
    assert sorted(os.listdir(tmp_path)) == ["ptq_int8.tflite"]
    # One an earlier run made stays, as it was.
    (tmp_path / "evaluation").mkdir()
    with pytest.raises(OSError, match="No space left on device"):
        evaluation_stage.run(config, teacher, None, {"ptq_int8": path}, dataset)
    assert os.listdir(tmp_path / "evaluation") == []


def test_a_student_saved_or_checkpointed_with_a_narrower_input_range_comes_back_covering_every_pixel(tmp_path):
    import tensorflow as tf
    from conftest import tiny_teacher
    from zscgan_tf import generator as generator_lib, quantize, quantization_stages

    teacher = tiny_teacher()
    # A student built as before the input's range covered every pixel: from samples short of [-1, 1].
    narrow = 0.9 * np.tanh(np.random.default_rng(0).standard_normal((16,) + teacher.image_shape)).astype(np.float32)
    student, _ = quantize.quantize_student(teacher.model, calibration_inputs=narrow)

    def input_range(model):
        return tuple(round(float(w.numpy()), 4) for w in model.get_layer(index=1).weights
                     if w.name.endswith(("_min:0", "_max:0")))

    narrow_range = (round(float(narrow.min()), 4), round(float(narrow.max()), 4))
    assert input_range(student) == narrow_range
    path = str(tmp_path / "student.h5")
    student.save(path)
    assert input_range(quantization_stages.load_student(path)) == narrow_range
    assert input_range(quantization_stages.load_student(path, teacher.input_range())) == (-1.0, 1.0)
    # A QAT checkpoint of it, restored the way tools/convert.py restores a run's.
    run_config = config_lib.RunConfig()
    generator = generator_lib.build_generator(
        generator_lib.GeneratorSpec(num_classes=teacher.num_classes, image_shape=teacher.image_shape, noise_dim=8,
                                    base_channels=8), teacher.preprocessing)
    tf.train.Checkpoint(student=student).save(str(tmp_path / "checkpoints" / "ckpt"))
    restored = quantization_stages.restore_student(run_config, teacher, generator, narrow,
                                                   str(tmp_path / "checkpoints"))
    assert input_range(restored) == (-1.0, 1.0)


def test_the_class_a_model_lowers_most_is_named_by_the_data_or_else_by_the_teacher():
    # IDX files name no class: the report gave a bare "6" where the teacher's sidecar says "Shirt".
    from conftest import tiny_teacher
    from zscgan_tf import labeled_images

    predicted = {"fp32_keras": np.array([0, 0, 1, 1]), "qat_int8_tflite": np.array([0, 1, 1, 1])}
    labels = np.array([0, 0, 1, 1])
    named = evaluation_stage._against_fp32(predicted, labels, ("T-shirt", "Shirt"))
    assert named["largest_class_drop"]["qat_int8_tflite"]["name"] == "T-shirt"
    assert "name" not in evaluation_stage._against_fp32(predicted, labels, ())["largest_class_drop"]["qat_int8_tflite"]
    # The names: the data's, else the teacher's (its sidecar's), else none.
    teacher = tiny_teacher()
    named_teacher = dataclasses.replace(teacher, description={"class_names": ["a", "b", "c", "d"]})
    images = np.zeros((4, 8, 8, 1), np.uint8)
    unnamed = labeled_images.LabeledImages(images=images, labels=np.arange(4), num_classes=4, name="idx")
    folders = dataclasses.replace(unnamed, class_names=("w", "x", "y", "z"))
    assert evaluation_stage.class_names_of(unnamed, named_teacher) == ("a", "b", "c", "d")
    assert evaluation_stage.class_names_of(folders, named_teacher) == ("w", "x", "y", "z")
    assert evaluation_stage.class_names_of(unnamed, teacher) == ()


def test_the_report_gives_the_teachers_training_metrics_in_words():
    metrics = {"epochs": 2, "test_accuracy": 0.92778, "test_accuracy_training_mode": 0.8306, "train_accuracy": 0.9534,
               "wall_seconds": 2.79, "note": "fine-tuned"}
    assert run_report._teacher_metrics(metrics) == ("2 epochs, test top-1 92.78%, test top-1 in training mode 83.06%, "
                                                  "train top-1 (on at most 4,096 training images) 95.34%, trained in "
                                                  "0m03s, note fine-tuned")
    # A training that diverged records NaN, which report.json holds as null: it read "test top-1 None".
    assert run_report._teacher_metrics({"test_accuracy": None, "epochs": 1}) == ("test top-1 not a finite number, "
                                                                                "1 epoch")


def test_a_folder_of_some_of_the_teachers_classes_is_matched_to_them_by_name(tmp_path, capsys):
    from PIL import Image

    from conftest import tiny_teacher

    for class_name in ("dog", "bird"):
        os.makedirs(tmp_path / "photos" / class_name)
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "photos" / class_name / "0.png")
    teacher = dataclasses.replace(tiny_teacher(), description={"class_names": ["cat", "dog", "bird", "fish"]})
    settings = config_lib.EvaluationConfig(dataset=str(tmp_path / "photos"))

    dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)

    np.testing.assert_array_equal(dataset.labels, [2, 1])  # bird, dog: the sorted folders, as the teacher numbers them.
    assert dataset.num_classes == 4 and dataset.class_names == ("cat", "dog", "bird", "fish")
    assert "photos holds 2 of the teacher's 4 classes, matched to them by name" in capsys.readouterr().out
    # The reports' description of the images says so too: a top-1 over 2 classes read as one over all 4.
    assert dataset.preparation[-1] == "2 of the teacher's 4 classes, matched by name"
    os.makedirs(tmp_path / "photos" / "zebra")
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "photos" / "zebra" / "0.png")
    # Refused from the folder names, before any image is read (this one would be "cannot read image"): two are the
    # teacher's classes, and "zebra" none of them.
    (tmp_path / "photos" / "zebra" / "1.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="2 of its 3 class names are the teacher's, but not 'zebra', .*leave out "
                                        "classes it does not predict \\(the teacher's other classes: 'cat', 'fish'\\)"):
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)
    # Three unnamed classes against four outputs: refused the same way, names or not.
    with pytest.raises(UserError, match="has 3 classes but the teacher predicts 4"):
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), tiny_teacher())


def test_class_folders_are_matched_by_name_as_a_folder_can_write_it_and_half_matched_names_are_refused(
        tmp_path, capsys):
    # "T-shirt/top" can name no folder: nine of Fashion-MNIST's ten folders matched the teacher's names, and the
    # whole folder was read in sorted order instead, giving 37% (with a warning in the console only).
    from PIL import Image

    from conftest import tiny_teacher

    teacher = dataclasses.replace(tiny_teacher(), description={"class_names": ["T-shirt/top", "Trouser", "Ankle boot",
                                                                             "Bag"]})
    for class_name in ("t-shirt_top", "trouser", "ankle_boot", "Bag"):
        os.makedirs(tmp_path / "photos" / class_name)
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "photos" / class_name / "0.png")
    settings = config_lib.EvaluationConfig(dataset=str(tmp_path / "photos"))

    dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)

    # Sorted: Bag, ankle_boot, t-shirt_top, trouser; the teacher's outputs: 3, 2, 0, 1.
    np.testing.assert_array_equal(dataset.labels, [3, 2, 0, 1])
    assert dataset.class_names == ("T-shirt/top", "Trouser", "Ankle boot", "Bag")
    assert "photos holds 4 of the teacher's 4 classes, matched to them by name" in capsys.readouterr().out
    # Three named after the teacher's classes and one not: neither the names nor the sorted order can say which
    # output "tshirts" is. Refused from the names, before any image is read.
    os.rename(tmp_path / "photos" / "t-shirt_top", tmp_path / "photos" / "tshirts")
    (tmp_path / "photos" / "tshirts" / "1.png").write_bytes(b"not a png")
    with pytest.raises(UserError) as refusal:
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)
    assert str(refusal.value) == (
        f"evaluation dataset {str(tmp_path / 'photos')!r}: 3 of its 4 class names are the teacher's, but not "
        "'tshirts', so neither their names nor their sorted order say which of the teacher's outputs those are; name "
        "each class folder after the teacher's class it holds, and leave out classes it does not predict (the "
        "teacher's other classes: 'T-shirt/top')")
    # Names none of which is the teacher's ("class_0", ...) are its outputs in sorted order, as before.
    for index, class_name in enumerate(sorted(os.listdir(tmp_path / "photos"))):
        os.rename(tmp_path / "photos" / class_name, tmp_path / "photos" / f"class_{index}")
    (tmp_path / "photos" / "class_3" / "1.png").unlink()
    dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)
    np.testing.assert_array_equal(dataset.labels, [0, 1, 2, 3])


def test_labels_in_another_order_are_warned_of_after_the_first_chunk_and_in_the_report(tmp_path, monkeypatch,
                                                                                       capsys):
    # The warning came once every model had run on every image (hours for ImageNet), and only in the console.
    from conftest import quadrant_images, tiny_teacher
    from zscgan_tf import labeled_images

    images, labels = quadrant_images(64, seed=3)
    misordered = labeled_images.LabeledImages(images.astype(np.uint8), (labels + 1) % 4, num_classes=4,
                                              name="quadrants")
    monkeypatch.setattr(evaluation_stage, "EVALUATION_BATCH_SIZE", 32)
    monkeypatch.setattr(evaluation_stage, "EVALUATION_CHUNK_PIXELS", 128 * 8 * 8)  # 128 images: two chunks.
    run_config = config_lib.RunConfig(work_dir=str(tmp_path), evaluation=config_lib.EvaluationConfig(latency_runs=1))
    results = evaluation_stage.run(run_config, tiny_teacher(), None, {}, misordered, progress=False)
    out = capsys.readouterr().out
    early = re.search(r"^warning: on the first 128 of 256 images, the FP32 teacher scores [\d.]+% on the evaluation "
                      r"data, and for \d of its \d labels it mostly predicts another class .*; the evaluation goes on "
                      r"\(Ctrl-C stops it\)$", out, re.MULTILINE)
    assert early, out
    assert results["label_order_warning"].startswith("the FP32 teacher scores ")
    assert f"warning: {results['label_order_warning']}\n" in out
    # In order, nothing is said.
    ordered = dataclasses.replace(misordered, labels=labels)
    results = evaluation_stage.run(dataclasses.replace(run_config, work_dir=str(tmp_path / "ordered")),
                                   tiny_teacher(), None, {}, ordered, progress=False)
    assert "label_order_warning" not in results and "warning" not in capsys.readouterr().out
    assert results["top1"]["fp32_keras"] > 0.9


def test_idx_files_whose_labels_stop_short_of_the_last_class_are_the_teachers_outputs(tmp_path, capsys):
    from conftest import idx_bytes, tiny_teacher, write_idx_split

    teacher = tiny_teacher()
    images = np.full((3,) + teacher.image_shape[:2], 100, np.uint8)
    write_idx_split(tmp_path, "t10k", images, np.array([0, 2, 1]), compressed=False)
    settings = config_lib.EvaluationConfig(dataset=str(tmp_path), split="test")

    # Before: "has 3 classes but the teacher predicts 4", since IDX files carry no class count.
    dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)

    assert dataset.num_classes == teacher.num_classes == 4
    np.testing.assert_array_equal(dataset.labels, [0, 2, 1])
    assert f"{tmp_path}'s labels reach 2; read as the teacher's outputs 0 to 3" in capsys.readouterr().out
    # Labels beyond the teacher's outputs are still refused.
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 5, 1])))
    with pytest.raises(UserError) as refusal:
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)
    # Before, the message stopped at the count, leaving the user to find which of 10,000 labels was the stray.
    assert str(refusal.value) == (f"evaluation dataset {str(tmp_path)!r} has 6 classes but the teacher predicts 4; "
                                  "1 of its 3 labels is 4 or more, the first 5 (image 1, counting from 0)")
    # The class count is read from both splits' labels: a stray in the other split is said to be there.
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 2, 1])))
    write_idx_split(tmp_path, "train", images, np.array([0, 7, 1]), compressed=False)
    with pytest.raises(UserError) as refusal:
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)
    assert str(refusal.value).endswith("has 8 classes but the teacher predicts 4; its labels stop at 2, but another "
                                       "split's reach 7, and the class count is read from both: correct that "
                                       "split's labels, or move its files out of the folder")
    for name in ("train-labels-idx1-ubyte", "train-images-idx3-ubyte"):
        os.remove(tmp_path / name)
    # Labels 1 to 4 for four outputs: counted from 1, as some datasets count.
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 4, 2])))
    with pytest.raises(UserError) as refusal:
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)
    assert str(refusal.value) == (f"evaluation dataset {str(tmp_path)!r} has 5 classes but the teacher predicts 4; its "
                                  "labels run from 1 to 4: if they count from 1, subtract 1 from them (the teacher's "
                                  "outputs count from 0)")


def test_fewer_calibration_samples_than_classes_come_from_classes_across_the_range(monkeypatch):
    # ImageNet's 1000 classes and the default 500 samples: not the first 500 classes only.
    from conftest import tiny_teacher
    from zscgan_tf import generator as generator_lib, zero_shot
    from zscgan_tf.preprocessing import Preprocessing

    teacher = dataclasses.replace(tiny_teacher(), num_classes=50)
    generator = generator_lib.build_generator(
        generator_lib.GeneratorSpec(num_classes=50, image_shape=(8, 8, 1), noise_dim=4, base_channels=4),
        Preprocessing("tf"))
    asked = []
    generate_for_labels = zero_shot.generate_for_labels
    monkeypatch.setattr(zero_shot, "generate_for_labels",
                        lambda generator, labels, *args: asked.append(labels) or generate_for_labels(generator, labels,
                                                                                                   *args))

    samples = quantization_stages.calibration_samples(generator, teacher, 20, seed=3)

    assert samples.shape == (20, 8, 8, 1)
    labels = asked[0]
    assert len(set(labels.tolist())) == 20  # One sample each of 20 classes,
    assert set(labels.tolist()) != set(range(20))  # drawn from all 50, not the first 20.


def test_a_teachers_own_dataset_that_moved_says_where_the_name_came_from(tmp_path):
    from conftest import tiny_teacher

    teacher = dataclasses.replace(tiny_teacher(), description={"dataset": str(tmp_path / "moved_away")})
    with pytest.raises(UserError, match=r"^dataset directory '.*moved_away' does not exist \(the teacher's training "
                                        r"data, as its sidecar names it; pass --eval_dataset for other data, or "
                                        r"--eval_dataset=none\)$"):
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(), teacher)
    # Named on the command line, the same directory is only said not to exist.
    settings = config_lib.EvaluationConfig(dataset=str(tmp_path / "moved_away"))
    with pytest.raises(UserError, match=r"^dataset directory '.*moved_away' does not exist$"):
        evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)


def test_evaluating_on_a_training_split_says_it_is_not_held_out(capsys):
    from conftest import tiny_teacher
    teacher = tiny_teacher(num_classes=10, trained=False)  # The digits' 10 classes.
    for split, noted in (("train", True), ("test", False)):
        settings = config_lib.EvaluationConfig(dataset="digits", split=split, max_samples=20)
        dataset = evaluation_stage.evaluation_dataset(config_lib.RunConfig(evaluation=settings), teacher)
        assert len(dataset.labels) == 20
        out = capsys.readouterr().out
        assert ("note: --eval_split=train measures every model on the training images of digits: if the teacher was "
                "trained on them, its top-1 there is not held-out accuracy" in out) == noted
