import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from zscgan_tf import export, flattening, keras_applications, logits, model_files, teachers, tflite_model
from zscgan_tf import representative_data
from zscgan_tf.errors import UserError

from conftest import build_tiny_classifier


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source(model, **kwargs):
    return teachers.TeacherSource(model=model, **kwargs)


def test_keras_application_by_name_without_download():
    teacher = teachers.load_teacher(_source("mobilenet_v2", weights="none", alpha=0.35, input_size=32,
                                            num_classes=10))
    assert teacher.image_shape == (32, 32, 3)
    assert teacher.num_classes == 10
    assert teacher.preprocessing.mode == "tf"
    assert not teacher.model.trainable


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_applications_that_scale_pixels_themselves_read_raw_pixels(name):
    teacher = teachers.load_teacher(_source(name, weights="none", input_size=32, num_classes=10))
    assert teacher.preprocessing.mode == "raw" and teacher.image_shape == (32, 32, 3)
    low, high = teacher.input_range()
    np.testing.assert_array_equal(low, 0.0)
    np.testing.assert_array_equal(high, 255.0)
    assert any(isinstance(layer, tf_keras.layers.Rescaling) for layer in teacher.model.layers)
    assert teacher.num_classes == 10


def test_resnet50_uses_caffe_preprocessing():
    teacher = teachers.load_teacher(_source("resnet50", weights="none", input_size=32, num_classes=10))
    assert teacher.preprocessing.mode == "caffe"


def test_local_weights_file_is_loaded(tmp_path):
    model = tf_keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3), classes=5, alpha=0.25,
                                            classifier_activation=None)
    path = str(tmp_path / "mobilenet.weights.h5")
    model.save_weights(path)
    teacher = teachers.load_teacher(_source("mobilenet", weights=path, alpha=0.25, input_size=32, num_classes=5))
    for expected, loaded in zip(model.get_weights(), teacher.model.get_weights()):
        np.testing.assert_array_equal(expected, loaded)


def test_saved_file_with_sidecar(tiny_teacher_file):
    teacher = teachers.load_teacher(_source(tiny_teacher_file))
    assert teacher.image_shape == (8, 8, 1)
    assert teacher.num_classes == 4
    assert teacher.description["dataset"] == "synthetic"
    assert not teacher.model.trainable


def test_a_sidecar_named_after_the_model_without_its_extension_is_read_and_an_architecture_json_is_not(tmp_path):
    path = str(tmp_path / "my_classifier.keras")
    build_tiny_classifier().save(path)
    with open(tmp_path / "my_classifier.json", "w") as sidecar:  # As the README's example names it.
        json.dump({"class_names": ["a", "b", "c", "d"]}, sidecar)
    assert teachers.load_teacher(_source(path)).description["class_names"] == ["a", "b", "c", "d"]

    with open(path + ".json", "w") as sidecar:  # The model file's name with .json: this one counts.
        json.dump({"class_names": ["w", "x", "y", "z"]}, sidecar)
    assert teachers.load_teacher(_source(path)).description["class_names"] == ["w", "x", "y", "z"]

    h5_path = str(tmp_path / "architecture_beside.h5")
    build_tiny_classifier().save(h5_path, save_format="h5")
    with open(tmp_path / "architecture_beside.json", "w") as architecture:  # model.to_json(), saved beside it.
        architecture.write(build_tiny_classifier().to_json())
    assert "class_names" not in teachers.load_teacher(_source(h5_path, preprocessing="tf")).description


@pytest.mark.parametrize("sidecar, message", [
    ('{"class_names": 5}', 'its "class_names" is not a list of strings'),
    ("[1, 2]", "it holds a JSON list, not an object"),
    # Its advice was to pass --teacher_preprocessing, which the file is read past (the test passes it): refused again.
    ('{"preprocessing": "tf"}', 'its "preprocessing" is not an object with a "mode" such as {"mode": "tf"}; correct '
     'it, or remove it from that file and pass --teacher_preprocessing'),
    ('{"class_names": ["a", "b"]}', "names 2 classes (\"class_names\"), but the teacher 'my_classifier' has 4 outputs"),
    # The benchmark audit's: the evaluation read it as a data source, and ended in an AttributeError's traceback.
    ('{"class_names": ["a", "b", "c", "d"], "dataset": 5}', 'its "dataset" is not a string (the name or folder of '
     'the data it was trained on)'),
    ('{"class_names": ["a", "b", "c", "d"], "dataset": "digits", "data_dir": ["x"]}', 'its "data_dir" is not a string'),
])
def test_a_description_that_is_not_one_is_one_line_naming_what_is_wrong(tmp_path, sidecar, message):
    path = str(tmp_path / "my_classifier.keras")
    build_tiny_classifier().save(path)
    for sidecar_path in (path + ".json", str(tmp_path / "my_classifier.json")):
        with open(sidecar_path, "w") as sidecar_file:
            sidecar_file.write(sidecar)
        with pytest.raises(UserError, match=re.escape(message)):
            teachers.load_teacher(_source(path, preprocessing="tf"))
        if sidecar.startswith("["):  # Not ours to read when it does not carry our name.
            break
        os.remove(sidecar_path)


