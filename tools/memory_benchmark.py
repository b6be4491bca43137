"""Measures resident memory over long generator training and QAT, to catch leaks.

Runs both training stages through the same loop `python -m zscgan_tf.train` uses
(checkpoints, loss history, TensorBoard) on a small teacher, samples the process's
resident set size every `--sample_every` steps once `--warmup_steps` have passed, and
prints one table row per stage: RSS after warm-up, the maximum, the final value, and the
growth from warm-up to the end.

  python tools/memory_benchmark.py                       # 10,000 steps of each stage
  python tools/memory_benchmark.py --steps=2000 --sample_every=100

Bad input prints one `error: ...` line and exits with status 2; a --work_dir another memory
benchmark holds, with 75.
"""

import os
import shutil
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import zscgan_tf  # noqa: F401,E402  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import psutil  # noqa: E402
import tf_keras  # noqa: E402
from absl import flags  # noqa: E402

from zscgan_tf import cli, config_changes, distill, files, quantization_stages, quantize  # noqa: E402
from zscgan_tf import teachers, zero_shot  # noqa: E402
from zscgan_tf import config as config_lib  # noqa: E402
from zscgan_tf.errors import UserError  # noqa: E402
from zscgan_tf.progress import say  # noqa: E402
from zscgan_tf import benchmark_cache, benchmark_rows, benchmark_run, generator_stage, run_state, seeds  # noqa: E402
from zscgan_tf import training_loop  # noqa: E402
from zscgan_tf.training_loop import TrainingInterrupted  # noqa: E402

MEBIBYTE = 1 << 20

FLAGS = flags.FLAGS
flags.DEFINE_string("teacher", "builtin:digits_resnet8", "The teacher: builtin:<name>, a model file or a Keras "
                    "Applications name.")
flags.DEFINE_integer("steps", 10000, "Steps of generator training, then the same number of QAT steps.")
flags.DEFINE_integer("batch_size", 16, "Samples per step of both stages.")
flags.DEFINE_integer("warmup_steps", 500, "Steps before the first sample: graphs are traced, caches filled.")
flags.DEFINE_integer("sample_every", 250, "Steps between resident-memory samples.")
flags.DEFINE_integer("checkpoint_every", 250, "Steps between checkpoints, as in a real run.")
flags.DEFINE_string("work_dir", "", "Where checkpoints and logs go; empty = a temporary directory.")
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")


class ResidentMemorySampler:
    """Wraps a training step and records RSS (bytes) every `every` steps after `warmup`."""

    def __init__(self, step_fn, step_counter, warmup: int, every: int):
        self._step_fn, self._step_counter = step_fn, step_counter
        self._warmup, self._every = warmup, every
        self._process = psutil.Process()
        self.samples = []

    def __call__(self):
        values = self._step_fn()
        step = int(self._step_counter.numpy())
        if step >= self._warmup and (step - self._warmup) % self._every == 0:
            self.samples.append((step, self._process.memory_info().rss))
        return values


def _row(stage: str, samples) -> str:
    if not samples:
        return (f"| {stage} | no samples (no step after the warm-up ran: fewer steps than it, or resumed past it) "
                "| | | |")
    values = [rss for _, rss in samples]
    # One sample, of a stage resumed near its end, measures no growth: it read "+0.00%".
    growth = f"{100 * (values[-1] - values[0]) / values[0]:+.2f}%" if len(values) > 1 else "none measured (one sample)"
    return (f"| {stage} | {values[0] / MEBIBYTE:.1f} MiB (step {samples[0][0]}) | {max(values) / MEBIBYTE:.1f} MiB "
            f"| {values[-1] / MEBIBYTE:.1f} MiB (step {samples[-1][0]}) | {growth} |")


