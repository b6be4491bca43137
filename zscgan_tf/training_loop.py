"""The resumable loop shared by generator training and distillation.

It runs a compiled step until a step counter reaches its target, and on the way keeps
a `tf.train.Checkpoint` (models, optimizers, random streams, the counter), a JSON loss
history, TensorBoard scalars (in an events file checked to hold them all before each
checkpoint: `event_file`), and a progress line. It stops cleanly on a NaN or Inf
loss (keeping the last good checkpoint) and on Ctrl-C, SIGTERM, SIGHUP or output no one
reads any more (saving one first; `stop_signals`).

Ctrl-C, SIGTERM and SIGHUP are taken between steps (`stop_signals.stops_between_steps`): while
the loop runs, they only set a flag that is checked after each step. A KeyboardInterrupt
raised wherever the signal happens to land is not safe inside TensorFlow: of 30 Ctrl-Cs
sent in the first seconds of a tiny run, one was lost (training ran on to its last step)
and one crashed tracing with a SystemError. A second signal interrupts at once.
"""

import contextlib
import dataclasses
import glob
import math
import os
import shutil
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from zscgan_tf.errors import UserError, first_line
from zscgan_tf.event_file import EventFile
from zscgan_tf.files import read_json, write_json_atomic
from zscgan_tf.progress import ProgressBar, format_duration
from zscgan_tf.stop_signals import how_stopped, is_stop, stop_signal_of, stops_between_steps

CHECKPOINTS_TO_KEEP = 2
HISTORY_FILE = "history.json"
# Beside the checkpoints: the step of the last one and the seconds of training up to it, over
# every session, so that a resumed training reports its whole wall time.
WALL_TIME_FILE = "wall_time.json"
CHECKPOINT_DIR = "checkpoints"
# Images logged to TensorBoard are shrunk to this many pixels on their longer side: the grid
# of 20 ImageNet classes by 10 samples is 4480x2240 (20 MB as PNG, every `image_every` steps).
MAX_TENSORBOARD_IMAGE_SIDE = 2048


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or Inf; training stops at the last good checkpoint."""


class TrainingInterrupted(Exception):
    """Ctrl-C, SIGTERM, SIGHUP or a closed output during training, or during the evaluation
    (`evaluation_stage`); a checkpoint, or the evaluation's predictions so far, was saved first.

    Attributes:
      stopped: how and where, e.g. "SIGTERM at generator step 341" or "interrupted at
        evaluation image 2,560 of 10,000".
      signal_number: the signal that stopped it (SIGINT, SIGTERM or SIGHUP; `PIPE_CLOSED` for a
        closed output).
    """

    def __init__(self, stopped: str, signal_number: int,
                 advice: str = "checkpoint saved, rerun the same command to resume"):
        super().__init__(f"{stopped}; {advice}")
        self.stopped = stopped
        self.signal_number = signal_number


@dataclasses.dataclass(frozen=True)
class LoopSchedule:
    """When the loop stops, saves and records.

    Attributes:
      steps: the step counter's target.
      checkpoint_every: steps between checkpoints (one is always saved at the end).
      log_every: steps between history records and TensorBoard scalars.
      image_every: steps between TensorBoard images (when an image function is given).
      samples_per_step: for the progress line's samples-per-second figure.
    """

    steps: int
    checkpoint_every: int
    log_every: int
    image_every: int = 0
    samples_per_step: int = 1


@dataclasses.dataclass
class TrainingSummary:
    """What one run of the loop measured.

    Attributes:
      steps: the step counter at the end.
      resumed_from_step: the step counter at the start of this session.
      wall_seconds: time this session spent in the loop.
      samples_per_second: throughput of this session, its first step included.
      first_step_seconds: how long this session's first step took: it traces and compiles
        the step, 7 s for MobileNetV2's generator at 32x32 on 2 cores (0 when none ran),
        with the records and checkpoint that step was due to write.
      steady_samples_per_second: throughput after the first step, which the progress line
        shows too, and which a longer run approaches (0 with fewer than two steps).
      first: the history record of step 1 (from an earlier session if resumed).
      last: the last history record.
      total_wall_seconds: time spent in the loop over every session up to the end, the
        earlier ones up to the checkpoint this one resumed from; None when an earlier
        session's is not known (a run saved before it was recorded).
    """

    steps: int
    resumed_from_step: int
    wall_seconds: float
    samples_per_second: float
    first: Dict[str, float]
    last: Dict[str, float]
    first_step_seconds: float = 0.0
    steady_samples_per_second: float = 0.0
    total_wall_seconds: Optional[float] = None

    def to_dict(self) -> dict:
        total = {} if self.total_wall_seconds is None else {
            "total_wall_time": format_duration(self.total_wall_seconds)}
        return {**dataclasses.asdict(self), "wall_time": format_duration(self.wall_seconds), **total}


def idle_session_summary(steps: int, recorded: dict) -> dict:
    """`TrainingSummary.to_dict()` of a session that trained nothing more of a training that
    finished at `steps`: what was `recorded` when it trained (loss terms, total time), with
    this session's own figures 0."""
    idle = TrainingSummary(steps=steps, resumed_from_step=steps, wall_seconds=0.0, samples_per_second=0.0,
                           first={}, last={}).to_dict()
    session = {key: value for key, value in idle.items() if key not in ("first", "last", "total_wall_seconds")}
    return {"first": {}, "last": {}, **recorded, **session}


