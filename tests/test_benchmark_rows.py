"""The benchmark's row cache: which cached rows count as current, and reruns compared."""

import json
import os
import re
import types

import pytest

from zscgan_tf import benchmark_cache, benchmark_report, benchmark_rows, benchmark_run, teachers
from zscgan_tf.errors import UserError


def test_rows_cached_under_other_settings_are_not_reported():
    rows = [("fp32", "FP32", None, {"seed": 0}), ("zscgan_ptq", "ZS-CGAN PTQ", None, {"seed": 0, "pool": 3}),
            ("latency", "LiteRT latency", None, {"seed": 0})]
    cache = {"fp32": {"key": benchmark_cache.row_key("fp32", {"seed": 0}), "result": {"top1": 0.9}},
             "zscgan_ptq": {"key": benchmark_cache.row_key("zscgan_ptq", {"seed": 0, "pool": 1}),
                            "result": {"top1": 0.8}}}
    assert benchmark_cache.current_rows(cache, rows) == {"fp32": {"top1": 0.9}}


def test_row_keys_name_the_row_and_ignore_the_order_of_settings():
    assert benchmark_cache.row_key("fp32", {"a": 1, "b": 2}) == benchmark_cache.row_key("fp32", {"b": 2, "a": 1})
    assert benchmark_cache.row_key("fp32", {"a": 1}) != benchmark_cache.row_key("real_ptq", {"a": 1})
    assert benchmark_cache.row_key("fp32", {"a": 1}) != benchmark_cache.row_key("fp32", {"a": 1.5})


def test_rows_computed_with_other_settings_are_not_compared():
    current = {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.9}},
               "noise_ptq": {"key": "b", "result": {"label": "noise PTQ", "top1": 0.8}},
               "latency": {"key": "c", "result": {"label": "LiteRT latency", "float_1_threads_ms": 1.0}}}
    earlier = {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.905}},
               "noise_ptq": {"key": "other", "result": {"label": "noise PTQ", "top1": 0.5}},
               "latency": {"key": "c", "result": {"label": "LiteRT latency", "float_1_threads_ms": 9.0}}}
    compared = benchmark_cache.compare_rows(current, earlier, "earlier")
    assert [row["id"] for row in compared["rows"]] == ["fp32"]
    assert compared["max_difference_points"] == pytest.approx(0.5) and not compared["met"]
    within = benchmark_cache.compare_rows(current, {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.902}}},
                                         "close")
    assert within["met"] and within["max_difference_points"] == pytest.approx(0.2)
    against_nothing = benchmark_cache.compare_rows(current, {}, "none")
    assert not against_nothing["met"] and against_nothing["rows"] == []


@pytest.mark.parametrize("write, problem", [
    (lambda path: path.write_text("{not json"),
     "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (lambda path: path.write_text("[]"), "not a row cache but a JSON list"),
    (lambda path: path.mkdir(), "Is a directory"),
    # A link to nothing read as a run that "did not measure this teacher".
    (lambda path: os.symlink(path.parent / "gone.json", path), "No such file or directory"),
    (lambda path: None, None)])
def test_an_earlier_row_cache_that_cannot_be_read_is_named_with_why_where_the_comparison_is(tmp_path, write, problem):
    # It read as no rows: "no row there has the same settings", without a word of the file.
    (tmp_path / "earlier" / "teacher").mkdir(parents=True)
    path = tmp_path / "earlier" / "teacher" / "rows.json"
    write(path)
    current = {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.9}}}
    comparison = benchmark_cache.compare_with_earlier(current, str(tmp_path / "earlier"), "teacher")
    assert comparison["rows"] == [] and not comparison["met"]
    # None: there is no file, which was said as a read failure, "could not be read (there is none: …)".
    assert benchmark_report.format_reproducibility(comparison)[-1] == (
        f"- {path} could not be read ({problem}), so no row was compared" if problem else
        f"- {tmp_path / 'earlier'} did not measure the teacher 'teacher' (it has no teacher/rows.json), "
        "so no row was compared")
    if path.is_dir():
        path.rmdir()
    path.write_text(json.dumps({"fp32": benchmark_cache.cache_entry("a", {"label": "FP32", "top1": 0.9})}))
    readable = benchmark_cache.compare_with_earlier(current, str(tmp_path / "earlier"), "teacher")
    assert "unreadable" not in readable and readable["met"] and len(readable["rows"]) == 1


