import dataclasses
import json
import os
import re
import signal
import types

import numpy as np
import pytest
import tensorflow as tf

from zscgan_tf import generator as generator_lib
from zscgan_tf import training_loop, zero_shot
from zscgan_tf.config import GeneratorTrainingConfig, LossConfig

from conftest import tiny_teacher


def _trainer(teacher, steps, seed=0, checkpoint_every=1000, **loss_kwargs):
    spec = generator_lib.GeneratorSpec(num_classes=teacher.num_classes, image_shape=teacher.image_shape,
                                       noise_dim=16, base_channels=16)
    tf.keras.utils.set_random_seed(seed)
    generator = generator_lib.build_generator(spec, teacher.preprocessing)
    training = GeneratorTrainingConfig(steps=steps, batch_size=32, learning_rate=1e-2, checkpoint_every=checkpoint_every,
                                       log_every=1)
    return zero_shot.GeneratorTrainer(teacher, generator, LossConfig(**loss_kwargs), training, seed=seed)


def _fixed_batch_losses(trainer):
    noise = tf.random.stateless_normal([64, trainer.noise_dim], seed=[1, 2])
    labels = tf.constant(np.arange(64) % trainer.teacher.num_classes, tf.int32)
    return {name: float(value) for name, value in trainer.compute_losses(noise, labels, training=False).items()}


