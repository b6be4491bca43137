"""Labelled image datasets in raw pixel space: uint8 pixels in [0, 255], int64 labels.

Every loader returns a `LabeledImages`; turning pixels into what a teacher reads is the
job of `zscgan_tf.preprocessing`, not of this module. Sources:

- `digits`: scikit-learn's bundled 8x8 digits, split 80/20 with a fixed seed.
- `fashion_mnist`: IDX files from a directory (or the Debian `fashion-mnist` package),
  else TensorFlow Datasets.
- `tfds:<name>`: any TensorFlow Datasets dataset with (image, label) supervised keys.
- a directory: IDX files (`train-images-idx3-ubyte[.gz]`, ...) or one sub-folder of
  images per class (optionally under `train/` and `test/`).

Example:

  test = load_dataset("fashion_mnist", "test").to_input_shape((32, 32, 1))
  inputs = Preprocessing("tf").apply(test.images)
"""

import dataclasses
import gzip
import os
import zlib
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from zscgan_tf.errors import UserError, first_line
from zscgan_tf.progress import ProgressBar

SPLITS = ("train", "test")
# Sources `load_dataset` knows by name; any other is `tfds:<name>` or a directory.
NAMED_SOURCES = ("digits", "fashion_mnist")

# Stratified 80/20 split of scikit-learn's digits; fixed so every run sees the same test set.
DIGITS_SPLIT_SEED = 20240601
DIGITS_TEST_FRACTION = 0.2
DIGITS_PIXEL_MAX = 16

# ITU-R BT.601 luma weights, as used by tf.image.rgb_to_grayscale.
LUMINANCE_WEIGHTS = (0.2989, 0.5870, 0.1140)
PIXEL_MAX = 255

# Images resized per chunk so a 60,000-image resize does not hold every float copy at once.
RESIZE_CHUNK_SIZE = 4096

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# IDX: two zero bytes, a data-type code, the number of dimensions, then big-endian
# uint32 sizes. http://yann.lecun.com/exdb/mnist/ describes the format.
IDX_DATA_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
IDX_NAME_SEPARATORS = ("-", ".")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
# Pillow's 16-bit grayscale modes: read as TensorFlow's PNG decoder reads them, as does
# Keras' `image_dataset_from_directory`, keeping the high byte.
SIXTEEN_BIT_PIL_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# 32-bit integer and float grayscale: no convention says where their values sit, so each
# image's own range is scaled to 0-255.
WIDE_PIL_MODES = ("I", "F")
# Grayscale: bilevel (0 and 255), 8-bit with or without alpha, and the above.
GRAYSCALE_PIL_MODES = ("1", "L", "LA", *SIXTEEN_BIT_PIL_MODES, *WIDE_PIL_MODES)
# Folders that are not classes: macOS adds this one, holding "._" resource files, to zip files it makes.
NOT_CLASS_FOLDERS = ("__MACOSX",)

# TFDS evaluation pipelines for photographs (ImageNet) keep the central 87.5% before resizing.
CENTRAL_CROP_FRACTION = 0.875
DEFAULT_TFDS_BATCH_SIZE = 256


class MixedImageSizesError(UserError):
    """A dataset's images differ in size: batching them needs one size to crop and resize them to."""