def test_a_difference_of_exactly_the_margin_repeats():
    exact = benchmark_cache.compare_rows({"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.903}}},
                                        {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.900}}}, "x")
    assert exact["max_difference_points"] == pytest.approx(0.3) and exact["met"]


def _row_keys(config):
    """Each row's cache key for `config`, without a teacher or data (the keys need neither)."""
    import types
    rows = object.__new__(benchmark_rows.TeacherBenchmark)
    rows.config, rows.teacher, rows.dataset_name, rows.test_labels = (
        config, types.SimpleNamespace(name="teacher"), "data", [0] * 10)
    return {row_id: benchmark_cache.row_key(row_id, settings) for row_id, _, _, settings in rows.rows()}


# Each setting, changed, and rows computed with it: their cached results must not be taken for the new
# setting's (a rerun with another --qat_shift_fraction reported the old rows as current).
CHANGED_SETTINGS = [
    ({"generator_steps": 7}, ("zscgan_ptq", "zscgan_qat_w8a8", "latency", "generator_speed")),
    ({"generator_batch_size": 7}, ("zscgan_ptq", "zscgan_qat_w4a4")),
    ({"noise_dim": 7}, ("zscgan_ptq",)), ({"generator_channels": 7}, ("zscgan_ptq",)),
    ({"generator_blur_sigma": 0.5}, ("zscgan_ptq",)), ({"mode_seeking_loss_weight": 0.3}, ("zscgan_ptq",)),
    ({"generator_pool_size": 2}, ("zscgan_ptq", "zscgan_qat_w8a8")),
    ({"bn_layer_weighting": "uniform"}, ("zscgan_ptq",)),
    ({"qat_steps": 7}, ("zscgan_qat_w8a8", "real_qat_w8a8", "w4a4_spread")),
    ({"qat_batch_size": 7}, ("zscgan_qat_w8a8", "real_qat_w4a4")),
    ({"qat_learning_rate": 1e-3}, ("zscgan_qat_w8a8", "real_qat_w8a8")),
    ({"qat_feature_loss_weight": 0.5}, ("zscgan_qat_w8a8", "real_qat_w8a8")),
    ({"qat_mixed_fraction": 0.5}, ("zscgan_qat_w8a8",)), ({"qat_shift_fraction": 0.25}, ("zscgan_qat_w8a8",)),
    ({"qat_flip": False}, ("zscgan_qat_w8a8",)), ({"qat_joint_generator": True}, ("zscgan_qat_w8a8",)),
    ({"low_bit_ranges": "min_max"}, ("zscgan_qat_w4a4", "real_qat_w4a4", "w4a4_spread")),
    ({"distilled_steps": 7}, ("distilled_ptq",)), ({"calibration_samples": 7}, ("real_ptq", "zscgan_ptq")),
    ({"seed": 7}, ("fp32", "real_ptq", "zscgan_qat_w8a8")), ({"latency_runs": 7}, ("latency",)),
    ({"calibration_draws": 3}, ("ptq_spread",)), ({"w4a4_seed_draws": 3}, ("w4a4_spread",)),
]


@pytest.mark.parametrize("change, affected", CHANGED_SETTINGS)
def test_a_changed_setting_changes_the_key_of_every_row_computed_with_it(change, affected):
    import dataclasses
    from zscgan_tf.benchmark_config import BenchmarkConfig
    base = BenchmarkConfig(schemes=("w8a8", "w4a4"), generator_blur_sigma=1.0, mode_seeking_loss_weight=0.1,
                           generator_pool_size=3, bn_layer_weighting="noise_floor", qat_feature_loss_weight=1.0,
                           qat_mixed_fraction=0.25, qat_shift_fraction=0.125, qat_flip=True, low_bit_ranges="mse",
                           calibration_draws=2, w4a4_seed_draws=2)
    before, after = _row_keys(base), _row_keys(dataclasses.replace(base, **change))
    assert [row for row in affected if before[row] == after[row]] == []
    # And rows that do not use it keep theirs: a change does not redo everything (every row is keyed with
    # the seed, which picks an evaluation subset; every row but FP32 with the calibration count too).
    assert before["fp32"] == after["fp32"] or "seed" in change


@pytest.mark.parametrize("text, kept", [
    ("", []), ("[]", []), ('"done"', []), ("3", []),
    # Entries of another shape read as absent; the well-formed one is kept.
    ('{"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.9}}, "noise_ptq": [],'
     ' "latency": {"key": 3, "result": {}}, "real_ptq": {"key": "b", "result": 0.5},'
     ' "zscgan_ptq": {"result": {"top1": 0.8}}}', ["fp32"])])
