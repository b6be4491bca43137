"""How fast the generator trains: compiled versus eager steps, FLOPs per step, share of the CPU's peak.

The FLOPs of a forward pass are counted by TensorFlow's graph profiler (registered
statistics of MatMul, Conv2D, depthwise convolutions, ...). A generator step is a
teacher forward pass with its input gradient (about 2x the forward FLOPs: the teacher's
weights get no gradient) plus a generator forward and backward pass (about 3x). The
peak rate is measured, not looked up: the float32 rate of a large matrix product on all
threads, which is what a dense kernel can reach on this CPU.
"""

import dataclasses
import time
from typing import Callable

import numpy as np
import tensorflow as tf

# Backward pass cost in forward passes: input gradient only (frozen teacher), or input
# and weight gradients (trained generator).
TEACHER_PASSES_PER_STEP = 2
GENERATOR_PASSES_PER_STEP = 3
PEAK_MATMUL_SIZE = 2048
PEAK_MATMUL_REPEATS = 20


def forward_flops(model, batch_size: int) -> int:
    """Floating-point operations of one forward pass of `model` on `batch_size` samples."""
    specs = [tf.TensorSpec([batch_size, *tensor.shape[1:]], tensor.dtype) for tensor in model.inputs]
    function = tf.function(lambda *inputs: model(list(inputs) if len(inputs) > 1 else inputs[0], training=False))
    graph = function.get_concrete_function(*specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    # The profiler calls an API of TensorFlow 1 that logs six lines of deprecation warning for each model counted.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)
    finally:
        logger.setLevel(level)


def peak_flops_per_second(size: int = PEAK_MATMUL_SIZE, repeats: int = PEAK_MATMUL_REPEATS) -> float:
    """Measured float32 FLOP rate of `size` x `size` matrix products (the best of `repeats`)."""
    random = np.random.default_rng(0)
    left = tf.constant(random.standard_normal((size, size)), tf.float32)
    right = tf.constant(random.standard_normal((size, size)), tf.float32)
    product = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    product(left, right).numpy()  # Traces and warms up.
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product(left, right).numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size ** 3 / best


def seconds_per_call(function: Callable[[], object], calls: int, warmup: int) -> float:
    """Median wall time of `function()` over `calls` timed calls after `warmup` untimed ones."""
    if calls < 1 or warmup < 0:
        raise ValueError(f"need at least one timed call and no negative warm-up, got {calls} and {warmup}")
    for _ in range(warmup):
        function()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


@dataclasses.dataclass(frozen=True)
class StepSpeed:
    """A generator step compiled and eager, and how much of the CPU it uses.

    Attributes:
      batch_size: samples per step.
      compiled_seconds: median seconds per `tf.function` step.
      eager_seconds: median seconds per step of the same code run eagerly.
      flops_per_step: estimated FLOPs of one step (see the module docstring).
      peak_flops_per_second: measured float32 matrix-product rate of this CPU.
    """

    batch_size: int
    compiled_seconds: float
    eager_seconds: float
    flops_per_step: int
    peak_flops_per_second: float

    @property
    def speedup(self) -> float:
        return self.eager_seconds / self.compiled_seconds

    @property
    def compiled_samples_per_second(self) -> float:
        return self.batch_size / self.compiled_seconds

    @property
    def eager_samples_per_second(self) -> float:
        return self.batch_size / self.eager_seconds

    @property
    def fraction_of_peak(self) -> float:
        return self.flops_per_step / self.compiled_seconds / self.peak_flops_per_second

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "speedup": self.speedup,
                "compiled_samples_per_second": self.compiled_samples_per_second,
                "eager_samples_per_second": self.eager_samples_per_second, "fraction_of_peak": self.fraction_of_peak}


def measure_generator_step(trainer, calls: int = 10, warmup: int = 2) -> StepSpeed:
    """Times `trainer`'s compiled step against the same step run eagerly, on this CPU.

    Both update the trainer's generator, so give it a throwaway one.
    """
    batch_size = trainer.training_config.batch_size
    compiled = seconds_per_call(trainer.train_step, calls, warmup)
    eager = seconds_per_call(trainer.eager_train_step, calls, warmup)
    flops = (TEACHER_PASSES_PER_STEP * forward_flops(trainer.teacher.model, batch_size)
             + GENERATOR_PASSES_PER_STEP * forward_flops(trainer.generator, batch_size))
    return StepSpeed(batch_size, compiled, eager, flops, peak_flops_per_second())
