import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from zscgan_tf import distill, evaluate, export, quantize, representative_data, tflite_model
from zscgan_tf import generator as generator_lib
from zscgan_tf.config import DistillationConfig

from conftest import quadrant_images, tiny_teacher


def _generator(teacher):
    spec = generator_lib.GeneratorSpec(num_classes=teacher.num_classes, image_shape=teacher.image_shape,
                                       noise_dim=8, base_channels=8)
    return generator_lib.build_generator(spec, teacher.preprocessing)


def _batchnorm_statistics(model):
    return [w.numpy().copy() for w in model.weights if "moving_" in w.name]


def test_distillation_pulls_a_perturbed_student_back_to_the_teacher(tmp_path):
    teacher = tiny_teacher()
    teacher_weights = [w.copy() for w in teacher.model.get_weights()]
    generator = _generator(teacher)
    samples = generator([tf.random.normal([64, 8], seed=3), tf.constant(np.arange(64) % 4)], training=False).numpy()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme(), calibration_inputs=samples)
    kernel = next(w for w in student.trainable_weights if "kernel" in w.name)
    kernel.assign(kernel + tf.random.stateless_normal(kernel.shape, seed=[0, 1], stddev=0.3))
    statistics_before = _batchnorm_statistics(student)
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes,
                                  DistillationConfig(steps=40, batch_size=32, learning_rate=1e-2), seed=0)
    summary = distiller.train(str(tmp_path), progress=False)

    assert summary.last["distillation"] < 0.5 * summary.first["distillation"]
    for expected, actual in zip(teacher_weights, teacher.model.get_weights()):
        np.testing.assert_array_equal(expected, actual)  # QAT never touches the teacher.
    for expected, actual in zip(statistics_before, _batchnorm_statistics(student)):
        np.testing.assert_array_equal(expected, actual)  # The student's BN keeps the teacher's statistics.
    teacher_logits = teacher.model(samples, training=False).numpy()
    student_logits = student(samples, training=False).numpy()
    assert evaluate.agreement(teacher_logits, student_logits) >= 0.9


def test_exported_student_follows_the_distilled_student(tmp_path):
    teacher = tiny_teacher()
    generator = _generator(teacher)
    samples = generator([tf.random.normal([64, 8], seed=4), tf.constant(np.arange(64) % 4)], training=False).numpy()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme(), calibration_inputs=samples)
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes,
                                  DistillationConfig(steps=5, batch_size=16), seed=0)
    distiller.train(str(tmp_path), progress=False)
    # The optimizer's variables exist before the first step: one made inside it would trace it twice.
    assert distiller._train_step.experimental_get_tracing_count() == 1
    model_bytes = export.convert_to_tflite(student, representative_data.representative_dataset_from_array(samples[:16]))
    report = tflite_model.inspect_tflite(model_bytes)
    assert report.is_fully_integer and report.has_static_batch_one
    tflite_logits = evaluate.TfliteClassifier(model_bytes).predict(samples)
    assert evaluate.agreement(student(samples, training=False).numpy(), tflite_logits) >= 0.9


def test_freeze_batchnorm_counts_wrapped_layers():
    teacher = tiny_teacher()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme())
    assert distill.freeze_batchnorm(student) == 3


@pytest.mark.parametrize("teacher_frozen", [True, False])
def test_training_changes_only_the_quantized_kernels_whether_or_not_the_teacher_was_frozen(tmp_path, teacher_frozen):
    teacher = tiny_teacher()
    teacher.model.trainable = teacher_frozen  # The student is cloned from it, flags and all.
    generator = _generator(teacher)
    samples = generator([tf.random.normal([64, 8], seed=5), tf.constant(np.arange(64) % 4)], training=False).numpy()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme(), calibration_inputs=samples)
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes,
                                  DistillationConfig(steps=3, batch_size=16, learning_rate=1e-2), seed=0)
    assert sorted(weight.name for weight in distiller.trained_weights) == [
        "conv/kernel:0", "dense/kernel:0", "depthwise/depthwise_kernel:0", "logits/kernel:0"]
    float_weights = {weight.name: weight.numpy().copy() for weight in student.weights
                     if weight.name.split("/")[0] in ("conv", "depthwise", "dense", "logits", "conv_bn",
                                                      "depthwise_bn", "dense_bn")}
    distiller.train(str(tmp_path), progress=False)  # W8A8: the student runs in training mode.

    changed = sorted(weight.name for weight in student.weights
                     if weight.name in float_weights and not np.array_equal(weight.numpy(), float_weights[weight.name]))
    assert changed == ["conv/kernel:0", "dense/kernel:0", "depthwise/depthwise_kernel:0", "logits/kernel:0"]


