"""A classifier with a layer class of its own, tf_keras or Keras 3: refused with the way out, then
loaded, quantized and exported."""

import contextlib
import sys
import textwrap
import traceback

import numpy as np
import pytest

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import keras  # Keras 3, which TensorFlow installs.
import tensorflow as tf
import tf_keras

from tool_process import ToolProcess
from zscgan_tf import custom_objects, quantization_stages, teachers, tflite_model, train
from zscgan_tf.errors import UserError, first_line

LAYERS_MODULE = textwrap.dedent('''
    import tensorflow as tf
    import tf_keras


    class ChannelGate(tf_keras.layers.Layer):
        """Scales each channel by a learned factor: a layer TF-MOT does not know."""

        def build(self, input_shape):
            self.gate = self.add_weight(name="gate", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.gate


    def half_relu(x):
        return 0.5 * tf.nn.relu(x)


    def relu(x):
        """A helper that shares a name with Keras' own activation."""
        return tf.nn.relu6(x)
''')


@contextlib.contextmanager
def _user_module(path, text: str, registry: dict):
    """A user's module written to `path`; what registering it adds to `registry` is taken away afterwards."""
    path.write_text(text)
    before = dict(registry)
    try:
        yield str(path)
    finally:
        registry.clear()
        registry.update(before)
        sys.modules.pop(path.stem, None)


@pytest.fixture(name="layers_file")
def fixture_layers_file(tmp_path):
    """A user's module of tf_keras objects."""
    with _user_module(tmp_path / "my_layers.py", LAYERS_MODULE, tf_keras.utils.get_custom_objects()) as path:
        yield path


def _gated_classifier(gate_class):
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = gate_class(name="gate")(x)  # Named: an automatic name would depend on what ran before in the process.
    x = tf_keras.layers.Conv2D(6, 3, padding="same")(x)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(4)(x))


def test_register_imports_a_file_and_registers_the_keras_objects_it_defines(layers_file):
    registered = custom_objects.register([layers_file])

    # Not tf or tf_keras, which it imports, nor `relu`, which would replace Keras' own.
    assert sorted(registered) == ["ChannelGate", "half_relu"]
    assert tf_keras.activations.get("relu")(np.array([8.0])).numpy()[0] == 8.0
    assert tf_keras.utils.get_custom_objects()["ChannelGate"] is registered["ChannelGate"]
    layer = tf_keras.layers.deserialize({"class_name": "ChannelGate", "config": {"name": "gate"}})
    assert type(layer).__name__ == "ChannelGate"
    np.testing.assert_allclose(tf_keras.activations.get("half_relu")(np.array([-2.0, 2.0])), [0.0, 1.0])


CLIP_MODULE = textwrap.dedent('''
    import tensorflow as tf
    import tf_keras


    class Clip(tf_keras.layers.Layer):
        def call(self, inputs):
            if tf.reduce_max(inputs) > 1.0:  # A tensor condition: AutoGraph converts this from the source.
                return tf.minimum(inputs, 1.0)
            return inputs
''')


@pytest.mark.parametrize("lines_added", [0, 3])
@pytest.mark.parametrize("named_as", ["file", "dotted module"])
def test_a_module_edited_after_registering_is_traced_as_it_was_imported(tmp_path, monkeypatch, lines_added,
                                                                         named_as):
    # Hours into a run, the user edits their layer file; the run traces its layers later (export).
    package = tmp_path / "my_project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    module_name = "my_project.my_clip" if named_as == "dotted module" else "my_clip"
    with _user_module(package / "my_clip.py", CLIP_MODULE, tf_keras.utils.get_custom_objects()) as path:
        try:
            clip = custom_objects.register([path if named_as == "file" else module_name])["Clip"]
            with open(path, "w") as edited:
                edited.write("# edited\n" * lines_added + CLIP_MODULE.replace("1.0", "2.0"))
            inputs = tf_keras.Input((3,))
            model = tf_keras.Model(inputs, clip()(inputs))
            # Read from the file as it is now, the trace either failed (lines moved) or clipped at 2.
            np.testing.assert_allclose(tf.function(model)(tf.constant([[0.5, 3.0, 1.5]])), [[0.5, 1.0, 1.0]])
            assert clip.__module__ == module_name and sys.modules[module_name].__file__ == path
            assert clip.call.__code__.co_filename == path + " (as imported)"
            if named_as == "dotted module":
                import my_project.my_clip  # pylint: disable=import-outside-toplevel
                assert my_project.my_clip.Clip is clip
        finally:
            for name in ("my_project.my_clip", "my_project"):
                sys.modules.pop(name, None)


