"""Tests of zscgan_tf.quantize: schemes, the TF-MOT student and its layer report."""

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import functools

import numpy as np
import pytest
import tf_keras

from zscgan_tf import quantize
from zscgan_tf.errors import UserError

from conftest import build_merge_layer_classifier, build_two_block_classifier

INPUT_SHAPE = (16, 16, 1)
NUM_CLASSES = 10
NUM_SAMPLES = 64
# Calibrated W8A8 student against its teacher, before any training: measured 0.7-1.0%
# of the teacher's largest |logit| over six seeds.
MAX_RELATIVE_LOGIT_ERROR = 0.03
MIN_INITIAL_AGREEMENT = 0.9


# The TF-MOT tests share one tiny model: two Conv+BN+ReLU blocks, pooling, Dense logits.
build_tiny_teacher = functools.partial(build_two_block_classifier, INPUT_SHAPE, NUM_CLASSES)


def random_inputs(seed=0, count=NUM_SAMPLES):
    return np.random.default_rng(seed).standard_normal((count,) + INPUT_SHAPE).astype(np.float32)


def rows_by_name(student):
    return {row.name: row for row in quantize.describe_student(student)}


# ---------------------------------------------------------------------------- schemes


def test_scheme_names_and_exportability():
    default = quantize.QuantizationScheme()
    assert default.name == "w8a8"
    assert default.exportable
    assert quantize.QuantizationScheme.from_name("W4A4").name == "w4a4"
    assert not quantize.QuantizationScheme.from_name("w4a4").exportable
    assert not quantize.QuantizationScheme.from_name("w8a4").exportable
    assert not quantize.QuantizationScheme.from_name("w4a8").exportable
    per_tensor = quantize.QuantizationScheme.from_name("w8a8", per_channel=False)
    assert per_tensor.exportable and not per_tensor.per_channel


@pytest.mark.parametrize("fields, quoted", [
    ({"weight_bits": 1}, "1"),
    ({"activation_bits": 9}, "9"),
    ({"weight_bits": 4.0}, "4.0"),
    ({"activation_bits": True}, "True"),
    ({"per_channel": "yes"}, "'yes'"),
])
def test_scheme_rejects_bad_fields_quoting_them(fields, quoted):
    with pytest.raises(UserError, match=quoted):
        quantize.QuantizationScheme(**fields)


@pytest.mark.parametrize("name", ["int8", "w8", "w16a16", "a8w8", ""])
def test_scheme_from_name_rejects_bad_names(name):
    with pytest.raises(UserError):
        quantize.QuantizationScheme.from_name(name)


# ---------------------------------------------------------------------------- student


def test_calibrated_student_reproduces_teacher_before_training():
    teacher = build_tiny_teacher()
    inputs = random_inputs()
    student, float_layer_names = quantize.quantize_student(
        teacher, calibration_inputs=inputs)
    assert float_layer_names == ()
    teacher_logits = teacher(inputs, training=False).numpy()
    student_logits = student(inputs, training=False).numpy()
    relative_error = np.abs(student_logits - teacher_logits).max() / np.abs(teacher_logits).max()
    assert 0 < relative_error <= MAX_RELATIVE_LOGIT_ERROR  # > 0: it is quantized
    agreement = np.mean(student_logits.argmax(1) == teacher_logits.argmax(1))
    assert agreement >= MIN_INITIAL_AGREEMENT


def test_student_copies_teacher_weights_and_ranges_follow_them():
    teacher = build_tiny_teacher()
    student, _ = quantize.quantize_student(teacher)
    teacher_kernel = teacher.get_layer("logits").kernel.numpy()
    student_dense = student.get_layer("quant_logits")
    student_kernel = [w for w in student_dense.weights if w.name.endswith("/kernel:0")][0]
    np.testing.assert_array_equal(student_kernel.numpy(), teacher_kernel)
    # Weight ranges are set from the weights, not left at TF-MOT's [-6, 6].
    kernel_max = [w for w in student_dense.weights if "kernel_max" in w.name][0].numpy()
    np.testing.assert_allclose(kernel_max, np.abs(teacher_kernel).max(), rtol=1e-6)