def test_a_pruned_teachers_zero_weights_stay_zero_through_qat_and_in_the_int8_file(tmp_path):
    teacher = tiny_teacher()
    dense = teacher.model.get_layer("dense")  # Half its kernel pruned by magnitude; the other kernels dense.
    kernel, bias = dense.get_weights()
    pruned = np.abs(kernel) < np.median(np.abs(kernel))
    dense.set_weights([np.where(pruned, 0.0, kernel), bias])
    distiller, model_bytes = _distilled_and_exported(teacher, tmp_path, seed=6)

    trained = next(weight for weight in distiller.trained_weights if weight.name == "dense/kernel:0").numpy()
    assert np.all(trained[pruned] == 0)
    # The rest train on (83% moved: a few read a channel the ReLU keeps at zero on these samples).
    assert np.mean(trained[~pruned] != kernel[~pruned]) > 0.5
    int8_kernel = _int8_weights_of_shape(model_bytes, kernel.T.shape)  # TFLite stores (outputs, inputs).
    np.testing.assert_array_equal(int8_kernel == 0, pruned.T)
    assert [weight.name for weight, _ in distiller.pruning_masks] == ["dense/kernel:0"]  # Only the pruned kernel.
    assert distiller.weight_clusters == []  # Its zeros share a value, but its other weights do not.


def test_a_clustered_teachers_tied_weights_stay_tied_through_qat_and_in_the_int8_file(tmp_path):
    teacher = tiny_teacher()
    dense = teacher.model.get_layer("dense")  # Its kernel's 48 weights in 4 clusters; the other kernels distinct.
    kernel, bias = dense.get_weights()
    centroids = np.quantile(kernel, [0.125, 0.375, 0.625, 0.875])
    cluster = np.argmin(np.abs(kernel[..., None] - centroids), axis=-1)
    dense.set_weights([centroids[cluster].astype(np.float32), bias])
    distiller, model_bytes = _distilled_and_exported(teacher, tmp_path, seed=7)

    trained = next(weight for weight in distiller.trained_weights if weight.name == "dense/kernel:0").numpy()
    for index in range(4):  # Each cluster moved as one.
        assert len(np.unique(trained[cluster == index])) == 1
    assert len(np.unique(trained)) == 4 and not np.allclose(np.unique(trained), np.sort(centroids))
    int8_kernel = _int8_weights_of_shape(model_bytes, kernel.T.shape)
    assert max(len(np.unique(channel)) for channel in int8_kernel) <= 4
    assert [weight.name for weight, _, _ in distiller.weight_clusters] == ["dense/kernel:0"]


def test_a_pruned_weight_is_not_taken_for_a_clustered_one_and_a_pruned_clustered_one_is():
    rng = np.random.default_rng(0)
    pruned = np.where(rng.random(1000) < 0.9, 0, rng.normal(size=1000))  # About 100 values, each once, and zeros.
    pruned_and_clustered = np.where(rng.random(1000) < 0.5, 0, rng.choice([-0.5, -0.1, 0.2, 0.7], 1000))
    weights = [tf.Variable(values.astype(np.float32)) for values in (pruned, pruned_and_clustered,
                                                                     rng.normal(size=1000))]
    assert [(weight is weights[1], count) for weight, _, count in distill.weight_clusters(weights)] == [(True, 5)]
    assert [weight is weights[2] for weight, _ in distill.pruning_masks(weights)] == [False, False]


def _distilled_and_exported(teacher, tmp_path, seed):
    """A W8A8 student of `teacher` after 5 QAT steps: its distiller and its int8 TFLite bytes."""
    generator = _generator(teacher)
    samples = generator([tf.random.normal([64, 8], seed=seed), tf.constant(np.arange(64) % 4)],
                        training=False).numpy()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme(), calibration_inputs=samples)
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes,
                                  DistillationConfig(steps=5, batch_size=16, learning_rate=1e-2), seed=0)
    distiller.train(str(tmp_path), progress=False)
    return distiller, export.convert_to_tflite(
        student, representative_data.representative_dataset_from_array(samples[:16]))


def _int8_weights_of_shape(model_bytes, shape):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=model_bytes)
    (tensor,) = [detail for detail in interpreter.get_tensor_details()
                 if detail["dtype"] == np.int8 and tuple(detail["shape"]) == tuple(shape)]
    return interpreter.get_tensor(tensor["index"])


