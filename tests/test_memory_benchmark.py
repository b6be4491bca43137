"""`tools/memory_benchmark.py` as users run it: one row of resident memory per stage, and a stop
whose line says what a rerun does, each in a process of its own; the refusals and the reruns of a
finished benchmark in one process they share (tests/tool_process.py), which calls `main` afresh for each."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import build_tiny_classifier, lock_held_by_another_process
from tool_process import ToolProcess
from zscgan_tf import teacher_training
from zscgan_tf.preprocessing import Preprocessing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, os.path.join("tools", "memory_benchmark.py"), "--batch_size=4", "--warmup_steps=2",
           "--sample_every=2"]


@pytest.fixture
def command(tiny_teacher_file):
    """The benchmark on the tiny teacher: its default, a built-in one, would be trained on first use."""
    return COMMAND + [f"--teacher={tiny_teacher_file}"]


@pytest.fixture(scope="module")
def benchmark_process():
    """One process for the refusals and for the reruns of a finished benchmark: each process of its own
    started Python with TensorFlow again (5 to 7 s on 2 cores), which was most of these tests' time."""
    with ToolProcess("memory_benchmark") as process:
        yield process


def _arguments(command):
    """The flags of `command` (`python tools/memory_benchmark.py ...`), as `benchmark_process` takes them."""
    return command[2:]


ROW = re.compile(r"^\| (generator|QAT) \| ([\d.]+) MiB \(step 2\) \| ([\d.]+) MiB \| ([\d.]+) MiB \(step 6\) "
                 r"\| [+-][\d.]+% \|$", re.MULTILINE)


def test_prints_a_row_of_resident_memory_for_each_stage(command, tmp_path):
    finished = subprocess.run(command + ["--steps=6", "--checkpoint_every=3"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})

    assert finished.returncode == 0, finished.stderr
    assert not [name for name in os.listdir(tmp_path) if name.startswith("zscgan_tf_memory_")]  # Left behind before.
    # Each stage's progress line: 10,000 steps of each said nothing for minutes.
    assert "\ngenerator 6/6 [" in finished.stdout and "\ndistillation 6/6 [" in finished.stdout
    rows = ROW.findall(finished.stdout)
    # The generator's row is printed as soon as its stage ends, then again in the table.
    assert [stage for stage, *_ in rows] == ["generator", "generator", "QAT"], finished.stdout
    for _, after_warmup, maximum, final in rows:
        assert float(maximum) >= max(float(after_warmup), float(final)) > 100  # MiB of a TensorFlow process.


@pytest.mark.parametrize("own_work_dir", [False, True])
def test_a_stopped_benchmark_says_whether_a_rerun_resumes_or_starts_again(command, tmp_path, own_work_dir):
    work_dir_flag = [f"--work_dir={tmp_path / 'work'}"] if own_work_dir else []
    with open(tmp_path / "stderr", "w+") as stderr:  # A pipe could fill with TensorFlow's log and block it.
        process = subprocess.Popen(command + ["--steps=100000", "--checkpoint_every=2"] + work_dir_flag,
                                   cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   env={**os.environ, "TMPDIR": str(tmp_path)})
        try:
            started = process.stdout.readline()  # "generator: ... steps of 4 against ..., work dir <dir>"
            work_dir = started.rsplit(" ", 1)[-1].strip()
            checkpoint = os.path.join(work_dir, "generator", "checkpoints", "checkpoint")
            deadline = time.monotonic() + 240
            while not os.path.exists(checkpoint) and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.2)
            assert os.path.exists(checkpoint), started  # Stopped inside the training loop.
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=120)
        finally:
            process.kill()
        stderr.seek(0)
        last_line = stderr.read().strip().splitlines()[-1]

    assert process.returncode == 143
    assert os.path.isdir(work_dir) == own_work_dir  # A temporary one is removed: a rerun starts again.
    advice = "checkpoint saved, rerun the same command to resume" if own_work_dir else \
        "rerun the same command to start again"
    assert re.fullmatch(rf"stopped: SIGTERM at generator step \d+; {advice}", last_line), last_line