@dataclasses.dataclass(frozen=True)
class LabeledImages:
    """Images with integer class labels.

    Attributes:
      images: (N, H, W, C) uint8 pixels in [0, 255].
      labels: (N,) int64 class indices in [0, num_classes).
      num_classes: the number of classes of the task (some may be absent from a split).
      name: a short name for reports, e.g. `fashion_mnist`.
      class_names: `num_classes` human-readable names, or empty.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    class_names: Tuple[str, ...] = ()

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

    def _replace(self, images: np.ndarray, labels: np.ndarray) -> "LabeledImages":
        return dataclasses.replace(self, images=images, labels=labels)

    def resized(self, height: int, width: int) -> "LabeledImages":
        """Bilinear resize (tf.image.resize) to height x width, rounded back to uint8."""
        if height < 1 or width < 1:
            raise UserError(f"image size must be positive, got {height}x{width}")
        if (height, width) == self.image_shape[:2]:
            return self
        import tensorflow as tf  # Deferred: loading digits or IDX files should not start TensorFlow.

        chunks = []
        for start in range(0, max(len(self), 1), RESIZE_CHUNK_SIZE):
            resized = tf.image.resize(self.images[start:start + RESIZE_CHUNK_SIZE].astype(np.float32),
                                      (height, width), method="bilinear")
            chunks.append(np.clip(np.round(resized.numpy()), 0, PIXEL_MAX).astype(np.uint8))
        return self._replace(np.concatenate(chunks, axis=0), self.labels)

    def with_channels(self, channels: int) -> "LabeledImages":
        """1 -> 3 channels by repetition, 3 -> 1 by luminance; same count is a no-op."""
        current = self.image_shape[2]
        if channels == current:
            return self
        if current == 1 and channels == 3:
            return self._replace(np.repeat(self.images, 3, axis=-1), self.labels)
        if current == 3 and channels == 1:
            luminance = self.images.astype(np.float32) @ np.asarray(LUMINANCE_WEIGHTS, np.float32)
            images = np.clip(np.round(luminance), 0, PIXEL_MAX).astype(np.uint8)[..., np.newaxis]
            return self._replace(images, self.labels)
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
        return self._replace(self.images[:count], self.labels[:count])

    def class_balanced(self, count: int, seed: int) -> "LabeledImages":
        """A random subset of `count` examples with classes as equally represented as possible
        (`class_balanced_indices`), in a random order."""
        chosen = class_balanced_indices(self.labels, self.num_classes, count, seed)
        return self._replace(self.images[chosen], self.labels[chosen])


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


def _check_split(split: str, allowed: Sequence[str] = SPLITS) -> None:
    if split not in allowed:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")


def load_digits(split: str) -> LabeledImages:
    """scikit-learn's 8x8 digits as (N, 8, 8, 1) uint8, split 80/20 stratified by class.

    Args:
      split: `train` (1437 images) or `test` (360 images).
    """
    _check_split(split)
    from sklearn import datasets, model_selection

    digits = datasets.load_digits()
    images = np.round(digits.images * (PIXEL_MAX / DIGITS_PIXEL_MAX)).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    train_indices, test_indices = model_selection.train_test_split(
        np.arange(labels.size), test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED)
    indices = np.sort(train_indices if split == "train" else test_indices)
    return LabeledImages(images[indices], labels[indices], num_classes=10, name="digits",
                         class_names=tuple(str(digit) for digit in range(10)))


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (gzipped if its name ends in `.gz`) into a numpy array.

    Raises:
      UserError: if the file is missing, unreadable, truncated or not IDX.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            content = stream.read()
    except FileNotFoundError:
        raise UserError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot read IDX file {path}: {error}") from None
    if len(content) < 4:
        raise UserError(f"{path} is not an IDX file: only {len(content)} bytes")
    zero_0, zero_1, type_code, num_dims = content[:4]
    if zero_0 != 0 or zero_1 != 0 or type_code not in IDX_DATA_TYPES:
        raise UserError(f"{path} is not an IDX file: bad magic number 0x{content[:4].hex()}")
    header_size = 4 + 4 * num_dims
    if len(content) < header_size:
        raise UserError(f"{path} is truncated: the header needs {header_size} bytes, the file has {len(content)}")
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", count=num_dims, offset=4))
    dtype = IDX_DATA_TYPES[type_code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) != expected:
        problem = "truncated" if len(content) < expected else "longer than its header says"
        raise UserError(f"{path} is {problem}: shape {shape} needs {expected} bytes, the file has {len(content)}")
    return np.frombuffer(content, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file_names(split: str, kind: str):
    """Accepted names: train-images-idx3-ubyte, train-images.idx3-ubyte, with or without .gz."""
    what, idx = kind.split("-")
    for prefix in IDX_SPLIT_PREFIXES[split]:
        for separator in IDX_NAME_SEPARATORS:
            for suffix in ("", ".gz"):
                yield f"{prefix}-{what}{separator}{idx}-ubyte{suffix}"


def _locate_idx_file(directory: str, split: str, kind: str) -> Optional[str]:
    for name in _idx_file_names(split, kind):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def is_idx_directory(path: str) -> bool:
    """Whether `path` holds IDX image files for at least one split."""
    return os.path.isdir(path) and any(_locate_idx_file(path, split, "images-idx3") for split in SPLITS)


def load_idx_directory(path: str, split: str, name: Optional[str] = None) -> LabeledImages:
    """Loads MNIST-style IDX files: `train-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`, ...

    The test split may also be named `test-...`. The number of classes is one more than
    the largest label in either split's label file, so train and test agree.

    Args:
      path: the directory holding the files.
      split: `train` or `test`.
      name: the dataset name for reports; defaults to the directory's name.

    Raises:
      UserError: for missing, truncated or malformed files, or images and labels that disagree.
    """
    _check_split(split)
    if not os.path.isdir(path):
        raise UserError(f"IDX directory not found: {path}")
    images_path = _locate_idx_file(path, split, "images-idx3")
    labels_path = _locate_idx_file(path, split, "labels-idx1")
    for kind, found in (("images-idx3", images_path), ("labels-idx1", labels_path)):
        if found is None:
            expected = " or ".join(f"{prefix}-{kind}-ubyte[.gz]" for prefix in IDX_SPLIT_PREFIXES[split])
            raise UserError(f"no {split} {kind.split('-')[0]} in {path}: expected {expected}")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{images_path} must hold uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise UserError(f"{labels_path} has shape {labels.shape} but {images_path} holds {images.shape[0]} images")
    largest_label = int(labels.max()) if labels.size else 0
    other_split = "test" if split == "train" else "train"
    other_labels_path = _locate_idx_file(path, other_split, "labels-idx1")
    if other_labels_path is not None:
        other_labels = read_idx(other_labels_path)
        if other_labels.size:
            largest_label = max(largest_label, int(other_labels.max()))
    name = name or os.path.basename(os.path.normpath(path))
    return LabeledImages(images[..., np.newaxis], labels.astype(np.int64), num_classes=largest_label + 1, name=name)


def load_fashion_mnist(split: str, data_dir: Optional[str] = None) -> LabeledImages:
    """Fashion-MNIST (28x28x1, 60,000 train / 10,000 test) with its class names.

    Args:
      split: `train` or `test`.
      data_dir: a directory with the IDX files; if it has none, it is passed to TFDS as
        its data directory. Without it, the Debian package's directory is used when
        present, else TFDS.
    """
    _check_split(split)
    if data_dir is not None and is_idx_directory(data_dir):
        dataset = load_idx_directory(data_dir, split)
    elif data_dir is None and is_idx_directory(DEBIAN_FASHION_MNIST_DIR):
        dataset = load_idx_directory(DEBIAN_FASHION_MNIST_DIR, split)
    else:
        dataset = load_tfds("fashion_mnist", split, data_dir=data_dir)
    if dataset.num_classes > len(FASHION_MNIST_CLASS_NAMES):
        raise UserError(f"Fashion-MNIST has {len(FASHION_MNIST_CLASS_NAMES)} classes, "
                        f"but the files hold labels up to {dataset.num_classes - 1}")
    return LabeledImages(dataset.images, dataset.labels, num_classes=len(FASHION_MNIST_CLASS_NAMES),
                         name="fashion_mnist", class_names=FASHION_MNIST_CLASS_NAMES)


def _prepared_tfds_builder(name: str, data_dir: Optional[str], manual_dir: Optional[str]):
    """A TFDS builder with its data downloaded and prepared, or a UserError saying why not."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise UserError(f"TFDS dataset not found: {first_line(error)}") from None
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as error:  # pylint: disable=broad-except
        # Downloads fail in many ways (no network, a missing manual archive, a missing
        # optional dependency of the builder); each means "the data is not available".
        hint = ""
        if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
            hint = f"; {name} must be downloaded by hand: pass the directory holding its archives as manual_dir"
        raise UserError(f"cannot download or prepare TFDS dataset {name!r} "
                        f"({type(error).__name__}: {first_line(error)}){hint}") from None
    if not builder.info.supervised_keys:
        raise UserError(f"TFDS dataset {name!r} has no (image, label) supervised keys")
    return builder


