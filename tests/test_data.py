"""Tests for zscgan_tf.data: IDX files, image folders, digits, TFDS and Fashion-MNIST loaders."""

import gzip
import io
import os
import socket
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

import zscgan_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from zscgan_tf import data, image_folders, labeled_images, tfds_data
from zscgan_tf.errors import UserError

from conftest import idx_bytes, write_file, write_idx_split

@pytest.fixture(name="random_pixels")
def fixture_random_pixels():
    rng = np.random.default_rng(0)
    return lambda *shape: rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_directory_round_trip(tmp_path, random_pixels, compressed):
    train_images, test_images = random_pixels(6, 5, 4), random_pixels(3, 5, 4)
    train_labels, test_labels = np.array([0, 1, 2, 0, 1, 2], np.uint8), np.array([4, 0, 1], np.uint8)
    write_idx_split(tmp_path, "train", train_images, train_labels, compressed)
    write_idx_split(tmp_path, "t10k", test_images, test_labels, compressed)

    train = data.load_idx_directory(str(tmp_path), "train")
    test = data.load_idx_directory(str(tmp_path), "test")

    np.testing.assert_array_equal(train.images[..., 0], train_images)
    np.testing.assert_array_equal(train.labels, train_labels)
    np.testing.assert_array_equal(test.images[..., 0], test_images)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.image_shape == (5, 4, 1)
    # Both splits agree on the class count, taken from the largest label in either.
    assert train.num_classes == test.num_classes == 5


def test_idx_directory_accepts_test_prefix_and_load_dataset_dispatches(tmp_path, random_pixels):
    write_idx_split(tmp_path, "train", random_pixels(2, 3, 3), np.array([0, 1], np.uint8), compressed=True)
    write_idx_split(tmp_path, "test", random_pixels(2, 3, 3), np.array([1, 1], np.uint8), compressed=False)
    assert len(data.load_dataset(str(tmp_path), "test")) == 2
    assert data.is_idx_directory(str(tmp_path))
    # fashion_mnist with a data directory of IDX files reads them, before Debian's copy or TFDS.
    from_there = data.load_dataset("fashion_mnist", "test", data_dir=str(tmp_path))
    assert len(from_there) == 2 and from_there.name == "fashion_mnist"
    assert from_there.class_names[1] == "Trouser"  # Fashion-MNIST's names for the labels read there.
    np.testing.assert_array_equal(from_there.labels, [1, 1])


def test_fashion_mnist_that_tfds_cannot_download_names_the_offline_ways(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise UserError("cannot download or prepare TFDS dataset 'fashion_mnist' (ConnectionError: no network)")

    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "not_installed"))
    monkeypatch.setattr(data, "load_tfds", offline)
    # After minutes of TFDS retries it ended at the connection error, with no word of Debian's package.
    with pytest.raises(UserError) as refusal:
        data.load_fashion_mnist("test")
    assert str(refusal.value) == (
        "cannot download or prepare TFDS dataset 'fashion_mnist' (ConnectionError: no network); or install Debian's "
        f"package of it (apt-get install -y dataset-fashion-mnist), read from {tmp_path / 'not_installed'}, or pass a "
        "directory of its IDX files")


def test_read_idx_parses_other_types(tmp_path):
    values = (np.arange(6).reshape(2, 3) - 3).astype(">i4")
    header = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 3)
    path = write_file(tmp_path / "values-idx2-int", header + values.tobytes(), compressed=False)
    np.testing.assert_array_equal(data.read_idx(path), values)


def test_truncated_idx_is_a_user_error(tmp_path, random_pixels):
    content = idx_bytes(random_pixels(4, 5, 5))
    path = write_file(tmp_path / "train-images-idx3-ubyte", content[:-7], compressed=False)
    with pytest.raises(UserError, match="truncated"):
        data.read_idx(path)


def test_truncated_gzip_is_a_user_error(tmp_path, random_pixels):
    compressed = gzip.compress(idx_bytes(random_pixels(4, 5, 5)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(UserError, match="cannot read IDX file"):
        data.read_idx(str(path))


def test_bad_magic_is_a_user_error(tmp_path):
    path = write_file(tmp_path / "train-images-idx3-ubyte", b"\x1f\x8b\x08\x03" + bytes(40), compressed=False)
    with pytest.raises(UserError, match="bad magic number 0x1f8b0803"):
        data.read_idx(path)


def test_missing_idx_files_and_mismatched_labels(tmp_path, random_pixels):
    write_file(tmp_path / "train-images-idx3-ubyte", idx_bytes(random_pixels(3, 2, 2)), compressed=False)
    with pytest.raises(UserError, match="no train labels"):
        data.load_idx_directory(str(tmp_path), "train")
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(2, np.uint8)), compressed=False)
    with pytest.raises(UserError, match="holds 3 images"):
        data.load_idx_directory(str(tmp_path), "train")
    with pytest.raises(UserError, match="no test images"):
        data.load_idx_directory(str(tmp_path), "test")


def test_an_idx_split_of_no_images_is_refused_as_it_loads(tmp_path, random_pixels):
    # IDX files of 0 images loaded, and a run trained for minutes before its evaluation ended in a TypeError.
    # (A folder of images and a TFDS split refused none already.)
    write_idx_split(tmp_path, "t10k", random_pixels(0, 4, 4), np.zeros(0, np.uint8), compressed=False)
    with pytest.raises(UserError, match=f"^{tmp_path}/t10k-images-idx3-ubyte holds no images$"):
        data.load_dataset(str(tmp_path), "test")


