"""Labelled image datasets in raw pixel space: uint8 pixels in [0, 255], int64 labels.

Every loader returns a `LabeledImages` (`labeled_images`); turning pixels into what a
teacher reads is the job of `zscgan_tf.preprocessing`, not of this module. Sources, each
named by a string to `load_dataset`:

- `digits`: scikit-learn's bundled 8x8 digits, split 80/20 with a fixed seed.
- `fashion_mnist`: IDX files from a directory (or the Debian `fashion-mnist` package),
  else TensorFlow Datasets.
- `tfds:<name>`: any TensorFlow Datasets dataset with (image, label) supervised keys
  (`tfds_data`).
- a directory: IDX files (`train-images-idx3-ubyte[.gz]`, ...) or one sub-folder of
  images per class, optionally under `train/` and `test/` (`image_folders`).

Example:

  test = load_dataset("fashion_mnist", "test").to_input_shape((32, 32, 1))
  inputs = Preprocessing("tf").apply(test.images)
"""

import gzip
import os
import zlib
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from zscgan_tf.errors import UserError
from zscgan_tf.image_folders import class_folder_names, image_split_folder, load_image_folder
from zscgan_tf.labeled_images import PIXEL_MAX, LabeledImages
from zscgan_tf.progress import listed, note
from zscgan_tf.tfds_data import load_tfds

SPLITS = ("train", "test")
# Sources `load_dataset` knows by name; any other is `tfds:<name>` or a directory.
NAMED_SOURCES = ("digits", "fashion_mnist")

# Stratified 80/20 split of scikit-learn's digits; fixed so every run sees the same test set.
DIGITS_SPLIT_SEED = 20240601
DIGITS_TEST_FRACTION = 0.2
DIGITS_PIXEL_MAX = 16

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
# Class folders a split lacks named in a refusal before "..., N more".
CLASS_FOLDERS_SHOWN = 5
IDX_SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
IDX_NAME_SEPARATORS = ("-", ".")
# IDX files under names read as no split that a refusal lists, at most.
IDX_FILES_SHOWN = 4

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


def _check_no_unread_idx_files(directory: str) -> None:
    """Refuses a directory holding IDX files under names `load_idx_directory` does not read
    (`val-images-idx3-ubyte`, EMNIST's `emnist-digits-test-images-idx3-ubyte.gz`), which
    would otherwise be read as a folder of images and refused for its missing class folders."""
    found = sorted(name for name in os.listdir(directory) if "idx1-ubyte" in name or "idx3-ubyte" in name)
    if found:
        raise UserError(f"{directory} holds IDX files ({listed(found, IDX_FILES_SHOWN)}), but none under a name "
                        "read as a split: train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], with "
                        "t10k- or test- for the test split (or a '.' before idx3); rename them, or link them under "
                        "those names")


def is_idx_directory(path: str) -> bool:
    """Whether `path` holds IDX image files for at least one split."""
    return os.path.isdir(path) and any(_locate_idx_file(path, split, "images-idx3") for split in SPLITS)


def is_image_folder(source: str) -> bool:
    """Whether the source `source` is a folder of class folders of images (`load_image_folder`):
    a directory without IDX image files under a split's name (`is_idx_directory`; one holding
    IDX files under other names counts, and `load_dataset` refuses it, naming them)."""
    return os.path.isdir(source) and not is_idx_directory(source)


