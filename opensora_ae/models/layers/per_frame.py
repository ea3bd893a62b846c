"""Run 2-D (image) layers on every frame of a video tensor.

Image layers see a video ``B C T H W`` as a batch of ``B*T`` frames ``C H W``; everything they compute
(convolutions, GroupNorm statistics, attention) then stays inside one frame. Their parameters keep the 2-D
shapes and names of the released image-layer checkpoints (e.g. ``conv_in.weight`` of shape ``(C, 3, 3, 3)``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """``B C T H W`` -> ``(B T) C H W``."""
    batch, channels, frames, height, width = x.shape
    return x.transpose(1, 2).reshape(batch * frames, channels, height, width)


def batch_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B T) C H W`` -> ``B C T H W``."""
    batch_frames, channels, height, width = x.shape
    return x.reshape(batch_frames // frames, frames, channels, height, width).transpose(1, 2)


def apply_per_frame(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply the image function ``fn`` to each frame of ``x`` (``B C T H W``); 4-D inputs pass straight through."""
    if x.ndim == 4:
        return fn(x)
    if x.ndim != 5:
        raise ValueError(f"expected a video B C T H W or images B C H W, got shape {tuple(x.shape)}")
    return batch_to_frames(fn(frames_to_batch(x)), x.shape[2])


class FrameConv2d(nn.Conv2d):
    """``nn.Conv2d`` that accepts ``B C T H W`` and convolves each frame on its own (keys stay ``weight``/``bias``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_per_frame(super().forward, x)