def test_a_row_cache_of_another_shape_reads_as_those_rows_not_cached(tmp_path, text, kept):
    # A hand's edit or a file from elsewhere: the rows are computed again, where they ended in a traceback.
    path = tmp_path / benchmark_cache.ROWS_FILE
    path.write_text(text)
    cache = benchmark_cache.read_row_cache(str(path))
    assert sorted(cache) == kept
    rows = [("fp32", "FP32", None, {}), ("noise_ptq", "noise PTQ", None, {})]
    assert benchmark_cache.current_rows(cache, rows) == {}  # Their keys are not the settings' keys.
    assert benchmark_cache.compare_rows(cache, cache, "itself")["rows"] == (
        [{"id": "fp32", "label": "FP32", "top1": 0.9, "earlier_top1": 0.9, "difference_points": 0.0}] if kept else [])
    assert benchmark_cache.read_row_cache(str(tmp_path / "missing.json")) == {}


def test_a_cached_row_edited_after_it_was_written_reads_as_not_cached(tmp_path):
    # The audit's hand-edited figures and labels ended in tracebacks as the table was made (a top-1 of "0.9",
    # of null, a row without its label), though the README says an edited rows.json is computed again.
    path = tmp_path / benchmark_cache.ROWS_FILE
    written = {"fp32": benchmark_cache.cache_entry("a", {"label": "FP32", "top1": 0.9, "seconds": 1.0}),
               "latency": benchmark_cache.cache_entry("b", {"label": "LiteRT latency", "float_1_threads_ms": 1.5})}
    path.write_text(json.dumps(written))
    assert benchmark_cache.read_row_cache(str(path)) == written
    for edit in (lambda result: result.update(top1="0.9"), lambda result: result.update(top1=None),
                 lambda result: result.pop("label"), lambda result: result.update(seconds=2.0)):
        edited = json.loads(json.dumps(written))
        edit(edited["fp32"]["result"])
        path.write_text(json.dumps(edited))
        assert sorted(benchmark_cache.read_row_cache(str(path))) == ["latency"], edited["fp32"]
    edited = json.loads(json.dumps(written))
    edited["fp32"]["key"] = "another"  # Its settings changed by hand: recomputed too.
    path.write_text(json.dumps(edited))
    assert sorted(benchmark_cache.read_row_cache(str(path))) == ["latency"]
    # An entry of an earlier version, without a digest, is taken as it was, and given one, where what every table
    # reads of it (its label, its top-1) is as the benchmark writes it.
    legacy = {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.9}},
              "latency": {"key": "b", "result": {"label": "LiteRT latency", "float_1_threads_ms": 1.5}},
              "real_ptq": {"key": "c", "result": {"label": "real-data PTQ", "top1": "94%"}},
              "noise_ptq": {"key": "d", "result": {"top1": 0.5}}}
    path.write_text(json.dumps(legacy))
    assert benchmark_cache.read_row_cache(str(path)) == {
        "fp32": benchmark_cache.cache_entry("a", {"label": "FP32", "top1": 0.9}),
        "latency": benchmark_cache.cache_entry("b", {"label": "LiteRT latency", "float_1_threads_ms": 1.5})}


@pytest.mark.parametrize("text", ["[]", '"sha"', '{"teacher_sha256": "another"}', '{"teacher_sha256": 5}',
                                  '{"teacher_sha256": ["a"]}'])
def test_a_teacher_record_of_another_shape_is_not_a_fingerprint(tmp_path, teacher, text):
    # A teacher.json that records no fingerprint is taken as one from before fingerprints were recorded, and
    # this teacher's is recorded; one that records another teacher's refuses its rows.
    (tmp_path / benchmark_rows.TEACHER_FILE).write_text(text)
    benchmark = types.SimpleNamespace(dir=str(tmp_path), teacher=teacher)
    if "another" in text:
        with pytest.raises(UserError, match="holds rows and generators of another teacher"):
            benchmark_rows.TeacherBenchmark.check_same_teacher(benchmark)
        return
    benchmark_rows.TeacherBenchmark.check_same_teacher(benchmark)
    recorded = json.loads((tmp_path / benchmark_rows.TEACHER_FILE).read_text())
    assert recorded == {"teacher_sha256": teachers.fingerprint(teacher)}


