"""Frame-level transforms: temporal sampling, the cover-and-crop rule, ``resize_crop`` and ``random_crop``.

Input clips are ``T H W C`` uint8 (as read by :mod:`opensora_ae.data.video_io`); model inputs are float
``C T H W`` in ``[-1, 1]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


def frame_interval(fps: float, sample_rate: int = 1, fps_max: float | None = None) -> int:
    """Frames to step between two sampled frames.

    ``fps_max`` (when set and the source is faster) takes precedence over ``sample_rate``: the interval
    is the smallest integer that brings the sampled rate to ``fps_max`` or below (``ceil(fps / fps_max)``).
    Images (``fps == 0``) and slower sources use ``sample_rate``.
    """
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    if fps_max is None or fps <= fps_max:
        return sample_rate
    if fps_max <= 0:
        raise ValueError(f"fps_max must be > 0, got {fps_max}")
    # The small tolerance keeps 30000/1001 fps at interval 1 for fps_max=30.
    return max(1, math.ceil(fps / fps_max - 1e-6))


def frames_needed(num_frames: int, interval: int) -> int:
    """Source frames spanned by a clip of ``num_frames`` frames taken every ``interval`` frames."""
    return (num_frames - 1) * interval + 1


def clip_start(total_frames: int, num_frames: int, interval: int, rng: np.random.Generator | None) -> int:
    """First frame of a clip: uniform over all valid starts with ``rng`` (training), else 0 (inference)."""
    last_start = total_frames - frames_needed(num_frames, interval)
    if last_start < 0:
        raise ValueError(f"clip of {num_frames} frames every {interval} needs {frames_needed(num_frames, interval)} "
                         f"frames, source has {total_frames}")
    if rng is None:
        return 0
    return int(rng.integers(0, last_start + 1))


class CropPlan(NamedTuple):
    """Where a ``src_h x src_w`` frame goes: resize to ``resized_h x resized_w``, keep ``height x width`` at
    ``(top, left)`` of the resized frame."""

    resized_h: int
    resized_w: int
    top: int
    left: int
    height: int
    width: int


def cover_crop_plan(src_h: int, src_w: int, height: int, width: int,
                    rng: np.random.Generator | None = None) -> CropPlan:
    """The resize-to-cover-then-crop rule shared by :func:`resize_crop` and the decoder-side resize.

    The frame is scaled (aspect ratio kept) by the smallest factor that covers ``height x width``, then a
    window of that size is cut at a random offset drawn from ``rng`` (top first, then left; training) or at
    the centre when ``rng`` is None (inference).
    """
    if min(src_h, src_w, height, width) < 1:
        raise ValueError(f"cover_crop_plan needs positive sizes, got source {src_h}x{src_w}, target {height}x{width}")
    scale = max(height / src_h, width / src_w)
    resized_h, resized_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    top, left = _crop_offsets(resized_h - height, resized_w - width, rng)
    return CropPlan(resized_h, resized_w, top, left, height, width)


def resize_crop(frames: np.ndarray | torch.Tensor, height: int, width: int,
                rng: np.random.Generator | None = None) -> torch.Tensor:
    """``T H W C`` uint8 -> float ``C T H W`` in [-1, 1] of size ``height x width``.

    Resizes with torch (bilinear, antialiased when shrinking) following :func:`cover_crop_plan`, then crops.
    """
    return to_model_input(resize_crop_frames(frames, height, width, rng))


def resize_crop_frames(frames: np.ndarray | torch.Tensor, height: int, width: int,
                       rng: np.random.Generator | None = None) -> torch.Tensor:
    """:func:`resize_crop` before the mapping to model input: uint8 ``T H W C`` frames of ``height x width``."""
    video = _as_tensor(frames)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != torch.uint8:
        raise ValueError(f"resize_crop expects T H W 3 uint8 frames, got shape {tuple(video.shape)} {video.dtype}")
    # T H W C seen as T C H W is channels-last: torch's fast uint8 resize path, no full-size float copy.
    video = video.permute(0, 3, 1, 2)
    src_h, src_w = video.shape[-2:]
    plan = cover_crop_plan(src_h, src_w, height, width, rng)
    if (plan.resized_h, plan.resized_w) != (src_h, src_w):
        video = F.interpolate(video, size=(plan.resized_h, plan.resized_w), mode="bilinear", align_corners=False,
                              antialias=plan.resized_h < src_h or plan.resized_w < src_w)
    return video[:, :, plan.top:plan.top + height, plan.left:plan.left + width].permute(0, 2, 3, 1)


def random_crop(frames: np.ndarray | torch.Tensor, height: int, width: int,
                rng: np.random.Generator | None = None) -> torch.Tensor:
    """``T H W C`` uint8 -> float ``C T H W`` in [-1, 1]: a ``height x width`` window at the frames' own scale
    (offset from ``rng``, top first; the centre when None). Frames smaller than the window on either side are
    scaled to cover it first (:func:`resize_crop`)."""
    return to_model_input(random_crop_frames(frames, height, width, rng))


def random_crop_frames(frames: np.ndarray | torch.Tensor, height: int, width: int,
                       rng: np.random.Generator | None = None) -> torch.Tensor:
    """:func:`random_crop` before the mapping to model input: uint8 ``T H W C`` frames of ``height x width``."""
    video = _as_tensor(frames)
    src_h, src_w = video.shape[1:3]
    if src_h < height or src_w < width:
        return resize_crop_frames(video, height, width, rng)
    top, left = _crop_offsets(src_h - height, src_w - width, rng)
    return video[:, top:top + height, left:left + width]


def to_model_input(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``T H W C`` uint8 -> float ``C T H W`` in [-1, 1] (``x / 127.5 - 1``)."""
    # Reorder the 1-byte values first, then scale in place: one float allocation, written in order.
    return uint8_to_model_range(to_model_layout(frames))


def to_model_layout(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``T H W C`` uint8 -> contiguous uint8 ``C T H W`` (the model's layout, values still 0-255)."""
    video = _as_tensor(frames)
    if video.ndim != 4 or video.dtype != torch.uint8:
        raise ValueError(f"model input is made from T H W C uint8 frames, got shape {tuple(video.shape)} {video.dtype}")
    return video.permute(3, 0, 1, 2).contiguous()


def uint8_to_model_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 values (any shape, layout or device) -> float32 in [-1, 1]: ``x / 127.5 - 1``, the same bits on every
    device (one IEEE division and subtraction per value). Memory format is kept."""
    return video.float().div_(127.5).sub_(1.0)


def _as_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor view of ``frames``; arrays with negative strides (``np.rot90`` views) are copied first."""
    if isinstance(frames, torch.Tensor):
        return frames
    array = np.asarray(frames)
    return torch.from_numpy(np.ascontiguousarray(array) if any(step < 0 for step in array.strides) else array)


def _crop_offsets(spare_h: int, spare_w: int, rng: np.random.Generator | None) -> tuple[int, int]:
    if rng is None:
        return spare_h // 2, spare_w // 2
    return int(rng.integers(0, spare_h + 1)), int(rng.integers(0, spare_w + 1))


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """Inverse of the value mapping: float ``C T H W`` in [-1, 1] -> ``T H W C`` uint8 (for writing videos)."""
    if video.ndim != 4:
        raise ValueError(f"to_uint8_frames expects C T H W, got shape {tuple(video.shape)}")
    scaled = ((video.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return scaled.permute(1, 2, 3, 0).numpy()
