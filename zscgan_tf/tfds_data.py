"""TensorFlow Datasets as `LabeledImages`: a whole split in memory (`load_tfds`, what the
commands use), or batch by batch (`iterate_tfds`, for a caller of the package that streams a
split), downloaded and prepared by TFDS on first use."""

import contextlib
import os
import shutil
import socket
import tempfile
import urllib.parse
import urllib.request
from typing import Iterator, Optional, Tuple

import numpy as np

from zscgan_tf.errors import UserError, first_line
from zscgan_tf.files import missing_folders, new_folders_removed_on_failure
from zscgan_tf.labeled_images import (LabeledImages, MixedImageSizesError, central_crop_and_resize,
                                      crop_and_resize_phrase)
from zscgan_tf.progress import note

DEFAULT_TFDS_BATCH_SIZE = 256


@contextlib.contextmanager
def _temporary_files_removed():
    """Points this process's temporary files into a directory of its own for the block, then
    removes it: a TFDS builder looks its dataset's information up in a `tmp...tfds` directory
    it never removes (`DatasetInfo.initialize_from_bucket`), one more in /tmp on every run."""
    private = tempfile.mkdtemp(prefix="zscgan_tf_tfds_")
    saved, tempfile.tempdir = tempfile.tempdir, private
    try:
        yield
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(private, ignore_errors=True)


def _prepared_tfds_builder(name: str, data_dir: Optional[str], manual_dir: Optional[str]):
    """A TFDS builder with its data downloaded and prepared, or a UserError saying why not."""
    import tensorflow_datasets as tfds

    try:
        with _temporary_files_removed():
            builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise UserError(f"TFDS dataset not found: {first_line(error)}") from None
    if not builder.is_prepared():
        unreachable = "" if manual_dir or _has_downloads(builder, data_dir) else _download_hosts_unresolved(builder)
        if unreachable:
            raise UserError(f"cannot download TFDS dataset {name!r}: {unreachable}, as without a network; is the data "
                            f"directory right? Else prepare it with TFDS where there is a network and copy its "
                            f"{builder.name} directory into {_data_dir_root(builder, data_dir)}")
        # Offline, TFDS retries each download with backoff for about 3 1/2 minutes before it fails.
        note(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: downloading and preparing it (without "
             "network TFDS retries for minutes before giving up; is the data directory right?)")
    try:
        with new_folders_removed_on_failure(_tfds_directories(builder, data_dir)):
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as error:  # pylint: disable=broad-except
        # Downloads fail in many ways (no network, a missing manual archive, a missing
        # optional dependency of the builder); each means "the data is not available".
        hint = ""
        if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
            # A place rather than a flag: of the commands, only train's evaluation has one (--eval_manual_dir).
            where = manual_dir or os.path.join(_data_dir_root(builder, data_dir), "downloads", "manual")
            hint = f"; {name} must be downloaded by hand: put its archives in {where}"
        raise UserError(f"cannot download or prepare TFDS dataset {name!r} "
                        f"({type(error).__name__}: {first_line(error)}){hint}") from error  # --verbose shows it whole.
    if not builder.info.supervised_keys:
        raise UserError(f"TFDS dataset {name!r} has no (image, label) supervised keys")
    return builder


def _tfds_directories(builder, data_dir: Optional[str]) -> list:
    """The directories TFDS makes as it starts a download: the data directory (and the folders
    above it that are missing), its download cache, and the dataset's (and its version's) directory."""
    root = _data_dir_root(builder, data_dir)
    dataset_dirs = [str(builder.data_dir)]
    while os.path.dirname(dataset_dirs[-1]) not in (root, dataset_dirs[-1]):
        dataset_dirs.append(os.path.dirname(dataset_dirs[-1]))
    downloads = os.path.join(root, "downloads")
    return [*dataset_dirs, os.path.join(downloads, "extracted"), os.path.join(downloads, "manual"), downloads,
            *missing_folders(root)]  # TFDS makes the data directory, and the folders above it.


def _data_dir_root(builder, data_dir: Optional[str]) -> str:
    """The TFDS data directory the builder reads, which holds a directory per dataset."""
    return str(getattr(builder, "_data_dir_root", data_dir or ""))


def _has_downloads(builder, data_dir: Optional[str]) -> bool:
    """Whether TFDS's download cache in the data directory holds a file, which it may prepare the
    dataset from without a network."""
    downloads = os.path.join(_data_dir_root(builder, data_dir), "downloads")
    return any(names for _, _, names in os.walk(downloads))


def _download_hosts_unresolved(builder) -> str:
    """Why the builder's downloads cannot start, where none of the hosts its registered URLs name
    resolves, as without a network: TFDS would retry each for about 3 1/2 minutes, its backoff
    doubling to 102 s. Empty where one resolves, where the builder has no registered URLs or
    wants its archives downloaded by hand, where a proxy resolves the names instead, and where
    TFDS's own `download_and_prepare` is not what will run (`tfds.testing.mock_data` makes it
    download nothing)."""
    real_method = getattr(type(builder).download_and_prepare, "__module__", "") or ""
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or not real_method.startswith("tensorflow_datasets.core"):
        return ""
    try:
        urls = list(builder.url_infos or ())
    except Exception:  # pylint: disable=broad-except  # A builder whose checksums cannot be read: TFDS will say.
        return ""
    proxies, hosts = urllib.request.getproxies(), {}
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return ""  # gs://, ftp:// or a local file: reached otherwise.
        if {parts.scheme, "all"} & set(proxies) and not urllib.request.proxy_bypass(parts.hostname):
            return ""
        hosts.setdefault(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    if not hosts:
        return ""
    failures = []
    for host, port in hosts.items():
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            return ""
        except (OSError, UnicodeError) as error:
            failures.append(f"{host} ({getattr(error, 'strerror', None) or error})")
    return "cannot resolve " + ", nor ".join(failures)


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

    For a caller streaming a split too large to hold in memory; the commands hold a split
    whole (`load_tfds`) and read a large one again rather than keep it
    (`pipeline.MAX_HELD_EVALUATION_BYTES`). With `image_size`, each image
    keeps its central `labeled_images.CENTRAL_CROP_FRACTION` and is resized bilinearly to that size,
    which also makes photographs of different sizes batchable.

    Args:
      name: the TFDS name, e.g. `imagenet2012`.
      split: a TFDS split, e.g. `validation` or `train[:1%]`.
      batch_size: examples per batch (the last one may be smaller).
      image_size: (height, width), or None to keep the stored size.
      data_dir: the TFDS data directory.
      manual_dir: where manually downloaded archives are (imagenet2012).

    Raises:
      UserError: if the dataset is unknown or cannot be downloaded.
      MixedImageSizesError: while iterating, at the first batch of images of different
        sizes, when no `image_size` is given.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be positive, got {batch_size}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise UserError(f"image size must be (height, width), got {image_size}")
    # Not a generator itself, so bad arguments and missing data fail here, not at the first batch.
    builder = _prepared_tfds_builder(name, data_dir, manual_dir)
    return _iterate_builder(builder, split, batch_size, image_size)


def _iterate_builder(builder, split: str, batch_size: int, image_size: Optional[Tuple[int, int]]):
    import tensorflow as tf

    dataset = _tfds_dataset(builder, split)
    if image_size is not None:
        dataset = dataset.map(lambda image, label: (central_crop_and_resize(image, image_size), label),
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
      image_size: (height, width) each image is cropped to its central `labeled_images.CENTRAL_CROP_FRACTION`
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
                         name=name, class_names=class_names,
                         preparation=(crop_and_resize_phrase(image_size),) if image_size is not None else ())
