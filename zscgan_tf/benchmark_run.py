"""The benchmark run teacher by teacher, in one work directory it locks.

`run_benchmark(BenchmarkConfig)` refuses a bad setting, work directory or teacher before any
row, then measures each teacher's rows (`benchmark_rows.TeacherBenchmark`) in turn, and after
each row rewrites `results.json` and `results.md` (`benchmark_report`). `tools/benchmark.py`
is its command line.
"""

import contextlib
import os
import time

from zscgan_tf import quantization_stages, reproducibility, run_state, teachers, training_loop
from zscgan_tf.benchmark_cache import ROWS_FILE
from zscgan_tf.benchmark_config import BenchmarkConfig, validate
from zscgan_tf.benchmark_report import format_results, targets
from zscgan_tf.benchmark_rows import TeacherBenchmark
from zscgan_tf.errors import UserError
from zscgan_tf.files import (LOCK_FILE, check_not_in_use, exclusive_use, strict_json_values, unusable_directory_reason,
                             write_json_atomic, write_text_atomic)
from zscgan_tf.progress import say

RESULTS_JSON_FILE = "results.json"
RESULTS_MARKDOWN_FILE = "results.md"
# What `tools/memory_benchmark.py` records of the checkpoints in its work directory; with those checkpoints, in
# its own `generator/` and `distillation/`, it marks a directory the benchmark's files would be mixed into.
MEMORY_BENCHMARK_FILE = "memory_benchmark.json"
_MEMORY_BENCHMARK_FILES = (MEMORY_BENCHMARK_FILE, os.path.join(run_state.GENERATOR_DIR, training_loop.CHECKPOINT_DIR),
                           os.path.join(quantization_stages.DISTILLATION_DIR, training_loop.CHECKPOINT_DIR))

# The files the benchmark keeps in its work directory, beside a directory per teacher named after it.
_BENCHMARK_FILES = (RESULTS_JSON_FILE, RESULTS_MARKDOWN_FILE, LOCK_FILE)


def _check_distinct_teacher_names(sources) -> None:
    """Refuses two teachers whose rows would share a directory: each teacher's are kept under
    its name, a model file's name without its extension (the second was refused only once the
    first was measured, as if its file had been retrained)."""
    seen = {}
    for source in sources:
        name = teachers.model_file_name(source)
        if name.startswith(teachers.BUILTIN_PREFIX):
            name = name[len(teachers.BUILTIN_PREFIX):]
        if name in seen and os.path.abspath(seen[name]) == os.path.abspath(source):
            raise UserError(f"--teachers names {seen[name]} twice")
        if name in seen:
            raise UserError(f"--teachers names two teachers called {name!r} ({seen[name]} and {source}); the benchmark "
                            "keeps each teacher's rows under its name: rename one file")
        if name in _BENCHMARK_FILES:  # Its rows' directory would be one of them: a traceback after its first row.
            raise UserError(f"--teachers names a teacher called {name!r} ({source}), the name of a file the benchmark "
                            f"writes beside the teachers' directories: rename the file")
        seen[name] = source


def _is_benchmark_work_dir(path: str) -> bool:
    """Whether `path` holds the benchmark's results or a teacher's rows, as a work directory of
    the benchmark does once it has measured a row."""
    return os.path.isfile(os.path.join(path, RESULTS_JSON_FILE)) or bool(_other_teachers_measured(path, ()))


def _other_teachers_measured(work_dir: str, measured) -> list:
    """The teachers of earlier invocations in `work_dir` (a directory with a row cache) that are
    not among `measured`, sorted."""
    return sorted(name for name in os.listdir(work_dir) if name not in measured
                  and os.path.isfile(os.path.join(work_dir, name, ROWS_FILE)))


