"""Installs the zscgan_tf package. requirements.txt pins the checked stack, which the README's
commands install; `pip install .` asks for ranges around those pins instead (`install_requirements`),
so that it does not move the packages of an environment it joins back to them."""

import pathlib

import setuptools

here = pathlib.Path(__file__).parent
# TF-MOT 0.8.1 and tf-keras were checked with TensorFlow 2.21 alone, and the TensorFlow family moves
# together: these stay within the checked minor version. Any other package may be the checked version or
# a later one of the same major (what those packages' own requirements allow: TF-MOT 0.8.1 asks for
# absl-py ~= 1.2, TensorFlow 2.21 for h5py < 3.15).
SAME_MINOR_VERSION = ("tensorflow", "tf-keras", "tensorboard", "tensorflow-model-optimization")


def install_requirements(requirements_text: str) -> list:
    """The `install_requires` of requirements.txt's `name==version` pins: `name>=version,<upper`."""
    requirements = []
    for line in requirements_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, version = line.split("==")
        major, minor = (int(part) for part in version.split(".")[:2])
        upper = f"{major}.{minor + 1}" if name in SAME_MINOR_VERSION else str(major + 1)
        requirements.append(f"{name}>={version},<{upper}")
    return requirements


if __name__ == "__main__":  # As pip and setuptools run it; a test reads `install_requirements`.
    setuptools.setup(
        name="zscgan_tf",
        version="0.1.0",
        description="Data-free int8 quantization of Keras classifiers with a zero-shot conditional GAN (ZS-CGAN)",
        long_description=(here / "README.md").read_text(encoding="utf-8"),
        long_description_content_type="text/markdown",
        packages=setuptools.find_packages(include=["zscgan_tf", "zscgan_tf.*"]),
        # numpy 2.4, scikit-learn 1.9, Pillow 13 and Keras 3.15 need 3.11; TensorFlow 2.21 has no wheel for 3.14.
        python_requires=">=3.11,<3.14",
        install_requires=install_requirements((here / "requirements.txt").read_text(encoding="utf-8")),
        entry_points={"console_scripts": ["zscgan-train=zscgan_tf.train:main_entry"]},
    )
