"""Visual comparisons: original | reconstruction | amplified absolute error, as an mp4 and a PNG grid.

Frames are ``T H W C`` uint8 RGB throughout. Each panel row is labelled with the file name and its PSNR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from opensora_ae.data.video_io import write_video
from opensora_ae.metrics.psnr import psnr

ERROR_GAIN = 4.0  # |orig - recn| is small; amplify it so structure in the error is visible


def side_by_side(orig: np.ndarray, recn: np.ndarray, error_gain: float = ERROR_GAIN) -> np.ndarray:
    """``T H 3W C`` frames: original | reconstruction | ``error_gain * |orig - recn|`` (clipped to 255)."""
    if orig.shape != recn.shape:
        raise ValueError(f"cannot compare videos of shapes {orig.shape} and {recn.shape}; they must match")
    error = np.clip(np.abs(orig.astype(np.int16) - recn.astype(np.int16)) * error_gain, 0, 255).astype(np.uint8)
    return np.concatenate([orig, recn, error], axis=2)


def video_psnr(orig: np.ndarray, recn: np.ndarray) -> float:
    """Mean per-frame PSNR (dB, capped at 100) of two ``T H W C`` uint8 videos."""
    to_frames = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    return float(psnr(to_frames(orig), to_frames(recn)).mean())


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((4, 4), text)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255))
    return np.asarray(image)


def grid_image(panels: np.ndarray, num_rows: int = 4) -> np.ndarray:
    """Stack ``num_rows`` evenly spaced frames of ``T H W' C`` panels vertically."""
    rows = np.linspace(0, len(panels) - 1, num=min(num_rows, len(panels))).round().astype(int)
    return np.concatenate([panels[i] for i in rows], axis=0)


def write_comparison(orig: np.ndarray, recn: np.ndarray, name: str, out_dir: str | Path, fps: float = 24.0,
                     num_rows: int = 4) -> dict[str, object]:
    """Write ``out_dir/<name>_compare.mp4`` and ``out_dir/<name>_compare.png``; return their paths and the PSNR."""
    value = video_psnr(orig, recn)
    label = f"{name}  PSNR {value:.2f} dB  (orig | recn | {ERROR_GAIN:g}x error)"
    panels = np.stack([_label(frame, label) for frame in side_by_side(orig, recn)])
    out_dir = Path(out_dir)
    mp4_path, png_path = out_dir / f"{name}_compare.mp4", out_dir / f"{name}_compare.png"
    mp4_path.parent.mkdir(parents=True, exist_ok=True)
    write_video(mp4_path, panels, fps)
    Image.fromarray(grid_image(panels, num_rows)).save(png_path)
    return {"name": name, "psnr": value, "mp4": str(mp4_path), "png": str(png_path)}
