"""Bit-for-bit reproducible training.

Measured here (TF 2.21, 2-core CPU): the compiled generator step gives different
weights from the third step on when run twice with the same seeds, with or without
oneDNN and with one thread, while the same step run eagerly repeats exactly. Grappler,
TensorFlow's graph optimizer, is the cause: with it off, and TensorFlow's deterministic
kernels on, compiled runs repeat exactly, at a cost of about 4% of generator throughput. Without
it, two generators trained with one seed differ enough to move W4A4 accuracy by half a
point.

On a GPU, TensorFlow's deterministic kernels lack one that every stage needs: the
gradient of a fused BatchNormalization in inference mode (`FusedBatchNormGradV3` with
`is_training=False`; its GPU kernel raises `UnimplementedError` under op determinism,
its CPU kernel has no such check). The generator's and the distilled inputs' gradients
pass through the frozen teacher's BN layers, and the student's through its own frozen
ones. So while op determinism is on and a GPU is visible, training steps run those
layers unfused (`unfused_batchnorm`): the same normalization from plain ops, whose
gradients have deterministic GPU kernels. On a CPU nothing changes.
"""

import contextlib

import tensorflow as tf
import tf_keras

_op_determinism_enabled = False


def enable_deterministic_execution() -> None:
    """Makes this process's TensorFlow computations repeat exactly for the same seeds.

    Call it once, before any `tf.function` is traced; it applies to the whole process.
    """
    global _op_determinism_enabled
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    _op_determinism_enabled = True


def batchnorm_must_run_unfused() -> bool:
    """Whether training steps must run BN layers unfused: op determinism is on and a GPU is visible."""
    return _op_determinism_enabled and bool(tf.config.list_physical_devices("GPU"))


@contextlib.contextmanager
def unfused_batchnorm(*models: tf_keras.Model):
    """Runs the BatchNormalization layers of `models` unfused within it, where `batchnorm_must_run_unfused()`.

    Meant around the Python body of a training step: a `tf.function` traces its graph
    there, so the compiled step keeps the unfused layers, while the models, once out of
    it, convert and export as they were. Layers inside TF-MOT wrappers count too.

    Yields:
      How many layers run unfused (0 where nothing needs to change).
    """
    switched = {}
    if batchnorm_must_run_unfused():
        for model in models:
            for module in (model, *model.submodules):
                if isinstance(module, tf_keras.layers.BatchNormalization) and module.fused:
                    switched[id(module)] = module
    for layer in switched.values():
        layer.fused = False
    try:
        yield len(switched)
    finally:
        for layer in switched.values():
            layer.fused = True