def _save_png(path, pixels: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_a_folder_without_split_folders_is_refused_as_training_and_held_out_data(tmp_path, random_pixels):
    from zscgan_tf import teacher_recipes

    for label in ("cat", "dog"):
        _save_png(tmp_path / "flat" / label / "a.png", random_pixels(4, 4))
        for split in ("train", "test"):
            _save_png(tmp_path / "split" / split / label / "a.png", random_pixels(4, 4))
    message = (f"{tmp_path / 'flat'} has no train/ and test/ sub-folders, so its class folders would be both the "
               f"training data and the held-out test data; put them under {tmp_path / 'flat'}/train/ and "
               f"{tmp_path / 'flat'}/test/")
    with pytest.raises(UserError) as refusal:
        data.check_held_out_split(str(tmp_path / "flat"))
    assert str(refusal.value) == message
    data.check_held_out_split(str(tmp_path / "split"))
    data.check_held_out_split("digits")
    # Before, a teacher trained on it reported its training accuracy as its test accuracy.
    recipe = teacher_recipes.TeacherRecipe(architecture="resnet8", dataset=str(tmp_path / "flat"), epochs=1)
    with pytest.raises(UserError, match="has no train/ and test/ sub-folders"):
        teacher_recipes.train_from_recipe(recipe, str(tmp_path / "teacher.keras"), progress=False)
    assert not os.path.exists(tmp_path / "teacher.keras")
    # Evaluation alone reads such a folder for any split, as before.
    assert len(data.load_dataset(str(tmp_path / "flat"), "val")) == 2


def test_split_folders_of_other_class_folders_are_refused_before_any_image_is_read(tmp_path, random_pixels):
    from zscgan_tf import teacher_recipes

    for split, labels in (("train", ("cat", "dog", "fish")), ("test", ("cat", "dog", "owl"))):
        for label in labels:
            _save_png(tmp_path / split / label / "a.png", random_pixels(4, 4))
    (tmp_path / "train" / "cat" / "b.png").write_bytes(b"not a png")  # Reading it would be "cannot read image".
    message = ("the class folders of the two splits must be the same, as class indices follow their names: "
               f"{tmp_path / 'test'} has no class folder fish; {tmp_path / 'train'} has no class folder owl")
    with pytest.raises(UserError) as refusal:
        data.check_held_out_split(str(tmp_path))
    assert str(refusal.value) == message
    # Before, the same number of classes trained a teacher whose test images of owls were scored as fish.
    recipe = teacher_recipes.TeacherRecipe(architecture="resnet8", dataset=str(tmp_path), epochs=1)
    with pytest.raises(UserError, match="the class folders of the two splits must be the same"):
        teacher_recipes.train_from_recipe(recipe, str(tmp_path / "teacher.keras"), progress=False)
    for label in ("fish", "owl"):
        for split in ("train", "test"):
            _save_png(tmp_path / split / label / "a.png", random_pixels(4, 4))
    (tmp_path / "test" / "hamster").mkdir()  # Empty folders count: `load_image_folder` refuses them.
    with pytest.raises(UserError, match=f"{tmp_path / 'train'} has no class folder hamster$"):
        data.check_held_out_split(str(tmp_path))
    (tmp_path / "test" / "hamster").rmdir()
    data.check_held_out_split(str(tmp_path))


def test_image_folder_labels_follow_sorted_folder_names(tmp_path, random_pixels):
    zebra, ant_1, ant_2 = random_pixels(4, 6), random_pixels(4, 6), random_pixels(4, 6)
    _save_png(tmp_path / "zebra" / "a.png", zebra)
    _save_png(tmp_path / "ant" / "1.png", ant_1)
    _save_png(tmp_path / "ant" / "2.png", ant_2)

    dataset = image_folders.load_image_folder(str(tmp_path))

    assert dataset.class_names == ("ant", "zebra")
    np.testing.assert_array_equal(dataset.labels, [0, 0, 1])
    assert dataset.images.shape == (3, 4, 6, 1)
    np.testing.assert_array_equal(dataset.images[2, ..., 0], zebra)
    np.testing.assert_array_equal(dataset.images[0, ..., 0], ant_1)


def test_image_folder_ignores_what_macos_and_others_leave_beside_the_images(tmp_path, random_pixels):
    _save_png(tmp_path / "cat" / "a.png", random_pixels(4, 4))
    _save_png(tmp_path / "dog" / "b.png", random_pixels(4, 4))
    (tmp_path / "cat" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # Resource fork, not a PNG.
    (tmp_path / "cat" / "notes.txt").write_text("taken in 2019")
    (tmp_path / ".thumbnails").mkdir()
    (tmp_path / "__MACOSX" / "cat").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "cat" / "._a.png").write_bytes(b"\x00\x05\x16\x07")

    dataset = image_folders.load_image_folder(str(tmp_path))

    assert dataset.class_names == ("cat", "dog") and len(dataset) == 2


def test_image_folder_mixes_gray_and_color_as_rgb(tmp_path, random_pixels):
    color = random_pixels(4, 4, 3)
    _save_png(tmp_path / "a" / "gray.png", random_pixels(4, 4))
    _save_png(tmp_path / "b" / "color.png", color)
    dataset = image_folders.load_image_folder(str(tmp_path))
    assert dataset.image_shape == (4, 4, 3)
    np.testing.assert_array_equal(dataset.images[1], color)


def test_image_folder_reads_bilevel_16_bit_and_gray_alpha_images_as_tensorflow_decodes_them(tmp_path):
    import tensorflow as tf

    bilevel = np.zeros((4, 4), bool)
    bilevel[:2] = True
    os.makedirs(tmp_path / "a")
    Image.fromarray(bilevel).save(tmp_path / "a" / "bilevel.png")  # A scanned page, say.
    dim, bright = np.full((4, 4), 1000, np.uint16), np.full((4, 4), 40000, np.uint16)
    dim[0, 0] = 3000
    for name, values in (("dim", dim), ("bright", bright)):  # 16-bit sensor images.
        Image.fromarray(values).save(tmp_path / "a" / f"{name}.png")
    gray_alpha = Image.fromarray(np.full((4, 4), 77, np.uint8)).convert("LA")
    gray_alpha.putalpha(Image.fromarray(np.full((4, 4), 9, np.uint8)))
    gray_alpha.save(tmp_path / "a" / "gray_alpha.png")

    dataset = image_folders.load_image_folder(str(tmp_path))

    assert dataset.image_shape == (4, 4, 1)
    by_name = dict(zip(sorted(os.listdir(tmp_path / "a")), dataset.images[..., 0]))
    for name in by_name:  # As Keras' image_dataset_from_directory would give them (TensorFlow's decoder).
        decoded = tf.io.decode_png((tmp_path / "a" / name).read_bytes(), channels=1).numpy()[..., 0]
        np.testing.assert_array_equal(by_name[name], decoded, err_msg=name)
    # Before: bilevel pixels were 0 and 1, not 0 and 255; each 16-bit image was scaled by its own
    # maximum, so the dim one came out as bright as the bright one; alpha made a grayscale folder RGB.
    np.testing.assert_array_equal(by_name["bilevel.png"][:, 0], [255, 255, 0, 0])
    assert by_name["dim.png"][0, 1] == 1000 >> 8 and by_name["bright.png"][0, 0] == 40000 >> 8
    assert by_name["gray_alpha.png"][0, 0] == 77
    # Among colour images, a 16-bit grayscale one is read the same way, then repeated over the channels.
    Image.fromarray(np.full((4, 4, 3), 5, np.uint8)).save(tmp_path / "a" / "z_colour.png")
    dataset = image_folders.load_image_folder(str(tmp_path))
    np.testing.assert_array_equal(dataset.images[1, 0, 0], [40000 >> 8] * 3)  # Clipped to 255 before.


def test_images_in_folders_inside_a_class_folder_are_read_and_a_class_folder_without_images_keeps_its_place(
        tmp_path, random_pixels, capsys):
    # Images a level down were left out without a word (182 of 360 read), where Keras reads them; an empty class
    # folder was refused, where Keras keeps the class.
    for path in ("a/1.png", "a/batch2/2.png", "a/batch2/deeper/3.png", "c/4.png", "a/.ipynb_checkpoints/5.png"):
        _save_png(tmp_path / path, random_pixels(4, 4))
    (tmp_path / "b").mkdir()

    dataset = image_folders.load_image_folder(str(tmp_path))

    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 2])
    assert dataset.class_names == ("a", "b", "c") and dataset.num_classes == 3
    assert dataset.preparation == ("1 class folder without images (b)",)  # For the report.
    assert capsys.readouterr().out.startswith(f"note: {tmp_path}: 1 class folder without images (b), whose classes "
                                              "keep their places in the order with no image (images are .png, .jpg, ")
    subset = image_folders.load_image_folder(str(tmp_path), max_samples=2)
    assert sorted(subset.labels) == [0, 2] and subset.preparation == (
        "1 class folder without images (b)", "a class-balanced subset of 4")
    # A link to a class folder elsewhere that is gone: its class was left out, and the others renumbered.
    (tmp_path / "d").symlink_to(tmp_path / "unmounted")
    with pytest.raises(UserError) as refusal:
        image_folders.load_image_folder(str(tmp_path))
    assert str(refusal.value) == (f"{tmp_path / 'd'} is a symbolic link to {tmp_path / 'unmounted'}, which does not "
                                  "exist: mount or restore what it points to, or remove the link")


