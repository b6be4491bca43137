"""Installs the zscgan_tf package; dependencies are pinned in requirements.txt."""

import pathlib

import setuptools

here = pathlib.Path(__file__).parent
requirements = [line.strip() for line in (here / "requirements.txt").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]

setuptools.setup(
    name="zscgan_tf",
    version="0.1.0",
    description="Data-free int8 quantization of Keras classifiers with a zero-shot conditional GAN (ZS-CGAN)",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["zscgan_tf", "zscgan_tf.*"]),
    # numpy 2.4, scikit-learn 1.9, Pillow 13 and Keras 3.15 need 3.11; TensorFlow 2.21 has no wheel for 3.14.
    python_requires=">=3.11,<3.14",
    install_requires=requirements,
    entry_points={"console_scripts": ["zscgan-train=zscgan_tf.train:main_entry"]},
)