def test_a_loaded_model_with_a_separable_conv_quantizes_with_its_own_weights(tmp_path):
    # Loaded from a file, a model names its layers without advancing Keras' automatic names,
    # so the Conv2D TF-MOT makes of a SeparableConv2D's pointwise half was named 'conv2d' too
    # and its weights set on the model's own 'conv2d' ("Shape mismatch").
    inputs = tf_keras.Input(INPUT_SHAPE)
    x = tf_keras.layers.Conv2D(4, 3, padding="same", name="conv2d")(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.SeparableConv2D(8, 3, padding="same", name="separable_conv2d")(x)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(x)).save(tmp_path / "teacher.keras")
    tf_keras.backend.clear_session()  # Keras' automatic names start again, as in a new process.
    teacher = tf_keras.models.load_model(tmp_path / "teacher.keras")
    calibration = random_inputs()
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=calibration)
    assert float_layer_names == ()
    # Split into a depthwise and a pointwise convolution, each quantized.
    assert {"DepthwiseConv2D", "Conv2D"} <= {row.layer_type for row in quantize.describe_student(student)}
    teacher_logits = teacher(calibration, training=False).numpy()
    student_logits = student(calibration, training=False).numpy()
    assert np.abs(student_logits - teacher_logits).max() / np.abs(teacher_logits).max() <= MAX_RELATIVE_LOGIT_ERROR


def test_an_adapted_normalization_layer_computes_with_its_statistics_in_the_student():
    # Normalization adapted to pixels (mean about 100): TF-MOT assigns its weights without
    # finalizing it, and the student computed with mean 0 and variance 1 (chance accuracy).
    pixels = np.random.default_rng(0).uniform(0, 200, (NUM_SAMPLES,) + INPUT_SHAPE).astype(np.float32)
    normalization = tf_keras.layers.Normalization(name="pixel_normalization")  # Named: Keras numbers its own names.
    normalization.adapt(pixels)
    inputs = tf_keras.Input(INPUT_SHAPE)
    x = tf_keras.layers.Conv2D(4, 3, padding="same")(normalization(inputs))
    x = tf_keras.layers.ReLU()(tf_keras.layers.BatchNormalization()(x))
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(x))
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=pixels)
    assert float_layer_names == ("pixel_normalization",)
    teacher_logits = teacher(pixels, training=False).numpy()
    student_logits = student(pixels, training=False).numpy()
    assert np.abs(student_logits - teacher_logits).max() / np.abs(teacher_logits).max() <= MAX_RELATIVE_LOGIT_ERROR


def test_a_student_built_to_be_checked_leaves_the_next_one_its_names():
    teacher = build_tiny_teacher()
    with quantize.automatic_names_unchanged():
        checked, _ = quantize.quantize_student(teacher)
    student, _ = quantize.quantize_student(teacher)
    # Else the run's own student was named quantize_layer_1 and its saved file differed from a run without the check.
    assert [layer.name for layer in student.layers] == [layer.name for layer in checked.layers]


def test_teacher_is_unchanged_by_quantization_and_training_the_student():
    teacher = build_tiny_teacher()
    inputs = random_inputs()
    teacher_weights = [weight.copy() for weight in teacher.get_weights()]
    student, _ = quantize.quantize_student(teacher, calibration_inputs=inputs)
    student_weights_before = [weight.copy() for weight in student.get_weights()]
    student.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.MeanSquaredError())
    student.fit(inputs, np.ones((NUM_SAMPLES, NUM_CLASSES), np.float32), epochs=1,
                batch_size=16, verbose=0)
    changed = [not np.array_equal(before, after) for before, after in
               zip(student_weights_before, student.get_weights())]
    assert any(changed), "the fit did not train the student"
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("extra_layer, float_name", [
    ("rescaling", "rescaling"), ("lambda", "lambda")])
def test_unsupported_layers_stay_float_and_are_reported(extra_layer, float_name):
    teacher = build_tiny_teacher(extra_layer=extra_layer)
    inputs = random_inputs() * 60 + 128 if extra_layer == "rescaling" else random_inputs()
    student, float_layer_names = quantize.quantize_student(teacher, calibration_inputs=inputs)
    assert float_layer_names == (float_name,)
    rows = rows_by_name(student)
    assert rows[float_name].status == quantize.FLOAT_STATUS
    assert rows["conv_1"].status == quantize.QUANTIZED_STATUS
    teacher_logits = teacher(inputs, training=False).numpy()
    student_logits = student(inputs, training=False).numpy()
    relative_error = np.abs(student_logits - teacher_logits).max() / np.abs(teacher_logits).max()
    assert relative_error <= MAX_RELATIVE_LOGIT_ERROR


# TF-MOT's registries claim every Activation and Conv layer by class, but their configs
# raise "Activation ... not supported" when the wrapper is built, and quantize_apply wraps
# an unannotated layer in front of an annotated one by itself (an output quantizer).
@pytest.mark.parametrize("scheme_name", ["w8a8", "w4a4"])
@pytest.mark.parametrize("extra_layer, float_name", [
    ("elu", "elu"), ("selu", "selu"), ("softplus", "softplus"), ("mish", "mish"),
    ("hard_sigmoid", "hard_sigmoid"), ("selu_conv", "conv_2")])
