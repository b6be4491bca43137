import logging
import warnings

import keras  # Keras 3, which TensorFlow installs and saves models with by default.
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from zscgan_tf import bn_stats, export, flattening, keras3_conversion, logits, quantize, teachers, tflite_model
from zscgan_tf import representative_data
from zscgan_tf.errors import UserError


def _keras3_transfer_classifier(seed: int = 0, arithmetic: bool = True) -> keras.Model:
    """A Keras 3 classifier as the transfer-learning tutorial builds one: Keras 3
    preprocessing arithmetic (or a Rescaling layer), an augmentation layer, a nested base
    called with training=False, a softmax head. BN statistics are set far from their defaults."""
    keras.utils.set_random_seed(seed)
    base_inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(base_inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="depthwise_bn")(x)
    base = keras.Model(base_inputs, keras.layers.ReLU(name="out_relu")(x), name="base")
    random = np.random.RandomState(seed)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([random.uniform(0.5, 2.0, weight.shape) if index in (0, 3) else
                               random.normal(0, 1, weight.shape) for index, weight in enumerate(layer.get_weights())])
    inputs = keras.Input((8, 8, 3), name="image")
    if arithmetic:
        x = inputs / 127.5 - 1.0  # Keras 3 operations, as keras.applications' preprocess_input leaves them.
    else:
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = keras.layers.RandomFlip(name="flip")(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="conv_head")(x), name="classifier")


def _pixels(count: int = 6) -> np.ndarray:
    return np.random.RandomState(1).uniform(0, 255, (count, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_file_is_rebuilt_flat_with_tf_keras_and_computes_the_same(tmp_path, suffix):
    # Keras 3 cannot read back the operations it writes into an HDF5 file ("Unknown layer: 'TrueDivide'").
    original = _keras3_transfer_classifier(arithmetic=suffix == ".keras")
    path = str(tmp_path / f"classifier{suffix}")
    original.save(path)
    assert keras3_conversion.saved_by_keras3(path)

    model = keras3_conversion.load_as_tf_keras(path)

    assert isinstance(model, tf_keras.Model) and model.name == "classifier"
    assert not flattening.has_nested_models(model)
    assert not any(flattening.is_augmentation_layer(layer) for layer in model.layers)
    assert [layer.name for layer in model.layers if layer.weights] == ["conv", "bn", "depthwise", "depthwise_bn",
                                                                        "conv_head"]
    expected = original(_pixels(), training=False).numpy()
    np.testing.assert_allclose(model(_pixels(), training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert expected.std() > 0.01  # The outputs differ between images, so agreeing means something.


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_keras3_sequential_classifier_is_rebuilt_and_one_never_built_is_refused_saying_so(tmp_path, suffix):
    keras.utils.set_random_seed(0)
    original = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255.0, name="scale"),
        keras.layers.Conv2D(4, 3, name="conv"), keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax", name="head")],
        name="sequential_classifier")
    original.layers[2].set_weights([np.full(4, 1.5), np.full(4, 0.2), np.full(4, -0.1), np.full(4, 0.5)])
    path = str(tmp_path / f"classifier{suffix}")
    original.save(path)

    teacher = teachers.load_teacher(teachers.TeacherSource(model=path, preprocessing="raw"))

    assert teacher.num_classes == 3 and len(bn_stats.batchnorm_layers(teacher.model)) == 1
    probabilities = tf.nn.softmax(teacher.model(_pixels(), training=False)).numpy()
    np.testing.assert_allclose(probabilities, original(_pixels(), training=False).numpy(), rtol=1e-5, atol=1e-6)

    unbuilt_path = str(tmp_path / "unbuilt.keras")
    with pytest.warns(UserWarning, match="not yet been built"):
        keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(3)]).save(unbuilt_path)
    with pytest.raises(UserError, match="saved before it was built"):
        keras3_conversion.load_as_tf_keras(unbuilt_path)


def test_keras3_teacher_file_loads_as_a_teacher_and_quantizes(tmp_path):
    path = str(tmp_path / "classifier.keras")
    _keras3_transfer_classifier().save(path)
    teacher = teachers.load_teacher(teachers.TeacherSource(model=path, preprocessing="raw"))
    assert teacher.num_classes == 3 and teacher.warnings == (logits.SOFTMAX_REMOVED_NOTE,)
    assert len(bn_stats.batchnorm_layers(teacher.model)) == 2
    probabilities = tf.nn.softmax(teacher.model(_pixels(), training=False)).numpy()
    np.testing.assert_allclose(probabilities, _keras3_transfer_classifier()(_pixels(), training=False).numpy(),
                               rtol=1e-5, atol=1e-6)
    _, float_layers = quantize.quantize_student(teacher.model)
    assert all(name.startswith("tf.math.") for name in float_layers)  # The preprocessing arithmetic.


