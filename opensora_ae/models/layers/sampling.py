"""Causal up- and down-samplers for video autoencoders.

Both keep the causal rule of the encoders they serve: the first frame is handled on its own, so a causal
model maps ``1 + s*k`` frames to ``1 + k`` frames (down) and ``1 + k`` to ``1 + s*k`` (up) per temporal stage.
Each sampler wraps its conv at ``.conv`` (a ``CausalConv3d``, whose own ``nn.Conv3d`` sits at ``.conv.conv``),
which gives the released key names ``downsamplers.0.conv.conv.weight`` / ``upsamplers.0.conv.conv.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import CausalConv3d, SpacePad, TimePad, _triple


def causal_nearest_upsample(x: torch.Tensor, scale_factor: tuple[int, int, int]) -> torch.Tensor:
    """Nearest-neighbour upsampling of ``B C T H W`` that keeps the first frame single.

    The first frame is upsampled in space only, the remaining frames by ``(st, sh, sw)``: ``T`` frames become
    ``1 + st * (T - 1)``. Nearest upsampling only copies values, so repeating frames on the small input first
    and then upsampling in space gives exactly the per-part result with one large allocation instead of three.
    """
    st, sh, sw = scale_factor
    num_frames = x.shape[2]
    if st != 1 and num_frames > 1:
        repeats = torch.full((num_frames,), st, device=x.device)
        repeats[0] = 1
        x = x.repeat_interleave(repeats, dim=2, output_size=1 + st * (num_frames - 1))
    if sh == 1 and sw == 1:
        return x
    return F.interpolate(x, scale_factor=(1, sh, sw), mode="nearest")


class CausalUpsample(nn.Module):
    """Causal nearest upsampling followed by a causal conv: ``B C T H W -> B C' (1+st(T-1)) sh*H sw*W``.

    Args:
        in_channels, out_channels: widths (``out_channels`` defaults to ``in_channels``).
        scale_factor: ``(st, sh, sw)`` integer factors.
        kernel_size: kernel of the conv after upsampling.
        time_pad, space_pad: padding modes of that conv (see ``CausalConv3d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        scale_factor: int | tuple[int, int, int] = 2,
        kernel_size: int | tuple[int, int, int] = 3,
        time_pad: TimePad = "replicate",
        space_pad: SpacePad = "replicate",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.scale_factor = _triple(scale_factor)
        self.conv = CausalConv3d(
            in_channels, out_channels or in_channels, kernel_size, bias=bias, time_pad=time_pad, space_pad=space_pad
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(causal_nearest_upsample(x, self.scale_factor))


class CausalDownsample(nn.Module):
    """Strided causal conv: ``B C T H W -> B C' (1+(T-1)//st) H/sh W/sw`` for ``T = 1 + st*k``.

    The time axis gets ``kt - 1`` front frames whatever the stride, so the first output frame sees the first
    input frame alone and every later one sees ``st`` new frames (HunyuanVideo's convention).

    Args:
        in_channels, out_channels: widths (``out_channels`` defaults to ``in_channels``).
        stride: ``(st, sh, sw)``.
        kernel_size: conv kernel.
        time_pad, space_pad: padding modes (see ``CausalConv3d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        stride: int | tuple[int, int, int] = 2,
        kernel_size: int | tuple[int, int, int] = 3,
        time_pad: TimePad = "replicate",
        space_pad: SpacePad = "replicate",
        bias: bool = True,
    ) -> None:
        super().__init__()
        kt = _triple(kernel_size)[0]
        self.conv = CausalConv3d(
            in_channels,
            out_channels or in_channels,
            kernel_size,
            stride=stride,
            bias=bias,
            time_pad=time_pad,
            space_pad=space_pad,
            front_frames=kt - 1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
