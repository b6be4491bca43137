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
    # What report.json holds: lists where tuples were (a script comparing the two found them unequal).
    assert report == json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["generator_training"]["steps"] == 4 and report["quantization"]["summary"]["steps"] == 3
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["teacher"]["model"] == tiny_teacher_file  # Found again from any directory.
    assert recorded["evaluation"]["dataset"] == "none"
    assert zscgan_tf.load_student(str(tmp_path / "run" / "student.h5")).name
    assert zscgan_tf.inspect_tflite((tmp_path / "run" / "qat_int8.tflite").read_bytes()).is_fully_integer


@pytest.mark.parametrize("settings, message", [
    ({"teacher": "my_classifier.keras"}, "teacher must be a TeacherSource, got str 'my_classifier.keras'"),
    ({"generator": {"noise_dim": 8}},
     "generator must be a GeneratorConfig, got dict {'noise_dim': 8} (a GeneratorConfig(...) of its values)"),
    ({"generator_training": zscgan_tf.GeneratorTrainingConfig(steps="10")},
     "generator_training.steps must be an int, got '10'"),
    ({"generator_training": zscgan_tf.GeneratorTrainingConfig(steps=2.5)},
     "generator_training.steps must be an int, got 2.5"),
    ({"seed": None}, "seed must be an int, got None"),
    ({"evaluation": zscgan_tf.EvaluationConfig(dataset=None)}, "evaluation.dataset must be a str, got None"),
    ({"distillation": zscgan_tf.DistillationConfig(flip=1)}, "distillation.flip must be a bool, got 1"),
])
def test_a_config_of_other_types_than_its_fields_is_refused_naming_the_field(settings, message):
    # A RunConfig built in Python met these as AttributeErrors and TypeErrors deep in the checks, or
    # took 2.5 steps.
    with pytest.raises(zscgan_tf.UserError) as raised:
        zscgan_tf.RunConfig(**settings)
    assert str(raised.value) == message


def test_run_takes_a_run_config_only():
    with pytest.raises(TypeError, match=r"^run takes a RunConfig \(RunConfig.from_dict makes one of a dict\), got "
                                        r"dict$"):
        zscgan_tf.run({"work_dir": "runs/x"})


def test_paths_one_module_name_and_lists_are_taken_as_a_program_gives_them():
    import pathlib

    run_config = zscgan_tf.RunConfig(
        work_dir=pathlib.Path("runs/mine"),
        teacher=zscgan_tf.TeacherSource(pathlib.Path("my.keras"), custom_objects="my_layers",
                                        preprocessing="custom", preprocessing_mean=[127.5], preprocessing_std=[64]),
        evaluation=zscgan_tf.EvaluationConfig(dataset=pathlib.Path("data"), data_dir=pathlib.Path("d")))
    assert (run_config.work_dir, run_config.teacher.model, run_config.evaluation.dataset) == ("runs/mine", "my.keras",
                                                                                              "data")
    assert run_config.teacher.custom_objects == ("my_layers",)  # Not ("m", "y", "_", ...).
    assert run_config.teacher.preprocessing_mean == (127.5,) and hash(run_config)
    assert json.dumps(run_config.to_dict())  # As config.json records it.


def test_a_config_path_goes_up_from_a_symbolic_link_where_the_system_goes(tmp_path, monkeypatch):
    (tmp_path / "disk" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "disk" / "sub", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    run_config = zscgan_tf.RunConfig(work_dir="link/../runs/w", teacher=zscgan_tf.TeacherSource("link/../t.keras"),
                                     evaluation=zscgan_tf.EvaluationConfig(dataset="link/../idx"))
    assert run_config.work_dir == str(tmp_path / "disk" / "runs" / "w")
    assert run_config.teacher.model == str(tmp_path / "disk" / "t.keras")
    assert run_config.evaluation.dataset == str(tmp_path / "disk" / "idx")


def test_a_file_that_is_not_what_a_loader_reads_is_one_line(tmp_path, tiny_teacher_file):
    with pytest.raises(zscgan_tf.UserError, match="is not a generator saved by this package: it takes "
                                                  r"\(8, 8, 1\), not noise and a class label"):
        zscgan_tf.load_generator(tiny_teacher_file)
    with pytest.raises(zscgan_tf.UserError, match="does not exist"):
        zscgan_tf.load_generator(tmp_path / "generator.keras")
    from conftest import build_tiny_classifier

    whole = zscgan_tf.convert_to_tflite(build_tiny_classifier(), mode="float")
    for cut in (200, len(whole) // 2):
        with pytest.raises(zscgan_tf.UserError, match=rf"^a damaged or truncated TFLite flatbuffer \({cut:,} bytes\)"):
            zscgan_tf.inspect_tflite(whole[:cut])  # It was struct.error, deep in the flatbuffer reader.
    assert zscgan_tf.inspect_tflite(whole).operators