def test_batchnorm_that_tf_mot_leaves_float_is_tapped_in_the_students_own_graph(tmp_path):
    # Pre-activation style: a BN after a ReLU follows no conv, so TF-MOT leaves it float and
    # puts that very layer into the student, where it keeps a call in TF-MOT's working model too.
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.ReLU(name="relu")(tf_keras.layers.Conv2D(4, 3, name="conv")(inputs))
    x = tf_keras.layers.BatchNormalization(name="pre_bn")(x)
    x = tf_keras.layers.BatchNormalization(name="conv_2_bn")(tf_keras.layers.Conv2D(4, 3, name="conv_2")(x))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(4, name="logits")(tf_keras.layers.Flatten()(x)))
    model.trainable = False
    teacher = tiny_teacher()
    samples = quadrant_images(64, seed=2)[0]
    student, float_layers = quantize.quantize_student(model, quantize.QuantizationScheme(), calibration_inputs=samples)
    assert "pre_bn" in float_layers

    teacher_taps, student_taps, names = distill.feature_tap_models(model, student)
    assert names == ["pre_bn", "conv_2_bn"]
    teacher_features = teacher_taps(samples, training=False)[1].numpy()
    student_features = student_taps(samples, training=False)[1].numpy()
    assert np.abs(student_features - teacher_features).max() < 0.05 * np.abs(teacher_features).max()
    summary = distill.Distiller(model, student, _generator(teacher), 4, DistillationConfig(steps=2, batch_size=8),
                                seed=0).train(str(tmp_path), progress=False)
    assert np.isfinite(summary.last["features"])


def test_feature_taps_pair_every_batchnorm_layer_of_the_teacher_with_the_students():
    teacher = tiny_teacher()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme.from_name("w4a4"))
    teacher_taps, student_taps, names = distill.feature_tap_models(teacher.model, student)
    assert names == ["conv_bn", "depthwise_bn", "dense_bn"]
    images = tf.random.normal([4, 8, 8, 1], seed=5)
    teacher_outputs, student_outputs = teacher_taps(images), student_taps(images)
    assert [tuple(t.shape) for t in teacher_outputs] == [tuple(s.shape) for s in student_outputs] == [
        (4, 4), (4, 8, 8, 6), (4, 8, 8, 6), (4, 8)]
    np.testing.assert_allclose(teacher_outputs[0], teacher.model(images), atol=1e-5)
    np.testing.assert_allclose(student_outputs[0], student(images), atol=1e-5)
    no_batchnorm = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(),
                                        tf_keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="BatchNormalization layers and it has none"):
        distill.feature_tap_models(no_batchnorm, quantize.quantize_student(no_batchnorm,
                                                                           quantize.QuantizationScheme())[0])


def test_feature_term_pulls_a_perturbed_students_feature_maps_back_to_the_teachers(tmp_path):
    teacher = tiny_teacher()
    images, labels = quadrant_images(64, seed=8)
    inputs = teacher.preprocessing.apply(images)
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme(), calibration_inputs=inputs)
    kernel = next(w for w in student.trainable_weights if "kernel" in w.name)
    kernel.assign(kernel + tf.random.stateless_normal(kernel.shape, seed=[0, 2], stddev=0.3))
    distiller = distill.Distiller(teacher.model, student, None, teacher.num_classes,
                                  DistillationConfig(steps=40, batch_size=32, learning_rate=1e-2,
                                                     feature_loss_weight=1.0), seed=0, real_data=(inputs, labels))
    summary = distiller.train(str(tmp_path), progress=False)
    assert summary.first["features"] > 0.1
    assert summary.last["features"] < 0.5 * summary.first["features"]
    assert summary.last["total"] == pytest.approx(summary.last["distillation"] + summary.last["features"], rel=1e-4)
    without = distill.Distiller(teacher.model, student, None, teacher.num_classes,
                                DistillationConfig(steps=1, feature_loss_weight=0.0),
                                real_data=(inputs, labels))
    assert without.train_step()["features"] == 0.0


def test_real_data_source_distills_and_needs_exactly_one_source(tmp_path):
    teacher = tiny_teacher()
    images, labels = quadrant_images(16, seed=7)
    inputs = teacher.preprocessing.apply(images)
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme.from_name("w4a4"),
                                           calibration_inputs=inputs)
    distiller = distill.Distiller(teacher.model, student, None, teacher.num_classes,
                                  DistillationConfig(steps=5, batch_size=16), real_data=(inputs, labels))
    batch_images, batch_labels = distiller.sample_batch()
    assert batch_images.shape == (16, 8, 8, 1) and batch_labels.shape == (16,)
    summary = distiller.train(str(tmp_path), progress=False)
    assert summary.steps == 5 and np.isfinite(summary.last["distillation"])
    with pytest.raises(ValueError, match="exactly one sample source"):
        distill.Distiller(teacher.model, student, _generator(teacher), teacher.num_classes,
                          DistillationConfig(steps=1), real_data=(inputs, labels))