def test_a_description_beside_the_model_that_is_not_json_is_said_to_be_unread(tmp_path, capsys):
    path = str(tmp_path / "my_classifier.keras")
    build_tiny_classifier().save(path)
    (tmp_path / "my_classifier.json").write_text('{"class_names": ["a", "b", "c", "d"],}')  # A trailing comma.
    assert "class_names" not in teachers.load_teacher(_source(path, preprocessing="tf")).description
    # It was read past without a word: the teacher went on with the default preprocessing and no labels.
    line, = [line for line in capsys.readouterr().err.splitlines() if "my_classifier.json" in line]
    assert line.startswith(f"zscgan_tf: note: cannot read teacher description "
                           f"{str(tmp_path / 'my_classifier.json')!r}: ")  # Then the JSON error, as Python words it.
    assert line.endswith("; it is not read as the teacher's description (class names, preprocessing): correct it if "
                         "it is one")


@pytest.mark.parametrize("suffix", [".h5", "_savedmodel"])
def test_h5_and_savedmodel_files(tmp_path, suffix):
    model = build_tiny_classifier()
    path = str(tmp_path / f"teacher{suffix}")
    model.save(path, save_format="h5" if suffix == ".h5" else "tf")
    teacher = teachers.load_teacher(_source(path, preprocessing="custom", preprocessing_mean=(0.5,),
                                            preprocessing_std=(0.5,)))
    inputs = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(teacher.model(inputs, training=False), model(inputs, training=False), atol=1e-5)
    assert teacher.preprocessing.mode == "custom"


def test_savedmodel_without_keras_metadata_is_refused_before_it_loads(tmp_path):
    model = build_tiny_classifier()
    path = str(tmp_path / "exported")
    tf.saved_model.save(model, path)  # As Keras 3's model.export does: traced functions only.
    with pytest.raises(UserError, match="SavedModel without Keras metadata .* pass the model saved with model.save"):
        teachers.load_teacher(_source(path))


def _save_other_kind(model, tmp_path, kind: str) -> str:
    """`model` saved as something other than a Keras model file; returns the path a user would pass."""
    if kind == "tflite":
        path = tmp_path / "model.tflite"
        path.write_bytes(export.convert_to_tflite(model, mode="float"))
    elif kind == "weights_h5":
        path = tmp_path / "model.weights.h5"
        model.save_weights(str(path))
    elif kind == "checkpoint":
        path = tmp_path / "ckpt"  # model.save_weights writes ckpt.index and ckpt.data-00000-of-00001.
        model.save_weights(str(path), save_format="tf")
    elif kind == "not_hdf5":
        path = tmp_path / "model.h5"  # A pickle, say: h5py's "file signature not found" before.
        path.write_bytes(b"\x80\x04\x95 not HDF5")
    elif kind == "truncated_keras":  # Its first half, as a copy cut short: h5py's "file signature not found".
        path = tmp_path / "model.keras"
        model.save(str(path))
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif kind == "text_keras":
        path = tmp_path / "model.keras"
        path.write_text("not a model")
    elif kind == "zip_keras":  # Another program's archive, renamed: "There is no item named 'config.json'".
        path = tmp_path / "model.keras"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("photo.txt", "not a model")
    elif kind in ("empty_tflite", "empty_keras"):  # A copy that did not finish: h5py's "signature not found".
        path = tmp_path / ("model.tflite" if kind == "empty_tflite" else "model.keras")
        path.write_bytes(b"")
    elif kind == "json":
        path = tmp_path / "model.keras.json"  # The sidecar, given as --teacher.
        path.write_text('{"class_names": ["a", "b", "c", "d"]}')
    else:
        path = tmp_path / "model.onnx"
        path.write_bytes(b"\x08\x07\x12\x07pytorch")
    return str(path)


@pytest.mark.parametrize("kind, what", [
    ("tflite", "a TFLite model, which holds converted ops"),
    ("weights_h5", r"an HDF5 file of weights without the architecture \(model.save_weights\)"),
    ("checkpoint", "a TensorFlow checkpoint .*, which holds weights without the architecture"),
    ("onnx", "an ONNX model"),
    ("not_hdf5", r"not an HDF5 file, though named \.h5 \(HDF5's signature is not in it\)"),
    ("json", r"a JSON file \(a teacher's description, or an architecture saved with model.to_json, without weights\)"),
    ("empty_tflite", r"an empty file \(a copy or download that did not finish\?\)"),
    ("empty_keras", r"an empty file \(a copy or download that did not finish\?\)"),
    ("truncated_keras", r"not a Keras archive, though named \.keras \(not a whole zip file: a copy or download "
                        r"that did not finish\?\)"),
    ("text_keras", r"not a Keras archive, though named \.keras \(not a whole zip file: a copy or download "
                   r"that did not finish\?\)"),
    ("zip_keras", r"not a Keras archive, though named \.keras \(a zip file without the config.json that model.save "
                  r"writes into one: another program's archive\?\)"),
])
def test_other_kinds_of_model_file_are_named_and_refused(tmp_path, kind, what):
    path = _save_other_kind(build_tiny_classifier(), tmp_path, kind)
    with pytest.raises(UserError, match=f"^'{path}' is {what}; the method needs the Keras model itself, its layers "
                                        r"and BatchNorm statistics: pass the model saved with model.save \(.keras or "
                                        r"\.h5\)$"):
        teachers.load_teacher(_source(path))


