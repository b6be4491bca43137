"""The samples a TFLite conversion calibrates its int8 ranges on (the converter's
`representative_dataset`): generated or real images in the teacher's input space, one at a
time, the first made to reach the ends of the input range, with progress shown on a long
calibration, and checked for shape as the converter reads them."""

from typing import Callable, Iterator, List

import numpy as np

from zscgan_tf.errors import UserError
from zscgan_tf.progress import ProgressBar

# A calibration's progress bar shows once it has run this long: 500 samples of a small model take a
# second, 10,000 took 50 s on 2 CPU cores, and thousands at 224x224 take minutes.
SLOW_CALIBRATION_SECONDS = 10.0

RepresentativeDataset = Callable[[], Iterator[List[np.ndarray]]]


def representative_dataset_from_array(images: np.ndarray, input_range=None,
                                      progress_description: str = "") -> RepresentativeDataset:
    """Wraps teacher-space samples as a TFLite `representative_dataset`.

    The converter takes the model input's quantization range from these samples
    alone, and a device clips every input outside it. Pass `input_range` (the
    teacher's `input_range()`) so that the range covers every pixel: in each channel
    where no sample reaches `low` (`high`), the first sample's lowest (highest) value
    is moved there (pixel 0 or 255). Generated samples that stop just short of their
    range's ends would otherwise lose the brightest pixel level; samples that reach
    them are left as they are.

    Args:
      images: float array of shape (N, ...) with N >= 1, e.g. generator samples.
      input_range: optional (low, high), scalars or per channel (the last axis).
      progress_description: when given, a progress bar under it over the samples the
        converter has calibrated on, once that has taken `SLOW_CALIBRATION_SECONDS`.

    Returns:
      A zero-argument callable yielding `[images[i:i + 1]]` (float32), one sample
      at a time, as `TFLiteConverter.representative_dataset` expects.

    Raises:
      ValueError: for an empty, scalar or non-finite array, or a range that does not
        fit its channels.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(
            f"images must have shape (N>0, ...), got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or infinite values")
    if input_range is not None and len(input_range) != 2:
        raise ValueError(f"the input range must be (low, high), got {input_range!r}")
    first = images[:1] if input_range is None else _first_sample_reaching(images, *input_range)

    def representative_dataset():
        bar = ProgressBar(images.shape[0], progress_description, quiet_seconds=SLOW_CALIBRATION_SECONDS) \
            if progress_description else None
        try:
            for index in range(images.shape[0]):
                yield [first if index == 0 else images[index:index + 1]]
                if bar:  # The converter asks for the next sample once it has run the model on this one.
                    bar.update(index + 1, {})
        finally:
            if bar:
                bar.close()

    return representative_dataset


def _first_sample_reaching(images: np.ndarray, low, high) -> np.ndarray:
    """`images[:1]`, its lowest (highest) value moved to `low` (`high`) in each channel no sample reaches."""
    channels = images.shape[-1]
    try:
        low, high = (np.broadcast_to(np.asarray(bound, np.float32), (channels,)) for bound in (low, high))
    except ValueError as error:
        raise ValueError(f"the input range must be scalars or {channels} per-channel values") from error
    if np.any(low > high):
        raise ValueError(f"the input range must have low <= high, got {low}, {high}")
    every_value = images.reshape(-1, channels)
    reached_low, reached_high = every_value.min(axis=0), every_value.max(axis=0)
    values = images[:1].copy().reshape(-1, channels)
    for channel in range(channels):
        order = np.argsort(values[:, channel], kind="stable")  # Two elements, even in a constant channel.
        if reached_low[channel] > low[channel]:
            values[order[0], channel] = low[channel]
        if reached_high[channel] < high[channel]:
            values[order[-1], channel] = high[channel]
    return values.reshape(images[:1].shape)


def checked_representative_dataset(representative_dataset, input_shape):
    """Wraps a representative dataset so a wrong sample fails with a clear message."""
    expected_shape = tuple(input_shape)

    def checked():
        count = 0
        for sample in representative_dataset():
            if not isinstance(sample, (list, tuple)) or len(sample) != 1:
                raise UserError(
                    "representative_dataset must yield one-element lists [array], got "
                    f"{type(sample).__name__}")
            array = np.asarray(sample[0], dtype=np.float32)
            if array.shape != expected_shape:
                raise UserError(
                    f"representative_dataset sample has shape {array.shape}, expected "
                    f"{expected_shape}")
            count += 1
            yield [array]
        if count == 0:
            raise UserError("representative_dataset yielded no samples")

    return checked