# What the directories of tools/benchmark.py hold (its work directory, a teacher's in it), and a run's generator
# directory within one: this benchmark's own holds none of them.
_OTHER_TOOLS_FILES = (benchmark_run.RESULTS_JSON_FILE, benchmark_cache.ROWS_FILE, benchmark_rows.TEACHER_FILE,
                      os.path.join(run_state.GENERATOR_DIR, run_state.STATE_FILE))
# What this benchmark's work directory records of the checkpoints in it, so that a rerun with another batch size
# or teacher is refused before it trains into them or writes anything (another batch size resumed them, and its
# table named one for two; another teacher's refusal named a variable's shape, after a TensorBoard file was written).
RECORD_FILE = benchmark_run.MEMORY_BENCHMARK_FILE  # By which tools/benchmark.py refuses this one's directory.
TEACHER_SEED = 0


def _record(work_dir: str) -> dict:
    """What `work_dir` records of its checkpoints (`RECORD_FILE`); {} where it records nothing readable."""
    recorded = files.read_json(os.path.join(work_dir, RECORD_FILE), {})
    return recorded if isinstance(recorded, dict) else {}


def _holds_checkpoints(work_dir: str) -> bool:
    return any(training_loop.latest_step(os.path.join(work_dir, name))
               for name in (run_state.GENERATOR_DIR, quantization_stages.DISTILLATION_DIR))


def _check_flags():
    for name in ("steps", "batch_size", "sample_every", "checkpoint_every"):
        if getattr(FLAGS, name) < 1:
            raise UserError(f"--{name} must be positive, got {getattr(FLAGS, name)}")
    if FLAGS.batch_size < 2:
        raise UserError(f"--batch_size must be at least 2 (BN statistics need a batch), got {FLAGS.batch_size}")
    if not 0 <= FLAGS.warmup_steps < FLAGS.steps:
        raise UserError(f"--warmup_steps must be in [0, --steps), got {FLAGS.warmup_steps}")
    if FLAGS.warmup_steps + FLAGS.sample_every >= FLAGS.steps:  # Growth needs a first sample and a later one.
        raise UserError(f"--sample_every={FLAGS.sample_every} after --warmup_steps={FLAGS.warmup_steps} leaves fewer "
                        f"than two samples in --steps={FLAGS.steps}; lower it or train more steps")
    reason = FLAGS.work_dir and files.unusable_directory_reason(FLAGS.work_dir)
    if reason:
        raise UserError(f"cannot use --work_dir {FLAGS.work_dir!r}: {reason}")
    if FLAGS.work_dir and os.path.isfile(os.path.join(FLAGS.work_dir, run_state.STATE_FILE)):
        raise UserError(f"--work_dir {FLAGS.work_dir!r} is the work directory of a run (python -m zscgan_tf.train), "
                        "whose generator this benchmark would train on; choose another, or leave --work_dir out (a "
                        "temporary one)")
    others = FLAGS.work_dir and [name for name in _OTHER_TOOLS_FILES
                                 if os.path.exists(os.path.join(FLAGS.work_dir, name))]
    if others:  # A teacher's directory of tools/benchmark.py: this one trained into its generator run's checkpoints.
        raise UserError(f"--work_dir {FLAGS.work_dir!r} holds {', '.join(others)}, files of tools/benchmark.py or of a "
                        "run, whose generator this benchmark would train on; choose another, or leave --work_dir out "
                        "(a temporary one)")
    if FLAGS.work_dir and os.path.isdir(FLAGS.work_dir):  # Refused now, not once the teacher has loaded (trained).
        files.check_not_in_use(FLAGS.work_dir, what="memory benchmark")
    finished = FLAGS.work_dir and training_loop.latest_step(
        os.path.join(FLAGS.work_dir, quantization_stages.DISTILLATION_DIR))
    if finished and finished >= FLAGS.steps:
        raise UserError(f"--work_dir {FLAGS.work_dir!r} holds a finished benchmark ({finished} steps of each stage): "
                        "nothing would train, so nothing would be measured; choose another --work_dir, or leave it out "
                        "(a temporary one)")
    trained = FLAGS.work_dir and training_loop.latest_step(os.path.join(FLAGS.work_dir, run_state.GENERATOR_DIR))
    if trained and trained > FLAGS.steps:  # Its stage trained nothing, and its row said "no samples".
        raise UserError(f"--work_dir {FLAGS.work_dir!r} holds a generator trained {trained} steps, more than "
                        f"--steps={FLAGS.steps}: it would not train, so its memory would not be measured; pass "
                        f"--steps={_steps_for_two_samples(trained)} or more to resume it and measure it, choose "
                        "another --work_dir, or leave it out (a temporary one)")
    recorded = _record(FLAGS.work_dir).get("batch_size") if FLAGS.work_dir else None
    if (type(recorded) is int and recorded != FLAGS.batch_size  # Refused now, not once the teacher has loaded.
            and _holds_checkpoints(FLAGS.work_dir)):
        raise UserError(f"--work_dir {FLAGS.work_dir!r} holds checkpoints trained at --batch_size={recorded}, not "
                        f"--batch_size={FLAGS.batch_size}: pass --batch_size={recorded} to resume them, choose another "
                        "--work_dir, or leave it out (a temporary one)")


