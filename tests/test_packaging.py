"""The package: pyproject metadata, a wheel that ships the configs, scripts and py.typed, and an installed
``opensora-ae`` that runs without a checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_dependencies_have_lower_bounds_and_ci_pins_torch():
    project = PYPROJECT["project"]
    for requirement in project["dependencies"]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+>=[0-9.]+", requirement), requirement
    assert {"wandb", "samples", "plot", "dev"} <= set(project["optional-dependencies"])
    assert project["scripts"] == {"opensora-ae": "opensora_ae.cli:main"}
    pins = (REPO / ".ci/constraints.txt").read_text().split()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    assert not (REPO / "setup.py").exists()


def _copy_project(target: Path) -> Path:
    """The files a source distribution holds (no build outputs or caches of the checkout)."""
    target.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".venv", "outputs")
    for name in ("pyproject.toml", "README.md", "opensora_ae", "configs", "scripts"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


@pytest.mark.slow
def test_wheel_ships_configs_and_runs_installed_without_a_checkout(tmp_path):
    source = _copy_project(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", ".", "-w",
                    str(tmp_path / "dist")], cwd=source, check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("opensora_ae-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(str(path.relative_to(REPO)) for path in (REPO / "configs").rglob("*") if path.is_file()
                     and path.suffix in (".py", ".json"))
    assert {f"opensora_ae/{name}" for name in shipped} <= names
    assert {"opensora_ae/py.typed", "opensora_ae/scripts/vae/train.py", "opensora_ae/scripts/vae/eval.py"} <= names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, str(site / "bin/opensora-ae")]
    result = subprocess.run([*command, "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "inference" in result.stdout, result.stderr
    result = subprocess.run([*command, "train", "causal_vae", "--print-config", "--max_steps", "3"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "max_steps = 3\n" in result.stdout and "epochs = 10\n" in result.stdout  # _base_ inherited
    assert f"config_path = '{site}/opensora_ae/configs/vae/train/causal_vae.py'" in result.stdout
    assert list(elsewhere.iterdir()) == []