def test_an_hdf5_file_with_a_user_block_is_read(tmp_path):
    # Legal HDF5 whose signature is at byte 512, not 0: it was refused as "not an HDF5 file".
    import h5py
    path = str(tmp_path / "user_block.h5")
    with h5py.File(path, "w", userblock_size=512) as h5_file:
        tf_keras.models.save_model(build_tiny_classifier(), h5_file, save_format="h5")
    assert teachers.load_teacher(_source(path)).num_classes == 4


@pytest.mark.parametrize("name", ["model.h5", "model.pt"])
def test_a_keras_archive_under_another_suffix_is_refused_saying_to_rename_it(tmp_path, name):
    # Before: h5py's "file signature not found" for .h5, and "a PyTorch model" for .pt.
    path = str(tmp_path / name)
    build_tiny_classifier().save(str(tmp_path / "model.keras"))
    os.rename(tmp_path / "model.keras", path)
    with pytest.raises(UserError) as error:
        teachers.load_teacher(_source(path))
    assert str(error.value) == (f"{path!r} is a Keras archive (model.save's .keras format) under another suffix, and "
                                "Keras reads a model file by its suffix: rename it to end in .keras")


@pytest.mark.parametrize("softmax", [False, True])
def test_a_fully_convolutional_classifiers_1x1_output_is_read_as_a_class_vector(tmp_path, softmax):
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.ReLU()(tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(6, 3)(inputs)))
    scores = tf_keras.layers.GlobalAveragePooling2D(keepdims=True)(tf_keras.layers.Conv2D(5, 1)(x))
    outputs = tf_keras.layers.Softmax()(scores) if softmax else scores
    path = str(tmp_path / "squeezenet_like.keras")
    tf_keras.Model(inputs, outputs).save(path)

    teacher = teachers.load_teacher(_source(path))

    assert teacher.num_classes == 5 and teacher.model.output_shape == (None, 5)
    images = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    expected_logits = tf_keras.Model(inputs, scores)(images, training=False).numpy().reshape(3, 5)
    np.testing.assert_allclose(teacher.model(images, training=False).numpy(), expected_logits, rtol=1e-5, atol=1e-6)
    assert "the teacher's output has shape (1, 1, 5); it is read as 5 class scores" in teacher.warnings[-1]


@pytest.mark.parametrize("wrap, kind, student", [
    (lambda model: tfmot.sparsity.keras.prune_low_magnitude(model), "pruning",
     "the PTQ model and the QAT student keep its zero weights"),
    (lambda model: tfmot.clustering.keras.cluster_weights(
        model, number_of_clusters=4, cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.LINEAR),
     "clustering", "the PTQ model and the QAT student keep its weight clusters"),
])
def test_a_model_saved_inside_tfmot_pruning_or_clustering_is_unwrapped(tmp_path, wrap, kind, student):
    wrapped = wrap(build_tiny_classifier())
    path = str(tmp_path / "wrapped.h5")
    wrapped.save(path)

    teacher = teachers.load_teacher(_source(path))

    assert not any("Prune" in type(layer).__name__ or "Cluster" in type(layer).__name__
                   for layer in teacher.model.layers)
    unwrapped = tfmot.clustering.keras.strip_clustering(tfmot.sparsity.keras.strip_pruning(wrapped))
    images = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(teacher.model(images, training=False), unwrapped(images, training=False), atol=1e-5)
    assert f"saved with TF-MOT's {kind} wrappers" in teacher.warnings[0] and teacher.warnings[0].endswith(student)
    export.convert_to_tflite(teacher.model, mode="float")  # Each BN called once: the taps and the converter take it.


def test_softmax_output_becomes_logits(tmp_path):
    model = build_tiny_classifier(softmax=True)
    path = str(tmp_path / "softmax.keras")
    model.save(path)
    teacher = teachers.load_teacher(_source(path))
    inputs = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    probabilities = model(inputs, training=False).numpy()
    logits = teacher.model(inputs, training=False).numpy()
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), probabilities, atol=1e-5)
    assert not np.allclose(logits.sum(-1), 1.0)


@pytest.mark.parametrize("head", ["flatten_after_softmax", "lambda_softmax"])
def test_probabilities_from_a_softmax_that_is_not_the_last_layer_are_refused(tmp_path, head):
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.ReLU()(tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(6, 3)(inputs)))
    scores = tf_keras.layers.Dense(5)(tf_keras.layers.GlobalAveragePooling2D()(x))
    if head == "flatten_after_softmax":
        outputs = tf_keras.layers.Flatten(name="flat")(tf_keras.layers.Softmax()(scores))
        last = "'flat' (Flatten)"
    else:
        outputs = tf_keras.layers.Lambda(lambda z: tf.nn.softmax(z), name="probabilities")(scores)
        last = "'probabilities' (Lambda)"
    path = str(tmp_path / "model.keras")
    tf_keras.Model(inputs, outputs).save(path)
    # Before: loaded without a word, its probabilities taken for logits by every loss.
    with pytest.raises(UserError) as refusal:
        teachers.load_teacher(_source(path, trust_model_code=True))
    assert str(refusal.value) == (
        f"the teacher's outputs are probabilities (each sums to 1), but its last layer {last} is not the softmax: "
        "save it with the softmax as its last layer, which is removed for distillation, or without a softmax")


def test_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown teacher model 'resnet9000'"):
        teachers.load_teacher(_source("resnet9000"))


def test_missing_and_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        teachers.load_teacher(_source(str(tmp_path / "absent.keras")))
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(UserError, match="is not a Keras archive, though named .keras"):
        teachers.load_teacher(_source(str(garbage)))