def test_float_grayscale_images_of_0_to_1_are_fractions_of_the_brightest_level(tmp_path):
    # A float TIFF of 0 to 1 read as levels 0 and 1 of 255: black, and a top-1 of 10% blamed on the labels' order.
    fractions = np.full((4, 4), 0.5, np.float32)
    fractions[0, 0] = 1.0
    os.makedirs(tmp_path / "a")
    Image.fromarray(fractions, mode="F").save(tmp_path / "a" / "fractions.tif")
    levels = np.full((4, 4), 200, np.float32)  # Up to 255: levels, as before.
    Image.fromarray(levels, mode="F").save(tmp_path / "a" / "levels.tif")

    images = image_folders.load_image_folder(str(tmp_path)).images[..., 0]

    np.testing.assert_array_equal(images[0][0, :2], [255, 128])
    np.testing.assert_array_equal(images[1], 200)


def test_idx_files_under_names_read_as_no_split_are_named_in_the_refusal(tmp_path, random_pixels):
    # They were read as a folder of images: "has no class sub-folders".
    for name, array in (("images-idx3", random_pixels(2, 4, 4)), ("labels-idx1", np.zeros(2, np.uint8))):
        (tmp_path / f"emnist-digits-test-{name}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))
    message = (f"{tmp_path} holds IDX files (emnist-digits-test-images-idx3-ubyte.gz, "
               "emnist-digits-test-labels-idx1-ubyte.gz), but none under a name read as a split: "
               "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], with t10k- or test- for the test split "
               "(or a '.' before idx3); rename them, or link them under those names")
    with pytest.raises(UserError) as refusal:
        data.load_dataset(str(tmp_path), "test")
    assert str(refusal.value) == message
    # As a teacher's training data too, which first checks for a held-out split: it said there were no train/ and
    # test/ sub-folders of class folders.
    with pytest.raises(UserError) as refusal:
        data.check_held_out_split(str(tmp_path))
    assert str(refusal.value) == message


def test_image_folder_reads_jpegs_as_keras_image_dataset_from_directory_does(tmp_path):
    import tensorflow as tf
    import tf_keras

    rng = np.random.default_rng(3)
    smooth = np.cumsum(rng.integers(-6, 7, (2, 16, 16, 3)), axis=2) + 128  # Photograph-like gradients.
    for index, pixels in enumerate(np.clip(smooth, 0, 255).astype(np.uint8)):
        os.makedirs(tmp_path / "rgb" / f"class_{index}")
        Image.fromarray(pixels).save(tmp_path / "rgb" / f"class_{index}" / "photo.jpg", quality=90)
    os.makedirs(tmp_path / "rgb" / "class_2")
    Image.fromarray(smooth[0, ..., 0].clip(0, 255).astype(np.uint8)).save(tmp_path / "rgb" / "class_2" / "gray.jpg")

    dataset = image_folders.load_image_folder(str(tmp_path / "rgb"))

    keras_images = np.concatenate([images.numpy() for images, _ in tf_keras.utils.image_dataset_from_directory(
        str(tmp_path / "rgb"), image_size=(16, 16), shuffle=False, batch_size=8)])
    np.testing.assert_array_equal(dataset.images, keras_images.astype(np.uint8))
    # Pillow's own decoding, used before, differs: the test would not see it otherwise.
    with Image.open(tmp_path / "rgb" / "class_0" / "photo.jpg") as picture:
        assert not np.array_equal(np.asarray(picture.convert("RGB")), dataset.images[0])
    # A grayscale JPEG among them was read as Keras reads it: its gray repeated. Alone, it has one channel.
    gray_pixels = tf.io.decode_jpeg((tmp_path / "rgb" / "class_2" / "gray.jpg").read_bytes(), channels=1).numpy()
    np.testing.assert_array_equal(dataset.images[2], np.repeat(gray_pixels, 3, axis=-1))
    os.makedirs(tmp_path / "gray")
    os.rename(tmp_path / "rgb" / "class_2", tmp_path / "gray" / "class_2")
    gray = image_folders.load_image_folder(str(tmp_path / "gray"))
    assert gray.image_shape == (16, 16, 1)
    np.testing.assert_array_equal(gray.images[0], gray_pixels)
    # A phone photo with a second picture after the first (MPO to Pillow, which decoded it) is a JPEG too.
    os.makedirs(tmp_path / "phone" / "class_0")
    photo = Image.fromarray(np.clip(smooth[1], 0, 255).astype(np.uint8)).resize((64, 64))
    photo.save(tmp_path / "phone" / "class_0" / "photo.jpg", format="MPO", save_all=True,
               append_images=[photo.resize((16, 16))], quality=90)
    with Image.open(tmp_path / "phone" / "class_0" / "photo.jpg") as picture:
        assert picture.format == "MPO"
    np.testing.assert_array_equal(image_folders.load_image_folder(str(tmp_path / "phone")).images[0],
                                  tf.io.decode_jpeg((tmp_path / "phone" / "class_0" / "photo.jpg").read_bytes(),
                                                    channels=3).numpy())


def test_image_folder_split_subdirectory(tmp_path, random_pixels):
    _save_png(tmp_path / "train" / "cat" / "x.png", random_pixels(3, 3))
    _save_png(tmp_path / "test" / "cat" / "y.png", random_pixels(3, 3))
    _save_png(tmp_path / "test" / "dog" / "y.png", random_pixels(3, 3))
    assert data.load_dataset(str(tmp_path), "test").class_names == ("cat", "dog")


def test_image_folder_errors(tmp_path, random_pixels, monkeypatch):
    with pytest.raises(UserError, match="no class sub-folders"):
        image_folders.load_image_folder(str(tmp_path))
    _save_png(tmp_path / "cat" / "a.png", random_pixels(4, 4))
    with pytest.raises(UserError, match="it holds images itself: if they are one class's, pass the folder above it, "
                                        "whose sub-folders are the classes; if they are of every class"):
        image_folders.load_image_folder(str(tmp_path / "cat"))  # One class's folder instead of the dataset's.
    (tmp_path / "cat" / "a.png").unlink()
    (tmp_path / "cat").rmdir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"the class folders of .* hold no images \(\.png, "):
        image_folders.load_image_folder(str(tmp_path))
    (tmp_path / "empty").rmdir()
    _save_png(tmp_path / "huge" / "scan.png", random_pixels(64, 64))
    monkeypatch.setattr("PIL.Image.MAX_IMAGE_PIXELS", 1000)  # Pillow refuses twice its limit: a 20000x10000 PNG here.
    with pytest.raises(UserError, match=r"cannot read image .*scan.png: Image size \(4096 pixels\) exceeds limit"):
        image_folders.load_image_folder(str(tmp_path))  # It was a traceback (DecompressionBombError).
    monkeypatch.undo()
    (tmp_path / "huge" / "scan.png").unlink()
    (tmp_path / "huge").rmdir()
    _save_png(tmp_path / "a" / "small.png", random_pixels(4, 4))
    _save_png(tmp_path / "b" / "large.png", random_pixels(5, 4))
    with pytest.raises(labeled_images.MixedImageSizesError, match=r"small.png is 4x4 but .*large.png is 4x5"):
        image_folders.load_image_folder(str(tmp_path))
    (tmp_path / "b" / "large.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image .*large.png"):
        image_folders.load_image_folder(str(tmp_path))
    # A header that reads but data cut short, as a half-copied JPEG is, fails while decoding.
    from PIL import Image

    Image.fromarray(random_pixels(64, 64, 3)).save(tmp_path / "b" / "large.png")
    with open(tmp_path / "b" / "cut.jpg", "wb") as cut, open(tmp_path / "b" / "large.png", "rb") as whole:
        Image.open(whole).save(cut, format="JPEG")
    (tmp_path / "b" / "large.png").unlink()
    (tmp_path / "b" / "cut.jpg").write_bytes((tmp_path / "b" / "cut.jpg").read_bytes()[:300])
    with pytest.raises(UserError, match="cannot read image .*cut.jpg"):
        image_folders.load_image_folder(str(tmp_path), image_size=(4, 4))


