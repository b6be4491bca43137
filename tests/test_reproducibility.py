"""Deterministic execution: a compiled generator run repeats exactly; on a GPU, BN runs unfused in training steps."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from zscgan_tf import distill, distilled_data, quantize, reproducibility, zero_shot
from zscgan_tf import generator as generator_lib
from zscgan_tf.config import DistillationConfig, GeneratorTrainingConfig, LossConfig

from conftest import tiny_teacher

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Two trainers with the same seeds, in one process with deterministic execution on.
_SCRIPT = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import zscgan_tf
import tensorflow as tf
from zscgan_tf import reproducibility, zero_shot
from zscgan_tf import generator as generator_lib
from zscgan_tf.config import GeneratorTrainingConfig, LossConfig
from conftest import tiny_teacher
reproducibility.enable_deterministic_execution()
teacher = tiny_teacher()

def losses():
    tf.keras.utils.set_random_seed(0)
    spec = generator_lib.GeneratorSpec(teacher.num_classes, teacher.image_shape, noise_dim=16, base_channels=16)
    trainer = zero_shot.GeneratorTrainer(teacher, generator_lib.build_generator(spec, teacher.preprocessing),
                                         LossConfig(), GeneratorTrainingConfig(batch_size=32, learning_rate=1e-2))
    return [trainer.train_step()["total"] for _ in range(8)]

first, second = losses(), losses()
print("RESULT", first == second, first[0] != first[-1])
"""


def test_compiled_generator_training_repeats_exactly():
    script = _SCRIPT.format(repo=REPO_ROOT, tests=TESTS_DIR)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "RESULT True True" in completed.stdout


# TensorFlow's GPU kernel for this op raises UnimplementedError under op determinism (its CPU
# kernel does not check), so the graphs are inspected for it rather than run on a GPU.
def _inference_mode_fused_batchnorm_gradients(function) -> int:
    graph = function.get_concrete_function().graph
    return sum(1 for op in graph.get_operations()
               if op.type.startswith("FusedBatchNormGrad") and not op.get_attr("is_training"))


def _generator_step(teacher):
    spec = generator_lib.GeneratorSpec(teacher.num_classes, teacher.image_shape, noise_dim=8, base_channels=8)
    trainer = zero_shot.GeneratorTrainer(teacher, generator_lib.build_generator(spec, teacher.preprocessing),
                                         LossConfig(), GeneratorTrainingConfig(batch_size=8))
    return tf.function(trainer.update_step)


def _student_step(teacher):
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme())
    distill.freeze_batchnorm(student)
    inputs = np.random.default_rng(0).normal(size=(16, *teacher.image_shape)).astype("float32")
    distiller = distill.Distiller(teacher.model, student, None, teacher.num_classes,
                                  DistillationConfig(batch_size=8), real_data=(inputs, np.zeros(16, np.int64)))
    return tf.function(distiller._train_step_eager)


def _distilled_input_step(teacher):
    return tf.function(distilled_data._BatchOptimizer(teacher, distilled_data.DistilledDataConfig(batch_size=8))
                       ._step_eager)


@pytest.mark.parametrize("make_step", [_generator_step, _student_step, _distilled_input_step])
def test_training_steps_run_batchnorm_unfused_where_a_gpu_has_no_deterministic_gradient(make_step, monkeypatch):
    teacher = tiny_teacher()
    # The suite runs with op determinism on (conftest), which on a GPU asks for unfused layers.
    monkeypatch.setattr(reproducibility, "batchnorm_must_run_unfused", lambda: False)  # On a CPU, or without it.
    assert _inference_mode_fused_batchnorm_gradients(make_step(teacher)) > 0
    monkeypatch.setattr(reproducibility, "batchnorm_must_run_unfused", lambda: True)  # As on a GPU.
    assert _inference_mode_fused_batchnorm_gradients(make_step(teacher)) == 0
    # Only the step's own trace changed: the teacher converts and exports with its fused layers.
    assert all(layer.fused for layer in teacher.model.layers if isinstance(layer, tf_keras.layers.BatchNormalization)
               and len(layer.input_shape) == 4)


def test_unfused_batchnorm_computes_what_the_fused_one_does(monkeypatch):
    teacher = tiny_teacher()
    student, _ = quantize.quantize_student(teacher.model, quantize.QuantizationScheme())
    inputs = np.random.default_rng(0).normal(size=(8, *teacher.image_shape)).astype("float32")
    monkeypatch.setattr(reproducibility, "batchnorm_must_run_unfused", lambda: False)  # A CPU, or no determinism.
    with reproducibility.unfused_batchnorm(teacher.model, student) as switched:
        assert switched == 0  # Nothing to do.
    fused = [model(inputs, training=False).numpy() for model in (teacher.model, student)]
    monkeypatch.setattr(reproducibility, "batchnorm_must_run_unfused", lambda: True)
    with reproducibility.unfused_batchnorm(teacher.model, student) as switched:
        assert switched == 4  # Conv and depthwise BN of each; the Dense one (2-D input) never runs fused.
        unfused = [model(inputs, training=False).numpy() for model in (teacher.model, student)]
    for expected, actual in zip(fused, unfused):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_unfused_batchnorm_is_needed_only_with_determinism_on_a_gpu(monkeypatch):
    monkeypatch.setattr(reproducibility, "_op_determinism_enabled", True)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [] if kind == "GPU" else ["cpu"])
    assert not reproducibility.batchnorm_must_run_unfused()
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu:0"])
    assert reproducibility.batchnorm_must_run_unfused()
    monkeypatch.setattr(reproducibility, "_op_determinism_enabled", False)
    assert not reproducibility.batchnorm_must_run_unfused()