def _steps_for_two_samples(trained: int) -> int:
    """The fewest --steps that take two resident-memory samples after step `trained`."""
    first = max(FLAGS.warmup_steps, trained + 1)
    first += -(first - FLAGS.warmup_steps) % FLAGS.sample_every  # The next step a sample is taken at.
    return first + FLAGS.sample_every


def _check_same_teacher(work_dir: str, teacher: teachers.Teacher, fingerprint: str) -> bool:
    """Refuses `work_dir` where its checkpoints trained against another teacher than `teacher`, whose
    `teachers.fingerprint` is `fingerprint`. Returns whether this run may record its settings there:
    not where checkpoints record none (an earlier version's, or a damaged record), which get a note
    instead, since their restore may yet fail on another teacher's shapes, and a record made then would
    refuse the right teacher on the next run."""
    if not _holds_checkpoints(work_dir):
        return True
    recorded = _record(work_dir)
    if not isinstance(recorded.get("teacher_sha256"), str):
        say(f"note: {work_dir} records neither the teacher nor the batch size its checkpoints trained with (a memory "
            f"benchmark of an earlier version of zscgan_tf, or a damaged {RECORD_FILE}), so they are taken to be this "
            "one's: if they are not, choose another --work_dir")
        return False
    if recorded["teacher_sha256"] == fingerprint:
        return True
    then = recorded.get("teacher") if isinstance(recorded.get("teacher"), str) else ""
    if config_changes.names_another_teacher(then, files.portable_path(FLAGS.teacher)):
        raise UserError(f"--work_dir {work_dir!r} holds checkpoints trained against another teacher ({then}) than "
                        f"this one ({FLAGS.teacher}); choose another --work_dir, or leave it out (a temporary one)")
    replaced = ": was the model file replaced?" if os.path.isfile(FLAGS.teacher) else ""
    raise UserError(f"--work_dir {work_dir!r} holds checkpoints trained against another teacher than {teacher.name} "
                    f"is now (its weights or preprocessing differ{replaced}); choose another --work_dir, or leave it "
                    "out (a temporary one)")


