"""Whether the samples a run or conversion holds at once fit in this machine's memory.

Generated samples, calibration samples and sample grids are float32 arrays made whole before
they are used: asked for by the billion (a typo, or a class count that multiplies), they were
allocated once the generator had trained and filled for minutes, or failed with a numpy
traceback. These checks refuse such settings before anything trains. The memory compared
with is the machine's, or the less its cgroups allow (a container's limit, `cgroups`).
"""

import os
from typing import Optional

import numpy as np

from zscgan_tf import cgroups, quantization_stages
from zscgan_tf.config import RunConfig
from zscgan_tf.errors import UserError
from zscgan_tf.teachers import Teacher

# Bytes of one float32 value, as generated samples and preprocessed images are held.
FLOAT32_BYTES = 4
GIGABYTE = 10 ** 9
# Copies of the sample grid held at once while it is made: scaled, rounded and clipped.
GRID_COPIES = 3


def _physical_memory_bytes() -> Optional[int]:
    """The machine's memory, or the less its cgroups allow this process (a container's limit:
    the host's memory is what the machine reports), or None where neither is known."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Not a POSIX system that tells.
        physical = None
    limits = [limit for limit in (physical, cgroups.memory_limit()) if limit]
    return min(limits) if limits else None


def check_samples_fit_in_memory(flag: str, count: int, samples: int, image_shape, copies: int = 1) -> None:
    """Refuses `--flag=count` if the `samples` float32 images of `image_shape` it asks for,
    held `copies` times over while they are made, would alone exceed this machine's memory.

    Raises:
      UserError: naming the flag, the memory it would take and the machine's.
    """
    memory = _physical_memory_bytes()
    needed = copies * samples * FLOAT32_BYTES * int(np.prod(image_shape))
    if memory and needed > memory:
        held = f", {copies} copies while they are made" if copies > 1 else ""
        raise UserError(f"--{flag}={count} would hold {samples:,} samples of {tuple(image_shape)} in memory "
                        f"({_in_gigabytes(needed)}{held}), more than this machine's {_in_gigabytes(memory)}")


def _in_gigabytes(size: int) -> str:
    """`256 GB`, or to two significant figures below 10 GB: `0.001 GB`."""
    return f"{size / GIGABYTE:,.0f} GB" if size >= 10 * GIGABYTE else f"{size / GIGABYTE:.2g} GB"


def check_held_samples_fit_in_memory(run_config: RunConfig, teacher: Teacher) -> None:
    """`check_samples_fit_in_memory` for the samples a run holds at once: 10**9 calibration
    samples were allocated once the generator had trained, then filled for minutes, and 10**12
    were a numpy traceback there. The generator's evaluation holds one class at a time."""
    evaluation = run_config.evaluation
    count = run_config.quantization.calibration_samples
    check_samples_fit_in_memory("calibration_samples", count,
                                quantization_stages.calibration_samples_generated(count, teacher.num_classes),
                                teacher.image_shape, quantization_stages.CALIBRATION_COPIES)
    check_samples_fit_in_memory("eval_samples_per_class", evaluation.samples_per_class, evaluation.samples_per_class,
                                teacher.image_shape)
    grid_rows = min(teacher.num_classes, evaluation.grid_max_classes)
    check_samples_fit_in_memory("grid_samples_per_class", evaluation.grid_samples_per_class,
                                evaluation.grid_samples_per_class * grid_rows, teacher.image_shape, GRID_COPIES)