def test_a_work_dir_that_is_a_file_or_too_few_samples_is_one_line_before_anything_runs(command, tmp_path,
                                                                                        benchmark_process):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    result = benchmark_process(*_arguments(command), "--steps=6", f"--work_dir={a_file}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: cannot use --work_dir '{a_file}': '{a_file}' is not a "
                                                      "directory")
    assert a_file.read_text() == "mine"
    # A run's work directory: its generator would have been trained on, and the advice of the refusal that
    # followed was to delete the directory.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text("{}")
    result = benchmark_process(*_arguments(command), "--steps=6", f"--work_dir={run_dir}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: --work_dir '{run_dir}' is the work directory of a run (python -m zscgan_tf.train), whose generator "
        "this benchmark would train on; choose another, or leave --work_dir out (a temporary one)")
    assert os.listdir(run_dir) == ["state.json"]
    # A teacher's directory of tools/benchmark.py: this one trained into its generator run's checkpoints.
    for name in ("rows.json", os.path.join("generator", "state.json")):
        bench_dir = tmp_path / "bench" / name.replace(os.sep, "_")
        os.makedirs(os.path.dirname(bench_dir / name), exist_ok=True)
        (bench_dir / name).write_text("{}")
        result = benchmark_process(*_arguments(command), "--steps=6", f"--work_dir={bench_dir}")
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
            f"error: --work_dir '{bench_dir}' holds {name}, files of tools/benchmark.py or of a run, whose generator "
            "this benchmark would train on; choose another, or leave --work_dir out (a temporary one)")
    # A teacher refused: the new work directory was made, and left holding a lock, before the teacher loaded.
    new_dir = tmp_path / "new"
    result = benchmark_process(*COMMAND[2:], f"--teacher={tmp_path / 'missing.keras'}", "--steps=6",
                               f"--work_dir={new_dir}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: model file '{tmp_path / 'missing.keras'}' does not exist")
    assert not new_dir.exists()
    # A link to nothing: its parent was judged, and making the directory ended in a FileExistsError's traceback.
    os.symlink(tmp_path / "unmounted", tmp_path / "link")
    result = benchmark_process(*_arguments(command), "--steps=6", f"--work_dir={tmp_path / 'link'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: cannot use --work_dir '{tmp_path / 'link'}': '{tmp_path / 'link'}' is a symbolic link to "
        f"'{tmp_path / 'unmounted'}', which does not exist")
    # Held by another memory benchmark: refused before the teacher loads (a built-in one trains for minutes).
    held = tmp_path / "held"
    held.mkdir()
    with lock_held_by_another_process(held, what="memory benchmark") as other:
        result = benchmark_process(*COMMAND[2:], "--teacher=builtin:no_such_teacher", "--steps=6",
                                   f"--work_dir={held}")
    assert result.returncode == 75 and result.stderr.strip().splitlines()[-1] == (
        f"error: {str(held)!r} is in use by another memory benchmark (process {other.pid}); wait for it to finish, or "
        "pass another --work_dir")
    # Fewer than two samples measure no growth: it trained both stages and reported "no samples".
    result = benchmark_process(*_arguments(command), "--steps=6", "--sample_every=5")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: --sample_every=5 after --warmup_steps=2 leaves fewer than two samples in --steps=6; lower it or train "
        "more steps")