def run_benchmark(benchmark: BenchmarkConfig, progress: bool = True) -> dict:
    """Measures every teacher of `benchmark`, resuming from rows cached in its work directory.

    Returns:
      The results as written to `results.json`: the recorded settings, and per teacher its
      rows, measurements, targets and wall time.

    Raises:
      UserError: a bad setting or work directory (before any teacher loads), teacher or dataset.
    """
    validate(benchmark)
    if benchmark.compare_to and not os.path.isdir(benchmark.compare_to):
        raise UserError(f"--compare_to {benchmark.compare_to!r} is not a directory")
    if benchmark.compare_to and not _is_benchmark_work_dir(benchmark.compare_to):
        raise UserError(f"--compare_to {benchmark.compare_to!r} is not a work directory of tools/benchmark.py (it "
                        f"holds neither {RESULTS_JSON_FILE} nor a teacher's {ROWS_FILE}): name one")
    if benchmark.deterministic:
        reproducibility.enable_deterministic_execution()
    reason = unusable_directory_reason(benchmark.work_dir)
    if reason:
        raise UserError(f"cannot {'write to' if os.path.isdir(benchmark.work_dir) else 'create'} --work_dir "
                        f"{benchmark.work_dir!r}: {reason}")
    if os.path.isfile(os.path.join(benchmark.work_dir, run_state.STATE_FILE)):
        raise UserError(f"--work_dir {benchmark.work_dir!r} is the work directory of a run (python -m "
                        "zscgan_tf.train), which the benchmark's files would be mixed into; choose another")
    memory = [name for name in _MEMORY_BENCHMARK_FILES if os.path.lexists(os.path.join(benchmark.work_dir, name))]
    if memory:
        raise UserError(f"--work_dir {benchmark.work_dir!r} is the work directory of tools/memory_benchmark.py (it "
                        f"holds {', '.join(memory)}), which the benchmark's files would be mixed into; choose another")
    _check_distinct_teacher_names(benchmark.teachers)
    for source in benchmark.teachers:  # A mistyped second teacher was refused once the first was measured.
        teachers.check_teacher_named(source)
    check_not_in_use(benchmark.work_dir, what="benchmark")  # Refused now, not once a teacher and data have loaded.
    results = {"settings": benchmark.recorded(), "teachers": {}}
    run_started = time.monotonic()

    def publish(bench=None, started=None):
        # One clock reading for both figures, so a teacher's time never exceeds the invocation's.
        now = time.monotonic()
        results["wall_seconds_this_session"] = round(now - run_started, 1)
        if bench is not None:
            entry = bench.results()
            entry["targets"] = targets(bench.teacher.name, entry["rows"], entry["measurements"])
            entry["wall_seconds_this_session"] = round(now - started, 1)
            results["teachers"][bench.teacher.name] = entry
        write_json_atomic(os.path.join(benchmark.work_dir, RESULTS_JSON_FILE), strict_json_values(results))
        write_text_atomic(os.path.join(benchmark.work_dir, RESULTS_MARKDOWN_FILE), format_results(results))

    with contextlib.ExitStack() as lock:
        started = time.monotonic()
        first = TeacherBenchmark(benchmark.teachers[0], benchmark, progress=progress)
        # Two invocations would share its cached rows. Taken once a teacher and its data have
        # loaded, so a mistyped one leaves no directory behind.
        os.makedirs(benchmark.work_dir, exist_ok=True)
        lock.enter_context(exclusive_use(benchmark.work_dir, what="benchmark"))
        first_loaded = time.monotonic() - started
        for source in benchmark.teachers[1:]:  # Each was refused only once the teachers before it were measured.
            TeacherBenchmark(source, benchmark, progress=progress).check()
        for index, source in enumerate(benchmark.teachers):
            started = time.monotonic() - (first_loaded if index == 0 else 0)
            bench = first if index == 0 else TeacherBenchmark(source, benchmark, progress=progress)
            bench.run(lambda: publish(bench, started))
            publish(bench, started)
            bench = first = None  # Its data is let go before the next teacher's loads.
    say(f"results in {os.path.join(benchmark.work_dir, RESULTS_MARKDOWN_FILE)}")
    others = _other_teachers_measured(benchmark.work_dir, results["teachers"])
    if others:  # Measured by an earlier invocation with other --teachers: gone from the tables without a word.
        say(f"note: {benchmark.work_dir} also holds the rows of {', '.join(others)}, which --teachers does not name "
            "and the results leave out; name them in --teachers too to have them in one table (their cached rows "
            "are not computed again)")
    return results