def run(step_fn: Callable[[], Dict[str, float]], step_counter: tf.Variable, checkpoint: tf.train.Checkpoint,
        work_dir: str, schedule: LoopSchedule, name: str, checked_terms: Sequence[str],
        progress_terms: Sequence[str] = (), log_dir: Optional[str] = None,
        image_fn: Optional[Callable[[], np.ndarray]] = None, progress: bool = True,
        after_restore: Optional[Callable[[], None]] = None, checked_weights: Sequence[tf.Variable] = (),
        checked_outputs: Optional[Callable[[], tf.Tensor]] = None) -> TrainingSummary:
    """Runs `step_fn` until `step_counter` reaches `schedule.steps`, resuming from `work_dir`.

    Args:
      step_fn: one training update, advancing `step_counter` by one; returns float loss terms.
      step_counter: the int64 variable `step_fn` advances; part of `checkpoint`.
      checkpoint: everything whose state must survive a restart.
      work_dir: holds `checkpoints/` and `history.json`.
      schedule: target step and save/record periods.
      name: prefix of TensorBoard tags and of the progress line.
      checked_terms: loss terms that stop training when not finite.
      progress_terms: terms shown in the progress line.
      log_dir: optional directory of TensorBoard's scalars and images, in an events file of this session's.
      image_fn: optional `callable()` -> uint8 image (H, W, C) for TensorBoard.
      progress: show a progress line.
      after_restore: called once the latest checkpoint is restored (or none was), before the first step:
        what a checkpoint of an earlier version puts back that this version trains otherwise is mended here.
      checked_weights: variables that stop training when not finite, checked before each checkpoint:
        an update can take them to NaN from a finite loss (a loss weight near float32's limit), and
        the loss terms show it only at the next step, which the last step has not.
      checked_outputs: computes what the model makes (a batch of samples), checked finite with
        `checked_weights`: finite weights can still be too large for float32's products.

    Raises:
      NonFiniteLossError: if a checked term or weight becomes NaN or Inf.
      TrainingInterrupted: on Ctrl-C, SIGTERM, SIGHUP or a closed output, after saving a checkpoint.
      LostWritesError: if the events file lacks records written to it, found before a checkpoint, which is
        then not saved: a rerun resumes from the one before and writes them again.
      UserError: if no checkpoint there can be read, or its state file names checkpoints
        outside the directory (`check_checkpoints_inside`).
    """
    check_checkpoints_inside(os.path.join(work_dir, CHECKPOINT_DIR))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(work_dir, CHECKPOINT_DIR),
                                         max_to_keep=CHECKPOINTS_TO_KEEP)
    restored = _restore_latest_readable(manager, checkpoint, name)
    if after_restore is not None:
        after_restore()
    start_step = int(step_counter.numpy())
    if 0 < start_step < schedule.steps:
        print(f"{name}: resuming at step {start_step} of {schedule.steps} from {restored}", flush=True)
    history_path = os.path.join(work_dir, HISTORY_FILE)
    history = [record for record in read_history(history_path) if record["step"] <= start_step]
    bar = ProgressBar(schedule.steps, name, start_step, schedule.samples_per_step) if progress else None
    wall_time_path = os.path.join(work_dir, WALL_TIME_FILE)
    earlier_seconds = earlier_wall_seconds(wall_time_path, start_step)
    events = EventFile(log_dir) if log_dir else None
    started = time.monotonic()
    first_step_seconds = None

    def save(step):
        if events is not None:
            events.check()
        try:
            manager.save(checkpoint_number=step)
        except BaseException:
            _remove_unsaved_checkpoint(manager, step)
            raise
        write_json_atomic(history_path, history)
        if earlier_seconds is not None:
            write_json_atomic(wall_time_path, {"step": step, "seconds": earlier_seconds + time.monotonic() - started})

    with stops_between_steps() as stop:
        try:
            while int(step_counter.numpy()) < schedule.steps:
                values = step_fn()
                step = int(step_counter.numpy())
                _check_finite(values, checked_terms, name, step, manager)
                _record(step, values, schedule, name, history, events, image_fn)
                if step % schedule.checkpoint_every == 0 or step == schedule.steps:
                    not_finite = _not_finite(checked_weights, checked_outputs)
                    if not_finite:
                        raise NonFiniteLossError(
                            f"{name} {not_finite} after step {step}, though its loss terms were: values too large "
                            f"for float32 (lower the loss weights or the learning rate); {_kept_checkpoint(manager)}")
                    save(step)
                if first_step_seconds is None:  # With its records and checkpoint, as the progress line counts it.
                    first_step_seconds = time.monotonic() - started
                if bar:
                    bar.update(step, {term: values[term] for term in progress_terms})
                if stop.requested:
                    raise KeyboardInterrupt  # Handled below, as a second signal would be.
        except (KeyboardInterrupt, OSError) as interruption:
            if not is_stop(interruption):
                raise
            step = int(step_counter.numpy())
            # A stop right after a checkpoint needs no second one, and weights not finite none: a rerun resumes
            # from the last good one, and the check above stops it there, saying why.
            if _checkpoint_step(manager) != step and not _not_finite(checked_weights, checked_outputs):
                save(step)
            signal_number = stop.signal_number or stop_signal_of(interruption)
            raise TrainingInterrupted(f"{how_stopped(signal_number)} at {name} step {step}", signal_number) from None
        finally:
            if bar:
                bar.close()
            if events is not None:
                events.writer.close()
    wall_seconds = time.monotonic() - started
    new_steps = schedule.steps - start_step
    if not history:  # Lost (deleted or damaged) with nothing left to train: its loss terms are gone with it.
        print(f"{name}: its loss history {history_path} is missing or damaged; the report gives no loss terms",
              flush=True)
        history = [{}]
    first_step_seconds = first_step_seconds or 0.0
    steady_seconds = wall_seconds - first_step_seconds
    return TrainingSummary(
        steps=schedule.steps, resumed_from_step=start_step, wall_seconds=wall_seconds,
        samples_per_second=new_steps * schedule.samples_per_step / wall_seconds if new_steps and wall_seconds else 0.0,
        first=history[0], last=history[-1], first_step_seconds=first_step_seconds,
        steady_samples_per_second=((new_steps - 1) * schedule.samples_per_step / steady_seconds
                                   if new_steps > 1 and steady_seconds > 0 else 0.0),
        total_wall_seconds=None if earlier_seconds is None else earlier_seconds + wall_seconds)