def _tfds_label_info(builder) -> Tuple[int, Tuple[str, ...]]:
    label_feature = builder.info.features[builder.info.supervised_keys[1]]
    num_classes = getattr(label_feature, "num_classes", None)
    if not num_classes:
        raise UserError(f"TFDS dataset {builder.info.name!r}: the label is not a class label")
    names = tuple(getattr(label_feature, "names", ()) or ())
    return int(num_classes), names


def _tfds_dataset(builder, split: str):
    try:
        return builder.as_dataset(split=split, as_supervised=True)
    except (ValueError, KeyError) as error:
        raise UserError(f"TFDS dataset {builder.info.name!r} has no split {split!r}: {first_line(error)}") from None


def iterate_tfds(name: str, split: str, batch_size: int = DEFAULT_TFDS_BATCH_SIZE,
                 image_size: Optional[Tuple[int, int]] = None, data_dir: Optional[str] = None,
                 manual_dir: Optional[str] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yields (uint8 images, int64 labels) numpy batches of a TFDS dataset.

    For datasets too large to hold in memory (ImageNet). With `image_size`, each image
    keeps its central `CENTRAL_CROP_FRACTION` and is resized bilinearly to that size,
    which also makes photographs of different sizes batchable.

    Args:
      name: the TFDS name, e.g. `imagenet2012`.
      split: a TFDS split, e.g. `validation` or `train[:1%]`.
      batch_size: examples per batch (the last one may be smaller).
      image_size: (height, width), or None to keep the stored size.
      data_dir: the TFDS data directory.
      manual_dir: where manually downloaded archives are (imagenet2012).

    Raises:
      UserError: if the dataset is unknown or cannot be downloaded, or if its images
        differ in size and no `image_size` is given.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be positive, got {batch_size}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise UserError(f"image size must be (height, width), got {image_size}")
    # Not a generator itself, so bad arguments and missing data fail here, not at the first batch.
    builder = _prepared_tfds_builder(name, data_dir, manual_dir)
    return _iterate_builder(builder, split, batch_size, image_size)


def _central_crop_and_resize(image, image_size: Tuple[int, int]):
    """A (H, W, C) uint8 tensor's central `CENTRAL_CROP_FRACTION`, resized bilinearly to image_size."""
    import tensorflow as tf

    image = tf.image.central_crop(image, CENTRAL_CROP_FRACTION)
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0, PIXEL_MAX), tf.uint8)