def test_teacher_without_batchnorm_is_refused(tmp_path):
    inputs = tf_keras.Input((8, 8, 1))
    outputs = tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(inputs))
    path = str(tmp_path / "no_bn.keras")
    tf_keras.Model(inputs, outputs).save(path)
    with pytest.raises(UserError, match="no BatchNormalization"):
        teachers.load_teacher(_source(path))


def test_output_that_is_not_a_class_vector_is_refused(tmp_path):
    inputs = tf_keras.Input((8, 8, 1))
    features = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(2, 3)(inputs))
    path = str(tmp_path / "feature_map.keras")
    tf_keras.Model(inputs, features).save(path)
    with pytest.raises(UserError, match="class vector"):
        teachers.load_teacher(_source(path))


@pytest.mark.parametrize("auxiliary_activation, auxiliary_units", [("softmax", 5), ("sigmoid", 1), (None, 5)])
def test_a_teacher_with_an_auxiliary_head_is_refused_naming_its_heads(tmp_path, auxiliary_activation,
                                                                      auxiliary_units):
    # Before, a softmax or sigmoid last head was read as the teacher: the model rebuilt on the
    # auxiliary head alone exported a (1, 5) classifier with exit status 0, or was called "None sigmoids".
    inputs = tf_keras.Input((8, 8, 1))
    features = tf_keras.layers.GlobalAveragePooling2D()(
        tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(4, 3)(inputs)))
    main = tf_keras.layers.Dense(10, activation="softmax", name="main_head")(features)
    auxiliary = tf_keras.layers.Dense(auxiliary_units, activation=auxiliary_activation, name="aux_head")(features)
    path = str(tmp_path / "two_heads.keras")
    tf_keras.Model(inputs, [main, auxiliary]).save(path)
    message = (f"the teacher has 2 outputs ('main_head' (None, 10), 'aux_head' (None, {auxiliary_units})); one class "
               "vector is required: save the head to quantize alone, e.g. tf_keras.Model(model.input, model.outputs[0])")
    with pytest.raises(UserError, match=re.escape(message)):
        teachers.load_teacher(_source(path))


def test_a_subclassed_teacher_is_refused_in_a_line(tmp_path):
    # Before, the channel-axis check read its inputs, None: a TypeError traceback.
    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__(name="subnet")
            self.conv, self.bn = tf_keras.layers.Conv2D(4, 3), tf_keras.layers.BatchNormalization()
            self.dense = tf_keras.layers.Dense(3)

        def call(self, images, training=False):
            return self.dense(tf_keras.layers.GlobalAveragePooling2D()(self.bn(self.conv(images), training=training)))

    net = Net()
    net(np.zeros((1, 8, 8, 1), np.float32))
    path = str(tmp_path / "saved_subclassed")
    net.save(path)
    with pytest.raises(UserError, match="the teacher 'subnet' is a subclassed model; TF-MOT and the BN taps need a "
                                        "functional or Sequential tf_keras model"):
        teachers.load_teacher(_source(path))


def test_a_teacher_with_nan_weights_is_refused_naming_the_layer(tmp_path):
    # Before, the integer check blamed the converter: "float ops CONV_2D x9 ... Pass --allow_float_ops".
    model = build_tiny_classifier()
    layer = next(layer for layer in model.layers if isinstance(layer, tf_keras.layers.Conv2D))
    kernel, *rest = layer.get_weights()
    layer.set_weights([np.full_like(kernel, np.nan), *rest])
    path = str(tmp_path / "diverged.keras")
    model.save(path)
    with pytest.raises(UserError, match=re.escape(
            f"the teacher's weights are not finite: layer {layer.name!r} holds NaN or infinite values in 'kernel' (a "
            "training that diverged?); train it again")):
        teachers.load_teacher(_source(path))