def test_a_later_teacher_the_benchmark_cannot_measure_is_refused_before_the_first_is_measured(tmp_path, monkeypatch):
    # The benchmark audit's and its review's: refused once the first teacher's rows had run (hours, with the
    # benchmark's config): another number of classes than the data, a student TF-MOT cannot build.
    from conftest import build_student_failing_classifier, build_tiny_classifier
    from zscgan_tf.benchmark_config import BenchmarkConfig
    first, fewer_classes, shared_conv = (str(tmp_path / f"{name}.keras") for name in ("first", "four", "shared"))
    build_tiny_classifier(num_classes=10).save(first)
    build_tiny_classifier(num_classes=4).save(fewer_classes)  # The digits have 10 classes.
    build_student_failing_classifier("shared_conv", num_classes=10).save(shared_conv)
    monkeypatch.setattr(benchmark_rows.TeacherBenchmark, "run",
                        lambda *args, **kwargs: pytest.fail("the first teacher was measured"))
    for later, message in ((fewer_classes, r"^digits has 10 classes but teacher 'four' predicts 4$"),
                           (shared_conv, r"^\[shared\] the W8A8 QAT rows would fail once the rows before them had run: "
                                         "TF-MOT could not quantize the teacher ")):
        benchmark = BenchmarkConfig(teachers=(first, later), dataset="digits", work_dir=str(tmp_path / "bench"),
                                    eval_max_samples=20, calibration_samples=10, schemes=("w8a8", "w4a4"),
                                    calibration_draws=0, w4a4_seed_draws=0)
        with pytest.raises(UserError, match=message):
            benchmark_run.run_benchmark(benchmark, progress=False)


def test_teachers_named_twice_or_after_the_benchmarks_own_files_are_refused_saying_so(tmp_path):
    # The same file twice was told to rename one; a teacher called results.json had its rows' directory made
    # where results.json goes, a traceback after its first row.
    with pytest.raises(UserError, match=r"^--teachers names /a/teacher.keras twice$"):
        benchmark_run._check_distinct_teacher_names(["/a/teacher.keras", "/a/../a/teacher.keras"])
    for name in ("results.json", "results.md", ".lock"):
        with pytest.raises(UserError, match=re.escape(f"--teachers names a teacher called {name!r} (/a/{name}.keras), "
                                                      "the name of a file the benchmark writes")):
            benchmark_run._check_distinct_teacher_names([f"/a/{name}.keras"])
    benchmark_run._check_distinct_teacher_names(["/a/teacher.keras", "builtin:digits_resnet8"])


def test_teachers_an_earlier_invocation_measured_and_this_one_leaves_out_are_named(tmp_path):
    # The benchmark audit's: a rerun with other --teachers rewrote results.md without them, unsaid.
    for name, files in (("resnet20", ["rows.json"]), ("mobilenet_v2", ["rows.json"]), ("notes", [])):
        (tmp_path / name).mkdir()
        for file_name in files:
            (tmp_path / name / file_name).write_text("{}")
    (tmp_path / "results.json").write_text("{}")
    assert benchmark_run._other_teachers_measured(str(tmp_path), {"resnet20": {}}) == ["mobilenet_v2"]
    assert benchmark_run._other_teachers_measured(str(tmp_path), {"resnet20": {}, "mobilenet_v2": {}}) == []


def test_a_file_where_a_teacher_keeps_its_generator_run_or_qat_checkpoints_is_refused_before_any_row(tmp_path):
    # The benchmark audit's: refused as the pool trained, or a traceback as QAT saved, after the rows before them.
    from conftest import build_tiny_classifier
    from zscgan_tf.benchmark_config import BenchmarkConfig
    teacher = str(tmp_path / "first.keras")
    build_tiny_classifier(num_classes=10).save(teacher)
    for name, keeps in (("generator", "a generator run"), ("qat", "its QAT checkpoints")):
        work_dir = tmp_path / f"bench_{name}"
        (work_dir / "first").mkdir(parents=True)
        (work_dir / "first" / name).write_text("mine")
        benchmark = BenchmarkConfig(teachers=(teacher,), dataset="digits", work_dir=str(work_dir),
                                    eval_max_samples=20, calibration_samples=10, schemes=("w8a8", "w4a4"),
                                    calibration_draws=0, w4a4_seed_draws=0)
        with pytest.raises(UserError) as refusal:
            benchmark_run.run_benchmark(benchmark, progress=False)
        assert str(refusal.value) == (f"{work_dir / 'first' / name} is a file where the benchmark keeps {keeps}; "
                                      "move it away")
        assert not (work_dir / "first" / "rows.json").exists()
        assert (work_dir / "first" / name).read_text() == "mine"
