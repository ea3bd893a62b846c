"""The named blocks an Open-Sora-Plan CausalVideoVAE ``config.json`` is assembled from.

A released ``config.json`` names every block by its class name (``"encoder_resnet_blocks": ["ResnetBlock2D",
...]``). This module maps those names to modules whose parameter names and shapes equal the release's, so
the released state dicts load unchanged. Layouts are ``B C T H W``; all norms are GroupNorm(32, eps 1e-6).

Blocks come in kinds with one constructor signature each (see ``BLOCK_KINDS``):

* ``conv``: ``(in_channels, out_channels, kernel_size)`` - ``CausalConv3d``, ``Conv2d``
* ``resnet``: ``(in_channels, out_channels, dropout)`` - ``ResnetBlock3D``, ``ResnetBlock2D``
* ``attention``: ``(channels)`` - ``AttnBlock3D``, ``AttnBlock3DFix``
* ``sampler``: ``(in_channels, out_channels)`` - spatial/temporal down- and up-samplers; each has
  ``time_factor`` and ``space_factor`` (how much it shrinks or grows T and H, W).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers.conv import CausalConv3d
from .layers.per_frame import FrameConv2d, apply_per_frame
from .layers.resnet import ResnetBlock

NORM_GROUPS = 32
NORM_EPS = 1e-6
# Initial mix_factor of the learned temporal samplers: sigmoid(2.0) ~ 0.88 of the parameter-free path.
MIX_FACTOR_INIT = 2.0


def normalize(channels: int) -> nn.GroupNorm:
    """The release's ``Normalize``: 32 groups whatever the width, eps 1e-6."""
    return nn.GroupNorm(NORM_GROUPS, channels, eps=NORM_EPS)


def causal_conv(in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int]) -> CausalConv3d:
    """Open-Sora-Plan ``CausalConv3d``: front-pads time with ``kt - 1`` copies of the first frame, zero-pads space."""
    return CausalConv3d(in_channels, out_channels, kernel_size, time_pad="replicate", space_pad="zeros")


def frame_conv(in_channels: int, out_channels: int, kernel_size: int) -> FrameConv2d:
    """Open-Sora-Plan ``Conv2d``: a ``same``-padded image conv applied to every frame."""
    return FrameConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def image_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def replicate_first_frame(x: torch.Tensor, copies: int) -> torch.Tensor:
    """Prepend ``copies`` copies of frame 0 to ``x`` (``B C T H W``)."""
    return torch.cat([x[:, :, :1].expand(-1, -1, copies, -1, -1), x], dim=2)


def upsample_time_keep_first(x: torch.Tensor) -> torch.Tensor:
    """``T = 1 + n`` frames -> ``1 + 2n``: frame 0 kept, the rest linearly interpolated x2 in time.

    Linear interpolation with ``align_corners=False`` (the release's trilinear with unit H, W scale).
    A single frame stays a single frame.
    """
    if x.shape[2] == 1:
        return x
    rest = F.interpolate(x[:, :, 1:], scale_factor=(2.0, 1.0, 1.0), mode="trilinear", align_corners=False)
    return torch.cat([x[:, :, :1], rest], dim=2)


class ResnetBlock3D(ResnetBlock):
    """Pre-norm residual block of causal 3x3x3 convs; 1x1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            in_channels, out_channels, causal_conv, NORM_GROUPS, NORM_EPS, dropout, shortcut_name="nin_shortcut"
        )


class ResnetBlock2D(ResnetBlock):
    """The same block with 3x3 image convs, run frame by frame (GroupNorm statistics are per frame too)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            in_channels, out_channels, image_conv, NORM_GROUPS, NORM_EPS, dropout, shortcut_name="nin_shortcut"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_per_frame(super().forward, x)


class SingleHeadAttentionBlock(nn.Module, ABC):
    """``x + proj_out(attention(q, k, v))`` with ``q, k, v`` 1x1x1 causal convs of ``GroupNorm(x)``, one head.

    Subclasses define ``attend``: which positions form one attention group.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q = causal_conv(channels, channels, 1)
        self.k = causal_conv(channels, channels, 1)
        self.v = causal_conv(channels, channels, 1)
        self.proj_out = causal_conv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return x + self.proj_out(self.attend(self.q(h), self.k(h), self.v(h)))

    @abstractmethod
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``B C T H W`` queries/keys/values -> ``B C T H W``: ``softmax(q k^T / sqrt(C)) v`` within each group."""