def test_activations_tfmot_lacks_stay_float_in_front_of_quantized_layers(
        scheme_name, extra_layer, float_name):
    teacher = build_tiny_teacher(extra_layer=extra_layer)
    inputs = random_inputs()
    scheme = quantize.QuantizationScheme.from_name(scheme_name)
    student, float_layer_names = quantize.quantize_student(teacher, scheme, calibration_inputs=inputs)
    assert float_layer_names == (float_name,)
    rows = rows_by_name(student)
    assert rows[float_name].status == quantize.FLOAT_STATUS
    assert rows["logits"].status == quantize.QUANTIZED_STATUS
    student_logits = student(inputs, training=False).numpy()
    assert np.all(np.isfinite(student_logits))
    if scheme_name == "w8a8":
        teacher_logits = teacher(inputs, training=False).numpy()
        relative_error = np.abs(student_logits - teacher_logits).max() / np.abs(teacher_logits).max()
        assert relative_error <= MAX_RELATIVE_LOGIT_ERROR


@pytest.mark.parametrize("scheme_name", ["w8a8", "w4a4"])
def test_an_activation_tfmot_lacks_reading_the_model_input_stays_float(scheme_name):
    inputs = tf_keras.Input(INPUT_SHAPE)
    x = tf_keras.layers.Activation("elu", name="elu")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(tf_keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(x))
    teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="logits")(tf_keras.layers.Flatten()(x)))
    scheme = quantize.QuantizationScheme.from_name(scheme_name)
    _, float_layer_names = quantize.quantize_student(teacher, scheme, calibration_inputs=random_inputs())
    assert float_layer_names == ("elu",)


def test_gelu_is_quantized_at_8_bits_and_float_below():
    teacher = build_tiny_teacher(extra_layer="gelu")
    w8a8, w8a8_float = quantize.quantize_student(teacher)
    w4a4, w4a4_float = quantize.quantize_student(teacher, quantize.QuantizationScheme.from_name("w4a4"))
    assert (w8a8_float, w4a4_float) == ((), ("gelu",))
    assert rows_by_name(w8a8)["gelu"].activation_bits == 8


@pytest.mark.parametrize("scheme_name, bits", [("w8a8", 8), ("w4a4", 4)])
def test_merge_layers_outside_the_registry_quantize_their_output(scheme_name, bits):
    teacher = build_merge_layer_classifier()
    inputs = np.random.default_rng(0).standard_normal((NUM_SAMPLES, 8, 8, 1)).astype(np.float32)
    scheme = quantize.QuantizationScheme.from_name(scheme_name)
    student, float_layer_names = quantize.quantize_student(teacher, scheme, calibration_inputs=inputs)
    assert float_layer_names == ()
    rows = rows_by_name(student)
    for name in ("multiply", "subtract", "maximum", "minimum"):
        assert (rows[name].status, rows[name].weight_bits, rows[name].activation_bits) == (
            quantize.QUANTIZED_STATUS, None, bits), name
    # Calibrated from the teacher's tensors: the W8A8 student starts where the teacher is.
    if bits == 8:
        teacher_logits = teacher(inputs, training=False).numpy()
        student_logits = student(inputs, training=False).numpy()
        relative_error = np.abs(student_logits - teacher_logits).max() / np.abs(teacher_logits).max()
        assert relative_error <= MAX_RELATIVE_LOGIT_ERROR


def test_layer_names_are_summarized_by_type():
    teacher = build_merge_layer_classifier()
    names = ["multiply", "left_conv", "subtract", "right_conv", "maximum", "minimum"]
    assert quantize.summarize_layer_names(teacher, names, shown_per_type=2) == (
        "1 Multiply (multiply); 2 Conv2D (left_conv, right_conv); 1 Subtract (subtract); "
        "1 Maximum (maximum); 1 Minimum (minimum)")
    assert quantize.summarize_layer_names(teacher, ["left_bn", "right_bn"], shown_per_type=1) == (
        "2 BatchNormalization (left_bn, ..., 1 more)")
    assert quantize.summarize_layer_names(teacher, []) == ""