def test_mixed_fraction_mixes_the_first_part_of_the_batch_and_masks_its_labels(tmp_path):
    teacher = tiny_teacher()
    generator = _generator(teacher)
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme())
    distiller = distill.Distiller(teacher.model, student, generator, teacher.num_classes,
                                  DistillationConfig(steps=2, batch_size=8, mixed_fraction=0.5, label_loss_weight=1.0))
    images = tf.constant(np.arange(8, dtype="float32").reshape(8, 1, 1, 1) * np.ones((1, 8, 8, 1), "float32"))
    mixed, labelled = distiller.mix_batch(images)
    np.testing.assert_array_equal(labelled, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(mixed[4:], images[4:])
    assert np.all(mixed[:4] >= 0) and np.all(mixed[:4] <= 7)  # Convex mixtures of batch members.
    assert not np.array_equal(mixed[:4], images[:4])
    summary = distiller.train(str(tmp_path), progress=False)
    assert np.isfinite(summary.last["total"])


def test_generated_batches_ask_for_every_class():
    distiller = _augmenting_distiller()
    asked = set()
    for _ in range(10):
        asked |= set(distiller.sample_batch()[1].numpy().tolist())
    assert asked == {0, 1, 2, 3}


def test_the_label_term_is_the_students_cross_entropy_on_the_labels_asked_for(monkeypatch):
    from zscgan_tf import losses
    distiller = _augmenting_distiller(label_loss_weight=1.0)
    seen = {}
    distillation_loss, conditional_cross_entropy = losses.distillation_loss, losses.conditional_cross_entropy

    def recorded_distillation(teacher_logits, student_logits, temperature=1.0):
        seen["teacher"], seen["student"] = teacher_logits.numpy(), student_logits.numpy()
        return distillation_loss(teacher_logits, student_logits, temperature)

    def recorded_cross_entropy(labels, logits, sample_weights=None):
        seen["labels"], seen["cross_entropy_logits"] = labels.numpy(), logits.numpy()
        return conditional_cross_entropy(labels, logits, sample_weights)

    monkeypatch.setattr(losses, "distillation_loss", recorded_distillation)
    monkeypatch.setattr(losses, "conditional_cross_entropy", recorded_cross_entropy)
    distiller._train_step_eager()
    # The student's logits, which the term trains; the teacher's would give it no gradient.
    np.testing.assert_array_equal(seen["cross_entropy_logits"], seen["student"])
    assert not np.array_equal(seen["student"], seen["teacher"])
    assert seen["labels"].shape == (32,) and set(seen["labels"]) <= {0, 1, 2, 3}


def _augmenting_distiller(teacher=None, generator=None, **settings):
    teacher = teacher or tiny_teacher()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme())
    return distill.Distiller(teacher.model, student, generator or _generator(teacher), teacher.num_classes,
                             DistillationConfig(steps=2, batch_size=32, **settings), seed=0)


def _ramps(batch_size=32):
    """Images whose pixel (y, x) holds x + 10 y, so a shift is read off any pixel."""
    rows, columns = np.mgrid[0:8, 0:8]
    return np.tile((columns + 10 * rows).astype("float32")[None, :, :, None], (batch_size, 1, 1, 1))


def test_shifts_move_each_sample_by_whole_pixels_within_the_fraction_and_repeat_the_edges():
    distiller = _augmenting_distiller(shift_fraction=0.25)  # At most 2 of 8 pixels.
    images = _ramps()
    shifted = distiller.augment_batch(tf.constant(images)).numpy()
    moves = set()
    for sample in shifted[..., 0]:
        offset = int(sample[4, 4] - 44)
        dy = int(np.round(offset / 10))
        dx = offset - 10 * dy
        assert abs(dx) <= 2 and abs(dy) <= 2
        rows, columns = np.mgrid[0:8, 0:8]
        expected = np.clip(columns + dx, 0, 7) + 10 * np.clip(rows + dy, 0, 7)
        np.testing.assert_array_equal(sample, expected)
        moves.add((dx, dy))
    assert len(moves) > 5  # Each sample draws its own shift.
    for axis in (0, 1):  # Both ways along each axis.
        assert min(move[axis] for move in moves) < 0 < max(move[axis] for move in moves)
    tiny_fraction = _augmenting_distiller(shift_fraction=0.01).augment_batch(tf.constant(images)).numpy()
    offsets = tiny_fraction[:, 4, 4, 0] - 44  # 0.01 of 8 pixels still moves by up to one pixel.
    assert set(np.unique(offsets)) <= {dx + 10 * dy for dx in (-1, 0, 1) for dy in (-1, 0, 1)} and np.any(offsets)