def test_teacher_of_any_image_size_is_rebuilt_at_the_input_size(tmp_path):
    inputs = tf_keras.Input((None, None, 1), name="image")
    x = tf_keras.layers.BatchNormalization(name="bn")(tf_keras.layers.Conv2D(2, 3, name="conv")(inputs))
    outputs = tf_keras.layers.Dense(3, name="logits")(tf_keras.layers.GlobalAveragePooling2D()(x))
    model = tf_keras.Model(inputs, outputs)
    path = str(tmp_path / "any_size.keras")
    model.save(path)
    with pytest.raises(UserError, match="any image size; set --teacher_input_size"):
        teachers.load_teacher(_source(path))
    teacher = teachers.load_teacher(_source(path, input_size=12))
    # TF-MOT's student and the TFLite export need the fixed shape the generator makes.
    assert tuple(teacher.model.inputs[0].shape) == (None, 12, 12, 1) and teacher.image_shape == (12, 12, 1)
    assert [layer.name for layer in teacher.model.layers] == [layer.name for layer in model.layers]
    images = np.random.default_rng(0).standard_normal((4, 12, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(teacher.model(images, training=False), model(images, training=False), atol=1e-6)
    assert not teacher.model.trainable


def test_teacher_reading_uint8_pixels_is_rebuilt_on_a_float_input_and_read_raw(tmp_path):
    inputs = tf_keras.Input((8, 8, 1), dtype="uint8", name="pixels")
    x = tf_keras.layers.Rescaling(1 / 255.0, name="scale")(tf.cast(inputs, tf.float32))
    x = tf_keras.layers.BatchNormalization(name="bn")(tf_keras.layers.Conv2D(2, 3, name="conv")(x))
    outputs = tf_keras.layers.Dense(3, name="logits")(tf_keras.layers.GlobalAveragePooling2D()(x))
    model = tf_keras.Model(inputs, outputs)
    path = str(tmp_path / "uint8.keras")
    model.save(path)
    teacher = teachers.load_teacher(_source(path))
    assert teacher.model.inputs[0].dtype == tf.float32 and teacher.image_shape == (8, 8, 1)
    assert teacher.preprocessing.mode == "raw"
    assert len(teacher.warnings) == 1 and "reads uint8 input" in teacher.warnings[0]
    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1))
    np.testing.assert_allclose(teacher.model(pixels.astype(np.float32), training=False),
                               model(pixels.astype(np.uint8), training=False), atol=1e-6)
    # The generator trains through the teacher's input gradient, which the uint8 model lacks.
    images = tf.constant(pixels.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = teacher.model(images, training=False)
    assert np.abs(tape.gradient(logits, images).numpy()).max() > 0
    # An explicit preprocessing still wins.
    assert teachers.load_teacher(_source(path, preprocessing="tf")).preprocessing.mode == "tf"


def test_mixed_precision_teacher_is_rebuilt_to_compute_in_float32_and_exports_integer(tmp_path):
    inputs = tf_keras.Input((8, 8, 1), name="image")
    x = tf_keras.layers.Conv2D(4, 3, use_bias=False, dtype="mixed_float16", name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(dtype="mixed_float16", name="bn")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(dtype="mixed_float16", name="pool")(x)
    x = tf_keras.layers.Dense(3, dtype="mixed_float16", name="logits")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x))
    path = str(tmp_path / "mixed.keras")
    model.save(path)

    teacher = teachers.load_teacher(_source(path))

    assert {layer.compute_dtype for layer in teacher.model.layers} == {"float32"}
    assert teacher.warnings[0] == logits.SOFTMAX_REMOVED_NOTE  # Its head is a softmax.
    assert len(teacher.warnings) == 2 and "mixed precision (4 layers computing in mixed_float16)" in teacher.warnings[1]
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    # The same weights: float32 logits against float16 probabilities.
    np.testing.assert_allclose(tf.nn.softmax(teacher.model(images, training=False)), model(images, training=False),
                               atol=2e-3)
    # The converter stops at every float16 op of the model as saved.
    dataset = representative_data.representative_dataset_from_array(images)
    assert tflite_model.inspect_tflite(export.convert_to_tflite(teacher.model, dataset)).is_fully_integer


def test_a_float64_teacher_is_rebuilt_to_compute_in_float32_and_exports_integer(tmp_path):
    # Built under set_floatx("float64"): the converter refused it, naming every op as unconvertible.
    inputs = tf_keras.Input((8, 8, 1), dtype="float64", name="image")
    x = tf_keras.layers.Conv2D(4, 3, use_bias=False, dtype="float64", name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(dtype="float64", name="bn")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(dtype="float64", name="pool")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, dtype="float64", name="logits")(x))
    path = str(tmp_path / "double.keras")
    model.save(path)

    teacher = teachers.load_teacher(_source(path))

    assert {layer.compute_dtype for layer in teacher.model.layers} == {"float32"}
    assert teacher.model.inputs[0].dtype == tf.float32
    assert teacher.warnings == ("the teacher computes in float64 (4 layers); it is rebuilt to compute in float32 "
                                "with the same weights, as the TFLite converter and TF-MOT need",)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(teacher.model(images, training=False), model(images.astype(np.float64),
                                                                           training=False), atol=1e-5)
    dataset = representative_data.representative_dataset_from_array(images)
    assert tflite_model.inspect_tflite(export.convert_to_tflite(teacher.model, dataset)).is_fully_integer


def test_a_teacher_of_a_fixed_batch_size_is_rebuilt_to_take_any(tmp_path):
    # Input(batch_size=32), or Keras 3's Sequential built by fit: refused at the export check, with no way out.
    inputs = tf_keras.Input((8, 8, 1), batch_size=32, name="image")
    x = tf_keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="logits")(tf_keras.layers.Flatten()(x)))
    path = str(tmp_path / "batch32.keras")
    model.save(path)

    teacher = teachers.load_teacher(_source(path))

    assert tuple(teacher.model.inputs[0].shape) == (None, 8, 8, 1)
    assert teacher.warnings == ("the teacher's input takes batches of 32 only; it is rebuilt to take any batch size, "
                                "as generator training, calibration and the batch-1 TFLite model need",)
    images = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(teacher.model(images[:5], training=False), model(images, training=False)[:5],
                               atol=1e-6)
    dataset = representative_data.representative_dataset_from_array(images)
    assert tflite_model.inspect_tflite(export.convert_to_tflite(teacher.model, dataset)).has_static_batch_one


def test_a_channels_first_teacher_is_refused_saying_so(tmp_path):
    inputs = tf_keras.Input((1, 8, 8), name="image")
    x = tf_keras.layers.Conv2D(4, 3, data_format="channels_first", name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(axis=1, name="bn")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="logits")(tf_keras.layers.Flatten()(x)))
    path = str(tmp_path / "channels_first.keras")
    model.save(path)
    with pytest.raises(UserError) as error:
        teachers.load_teacher(_source(path))
    assert str(error.value) == ("the teacher's input has 8 channels; 1 or 3 are supported: (1, 8, 8) looks like "
                                "channels-first (1 channel of 8x8); zscgan_tf reads images channels-last, (height, "
                                "width, channels): save the model with channels-last layers")