def test_w8a8_report_has_eight_bit_weights_and_folded_batch_norm():
    student, _ = quantize.quantize_student(build_tiny_teacher())
    rows = rows_by_name(student)
    assert rows["conv_1"].weight_bits == 8
    assert rows["conv_2"].weight_bits == 8
    # Conv+BN+ReLU: no fake quantizer between them, one on the ReLU output.
    assert rows["conv_1"].activation_bits is None
    assert rows["bn_1"].activation_bits is None
    assert rows["relu_1"].activation_bits == 8
    assert (rows["logits"].weight_bits, rows["logits"].activation_bits) == (8, 8)
    lines = quantize.format_layer_report(quantize.describe_student(student))
    assert lines[0].startswith("| layer |")
    assert any(line.startswith("| conv_1 | Conv2D | quantized | 8 |") for line in lines)


@pytest.mark.parametrize("scheme_name, bits", [("w8a8", 8), ("w4a4", 4)])
def test_a_layer_feeding_a_relu_layer_keeps_its_weight_quantizers(scheme_name, bits):
    # TF-MOT's transform for an Add before a ReLU gave such a layer a no-op config: its weights trained unrounded
    # in QAT, while the int8 file rounds them (MobileNetV3's squeeze-excite convolutions).
    inputs = tf_keras.Input(INPUT_SHAPE)
    x = tf_keras.layers.BatchNormalization(name="bn")(tf_keras.layers.Conv2D(4, 3, name="first")(inputs))
    x = tf_keras.layers.ReLU(name="relu_after_conv")(tf_keras.layers.Conv2D(4, 3, name="conv")(x))
    x = tf_keras.layers.ReLU(6.0, name="relu_after_depthwise")(tf_keras.layers.DepthwiseConv2D(3, name="depthwise")(x))
    x = tf_keras.layers.ReLU(name="relu_after_dense")(
        tf_keras.layers.Dense(6, name="dense")(tf_keras.layers.GlobalAveragePooling2D()(x)))
    teacher = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES, name="logits")(x))
    student, _ = quantize.quantize_student(teacher, quantize.QuantizationScheme.from_name(scheme_name))
    rows = rows_by_name(student)
    for name in ("conv", "depthwise", "dense"):
        # Weights rounded as the file rounds them; the output rounded after the ReLU only, as TFLite fuses the two.
        assert (rows[name].weight_bits, rows[name].activation_bits) == (bits, None), name
        assert rows[f"relu_after_{name}"].activation_bits == bits, name


def test_w4a4_keeps_first_and_last_layers_at_8_bits():
    scheme = quantize.QuantizationScheme.from_name("w4a4")
    assert not scheme.exportable
    student, _ = quantize.quantize_student(build_tiny_teacher(), scheme)
    rows = rows_by_name(student)
    input_quantizer = [row for row in rows.values()
                       if row.status == quantize.INPUT_QUANTIZER_STATUS][0]
    assert input_quantizer.activation_bits == 8
    assert rows["conv_1"].weight_bits == 8  # first weighted layer
    assert rows["conv_2"].weight_bits == 4
    assert rows["relu_1"].activation_bits == 4
    assert rows["relu_2"].activation_bits == 4
    assert (rows["logits"].weight_bits, rows["logits"].activation_bits) == (8, 8)  # last


def test_w4a4_without_edge_layer_exception_is_4_bit_everywhere():
    scheme = quantize.QuantizationScheme(4, 4, keep_first_and_last_at_8_bits=False)
    student, _ = quantize.quantize_student(build_tiny_teacher(), scheme)
    bits = {row.weight_bits for row in quantize.describe_student(student)}
    bits |= {row.activation_bits for row in quantize.describe_student(student)}
    assert bits - {None} == {4}


def test_w4a4_student_runs_and_trains():
    teacher = build_tiny_teacher()
    inputs = random_inputs()
    student, _ = quantize.quantize_student(
        teacher, quantize.QuantizationScheme.from_name("w4a4"), calibration_inputs=inputs)
    student.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.MeanSquaredError())
    # Targets far from the teacher's outputs, which it starts at: its 4-bit fake quantization passes gradients
    # (straight through), so training moves it towards them.
    targets = teacher(inputs).numpy() + 1.0
    before = student.evaluate(inputs, targets, batch_size=32, verbose=0)
    four_bit = [row.name for row in quantize.describe_student(student) if row.weight_bits == 4]

    def kernel(name):
        return next(weight.numpy() for weight in student.get_layer(f"quant_{name}").trainable_weights
                    if "kernel" in weight.name)

    kernels = {name: kernel(name) for name in four_bit}
    history = student.fit(inputs, targets, epochs=5, batch_size=32, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert student.evaluate(inputs, targets, batch_size=32, verbose=0) < 0.9 * before  # 1.00 -> 0.80 here.
    # Not the float bias of the 8-bit last layer alone, which could fit the offset: the 4-bit kernels train too.
    assert four_bit and all(np.abs(kernel(name) - before_training).max() > 1e-4
                            for name, before_training in kernels.items())


def test_per_channel_option_controls_conv_weight_ranges():
    per_channel, _ = quantize.quantize_student(build_tiny_teacher())
    per_tensor, _ = quantize.quantize_student(
        build_tiny_teacher(), quantize.QuantizationScheme(per_channel=False))

    def kernel_min_shape(student):
        layer = student.get_layer("quant_conv_2")
        return tuple([w for w in layer.weights if "kernel_min" in w.name][0].shape)

    assert kernel_min_shape(per_channel) == (16,)
    assert kernel_min_shape(per_tensor) == ()
    # As a student read back from its file tells it.
    assert quantize.weights_per_channel(per_channel) is True
    assert quantize.weights_per_channel(per_tensor) is False
    dense_only = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3)])
    assert quantize.weights_per_channel(quantize.quantize_student(dense_only)[0]) is None  # Nothing to tell by.


