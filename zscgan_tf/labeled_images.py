"""Labelled images in raw pixel space: uint8 pixels in [0, 255], int64 labels.

Every dataset loader (`data`, `tfds_data`, `image_folders`) returns a `LabeledImages`;
turning pixels into what a teacher reads is the job of `zscgan_tf.preprocessing`.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from zscgan_tf.errors import UserError
from zscgan_tf.preprocessing import PIXEL_MAX

# ITU-R BT.601 luma weights, as used by tf.image.rgb_to_grayscale.
LUMINANCE_WEIGHTS = (0.2989, 0.5870, 0.1140)

# Pixels resized per chunk, so that a resize does not hold every image's float copy at once:
# 4,096 images at 32x32, 64 at 256x256 (4,096 of those were 3.2 GB as float32).
RESIZE_CHUNK_PIXELS = 4096 * 32 * 32

# TFDS evaluation pipelines for photographs (ImageNet) keep the central 87.5% before resizing.
CENTRAL_CROP_FRACTION = 0.875


class MixedImageSizesError(UserError):
    """A dataset's images differ in size: batching them needs one size to crop and resize them to.

    `commonest`: how many have the commonest size, where that is known ("1,999 of 2,000 are
    28x28"), else "".
    """

    def __init__(self, message: str, commonest: str = ""):
        super().__init__(message)
        self.commonest = commonest


@dataclasses.dataclass(frozen=True)
class LabeledImages:
    """Images with integer class labels.

    Attributes:
      images: (N, H, W, C) uint8 pixels in [0, 255].
      labels: (N,) int64 class indices in [0, num_classes).
      num_classes: the number of classes of the task (some may be absent from a split).
      name: a short name for reports, e.g. `fashion_mnist`.
      class_names: `num_classes` human-readable names, or empty.
      classes_from_labels: `num_classes` is only one more than the largest label found (IDX
        files carry no class count), so the data may belong to a task with more classes.
      preparation: what was done to the stored images, in order, as phrases for a report
        ("a class-balanced subset of 10,000", "resized from 28x28 to 32x32"); empty when
        they are all the stored images as stored.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    class_names: Tuple[str, ...] = ()
    classes_from_labels: bool = False
    preparation: Tuple[str, ...] = ()

    def __post_init__(self):
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.ndim != 4:
            raise UserError(f"{self.name}: images must have shape (N, H, W, C), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise UserError(f"{self.name}: images must be uint8 pixels in [0, 255], got dtype {images.dtype}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise UserError(
                f"{self.name}: labels must have shape ({images.shape[0]},) to match the images, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{self.name}: labels must be integers, got dtype {labels.dtype}")
        if int(self.num_classes) < 1:
            raise UserError(f"{self.name}: num_classes must be positive, got {self.num_classes}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"{self.name}: labels must lie in [0, {self.num_classes}), "
                            f"got values from {labels.min()} to {labels.max()}")
        class_names = tuple(str(name) for name in self.class_names)
        if class_names and len(class_names) != self.num_classes:
            raise UserError(f"{self.name}: got {len(class_names)} class names for {self.num_classes} classes")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "class_names", class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(size) for size in self.images.shape[1:])

    def _replace(self, images: np.ndarray, labels: np.ndarray, step: Optional[str]) -> "LabeledImages":
        """A copy with other images and labels, `step` (None: all of them, reordered) added to its preparation."""
        preparation = self.preparation + (step,) if step else self.preparation
        return dataclasses.replace(self, images=images, labels=labels, preparation=preparation)

    def resized(self, height: int, width: int) -> "LabeledImages":
        """Bilinear resize (tf.image.resize) to height x width, rounded back to uint8."""
        if height < 1 or width < 1:
            raise UserError(f"image size must be positive, got {height}x{width}")
        if (height, width) == self.image_shape[:2]:
            return self
        import tensorflow as tf  # Deferred: loading digits or IDX files should not start TensorFlow.

        chunks = []
        chunk = max(1, RESIZE_CHUNK_PIXELS // max(self.image_shape[0] * self.image_shape[1], height * width, 1))
        for start in range(0, max(len(self), 1), chunk):
            resized = tf.image.resize(self.images[start:start + chunk].astype(np.float32), (height, width),
                                      method="bilinear")
            chunks.append(np.clip(np.round(resized.numpy()), 0, PIXEL_MAX).astype(np.uint8))
        return self._replace(np.concatenate(chunks, axis=0), self.labels,
                             f"resized from {self.image_shape[0]}x{self.image_shape[1]} to {height}x{width}")

    def with_channels(self, channels: int) -> "LabeledImages":
        """1 -> 3 channels by repetition, 3 -> 1 by luminance; same count is a no-op."""
        current = self.image_shape[2]
        if channels == current:
            return self
        if current == 1 and channels == 3:
            return self._replace(np.repeat(self.images, 3, axis=-1), self.labels, "gray repeated to 3 channels")
        if current == 3 and channels == 1:
            luminance = self.images.astype(np.float32) @ np.asarray(LUMINANCE_WEIGHTS, np.float32)
            images = np.clip(np.round(luminance), 0, PIXEL_MAX).astype(np.uint8)[..., np.newaxis]
            return self._replace(images, self.labels, "converted to gray")
        raise UserError(f"{self.name}: cannot convert {current}-channel images to {channels} channels")

    def to_input_shape(self, input_shape: Sequence[int]) -> "LabeledImages":
        """Resizes and converts channels to a model's (H, W, C) input shape."""
        if len(input_shape) != 3:
            raise UserError(f"input shape must be (height, width, channels), got {tuple(input_shape)}")
        height, width, channels = (int(size) for size in input_shape)
        return self.resized(height, width).with_channels(channels)

    def take(self, count: int) -> "LabeledImages":
        """The first `count` examples (all of them if there are fewer)."""
        if count < 0:
            raise UserError(f"cannot take a negative number of examples, got {count}")
        if count >= len(self):
            return self
        return self._replace(self.images[:count], self.labels[:count], f"the first {count:,} of {len(self):,}")

    def random_subset(self, count: int, seed: int) -> "LabeledImages":
        """A uniformly random `count` of the examples (all of them if there are fewer), in a
        random order: the classes in their proportions in the data."""
        if count < 0:
            raise UserError(f"cannot take a negative number of examples, got {count}")
        chosen = np.random.default_rng(seed).permutation(len(self))[:count]
        step = f"a random subset of {len(self):,}" if chosen.size < len(self) else None
        return self._replace(self.images[chosen], self.labels[chosen], step)

    def class_balanced(self, count: int, seed: int) -> "LabeledImages":
        """A random subset of `count` examples with classes as equally represented as possible
        (`class_balanced_indices`), in a random order."""
        chosen = class_balanced_indices(self.labels, self.num_classes, count, seed)
        step = f"a class-balanced subset of {len(self):,}" if chosen.size < len(self) else None
        return self._replace(self.images[chosen], self.labels[chosen], step)


def class_balanced_indices(labels: np.ndarray, num_classes: int, count: int, seed: int) -> np.ndarray:
    """Indices of a random subset of `count` of `labels` with classes as equally represented
    as possible, in a random order.

    Classes are visited round-robin, each contributing its examples in a random order,
    so a class with too few examples leaves its share to the others.
    """
    if count < 0:
        raise UserError(f"cannot take a negative number of examples, got {count}")
    labels = np.asarray(labels)
    count = min(count, labels.size)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == label)) for label in range(num_classes)]
    per_class = [indices for indices in per_class if indices.size]
    if not per_class:
        return np.zeros(0, np.int64)
    # Round-robin: rank r of every class comes before rank r + 1 of any class.
    ranks = np.concatenate([np.arange(indices.size) for indices in per_class])
    order = np.concatenate(per_class)
    class_order = np.concatenate([np.full(indices.size, position) for position, indices in enumerate(per_class)])
    chosen = order[np.lexsort((class_order, ranks))][:count]
    return rng.permutation(chosen)


def crop_and_resize_phrase(image_size: Tuple[int, int]) -> str:
    """`LabeledImages.preparation`'s phrase for images put through `central_crop_and_resize`."""
    return f"each cropped to its central {CENTRAL_CROP_FRACTION:.1%} and resized to {image_size[0]}x{image_size[1]}"


def central_crop_and_resize(image, image_size: Tuple[int, int]):
    """A (H, W, C) uint8 tensor's central `CENTRAL_CROP_FRACTION`, resized bilinearly to image_size."""
    import tensorflow as tf

    image = tf.image.central_crop(image, CENTRAL_CROP_FRACTION)
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0, PIXEL_MAX), tf.uint8)
