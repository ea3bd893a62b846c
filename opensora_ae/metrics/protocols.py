"""Evaluation protocols: how frames are picked, resized and cropped before the metrics see them.

Two protocols exist:

* ``"ours"`` (default): frames ``0, s, 2s, ...``; uint8 frames resized bilinearly with antialiasing when
  shrinking, the long side rounded, a floor-centred crop; LPIPS as the ``lpips`` package's default
  (``spatial=False``: each layer's distance map averaged at its own resolution).
* ``"opensora"``: what Open-Sora 1.2's ``eval/vae/eval_common_metric.py`` and Open-Sora-Plan's
  ``opensora/eval/eval_common_metric.py`` do, so that numbers compare with their published tables: frame
  indices ``linspace(0, s * n - 1, n)`` truncated to int, frames divided by 255 *before* resizing (float),
  bilinear without antialiasing, the long side ``floor``-ed (pytorchvideo ``ShortSideScale``), a crop offset
  rounded half to even (torchvision ``CenterCropVideo``), and LPIPS with ``spatial=True`` (each layer's map
  upsampled bilinearly to the frame before the mean, their ``cal_lpips``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PROTOCOLS = ("ours", "opensora")


@dataclass(frozen=True)
class Protocol:
    """The choices that differ between protocols (see the module docstring)."""

    name: str
    lpips_spatial: bool
    float_resize: bool  # divide by 255, then resize without antialias, floor the long side, round the crop
    linspace_frames: bool


def get_protocol(name: str) -> Protocol:
    """The :class:`Protocol` called ``name`` (one of :data:`PROTOCOLS`)."""
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol {name!r} is unknown; choose from {list(PROTOCOLS)}")
    opensora = name == "opensora"
    return Protocol(name=name, lpips_spatial=opensora, float_resize=opensora, linspace_frames=opensora)


def opensora_frame_indices(total_frames: int, num_frames: int, sample_rate: int) -> np.ndarray:
    """Frame indices Open-Sora's eval picks: ``linspace(0, e - 1, n)`` cast to int, ``e = sample_rate *
    num_frames``; a video shorter than ``e`` gives ``int(total / e * num_frames)`` frames spread over it."""
    span = sample_rate * num_frames
    if total_frames < span:
        span, num_frames = total_frames, int(total_frames / span * num_frames)
    return np.linspace(0, span - 1, num_frames, dtype=int)


def floor_short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """pytorchvideo ``short_side_scale`` sizes: the short side becomes ``short_side``, the long one
    ``floor(long / short * short_side)`` (a square stays square)."""
    if width < height:
        return int(math.floor(height / width * short_side)), short_side
    return short_side, int(math.floor(width / height * short_side))


def round_half_even_crop_offsets(height: int, width: int, crop_size: int) -> tuple[int, int]:
    """torchvision ``center_crop`` offsets: ``round((size - crop) / 2)`` with Python's half-to-even rounding."""
    return int(round((height - crop_size) / 2.0)), int(round((width - crop_size) / 2.0))


def opensora_resize_crop(video: torch.Tensor, resolution: int | None, crop_size: int | None) -> torch.Tensor:
    """Open-Sora's preprocessing of ``T C H W`` uint8 frames -> float32 ``T C H W`` in [0, 1].

    Divide by 255, resize the short side to ``resolution`` (bilinear, ``align_corners=False``, no antialias,
    long side floored), then crop ``crop_size`` squared at the half-to-even rounded centre offset.
    ``None`` skips that step. The caller checks that the crop fits.
    """
    video = video.float() / 255.0
    if resolution is not None:
        size = floor_short_side_size(video.shape[-2], video.shape[-1], resolution)
        # At the same size, bilinear interpolation with half-pixel centres is the identity: skip the pass.
        if size != tuple(video.shape[-2:]):
            video = F.interpolate(video, size=size, mode="bilinear", align_corners=False)
    if crop_size is not None:
        top, left = round_half_even_crop_offsets(video.shape[-2], video.shape[-1], crop_size)
        video = video[:, :, top : top + crop_size, left : left + crop_size]
    return video