def _check_finite(values: Dict[str, float], checked_terms: Sequence[str], name: str, step: int,
                  manager: tf.train.CheckpointManager) -> None:
    """Raises `NonFiniteLossError` for the first of `checked_terms` that is NaN or infinite,
    saying which checkpoint (`manager`'s last) is kept."""
    bad = [term for term in checked_terms if not math.isfinite(values[term])]
    if bad:
        raise NonFiniteLossError(f"{name} loss term {bad[0]!r} is {values[bad[0]]} at step {step}; "
                                 f"{_kept_checkpoint(manager)}")


def _kept_checkpoint(manager: tf.train.CheckpointManager) -> str:
    """Which checkpoint a training stopped for a value not finite keeps: `manager`'s last."""
    good_step = _checkpoint_step(manager)
    return (f"the last good checkpoint, step {good_step}, is kept" if good_step is not None
            else "no checkpoint was saved before it")


def _not_finite(weights: Sequence[tf.Variable], outputs: Optional[Callable[[], tf.Tensor]]) -> str:
    """What is not finite, "weight 'dense/kernel:0' is not finite" or "output is not finite":
    the first of `weights` holding a NaN or infinity, else what `outputs()` computes; "" when
    all are finite."""
    bad = next((weight for weight in weights if not np.isfinite(weight.numpy()).all()), None)
    if bad is not None:
        return f"weight {bad.name!r} is not finite"
    if outputs is not None and not np.isfinite(np.asarray(outputs())).all():
        return "output is not finite"
    return ""


