"""Folders of images, one sub-folder per class, as `LabeledImages` (Pillow decodes them,
but for JPEGs, which TensorFlow decodes as Keras' `image_dataset_from_directory` and TFDS do).

`path/<class name>/<image>`, or deeper in folders inside a class folder (as Keras reads
them too); class indices follow the sorted folder names. A dataset directory may hold
split folders (`train/`, `val/`) of class folders (`image_split_folder`).
"""

import collections
import os
from typing import Callable, Optional, Tuple

import numpy as np

from zscgan_tf.errors import UserError, first_line
from zscgan_tf.labeled_images import (PIXEL_MAX, LabeledImages, MixedImageSizesError, central_crop_and_resize,
                                      class_balanced_indices, crop_and_resize_phrase)
from zscgan_tf.progress import ProgressBar, count_of, listed, say

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif",
                    ".tiff")
# Pillow's 16-bit grayscale modes: read as TensorFlow's PNG decoder reads them, as does
# Keras' `image_dataset_from_directory`, keeping the high byte.
SIXTEEN_BIT_PIL_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# 32-bit integer and float grayscale: no convention says where their values sit. Values up
# to 255 are taken as pixel levels, a float image's up to 1 as fractions of 255 (0-1 is how
# float images are written), and an image with higher values is scaled from its maximum.
WIDE_PIL_MODES = ("I", "F")
# Grayscale: bilevel (0 and 255), 8-bit with or without alpha, and the above.
GRAYSCALE_PIL_MODES = ("1", "L", "LA", *SIXTEEN_BIT_PIL_MODES, *WIDE_PIL_MODES)
# JPEG modes TensorFlow's decoder reads, with the channels it is asked for. It rounds its
# inverse DCT otherwise than Pillow (INTEGER_FAST against libjpeg's accurate one), up to 5
# levels apart on a pixel; a model trained through Keras or TFDS saw TensorFlow's pixels.
TENSORFLOW_JPEG_CHANNELS = {"L": 1, "RGB": 3}
# Pillow's formats of JPEG files: MPO is a JPEG with more pictures after the first (a phone
# photo's gain or depth map), whose first TensorFlow's decoder reads.
JPEG_FORMATS = ("JPEG", "MPO")
# Folders that are not classes: macOS adds this one, holding "._" resource files, to zip files it makes.
NOT_CLASS_FOLDERS = ("__MACOSX",)
# Class folders without images a dataset's description names, at most.
EMPTY_CLASSES_SHOWN = 5


def class_folder_names(path: str) -> list:
    """Sub-folders but hidden ones and the `__MACOSX` folder macOS puts in the zip files it makes."""
    return sorted(entry.name for entry in os.scandir(path)
                  if entry.is_dir() and not entry.name.startswith(".") and entry.name not in NOT_CLASS_FOLDERS)


def _image_file_names(folder: str) -> list:
    return sorted(name for name in os.listdir(folder) if _is_image_file_name(name))


def _is_image_file_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _class_image_files(class_dir: str) -> list:
    """The images of a class folder, in it and in the folders inside it (but hidden ones and
    `NOT_CLASS_FOLDERS`; links to folders are not followed there, as in Keras), as paths,
    sorted."""
    found = []
    for folder, sub_folders, names in os.walk(class_dir):
        sub_folders[:] = [name for name in sub_folders if not name.startswith(".") and name not in NOT_CLASS_FOLDERS]
        found.extend(os.path.join(folder, name) for name in names if _is_image_file_name(name))
    return sorted(found)