def test_image_folder_photographs_of_different_sizes_are_cropped_and_resized_as_they_load(tmp_path, capsys):
    # Each picture is white inside a black frame that lies outside its central 87.5%,
    # so cropping keeps only white whatever the picture's size.
    for class_name, (height, width) in (("cat", (16, 16)), ("dog", (32, 48)), ("dog2", (48, 32))):
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[height // 16:height - height // 16, width // 16:width - width // 16] = 255  # 1/16 on each side.
        _save_png(tmp_path / class_name / "photo.png", pixels)

    dataset = image_folders.load_image_folder(str(tmp_path), image_size=(5, 7), progress=True)

    assert dataset.images.shape == (3, 5, 7, 3)
    np.testing.assert_array_equal(dataset.images, 255)
    np.testing.assert_array_equal(dataset.labels, [0, 1, 2])
    assert dataset.preparation == ("each cropped to its central 87.5% and resized to 5x7",)  # For the report.
    shown = capsys.readouterr().out
    assert "reading image headers 3/3" in shown and "loading images 3/3" in shown
    # The same crop and resize as TFDS photographs get, computed on one picture.
    picture = np.random.default_rng(1).integers(0, 256, (20, 30, 1), dtype=np.uint8)
    _save_png(tmp_path / "gray" / "photo.png", picture[..., 0])
    for class_name in ("cat", "dog", "dog2"):
        for file in (tmp_path / class_name).iterdir():
            file.unlink()
        (tmp_path / class_name).rmdir()
    loaded = image_folders.load_image_folder(str(tmp_path), image_size=(6, 6)).images[0]
    np.testing.assert_array_equal(loaded, labeled_images.central_crop_and_resize(picture, (6, 6)).numpy())


def test_image_folder_split_may_be_any_sub_folder(tmp_path, random_pixels):
    _save_png(tmp_path / "train" / "cat" / "x.png", random_pixels(3, 3))
    _save_png(tmp_path / "val" / "cat" / "y.png", random_pixels(3, 3))
    _save_png(tmp_path / "val" / "dog" / "y.png", random_pixels(3, 3))

    validation = data.load_dataset(str(tmp_path), "val")

    assert validation.class_names == ("cat", "dog") and len(validation) == 2
    assert validation.name == tmp_path.name
    with pytest.raises(UserError, match=r"has no 'test' sub-folder; its sub-folders \(train, val\) hold no images "
                                        r"themselves: name one as the split"):
        data.load_dataset(str(tmp_path), "test")
    with pytest.raises(UserError, match="must be the name of one of its sub-folders"):
        data.load_dataset(str(tmp_path), "../val")


def test_digits_split_sizes_range_and_determinism():
    train, test = data.load_digits("train"), data.load_digits("test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.image_shape == (8, 8, 1) and train.num_classes == 10
    assert train.images.max() == 255 and train.images.min() == 0
    # The 17 levels of scikit-learn's digits, each at its nearest pixel value (level 1 at 16, not 15).
    assert set(np.unique(train.images)) == {int(round(level * 255 / 16)) for level in range(17)}
    # Stratified: every class is 8 to 12 percent of the test set.
    assert np.bincount(test.labels, minlength=10).min() >= 0.08 * len(test)
    again = data.load_digits("test")
    np.testing.assert_array_equal(again.images, test.images)
    np.testing.assert_array_equal(again.labels, test.labels)
    with pytest.raises(UserError, match="unknown split 'validation'"):
        data.load_digits("validation")


def test_labeled_images_validation_quotes_what_it_got():
    with pytest.raises(UserError, match=r"shape \(2, 3, 3\)"):
        labeled_images.LabeledImages(np.zeros((2, 3, 3), np.uint8), np.zeros(2), num_classes=2, name="x")
    with pytest.raises(UserError, match="dtype float32"):
        labeled_images.LabeledImages(np.zeros((2, 3, 3, 1), np.float32), np.zeros(2), num_classes=2, name="x")
    with pytest.raises(UserError, match="from 0 to 2"):
        labeled_images.LabeledImages(np.zeros((2, 3, 3, 1), np.uint8), np.array([0, 2]), num_classes=2, name="x")
    with pytest.raises(UserError, match=r"shape \(2,\)"):
        labeled_images.LabeledImages(np.zeros((2, 3, 3, 1), np.uint8), np.zeros(3), num_classes=2, name="x")


def test_a_resize_holds_a_bounded_number_of_pixels_at_a_time_and_gives_what_one_resize_gives(random_pixels,
                                                                                             monkeypatch):
    # 4,096 images a chunk whatever their size: 3.2 GB of float32 at 256x256, 1.5 GB more for 600 photographs.
    import tensorflow as tf

    dataset = labeled_images.LabeledImages(random_pixels(5, 16, 16, 3), np.arange(5) % 2, num_classes=2, name="x")
    at_once = np.clip(np.round(tf.image.resize(dataset.images.astype(np.float32), (6, 6)).numpy()), 0, 255)
    monkeypatch.setattr(labeled_images, "RESIZE_CHUNK_PIXELS", 2 * 16 * 16)
    batches = []
    resize = tf.image.resize
    monkeypatch.setattr(tf.image, "resize", lambda images, *args, **kwargs: (
        batches.append(len(images)), resize(images, *args, **kwargs))[1])
    np.testing.assert_array_equal(dataset.resized(6, 6).images, at_once)
    assert batches == [2, 2, 1]
    batches.clear()
    dataset.resized(32, 32)  # Enlarged: the output's pixels bound the chunk.
    assert batches == [1] * 5


def test_a_folder_named_as_a_built_in_dataset_is_told_apart(tmp_path, monkeypatch, capsys, random_pixels):
    # --dataset=digits from a directory holding the user's digits/ folder trained on scikit-learn's digits unsaid.
    _save_png(tmp_path / "digits" / "test" / "seven" / "a.png", random_pixels(16, 16))
    monkeypatch.chdir(tmp_path)
    assert data.load_dataset("digits", "test").image_shape == (8, 8, 1)  # The built-in one, as before.
    assert capsys.readouterr().err == (f"zscgan_tf: digits names the built-in dataset, not the folder "
                                       f"{tmp_path / 'digits'}: pass ./digits for the folder\n")
    assert data.load_dataset("./digits", "test").class_names == ("seven",)


def test_a_random_subset_keeps_the_classes_in_their_proportions(random_pixels):
    labels = np.repeat([0, 1], [900, 100])
    dataset = labeled_images.LabeledImages(random_pixels(1000, 2, 2, 1), labels, num_classes=2, name="x")
    subset = dataset.random_subset(200, seed=3)
    assert len(subset) == 200 and 10 <= np.sum(subset.labels == 1) <= 30  # 100 of 200, class-balanced.
    assert subset.preparation == ("a random subset of 1,000",)
    np.testing.assert_array_equal(subset.images, dataset.random_subset(200, seed=3).images)
    whole = dataset.random_subset(5000, seed=3)
    assert len(whole) == 1000 and whole.preparation == ()


def test_resize_channels_take_and_class_balanced(random_pixels):
    images = np.zeros((6, 4, 4, 3), np.uint8)
    images[..., 0] = 255  # pure red
    dataset = labeled_images.LabeledImages(images, np.array([0, 0, 0, 0, 1, 2]), num_classes=3, name="red")

    resized = dataset.resized(7, 9)
    assert resized.images.shape == (6, 7, 9, 3) and resized.images.dtype == np.uint8
    np.testing.assert_array_equal(resized.images[..., 0], 255)  # bilinear keeps a constant image constant
    gray = dataset.with_channels(1)
    assert gray.image_shape == (4, 4, 1)
    np.testing.assert_array_equal(gray.images, round(255 * labeled_images.LUMINANCE_WEIGHTS[0]))
    np.testing.assert_array_equal(gray.with_channels(3).images[..., 2], gray.images[..., 0])
    assert dataset.to_input_shape((2, 2, 1)).image_shape == (2, 2, 1)
    assert len(dataset.take(2)) == 2
    # Each step is named for the report, in order; one that keeps every image as it was adds none.
    assert dataset.preparation == ()
    assert dataset.to_input_shape((2, 2, 1)).preparation == ("resized from 4x4 to 2x2", "converted to gray")
    assert gray.with_channels(3).preparation == ("converted to gray", "gray repeated to 3 channels")
    assert dataset.take(2).preparation == ("the first 2 of 6",)
    assert dataset.class_balanced(3, seed=1).preparation == ("a class-balanced subset of 6",)
    for kept_whole in (dataset.take(6), dataset.class_balanced(6, seed=1), dataset.resized(4, 4),
                       dataset.with_channels(3)):
        assert kept_whole.preparation == ()

    balanced = dataset.class_balanced(3, seed=1)
    np.testing.assert_array_equal(np.sort(balanced.labels), [0, 1, 2])
    # Classes 1 and 2 have one example each; class 0 fills the rest.
    np.testing.assert_array_equal(np.bincount(dataset.class_balanced(5, seed=1).labels), [3, 1, 1])
    np.testing.assert_array_equal(dataset.class_balanced(4, seed=3).labels, dataset.class_balanced(4, seed=3).labels)


def test_tfds_loader_with_mock_data(monkeypatch):
    import tensorflow_datasets as tfds

    # The mock leaves the dataset unprepared and downloads nothing: no host need resolve.
    _resolving(monkeypatch, lambda host: False)
    with tfds.testing.mock_data(num_examples=5):
        dataset = data.load_dataset("tfds:mnist", "train")
        batches = list(tfds_data.iterate_tfds("cifar10", "test", batch_size=2, image_size=(6, 5)))
    assert dataset.images.shape == (5, 28, 28, 1) and dataset.images.dtype == np.uint8
    assert dataset.num_classes == 10 and dataset.name == "mnist"
    assert [images.shape for images, _ in batches] == [(2, 6, 5, 3), (2, 6, 5, 3), (1, 6, 5, 3)]
    assert all(labels.dtype == np.int64 for _, labels in batches)
    # Bad arguments are refused when called, not at the first batch, and before any dataset is looked for.
    for arguments, refusal in (({"batch_size": 0}, "batch size must be positive, got 0"),
                               ({"image_size": (6,)}, r"image size must be \(height, width\), got \(6,\)"),
                               ({"image_size": (0, 5)}, r"image size must be \(height, width\), got \(0, 5\)")):
        with pytest.raises(UserError, match=f"^{refusal}$"):
            tfds_data.iterate_tfds("no_such_dataset_anywhere", "test", **arguments)


def test_a_tfds_catalog_dataset_gets_as_far_as_its_download(tmp_path):
    # Before it downloads a catalog dataset, TFDS finds the checksums beside the builder's code
    # through `importlib_resources`, which TFDS 4.9.10 declares for Python < 3.9 only
    # (tensorflow/datasets#11212): without it in requirements.txt, every download failed with
    # "No module named 'importlib_resources'". Offline, this is as far as a download goes.
    import tensorflow_datasets as tfds

    assert tfds.builder("mnist", data_dir=str(tmp_path)).code_path.name == "mnist.py"


def test_imagenet_validation_photographs_are_prepared_from_a_manual_archive_and_resized(tmp_path):
    # As `--eval_dataset=tfds:imagenet2012 --eval_manual_dir=<dir> --eval_resize` reads them:
    # TFDS prepares the split from ILSVRC2012_img_val.tar (here 12 photographs of different
    # sizes), labelled by the list it ships, and each image is cropped and resized as it loads.
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as archive:
        for number in range(1, 13):
            photo = io.BytesIO()
            height, width = rng.integers(40, 90, 2)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photo, "JPEG")
            member = tarfile.TarInfo(f"ILSVRC2012_val_{number:08d}.JPEG")
            member.size = photo.tell()
            photo.seek(0)
            archive.addfile(member, photo)

    dataset = data.load_dataset("tfds:imagenet2012", "validation", data_dir=str(tmp_path / "tfds"),
                                manual_dir=str(manual_dir), image_size=(32, 32))

    assert dataset.images.shape == (12, 32, 32, 3) and dataset.num_classes == 1000
    assert dataset.preparation == ("each cropped to its central 87.5% and resized to 32x32",)
    synsets = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()[:12]
    assert sorted(dataset.labels) == sorted(dataset.class_names.index(synset) for synset in synsets)
    assert dataset.class_names[:2] == ("n01440764", "n01443537")  # Keras Applications' order.


def test_a_dataset_downloaded_by_hand_without_its_archives_names_where_they_go(tmp_path):
    # The hint named "manual_dir", which no command has as a flag (train's is --eval_manual_dir; train_teacher.py
    # and the benchmark have none): a place works whatever the command.
    default = tmp_path / "tfds" / "downloads" / "manual"  # TFDS's, under its data directory.
    for manual_dir, where in ((None, default), (tmp_path / "mine", tmp_path / "mine")):
        with pytest.raises(UserError) as refusal:
            data.load_dataset("tfds:imagenet2012", "validation", data_dir=str(tmp_path / "tfds"),
                              manual_dir=manual_dir and str(manual_dir), image_size=(32, 32))
        assert str(refusal.value).startswith("cannot download or prepare TFDS dataset 'imagenet2012' (")
        assert str(refusal.value).endswith(f"; imagenet2012 must be downloaded by hand: put its archives in {where}")
        # TFDS's empty downloads/extracted and imagenet2012 directories were left in the data directory.
        assert not (tmp_path / "tfds").exists()
    # And the folders made above a data directory that was not there.
    with pytest.raises(UserError):
        data.load_dataset("tfds:imagenet2012", "validation", data_dir=str(tmp_path / "new" / "sub" / "tfds"),
                          image_size=(32, 32))
    assert not (tmp_path / "new").exists()
    # A directory that was there before is kept, empty or not.
    (tmp_path / "tfds" / "downloads" / "extracted").mkdir(parents=True)
    with pytest.raises(UserError):
        data.load_dataset("tfds:imagenet2012", "validation", data_dir=str(tmp_path / "tfds"), image_size=(32, 32))
    assert sorted(os.listdir(tmp_path / "tfds")) == ["downloads"]
    assert os.listdir(tmp_path / "tfds" / "downloads") == ["extracted"]


def _resolving(monkeypatch, resolves):
    """Names resolve, or not, whatever this machine's network: `resolves(host)` decides."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if not resolves(host):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for kind in ("http", "https", "all", "no"):
        for variable in (f"{kind}_proxy", f"{kind.upper()}_PROXY"):
            monkeypatch.delenv(variable, raising=False)


def test_a_tfds_download_without_a_network_is_refused_at_once_not_after_minutes_of_retries(tmp_path, monkeypatch):
    # TFDS's retries back off to 102 s: 3 1/2 minutes before the same refusal, after writing downloads/ there.
    import tensorflow_datasets as tfds

    _resolving(monkeypatch, lambda host: False)
    for method in ("download", "download_and_extract"):
        monkeypatch.setattr(tfds.download.DownloadManager, method, lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(UserError) as refusal:
        tfds_data.load_tfds("cifar10:3.0.2", "test", data_dir=str(tmp_path / "tfds"))
    assert str(refusal.value) == (
        "cannot download TFDS dataset 'cifar10:3.0.2': cannot resolve www.cs.toronto.edu (Name or service not "
        "known), as without a network; is the data directory right? Else prepare it with TFDS where there is a "
        f"network and copy its cifar10 directory into {tmp_path}/tfds")
    assert not (tmp_path / "tfds").exists()
    # Fashion-MNIST's refusal goes on with the ways out that need no network.
    with pytest.raises(UserError) as refusal:
        data.load_fashion_mnist("test", data_dir=str(tmp_path / "tfds"))
    message = str(refusal.value)
    assert message.startswith("cannot download TFDS dataset 'fashion_mnist': cannot resolve fashion-mnist.s3")
    assert message.endswith("; or install Debian's package of it (apt-get install -y dataset-fashion-mnist), "
                            f"read from {data.DEBIAN_FASHION_MNIST_DIR}, or pass a directory of its IDX files")


def test_a_tfds_download_is_left_to_tfds_where_it_may_work(tmp_path, monkeypatch):
    # A download that starts, without a network or not, is TFDS's: only one that cannot is refused.
    import tensorflow_datasets as tfds

    def download_fails(*args, **kwargs):
        raise ConnectionError("the download itself failed")

    cached = tmp_path / "cached"
    (cached / "downloads" / "extracted").mkdir(parents=True)
    (cached / "downloads" / "extracted" / "archive").write_bytes(b"")  # Prepared from TFDS's download cache.
    for name, resolves, proxy, data_dir, manual_dir in (
            ("mnist", True, None, tmp_path / "tfds", None),  # A host resolves.
            ("mnist", False, "https://proxy.example:3128", tmp_path / "tfds", None),  # The proxy resolves names.
            ("mnist", False, None, tmp_path / "tfds", str(tmp_path)),  # Archives by hand, for any dataset.
            ("mnist", False, None, cached, None),
            ("domainnet", False, None, tmp_path / "tfds", None)):  # No registered URLs.
        for method in ("download", "download_and_extract"):  # TFDS's download_and_prepare runs, up to them.
            monkeypatch.setattr(tfds.download.DownloadManager, method, download_fails)
        _resolving(monkeypatch, lambda host, resolves=resolves: resolves)
        if proxy:
            monkeypatch.setenv("https_proxy", proxy)
        with pytest.raises(UserError, match=f"^cannot download or prepare TFDS dataset '{name}' \\(ConnectionError"):
            tfds_data.load_tfds(name, "test", data_dir=str(data_dir), manual_dir=manual_dir)
        monkeypatch.undo()


def test_a_tfds_download_says_so_first_since_offline_it_retries_for_minutes(tmp_path, monkeypatch, capsys):
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

    _resolving(monkeypatch, lambda host: True)  # Resolved, but the connection fails: the retries the note warns of.
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(UserError, match="^cannot download or prepare TFDS dataset 'cifar10' \\(ConnectionError"):
        tfds_data.load_tfds("cifar10", "test", data_dir=str(tmp_path))
    assert (f"zscgan_tf: TFDS dataset 'cifar10' is not prepared in {tmp_path}/cifar10/" in capsys.readouterr().err)


def test_looking_a_tfds_dataset_up_leaves_no_temporary_directory(tmp_path, monkeypatch):
    import tempfile

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    _resolving(monkeypatch, lambda host: False)
    with pytest.raises(UserError, match="cannot download TFDS dataset 'mnist'"):
        tfds_data.load_tfds("mnist", "test", data_dir=str(tmp_path / "tfds"))
    # TFDS made a "tmp...tfds" directory for the dataset's information and left it, on every run.
    assert list(temporary.iterdir()) == [] and tempfile.tempdir == str(temporary)


def test_tfds_unknown_dataset_is_a_one_line_user_error():
    with pytest.raises(UserError) as raised:
        tfds_data.load_tfds("no_such_dataset_zscgan", "train")
    assert "\n" not in str(raised.value)


def test_unknown_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'mnist_typo'"):
        data.load_dataset("mnist_typo", "train")
    an_image = tmp_path / "photo.png"
    an_image.write_bytes(b"")
    with pytest.raises(UserError, match="photo.png' is a file; expected a directory of IDX files or of class "
                                        "sub-folders of images"):
        data.load_dataset(str(an_image), "test")


@pytest.mark.skipif(not data.is_idx_directory(data.DEBIAN_FASHION_MNIST_DIR),
                    reason="Debian fashion-mnist package not installed")
def test_fashion_mnist_from_debian_directory():
    test = data.load_fashion_mnist("test")
    assert test.images.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    assert test.class_names[0] == "T-shirt/top" and test.name == "fashion_mnist"


def test_fashion_mnist_is_read_from_debians_directory_when_it_is_there(tmp_path, random_pixels, monkeypatch):
    # The test above reads the real package, and is skipped where it is not installed (a CI image, say).
    write_idx_split(tmp_path, "t10k", random_pixels(20, 28, 28), np.arange(20) % 10, compressed=True)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path))
    monkeypatch.setattr(data, "load_tfds", lambda *args, **kwargs: pytest.fail("TFDS was asked"))
    test = data.load_fashion_mnist("test")
    assert test.images.shape == (20, 28, 28, 1) and test.num_classes == 10
    np.testing.assert_array_equal(test.labels, np.arange(20) % 10)
    assert test.class_names[0] == "T-shirt/top" and test.name == "fashion_mnist"


def test_image_folder_subset_decodes_only_the_images_it_keeps(tmp_path, random_pixels, monkeypatch):
    for label in range(3):
        for index in range(5):
            _save_png(tmp_path / f"class_{label}" / f"{index}.png", random_pixels(4, 4))
    full = image_folders.load_image_folder(str(tmp_path))
    decoded = []
    picture_pixels = image_folders._picture_pixels
    monkeypatch.setattr(image_folders, "_picture_pixels", lambda *args: decoded.append(1) or picture_pixels(*args))

    subset = data.load_dataset(str(tmp_path), "test", max_samples=6, seed=4)

    assert len(decoded) == 6
    expected = full.class_balanced(6, seed=4)  # The same images as subsetting after loading them all.
    np.testing.assert_array_equal(subset.images, expected.images)
    np.testing.assert_array_equal(subset.labels, expected.labels)
    np.testing.assert_array_equal(np.bincount(subset.labels), [2, 2, 2])
    assert subset.preparation == expected.preparation == ("a class-balanced subset of 15",)


def test_image_folder_class_names_are_checked_before_any_image_is_read(tmp_path, random_pixels):
    for class_name in ("b", "a"):
        _save_png(tmp_path / class_name / "0.png", random_pixels(4, 4))
    (tmp_path / "a" / "1.png").write_bytes(b"not a png")  # Reading it would be "cannot read image".
    seen = []

    def refuse(class_names):
        seen.append(class_names)
        raise UserError("refused by its class names")

    with pytest.raises(UserError, match="refused by its class names"):
        data.load_dataset(str(tmp_path), "test", check_class_names=refuse)
    assert seen == [("a", "b")]
    (tmp_path / "a" / "1.png").unlink()
    accepted = data.load_dataset(str(tmp_path), "test", check_class_names=seen.append)
    assert seen[-1] == ("a", "b") and accepted.class_names == ("a", "b")


def test_a_class_balanced_subset_of_at_least_every_sample_is_every_sample_once():
    from zscgan_tf.labeled_images import class_balanced_indices
    labels = np.arange(10) % 3
    for count in (10, 20):
        assert sorted(class_balanced_indices(labels, 3, count, seed=0)) == list(range(10))
    subset = class_balanced_indices(labels, 3, 6, seed=0)
    assert np.bincount(labels[subset], minlength=3).tolist() == [2, 2, 2]
