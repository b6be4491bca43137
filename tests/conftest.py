"""Shared tiny models for the tests: fast on 2 CPU cores, real Conv+BN graphs."""

import contextlib
import functools
import gzip
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest

import zscgan_tf  # noqa: F401  Sets TF_USE_LEGACY_KERAS before TensorFlow loads.
import tf_keras

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "distutils Version classes are deprecated", DeprecationWarning)
    import tensorflow_model_optimization  # noqa: F401  Its import warns of its own use of distutils.

from zscgan_tf import bn_stats, reproducibility, stop_signals, teacher_recipes, teacher_training, teachers
from zscgan_tf.preprocessing import Preprocessing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Deprecation warnings that libraries raise from their own code, which nothing in this
# package can change; they filled the suite's summary (200 of them; 13,191 on Python 3.13,
# where gast, which AutoGraph parses code with, passes AST nodes keyword arguments that
# Python 3.15 will refuse). TF-MOT's comes once, on import, which happens here, before
# pytest_configure.
THIRD_PARTY_DEPRECATIONS = (
    r"ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning:keras",
    r"ignore:.*got an unexpected keyword argument '___pyct_anno':DeprecationWarning:gast",
)
# What tests do on purpose, of which the libraries warn (the package keeps them out of its own
# output): models saved as HDF5, whose reading they test; TFLite's converter driven directly
# on QAT models; Lambda layers serialized, whose refusal they test. They were the suite's 20
# warnings, so that one from the package would not have stood out.
DELIBERATE_TEST_WARNINGS = (
    r"ignore:You are saving your model as an HDF5 file:UserWarning",
    r"ignore:Statistics for quantized inputs were expected:UserWarning",
    r"ignore:The object being serialized includes a `lambda`:UserWarning",
)


def pytest_configure(config):
    for line in THIRD_PARTY_DEPRECATIONS + DELIBERATE_TEST_WARNINGS:
        config.addinivalue_line("filterwarnings", line)
    # The suite started in the background of a shell script inherits SIGINT ignored (under nohup,
    # SIGHUP), and the package rightly leaves an ignored stop signal ignored (`stop_signals`); the
    # tests of Ctrl-C and hangups, in this process and in the commands it starts, need them as a
    # terminal gives them. Five of them failed so, on a `.ci/run` started with `&`.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    # The commands' default (--deterministic), which the first test running one in this process turned on
    # for the rest of the process: a test's results depended on which files its worker ran before it (the
    # tiny teacher trained once a worker came out 0.12 apart in a weight).
    reproducibility.enable_deterministic_execution()


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytests_directory(tmp_path_factory):
    """Temporary files of the tests, and of the processes they start (TMPDIR), go into pytest's
    own temporary directory, which pytest prunes, rather than /tmp.

    Some are never removed: TensorFlow's autograph writes the code it generates to temporary
    files and removes them at exit, which a process the tests kill never reaches; and TFDS
    leaves an empty directory each time it looks for a dataset's information that is not on
    disk. Each run of the suite left about 50 files and 10 directories in /tmp.
    """
    directory = str(tmp_path_factory.mktemp("tmp"))
    previous_environment, previous_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = directory, directory
    yield
    tempfile.tempdir = previous_tempdir
    if previous_environment is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = previous_environment


@pytest.fixture(scope="session", autouse=True)
def _teacher_cache_under_pytests_directory(tmp_path_factory):
    """Built-in teachers that tests (and the commands they start) train go into a cache of the
    session's own: a test used the user's ~/.cache/zscgan_tf/teachers, training one there or
    taking whatever file it found."""
    previous = os.environ.get(teacher_recipes.CACHE_ENVIRONMENT_VARIABLE)
    os.environ[teacher_recipes.CACHE_ENVIRONMENT_VARIABLE] = str(tmp_path_factory.mktemp("teacher_cache"))
    yield
    if previous is None:
        del os.environ[teacher_recipes.CACHE_ENVIRONMENT_VARIABLE]
    else:
        os.environ[teacher_recipes.CACHE_ENVIRONMENT_VARIABLE] = previous