SCALED_MODULE = textwrap.dedent('''
    import os

    import tensorflow as tf

    # A setting kept in a file beside the module, found through __file__.
    with open(os.path.join(os.path.dirname(__file__), "scale.txt")) as scale_file:
        SCALE = float(scale_file.read())


    def scaled_relu(x):
        if tf.reduce_min(x) < 0.0:
            raise ValueError("negative input")
        return SCALE * tf.nn.relu(x)
''')


def test_a_module_finds_files_beside_it_and_its_tracebacks_show_the_text_as_imported(tmp_path):
    (tmp_path / "scale.txt").write_text("3.0")
    with _user_module(tmp_path / "my_activations.py", SCALED_MODULE, tf_keras.utils.get_custom_objects()) as path:
        scaled_relu = custom_objects.register([path])["scaled_relu"]
        assert sys.modules["my_activations"].__file__ == path
        np.testing.assert_allclose(scaled_relu(tf.constant([2.0])), [6.0])
        with open(path, "w") as edited:
            edited.write("# edited\n" * 2 + SCALED_MODULE)
        with pytest.raises(ValueError) as raised:
            scaled_relu(tf.constant([-1.0]))
        frame = traceback.extract_tb(raised.value.__traceback__)[-1]
        assert frame.filename == path + " (as imported)"
        assert frame.line == 'raise ValueError("negative input")'


def test_register_errors_name_the_module_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^custom objects file '.*missing.py' does not exist$"):
        custom_objects.register([str(tmp_path / "missing.py")])
    with pytest.raises(UserError, match=r"^cannot import custom objects from 'no_such_package.layers': "
                                        r"ModuleNotFoundError: No module named 'no_such_package'$"):
        custom_objects.register(["no_such_package.layers"])
    broken = tmp_path / "broken.py"
    broken.write_text("import tf_keras\nraise RuntimeError('needs a licence key')\n")
    with pytest.raises(UserError, match=r"broken.py': RuntimeError: needs a licence key$"):
        custom_objects.register([str(broken)])
    empty = tmp_path / "constants.py"
    empty.write_text("WIDTH = 3\n")
    with pytest.raises(UserError, match="defines no Keras layer, other Keras class or function"):
        custom_objects.register([str(empty)])
    exits = tmp_path / "exits.py"  # A script's `sys.exit` used to end the command with its status and no word.
    exits.write_text("import sys\nsys.exit(5)\n")
    with pytest.raises(UserError, match=r"exits.py': it called sys.exit\(5\) when imported$"):
        custom_objects.register([str(exits)])
    without_suffix = tmp_path / "layers"  # A file, but not a .py one: not "No module named '/tmp/.../layers'".
    without_suffix.write_text("import tf_keras\n")
    with pytest.raises(UserError, match=r"^custom objects '.*layers' is neither a .py file nor a module name"):
        custom_objects.register([str(without_suffix)])


def test_an_activation_function_keras_does_not_know_is_named_and_a_compiled_loss_is_not(tmp_path):
    import tensorflow as tf
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.BatchNormalization()(
        tf_keras.layers.Conv2D(4, 3)(inputs)))
    model = tf_keras.Model(inputs, tf_keras.layers.Activation(tf.nn.log_softmax)(tf_keras.layers.Dense(3)(x)))
    model.compile("adam", loss=lambda labels, outputs: tf.reduce_mean(outputs))  # Saved as '__lambda__'.
    path = str(tmp_path / "log_softmax.keras")
    model.save(path)
    # Before: "it uses classes '__lambda__', 'function'", the loss (which is not loaded) and no name.
    with pytest.raises(UserError, match=r"^cannot load model '.*log_softmax.keras': it uses function "
                                        r"'log_softmax_v2', which Keras does not know; pass --teacher_custom_objects="):
        teachers.load_teacher(teachers.TeacherSource(model=path), progress=False)