def load_image_folder(path: str, image_size: Optional[Tuple[int, int]] = None, progress: bool = False,
                      name: Optional[str] = None, max_samples: int = 0, seed: int = 0,
                      check_class_names: Optional[Callable[[Tuple[str, ...]], None]] = None,
                      check_image_shape: Optional[Callable[[Tuple[int, int, int]], None]] = None) -> LabeledImages:
    """Loads `path/<class name>/<image>`; class indices follow the sorted folder names.

    If every image is grayscale the result has 1 channel, otherwise 3 (RGB; alpha is
    dropped). Images are decoded one at a time into the result, so memory holds the
    result and one image.

    Args:
      path: the folder of class folders.
      image_size: (height, width) each image is cropped to its central
        `labeled_images.CENTRAL_CROP_FRACTION` of and resized to as it loads, as for `iterate_tfds`
        (photographs of different sizes); None keeps the images' size, which must then be
        the same for all.
      progress: show progress lines while the images' headers are read and while they
        are decoded (50,000 photographs take minutes).
      name: the dataset name for reports; defaults to the folder's name.
      max_samples: if positive and fewer than the images, only a class-balanced subset of
        that many is read (`class_balanced_indices` with `seed`), the others not decoded.
      seed: the subset's seed.
      check_class_names: called with the class folders' names, sorted, before any image
        is read; it raises to refuse them (classes the model cannot be measured on)
        without the minutes of decoding.
      check_image_shape: without `image_size`, called with the images' (height, width,
        channels), once their headers are read and before any is decoded, to refuse
        them early (images another model reads).

    Raises:
      UserError: if there are no class folders, no class folder has images, or an image
        cannot be read; `MixedImageSizesError` if images differ in size and no
        `image_size` is given (the message names two that differ).
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(path):
        raise UserError(f"image folder not found: {path}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise UserError(f"image size must be (height, width), got {image_size}")
    broken = sorted(entry.name for entry in os.scandir(path)
                    if entry.is_symlink() and not os.path.exists(entry.path) and not entry.name.startswith("."))
    if broken:  # A class folder on a disk not mounted: its class would be left out, the others renumbered.
        link = os.path.join(path, broken[0])
        raise UserError(f"{link} is a symbolic link to {os.readlink(link)}, which does not exist: mount or restore "
                        "what it points to, or remove the link")
    class_names = class_folder_names(path)
    if not class_names:
        hint = ("; it holds images itself: if they are one class's, pass the folder above it, whose sub-folders are "
                "the classes; if they are of every class (as ImageNet's validation images unpack), sort them into "
                "a sub-folder per class first" if _image_file_names(path) else "")
        raise UserError(f"{path} has no class sub-folders; expected {path}/<class name>/<images>{hint}")
    if check_class_names is not None:
        check_class_names(tuple(class_names))
    files, labels, empty = [], [], []
    for label, class_name in enumerate(class_names):
        class_files = _class_image_files(os.path.join(path, class_name))
        if not class_files:
            empty.append(class_name)  # Its class keeps its place in the order, as in Keras.
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    if not files:
        raise UserError(f"the class folders of {path} hold no images ({', '.join(IMAGE_EXTENSIONS)})")
    labels = np.asarray(labels, np.int64)
    preparation = (f"{count_of(len(empty), 'class folder')} without images ({listed(empty, EMPTY_CLASSES_SHOWN)})",
                   ) if empty else ()
    if empty:
        say(f"note: {path}: {preparation[0]}, whose classes keep their places in the order with no image (images "
            f"are {', '.join(IMAGE_EXTENSIONS)})")
    if 0 < max_samples < len(files):
        chosen = class_balanced_indices(labels, len(class_names), max_samples, seed)
        preparation += (f"a class-balanced subset of {len(files):,}",)
        files, labels = [files[index] for index in chosen], labels[chosen]

    def open_image(file):
        try:
            return Image.open(file)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise UserError(f"cannot read image {file}: {first_line(error)}") from None

    # First pass, headers only: the channel count and whether sizes agree decide the result's shape.
    sizes, colour = [], []
    header_bar = ProgressBar(len(files), "reading image headers") if progress else None
    for index, file in enumerate(files):
        with open_image(file) as picture:
            sizes.append(picture.size)
            if picture.mode not in GRAYSCALE_PIL_MODES:
                colour.append((file, picture.mode))
        if header_bar:
            header_bar.update(index + 1, {})
    if header_bar:
        header_bar.close()
    grayscale = not colour
    if image_size is None:
        for file, size in zip(files, sizes):
            if size != sizes[0]:
                (common_width, common_height), count = collections.Counter(sizes).most_common(1)[0]
                commonest = f"{count:,} of {len(sizes):,} are {common_width}x{common_height}"
                raise MixedImageSizesError(
                    f"images in {path} differ in size: {files[0]} is {sizes[0][0]}x{sizes[0][1]} but {file} is "
                    f"{size[0]}x{size[1]} (width x height; {commonest})", commonest)
        height, width = sizes[0][1], sizes[0][0]
        if check_image_shape is not None:
            try:
                check_image_shape((height, width, 1 if grayscale else 3))
            except UserError as error:
                if not 0 < len(colour) < len(files) or not _accepted(check_image_shape, (height, width, 1)):
                    raise  # All in colour, or refused for their size too: the colour images are not the question.
                file, mode = colour[0]
                raise UserError(f"{error} ({len(colour):,} of its {len(files):,} images "
                                f"{'is' if len(colour) == 1 else 'are'} in colour, the first {file} (mode {mode}); "
                                "the others are gray)") from None
    else:
        height, width = (int(size) for size in image_size)
        resize = _image_resizer((height, width), 1 if grayscale else 3)
    images = np.empty((len(files), height, width, 1 if grayscale else 3), np.uint8)
    bar = ProgressBar(len(files), "loading images") if progress else None
    for index, file in enumerate(files):
        with open_image(file) as picture:
            try:
                pixels = _picture_pixels(picture, grayscale, file)
            except (OSError, SyntaxError, ValueError) as error:  # Truncated or corrupt image data.
                raise UserError(f"cannot read image {file}: {first_line(error)}") from None
        images[index] = pixels if image_size is None else resize(pixels)
        if bar:
            bar.update(index + 1, {})
    if bar:
        bar.close()
    if image_size is not None:
        preparation += (crop_and_resize_phrase((height, width)),)
    return LabeledImages(images, labels, num_classes=len(class_names),
                         name=name or os.path.basename(os.path.normpath(path)), class_names=tuple(class_names),
                         preparation=preparation)


def _accepted(check_image_shape: Callable[[Tuple[int, int, int]], None], image_shape: Tuple[int, int, int]) -> bool:
    """Whether `check_image_shape` takes images of `image_shape`."""
    try:
        check_image_shape(image_shape)
    except UserError:
        return False
    return True


def _image_resizer(image_size: Tuple[int, int], channels: int):
    """A numpy (H, W, channels) -> (height, width, channels) `central_crop_and_resize`, traced once."""
    import tensorflow as tf

    resize = tf.function(lambda image: central_crop_and_resize(image, image_size),
                         input_signature=[tf.TensorSpec((None, None, channels), tf.uint8)])
    return lambda pixels: resize(pixels).numpy()


def _gray_pixels(picture) -> np.ndarray:
    """A grayscale picture's (H, W) uint8 pixels (see `GRAYSCALE_PIL_MODES`)."""
    if picture.mode in SIXTEEN_BIT_PIL_MODES:
        return (np.asarray(picture).astype(np.uint16) >> 8).astype(np.uint8)
    if picture.mode in WIDE_PIL_MODES:
        values = np.asarray(picture, np.float64)
        high = values.max() if values.max() > PIXEL_MAX else 1.0 if picture.mode == "F" and values.max() <= 1 \
            else PIXEL_MAX
        return np.round(np.clip(values, 0, None) * (PIXEL_MAX / high)).astype(np.uint8)
    return np.asarray(picture.convert("L"), np.uint8)  # Bilevel 0/1 becomes 0/255; alpha is dropped.


