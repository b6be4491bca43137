"""The teacher's input space: how raw pixels in [0, 255] become what the teacher reads.

Every preprocessing the package knows is a per-channel affine map of the pixels, with
an optional reversal of the channel order (Keras Applications' `caffe` mode is RGB to
BGR followed by mean subtraction). Being affine is what lets the generator end in a
fixed affine layer that lands exactly in the teacher's input range, and lets the
package map generated samples back to pixels for viewing.

Modes, as in `tf_keras.applications.imagenet_utils.preprocess_input`:

- `tf`: pixels / 127.5 - 1, range [-1, 1] (MobileNet, MobileNetV2, our own teachers).
- `caffe`: RGB to BGR, then minus the ImageNet BGR mean, no scaling (ResNet50/101).
- `torch`: pixels / 255, then (x - ImageNet mean) / ImageNet std (DenseNet).
- `custom`: pixels / 255, then (x - mean) / std with the user's per-channel or scalar
  `mean` and `std` (in units of the [0, 1] range). `mean=0, std=1` is [0, 1];
  `mean=0.5, std=0.5` is [-1, 1].
- `raw`: the pixels themselves, [0, 255].
"""

import dataclasses
from typing import Tuple

import numpy as np

from zscgan_tf.errors import UserError
from zscgan_tf.progress import count_of

# The smallest custom std: below a quarter of a pixel level (1 / 255), inputs would span ranges no
# float32 model was trained on (1e-300 overflowed the input range).
MIN_CUSTOM_STD = 0.001

MODES = ("tf", "caffe", "torch", "custom", "raw")