@pytest.mark.parametrize("distance", ["kl", "mse"])
def test_short_run_lowers_the_loss_and_leaves_the_teacher_unchanged(tmp_path, distance):
    teacher = tiny_teacher()
    teacher_weights = [w.copy() for w in teacher.model.get_weights()]
    trainer = _trainer(teacher, steps=60, bn_distance=distance)
    before = _fixed_batch_losses(trainer)
    summary = trainer.train(str(tmp_path), progress=False)
    after = _fixed_batch_losses(trainer)
    assert summary.steps == 60 and summary.samples_per_second > 0
    assert after["total"] < 0.2 * before["total"]
    assert after["bn_statistics"] < 0.8 * before["bn_statistics"]
    assert after["cross_entropy"] < 0.1 * before["cross_entropy"]
    assert after["accuracy"] >= 0.9  # Samples, drawn in inference mode, are classified as asked.
    for expected, actual in zip(teacher_weights, teacher.model.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    zero_shot.check_teacher_unchanged(teacher, teacher_weights, "generator training")


def test_a_generator_update_is_traced_once(tmp_path):
    # Its optimizer's variables exist before the first update: one made inside it would trace it twice, which
    # for MobileNetV2 at 32x32 was 4.7 s more before training started.
    trainer = _trainer(tiny_teacher(), steps=3)
    trainer.train(str(tmp_path), progress=False)
    assert trainer._train_step.experimental_get_tracing_count() == 1


def test_the_summary_gives_the_speed_after_the_first_step_apart(tmp_path, monkeypatch):
    # The first step traces and compiles the training step (7 s for MobileNetV2's generator); a short run's
    # samples/s over its wall time counts it, and the speed after it is what a longer run approaches.
    now = [0.0]
    monkeypatch.setattr(training_loop, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    counter = tf.Variable(0, dtype=tf.int64)

    def step():
        now[0] += 100.0 if int(counter.numpy()) == 0 else 1.0
        counter.assign_add(1)
        return {"loss": 1.0}

    schedule = training_loop.LoopSchedule(steps=11, checkpoint_every=100, log_every=1, samples_per_step=8)
    summary = training_loop.run(step, counter, tf.train.Checkpoint(step=counter), str(tmp_path), schedule, "test",
                                checked_terms=["loss"], progress=False)
    assert (summary.wall_seconds, summary.first_step_seconds) == (110.0, 100.0)
    assert summary.samples_per_second == pytest.approx(11 * 8 / 110)
    assert summary.steady_samples_per_second == pytest.approx(10 * 8 / 10)
    # Resumed at the last step, only one step runs this session: no speed after it to give.
    schedule = dataclasses.replace(schedule, steps=12)
    summary = training_loop.run(step, counter, tf.train.Checkpoint(step=counter), str(tmp_path), schedule, "test",
                                checked_terms=["loss"], progress=False)
    assert (summary.resumed_from_step, summary.first_step_seconds, summary.steady_samples_per_second) == (11, 1.0, 0.0)
    # A first step that also writes a sample grid: counted with it, as the progress line counts from after it.
    # The speed after it was 7 steps in 57 s where the line showed 7 in 7.

    def slow_first_grid():
        now[0] += 50.0 if int(counter.numpy()) == 13 else 0.0
        return np.zeros((2, 2, 1), np.uint8)

    schedule = dataclasses.replace(schedule, steps=20, image_every=13)
    summary = training_loop.run(step, counter, tf.train.Checkpoint(step=counter), str(tmp_path), schedule, "test",
                                checked_terms=["loss"], image_fn=slow_first_grid, progress=False,
                                log_dir=str(tmp_path / "logs"))
    assert (summary.first_step_seconds, summary.steady_samples_per_second) == (51.0, pytest.approx(7 * 8 / 7))


def test_the_history_keeps_step_1_and_the_last_step_and_a_finished_rerun_trains_nothing(tmp_path):
    counter = tf.Variable(0, dtype=tf.int64)

    def step():
        counter.assign_add(1)
        return {"loss": float(counter.numpy())}

    def run(steps):
        schedule = training_loop.LoopSchedule(steps=steps, checkpoint_every=100, log_every=100, samples_per_step=8)
        return training_loop.run(step, counter, tf.train.Checkpoint(step=counter), str(tmp_path), schedule, "test",
                                 checked_terms=["loss"], progress=False)

    summary = run(3)
    # Step 1 is recorded whatever --log_every says: the report's "first step" column.
    assert (summary.first, summary.last) == ({"step": 1, "loss": 1.0}, {"step": 3, "loss": 3.0})
    counter.assign(0)
    again = run(3)  # Restored at step 3 of 3: nothing to train, the history kept to its last record.
    assert (again.resumed_from_step, again.first["step"], again.last["step"]) == (3, 1, 3)
    assert again.samples_per_second == 0.0


def test_only_generator_variables_are_trained():
    teacher = tiny_teacher()
    trainer = _trainer(teacher, steps=1)
    generator_ids = {id(v) for v in trainer.generator.trainable_variables}
    assert not generator_ids & {id(v) for v in teacher.model.weights}
    assert not teacher.model.trainable_variables


def _run_before_step(trainer, step, action):
    """Makes the trainer call `action()` at the start of its `step`-th update of this session."""
    real_step = trainer.train_step
    calls = []

    def step_after_action():
        calls.append(1)
        if len(calls) == step:
            action()
        return real_step()

    trainer.train_step = step_after_action


def test_interrupted_run_resumes_from_the_saved_step_and_matches_an_uninterrupted_run(tmp_path):
    teacher = tiny_teacher()
    straight = _trainer(teacher, steps=6)
    straight.train(str(tmp_path / "straight"), progress=False)

    interrupted = _trainer(teacher, steps=6, checkpoint_every=2)

    def stop():
        raise KeyboardInterrupt

    _run_before_step(interrupted, 4, stop)
    with pytest.raises(training_loop.TrainingInterrupted, match="step 3"):
        interrupted.train(str(tmp_path / "resumed"), progress=False)

    resumed = _trainer(teacher, steps=6, checkpoint_every=2)
    first_session = json.loads((tmp_path / "resumed" / training_loop.WALL_TIME_FILE).read_text())
    assert first_session["step"] == 3 and first_session["seconds"] > 0
    summary = resumed.train(str(tmp_path / "resumed"), progress=False)
    assert summary.resumed_from_step == 3
    # The whole training's time, the first session's included: it reported this session's alone.
    assert summary.total_wall_seconds == pytest.approx(first_session["seconds"] + summary.wall_seconds)
    assert summary.to_dict()["total_wall_time"]
    for expected, actual in zip(straight.generator.get_weights(), resumed.generator.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("signals, stopped_at", [
    ((signal.SIGINT,), 4), ((signal.SIGINT, signal.SIGINT), 3),
    ((signal.SIGTERM,), 4), ((signal.SIGTERM, signal.SIGTERM), 3), ((signal.SIGTERM, signal.SIGINT), 3),
    # A terminal's hangup, then the shell's SIGHUP as it exits: one stop, not two.
    ((signal.SIGHUP,), 4), ((signal.SIGHUP, signal.SIGHUP), 4), ((signal.SIGHUP, signal.SIGTERM), 3)])
def test_a_stop_signal_finishes_the_step_it_lands_in_and_a_second_one_stops_at_once(
        tmp_path, capsys, hangup_and_outputs_restored, signals, stopped_at):
    teacher = tiny_teacher()
    trainer = _trainer(teacher, steps=6, checkpoint_every=2)

    def send():
        for signal_number in signals:
            os.kill(os.getpid(), signal_number)

    _run_before_step(trainer, 4, send)
    handlers_before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(training_loop.TrainingInterrupted, match=f"step {stopped_at};") as raised:
        trainer.train(str(tmp_path), progress=False)
    if signal.SIGHUP in signals:  # Ignored from then on, so the exit handlers run whatever the shell sends.
        handlers_before[signal.SIGHUP] = signal.SIG_IGN
    assert {number: signal.getsignal(number) for number in handlers_before} == handlers_before
    first = "Ctrl-C" if signals[0] == signal.SIGINT else signal.Signals(signals[0]).name
    assert raised.value.signal_number == signals[0]
    assert str(raised.value).startswith("interrupted at" if first == "Ctrl-C" else f"{first} at")
    assert capsys.readouterr().err.count(f"{first}: stopping after this step") == 1
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith(f"ckpt-{stopped_at}")


@pytest.mark.parametrize("signal_number", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM],
                         ids=lambda number: signal.Signals(number).name)
def test_a_stop_signal_started_ignored_stays_ignored(tmp_path, hangup_and_outputs_restored, signal_number):
    # `nohup` starts a command with SIGHUP ignored, and a shell script its background jobs with
    # SIGINT ignored; the loop's own handlers must not undo that.
    handler = signal.signal(signal_number, signal.SIG_IGN)
    try:
        trainer = _trainer(tiny_teacher(), steps=3)
        _run_before_step(trainer, 2, lambda: os.kill(os.getpid(), signal_number))

        summary = trainer.train(str(tmp_path), progress=False)

        assert int(trainer.step.numpy()) == 3 and summary.resumed_from_step == 0
        assert signal.getsignal(signal_number) == signal.SIG_IGN
    finally:
        signal.signal(signal_number, handler)


def test_non_finite_loss_stops_with_the_term_and_step(tmp_path):
    teacher = tiny_teacher()
    trainer = _trainer(teacher, steps=5)
    real_step = trainer.train_step

    def poisoned_step():
        values = real_step()
        if int(trainer.step.numpy()) == 2:
            values["bn_statistics"] = float("nan")
        return values

    trainer.train_step = poisoned_step
    with pytest.raises(training_loop.NonFiniteLossError, match="'bn_statistics' is nan at step 2"):
        trainer.train(str(tmp_path), progress=False)


@pytest.mark.parametrize("value, what", [(float("nan"), "weight '{name}' is not finite"),
                                         (3e38, "output is not finite")])  # Finite, but not its products.
def test_weights_or_samples_not_finite_after_finite_loss_terms_stop_before_their_checkpoint(tmp_path, value, what):
    # A loss weight or learning rate near float32's limit: the terms of the last step were finite, its update made
    # the weights NaN (or so large the samples were), and the generator was saved and marked trained; every later
    # stage then failed on its samples.
    trainer = _trainer(tiny_teacher(), steps=3, checkpoint_every=1)
    real_step = trainer.train_step
    weight = trainer.generator.trainable_weights[0]

    def step_that_overflows_the_weights_at_step_3():
        values = real_step()
        if int(trainer.step.numpy()) == 3:
            weight.assign(tf.fill(weight.shape, value))
        return values

    trainer.train_step = step_that_overflows_the_weights_at_step_3
    with pytest.raises(training_loop.NonFiniteLossError, match=(
            f"^generator {re.escape(what.format(name=weight.name))} after step 3, though its loss terms were: values "
            "too large for float32 \\(lower the loss weights or the learning rate\\); the last good checkpoint, step "
            "2, is kept$")):
        trainer.train(str(tmp_path), progress=False)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("-2")


def test_a_stop_right_after_an_update_that_made_the_weights_nan_saves_no_checkpoint(tmp_path):
    # It saved them, and the next run resumed from NaN weights, calling them the last good checkpoint.
    trainer = _trainer(tiny_teacher(), steps=5, checkpoint_every=1000)
    weight = trainer.generator.trainable_weights[0]
    _run_before_step(trainer, 3, lambda: weight.assign(tf.fill(weight.shape, float("nan"))))
    real_step = trainer.train_step

    def step_then_stop():
        values = real_step()
        if int(trainer.step.numpy()) == 3:
            raise KeyboardInterrupt  # As Ctrl-C between the update and its checkpoint.
        return values

    trainer.train_step = step_then_stop
    with pytest.raises(training_loop.TrainingInterrupted):
        trainer.train(str(tmp_path), progress=False)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) is None


def test_evaluation_and_grid_shapes():
    teacher = tiny_teacher()
    trainer = _trainer(teacher, steps=1)
    evaluation = zero_shot.evaluate_generator(trainer.generator, teacher, samples_per_class=5, seed=0)
    assert len(evaluation.per_class_accuracy) == teacher.num_classes
    assert 0.0 <= evaluation.worst_class_accuracy <= evaluation.accuracy <= 1.0
    assert evaluation.within_class_spread > 0
    grid = zero_shot.sample_grid(trainer.generator, teacher, samples_per_class=3, max_classes=2, seed=0)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * 32, 3 * 32, 1)  # 8x8 tiles are zoomed to 32 pixels.


