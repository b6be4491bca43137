"""tools/benchmark.py as users run it, on a tiny digits teacher with tiny step counts: a benchmark in a
process of its own, then its reruns and the refusals of bad input in one process they share
(tests/tool_process.py), which calls `main` afresh for each."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import zscgan_tf  # noqa: F401  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import tf_keras

from conftest import build_student_failing_classifier, build_tiny_classifier, write_idx_split
from tool_process import ToolProcess
from zscgan_tf import bn_stats, data, files, generator as generator_lib, teacher_training
from zscgan_tf.preprocessing import Preprocessing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("fp32", "real_ptq", "noise_ptq", "distilled_ptq", "zscgan_ptq", "zscgan_ptq_per_tensor", "zscgan_qat_w8a8",
        "real_qat_w8a8", "zscgan_qat_w4a4", "real_qat_w4a4")
MEASUREMENTS = ("latency", "generator_speed", "ptq_spread", "w4a4_spread", "w4a4_pool_spread")


def _benchmark(*arguments):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"), *arguments],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def benchmark_process():
    """One process for the refusals of bad input and for the reruns of a benchmark."""
    with ToolProcess("benchmark") as process:
        yield process


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    """A tiny classifier trained on the digits for a few epochs, saved as a teacher file."""
    train = data.load_digits("train")
    preprocessing = Preprocessing("tf")
    model = build_tiny_classifier(input_shape=train.image_shape, num_classes=train.num_classes)
    inputs = preprocessing.apply(train.images)
    model.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, train.labels, batch_size=64, epochs=5, verbose=0)
    bn_stats.reestimate_batchnorm_statistics(model, inputs, batch_size=128)
    path = str(tmp_path_factory.mktemp("teacher") / "digits_tiny.keras")
    teacher_training.save_teacher(model, path, preprocessing, dataset="digits",
                                  class_names=train.class_names, metrics=None)
    return path


def _tiny_arguments(teacher_path, work_dir):
    return [f"--teachers={teacher_path}", "--dataset=digits", f"--work_dir={work_dir}", "--eval_max_samples=50",
            "--calibration_samples=20", "--schemes=w8a8,w4a4", "--generator_steps=5", "--generator_batch_size=16",
            "--noise_dim=8", "--generator_channels=8", "--qat_steps=3", "--qat_batch_size=16", "--distilled_steps=3",
            "--latency_runs=3", "--calibration_draws=2", "--w4a4_seed_draws=1", "--generator_pool_draws=1",
            "--generator_blur_sigma=0.5",
            "--generator_pool_size=2", "--mode_seeking_loss_weight=0.1", "--qat_mixed_fraction=0.25",
            "--qat_shift_fraction=0.125", "--qat_flip", "--bn_layer_weighting=noise_floor", "--noprogress"]


def test_tiny_benchmark_writes_every_row_and_a_rerun_reuses_them(tmp_path, digits_teacher, benchmark_process):
    work_dir = tmp_path / "bench"
    completed = _benchmark(*_tiny_arguments(digits_teacher, work_dir))
    assert completed.returncode == 0, completed.stderr[-2000:]
    # The row that first needs the generator pool says how long its training took, apart from the row's time.
    assert len(re.findall(r"\(\d+ s, after \d+ s training the generator pool\)\n", completed.stdout)) == 1
    results = json.loads((work_dir / "results.json").read_text())
    assert results["settings"]["qat_steps"] == 3 and "seeds" in results["settings"]
    assert results["settings"]["mode_seeking_loss_weight"] == 0.1 and results["settings"]["qat_mixed_fraction"] == 0.25
    assert results["settings"]["qat_shift_fraction"] == 0.125 and results["settings"]["qat_flip"] is True
    assert results["settings"]["generator_blur_sigma"] == 0.5 and results["settings"]["generator_pool_size"] == 2
    assert results["settings"]["low_bit_ranges"] == "mse"
    assert results["settings"]["bn_layer_weighting"] == "noise_floor"
    generator_run = json.loads((work_dir / "digits_tiny" / "generator" / "config.json").read_text())
    assert generator_run["loss"]["bn_layer_weighting"] == "noise_floor"
    generator = generator_lib.load_generator(str(work_dir / "digits_tiny" / "generator" / "generator.keras"))
    members = generator_lib.pool_members(generator)
    assert len(members) == 2
    for member in members:
        assert [layer.sigma for layer in member.layers if isinstance(layer, generator_lib.GaussianBlur)] == [0.5]
    teacher = results["teachers"]["digits_tiny"]
    assert teacher["eval_images"] == 50
    assert teacher["eval_preparation"] == ["a class-balanced subset of 360"]
    assert "Top-1 on 50 digits test images (a class-balanced subset of 360)." in (work_dir / "results.md").read_text()
    assert set(teacher["rows"]) == set(ROWS)
    for row in teacher["rows"].values():
        assert 0.0 <= row["top1"] <= 1.0
    assert teacher["rows"]["zscgan_qat_w8a8"]["measured"] == "TFLite int8"
    assert teacher["rows"]["zscgan_qat_w4a4"]["measured"].startswith("Keras")
    # Every int8 TFLite row also gives the float teacher's top-1 on the input that model computes on.
    int8_rows = {row_id for row_id, row in teacher["rows"].items() if row["measured"] == "TFLite int8"}
    assert int8_rows == {"real_ptq", "noise_ptq", "distilled_ptq", "zscgan_ptq", "zscgan_ptq_per_tensor",
                         "zscgan_qat_w8a8", "real_qat_w8a8"}
    assert all(0 <= teacher["rows"][row_id]["fp32_on_its_input"] <= 1 for row_id in int8_rows)
    assert not any("fp32_on_its_input" in teacher["rows"][row_id] for row_id in set(ROWS) - int8_rows)
    cached = json.loads((work_dir / "digits_tiny" / "rows.json").read_text())
    assert all(('"tflite_input": "pixel_table"' in cached[row_id]["key"]) == (row_id in int8_rows | {"ptq_spread"})
               for row_id in cached)
    # Every row that quantizes is keyed on the input range covering pixels 0 to 255.
    assert all(('"input_range": "covers_pixels_0_255"' in cached[row_id]["key"])
               == (row_id not in {"fp32", "latency", "generator_speed"}) for row_id in cached)
    # The W8A8 QAT rows' files read pixels on their student's input levels: rows of files that did not are redone.
    assert all(('"qat_input": "on_student_input_levels"' in cached[row_id]["key"])
               == (row_id in {"zscgan_qat_w8a8", "real_qat_w8a8"}) for row_id in cached)
    assert teacher["rows"]["fp32"]["tflite_bytes"] > 0 and teacher["rows"]["real_ptq"]["tflite_bytes"] > 0
    sizes = {row_id: teacher["rows"][row_id]["tflite_bytes"] for row_id in ("fp32", "zscgan_ptq", "zscgan_ptq_per_tensor")}
    assert min(sizes.values()) > 0  # Tiny models are all overhead; the size order shows on real ones.
    assert set(teacher["measurements"]) == set(MEASUREMENTS)
    latency = teacher["measurements"]["latency"]
    assert set(latency) >= {"float_1_threads_ms", "float_2_threads_ms", "int8_1_threads_ms", "int8_2_threads_ms"}
    assert all(latency[name] > 0 for name in latency if name.endswith("_ms"))
    speed = teacher["measurements"]["generator_speed"]
    assert speed["compiled_samples_per_second"] > 0 and speed["eager_samples_per_second"] > 0
    assert speed["speedup"] == pytest.approx(speed["eager_seconds"] / speed["compiled_seconds"])
    assert 0 < speed["fraction_of_peak"] < 1
    assert teacher["generator_training"]["steps"] == 5
    spread = teacher["measurements"]["ptq_spread"]
    assert spread["draws"] == 2 and results["settings"]["seeds"]["calibration_draws"] == [100, 101]
    for source in ("real", "zscgan"):
        assert [draw["seed"] for draw in spread[source]] == [100, 101]
        assert all(0 <= draw["top1"] <= 1 and 0 <= draw["agreement_with_fp32"] <= 1 for draw in spread[source])
    # Int8 calibrated on real images picks the float teacher's class on nearly every image.
    assert min(draw["agreement_with_fp32"] for draw in spread["real"]) > 0.8
    w4a4_spread = teacher["measurements"]["w4a4_spread"]
    assert w4a4_spread["draws"] == 1 and results["settings"]["seeds"]["w4a4_seed_draws"] == [200]
    assert [run["seed"] for run in w4a4_spread["real"]] == [200] == [run["seed"] for run in w4a4_spread["zscgan"]]
    assert all(0 <= run["top1"] <= 1 for source in ("real", "zscgan") for run in w4a4_spread[source])
    # A further generator pool: trained with the seeds after the benchmark's pool's (0 and 1000),
    # distilled at the W4A4 rows' two distillation seeds.
    pool_spread = teacher["measurements"]["w4a4_pool_spread"]
    assert pool_spread["draws"] == 1 and pool_spread["generator_seed"] == 0
    assert results["settings"]["seeds"]["generator_pool_draws"] == [2000]
    (further_pool,) = pool_spread["pools"]
    assert further_pool["generator_seed"] == 2000
    assert [run["seed"] for run in further_pool["runs"]] == [results["settings"]["seeds"]["distillation"], 200]
    assert all(0 <= run["top1"] <= 1 for run in further_pool["runs"])
    further_run = json.loads((work_dir / "digits_tiny" / "generator_draw1" / "config.json").read_text())
    assert further_run["seed"] == 2000 and further_run["generator"] == generator_run["generator"]
    further_members = generator_lib.pool_members(generator_lib.load_generator(
        str(work_dir / "digits_tiny" / "generator_draw1" / "generator.keras")))
    assert len(further_members) == 2
    assert not any((a == b).all() for a, b in zip(members[0].get_weights(), further_members[0].get_weights())
                   if a.size > 1 and a.std() > 0)
    # The W4A4 target compares the means over the row's own run and the repeat, ZS-CGAN's also
    # averaged over the two generator pools.
    means = [50 * (teacher["rows"][f"{source}_qat_w4a4"]["top1"] + w4a4_spread[source][0]["top1"])
             for source in ("zscgan", "real")]
    means[0] = (means[0] + 50 * sum(run["top1"] for run in further_pool["runs"])) / 2
    (w4a4_target,) = [target for target in teacher["targets"] if "W4A4 within" in target["target"]]
    assert w4a4_target["target"].endswith("(means over 2 distillation seeds each, ZS-CGAN's over 2 generator pools)")
    assert w4a4_target["detail"].startswith(f"{means[0]:.2f} vs {means[1]:.2f}")
    assert w4a4_target["met"] == (means[0] >= means[1] - 1.0)
    names = [target["target"] for target in teacher["targets"]]
    assert {target["met"] for target in teacher["targets"]} <= {True, False} and len(names) == 10
    assert "ZS-CGAN PTQ above distilled-data PTQ" in names
    markdown = (work_dir / "results.md").read_text()
    assert "blur sigma 0.5 px, 2 generators pooled, BN layers weighted by noise_floor" in markdown
    assert "generator training " in markdown
    stage_times = [line for line in markdown.splitlines() if line.startswith("Wall time of each stage: ")]
    assert len(stage_times) == 1  # one teacher; every row and measurement has its time
    assert "; ZS-CGAN QAT W4A4 " in stage_times[0] and "; ZS-CGAN W4A4 QAT over generator pools " in stage_times[0]
    assert "; LiteRT latency " in stage_times[0] and "; PTQ over calibration draws " in stage_times[0]
    assert "ranges below 8 bits fitted by least squares and held" in markdown
    assert teacher["generator_training"]["generators"] == 2
    assert "| row | top-1 | measured | time |" in markdown and "| ZS-CGAN QAT W4A4 |" in markdown
    assert "FP32 on its input" in markdown and "every pixel level kept" in markdown
    assert "| distilled-data PTQ |" in markdown and "| int8 |" in markdown and "eager" in markdown
    assert "ratio" in markdown and ("met:" in markdown or "MISSED:" in markdown)
    assert "PTQ over 2 further calibration draws" in markdown and "| ZS-CGAN | " in markdown
    assert "W4A4 QAT with 1 further distillation seed (" in markdown
    assert "ZS-CGAN W4A4 QAT on 1 further generator pool (" in markdown
    assert "| the benchmark's own | 0 | " in markdown and "| further pool 1 | 2000 | " in markdown
    w8a8_details = [target["detail"] for target in teacher["targets"] if "not below real-data PTQ" in target["target"]]
    assert len(w8a8_details) == 2 and all("(over 2 other draws " in detail for detail in w8a8_details)
    assert "This invocation took " in markdown and "This teacher in this invocation: " in markdown
    assert 0 < teacher["wall_seconds_this_session"] <= results["wall_seconds_this_session"]
    # The own pool's training is timed apart, not also in the time of the first row that needed it.
    stage_seconds = sum(row["seconds"] for row in [*teacher["rows"].values(), *teacher["measurements"].values()])
    assert stage_seconds + teacher["generator_training"]["wall_seconds"] <= teacher["wall_seconds_this_session"]

    # The reruns in the tool process the bad-input tests share, which has TensorFlow started.
    rerun = benchmark_process(*_tiny_arguments(digits_teacher, work_dir), f"--compare_to={work_dir}")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.count(": cached top-1") == len(ROWS)
    assert rerun.stdout.count(": cached done") == len(MEASUREMENTS)
    reproducibility = json.loads((work_dir / "results.json").read_text())["teachers"]["digits_tiny"]["reproducibility"]
    assert len(reproducibility["rows"]) == len(ROWS) and reproducibility["max_difference_points"] == 0
    assert reproducibility["met"]

    # TF-MOT's min/max ranges instead: only the W4 rows depend on them and are recomputed.
    min_max = benchmark_process(*_tiny_arguments(digits_teacher, work_dir), "--low_bit_ranges=min_max")
    assert min_max.returncode == 0, min_max.stderr[-2000:]
    assert min_max.stdout.count(": computing") == 4  # The two W4A4 rows, their repeats and further pool.
    assert "ZS-CGAN QAT W4A4: computing" in min_max.stdout and "real-data QAT W4A4: computing" in min_max.stdout
    assert min_max.stdout.count(": cached top-1") == len(ROWS) - 2
    assert min_max.stdout.count(": cached done") == len(MEASUREMENTS) - 2
    assert "fitted by least squares" not in (work_dir / "results.md").read_text()

    # Fewer generator steps than trained, or other generator settings: refused before any row (before,
    # fewer steps were reported for the 5 trained, and other settings refused only after rows had run).
    fewer = benchmark_process(*_tiny_arguments(digits_teacher, work_dir), "--generator_steps=4")
    assert fewer.returncode == 2 and ": computing" not in fewer.stdout and ": cached" not in fewer.stdout
    assert fewer.stderr.strip().splitlines()[-1] == (
        f"error: {work_dir / 'digits_tiny' / 'generator'}'s generator has trained 5 steps, more than "
        "--generator_steps=4; training cannot be undone: ask for 5 or more, or use another --work_dir")
    other = benchmark_process(*_tiny_arguments(digits_teacher, work_dir), "--generator_blur_sigma=1.0")
    assert other.returncode == 2 and ": computing" not in other.stdout and ": cached" not in other.stdout
    assert "holds a run with a different config (generator.blur_sigma)" in other.stderr
    # A blur wider than these 8x8 images allow: refused before the first row (it was refused at row 5).
    wide = benchmark_process(*_tiny_arguments(digits_teacher, tmp_path / "wide"), "--generator_blur_sigma=5")
    assert wide.returncode == 2 and ": computing" not in wide.stdout
    assert wide.stderr.strip().splitlines()[-1].startswith(
        "error: generator blur sigma (--generator_blur_sigma) must be between 0 and 2 pixels for 8x8 images")
    # Latency is measured again for another number of runs (it was taken from the cache).
    latency = benchmark_process(*_tiny_arguments(digits_teacher, work_dir), "--latency_runs=4",
                                "--low_bit_ranges=min_max")
    assert latency.returncode == 0, latency.stderr[-2000:]
    assert "LiteRT latency: computing" in latency.stdout and latency.stdout.count(": computing") == 1

    # Another model under the same name (retrained since): its rows are not taken from the cache.
    import shutil
    retrained = tmp_path / "retrained" / "digits_tiny.keras"
    os.makedirs(retrained.parent)
    shutil.copy(digits_teacher + ".json", str(retrained) + ".json")
    model = tf_keras.models.load_model(digits_teacher)
    model.set_weights([weight * 1.01 for weight in model.get_weights()])
    model.save(str(retrained))
    refused = benchmark_process(*_tiny_arguments(str(retrained), work_dir))
    assert refused.returncode == 2 and ": computing" not in refused.stdout
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {work_dir / 'digits_tiny'} holds rows and generators of another teacher than digits_tiny is now (its "
        "weights or preprocessing differ: was the model file retrained?); pass another --work_dir, or delete "
        f"{work_dir / 'digits_tiny'} to measure this one")


@pytest.mark.parametrize("arguments, message", [
    (["--qat_steps=0"], "--qat_steps must be positive, got 0"),
    (["--generator_pool_draws=1", "--schemes=w8a8,w4a8"],
     "--generator_pool_draws repeats the W4A4 rows, but --schemes has no w4a4"),
    (["--schemes=w8a8,w9a8"], "--schemes: weight_bits must be between 2 and 8, got 9"),
    (["--schemes=w8a8,W8A8"], "--schemes names w8a8 more than once"),
    # No scheme: it ran no QAT row. (A teacher that does not exist: the old code refused it instead.)
    (["--schemes=", "--teachers=/nonexistent.keras"],
     "--schemes names no QAT scheme; name at least one, e.g. --schemes=w8a8"),
    # Names are case-insensitive: W4A4 is the w4a4 the repeats ask for (it was refused as missing).
    (["--schemes=W8A8,W4A4", "--w4a4_seed_draws=1", "--teachers=/nonexistent.keras"],
     "model file '/nonexistent.keras' does not exist"),
    (["--compare_to=/nonexistent"], "--compare_to '/nonexistent' is not a directory"),
    # Its results.md said "could not be read (there is none: that run did not measure this teacher)".
    (["--compare_to=MEMORY"], "--compare_to 'MEMORY' is not a work directory of tools/benchmark.py (it holds neither "
     "results.json nor a teacher's rows.json): name one"),
    (["--qat_flip=maybe"], "flag --qat_flip="),
    (["--teachers=/nonexistent.keras"], "model file '/nonexistent.keras' does not exist"),
    # A mistyped second teacher: refused once the first had been measured (its built-in trained, its rows run).
    (["--teachers=builtin:fashion_mnist_resnet20,/nonexistent.keras"], "model file '/nonexistent.keras' does not exist"),
    (["--teachers=builtin:fashion_mnist_resnet20,builtin:digits_resnet"],
     "unknown built-in teacher 'digits_resnet'; known: "),
    (["--work_dir=FILE/bench"], "cannot create --work_dir 'FILE/bench': 'FILE' is not a directory"),
    (["--work_dir=RUN"], "--work_dir 'RUN' is the work directory of a run (python -m zscgan_tf.train)"),
    # A memory benchmark's (tools/memory_benchmark.py refuses the benchmark's): the files of both were mixed.
    (["--work_dir=MEMORY"], "--work_dir 'MEMORY' is the work directory of tools/memory_benchmark.py (it holds "
     "memory_benchmark.json, generator/checkpoints), which the benchmark's files would be mixed into; choose another"),
    # Their rows would share a directory: the second was refused only once the first was measured.
    (["--teachers=/a/teacher.keras,/b/teacher.keras"],
     "--teachers names two teachers called 'teacher' (/a/teacher.keras and /b/teacher.keras); the benchmark keeps "
     "each teacher's rows under its name: rename one file")])
def test_bad_input_is_one_line_and_exit_2(benchmark_process, tmp_path, arguments, message):
    # Each setting's range is checked in tests/test_benchmark_config.py; these are the paths to it.
    a_file = tmp_path / "file"
    a_file.write_text("")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text("{}")
    (tmp_path / "memory" / "generator" / "checkpoints").mkdir(parents=True)
    (tmp_path / "memory" / "memory_benchmark.json").write_text("{}")
    for name in ("RUN", "MEMORY"):
        arguments = [argument.replace(name, str(tmp_path / name.lower())) for argument in arguments]
        message = message.replace(name, str(tmp_path / name.lower()))
    work_dir = tmp_path / "bench"
    arguments = [f"--work_dir={work_dir}", *(argument.replace("FILE", str(a_file)) for argument in arguments)]
    completed = benchmark_process(*arguments, "--noprogress")
    assert completed.returncode == 2
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {message.replace('FILE', str(a_file))}"), last_line
    assert "Traceback" not in completed.stderr
    assert not work_dir.exists()  # Nothing is created before a teacher and its data have loaded.


@pytest.mark.parametrize("kind, problem", [
    ("shared_conv", "TF-MOT could not quantize the teacher "),
    ("bn_axis_1", "its int8 TFLite would keep ")])
def test_a_scheme_whose_student_would_fail_is_refused_before_any_row(tmp_path, capsys, kind, problem):
    # It failed at its QAT row, once the generator had trained for the rows before.
    from zscgan_tf import benchmark_run
    from zscgan_tf.benchmark_config import BenchmarkConfig
    from zscgan_tf.errors import UserError
    teacher_path = str(tmp_path / f"{kind}.keras")
    build_student_failing_classifier(kind, num_classes=10).save(teacher_path)
    benchmark = BenchmarkConfig(teachers=(teacher_path,), dataset="digits", work_dir=str(tmp_path / "bench"),
                                eval_max_samples=20, calibration_samples=10, schemes=("w8a8", "w4a4"),
                                calibration_draws=0, w4a4_seed_draws=0)
    with pytest.raises(UserError) as raised:
        benchmark_run.run_benchmark(benchmark, progress=False)
    message = str(raised.value)
    assert message.startswith(f"[{kind}] the W8A8 QAT rows would fail once the rows before them had run: {problem}")
    assert message.endswith("; drop w8a8 from --schemes") and "allow_float_ops" not in message, message
    assert ": computing" not in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "bench" / kind / "rows.json")


def test_a_benchmark_resumed_with_its_generator_trained_distils_a_teacher_with_dropout(tmp_path, capsys):
    # Its QAT row raised "Random ops require a seed to be set when determinism is enabled" (a traceback): only the
    # generator's training had set TensorFlow's global seed, and a resumed benchmark loads its generator instead.
    import tensorflow as tf
    from zscgan_tf import benchmark_run
    from zscgan_tf.benchmark_config import BenchmarkConfig

    inputs = tf_keras.Input((8, 8, 1))
    features = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(4, 3, padding="same")(inputs))
    dropped = tf_keras.layers.Dropout(0.2)(tf_keras.layers.GlobalAveragePooling2D()(features))
    teacher_path = str(tmp_path / "dropping.keras")
    tf_keras.Model(inputs, tf_keras.layers.Dense(10)(dropped)).save(teacher_path)
    benchmark = BenchmarkConfig(teachers=(teacher_path,), dataset="digits", work_dir=str(tmp_path / "bench"),
                                eval_max_samples=20, calibration_samples=10, schemes=("w8a8",), qat_steps=1,
                                qat_batch_size=8, generator_steps=2, generator_batch_size=8, noise_dim=8,
                                generator_channels=8, distilled_steps=1, calibration_draws=0, latency_runs=1)
    benchmark_run.run_benchmark(benchmark, progress=False)
    capsys.readouterr()
    tf.random.set_seed(None)  # As in a new process, where no generator trains.
    longer = dataclasses.replace(benchmark, qat_steps=2)  # The QAT rows again, the generator as it is.
    try:
        results = benchmark_run.run_benchmark(longer, progress=False)
    finally:
        tf_keras.utils.set_random_seed(0)  # Unseeded, a later test's random op would fail under op determinism.
    out = capsys.readouterr().out
    computed = re.findall(r"^\[dropping\] row \d+/\d+ (.+): computing$", out, re.MULTILINE)
    assert computed == ["ZS-CGAN QAT W8A8", "real-data QAT W8A8"], out  # Only the rows qat_steps changes.
    assert "generator: already trained (2 steps), loading " in out and "generator: training" not in out
    row = results["teachers"]["dropping"]["rows"]["zscgan_qat_w8a8"]
    assert row["measured"] == "TFLite int8" and 0 <= row["top1"] <= 1 and row["tflite_bytes"] > 0


def _fashion_mnist_shaped_idx_directory(directory) -> str:
    """Random 28x28 images with 10 classes, as Debian's package names its IDX files."""
    directory.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    for split in ("train", "t10k"):
        write_idx_split(directory, split, images, np.arange(40) % 10, compressed=True)
    return str(directory)


