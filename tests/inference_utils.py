"""Fixtures for the inference tests: a tiny random causal VAE saved as weights, clips in sub-folders, configs."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opensora_ae.data.video_io import write_video
from opensora_ae.models import build_model
from opensora_ae.models.checkpoint_io import save_state_dict_file
from parity_utils import model_config

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Clip settings of the tests: 5 frames = 4k+1 for the causal VAE, 16x24 = multiples of its 8x spatial factor.
NUM_FRAMES, HEIGHT, WIDTH = 5, 16, 24

# name -> (frames, height, width) of the readable inputs; sources larger than the clip so they get resized.
GOOD_VIDEOS = {"clip.mp4": (8, 40, 48), "sub/a.mp4": (6, 20, 36), "sub/deep/b.mp4": (7, 32, 40)}
TOO_SHORT = "sub/short.mp4"  # probes fine, fails when a 5-frame clip is read
NOT_A_VIDEO = "sub/broken.mp4"  # fails when the dataset probes it


def tiny_model_cfg() -> dict[str, Any]:
    """The tiny Open-Sora-Plan causal VAE's hyper-parameters (parity fixture ``osp_causalvae_v1_1``), no weights."""
    cfg = model_config("osp_causalvae_v1_1")
    cfg.pop("from_pretrained")
    return cfg


def smooth_frames(num_frames: int, height: int, width: int, seed: int, noise: int = 20) -> np.ndarray:
    """``T H W 3`` uint8 moving sinusoids plus uniform noise in ``[-noise, noise]`` (resizing them gives values
    between uint8 levels)."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi)
    base = 128 + 60 * np.stack([np.sin(x / 4 + t / 2 + phase), np.cos(y / 5 - t / 3), np.sin((x + y) / 6 + phase)], -1)
    return np.clip(base.round() + rng.integers(-noise, noise + 1, size=base.shape), 0, 255).astype(np.uint8)


def write_clip(path: Path, num_frames: int, height: int, width: int, seed: int = 0, fps: float = 12.0,
               noise: int = 20) -> np.ndarray:
    """Write :func:`smooth_frames` losslessly to ``path`` and return them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = smooth_frames(num_frames, height, width, seed, noise)
    write_video(path, frames, fps, lossless=True, preset="ultrafast")
    return frames


def make_video_folder(root: Path) -> Path:
    """Three readable clips in nested sub-folders, one too short for a clip, one that is not a video."""
    for seed, (name, shape) in enumerate(GOOD_VIDEOS.items()):
        write_clip(root / name, *shape, seed=seed)
    write_clip(root / TOO_SHORT, 3, 16, 24, seed=9)
    (root / NOT_A_VIDEO).write_text("this is not a video\n")
    return root


def write_tiny_weights(path: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny causal VAE saved as safetensors (so a subprocess can load the same model)."""
    torch.manual_seed(seed)
    model = build_model(tiny_model_cfg())
    save_state_dict_file(model.state_dict(), path)
    return path


def load_tiny_model(weights: Path) -> torch.nn.Module:
    return build_model({**tiny_model_cfg(), "from_pretrained": str(weights)}).eval()


def write_config(path: Path, model: dict[str, Any], data_path: Path, **top_level: Any) -> Path:
    """An inference config file like ``configs/vae/inference/*.py`` with the tests' clip size."""
    settings = dict(dtype="fp32", batch_size=2, num_frames=NUM_FRAMES, resolution=(HEIGHT, WIDTH), **top_level)
    lines = [f"{key} = {value!r}" for key, value in settings.items()]
    lines.append(f"dataset = dict(type='video_text', data_path={str(data_path)!r})")
    lines.append(f"model = {model!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_command(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a command with the repository importable; fail with its output when it exits non-zero."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def run_script(script: str, argv: list[str], monkeypatch) -> None:
    """Run ``scripts/vae/<script>`` in this process as ``__main__`` with ``argv`` (cheaper than a subprocess)."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    runpy.run_path(str(REPO / "scripts/vae" / script), run_name="__main__")


def write_random_alexnet(folder: Path) -> Path:
    """A seeded random AlexNet backbone saved under the file name LPIPS looks for (nothing is downloaded)."""
    import torchvision

    torch.manual_seed(0)
    path = folder / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path