def test_sync_batchnorm_is_read_as_the_batchnorm_it_is_at_inference(tmp_path):
    # Trained under a distribution strategy: it was refused as having no BatchNormalization.
    inputs = tf_keras.Input((8, 8, 1), name="image")
    x = tf_keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = tf_keras.layers.experimental.SyncBatchNormalization(name="sync_bn")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="logits")(x))
    bn = model.get_layer("sync_bn")
    bn.moving_mean.assign(np.arange(4, dtype=np.float32))
    bn.moving_variance.assign(np.full(4, 2.0, np.float32))
    path = str(tmp_path / "sync.keras")
    model.save(path)

    teacher = teachers.load_teacher(_source(path))

    assert type(teacher.model.get_layer("sync_bn")) is tf_keras.layers.BatchNormalization
    assert teacher.warnings == ("its SyncBatchNormalization layers (sync_bn) are read as the BatchNormalization "
                                "layers they are at inference",)
    np.testing.assert_array_equal(teacher.model.get_layer("sync_bn").moving_mean.numpy(), np.arange(4))
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(teacher.model(images, training=False), model(images, training=False), atol=1e-6)


def test_teacher_reading_images_without_a_channel_axis_is_given_one(tmp_path):
    # As TF-MOT's own Keras example builds a classifier: a (28, 28) input reshaped to (28, 28, 1).
    model = tf_keras.Sequential([
        tf_keras.layers.InputLayer(input_shape=(8, 8)), tf_keras.layers.Reshape((8, 8, 1), name="add_axis"),
        tf_keras.layers.Conv2D(4, 3, use_bias=False, name="conv"), tf_keras.layers.BatchNormalization(name="bn"),
        tf_keras.layers.GlobalAveragePooling2D(name="pool"), tf_keras.layers.Dense(3, name="logits")])
    path = str(tmp_path / "no_channel_axis.keras")
    model.save(path)

    teacher = teachers.load_teacher(_source(path))

    assert teacher.image_shape == (8, 8, 1) and tuple(teacher.model.inputs[0].shape) == (None, 8, 8, 1)
    assert len(teacher.warnings) == 1 and "(8, 8) images without a channel axis" in teacher.warnings[0]
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(teacher.model(images, training=False), model(images[..., 0], training=False),
                               atol=1e-6)
    assert not flattening.has_nested_models(teacher.model)


def test_two_input_teacher_is_refused(tmp_path):
    first, second = tf_keras.Input((8, 8, 1)), tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.BatchNormalization()(tf_keras.layers.Add()([first, second]))
    outputs = tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(x))
    path = str(tmp_path / "two_inputs.keras")
    tf_keras.Model([first, second], outputs).save(path)
    with pytest.raises(UserError, match="2 inputs"):
        teachers.load_teacher(_source(path))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused_in_safe_mode_and_its_code_never_runs(tmp_path, suffix):
    marker = tmp_path / "code_ran"
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(2, 3)(inputs))
    code = f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]"
    x = tf_keras.layers.Lambda(eval(code))(x)
    outputs = tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(x))
    path = str(tmp_path / f"lambda{suffix}")
    tf_keras.Model(inputs, outputs).save(path)
    os.remove(marker)  # Building the model ran the lambda once; loading must not.
    with pytest.raises(UserError, match="trust_model_code"):
        teachers.load_teacher(_source(path))
    assert not marker.exists()
    teacher = teachers.load_teacher(_source(path, trust_model_code=True))  # The user vouches for it.
    assert teacher.num_classes == 3


def test_class_names_a_labels_file_cannot_carry_as_they_are_are_warned_of(tmp_path):
    # A name holding U+2028 was written as is: a reader splitting lines got 5 labels for 4 outputs, each after it
    # one off. "7 up" is read by Coral's read_label_file as output 7, named "up".
    from zscgan_tf import teacher_training
    from zscgan_tf.preprocessing import Preprocessing

    path = str(tmp_path / "teacher.keras")
    teacher_training.save_teacher(build_tiny_classifier(), path, Preprocessing("tf"), dataset="synthetic",
                                  class_names=["cola", "7 up", "two\u2028lines", "2: water"], metrics=None)
    teacher = teachers.load_teacher(_source(path))
    assert teacher.class_names() == ()  # No labels file, rather than one whose lines are not the outputs.
    assert ("the teacher's class name 'two\\u2028lines' holds a line break, which a labels file (one name a line) "
            "cannot carry: no labels file is written; remove it from the class names") in teacher.warnings
    assert ("class names '7 up', '2: water' begin with a number and a space or colon, which Coral's read_label_file "
            "(pycoral) reads as an index and a name: the labels file holds them as they are, one a line, for readers "
            "that take one name a line") in teacher.warnings
    teacher_training.save_teacher(build_tiny_classifier(), path, Preprocessing("tf"), dataset="synthetic",
                                  class_names=["cola", "7", "7up", "water"], metrics=None)
    teacher = teachers.load_teacher(_source(path))
    assert teacher.class_names() == ("cola", "7", "7up", "water") and not teacher.warnings


