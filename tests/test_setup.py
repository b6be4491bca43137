"""setup.py: what `pip install .` asks for, beside requirements.txt's pins."""

import pathlib
import runpy
import shutil
import subprocess
import sys
import zipfile

from packaging.requirements import Requirement

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pins() -> dict:
    text = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8")
    return dict(line.strip().split("==") for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _install_requires() -> dict:
    install_requirements = runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="setup_under_test")[
        "install_requirements"]
    requirements = [Requirement(line) for line in install_requirements(
        (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8"))]
    return {requirement.name: requirement.specifier for requirement in requirements}


def test_the_package_asks_for_ranges_that_hold_the_checked_pins():
    pins, ranges = _pins(), _install_requires()
    assert set(ranges) == set(pins)
    for name, version in pins.items():
        assert ranges[name].contains(version), (name, version, ranges[name])
    # Before, the pins themselves: installing the package moved an environment's numpy, Pillow, ... to them.
    assert ranges["numpy"].contains("2.5.0") and ranges["pillow"].contains("13.1.0")
    assert not ranges["numpy"].contains("3.0.0") and not ranges["numpy"].contains("2.4.5")
    assert ranges["absl-py"].contains("1.4.1") and not ranges["absl-py"].contains("2.0.0")  # TF-MOT: ~= 1.2.
    # TF-MOT and tf-keras were checked with TensorFlow 2.21 alone.
    for name in ("tensorflow", "tf-keras", "tensorboard"):
        assert ranges[name].contains("2.21.9") and not ranges[name].contains("2.22.0"), name
    assert not ranges["tensorflow-model-optimization"].contains("0.9.0")


def test_a_built_wheel_declares_those_ranges_and_the_command(tmp_path):
    # A copy: the build writes build/ and an .egg-info beside setup.py.
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT / "zscgan_tf", source / "zscgan_tf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "requirements.txt", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    # setuptools runs setup.py as __main__, which the guard that lets the test above read it depends on.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, cwd=tmp_path, capture_output=True)
    wheel, = tmp_path.glob("zscgan_tf-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    declared = {Requirement(line.split(": ", 1)[1]) for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")}
    assert {requirement.name.lower().replace("_", "-"): requirement.specifier for requirement in declared} == {
        name.lower().replace("_", "-"): specifier for name, specifier in _install_requires().items()}
    assert "zscgan-train = zscgan_tf.train:main_entry" in entry_points
