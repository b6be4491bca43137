"""Deterministic execution: a compiled generator run repeats exactly."""

import os
import subprocess
import sys

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