def _record(step: int, values: Dict[str, float], schedule: LoopSchedule, name: str, history: list,
            events: Optional[EventFile], image_fn: Optional[Callable[[], np.ndarray]]) -> None:
    """Appends the loss terms of the steps `schedule` logs (the first, every `log_every`, the
    last) to `history` and TensorBoard, and sample images every `image_every` steps and at the last."""
    last_step = step == schedule.steps
    if step == 1 or step % schedule.log_every == 0 or last_step:
        history.append({"step": step, **values})
        if events is not None:
            with events.writer.as_default(step=step):
                for term, value in values.items():
                    events.add(tf.summary.scalar(f"{name}/{term}", value))
    if events is not None and image_fn is not None and schedule.image_every and (
            step % schedule.image_every == 0 or last_step):
        with events.writer.as_default(step=step):
            events.add(tf.summary.image(f"{name}/samples", for_tensorboard(image_fn())[np.newaxis]))


def earlier_wall_seconds(path: str, start_step: int) -> Optional[float]:
    """The seconds earlier sessions trained up to `start_step` (`WALL_TIME_FILE`, whose "step"
    is a teacher's epoch in `teacher_training`): 0 for a training that starts now, None when
    not recorded for the checkpoint it resumes from."""
    if start_step == 0:
        return 0.0
    record = read_json(path, {})
    if not isinstance(record, dict) or record.get("step") != start_step:
        return None
    seconds = record.get("seconds")
    return float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else None