def test_a_lambda_activation_no_loader_can_rebuild_is_named_without_its_bytecode(tmp_path):
    import tensorflow as tf
    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.BatchNormalization()(tf_keras.layers.Conv2D(4, 3)(inputs))
    x = tf_keras.layers.Activation(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0, name="hard_swish")(x)
    path = str(tmp_path / "lambda_activation.keras")
    tf_keras.Model(inputs, tf_keras.layers.Dense(3)(tf_keras.layers.GlobalAveragePooling2D()(x))).save(path)
    # Before: "Error when deserializing class 'Activation' using config={... 'value': ['4wEAAAAA..." (300 characters
    # of bytecode), trusted or not.
    for trusted in (False, True):
        with pytest.raises(UserError) as refusal:
            teachers.load_teacher(teachers.TeacherSource(model=path, trust_model_code=trusted), progress=False)
        assert str(refusal.value) == (
            f"cannot load model {path!r}: its Activation layer 'hard_swish' holds a Python function saved as bytecode "
            "(a lambda given as its activation, say), which Keras cannot load; save the model with a Keras activation "
            "there, or with a named function of your own (registered with tf_keras.saving.register_keras_serializable; "
            "then pass --teacher_custom_objects=<the module or .py file that defines it>)")


def test_a_teacher_with_its_own_layer_runs_through_the_pipeline_and_its_student_exports(layers_file, tmp_path,
                                                                                         capsys):
    gate_class = custom_objects.register([layers_file])["ChannelGate"]
    teacher_path = str(tmp_path / "gated.keras")
    _gated_classifier(gate_class).save(teacher_path)
    tf_keras.utils.get_custom_objects().pop("ChannelGate")  # As in a fresh process that has not imported it.

    with pytest.raises(UserError, match=r"^cannot load model '.*gated.keras': it uses class 'ChannelGate', which "
                                        r"Keras does not know; pass --teacher_custom_objects=<the module or .py file "
                                        r"that defines it>$"):
        teachers.load_teacher(teachers.TeacherSource(model=teacher_path), progress=False)

    work_dir = tmp_path / "run"
    status = train.main(["train", f"--teacher={teacher_path}", f"--teacher_custom_objects={layers_file}",
                         f"--work_dir={work_dir}", "--generator_steps=2", "--batch_size=8", "--noise_dim=8",
                         "--generator_channels=8", "--distillation_steps=1", "--distillation_batch_size=8",
                         "--calibration_samples=16", "--eval_samples_per_class=1", "--latency_runs=1",
                         "--eval_dataset=none", "--noprogress"])

    assert status == 0, capsys.readouterr().err
    assert ("1 layer TF-MOT cannot quantize stays float (listed in report.md): 1 ChannelGate (gate)"
            in capsys.readouterr().out)
    for name in ("ptq_int8.tflite", "qat_int8.tflite"):
        with open(work_dir / name, "rb") as model_file:
            assert tflite_model.inspect_tflite(model_file.read()).is_fully_integer, name
    # A fresh process needs the module again to read the saved student, and is told so. The refusal is the first
    # call of a process of its own; the export that follows shares it (another process started TensorFlow again).
    convert = [f"--student={work_dir / 'student.h5'}", f"--generator={work_dir / 'generator.keras'}",
               f"--output={tmp_path / 'student.tflite'}"]
    with ToolProcess("convert") as convert_process:
        refused = convert_process(*convert)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines()[-1].endswith(
            "it uses layer 'ChannelGate', which Keras does not know; pass --teacher_custom_objects=<the module or .py "
            "file that defines it>")
        exported = convert_process(*convert, f"--teacher_custom_objects={layers_file}")
    assert exported.returncode == 0, exported.stderr
    with open(tmp_path / "student.tflite", "rb") as model_file:
        assert tflite_model.inspect_tflite(model_file.read()).is_fully_integer