IDX_UINT8_TYPE_CODE = 0x08


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` as an IDX file of unsigned bytes holds it."""
    header = bytes([0, 0, IDX_UINT8_TYPE_CODE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_file(path, content: bytes, compressed: bool) -> str:
    """Writes `content` to `path`, gzipped to `path`.gz when `compressed`; returns the path written."""
    path = str(path) + (".gz" if compressed else "")
    with (gzip.open if compressed else open)(path, "wb") as stream:
        stream.write(content)
    return path


def write_idx_split(directory, prefix: str, images: np.ndarray, labels: np.ndarray, compressed: bool) -> None:
    """One split of an IDX dataset, named as MNIST's files are: `<prefix>-images-idx3-ubyte[.gz]`, ..."""
    write_file(directory / f"{prefix}-images-idx3-ubyte", idx_bytes(images), compressed)
    write_file(directory / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), compressed)


def build_tiny_classifier(input_shape=(8, 8, 1), num_classes=4, seed=0, softmax=False):
    """Conv-BN-ReLU, DepthwiseConv-BN-ReLU, GAP, Dense-BN, Dense: BN after all three kinds."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(input_shape, name="image")
    x = tf_keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="conv_bn")(x)
    x = tf_keras.layers.ReLU(name="conv_relu")(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = tf_keras.layers.BatchNormalization(name="depthwise_bn")(x)
    x = tf_keras.layers.ReLU(name="depthwise_relu")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = tf_keras.layers.Dense(8, name="dense")(x)
    x = tf_keras.layers.BatchNormalization(name="dense_bn")(x)
    x = tf_keras.layers.ReLU(name="dense_relu")(x)
    outputs = tf_keras.layers.Dense(num_classes, activation="softmax" if softmax else None, name="logits")(x)
    model = tf_keras.Model(inputs, outputs, name="tiny")
    randomize_batchnorm_statistics(model, seed)
    return model


def build_two_block_classifier(input_shape=(16, 16, 1), num_classes=10, seed=0, extra_layer=None):
    """Two Conv+BN+ReLU blocks, global average pooling, Dense logits.

    `extra_layer` inserts a layer TF-MOT cannot quantize: "rescaling" at the input,
    "lambda" or an `Activation` of that name ("elu", "selu", "softplus", ...) after the
    first block; "selu_conv" gives the second conv a fused selu (and no BN).
    """
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(input_shape, name="image")
    x = inputs
    if extra_layer == "rescaling":
        x = tf_keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescaling")(x)
    x = tf_keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_1")(x)
    x = tf_keras.layers.BatchNormalization(name="bn_1")(x)
    x = tf_keras.layers.ReLU(name="relu_1")(x)
    if extra_layer == "lambda":
        x = tf_keras.layers.Lambda(lambda tensor: tensor * 0.5, name="lambda")(x)
    elif extra_layer in ("elu", "selu", "softplus", "mish", "hard_sigmoid", "gelu"):
        x = tf_keras.layers.Activation(extra_layer, name=extra_layer)(x)
    if extra_layer == "selu_conv":
        x = tf_keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="selu",
                                   name="conv_2")(x)
    else:
        x = tf_keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False,
                                   name="conv_2")(x)
        x = tf_keras.layers.BatchNormalization(name="bn_2")(x)
    x = tf_keras.layers.ReLU(name="relu_2")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="tiny_teacher")


def build_student_failing_classifier(kind: str, num_classes: int = 4):
    """A small classifier of 8x8x1 images whose QAT student fails where the teacher's own
    int8 conversion does not: "shared_conv", one Conv2D applied twice (TF-MOT refuses the
    BatchNormalization after it); "bn_axis_1", a BatchNormalization over the rows of an NHWC
    tensor (the W8A8 student keeps a float op)."""
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 1))
    if kind == "shared_conv":
        conv = tf_keras.layers.Conv2D(1, 3, padding="same", name="shared")
        x = tf_keras.layers.BatchNormalization()(conv(tf_keras.layers.BatchNormalization()(conv(inputs))))
    else:
        x = tf_keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = tf_keras.layers.BatchNormalization(axis=1)(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.ReLU()(x))
    return tf_keras.Model(inputs, tf_keras.layers.Dense(num_classes)(x))


def build_hard_swish_classifier(input_shape=(8, 8, 3), num_classes=4, seed=0, spatial_size=1):
    """MobileNetV3's blocks in small: Conv+BN, hard-swish, squeeze-excite, Dense logits.

    hard-swish is `x * ReLU6(x + 3) / 6`, as `tf_keras.applications.MobileNetV3` builds
    it: TFOpLambda arithmetic and a `Multiply`; squeeze-excite pools, gates and scales
    with another `Multiply`. The conv's stride leaves a `spatial_size` square map: 1 is
    what MobileNetV3's last blocks see at 32x32 input.
    """
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(input_shape, name="image")
    x = tf_keras.layers.Conv2D(8, 3, strides=input_shape[0] // spatial_size, padding="same",
                               use_bias=False, name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    gate = tf_keras.layers.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)
    x = tf_keras.layers.Multiply(name="hard_swish")([x, gate])
    squeeze = tf_keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    squeeze = tf_keras.layers.Conv2D(8, 1, activation="sigmoid", name="excite_conv")(squeeze)
    x = tf_keras.layers.Multiply(name="excite")([x, squeeze])
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(num_classes, name="logits")(x)
    model = tf_keras.Model(inputs, outputs, name="hard_swish_classifier")
    randomize_batchnorm_statistics(model, seed)
    return model


def build_merge_layer_classifier(input_shape=(8, 8, 1), num_classes=4, seed=0):
    """Two Conv+BN branches joined by Multiply, Subtract, Maximum and Minimum."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(input_shape, name="image")
    branches = []
    for name in ("left", "right"):
        x = tf_keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name=f"{name}_conv")(inputs)
        branches.append(tf_keras.layers.BatchNormalization(name=f"{name}_bn")(x))
    product = tf_keras.layers.Multiply(name="multiply")(branches)
    difference = tf_keras.layers.Subtract(name="subtract")(branches)
    x = tf_keras.layers.Maximum(name="maximum")([product, difference])
    x = tf_keras.layers.Minimum(name="minimum")([x, branches[0]])
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(num_classes, name="logits")(x)
    model = tf_keras.Model(inputs, outputs, name="merge_layer_classifier")
    randomize_batchnorm_statistics(model, seed)
    return model


@contextlib.contextmanager
def pinned_to_one_cpu():
    """Pins the calling thread to one CPU of its CPU set for the block, as `taskset -c 3` pins a
    process, and restores its set after."""
    cpu_set = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cpu_set)})
        yield
    finally:
        os.sched_setaffinity(0, cpu_set)


def write_cgroup_tree(tmp_path, own_cgroup: str, files: dict):
    """A cgroup mount under `tmp_path` holding `files` (path under the mount: text), and a
    /proc/self/cgroup naming `own_cgroup`; returns (mount root, own-cgroup file) as strings."""
    root = tmp_path / "cgroup"
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    (tmp_path / "self_cgroup").write_text(own_cgroup + "\n")
    return str(root), str(tmp_path / "self_cgroup")


def bn_input_moments(model, layer, images):
    """The float64 per-channel mean and population variance of BN `layer`'s input over `images`,
    the model in inference mode: what `bn_stats.reestimate_batchnorm_statistics` must store."""
    import tensorflow as tf

    outputs = tf_keras.Model(model.inputs, layer.input)(images, training=False)
    axes = list(range(outputs.shape.rank - 1))
    mean, variance = tf.nn.moments(tf.cast(outputs, tf.float64), axes=axes)
    return mean.numpy(), variance.numpy()


def randomize_batchnorm_statistics(model, seed=0):
    """Gives BN layers non-trivial moving statistics, as a trained model has."""
    random = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(random.normal(0.0, 0.5, channels).astype("float32"))
            layer.moving_variance.assign(random.uniform(0.5, 2.0, channels).astype("float32"))


def quadrant_images(samples_per_class, seed=0, size=8):
    """Pixels in [0, 255]: class k is bright in quadrant k, with noise. A real, learnable task."""
    random = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), samples_per_class)
    images = random.uniform(0, 80, (len(labels), size, size, 1))
    half = size // 2
    for index, label in enumerate(labels):
        row, column = divmod(label, 2)
        images[index, row * half:(row + 1) * half, column * half:(column + 1) * half] += 150
    return images.astype("float32"), labels


@functools.lru_cache(maxsize=None)
def _trained_tiny_classifier_weights(seed):
    model = build_tiny_classifier(seed=seed)
    images, labels = quadrant_images(128, seed)
    model.compile(tf_keras.optimizers.Adam(1e-2),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    inputs = Preprocessing("tf").apply(images)
    model.fit(inputs, labels, batch_size=32, epochs=4, verbose=0)
    # Four epochs are too few for BN's moving averages; the teacher must be right in inference mode.
    bn_stats.reestimate_batchnorm_statistics(model, inputs, batch_size=64)
    return model.get_weights()


def tiny_teacher(input_shape=(8, 8, 1), num_classes=4, seed=0, preprocessing="tf", trained=True):
    """A frozen tiny `Teacher`; trained on `quadrant_images` so its BN statistics are real ones."""
    model = build_tiny_classifier(input_shape, num_classes, seed)
    if trained:
        model.set_weights(_trained_tiny_classifier_weights(seed))
    model.trainable = False
    return teachers.Teacher(model=model, preprocessing=Preprocessing(preprocessing), image_shape=tuple(input_shape),
                            num_classes=num_classes, name="tiny", description={})


@pytest.fixture
def hangup_and_outputs_restored(monkeypatch):
    """A test may send SIGHUP to this process, or close its output: after it, the process is as if
    it had not (SIGHUP's handler, and stdout and stderr, which either may have sent to /dev/null)."""
    handler = signal.getsignal(signal.SIGHUP)
    outputs = {descriptor: os.dup(descriptor) for descriptor in stop_signals.OUTPUTS}
    monkeypatch.setattr(stop_signals, "_hung_up", False)
    yield
    signal.signal(signal.SIGHUP, handler)
    for descriptor, saved in outputs.items():
        os.dup2(saved, descriptor)
        os.close(saved)


@pytest.fixture
def teacher():
    return tiny_teacher()


@pytest.fixture(scope="session")
def _tiny_teacher_file_saved_once(tmp_path_factory):
    """The files `tiny_teacher_file` copies for each test."""
    path = str(tmp_path_factory.mktemp("tiny_teacher") / "tiny_teacher.keras")
    teacher_training.save_teacher(build_tiny_classifier(), path, Preprocessing("tf"), dataset="synthetic",
                                  class_names=["a", "b", "c", "d"], metrics=None)
    assert os.path.exists(path + ".json")
    return path


@pytest.fixture
def tiny_teacher_file(tmp_path, _tiny_teacher_file_saved_once):
    """A saved tiny teacher with its sidecar, as tools/train_teacher.py writes them: a copy, in the test's own
    directory, of the one saved once a session (`build_tiny_classifier()` is the same model each time; building and
    saving it again took 0.15 s for each of some 190 tests)."""
    path = str(tmp_path / "tiny_teacher.keras")
    shutil.copy(_tiny_teacher_file_saved_once, path)
    shutil.copy(_tiny_teacher_file_saved_once + ".json", path + ".json")
    # Building it seeded Python's, numpy's and TensorFlow's random numbers, which the tests after had as a fixed start.
    tf_keras.utils.set_random_seed(0)
    return path


@contextlib.contextmanager
def lock_held_by_another_process(directory, what="run", shared=False):
    """`files.exclusive_use(directory, what, shared=shared)` held by a child process through the
    block, or until its stdin is closed; yields the child (a `subprocess.Popen`). Within one
    process the lock would be taken again at once."""
    hold = ("import sys\nfrom zscgan_tf import files\n"
            "with files.exclusive_use(sys.argv[1], what=sys.argv[2], shared=sys.argv[3] == 'shared'):\n"
            "    print('held', flush=True)\n    sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", hold, str(directory), what, "shared" if shared else "exclusive"],
                             cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.stdin.close()  # Ends its block, and it.
        child.wait(timeout=60)


# Files of a run that name its teacher's path or its work directory: a copy of the run names the copy's.
_RUN_TEXT_SUFFIXES = (".json", ".md", ".txt", ".cfg")


@pytest.fixture(scope="session")
def finished_run_copy(tmp_path_factory):
    """`copy(key, train, teacher_file, work_dir)` puts in `work_dir` a copy of a finished run that
    `train(teacher_file, work_dir)` makes: made once a session for each `key` (in a directory of its
    own, against a copy of the first caller's teacher), then copied for each test that starts from it,
    so that each test still has a run of its own to change. The copy names `teacher_file` and
    `work_dir` wherever the run named its own teacher and directory (config.json, report.json,
    export_report.md): it is the run `train(teacher_file, work_dir)` would have left there, but for
    its timings and the timestamps inside its zip files. `teacher_file` must have the weights and
    preprocessing of the teacher the run was made with (as every `tiny_teacher_file` has). With the
    test's `capsys`, what the shared run printed is left out of the test's output."""
    made = {}

    def copy(key, train, teacher_file, work_dir, capsys=None):
        teacher_file, work_dir = str(teacher_file), str(work_dir)
        if key not in made:
            directory = tmp_path_factory.mktemp("finished_run")
            teacher = str(directory / os.path.basename(teacher_file))
            for suffix in ("", ".json"):
                if os.path.exists(teacher_file + suffix):
                    shutil.copy2(teacher_file + suffix, teacher + suffix)
            earlier = capsys.readouterr() if capsys else None
            train(teacher, str(directory / os.path.basename(work_dir)))
            if capsys:
                capsys.readouterr()
                sys.stdout.write(earlier.out), sys.stderr.write(earlier.err)
            made[key] = directory, teacher, str(directory / os.path.basename(work_dir))
        directory, teacher, run = made[key]
        shutil.copytree(run, work_dir)
        for folder, _, names in os.walk(work_dir):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as file:
                    contents = file.read()
                if str(directory).encode() not in contents:
                    continue
                assert name.endswith(_RUN_TEXT_SUFFIXES), f"{path} names the run's own paths and is not text"
                text = contents.decode().replace(teacher, teacher_file).replace(run, work_dir)
                assert str(directory) not in text, path
                with open(path, "wb") as file:
                    file.write(text.encode())
        return work_dir

    return copy