def test_a_work_dir_holding_a_finished_benchmark_is_refused_rather_than_measuring_nothing(
        command, tmp_path, tiny_teacher_file, benchmark_process):
    work_dir = tmp_path / "work"  # Not tmp_path itself, which holds the teacher.
    finish = [*_arguments(command), "--steps=6", "--checkpoint_every=3", f"--work_dir={work_dir}"]
    finished = benchmark_process(*finish)
    assert finished.returncode == 0, finished.stderr[-2000:]
    again = benchmark_process(*finish)
    assert again.returncode == 2 and "| generator |" not in again.stdout
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: --work_dir '{work_dir}' holds a finished benchmark (6 steps of each stage): nothing would train, so "
        "nothing would be measured; choose another --work_dir, or leave it out (a temporary one)")
    # Another batch size than its checkpoints trained at: it resumed them without a word.
    resized = benchmark_process(*_arguments(command), "--steps=10", "--batch_size=8", f"--work_dir={work_dir}")
    assert resized.returncode == 2 and "generator: " not in resized.stdout
    assert resized.stderr.strip().splitlines()[-1] == (
        f"error: --work_dir '{work_dir}' holds checkpoints trained at --batch_size=4, not --batch_size=8: pass "
        "--batch_size=4 to resume them, choose another --work_dir, or leave it out (a temporary one)")
    # Another teacher: refused only as its checkpoints failed to restore, naming a variable's shape, once a
    # TensorBoard file had been written into the directory.
    other_teacher = str(tmp_path / "other_teacher.keras")
    teacher_training.save_teacher(build_tiny_classifier(num_classes=5), other_teacher, Preprocessing("tf"),
                                  dataset="synthetic", class_names=list("abcde"), metrics=None)
    written = sorted(os.listdir(work_dir / "logs" / "generator"))
    another = benchmark_process(*COMMAND[2:], f"--teacher={other_teacher}", "--steps=10", f"--work_dir={work_dir}")
    assert another.returncode == 2 and another.stderr.strip().splitlines()[-1] == (
        f"error: --work_dir '{work_dir}' holds checkpoints trained against another teacher ({tiny_teacher_file}) than "
        f"this one ({other_teacher}); choose another --work_dir, or leave it out (a temporary one)")
    assert sorted(os.listdir(work_dir / "logs" / "generator")) == written
    # More steps than it holds: it resumes and measures the ones it trains; here one step, a sample, whose
    # growth read "+0.00%".
    more = benchmark_process(*_arguments(command), "--steps=8", "--checkpoint_every=3", f"--work_dir={work_dir}")
    assert more.returncode == 0, more.stderr
    for stage in ("generator", "QAT"):
        assert re.search(rf"^\| {stage} \| [\d.]+ MiB \(step 8\) \| [\d.]+ MiB \| [\d.]+ MiB \(step 8\) "
                         r"\| none measured \(one sample\) \|$", more.stdout, re.MULTILINE), more.stdout
    # Stopped in QAT (its checkpoints gone here), then rerun with fewer steps than its generator trained: that
    # stage trained nothing, its row said "no samples", and the exit status was 0.
    shutil.rmtree(work_dir / "distillation")
    fewer = benchmark_process(*_arguments(command), "--steps=6", "--checkpoint_every=3", f"--work_dir={work_dir}")
    assert fewer.returncode == 2 and "| generator |" not in fewer.stdout
    assert fewer.stderr.strip().splitlines()[-1] == (
        f"error: --work_dir '{work_dir}' holds a generator trained 8 steps, more than --steps=6: it would not train, "
        "so its memory would not be measured; pass --steps=12 or more to resume it and measure it, choose another "
        "--work_dir, or leave it out (a temporary one)")
    # A directory of an earlier version records nothing: resumed against another teacher, its restore fails on the
    # shapes, and a record made then named that teacher, refusing the right one on the next run.
    os.remove(work_dir / "memory_benchmark.json")
    legacy_other = benchmark_process(*COMMAND[2:], f"--teacher={other_teacher}", "--steps=14", f"--work_dir={work_dir}")
    assert legacy_other.returncode == 2 and "records neither the teacher nor the batch size" in legacy_other.stdout
    assert not (work_dir / "memory_benchmark.json").exists()
    legacy = benchmark_process(*_arguments(command), "--steps=14", "--checkpoint_every=3", f"--work_dir={work_dir}")
    assert legacy.returncode == 0 and "| QAT | " in legacy.stdout, legacy.stderr[-2000:]