# ImageNet statistics used by tf_keras.applications.imagenet_utils.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_RGB_MEAN = (0.485, 0.456, 0.406)
TORCH_RGB_STD = (0.229, 0.224, 0.225)
PIXEL_MAX = 255.0  # The brightest pixel level; the darkest is 0.
HALF_PIXEL_RANGE = PIXEL_MAX / 2


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """A teacher's input preprocessing.

    Attributes:
      mode: one of `MODES`.
      mean: for `custom` only, per-channel (or one shared) mean in [0, 1] units.
      std: for `custom` only, per-channel (or one shared) standard deviation.
    """

    mode: str = "tf"
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"unknown preprocessing mode {self.mode!r}; expected one of {', '.join(MODES)}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.mode == "custom":
            if not self.mean or not self.std:
                raise UserError("custom preprocessing needs both a mean and a std")
            if not all(np.isfinite(self.mean + self.std)):
                raise UserError(f"custom preprocessing mean and std must be finite numbers, got mean "
                                f"{_listed(self.mean)}, std {_listed(self.std)}")
            if any(s < MIN_CUSTOM_STD for s in self.std):
                raise UserError(f"custom preprocessing std must be at least {MIN_CUSTOM_STD} (a quarter of a pixel "
                                f"level in [0, 1] units), got {_listed(self.std)}")
            # In [0, 1] units a pixel's mean and spread are at most 1; ImageNet's 123.7 and 58.4 are pixel units.
            if any(m < 0 or m > 1 for m in self.mean) or any(s > 1 for s in self.std):
                raise UserError(f"custom preprocessing mean and std are in [0, 1] units (pixels / 255): each mean in "
                                f"[0, 1] and each std at most 1, got mean {_listed(self.mean)}, std {_listed(self.std)}"
                                + _pixel_units_advice(self.mean, self.std))
        elif self.mean or self.std:
            raise UserError(f"mean and std are only used with mode 'custom', not {self.mode!r}")

    def reverses_channels(self, channels: int) -> bool:
        return self.mode == "caffe" and channels == 3

    def scale_and_offset(self, channels: int, dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
        """Per-channel `scale`, `offset` with teacher_input = pixels' * scale + offset.

        `pixels'` are the pixels after the channel reversal of `reverses_channels`. Both
        arrays have `dtype` (float64 for exact arithmetic).

        Raises:
          UserError: if the mode's statistics do not fit `channels`.
        """
        if self.mode == "tf":
            scale, offset = [1.0 / HALF_PIXEL_RANGE], [-1.0]
        elif self.mode == "raw":
            scale, offset = [1.0], [0.0]
        elif self.mode == "caffe":
            mean = _per_channel(CAFFE_BGR_MEAN, channels, "caffe") if channels == 3 else [float(np.mean(CAFFE_BGR_MEAN))]
            scale, offset = [1.0] * len(mean), [-m for m in mean]
        else:
            if self.mode == "torch":
                mean = TORCH_RGB_MEAN if channels == 3 else (float(np.mean(TORCH_RGB_MEAN)),)
                std = TORCH_RGB_STD if channels == 3 else (float(np.mean(TORCH_RGB_STD)),)
            else:
                mean, std = self.mean, self.std
            mean = _per_channel(mean, channels, "mean")
            std = _per_channel(std, channels, "std")
            scale = [1.0 / (PIXEL_MAX * s) for s in std]
            offset = [-m / s for m, s in zip(mean, std)]
        scale = np.broadcast_to(np.asarray(scale, dtype), (channels,)).copy()
        offset = np.broadcast_to(np.asarray(offset, dtype), (channels,)).copy()
        return scale, offset

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Maps pixels in [0, 255], shape (..., channels), to the teacher's input space."""
        pixels = np.asarray(pixels, np.float32)
        channels = pixels.shape[-1]
        if self.reverses_channels(channels):
            pixels = pixels[..., ::-1]
        scale, offset = self.scale_and_offset(channels)
        return pixels * scale + offset

    def invert(self, inputs: np.ndarray) -> np.ndarray:
        """Maps teacher inputs back to pixels in [0, 255] (not clipped)."""
        inputs = np.asarray(inputs, np.float32)
        channels = inputs.shape[-1]
        scale, offset = self.scale_and_offset(channels)
        pixels = (inputs - offset) / scale
        if self.reverses_channels(channels):
            pixels = pixels[..., ::-1]
        return pixels

    def input_range(self, channels: int) -> Tuple[np.ndarray, np.ndarray]:
        """Per-channel (low, high) of the teacher input for pixels in [0, 255]."""
        scale, offset = self.scale_and_offset(channels)
        low, high = offset, PIXEL_MAX * scale + offset
        return np.minimum(low, high), np.maximum(low, high)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """`'tf'`, or for `custom` its mean and std: `'custom' (mean 0.5, std 0.25)`."""
        if self.mode != "custom":
            return repr(self.mode)
        return f"'custom' (mean {_listed(self.mean)}, std {_listed(self.std)})"

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        return cls(mode=values.get("mode", "tf"), mean=tuple(values.get("mean", ())), std=tuple(values.get("std", ())))


def _pixel_units_advice(mean: Tuple[float, ...], std: Tuple[float, ...]) -> str:
    """What the values divided by 255 would be, where that makes them valid (values in pixel
    units); else nothing, as dividing would not help."""
    mean, std = np.asarray(mean) / PIXEL_MAX, np.asarray(std) / PIXEL_MAX
    if np.all((0 <= mean) & (mean <= 1)) and np.all((MIN_CUSTOM_STD <= std) & (std <= 1)):
        return (f": in pixel units, divide them by {PIXEL_MAX:g} (mean {_listed(tuple(np.round(mean, 4)))}, std "
                f"{_listed(tuple(np.round(std, 4)))})")
    return ""


def _listed(values) -> str:
    return ", ".join(f"{value:g}" for value in values) if len(values) == 1 else "[" + ", ".join(
        f"{value:g}" for value in values) + "]"


def _per_channel(values, channels: int, what: str):
    values = [float(v) for v in values]
    if len(values) not in (1, channels):
        raise UserError(f"preprocessing {what} has {len(values)} values but the teacher takes "
                        f"{count_of(channels, 'channel')}")
    return values * channels if len(values) == 1 else values