class AttnBlock3DFix(SingleHeadAttentionBlock):
    """Self-attention over the ``H*W`` positions of each frame; frames do not see each other."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = q.shape

        def tokens(y: torch.Tensor) -> torch.Tensor:
            return y.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)

        out = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v))
        return out.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class AttnBlock3D(SingleHeadAttentionBlock):
    """The v1.0 attention block, kept exact for the v1.0 weights.

    It reshapes ``B C T H W`` straight to ``(B T) C (H W)`` without first moving T next to B, so each of the
    ``B*T`` attention groups is a slab of ``C*H*W`` consecutive values of the channel-major tensor: the groups
    mix channels and frames instead of being frames. ``AttnBlock3DFix`` attends within real frames; for a
    single frame the two agree.
    """

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = q.shape

        def tokens(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b * t, c, h * w).transpose(1, 2)

        out = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v))
        return out.transpose(1, 2).reshape(b, c, t, h, w)


class Downsample(nn.Module):
    """2x spatial downsampling per frame: zero-pad right/bottom by 1, then a 3x3 stride-2 image conv."""

    time_factor = 1
    space_factor = 2

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_per_frame(lambda frames: self.conv(F.pad(frames, (0, 1, 0, 1))), x)


class SpatialDownsample2x(nn.Module):
    """``Downsample`` with a (1, 3, 3) causal 3-D conv (the v1.0 key layout ``downsample.conv.conv.weight``)."""

    time_factor = 1
    space_factor = 2

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, (1, 3, 3), stride=(1, 2, 2))
        # The release pads right/bottom itself and runs the conv unpadded (kt = 1, so no time padding either).
        self.conv.conv.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class SpatialUpsample2x(nn.Module):
    """Nearest 2x in H and W, then a (1, 3, 3) causal conv (``upsample.conv.conv.weight``)."""

    time_factor = 1
    space_factor = 2

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = causal_conv(in_channels, out_channels, (1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest"))


class Upsample(nn.Module):
    """Image-layer twin of ``SpatialUpsample2x``: nearest 2x, then a 3x3 image conv per frame.

    Key ``upsample.conv.weight`` of shape ``(C, C, 3, 3)``.
    """

    time_factor = 1
    space_factor = 2

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_per_frame(lambda frames: self.conv(F.interpolate(frames, scale_factor=2.0, mode="nearest")), x)


def time_mean_pool(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Mean over ``kernel_size`` frames with stride 2 (``B C T H W``), computed in float32 for 16-bit inputs:
    ``avg_pool3d`` has no bfloat16/float16 kernel on some devices (CPU), and the mean is cheap next to the convs."""
    pooled = F.avg_pool3d(x if x.dtype == torch.float64 else x.float(), (kernel_size, 1, 1), stride=(2, 1, 1))
    return pooled.to(x.dtype)


class TimeDownsample2x(nn.Module):
    """Parameter-free causal 2x time downsampling: 2 copies of frame 0 in front, then a mean over 3 frames, stride 2.

    ``T = 2n + 1`` frames -> ``n + 1``; frame 0 of the output is frame 0 of the input.
    """

    time_factor = 2
    space_factor = 1
    kernel_size = 3

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = replicate_first_frame(x, self.kernel_size - 1)
        return time_mean_pool(x, self.kernel_size)


class TimeDownsampleRes2x(TimeDownsample2x):
    """``a * TimeDownsample2x(x) + (1 - a) * conv(x)``, ``a = sigmoid(mix_factor)`` learned.

    The conv is a plain ``nn.Conv3d`` (3x3x3, stride (2, 1, 1)) on the same first-frame-padded input.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels)
        k = self.kernel_size
        self.conv = nn.Conv3d(in_channels, out_channels, k, stride=(2, 1, 1), padding=(0, k // 2, k // 2))
        self.mix_factor = nn.Parameter(torch.tensor([MIX_FACTOR_INIT]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.mix_factor)
        x = replicate_first_frame(x, self.kernel_size - 1)
        pooled = time_mean_pool(x, self.kernel_size)
        return alpha * pooled + (1 - alpha) * self.conv(x)


class TimeUpsample2x(nn.Module):
    """Parameter-free causal 2x time upsampling: ``1 + n`` frames -> ``1 + 2n`` (see ``upsample_time_keep_first``)."""

    time_factor = 2
    space_factor = 1

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_time_keep_first(x)


class TimeUpsampleRes2x(TimeUpsample2x):
    """``a * up(x) + (1 - a) * CausalConv3d(up(x))`` with ``up = TimeUpsample2x`` and ``a = sigmoid(mix_factor)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels)
        self.conv = causal_conv(in_channels, out_channels, 3)
        self.mix_factor = nn.Parameter(torch.tensor([MIX_FACTOR_INIT]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.mix_factor)
        x = upsample_time_keep_first(x)
        return alpha * x + (1 - alpha) * self.conv(x)


BLOCK_KINDS: dict[str, dict[str, Callable[..., nn.Module]]] = {
    "conv": {"CausalConv3d": causal_conv, "Conv2d": frame_conv},
    "resnet": {"ResnetBlock3D": ResnetBlock3D, "ResnetBlock2D": ResnetBlock2D},
    "attention": {"AttnBlock3D": AttnBlock3D, "AttnBlock3DFix": AttnBlock3DFix},
    "sampler": {
        "Downsample": Downsample,
        "SpatialDownsample2x": SpatialDownsample2x,
        "SpatialUpsample2x": SpatialUpsample2x,
        "Upsample": Upsample,
        "TimeDownsample2x": TimeDownsample2x,
        "TimeDownsampleRes2x": TimeDownsampleRes2x,
        "TimeUpsample2x": TimeUpsample2x,
        "TimeUpsampleRes2x": TimeUpsampleRes2x,
    },
}


def resolve_block(kind: str, name: str, config_key: str) -> Callable[..., nn.Module]:
    """The constructor registered as ``name`` among the ``kind`` blocks; a one-line error names the config key."""
    blocks = BLOCK_KINDS[kind]
    if name not in blocks:
        raise ValueError(
            f"causal_vae config key {config_key!r}: unknown {kind} block {name!r}; use one of {sorted(blocks)}"
        )
    return blocks[name]