def _picture_pixels(picture, grayscale: bool, file: str) -> np.ndarray:
    """(H, W, 1) uint8 pixels when the whole dataset is `grayscale`, else (H, W, 3): a
    grayscale picture among colour ones is repeated over the channels. A JPEG's pixels
    are TensorFlow's (`TENSORFLOW_JPEG_CHANNELS`)."""
    if picture.format in JPEG_FORMATS and picture.mode in TENSORFLOW_JPEG_CHANNELS:
        pixels = _tensorflow_jpeg_pixels(file, TENSORFLOW_JPEG_CHANNELS[picture.mode])
        return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 and not grayscale else pixels
    if picture.mode in GRAYSCALE_PIL_MODES:
        gray = _gray_pixels(picture)[..., np.newaxis]
        return gray if grayscale else np.repeat(gray, 3, axis=-1)
    return np.asarray(picture.convert("RGB"), np.uint8)


def _tensorflow_jpeg_pixels(file: str, channels: int) -> np.ndarray:
    """A JPEG file's (H, W, channels) pixels as `tf.io.decode_jpeg` gives them.

    Raises:
      ValueError: for data it cannot decode (a truncated file).
    """
    import tensorflow as tf

    with open(file, "rb") as stream:
        encoded = stream.read()
    try:
        return tf.io.decode_jpeg(encoded, channels=channels).numpy()
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(error.message) from None


def image_split_folder(source: str, split: str) -> str:
    """`source/split` if it is a folder; else `source` itself, if its sub-folders hold images."""
    if not split or os.sep in split or split in (os.curdir, os.pardir):
        raise UserError(f"split {split!r} of image folder {source} must be the name of one of its sub-folders")
    split_dir = os.path.join(source, split)
    if os.path.isdir(split_dir):
        return split_dir
    sub_folders = class_folder_names(source)
    holding_images = [name for name in sub_folders if _image_file_names(os.path.join(source, name))]
    if sub_folders and not holding_images:
        # Split folders (train/, val/) without the one asked for, rather than class folders.
        raise UserError(f"image folder {source} has no {split!r} sub-folder; its sub-folders "
                        f"({', '.join(sub_folders)}) hold no images themselves: name one as the split")
    return source