def test_rejects_subclassed_and_nested_models():
    class Subclassed(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(NUM_CLASSES)

        def call(self, inputs):
            return self.dense(inputs)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 4), np.float32))
    with pytest.raises(UserError, match="subclassed"):
        quantize.quantize_student(subclassed)

    inner = build_tiny_teacher()
    inputs = tf_keras.Input(INPUT_SHAPE)
    nested = tf_keras.Model(inputs, inner(inputs))
    with pytest.raises(UserError, match="nested"):
        quantize.quantize_student(nested)


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")  # Keras's, on the config.
def test_a_layer_with_a_lambda_as_its_activation_is_refused_in_one_line():
    # Keras could not make the layer again from its config: a 54-line traceback.
    for activation_layer in (tf_keras.layers.Activation(lambda x: 2 * x, name="doubled"),
                             tf_keras.layers.Dense(NUM_CLASSES, activation=lambda x: 2 * x, name="doubled")):
        inputs = tf_keras.Input(INPUT_SHAPE)
        features = tf_keras.layers.Flatten()(tf_keras.layers.Conv2D(2, 3)(inputs))
        doubled = tf_keras.Model(inputs, activation_layer(tf_keras.layers.Dense(NUM_CLASSES)(features)))
        with pytest.raises(UserError) as raised:
            quantize.quantize_student(doubled)
        assert str(raised.value) == (
            f"TF-MOT makes every layer again from its config, and layer 'doubled' ({type(activation_layer).__name__}) "
            "cannot be: its activation is a Python lambda, which Keras makes again only as a Lambda layer's function; "
            "give a named function, or compute it in a Lambda layer")


class _Scaled(tf_keras.layers.Layer):
    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return self.scale * inputs


class _ScaledWithoutItsScale(_Scaled):
    def get_config(self):  # Without the argument its __init__ needs.
        return {key: value for key, value in super().get_config().items() if key != "scale"}


def test_a_layer_of_the_users_own_class_quantizes_once_keras_can_find_it_by_name():
    inputs = tf_keras.Input(INPUT_SHAPE)
    scaled = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(_Scaled(2.0, name="scaled")(inputs)),
                            name="mine")
    # TF-MOT's transforms stopped with a traceback ending "'str' object is not callable".
    with pytest.raises(UserError) as raised:
        quantize.quantize_student(scaled)
    assert str(raised.value) == (
        "TF-MOT makes the teacher 'mine' again from its config, and Keras cannot find the class of its layer 'scaled' "
        "(_Scaled) by name; register it with @tf_keras.saving.register_keras_serializable() (a TeacherSource's "
        "custom_objects, or --teacher_custom_objects, registers a module's classes)")
    with tf_keras.saving.custom_object_scope({"_Scaled": _Scaled, "_ScaledWithoutItsScale": _ScaledWithoutItsScale}):
        student, float_layers = quantize.quantize_student(scaled)
        assert float_layers == ("scaled",)
        np.testing.assert_allclose(student(np.ones((1, *INPUT_SHAPE), np.float32)).numpy(),
                                   scaled(np.ones((1, *INPUT_SHAPE), np.float32)).numpy(), atol=0.05)
        # Found, but its config cannot make it again: Keras's own reason, in one line.
        incomplete = tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(
            _ScaledWithoutItsScale(2.0, name="scaled")(inputs)))
        with pytest.raises(UserError) as raised:
            quantize.quantize_student(incomplete)
    assert str(raised.value).startswith("TF-MOT makes every layer again from its config, and layer 'scaled' "
                                        "(_ScaledWithoutItsScale) cannot be: ")
    assert "scale" in str(raised.value) and "\n" not in str(raised.value)
