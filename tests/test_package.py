"""The package as a program imports it: its public names, and a run from Python."""

import importlib
import json
import os
import subprocess
import sys

import pytest

import zscgan_tf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_each_public_name_is_what_its_module_defines_and_others_are_refused():
    assert zscgan_tf.__all__ == sorted(name for names in zscgan_tf.PUBLIC_NAMES.values() for name in names)
    for module, names in zscgan_tf.PUBLIC_NAMES.items():
        for name in names:
            assert getattr(zscgan_tf, name) is getattr(importlib.import_module(f"zscgan_tf.{module}"), name), name
    assert set(zscgan_tf.__all__) <= set(dir(zscgan_tf))
    with pytest.raises(AttributeError, match="module 'zscgan_tf' has no attribute 'train_generator'"):
        zscgan_tf.train_generator  # pylint: disable=pointless-statement


def test_importing_the_package_loads_no_module_before_one_of_its_names_is_used():
    script = ("import sys, zscgan_tf\n"
              "before = sorted(name for name in sys.modules if name.startswith('zscgan_tf.'))\n"
              "zscgan_tf.RunConfig\n"
              "print(before, 'zscgan_tf.config' in sys.modules, 'zscgan_tf.pipeline' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['zscgan_tf.start_up'] True False"


def test_a_run_from_python_returns_its_report_and_records_relative_paths_as_absolute(
        tmp_path, tiny_teacher_file, monkeypatch):
    monkeypatch.chdir(os.path.dirname(tiny_teacher_file))
    run_config = zscgan_tf.RunConfig(
        work_dir=str(tmp_path / "run"), teacher=zscgan_tf.TeacherSource(os.path.basename(tiny_teacher_file)),
        generator=zscgan_tf.GeneratorConfig(noise_dim=8, base_channels=8),
        generator_training=zscgan_tf.GeneratorTrainingConfig(steps=4, batch_size=16, checkpoint_every=2,
                                                             image_every=2),
        quantization=zscgan_tf.QuantizationConfig(calibration_samples=16),
        distillation=zscgan_tf.DistillationConfig(steps=3, batch_size=8, checkpoint_every=2),
        evaluation=zscgan_tf.EvaluationConfig(samples_per_class=4, grid_samples_per_class=3, dataset="NONE",
                                              latency_runs=2))
    report = zscgan_tf.run(run_config, progress=False)
    # What report.json holds, tuples and all (JSON writes them as lists).
    assert json.loads(json.dumps(report)) == json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["generator_training"]["steps"] == 4 and report["quantization"]["summary"]["steps"] == 3
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["teacher"]["model"] == tiny_teacher_file  # Found again from any directory.
    assert recorded["evaluation"]["dataset"] == "none"
    assert zscgan_tf.load_student(str(tmp_path / "run" / "student.h5")).name
    assert zscgan_tf.inspect_tflite((tmp_path / "run" / "qat_int8.tflite").read_bytes()).is_fully_integer