KERAS3_LAYERS_MODULE = textwrap.dedent('''
    import keras


    class ChannelGain(keras.layers.Layer):
        """A Keras 3 layer of a user's own, not registered with Keras: each channel times a learned gain."""

        def build(self, input_shape):
            self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.gain
''')


@pytest.fixture(name="keras3_layers_file")
def fixture_keras3_layers_file(tmp_path):
    """A user's module of Keras 3 layers."""
    registry = keras.saving.get_custom_objects()
    with _user_module(tmp_path / "my_keras3_layers.py", KERAS3_LAYERS_MODULE, registry) as path:
        yield path


def test_a_keras3_teacher_with_its_own_layer_runs_it_as_it_is_and_exports_integer(keras3_layers_file, tmp_path,
                                                                                    capsys):
    registered = custom_objects.register([keras3_layers_file])
    assert list(registered) == ["ChannelGain"]  # Registered with Keras 3, whose models need it, not with tf_keras.
    assert keras.saving.get_custom_objects()["ChannelGain"] is registered["ChannelGain"]
    assert "ChannelGain" not in tf_keras.utils.get_custom_objects()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, padding="same")(inputs)))
    x = registered["ChannelGain"](name="gain")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3, padding="same")(x))
    teacher_path = str(tmp_path / "gained.keras")
    keras.Model(inputs, keras.layers.Dense(4)(x)).save(teacher_path)
    keras.saving.get_custom_objects().pop("ChannelGain")  # As in a fresh process that has not imported it.
    work_dir = tmp_path / "run"

    status = train.main(["train", f"--teacher={teacher_path}", f"--teacher_custom_objects={keras3_layers_file}",
                         f"--work_dir={work_dir}", "--generator_steps=2", "--batch_size=8", "--noise_dim=8",
                         "--generator_channels=8", "--distillation_steps=1", "--distillation_batch_size=8",
                         "--calibration_samples=16", "--eval_samples_per_class=1", "--latency_runs=1",
                         "--eval_dataset=none", "--noprogress"])

    assert status == 0, capsys.readouterr().err
    assert ("1 layer TF-MOT cannot quantize stays float (listed in report.md): 1 Keras 3 ChannelGain (gain)"
            in capsys.readouterr().out)
    assert "Layers left float by TF-MOT: gain." in (work_dir / "report.md").read_text()
    for name in ("ptq_int8.tflite", "qat_int8.tflite"):
        with open(work_dir / name, "rb") as model_file:
            assert tflite_model.inspect_tflite(model_file.read()).is_fully_integer, name
    # Without the module, the saved student's layer cannot be made again, and the message says what to pass,
    # not the whole config tf_keras' own message quotes.
    keras.saving.get_custom_objects().pop("ChannelGain")
    with pytest.raises(TypeError) as refusal:
        quantization_stages.load_student(str(work_dir / "student.h5"))
    assert first_line(refusal.value) == ("cannot recreate Keras 3 layer 'ChannelGain', whose class Keras 3 does not "
                                         "know; pass --teacher_custom_objects=<the module or .py file that defines it>")
    # A fresh process reads the saved student with the module the run recorded, once the command names it too:
    # a run directory from someone else chose the code that ran (its config.json names the module). The refusal is
    # the first call of a process of its own; the export that follows shares it.
    convert = [f"--run_dir={work_dir}", f"--output={tmp_path / 'student.tflite'}"]
    with ToolProcess("convert") as convert_process:
        refused = convert_process(*convert)
        assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
            f"error: the run in {str(work_dir)!r} loaded its teacher with code that runs as it loads; to convert it, "
            f"pass --teacher_custom_objects={keras3_layers_file} (Python modules of its layers), only if you trust "
            "that code and this directory's author")
        exported = convert_process(*convert, f"--teacher_custom_objects={keras3_layers_file}")
    assert exported.returncode == 0, exported.stderr
    with open(tmp_path / "student.tflite", "rb") as model_file:
        assert tflite_model.inspect_tflite(model_file.read()).is_fully_integer