def test_a_dataset_of_another_shape_is_converted_saying_so_and_asking_when_it_is_not_the_teachers(
        tmp_path, digits_teacher, capsys, monkeypatch):
    from zscgan_tf import benchmark_rows
    from zscgan_tf.benchmark_config import BenchmarkConfig
    # Fashion-MNIST's shape, on every machine: the test was skipped without Debian's package.
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", _fashion_mnist_shaped_idx_directory(tmp_path / "idx"))
    benchmark = BenchmarkConfig(dataset="fashion_mnist", work_dir=str(tmp_path / "bench"), eval_max_samples=20,
                                calibration_samples=10)
    rows = benchmark_rows.TeacherBenchmark(digits_teacher, benchmark, progress=False)
    assert rows.test_pixels.shape == (20, 8, 8, 1)
    assert ("[digits_tiny] fashion_mnist images are (28, 28, 1); converted to the teacher's (8, 8, 1) (the teacher was "
            "not trained on fashion_mnist: is --dataset right?)") in capsys.readouterr().out


def test_a_data_dir_the_dataset_does_not_read_is_noted(tmp_path, digits_teacher, capsys):
    # The digits are built in: --data_dir=/nonexistent was taken without a word, as if it had been read.
    from zscgan_tf import benchmark_rows
    from zscgan_tf.benchmark_config import BenchmarkConfig
    benchmark = BenchmarkConfig(dataset="digits", data_dir=str(tmp_path / "nonexistent"),
                                work_dir=str(tmp_path / "bench"), eval_max_samples=20, calibration_samples=10)
    benchmark_rows.TeacherBenchmark(digits_teacher, benchmark, progress=False)
    assert "[digits_tiny] note: --data_dir does nothing with digits\n" in capsys.readouterr().out
    # Fashion-MNIST's IDX files read from it: no note.
    idx = _fashion_mnist_shaped_idx_directory(tmp_path / "idx")
    benchmark_rows.TeacherBenchmark(digits_teacher, dataclasses.replace(benchmark, dataset="fashion_mnist",
                                                                        data_dir=idx), progress=False)
    assert "--data_dir does nothing" not in capsys.readouterr().out


