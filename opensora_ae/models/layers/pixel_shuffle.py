"""Space/time <-> channel rearrangements and the parameter-free shortcuts built on them.

All functions take ``B C T H W`` tensors. Channel order after an unshuffle is ``(c, dt, dh, dw)`` (the source
channel slowest), the same as ``F.pixel_unshuffle`` for the 2-D case, so a shuffle exactly inverts it.
"""

from __future__ import annotations

import torch
from torch import nn


def pixel_unshuffle_3d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``B C T H W -> B (C f^3) T/f H/f W/f``; T, H, W must be divisible by ``factor``."""
    b, c, t, h, w = x.shape
    if t % factor or h % factor or w % factor:
        raise ValueError(f"pixel_unshuffle_3d: T, H, W = {t}, {h}, {w} must be divisible by {factor}")
    f = factor
    x = x.reshape(b, c, t // f, f, h // f, f, w // f, f)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * f**3, t // f, h // f, w // f)


def pixel_shuffle_3d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of ``pixel_unshuffle_3d``: ``B (C f^3) T H W -> B C fT fH fW``."""
    b, c, t, h, w = x.shape
    f = factor
    if c % f**3:
        raise ValueError(f"pixel_shuffle_3d: {c} channels are not divisible by {f}^3")
    x = x.reshape(b, c // f**3, f, f, f, t, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c // f**3, t * f, h * f, w * f)


def pixel_unshuffle_frames(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Per-frame 2-D unshuffle: ``B C T H W -> B (C f^2) T H/f W/f``."""
    b, c, t, h, w = x.shape
    f = factor
    if h % f or w % f:
        raise ValueError(f"pixel_unshuffle_frames: H, W = {h}, {w} must be divisible by {f}")
    x = x.reshape(b, c, t, h // f, f, w // f, f)
    return x.permute(0, 1, 4, 6, 2, 3, 5).reshape(b, c * f * f, t, h // f, w // f)


def pixel_shuffle_frames(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Per-frame 2-D shuffle, inverse of ``pixel_unshuffle_frames``: ``B (C f^2) T H W -> B C T fH fW``."""
    b, c, t, h, w = x.shape
    f = factor
    if c % (f * f):
        raise ValueError(f"pixel_shuffle_frames: {c} channels are not divisible by {f}^2")
    x = x.reshape(b, c // (f * f), f, f, t, h, w)
    return x.permute(0, 1, 4, 5, 2, 6, 3).reshape(b, c // (f * f), t, h * f, w * f)


class _ParameterFreeShortcut(nn.Module):
    """Sizes of a parameter-free shortcut: ``shuffled`` channels times ``factor^2`` (``^3`` too when ``temporal``)
    must split evenly into groups of ``grouped`` channels."""

    def __init__(
        self, in_channels: int, out_channels: int, factor: int, temporal: bool, shuffled: int, grouped: int
    ) -> None:
        super().__init__()
        for power in (2, 3) if temporal else (2,):
            if (shuffled * factor**power) % grouped:
                raise ValueError(f"{type(self).__name__}: {shuffled}*{factor}^{power} not divisible by {grouped}")
        self.in_channels, self.out_channels, self.factor, self.temporal = in_channels, out_channels, factor, temporal

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, factor={self.factor}, temporal={self.temporal}"


class SpaceToChannelAverage(_ParameterFreeShortcut):
    """Parameter-free downsampling shortcut: unshuffle space (and time) into channels, then average channel groups.

    ``B C T H W -> B out T' H/f W/f`` with ``T' = T/f`` when ``temporal`` and ``T != 1`` (a single frame takes the
    per-frame path). Consecutive groups of ``C f^k / out`` channels are averaged.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, temporal: bool = False) -> None:
        super().__init__(in_channels, out_channels, factor, temporal, shuffled=in_channels, grouped=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor > 1:
            temporal = self.temporal and x.shape[2] != 1
            x = pixel_unshuffle_3d(x, self.factor) if temporal else pixel_unshuffle_frames(x, self.factor)
        b, c, t, h, w = x.shape
        return x.view(b, self.out_channels, c // self.out_channels, t, h, w).mean(dim=2)


class ChannelRepeatShuffle(_ParameterFreeShortcut):
    """Parameter-free upsampling shortcut: repeat each channel, then shuffle channels into space (and time).

    ``B C T H W -> B out T' fH fW`` with ``T' = fT`` when ``temporal`` and ``T != 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, temporal: bool = False) -> None:
        super().__init__(in_channels, out_channels, factor, temporal, shuffled=out_channels, grouped=in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        temporal = self.temporal and x.shape[2] != 1
        power = 3 if temporal else 2
        x = x.repeat_interleave(self.out_channels * self.factor**power // self.in_channels, dim=1)
        if self.factor == 1:
            return x
        return pixel_shuffle_3d(x, self.factor) if temporal else pixel_shuffle_frames(x, self.factor)