def test_tensorboard_gets_large_sample_grids_shrunk_and_small_ones_as_they_are():
    # ImageNet's grid, 20 classes by 10 samples of 224 pixels: 20 MB of PNG each time it was logged.
    imagenet_grid = np.zeros((20 * 224, 10 * 224, 3), np.uint8)
    imagenet_grid[:, ::2] = 200  # Stripes one pixel wide average to grey.
    shrunk = training_loop.for_tensorboard(imagenet_grid)
    assert shrunk.shape == (2048, 1024, 3) and shrunk.dtype == np.uint8
    assert abs(float(shrunk.mean()) - 100) < 1  # Averaged, not every other column picked.
    small = np.full((64, 96, 1), 7, np.uint8)
    assert training_loop.for_tensorboard(small) is small


def test_a_long_generation_of_calibration_samples_shows_progress_and_a_short_one_does_not(monkeypatch, capsys):
    # 5,000 calibration samples at 224x224 took 10 minutes without a word.
    from zscgan_tf import quantization_stages
    teacher = tiny_teacher()
    generator = _trainer(teacher, steps=1).generator
    monkeypatch.setattr(zero_shot, "GENERATION_PIXELS_PER_BATCH", 4 * 8 * 8)  # Passes of 4 of the 8x8 samples.
    quiet = quantization_stages.calibration_samples(generator, teacher, 20, seed=0, progress=True)
    assert capsys.readouterr().out == ""  # Done in well under SLOW_GENERATION_SECONDS.
    monkeypatch.setattr(zero_shot, "SLOW_GENERATION_SECONDS", 0.0)  # Every generation is slow now.
    shown = quantization_stages.calibration_samples(generator, teacher, 20, seed=0, progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("calibration samples generated 4/20 [") and lines[-1].startswith(
        "calibration samples generated 20/20 [")
    np.testing.assert_array_equal(shown, quiet)  # The same samples either way.
    quantization_stages.calibration_samples(generator, teacher, 20, seed=0)
    assert capsys.readouterr().out == ""  # Without progress, nothing.


def test_generation_runs_large_images_in_small_batches(monkeypatch, capsys):
    assert zero_shot.generation_batch_size((28, 28, 1)) == 256
    assert zero_shot.generation_batch_size((64, 64, 3)) == 256
    assert zero_shot.generation_batch_size((224, 224, 3)) == 20  # 256 at once held 33 GB and was killed.
    assert zero_shot.generation_batch_size((4096, 4096, 3)) == 1
    teacher = tiny_teacher()
    generator = _trainer(teacher, steps=1).generator
    batch_sizes = []
    original_call = type(generator).__call__

    def recording_call(model, inputs, *args, **kwargs):
        if model is generator:  # The teacher is a functional model too.
            batch_sizes.append(int(inputs[0].shape[0]))
        return original_call(model, inputs, *args, **kwargs)

    in_one_pass = zero_shot.evaluate_generator(generator, teacher, samples_per_class=5, seed=0)
    monkeypatch.setattr(type(generator), "__call__", recording_call)
    monkeypatch.setattr(zero_shot, "GENERATION_PIXELS_PER_BATCH", 3 * 8 * 8)  # 3 of the tiny 8x8 samples.
    # Judged pass by pass, classes straddling passes: the same figures as from one pass.
    in_passes = zero_shot.evaluate_generator(generator, teacher, samples_per_class=5, seed=0, progress=True)
    assert batch_sizes == [3] * 6 + [2]
    # With progress, a line as the passes go (ImageNet's 10,000 samples through ResNet50 take minutes).
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("generated samples judged by the teacher 3/20 [")
    assert lines[-1].startswith("generated samples judged by the teacher 20/20 [")
    assert in_passes.per_class_accuracy == in_one_pass.per_class_accuracy
    np.testing.assert_allclose([in_passes.mean_confidence, in_passes.within_class_spread],
                               [in_one_pass.mean_confidence, in_one_pass.within_class_spread], rtol=1e-5)
    batch_sizes.clear()
    images, labels = zero_shot.generate(generator, teacher.num_classes, 2, generator.inputs[0].shape[-1], seed=0)
    assert batch_sizes == [3, 3, 2]
    assert images.shape == (8, 8, 8, 1) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    batch_sizes.clear()
    grid = zero_shot.sample_grid(generator, teacher, samples_per_class=2, max_classes=4, seed=0)
    assert batch_sizes == [3, 3, 2] and grid.shape == (4 * 32, 2 * 32, 1)


def test_the_total_loss_weighs_each_term_by_its_setting():
    teacher = tiny_teacher()
    losses = _fixed_batch_losses(_trainer(teacher, steps=1, cross_entropy=0.7, bn_statistics=0.3, diversity=0.2,
                                          mode_seeking=0.5))
    assert all(losses[name] != 0 for name in ("cross_entropy", "bn_statistics", "diversity", "mode_seeking"))
    assert losses["total"] == pytest.approx(0.7 * losses["cross_entropy"] + 0.3 * losses["bn_statistics"]
                                            + 0.2 * losses["diversity"] + 0.5 * losses["mode_seeking"], rel=1e-5)


def test_mean_confidence_is_the_teachers_probability_of_the_class_asked_for(monkeypatch):
    teacher = tiny_teacher()
    trainer = _trainer(teacher, steps=1)
    # A teacher that gives class 0 a probability of about 0.97 whatever the sample.
    confident_logits = np.log(np.array([[0.97, 0.01, 0.01, 0.01]], np.float32))
    monkeypatch.setattr(teacher.model, "predict",
                        lambda images, **kwargs: np.repeat(confident_logits, len(images), axis=0))
    evaluation = zero_shot.evaluate_generator(trainer.generator, teacher, samples_per_class=2, seed=0)
    # Class 0's samples are given 0.97, the others' 0.01: not the top class's 0.97 for all.
    assert evaluation.mean_confidence == pytest.approx((0.97 + 3 * 0.01) / 4, rel=1e-4)
    assert evaluation.per_class_accuracy == [1.0, 0.0, 0.0, 0.0]


def test_mode_seeking_pairs_labels_and_spreads_samples_of_a_class():
    teacher = tiny_teacher()
    trainer = _trainer(teacher, steps=1, mode_seeking=1.0)
    noise, labels = trainer.sample_inputs(9)
    np.testing.assert_array_equal(labels[:4], labels[4:8])
    losses_before = trainer.compute_losses(noise, labels, training=False)
    assert float(losses_before["mode_seeking"]) > 0
    assert float(_trainer(teacher, steps=1).compute_losses(noise, labels, training=False)["mode_seeking"]) == 0


def test_mode_seeking_term_spreads_the_samples_of_each_class(tmp_path):
    teacher = tiny_teacher()
    spreads = {}
    for weight in (0.0, 1.0):
        trainer = _trainer(teacher, steps=60, mode_seeking=weight)
        trainer.train(str(tmp_path / str(weight)), progress=False)
        spreads[weight] = zero_shot.evaluate_generator(trainer.generator, teacher, samples_per_class=16,
                                                       seed=3).within_class_spread
    assert spreads[1.0] > 1.5 * spreads[0.0] > 0


def test_noise_floor_weighting_weighs_the_bn_term_by_layer():
    teacher = tiny_teacher()
    uniform = _fixed_batch_losses(_trainer(teacher, steps=1))
    trainer = _trainer(teacher, steps=1, bn_layer_weighting="noise_floor")
    weighted = _fixed_batch_losses(trainer)
    # The trainer's batch is 32: the dense BN layer (8 features) weighs 1 / (1 + 8/32).
    assert trainer.bn_layer_weights[-1] == pytest.approx(0.8)
    assert weighted["cross_entropy"] == pytest.approx(uniform["cross_entropy"], rel=1e-6)
    assert 0.8 * uniform["bn_statistics"] < weighted["bn_statistics"] < uniform["bn_statistics"]


def test_a_checkpoint_whose_save_fails_leaves_nothing_of_itself(tmp_path, monkeypatch):
    # A real full disk (a tmpfs): TensorFlow left an empty ckpt-300.index beside its whole 0.9 MB data file and a
    # ckpt-300_temp directory, which no resume reads, in the space the disk lacked.
    import errno

    counter = tf.Variable(0, dtype=tf.int64)

    def step():
        counter.assign_add(1)
        return {"loss": 1.0}

    schedule = training_loop.LoopSchedule(steps=4, checkpoint_every=2, log_every=1, samples_per_step=8)
    checkpoints = tmp_path / training_loop.CHECKPOINT_DIR
    real_save = tf.train.CheckpointManager.save

    def disk_full_at_step_4(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number != 4:
            return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)
        (checkpoints / "ckpt-4.index").write_bytes(b"")
        (checkpoints / "ckpt-4.data-00000-of-00001").write_bytes(b"weights")
        (checkpoints / "ckpt-4_temp").mkdir()
        (checkpoints / "ckpt-4_temp" / "part-00000-of-00001.index").write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device", str(checkpoints / "ckpt-4.index"))

    monkeypatch.setattr(tf.train.CheckpointManager, "save", disk_full_at_step_4)
    with pytest.raises(OSError):
        training_loop.run(step, counter, tf.train.Checkpoint(step=counter), str(tmp_path), schedule, "test",
                          checked_terms=["loss"], progress=False)
    assert sorted(os.listdir(checkpoints)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert training_loop.latest_step(str(tmp_path)) == 2
