"""tools/architecture_check.py as users run it: a real process, started as a script by the first test; the Keras 3
check and the refusals of bad input share one other (tests/tool_process.py), which calls `main` afresh for each."""

import ast
import json
import os
import subprocess
import sys

import pytest

from tool_process import ToolProcess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check(*arguments):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "architecture_check.py"), *arguments],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def check_process():
    """For the Keras 3 check and the refusals of bad input: one process runs them all (each process of its own
    started Python with TensorFlow again, 5 to 9 s on 2 cores)."""
    with ToolProcess("architecture_check") as process:
        yield process


def test_prints_a_row_per_architecture_with_both_int8_exports():
    result = _check("--architectures=MobileNet:32,InceptionV3:32", "--calibration_samples=2")
    # One does not go through: 1, as a script running the check before a long run reads it (it was 0).
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "1 of 2 do not go through: InceptionV3 32x32"
    # Each architecture is named as it starts: a row shows only once it is done (a minute for ResNet50).
    assert [line for line in result.stderr.splitlines() if line.startswith("checking ")] == [
        "checking MobileNet 32x32 (1 of 2)", "checking InceptionV3 32x32 (2 of 2)"]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| architecture | layers TF-MOT leaves float | QAT step | QAT int8 fully integer")
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert cells[:5] == ["MobileNet 32x32", "none", "yes", "yes", "yes"] and int(cells[5]) > 0
    # An architecture that refuses the size gets its row, and the table goes on.
    assert rows[2].startswith("| InceptionV3 32x32 | error: Input size must be at least 75x75")


def test_keras3_models_are_checked_as_the_pipeline_reads_keras3_files(check_process):
    # The first call to the shared process: the models are built there as in a fresh one.
    result = check_process("--keras=3", "--architectures=MobileNetV2:32", "--calibration_samples=2")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert cells[:5] == ["MobileNetV2 32x32", "none", "yes", "yes", "yes"]
    result = check_process("--keras=3", "--architectures=RegNetX002:32")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 'RegNetX002' is not a keras.applications model (e.g. MobileNetV3Small)")


def test_bad_architecture_is_one_line_and_exit_2(check_process):
    result = check_process("--architectures=NotAModel:32")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 'NotAModel' is not a tf_keras.applications model (e.g. MobileNetV3Small)")
    result = check_process("--architectures=MobileNet")
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 'MobileNet': give the input size as Name:size, e.g. MobileNet:32")
    result = check_process("--architectures=")  # Printed an empty table and exited 0.
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.strip().splitlines()[-1] == "error: --architectures names no architecture"


# The tool's own functions, called in a process other than this one, where importing the tool would define its absl
# flags beside the pipeline's. One process runs the scripts of the two tests below, each apart (its own globals and
# output): a process for each started Python with TensorFlow again (5 s on 2 cores), most of their time.
_SCRIPTS = {
    "logits_head": (
        "import sys; sys.path.insert(0, 'tools'); import architecture_check, numpy as np, tf_keras; "
        "model = tf_keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3), classes=4); "
        "x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)); "
        "probabilities = model(x).numpy(); "
        "teacher = architecture_check._as_teacher(model, x); "
        "bn = [layer for layer in teacher.layers if isinstance(layer, tf_keras.layers.BatchNormalization)]; "
        "print(np.allclose(probabilities.sum(1), 1), np.allclose(teacher(x).numpy().sum(1), 1), "
        "teacher.trainable, len(bn) == 27 and all(np.any(layer.moving_variance.numpy() != 1) for layer in bn))"),
    "float_ops_cell": (
        "import sys; sys.path.insert(0, 'tools'); import architecture_check, numpy as np, tf_keras; "
        "from zscgan_tf import representative_data; "
        "inputs = tf_keras.Input((8, 8, 1)); "
        "outputs = tf_keras.layers.Dense(2)(tf_keras.layers.Flatten()(tf_keras.layers.Activation('elu')("
        "tf_keras.layers.Conv2D(2, 3)(inputs)))); "
        "samples = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32); "
        "print(architecture_check._export(tf_keras.Model(inputs, outputs), "
        "representative_data.representative_dataset_from_array(samples)))"),
}
# Runs each script of the JSON object in argv[1]; prints one JSON object: each name's [its output, its traceback].
_RUN_EACH = """
import contextlib, io, json, sys, traceback
answers = {}
for name, script in json.loads(sys.argv[1]).items():
    printed, failure = io.StringIO(), ""
    with contextlib.redirect_stdout(printed):
        try:
            exec(script, {"__name__": "__main__"})
        except BaseException:
            failure = traceback.format_exc()
    answers[name] = [printed.getvalue(), failure]
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def script_outputs():
    """Each of `_SCRIPTS`' output (stdout) by name; a script that raised fails the test that reads it."""
    result = subprocess.run([sys.executable, "-c", _RUN_EACH, json.dumps(_SCRIPTS)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])

    def output(name):
        printed, failure = answers[name]
        assert not failure, failure[-2000:]
        return printed
    return output


def test_architectures_are_checked_with_the_logits_head_a_run_gives_them(script_outputs):
    printed = script_outputs("logits_head")
    # Without the softmax the pipeline takes off a teacher (it was checked with it), and with BN statistics of the
    # inputs, not an untrained model's 0 and 1, with which Xception's activations shrank until LiteRT refused its file.
    assert printed.split() == ["True", "False", "False", "True"]


def test_a_cell_names_the_float_ops_without_the_library_s_hint(script_outputs):
    # Before: "no: ... Pass allow_float_ops=Tr", cut, and naming an argument this tool has no flag for.
    cell, size = ast.literal_eval(script_outputs("float_ops_cell").strip().splitlines()[-1])
    assert cell.startswith("no: int8 export of ") and "ELU (#" in cell and size == "-"
    assert cell.endswith("; input int8, output int8.") and "Pass" not in cell