def _save_naming_module(path, module_name, directory, marker):
    """Saves a tiny classifier to the `.keras` file `path` with its config naming `module_name` as the module
    of its model class, and writes that module, whose code creates `marker`, into `directory`: a file from
    someone else, with a `.py` file sent beside it."""
    build_tiny_classifier().save(str(path))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["module"] = module_name  # "tf_keras.src.engine.functional", as saved.
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    (directory / f"{module_name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                                 "from tf_keras.src.engine.functional import Functional\n")


def test_a_keras_file_naming_a_module_to_import_is_refused_before_the_module_runs(tmp_path, monkeypatch):
    # tf_keras imports the module a .keras file names for a class it does not know, in safe mode too: a
    # module beside the file, in the directory a command runs from (on sys.path), ran as the file loaded.
    from tf_keras.src.saving import serialization_lib
    from zscgan_tf import generator, quantization_stages
    marker = tmp_path / "code_ran"
    path = tmp_path / "classifier.keras"
    _save_naming_module(path, "zscgan_tf_test_received_code", tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    named = ("names Python module 'zscgan_tf_test_received_code' for a class or function Keras does not know, and "
             "Keras would import that module as it loads, running its code; pass --teacher_custom_objects=<the "
             "module or .py file> if it defines the model's layers, or --trust_model_code only if you trust the "
             "file's author")
    with pytest.raises(UserError) as refusal:
        teachers.load_teacher(_source(str(path)))
    assert str(refusal.value) == f"model file {str(path)!r} {named}"
    with pytest.raises(UserError) as refusal:
        quantization_stages.load_student(str(path))
    assert str(refusal.value) == f"student {str(path)!r} {named}"
    with pytest.raises(UserError) as refusal:
        generator.load_generator(str(path))
    assert str(refusal.value) == (f"generator {str(path)!r} names Python module 'zscgan_tf_test_received_code' for "
                                  "Keras to import, which no generator of zscgan_tf does, and was not loaded: "
                                  "importing it would run its code")
    assert not marker.exists()
    assert serialization_lib.importlib is importlib  # The guard is lifted after each load.
    # As a user meets it: the command, run from the directory the file came in.
    result = subprocess.run([sys.executable, "-m", "zscgan_tf.train", "--teacher=classifier.keras",
                             "--work_dir=run", "--eval_dataset=none"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: model file {str(path)!r} {named}")
    assert not marker.exists()
    # The user vouches for the file: Keras imports the module, as it did.
    monkeypatch.delitem(sys.modules, "zscgan_tf_test_received_code", raising=False)
    assert teachers.load_teacher(_source(str(path), trust_model_code=True)).num_classes == 4
    assert marker.exists()
    sys.modules.pop("zscgan_tf_test_received_code", None)


@pytest.mark.parametrize("suffix, save_format", [(".keras", None), (".h5", "h5"), ("_savedmodel", "tf")])
def test_a_saved_quantization_aware_model_is_refused_before_it_loads(tmp_path, suffix, save_format):
    float_path = str(tmp_path / f"float{suffix}")
    student_path = str(tmp_path / f"student{suffix}")
    model = build_tiny_classifier()
    model.save(float_path, save_format=save_format)
    tfmot.quantization.keras.quantize_model(model).save(student_path, save_format=save_format)
    # Read from the saved config alone, in each of the three formats.
    assert "QuantizeWrapperV2" in model_files.saved_layer_classes(student_path)
    assert {"Conv2D", "BatchNormalization"} <= model_files.saved_layer_classes(float_path)
    assert not model_files.saved_layer_classes(float_path) & teachers.TF_MOT_LAYER_CLASSES
    with pytest.raises(teachers.QuantizationAwareTeacherError,
                       match=r"is a TF-MOT quantization-aware model \(QuantizeLayer, QuantizeWrapperV2 layers\), "
                             "not a float teacher"):
        teachers.load_teacher(_source(student_path, preprocessing="tf"))
    assert teachers.load_teacher(_source(float_path, preprocessing="tf")).num_classes == 4


def test_files_without_a_readable_config_name_no_classes(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not a model at all")
    empty_zip = tmp_path / "empty.keras"
    zipfile.ZipFile(empty_zip, "w").close()
    for path in (garbage, empty_zip, tmp_path / "absent.keras", tmp_path):
        assert model_files.saved_layer_classes(str(path)) == frozenset()


def test_pixel_scaling_layer_is_found_after_augmentation_and_not_elsewhere():
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.RandomFlip(name="flip")(inputs)
    x = tf_keras.applications.mobilenet_v2.preprocess_input(x)  # TensorFlow arithmetic: a TFOpLambda.
    x = tf_keras.layers.Conv2D(2, 3, name="conv")(x)
    assert teachers.pixel_scaling_layer(tf_keras.Model(inputs, x)).name.startswith("tf.math.truediv")

    scaled_later = tf_keras.layers.Rescaling(0.5)(tf_keras.layers.Conv2D(2, 3)(inputs))
    assert teachers.pixel_scaling_layer(tf_keras.Model(inputs, scaled_later)) is None


def test_teacher_file_without_scaling_layer_or_sidecar_gets_no_warning(tmp_path):
    path = str(tmp_path / "plain.keras")
    build_tiny_classifier().save(path)
    teacher = teachers.load_teacher(_source(path))
    assert teacher.preprocessing.mode == "tf" and teacher.warnings == ()


def test_saved_binary_classifier_loads_as_two_classes_with_a_warning(tmp_path):
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    path = str(tmp_path / "binary.keras")
    tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation="sigmoid", name="score")(x)).save(path)
    teacher = teachers.load_teacher(_source(path))
    assert teacher.num_classes == 2 and tuple(teacher.model.output.shape) == (None, 2)
    assert len(teacher.warnings) == 1 and "binary classifier" in teacher.warnings[0]
    assert teachers.describe(teacher)["warnings"] == list(teacher.warnings)


def test_imagenet_weights_that_cannot_be_downloaded_say_how_to_pass_them(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/.../mobilenet_v2_weights.h5: None -- "
                        "[Errno -2] Name or service not known")

    application = keras_applications.KERAS_APPLICATIONS["mobilenet_v2"]
    monkeypatch.setitem(keras_applications.KERAS_APPLICATIONS, "mobilenet_v2",
                        dataclasses.replace(application, builder=offline))
    with pytest.raises(UserError, match=r"^cannot build mobilenet_v2 with imagenet weights: URL fetch failure .* "
                                        r"\(without the network here: fetch that file where there is one, then pass "
                                        r"--teacher_weights=<its path>\)$"):
        teachers.load_teacher(_source("mobilenet_v2"))


def test_imagenet_class_names_come_from_the_class_index_keras_applications_read(tmp_path, monkeypatch):
    import json
    index = {str(label): [f"n{label:08d}", f"name {label}"] for label in range(keras_applications.IMAGENET_CLASSES)}
    (tmp_path / "imagenet_class_index.json").write_text(json.dumps(index))
    asked = {}

    def cached_file(fname, origin, cache_subdir, file_hash):  # As tf_keras finds it in ~/.keras/models.
        asked.update(fname=fname, origin=origin, cache_subdir=cache_subdir, file_hash=file_hash)
        return str(tmp_path / fname)

    monkeypatch.setattr(tf_keras.utils, "get_file", cached_file)
    names = keras_applications.imagenet_class_names()
    assert len(names) == 1000 and names[0] == "name 0" and names[999] == "name 999"
    assert asked == {"fname": "imagenet_class_index.json", "cache_subdir": "models",
                     "origin": "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
                     "file_hash": "c2c37ea517e94d9795004a39431a14cb"}

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] Temporary "
                        "failure in name resolution")

    monkeypatch.setattr(tf_keras.utils, "get_file", offline)
    with pytest.raises(UserError, match=r"^cannot fetch ImageNet's class names \(URL fetch failure"):
        keras_applications.imagenet_class_names()


def test_a_sidecars_custom_preprocessing_is_read_with_its_mean_and_std(tmp_path):
    from zscgan_tf.preprocessing import Preprocessing
    from zscgan_tf.teacher_training import save_teacher
    path = str(tmp_path / "custom.keras")
    save_teacher(build_tiny_classifier(), path, Preprocessing("custom", (0.5,), (0.25,)), dataset="digits",
                 class_names=["a", "b", "c", "d"], metrics=None)
    assert teachers.load_teacher(_source(path)).preprocessing == Preprocessing("custom", (0.5,), (0.25,))


def test_preprocessing_the_teacher_cannot_take_is_refused_naming_where_it_was_given(tmp_path):
    from zscgan_tf.preprocessing import Preprocessing
    from zscgan_tf.teacher_training import save_teacher
    path = str(tmp_path / "gray.keras")  # Reads 1 channel.
    save_teacher(build_tiny_classifier(), path, Preprocessing("custom", (0.5, 0.5), (0.25, 0.25)), dataset="digits",
                 class_names=["a", "b", "c", "d"], metrics=None)
    # Before, neither said whether the flags or the model's description gave them.
    with pytest.raises(UserError) as refusal:
        teachers.load_teacher(_source(path))
    assert str(refusal.value) == (
        f"preprocessing mean has 2 values but the teacher takes 1 channel (from teacher description '{path}.json': "
        "correct it there, or pass --teacher_preprocessing to override it)")
    with pytest.raises(UserError) as refusal:
        teachers.load_teacher(_source(path, preprocessing="custom", preprocessing_mean=(0.5, 0.5, 0.5),
                                      preprocessing_std=(0.25,)))
    assert str(refusal.value) == ("preprocessing mean has 3 values but the teacher takes 1 channel "
                                  "(--teacher_preprocessing_mean, --teacher_preprocessing_std)")
    assert teachers.load_teacher(_source(path, preprocessing="tf")).preprocessing == Preprocessing("tf")
    with open(path + ".json", "w") as sidecar:
        json.dump({"preprocessing": {"mode": "inception"}}, sidecar)
    with pytest.raises(UserError, match=re.escape(
            f"unknown preprocessing mode 'inception'; expected one of tf, caffe, torch, custom, raw (from teacher "
            f"description '{path}.json': correct it there")):
        teachers.load_teacher(_source(path))


def test_a_description_naming_no_dataset_as_null_loads_as_naming_none(tmp_path):
    # The review's: a null "dataset" did no harm before the check for non-string ones, and flags may name the data.
    path = str(tmp_path / "my_classifier.keras")
    build_tiny_classifier().save(path)
    with open(path + ".json", "w") as sidecar:
        json.dump({"class_names": ["a", "b", "c", "d"], "dataset": None}, sidecar)
    teacher = teachers.load_teacher(_source(path, preprocessing="tf"))
    assert not teacher.real_data("", "")[0] and teacher.real_data("digits", "") == ("digits", "")
