"""Tests of zscgan_tf.evaluate: TFLite and Keras predictions, metrics, latency."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tf_keras

from zscgan_tf import cpu_cores, evaluate
from zscgan_tf import export, representative_data
from zscgan_tf.errors import UserError
from zscgan_tf.preprocessing import Preprocessing

from conftest import pinned_to_one_cpu

INPUT_SHAPE = (8, 8, 3)
NUM_CLASSES = 5
NUM_SAMPLES = 24
FLOAT_TOLERANCE = 1e-5


def build_small_classifier(seed=0):
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(INPUT_SHAPE, name="image")
    x = tf_keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="small_classifier")


@pytest.fixture(scope="module")
def model():
    return build_small_classifier()


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).uniform(-1, 1, (NUM_SAMPLES,) + INPUT_SHAPE).astype(
        np.float32)


@pytest.fixture(scope="module")
def float_bytes(model):
    return export.convert_to_tflite(model, mode="float")


@pytest.fixture(scope="module")
def int8_bytes(model, inputs):
    return export.convert_to_tflite(model, representative_data.representative_dataset_from_array(inputs))


def test_float_tflite_predictions_match_keras(model, inputs, float_bytes):
    classifier = evaluate.TfliteClassifier(float_bytes, num_threads=2)
    assert classifier.input_shape == (1,) + INPUT_SHAPE
    tflite_logits = classifier.predict(inputs)
    assert tflite_logits.shape == (NUM_SAMPLES, NUM_CLASSES)
    assert tflite_logits.dtype == np.float32
    np.testing.assert_allclose(tflite_logits, evaluate.keras_predict(model, inputs),
                               atol=FLOAT_TOLERANCE)


def test_int8_classifier_quantizes_inputs_and_dequantizes_outputs(model, inputs, int8_bytes):
    classifier = evaluate.TfliteClassifier(int8_bytes)
    assert classifier.input_details["dtype"] == np.int8
    tflite_logits = classifier.predict(inputs)
    keras_logits = evaluate.keras_predict(model, inputs)
    # Dequantized: on the Keras scale, not raw int8 codes.
    relative_error = np.abs(tflite_logits - keras_logits).max() / np.abs(keras_logits).max()
    assert relative_error < 0.1
    assert evaluate.agreement(tflite_logits, keras_logits) >= 0.9


def test_out_of_range_inputs_are_clipped_not_wrapped(inputs, int8_bytes):
    classifier = evaluate.TfliteClassifier(int8_bytes)
    scale, zero_point = classifier.input_details["quantization"]
    largest = (np.iinfo(np.int8).max - zero_point) * scale
    far_out = np.full((1,) + INPUT_SHAPE, 1e6, np.float32)
    at_limit = np.full((1,) + INPUT_SHAPE, largest, np.float32)
    np.testing.assert_array_equal(classifier.predict(far_out), classifier.predict(at_limit))


def test_predict_rejects_wrong_shapes(float_bytes):
    classifier = evaluate.TfliteClassifier(float_bytes)
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 3\)"):
        classifier.predict(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError):
        classifier.predict(np.zeros((0,) + INPUT_SHAPE))


@pytest.fixture(scope="module")
def pixels():
    images = np.random.default_rng(1).integers(0, 256, (NUM_SAMPLES,) + INPUT_SHAPE, dtype=np.uint8)
    images[0] = 0  # Calibration then sees the whole input range: every pixel level is a rounding tie.
    images[1] = 255
    return images


def int8_model_of(model, inputs) -> bytes:
    return export.convert_to_tflite(model, representative_data.representative_dataset_from_array(inputs))


def test_pixel_table_keeps_all_256_levels_of_tf_preprocessing(model, pixels):
    preprocessing = Preprocessing("tf")
    classifier = evaluate.TfliteClassifier(int8_model_of(model, preprocessing.apply(pixels)))
    scale, zero_point = classifier.input_details["quantization"]
    assert scale == pytest.approx(2 / 255)
    levels = np.arange(256)
    exact = (levels / 127.5 - 1) / scale + zero_point
    assert np.allclose(exact - np.floor(exact), 0.5, atol=1e-4)  # Every level falls on a tie.
    table = classifier.pixel_table(preprocessing)
    assert table.shape == (3, 256) and table.dtype == np.int8
    for row in table:
        # Ties all round one way, the one that keeps 256 distinct levels: pixel - 128.
        np.testing.assert_array_equal(row, levels - 128)
        assert np.abs(row - exact).max() == pytest.approx(0.5, abs=1e-4)


def test_pixel_levels_near_a_tie_but_not_on_one_round_to_the_nearest():
    limits = np.iinfo(np.int8)
    # Caffe's blue channel with an input scale a converter chose: level 70 is -44.50037, not a tie.
    scale, offset = Preprocessing("caffe").scale_and_offset(3, dtype=np.float64)
    input_scale = float(np.float32(1.077416))
    levels = evaluate.quantized_pixel_levels(scale, offset, input_scale, -13, limits)
    exact = (np.arange(256)[None, :] * scale[:, None] + offset[:, None]) / input_scale - 13
    assert exact[0, 70] == pytest.approx(-44.50037, abs=1e-5)
    assert levels[0, 70] == -45  # It was -44, rounded as a tie.
    np.testing.assert_array_equal(levels, np.clip(np.round(exact), limits.min, limits.max))
    # tf's levels are ties, to the float32 rounding of 2 / 255: all round one way.
    scale, offset = Preprocessing("tf").scale_and_offset(1, dtype=np.float64)
    levels = evaluate.quantized_pixel_levels(scale, offset, float(np.float32(2 / 255)), 0, limits)
    np.testing.assert_array_equal(levels[0], np.arange(256) - 128)


def test_predict_pixels_runs_the_table_and_input_as_seen_is_what_it_dequantizes_to(model, pixels):
    preprocessing = Preprocessing("tf")
    classifier = evaluate.TfliteClassifier(int8_model_of(model, preprocessing.apply(pixels)))
    seen = classifier.input_as_seen(pixels, preprocessing)
    scale, _ = classifier.input_details["quantization"]
    assert seen.dtype == np.float32 and seen.shape == pixels.shape
    assert np.abs(seen - preprocessing.apply(pixels)).max() == pytest.approx(scale / 2, rel=1e-3)
    np.testing.assert_array_equal(classifier.predict_pixels(pixels, preprocessing), classifier.predict(seen))


def test_predict_pixels_reverses_channels_for_caffe_preprocessing(model, pixels):
    # Caffe's means are not multiples of the input scale: no ties, so the table is plain rounding
    # and must give exactly what quantizing the preprocessed floats gives.
    preprocessing = Preprocessing("caffe")
    assert preprocessing.reverses_channels(3)
    classifier = evaluate.TfliteClassifier(int8_model_of(model, preprocessing.apply(pixels)))
    table = classifier.pixel_table(preprocessing)
    assert len({tuple(row) for row in table}) == 3  # Each channel has its own mean.
    np.testing.assert_array_equal(classifier.predict_pixels(pixels, preprocessing),
                                  classifier.predict(preprocessing.apply(pixels)))
    swapped = pixels[..., ::-1]
    assert not np.array_equal(classifier.predict_pixels(swapped, preprocessing),
                              classifier.predict_pixels(pixels, preprocessing))


def test_predict_pixels_on_a_float_model_preprocesses_them(model, pixels, float_bytes):
    preprocessing = Preprocessing("tf")
    classifier = evaluate.TfliteClassifier(float_bytes)
    assert classifier.pixel_table(preprocessing) is None
    np.testing.assert_array_equal(classifier.predict_pixels(pixels, preprocessing),
                                  classifier.predict(preprocessing.apply(pixels)))
    np.testing.assert_array_equal(classifier.input_as_seen(pixels, preprocessing), preprocessing.apply(pixels))


def test_describe_pixel_input_gives_the_formula_a_device_applies(model, pixels, float_bytes):
    tf_mode, caffe = Preprocessing("tf"), Preprocessing("caffe")
    int8 = evaluate.TfliteClassifier(int8_model_of(model, tf_mode.apply(pixels)))
    assert int8.describe_pixel_input(tf_mode) == "from uint8 pixels: int8 input = pixel - 128; all 256 pixel levels kept"
    uint8 = evaluate.TfliteClassifier(export.convert_to_tflite(
        model, representative_data.representative_dataset_from_array(tf_mode.apply(pixels)), io_dtype="uint8"))
    assert uint8.describe_pixel_input(tf_mode) == "from uint8 pixels: uint8 input = pixel; all 256 pixel levels kept"
    classifier = evaluate.TfliteClassifier(int8_model_of(model, caffe.apply(pixels)))
    scale, zero_point = classifier.input_details["quantization"]
    line = classifier.describe_pixel_input(caffe)
    assert line.startswith(f"from uint8 pixels: int8 input = round(pixel * a + b), a = ({1 / scale:.6g}, ")
    assert f"b = ({-103.939 / scale + zero_point:.6g}, " in line
    assert "per channel (pixel channels in reverse order);" in line
    kept = min(len(np.unique(row)) for row in classifier.pixel_table(caffe))
    assert 200 < kept < 256 and line.endswith(f"; {kept} of 256 pixel levels kept")  # Its scale is over 1.
    assert evaluate.TfliteClassifier(float_bytes).describe_pixel_input(tf_mode) is None


def test_predict_pixels_rejects_float_pixels_and_wrong_shapes(float_bytes, pixels):
    classifier = evaluate.TfliteClassifier(float_bytes)
    with pytest.raises(ValueError, match="uint8"):
        classifier.predict_pixels(pixels.astype(np.float32), Preprocessing("tf"))
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 3\)"):
        classifier.predict_pixels(np.zeros((2, 4, 4, 3), np.uint8), Preprocessing("tf"))


def test_classifier_rejects_bad_model_bytes():
    with pytest.raises(UserError):
        evaluate.TfliteClassifier(b"not a model at all")
    with pytest.raises(ValueError, match="0"):
        evaluate.TfliteClassifier(b"x", num_threads=0)


def test_keras_predict_batches_like_one_call(model, inputs):
    np.testing.assert_allclose(evaluate.keras_predict(model, inputs, batch_size=5),
                               model(inputs, training=False).numpy(), atol=FLOAT_TOLERANCE)
    with pytest.raises(ValueError, match="0"):
        evaluate.keras_predict(model, inputs, batch_size=0)


def test_top1_accuracy_and_agreement():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert evaluate.top1_accuracy(logits, np.array([1, 0, 0, 0])) == pytest.approx(0.75)
    three_classes = np.array([[0.0, 0.1, 0.9], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
    assert evaluate.top1_accuracy(three_classes, np.array([2, 0, 1])) == 1.0  # The last class counts too.
    assert evaluate.top1_accuracy(three_classes, np.array([1, 0, 2])) == pytest.approx(1 / 3)
    assert evaluate.agreement(logits, logits[:, ::-1]) == 0.0
    assert evaluate.agreement(logits, logits * 3) == 1.0
    with pytest.raises(ValueError, match=r"\(3,\)"):
        evaluate.top1_accuracy(logits, np.array([1, 0, 0]))
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        evaluate.agreement(logits, np.zeros((4, 3)))


def test_largest_class_drop_finds_the_class_a_model_fails_that_overall_top1_hides():
    labels = np.array([0] * 4 + [1] * 4 + [2] * 2)
    reference = labels.copy()
    reference[[0, 4]] = 9  # FP32 misses one image of classes 0 and 1.
    model = labels.copy()
    model[[5, 6]] = 9  # The model gets class 0 right where FP32 did not, and loses two of class 1.
    model[8] = 9  # And one of class 2's two images: the largest fraction.
    drop = evaluate.largest_class_drop(reference, model, labels)
    assert drop == evaluate.ClassDrop(label=2, images=2, reference=1.0, model=0.5)
    # Classes lowered as far: the lowest label.
    assert evaluate.largest_class_drop(labels, np.array([9] + [0] * 3 + [9] + [1] * 3 + [2] * 2), labels).label == 0
    # No class lower than FP32, even one higher: none.
    assert evaluate.largest_class_drop(reference, labels, labels) is None
    with pytest.raises(ValueError, match="one shape"):
        evaluate.largest_class_drop(reference, model[:5], labels)


def test_outputs_are_the_same_at_any_thread_count():
    # Evaluation runs the interpreter on every core (`evaluation_threads`); its predictions, saved and resumed
    # across runs, must not depend on how many there were. A model large enough to be split between threads.
    tf_keras.utils.set_random_seed(1)
    inputs = tf_keras.Input((32, 32, 3))
    x = tf_keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = tf_keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    outputs = tf_keras.layers.Dense(NUM_CLASSES)(tf_keras.layers.GlobalAveragePooling2D()(x))
    model = tf_keras.Model(inputs, outputs)
    samples = np.random.default_rng(2).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    for model_bytes in (export.convert_to_tflite(model, mode="float"),
                        export.convert_to_tflite(
                            model, representative_data.representative_dataset_from_array(samples))):
        one = evaluate.TfliteClassifier(model_bytes, num_threads=1).predict(samples)
        np.testing.assert_array_equal(one, evaluate.TfliteClassifier(model_bytes, num_threads=3).predict(samples))


def test_evaluation_threads_here_follow_this_processs_cpu_set():
    # Unpatched: a thread pinned to one CPU (`taskset -c 3`) evaluates on one thread, not on the machine's cores.
    with pinned_to_one_cpu():
        assert evaluate.evaluation_threads() == 1


def test_evaluation_threads_are_the_usable_cores_up_to_the_cap(monkeypatch):
    monkeypatch.setattr(cpu_cores, "usable_cores", lambda: 64)  # A large machine.
    assert evaluate.evaluation_threads() == evaluate.MAX_EVALUATION_THREADS
    monkeypatch.setattr(cpu_cores, "usable_cores", lambda: 2)  # A container given 2 CPUs' time.
    assert evaluate.evaluation_threads() == 2


def test_measure_latency(int8_bytes):
    result = evaluate.measure_latency(int8_bytes, num_threads=2, runs=5, warmup=1)
    assert (result.runs, result.threads) == (5, 2)
    assert 0 < result.median_ms <= result.p90_ms
    assert "median" in result.format()
    with pytest.raises(ValueError, match="-1"):
        evaluate.measure_latency(int8_bytes, warmup=-1)


def test_models_compared_for_latency_take_turns(float_bytes, int8_bytes, monkeypatch):
    # A slow spell of the machine through the second half of the timing (another process
    # starting) falls on both models, not on whichever was timed second.
    clock = {"now": 0.0, "reads": 0}

    def perf_counter():  # Read at the start and the stop of each timed run.
        clock["reads"] += 1
        if clock["reads"] % 2 == 0:
            runs_done = clock["reads"] // 2
            clock["now"] += 0.001 if runs_done <= 30 else 0.003  # 1 ms a run, then 3 ms.
        return clock["now"]

    monkeypatch.setattr(evaluate.time, "perf_counter", perf_counter)
    results = evaluate.measure_latencies({"float": float_bytes, "int8": int8_bytes}, runs=30, warmup=0)
    assert list(results) == ["float", "int8"]
    assert [result.runs for result in results.values()] == [30, 30]
    # Each model ran 15 times at 1 ms and 15 times at 3 ms. Timed one after the other, float
    # would have read 1 ms and int8 3 ms.
    assert [result.median_ms for result in results.values()] == pytest.approx([2.0, 2.0])
    assert [result.p90_ms for result in results.values()] == pytest.approx([3.0, 3.0])


def test_litert_start_up_line_is_kept_off_stderr(float_bytes, tmp_path):
    # LiteRT says "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." once per process,
    # so it is looked for in a fresh one.
    import subprocess
    import sys

    model_path = tmp_path / "model.tflite"
    model_path.write_bytes(float_bytes)
    script = ("import zscgan_tf, sys\nfrom zscgan_tf import evaluate\n"
              f"evaluate.TfliteClassifier(open({str(model_path)!r}, 'rb').read())\n"
              "print('stderr still works', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stderr
    assert result.stderr.endswith("stderr still works\n")


def test_labels_in_another_order_than_the_outputs_are_warned_of_and_a_poor_teacher_is_not():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    # Folders sorted by name, not in output order: labels 0-5 are the outputs of a shifted order.
    order = np.array([3, 4, 5, 0, 1, 2, 6, 7, 8, 9])
    predicted = np.where(rng.uniform(size=labels.shape) < 0.9, order[labels], rng.integers(0, 10, labels.shape))
    warning = evaluate.label_order_warning(predicted, labels, 10, label_names=tuple("abcdefghij"),
                                           output_names=tuple("ABCDEFGHIJ"))
    assert warning.startswith("the FP32 teacher scores ") and "for 6 of its 10 labels it mostly predicts another "
    assert "(label 0 ('a') -> output 3 ('D'), label 1 ('b') -> output 4 ('E'), label 2 ('c') -> output 5 ('F'), ...)" \
        in warning
    assert warning.endswith("are the labels in the teacher's output order, and the preprocessing right? (class "
                            "folders are taken in sorted order, unless a sidecar's class_names match them by name)")
    # Labels of TFDS or IDX files are the dataset's own: nothing about class folders.
    assert evaluate.label_order_warning(predicted, labels, 10, from_class_folders=False).endswith(
        "are the labels in the teacher's output order, and the preprocessing right?")
    # A teacher that is right on its own labels, or poor and spreading its errors, is not warned of.
    assert evaluate.label_order_warning(labels, labels, 10) is None
    poor = np.where(rng.uniform(size=labels.shape) < 0.4, labels, rng.integers(0, 10, labels.shape))
    assert evaluate.label_order_warning(poor, labels, 10) is None
    # One class confused with another is a teacher's error, not an order.
    confused = np.where(labels == 1, 7, labels)
    assert evaluate.label_order_warning(confused, labels, 10) is None
    few_labels = np.repeat(np.arange(4), 30)  # With few labels too: one confusion is under the two it takes.
    assert evaluate.label_order_warning(np.where(few_labels == 1, 3, few_labels), few_labels, 4) is None
    # Everything read as one class (the wrong preprocessing): warned of, without names.
    collapsed = np.full_like(labels, 4)
    assert "for 9 of its 10 labels it mostly predicts another class (label 0 -> output 4, " in (
        evaluate.label_order_warning(collapsed, labels, 10))