def benchmark():
    _check_flags()
    # Before the work directory is made: a teacher refused left a new directory holding a lock. A built-in
    # teacher not yet cached trains for minutes first, with its progress shown.
    # A Keras application has random weights here: the same ones in every process, so that a rerun resumes.
    tf_keras.utils.set_random_seed(TEACHER_SEED)
    teacher = teachers.load_teacher(teachers.TeacherSource(model=FLAGS.teacher, weights="none"), progress=True)
    if FLAGS.work_dir:
        fingerprint = teachers.fingerprint(teacher)
        recordable = _check_same_teacher(FLAGS.work_dir, teacher, fingerprint)
        os.makedirs(FLAGS.work_dir, exist_ok=True)
        with files.exclusive_use(FLAGS.work_dir, what="memory benchmark"):  # Two would train into one directory.
            if recordable:
                files.write_json_atomic(os.path.join(FLAGS.work_dir, RECORD_FILE), {
                    "batch_size": FLAGS.batch_size, "teacher": files.portable_path(FLAGS.teacher),
                    "teacher_sha256": fingerprint})
            _measure(FLAGS.work_dir, teacher)
        return
    work_dir = tempfile.mkdtemp(prefix="zscgan_tf_memory_")
    try:
        _measure(work_dir, teacher)
    finally:  # Its checkpoints serve no rerun, which starts again (it was left behind, 9 MB a run).
        shutil.rmtree(work_dir, ignore_errors=True)


def _measure(work_dir: str, teacher: teachers.Teacher):
    generator_config = config_lib.GeneratorConfig()
    generator = generator_stage.build_generator_for(teacher, generator_config)
    training = config_lib.GeneratorTrainingConfig(steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                                                  checkpoint_every=FLAGS.checkpoint_every,
                                                  image_every=FLAGS.checkpoint_every)
    trainer = zero_shot.GeneratorTrainer(teacher, generator, config_lib.LossConfig(), training)
    generator_sampler = ResidentMemorySampler(trainer.train_step, trainer.step, FLAGS.warmup_steps,
                                              FLAGS.sample_every)
    trainer.train_step = generator_sampler  # The loop calls `trainer.train_step()` at every step.
    print(f"generator: {FLAGS.steps} steps of {FLAGS.batch_size} against {teacher.name}, work dir {work_dir}",
          flush=True)
    trainer.train(os.path.join(work_dir, run_state.GENERATOR_DIR),
                  log_dir=os.path.join(work_dir, run_state.LOGS_DIR, run_state.GENERATOR_DIR))
    print(_row("generator", generator_sampler.samples), flush=True)  # Kept if QAT is stopped early.

    quantization = config_lib.QuantizationConfig()
    calibration = quantization_stages.calibration_samples(generator, teacher, quantization.calibration_samples,
                                                          seed=seeds.CALIBRATION_SEED_OFFSET)
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme.from_name(quantization.scheme),
                                           calibration_inputs=calibration, input_range=teacher.input_range())
    settings = config_lib.DistillationConfig(steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                                             checkpoint_every=FLAGS.checkpoint_every)
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes, settings)
    distillation_sampler = ResidentMemorySampler(distiller.train_step, distiller.step, FLAGS.warmup_steps,
                                                 FLAGS.sample_every)
    distiller.train_step = distillation_sampler
    print(f"distillation: {FLAGS.steps} QAT steps of {FLAGS.batch_size}", flush=True)
    distillation_dir = quantization_stages.DISTILLATION_DIR
    distiller.train(os.path.join(work_dir, distillation_dir),
                    log_dir=os.path.join(work_dir, run_state.LOGS_DIR, distillation_dir))

    print("\n".join([
        f"Resident memory, sampled every {FLAGS.sample_every} steps after {FLAGS.warmup_steps} warm-up steps:", "",
        "| stage | after warm-up | max | final | growth |", "|---|---|---|---|---|",
        _row("generator", generator_sampler.samples), _row("QAT", distillation_sampler.samples)]))


def _benchmark_or_stopped():
    """`benchmark()`. Stopped in a training loop whose checkpoint is in a temporary directory,
    the line says that a rerun starts again; with `--work_dir`, it resumes."""
    try:
        benchmark()
    except TrainingInterrupted as interruption:
        if FLAGS.work_dir:
            raise
        raise TrainingInterrupted(interruption.stopped, interruption.signal_number,
                                  advice="rerun the same command to start again") from None


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    return cli.run_command(FLAGS, argv, _benchmark_or_stopped, resumable=False)


if __name__ == "__main__":
    sys.exit(main())