def test_tf_keras_files_are_not_taken_for_keras3(tmp_path, tiny_teacher_file):
    assert not keras3_conversion.saved_by_keras3(tiny_teacher_file)
    path = str(tmp_path / "tiny.h5")
    tf_keras.models.load_model(tiny_teacher_file).save(path)
    assert not keras3_conversion.saved_by_keras3(path)
    assert not keras3_conversion.saved_by_keras3(str(tmp_path / "missing.keras"))


@keras.saving.register_keras_serializable(package="zscgan_tf_tests")
class ChannelScale(keras.layers.Layer):
    """A user's own Keras 3 layer with a weight: each channel times a learned factor."""

    def build(self, input_shape):
        self.factors = self.add_weight(name="factors", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.factors


@keras.saving.register_keras_serializable(package="zscgan_tf_tests")
class Softmax(keras.layers.Layer):
    """A user's own layer that shares its class name with one of Keras', and computes otherwise."""

    def call(self, inputs):
        return 0.5 * inputs


def _keras3_classifier_with_own_layer(path: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    x = Softmax(name="halve")(ChannelScale(name="scale")(keras.layers.ReLU(name="relu")(x)))
    x = keras.layers.AdaptiveAveragePooling2D(2, name="adaptive_pool")(x)  # Keras 3's own; tf_keras lacks it.
    original = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Flatten(name="flat")(x)))
    original.get_layer("scale").set_weights([np.array([0.5, 1.0, 2.0, -1.0], np.float32)])
    original.save(path)
    return original