def for_tensorboard(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, C) image shrunk by area averaging to fit `MAX_TENSORBOARD_IMAGE_SIDE`, else as it is."""
    height, width = image.shape[:2]
    scale = MAX_TENSORBOARD_IMAGE_SIDE / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return np.round(tf.image.resize(image, size, method="area").numpy()).astype(np.uint8)


def check_checkpoints_inside(checkpoint_dir: str, who: str = "run",
                             advice: str = "if this work directory comes from someone else, do not run in it "
                                           "(removing that file trains this stage from its start)") -> None:
    """Refuses a checkpoint directory whose state file (`checkpoint`) names checkpoints elsewhere.

    A run names only its own, in that directory; TensorFlow's CheckpointManager deletes the
    oldest checkpoints the file names as it saves new ones, and restores the latest, wherever
    they are: a work directory from someone else could name anyone's files. `who` writes
    the checkpoints ("run", "training") and `advice` ends the refusal.

    Raises:
      UserError: naming the file and the first checkpoint outside.
    """
    state = tf.train.get_checkpoint_state(checkpoint_dir)  # Relative names joined to the directory.
    if state is None:
        return
    directory = os.path.realpath(checkpoint_dir)
    for prefix in (state.model_checkpoint_path, *state.all_model_checkpoint_paths):
        # Joined to the directory once more, a relative directory's own "ckpt-7" read as outside it.
        if os.path.dirname(os.path.realpath(prefix)) != directory:
            raise UserError(f"{os.path.join(checkpoint_dir, 'checkpoint')} names a checkpoint outside its directory "
                            f"({os.path.normpath(prefix)}), which a {who} would delete in turn as it saves its own; "
                            f"a {who} names only its own: {advice}")


def _remove_unsaved_checkpoint(manager: tf.train.CheckpointManager, step: int) -> None:
    """Removes what a failed save of checkpoint `step` left in the manager's directory (on a full disk, an
    empty index beside its whole data file, and TensorFlow's `<prefix>_temp` directory), unless the
    checkpoint state names it: nothing restores it, and it held the space the disk lacked."""
    prefix = os.path.join(manager.directory, f"ckpt-{step}")
    if any(os.path.normpath(named) == os.path.normpath(prefix) for named in manager.checkpoints):
        return
    for path in glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix) + "_temp"):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def latest_step(work_dir: str) -> Optional[int]:
    """The step of the latest checkpoint `run` saved in `work_dir`, or None when there is none."""
    return _step_of(tf.train.latest_checkpoint(os.path.join(work_dir, CHECKPOINT_DIR)))


def _restore_latest_readable(manager: tf.train.CheckpointManager, checkpoint: tf.train.Checkpoint,
                             name: str) -> Optional[str]:
    """Restores the latest checkpoint that reads whole, saying so when a later one does not
    (a disk that failed, a copy cut short); returns its prefix, or None when there is none.

    Raises:
      UserError: if there are checkpoints but none reads.
    """
    damaged = []
    for prefix in reversed(manager.checkpoints):
        try:
            # Optimizer slots appear only after a step, so a finished run restores partially.
            checkpoint.restore(prefix).assert_existing_objects_matched().expect_partial()
        except (tf.errors.OpError, ValueError, IndexError, AssertionError) as error:
            damaged.append((prefix, error))
            continue
        if damaged:
            print(f"{name}: {', '.join(os.path.basename(bad) for bad, _ in damaged)} cannot be read "
                  f"({first_line(damaged[0][1])}); resuming from {os.path.basename(prefix)}", flush=True)
        return prefix
    if damaged:
        raise _unreadable_checkpoints_error(name, os.path.dirname(damaged[0][0]), damaged[0][1])
    return None


def _unreadable_checkpoints_error(name: str, checkpoint_dir: str, error: Exception) -> UserError:
    return UserError(f"cannot read {name}'s checkpoints in {checkpoint_dir} ({first_line(error)}): delete that "
                     f"directory to train {name} again from step 0")


def check_checkpoints_readable(work_dir: str, name: str) -> None:
    """Refuses the checkpoints in `work_dir` (a training's directory, as `run` takes it) if none
    of them reads whole, or if their state file names checkpoints elsewhere: what `run` refuses
    as it starts, checked before a command writes anything. It reads every tensor of the
    checkpoints `run` would try, without building the model, so a checkpoint of another model
    passes here and is refused by `run`.

    Raises:
      UserError: as `run` would, naming the directory to delete.
    """
    checkpoint_dir = os.path.join(work_dir, CHECKPOINT_DIR)
    check_checkpoints_inside(checkpoint_dir)
    # The checkpoints `run`'s manager keeps and restores from, which it reads from the state file as this does.
    listed = tf.train.CheckpointManager(tf.train.Checkpoint(), checkpoint_dir, max_to_keep=CHECKPOINTS_TO_KEEP)
    first_error = None
    for prefix in reversed(listed.checkpoints):
        try:
            reader = tf.train.load_checkpoint(prefix)
            for key in reader.get_variable_to_shape_map():
                reader.get_tensor(key)
        except (tf.errors.OpError, ValueError, IndexError) as error:
            first_error = first_error or error
            continue
        return
    if first_error is not None:
        raise _unreadable_checkpoints_error(name, checkpoint_dir, first_error)


def _checkpoint_step(manager) -> Optional[int]:
    return _step_of(manager.latest_checkpoint)


def _step_of(checkpoint_prefix: Optional[str]) -> Optional[int]:
    """The step a checkpoint prefix (`.../ckpt-<step>`) was saved at; None for no checkpoint."""
    return int(checkpoint_prefix.rsplit("-", 1)[-1]) if checkpoint_prefix else None


def read_history(path: str) -> List[dict]:
    """The loss history saved with the last checkpoint, or [] if there is none.

    A history is a by-product; losing it must not stop a resume. Records of another shape
    than `run` writes ({"step": int, term: number, ...}) are left out.
    """
    history = read_json(path, [])
    if not isinstance(history, list):
        return []
    return [record for record in history
            if isinstance(record, dict) and type(record.get("step")) is int
            and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in record.values())]