def load_idx_directory(path: str, split: str, name: Optional[str] = None) -> LabeledImages:
    """Loads MNIST-style IDX files: `train-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`, ...

    The test split may also be named `test-...`. The number of classes is one more than
    the largest label in either split's label file, so train and test agree.

    Args:
      path: the directory holding the files.
      split: `train` or `test`.
      name: the dataset name for reports; defaults to the directory's name.

    Raises:
      UserError: for missing, truncated or malformed files, no images, or images and labels that disagree.
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
    if not len(images):  # Else a run trained for minutes before it found nothing to measure.
        raise UserError(f"{images_path} holds no images")
    largest_label = int(labels.max()) if labels.size else 0
    other_split = "test" if split == "train" else "train"
    other_labels_path = _locate_idx_file(path, other_split, "labels-idx1")
    if other_labels_path is not None:
        other_labels = read_idx(other_labels_path)
        if other_labels.size:
            largest_label = max(largest_label, int(other_labels.max()))
    name = name or os.path.basename(os.path.normpath(path))
    return LabeledImages(images[..., np.newaxis], labels.astype(np.int64), num_classes=largest_label + 1, name=name,
                         classes_from_labels=True)


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
        try:
            dataset = load_tfds("fashion_mnist", split, data_dir=data_dir)
        except UserError as error:  # Offline: minutes of TFDS retries ended without the way out the README gives.
            raise UserError(f"{error}; or install Debian's package of it (apt-get install -y dataset-fashion-mnist), "
                            f"read from {DEBIAN_FASHION_MNIST_DIR}, or pass a directory of its IDX files") from error
    if dataset.num_classes > len(FASHION_MNIST_CLASS_NAMES):
        raise UserError(f"Fashion-MNIST has {len(FASHION_MNIST_CLASS_NAMES)} classes, "
                        f"but the files hold labels up to {dataset.num_classes - 1}")
    return LabeledImages(dataset.images, dataset.labels, num_classes=len(FASHION_MNIST_CLASS_NAMES),
                         name="fashion_mnist", class_names=FASHION_MNIST_CLASS_NAMES)


def check_held_out_split(source: str, training_split: str = "train", held_out_split: str = "test") -> None:
    """Refuses a folder of class folders that has no split folders, whose images would then be
    both the training data and the data held out to measure on (`load_dataset` reads the
    folder itself for any split): a training run's test accuracy would be its training one.
    Refuses split folders whose class folders differ too, before any image is read: class
    indices follow the sorted folder names, so the held-out images would be labelled as
    other classes, or refused only once both splits had been decoded.

    Raises:
      UserError: naming the split folders wanted, or the class folders one split lacks; or
        the IDX files of a directory that holds them under names no split reads.
    """
    if not is_image_folder(source):
        return
    _check_no_unread_idx_files(source)  # Else told it lacks split folders of class folders it never had.
    training_folder = image_split_folder(source, training_split)
    held_out_folder = image_split_folder(source, held_out_split)
    if training_folder == held_out_folder:
        raise UserError(f"{source} has no {training_split}/ and {held_out_split}/ sub-folders, so its class folders "
                        f"would be both the {training_split}ing data and the held-out {held_out_split} data; put them "
                        f"under {source}/{training_split}/ and {source}/{held_out_split}/")
    training_classes, held_out_classes = class_folder_names(training_folder), class_folder_names(held_out_folder)
    if training_classes and held_out_classes and training_classes != held_out_classes:
        lacking = [(folder, sorted(set(other) - set(names))) for folder, names, other in (
            (held_out_folder, held_out_classes, training_classes),
            (training_folder, training_classes, held_out_classes))]
        raise UserError("the class folders of the two splits must be the same, as class indices follow their names: "
                        + "; ".join(f"{folder} has no {'class folder' if len(missing) == 1 else 'class folders'} "
                                    f"{listed(missing, CLASS_FOLDERS_SHOWN)}" for folder, missing in lacking if missing))


def reads_data_dir(source: str) -> bool:
    """Whether `load_dataset` reads its `data_dir` for `source`: fashion_mnist and tfds:<name> do;
    digits, built in, and a directory, the data itself, do not."""
    return source == "fashion_mnist" or reads_manual_dir(source)


def reads_manual_dir(source: str) -> bool:
    """Whether `load_dataset` reads its `manual_dir` for `source`: TFDS's (tfds:<name>) only."""
    return source.startswith("tfds:")


def load_dataset(source: str, split: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                 image_size: Optional[Tuple[int, int]] = None, progress: bool = False,
                 max_samples: int = 0, seed: int = 0,
                 check_class_names: Optional[Callable[[Tuple[str, ...]], None]] = None,
                 check_image_shape: Optional[Callable[[Tuple[int, int, int]], None]] = None) -> LabeledImages:
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
      check_class_names: for a folder of images, called with its class names before any
        image is read, to refuse them early (`load_image_folder`); other sources ignore it.
      check_image_shape: for a folder of images of one size, called with their shape before
        any is decoded (`load_image_folder`); other sources ignore it.

    Raises:
      UserError: for an unknown source or any loading problem (`MixedImageSizesError`
        for photographs of different sizes without `image_size`).
    """
    if not source:
        raise UserError("no dataset given; expected digits, fashion_mnist, tfds:<name> or a directory")
    if source in NAMED_SOURCES and os.path.isdir(source):  # A folder of the user's own, in the current directory.
        note(f"{source} names the built-in dataset, not the folder {os.path.abspath(source)}: pass "
             f"{os.path.join(os.curdir, source)} for the folder")
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
        _check_no_unread_idx_files(source)
        return load_image_folder(image_split_folder(source, split), image_size=image_size, progress=progress,
                                 name=os.path.basename(os.path.normpath(source)), max_samples=max_samples, seed=seed,
                                 check_class_names=check_class_names, check_image_shape=check_image_shape)
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