def test_a_folder_dataset_named_relatively_keys_its_rows_by_its_absolute_path(tmp_path, digits_teacher, monkeypatch):
    # --dataset=idx from two directories named two folders, and the second took the first's cached rows as its own.
    from zscgan_tf import benchmark_rows
    from zscgan_tf.benchmark_config import BenchmarkConfig
    for place in ("one", "two"):
        _fashion_mnist_shaped_idx_directory((tmp_path / place).mkdir() or tmp_path / place / "idx")
    benchmark = BenchmarkConfig(dataset="idx", work_dir=str(tmp_path / "bench"), eval_max_samples=20,
                                calibration_samples=10)
    keys = []
    for place in ("one", "two"):
        monkeypatch.chdir(tmp_path / place)
        rows = benchmark_rows.TeacherBenchmark(digits_teacher, benchmark, progress=False)
        assert rows.dataset_name == str(tmp_path / place / "idx")
        keys.append({row_id: settings["dataset"] for row_id, _, _, settings in rows.rows()})
    assert keys[0]["fp32"] == str(tmp_path / "one" / "idx") and keys[1]["fp32"] == str(tmp_path / "two" / "idx")


def test_a_teacher_named_relatively_or_not_is_one_generator_run(tmp_path, digits_teacher, monkeypatch):
    # Its generator run recorded the teacher as typed: named otherwise, or from another directory, its trained pool
    # was refused as "a run with a different config (teacher.model)", with advice to delete it.
    from zscgan_tf import benchmark_rows, config_changes
    from zscgan_tf.benchmark_config import BenchmarkConfig
    benchmark = BenchmarkConfig(dataset="digits", work_dir=str(tmp_path / "bench"), eval_max_samples=20,
                                calibration_samples=10)
    monkeypatch.chdir(os.path.dirname(digits_teacher))
    relative = benchmark_rows.TeacherBenchmark(os.path.basename(digits_teacher), benchmark, progress=False)
    run_config = relative.generator_run_config()
    assert run_config.teacher.model == digits_teacher
    os.makedirs(run_config.work_dir)
    config_changes.save_or_check(run_config, files.write_json_atomic)
    monkeypatch.chdir(tmp_path)
    config_changes.check_saved(benchmark_rows.TeacherBenchmark(digits_teacher, benchmark,
                                                               progress=False).generator_run_config())