def _iterate_builder(builder, split: str, batch_size: int, image_size: Optional[Tuple[int, int]]):
    import tensorflow as tf

    dataset = _tfds_dataset(builder, split)
    if image_size is not None:
        dataset = dataset.map(lambda image, label: (_central_crop_and_resize(image, image_size), label),
                              num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    try:
        for images, labels in dataset.as_numpy_iterator():
            yield images.astype(np.uint8, copy=False), labels.astype(np.int64, copy=False)
    except tf.errors.InvalidArgumentError as error:
        raise MixedImageSizesError(f"TFDS dataset {builder.info.name!r}: images of different sizes cannot be "
                                   f"batched without an image size ({first_line(error)})") from None


def load_tfds(name: str, split: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
              image_size: Optional[Tuple[int, int]] = None) -> LabeledImages:
    """Loads a whole TFDS split into memory (see `iterate_tfds` to go batch by batch).

    Args:
      name: the TFDS name, e.g. `cifar10`.
      split: a TFDS split, e.g. `test` or `train[:10%]`.
      data_dir: the TFDS data directory (default: TFDS's own).
      manual_dir: where manually downloaded archives are (imagenet2012).
      image_size: (height, width) each image is cropped to its central `CENTRAL_CROP_FRACTION`
        of and resized to while loading, as for `iterate_tfds`; None keeps the stored size.

    Raises:
      UserError: if the dataset is unknown or cannot be downloaded; `MixedImageSizesError`
        if its images differ in size and no `image_size` is given.
    """
    builder = _prepared_tfds_builder(name, data_dir, manual_dir)
    num_classes, class_names = _tfds_label_info(builder)
    images, labels = [], []
    for batch_images, batch_labels in _iterate_builder(builder, split, DEFAULT_TFDS_BATCH_SIZE, image_size):
        images.append(batch_images)
        labels.append(batch_labels)
    if not images:
        raise UserError(f"TFDS dataset {name!r} split {split!r} is empty")
    return LabeledImages(np.concatenate(images), np.concatenate(labels), num_classes=num_classes,
                         name=name, class_names=class_names)


def _class_folder_names(path: str) -> list:
    """Sub-folders but hidden ones and the `__MACOSX` folder macOS puts in the zip files it makes."""
    return sorted(entry.name for entry in os.scandir(path)
                  if entry.is_dir() and not entry.name.startswith(".") and entry.name not in NOT_CLASS_FOLDERS)


def _image_file_names(folder: str) -> list:
    return sorted(name for name in os.listdir(folder)
                  if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."))


def load_image_folder(path: str, image_size: Optional[Tuple[int, int]] = None, progress: bool = False,
                      name: Optional[str] = None, max_samples: int = 0, seed: int = 0) -> LabeledImages:
    """Loads `path/<class name>/<image>`; class indices follow the sorted folder names.

    If every image is grayscale the result has 1 channel, otherwise 3 (RGB; alpha is
    dropped). Images are decoded one at a time into the result, so memory holds the
    result and one image.

    Args:
      path: the folder of class folders.
      image_size: (height, width) each image is cropped to its central
        `CENTRAL_CROP_FRACTION` of and resized to as it loads, as for `iterate_tfds`
        (photographs of different sizes); None keeps the images' size, which must then be
        the same for all.
      progress: show a progress line (loading 50,000 photographs takes minutes).
      name: the dataset name for reports; defaults to the folder's name.
      max_samples: if positive and fewer than the images, only a class-balanced subset of
        that many is read (`class_balanced_indices` with `seed`), the others not decoded.
      seed: the subset's seed.

    Raises:
      UserError: if there are no class folders, a class folder has no images, or an image
        cannot be read; `MixedImageSizesError` if images differ in size and no
        `image_size` is given (the message names two that differ).
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(path):
        raise UserError(f"image folder not found: {path}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise UserError(f"image size must be (height, width), got {image_size}")
    class_names = _class_folder_names(path)
    if not class_names:
        hint = ("; it holds images itself: pass the folder above it, whose sub-folders are the classes"
                if _image_file_names(path) else "")
        raise UserError(f"{path} has no class sub-folders; expected {path}/<class name>/<images>{hint}")
    files, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(path, class_name)
        class_files = _image_file_names(class_dir)
        if not class_files:
            raise UserError(f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files.extend(os.path.join(class_dir, name) for name in class_files)
        labels.extend([label] * len(class_files))
    labels = np.asarray(labels, np.int64)
    if 0 < max_samples < len(files):
        chosen = class_balanced_indices(labels, len(class_names), max_samples, seed)
        files, labels = [files[index] for index in chosen], labels[chosen]

    def open_image(file):
        try:
            return Image.open(file)
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"cannot read image {file}: {first_line(error)}") from None

    # First pass, headers only: the channel count and whether sizes agree decide the result's shape.
    sizes, grayscale = [], True
    for file in files:
        with open_image(file) as picture:
            sizes.append(picture.size)
            grayscale = grayscale and picture.mode in GRAYSCALE_PIL_MODES
    if image_size is None:
        for file, size in zip(files, sizes):
            if size != sizes[0]:
                raise MixedImageSizesError(
                    f"images in {path} differ in size: {files[0]} is {sizes[0][0]}x{sizes[0][1]} but {file} is "
                    f"{size[0]}x{size[1]} (width x height)")
        height, width = sizes[0][1], sizes[0][0]
    else:
        height, width = (int(size) for size in image_size)
        resize = _image_resizer((height, width), 1 if grayscale else 3)
    images = np.empty((len(files), height, width, 1 if grayscale else 3), np.uint8)
    bar = ProgressBar(len(files), "loading images") if progress else None
    for index, file in enumerate(files):
        with open_image(file) as picture:
            try:
                pixels = _picture_pixels(picture, grayscale)
            except (OSError, SyntaxError, ValueError) as error:  # Truncated or corrupt image data.
                raise UserError(f"cannot read image {file}: {first_line(error)}") from None
        images[index] = pixels if image_size is None else resize(pixels)
        if bar:
            bar.update(index + 1, {})
    if bar:
        bar.close()
    return LabeledImages(images, labels, num_classes=len(class_names),
                         name=name or os.path.basename(os.path.normpath(path)), class_names=tuple(class_names))


def _image_resizer(image_size: Tuple[int, int], channels: int):
    """A numpy (H, W, channels) -> (height, width, channels) `_central_crop_and_resize`, traced once."""
    import tensorflow as tf

    resize = tf.function(lambda image: _central_crop_and_resize(image, image_size),
                         input_signature=[tf.TensorSpec((None, None, channels), tf.uint8)])
    return lambda pixels: resize(pixels).numpy()


def _gray_pixels(picture) -> np.ndarray:
    """A grayscale picture's (H, W) uint8 pixels (see `GRAYSCALE_PIL_MODES`)."""
    if picture.mode in SIXTEEN_BIT_PIL_MODES:
        return (np.asarray(picture).astype(np.uint16) >> 8).astype(np.uint8)
    if picture.mode in WIDE_PIL_MODES:
        values = np.asarray(picture, np.float64)
        high = values.max() if values.max() > PIXEL_MAX else PIXEL_MAX
        return np.round(np.clip(values, 0, None) * (PIXEL_MAX / high)).astype(np.uint8)
    return np.asarray(picture.convert("L"), np.uint8)  # Bilevel 0/1 becomes 0/255; alpha is dropped.


def _picture_pixels(picture, grayscale: bool) -> np.ndarray:
    """(H, W, 1) uint8 pixels when the whole dataset is `grayscale`, else (H, W, 3): a
    grayscale picture among colour ones is repeated over the channels."""
    if picture.mode in GRAYSCALE_PIL_MODES:
        gray = _gray_pixels(picture)[..., np.newaxis]
        return gray if grayscale else np.repeat(gray, 3, axis=-1)
    return np.asarray(picture.convert("RGB"), np.uint8)


def load_dataset(source: str, split: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                 image_size: Optional[Tuple[int, int]] = None, progress: bool = False,
                 max_samples: int = 0, seed: int = 0) -> LabeledImages:
    """Loads a dataset named by a source string.

    Args:
      source: `digits`, `fashion_mnist`, `tfds:<name>`, or a directory holding IDX files
        or class sub-folders of images.
      split: `train` or `test`; any TFDS split for `tfds:`; for a folder of images, any
        sub-folder name (`val`, say): `<directory>/<split>/` is used when it exists, else
        the directory itself whatever the split.
      data_dir: IDX or TFDS data directory for `fashion_mnist`; TFDS data directory for `tfds:`.
      manual_dir: manually downloaded archives for `tfds:` (imagenet2012).
      image_size: for `tfds:` and folders of images, (height, width) each image is
        cropped and resized to as it loads (`load_tfds`, `load_image_folder`).
      progress: show a progress line while a folder of images loads.
      max_samples, seed: for a folder of images, read only a class-balanced subset
        (`load_image_folder`); other sources load whole (take `class_balanced` after).

    Raises:
      UserError: for an unknown source or any loading problem (`MixedImageSizesError`
        for photographs of different sizes without `image_size`).
    """
    if not source:
        raise UserError("no dataset given; expected digits, fashion_mnist, tfds:<name> or a directory")
    if source == "digits":
        return load_digits(split)
    if source == "fashion_mnist":
        return load_fashion_mnist(split, data_dir=data_dir)
    if source.startswith("tfds:"):
        name = source[len("tfds:"):]
        if not name:
            raise UserError("tfds: needs a dataset name, e.g. tfds:cifar10")
        return load_tfds(name, split, data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
    if os.path.isdir(source):
        if is_idx_directory(source):
            return load_idx_directory(source, split)
        return load_image_folder(_image_split_folder(source, split), image_size=image_size, progress=progress,
                                 name=os.path.basename(os.path.normpath(source)), max_samples=max_samples, seed=seed)
    if os.path.isfile(source):
        raise UserError(f"dataset {source!r} is a file; expected a directory of IDX files or of class sub-folders of "
                        "images")
    if os.sep in source:
        raise UserError(f"dataset directory {source!r} does not exist")
    raise UserError(f"unknown dataset {source!r}; expected digits, fashion_mnist, tfds:<name> or an existing directory")


def portable_source(source: str) -> str:
    """`source` as a run started from another directory finds it: a directory's absolute path;
    `digits`, `fashion_mnist` and `tfds:<name>` as they are."""
    if source in NAMED_SOURCES or source.startswith("tfds:") or not os.path.isdir(source):
        return source
    return os.path.abspath(source)


def _image_split_folder(source: str, split: str) -> str:
    """`source/split` if it is a folder; else `source` itself, if its sub-folders hold images."""
    if not split or os.sep in split or split in (os.curdir, os.pardir):
        raise UserError(f"split {split!r} of image folder {source} must be the name of one of its sub-folders")
    split_dir = os.path.join(source, split)
    if os.path.isdir(split_dir):
        return split_dir
    sub_folders = _class_folder_names(source)
    holding_images = [name for name in sub_folders if _image_file_names(os.path.join(source, name))]
    if sub_folders and not holding_images:
        # Split folders (train/, val/) without the one asked for, rather than class folders.
        raise UserError(f"image folder {source} has no {split!r} sub-folder; its sub-folders "
                        f"({', '.join(sub_folders)}) hold no images themselves: name one as the split")
    return source