def test_keras3_layers_tf_keras_lacks_run_as_they_are_with_their_weights(tmp_path):
    original = _keras3_classifier_with_own_layer(str(tmp_path / "custom.keras"))

    model = keras3_conversion.load_as_tf_keras(str(tmp_path / "custom.keras"))

    expected = original(_pixels(), training=False).numpy()
    np.testing.assert_allclose(model(_pixels(), training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    scale = model.get_layer("scale")
    assert isinstance(scale, keras3_conversion.Keras3Layer) and quantize.layer_type(scale) == "Keras 3 ChannelScale"
    assert quantize.layer_type(model.get_layer("adaptive_pool")) == "Keras 3 AdaptiveAveragePooling2D"
    assert quantize.layer_type(model.get_layer("halve")) == "Keras 3 Softmax"  # Not tf_keras' Softmax.
    np.testing.assert_array_equal(scale.get_weights()[0], [0.5, 1.0, 2.0, -1.0])
    assert [weight.name for weight in scale.trainable_weights] == ["scale/factors:0"]
    model.trainable = False  # A frozen teacher freezes them too.
    assert not scale.trainable_weights and len(scale.non_trainable_weights) == 1
    # Saved, reloaded and cloned as tf_keras models are: a student is all three.
    model.save(str(tmp_path / "rebuilt.h5"))
    reloaded = tf_keras.models.load_model(str(tmp_path / "rebuilt.h5"), compile=False)
    clone = tf_keras.models.clone_model(reloaded)
    clone.set_weights(reloaded.get_weights())
    for copy in (reloaded, clone):
        np.testing.assert_allclose(copy(_pixels(), training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    # Its gradient reaches the input, as the generator's training needs.
    images = tf.constant(_pixels())
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(model(images, training=False))
    assert float(tf.reduce_max(tf.abs(tape.gradient(total, images)))) > 0


@keras.saving.register_keras_serializable(package="zscgan_tf_tests")
class ConvBlock(keras.layers.Layer):
    """A user's own Keras 3 layer holding layers, with no `build` of its own: they make their
    weights when it is first called."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")
        self.bn = keras.layers.BatchNormalization()

    def call(self, inputs, training=None):
        return keras.ops.relu(self.bn(self.conv(inputs), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@tf_keras.utils.register_keras_serializable(package="zscgan_tf_tests")
class TfKerasConvBlock(tf_keras.layers.Layer):
    """The same, written for tf_keras."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = tf_keras.layers.Conv2D(filters, 3, padding="same")
        self.bn = tf_keras.layers.BatchNormalization()

    def call(self, inputs, training=None):
        return tf.nn.relu(self.bn(self.conv(inputs), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def test_own_layers_holding_batchnorm_run_whole_and_the_teacher_says_whose_statistics_are_not_matched(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = ConvBlock(4, name="block")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(x))
    original = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Flatten(name="flat")(x)))
    path = str(tmp_path / "blocks.keras")
    original.save(path)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        teacher = teachers.load_teacher(teachers.TeacherSource(model=path, preprocessing="raw"))
    assert not [warning for warning in shown if "unbuilt state" in str(warning.message)]  # The block is built.

    block = teacher.model.get_layer("block")
    assert len(block.weights) == len(original.get_layer("block").weights) == 6  # Its Conv2D's and BN's.
    np.testing.assert_allclose(teacher.model(_pixels(), training=False).numpy(),
                               original(_pixels(), training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert teacher.warnings == ("1 layer of the teacher's own (block) holds BatchNormalization layers, which run "
                                "inside it: the generator is trained to match the statistics of the other 1 BN layer "
                                "only",)
    # With no BN layer outside such layers there is nothing to match: refused, saying where they are.
    inputs = tf_keras.Input((8, 8, 3))
    x = TfKerasConvBlock(4, name="tf_keras_block")(inputs)
    tf_keras.Model(inputs, tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(x))).save(str(tmp_path / "only.keras"))
    with pytest.raises(UserError, match=r"^teacher 'only' has no BatchNormalization layer but inside its own layers "
                                        r"\(tf_keras_block\), whose statistics cannot be read; ZS-CGAN needs"):
        teachers.load_teacher(teachers.TeacherSource(model=str(tmp_path / "only.keras"), preprocessing="raw"))


def test_keras3_grouped_convolutions_are_rebuilt_without_retracing_warnings(tmp_path):
    # Keras 3 compiles a function of its own for each grouped convolution it runs eagerly, as the
    # agreement check runs the original; from the fifth on TensorFlow warned of "retracing".
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    x = inputs
    for index in range(6):
        x = keras.layers.Conv2D(4, 3, padding="same", groups=2, name=f"grouped{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
    original = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Flatten(name="flat")(x)))
    path = str(tmp_path / "grouped.keras")
    original.save(path)
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    tf.get_logger().addHandler(handler)
    try:
        model = keras3_conversion.load_as_tf_keras(path)
    finally:
        tf.get_logger().removeHandler(handler)

    assert not [message for message in logged if "retracing" in message]
    pixels = _pixels()[..., :1].repeat(4, axis=-1)
    np.testing.assert_allclose(model(pixels, training=False).numpy(), original(pixels, training=False).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_keras3_layer_whose_class_is_not_known_names_the_way_out(tmp_path):
    path = str(tmp_path / "custom.keras")
    _keras3_classifier_with_own_layer(path)
    registry = keras.saving.get_custom_objects()
    registered = registry.pop("zscgan_tf_tests>ChannelScale")  # As in a fresh process that has not imported it.
    try:
        with pytest.raises(UserError, match=r"cannot load Keras 3.* it uses layer classes "
                                            r"'zscgan_tf_tests>ChannelScale', 'zscgan_tf_tests>Softmax' of its own; "
                                            r"pass --teacher_custom_objects=<the module or .py file that defines them>$"):
            keras3_conversion.load_as_tf_keras(path)
    finally:
        registry["zscgan_tf_tests>ChannelScale"] = registered


def test_rebuilt_model_that_computes_otherwise_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "classifier.keras")
    _keras3_transfer_classifier().save(path)
    original_config = keras3_conversion._tf_keras_config

    def with_large_epsilon(config):
        converted = original_config(config)
        if "momentum" in config:  # BatchNormalization: a different epsilon changes its outputs.
            converted["epsilon"] = 10.0
        return converted

    monkeypatch.setattr(keras3_conversion, "_tf_keras_config", with_large_epsilon)
    with pytest.raises(UserError, match="rebuilt with tf_keras computes other outputs"):
        keras3_conversion.load_as_tf_keras(path)


def test_a_rebuild_differing_by_just_over_the_tolerance_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "classifier.keras")
    _keras3_transfer_classifier().save(path)
    monkeypatch.setattr(keras3_conversion, "_largest_relative_difference",
                        lambda original, rebuilt: 2 * keras3_conversion.AGREEMENT_TOLERANCE)
    with pytest.raises(UserError, match="rebuilt with tf_keras computes other outputs"):
        keras3_conversion.load_as_tf_keras(path)
    monkeypatch.setattr(keras3_conversion, "_largest_relative_difference",
                        lambda original, rebuilt: keras3_conversion.AGREEMENT_TOLERANCE / 2)
    rebuilt = keras3_conversion.load_as_tf_keras(path)  # Within the tolerance: taken.
    assert isinstance(rebuilt, tf_keras.Model) and rebuilt.output_shape == (None, 3)


def test_nested_sequential_and_hard_activations_are_rebuilt(tmp_path):
    keras.utils.set_random_seed(0)
    block = keras.Sequential([keras.layers.RandomRotation(0.2), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.BatchNormalization(name="bn")], name="block")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 64.0, offset=-2.0)(inputs)
    x = keras.layers.Activation("hard_silu", name="hard_swish")(block(x))
    x = keras.layers.Activation("hard_sigmoid", name="gate")(x)
    original = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    path = str(tmp_path / "hard.keras")
    original.save(path)

    model = keras3_conversion.load_as_tf_keras(path)

    assert not flattening.has_nested_models(model)
    assert isinstance(model.get_layer("hard_swish"), tf_keras.layers.Multiply)  # So TF-MOT quantizes its output.
    expected = original(_pixels(), training=False).numpy()
    np.testing.assert_allclose(model(_pixels(), training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    # tf_keras' own hard_sigmoid, 0.2x + 0.5 clipped, would give other outputs than relu6(x + 3) / 6.
    assert not np.allclose(tf_keras.activations.hard_sigmoid(tf.constant([-2.9, 2.9])).numpy(),
                           tf.nn.relu6(tf.constant([-2.9, 2.9]) + 3.0).numpy() / 6.0, atol=1e-3)


def test_keras3_teacher_of_any_image_size_is_checked_and_rebuilt_at_the_input_size(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    original = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    path = str(tmp_path / "any_size.keras")
    original.save(path)
    teacher = teachers.load_teacher(teachers.TeacherSource(model=path, input_size=8))
    assert teacher.image_shape == (8, 8, 3)
    np.testing.assert_allclose(teacher.model(_pixels(), training=False).numpy(),
                               original(_pixels(), training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_keras3_lambda_layer_needs_trust_and_then_runs_as_it_is(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda images: images * 2.0 - 1.0, name="affine")(inputs)
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 3)(x))
    original = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    path = str(tmp_path / "lambda.keras")
    original.save(path)
    with pytest.raises(UserError, match="holds serialized Python code .* --trust_model_code"):
        keras3_conversion.load_as_tf_keras(path)
    model = keras3_conversion.load_as_tf_keras(path, trust_model_code=True)
    assert isinstance(model.get_layer("affine"), tf_keras.layers.Lambda)
    np.testing.assert_allclose(model(_pixels(), training=False).numpy(), original(_pixels(), training=False).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_keras3_teacher_of_uint8_pixels_keeps_its_cast_and_reads_floats(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(keras.ops.cast(inputs, "float32"))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    original = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="uint8_classifier")
    path = str(tmp_path / "uint8.keras")
    original.save(path)

    teacher = teachers.load_teacher(teachers.TeacherSource(model=path))

    assert teacher.model.inputs[0].dtype == tf.float32 and teacher.preprocessing.mode == "raw"
    pixels = np.random.RandomState(1).randint(0, 256, (4, 8, 8, 1))
    expected = original(pixels.astype(np.uint8), training=False).numpy()
    np.testing.assert_allclose(teacher.model(pixels.astype(np.float32), training=False).numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def test_keras3_mixed_precision_teacher_computes_in_float32(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, dtype="mixed_float16", name="conv")(inputs)
    x = keras.layers.BatchNormalization(dtype="mixed_float16", name="bn")(x)
    x = ChannelScale(dtype="mixed_float16", name="scale")(x)  # Run as it is, in float32 too.
    x = keras.layers.GlobalAveragePooling2D(dtype="mixed_float16", name="pool")(x)
    original = keras.Model(inputs, keras.layers.Dense(3, dtype="float32", name="logits")(x))
    path = str(tmp_path / "mixed.keras")
    original.save(path)

    teacher = teachers.load_teacher(teachers.TeacherSource(model=path, preprocessing="raw"))

    assert {layer.compute_dtype for layer in teacher.model.layers} == {"float32"}
    assert teacher.model.get_layer("scale").keras3_layer.compute_dtype == "float32"
    assert len(teacher.warnings) == 1 and "mixed precision" in teacher.warnings[0]
    np.testing.assert_allclose(teacher.model(_pixels(), training=False).numpy(),
                               original(_pixels(), training=False).numpy(), rtol=1e-2, atol=1e-2)


def test_keras3_operations_in_the_graph_run_as_tensorflow_ops_and_export_integer(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(x))
    x = x[:, :, :, :4]  # GetItem
    x = keras.ops.concatenate([x, keras.ops.clip(x, 0.0, 1.0)], axis=-1)
    x = keras.ops.reshape(keras.ops.mean(x, axis=[1, 2]), (-1, 8))
    original = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="with_operations")
    path = str(tmp_path / "operations.keras")
    original.save(path)

    teacher = teachers.load_teacher(teachers.TeacherSource(model=path, preprocessing="raw"))

    np.testing.assert_allclose(teacher.model(_pixels(), training=False).numpy(),
                               original(_pixels(), training=False).numpy(), rtol=1e-5, atol=1e-5)
    student, float_layer_names = quantize.quantize_student(teacher.model, calibration_inputs=_pixels(16))
    assert float_layer_names and all(teacher.model.get_layer(name).__class__.__name__.endswith("OpLambda")
                                     for name in float_layer_names)
    dataset = representative_data.representative_dataset_from_array(_pixels(16))
    assert tflite_model.inspect_tflite(export.convert_to_tflite(student, dataset)).is_fully_integer