def test_flips_mirror_about_half_the_samples_and_no_option_leaves_the_batch_alone():
    images = _ramps()
    flipped = _augmenting_distiller(flip=True).augment_batch(tf.constant(images)).numpy()
    mirrored = [np.array_equal(sample, images[0, :, ::-1]) for sample in flipped]
    assert all(mirrored[i] or np.array_equal(flipped[i], images[0]) for i in range(len(images)))
    assert 8 <= sum(mirrored) <= 24
    plain = _augmenting_distiller()
    stream_before = plain.random.state.numpy()
    np.testing.assert_array_equal(plain.augment_batch(tf.constant(images)), images)
    # Off, it draws nothing: runs without the options keep the sample stream they had before they existed.
    np.testing.assert_array_equal(plain.random.state.numpy(), stream_before)


def test_augmentation_repeats_with_the_seed_and_distillation_trains_with_it(tmp_path):
    teacher = tiny_teacher()
    generator = _generator(teacher)
    images = tf.constant(_ramps())
    first, second = (_augmenting_distiller(teacher, generator, shift_fraction=0.2, flip=True) for _ in range(2))
    np.testing.assert_array_equal(first.augment_batch(images), second.augment_batch(images))
    summary = first.train(str(tmp_path), progress=False)
    assert summary.steps == 2 and np.isfinite(summary.last["total"])



def test_joint_training_updates_a_copy_of_the_generator_and_resumes_it(tmp_path):
    from zscgan_tf import zero_shot
    from zscgan_tf.config import GeneratorTrainingConfig, LossConfig
    teacher = tiny_teacher()
    generator = _generator(teacher)
    original = [weight.copy() for weight in generator.get_weights()]
    samples = generator([tf.random.normal([32, 8], seed=5), tf.constant(np.arange(32) % 4)], training=False).numpy()

    def distiller(steps):
        student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme(), calibration_inputs=samples)
        trainer = zero_shot.GeneratorTrainer(teacher, zero_shot.copy_generator(generator), LossConfig(),
                                             GeneratorTrainingConfig(batch_size=16), seed=1)
        return distill.Distiller(teacher.model, student, generator, teacher.num_classes,
                                 DistillationConfig(steps=steps, batch_size=16, joint_generator=True,
                                                    checkpoint_every=2), seed=0, generator_trainer=trainer)

    first = distiller(steps=2)
    first.train(str(tmp_path), progress=False)
    assert int(first.generator_trainer.step.numpy()) == 2  # One generator update per student update.
    assert first._train_step.experimental_get_tracing_count() == 1  # No optimizer makes its variables in it.
    trained = first.generator.get_weights()
    assert any(not np.array_equal(before, after) for before, after in zip(original, trained))
    for before, after in zip(original, generator.get_weights()):
        np.testing.assert_array_equal(before, after)  # The stage-1 generator itself is left as it was.

    resumed = distiller(steps=3)
    resumed.train(str(tmp_path), progress=False)
    assert int(resumed.step.numpy()) == 3 and int(resumed.generator_trainer.step.numpy()) == 3
    assert any(not np.array_equal(before, after) for before, after in zip(trained, resumed.generator.get_weights()))


def test_qat_checkpoints_of_another_generator_behind_a_link_lose_the_link_not_the_files(tmp_path, capsys):
    # A received work directory whose distillation/ was a link, rerun with another generator: rmtree refused the
    # link with a traceback.
    import json
    import os
    from zscgan_tf import quantization_stages, teachers
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / quantization_stages.DISTILLED_FROM_FILE).write_text(json.dumps({"generator_weights_sha256": "other"}))
    (elsewhere / "ckpt-1.index").write_text("mine")
    distillation_dir = tmp_path / "run" / "distillation"
    distillation_dir.parent.mkdir()
    os.symlink(elsewhere, distillation_dir)
    generator = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    quantization_stages._start_distilling_from(  # pylint: disable=protected-access
        str(distillation_dir), teachers.weights_digest(generator))
    assert "was distilled from another generator than this one; discarded" in capsys.readouterr().out
    assert not os.path.islink(distillation_dir) and os.listdir(distillation_dir) == [
        quantization_stages.DISTILLED_FROM_FILE]
    assert sorted(os.listdir(elsewhere)) == ["ckpt-1.index", quantization_stages.DISTILLED_FROM_FILE]
