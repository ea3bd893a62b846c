"""Convolutions shared by every model family."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

TimePad = Literal["replicate", "zeros"]
SpacePad = Literal["zeros", "replicate"]


def _triple(value: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)


class CausalConv3d(nn.Module):
    """3-D convolution that only looks at the current and earlier frames.

    Input/output layout ``B C T H W``. Time is padded at the front only, by
    ``dilation * (kt - 1) + (1 - stride_t)`` frames (never negative), so that frame ``t`` of the output depends on
    input frames ``<= t``. ``time_pad="replicate"`` repeats the first frame (HunyuanVideo, Open-Sora-Plan);
    ``time_pad="zeros"`` pads zeros (Open-Sora 1.2 temporal VAE). Height and width get symmetric ``k // 2``
    padding, zeros or replicated edge pixels (HunyuanVideo pads all three dims with replicate).
    ``front_frames`` overrides the number of front frames: HunyuanVideo pads ``kt - 1`` even for strided convs,
    so that the first output frame sees the first input frame alone.

    The wrapped ``nn.Conv3d`` lives at ``.conv`` so state-dict keys read ``<name>.conv.weight`` as in the
    released checkpoints.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
        dilation: int = 1,
        bias: bool = True,
        time_pad: TimePad = "replicate",
        space_pad: SpacePad = "zeros",
        front_frames: int | None = None,
    ) -> None:
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        stride = _triple(stride)
        self.time_pad = time_pad
        self.space_pad = space_pad
        if front_frames is None:
            front_frames = max(dilation * (kt - 1) + (1 - stride[0]), 0)
        self.front_frames = front_frames
        self.spatial_padding = (kw // 2, kw // 2, kh // 2, kh // 2)
        conv_padding = (0, 0, 0) if space_pad == "replicate" else (0, kh // 2, kw // 2)
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            (kt, kh, kw),
            stride=stride,
            padding=conv_padding,
            dilation=(dilation, 1, 1),
            bias=bias,
        )

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the causal time padding (and replicate spatial padding when selected)."""
        if self.space_pad == "replicate" and (self.front_frames or any(self.spatial_padding)):
            return F.pad(x, (*self.spatial_padding, self.front_frames, 0), mode="replicate")
        if self.front_frames == 0:
            return x
        if self.time_pad == "replicate":
            front = x[:, :, :1].expand(-1, -1, self.front_frames, -1, -1)
        else:
            front = x.new_zeros(x.shape[0], x.shape[1], self.front_frames, *x.shape[3:])
        return torch.cat([front, x], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad_input(x))
