"""The LDM-style pre-norm residual block shared by the KL video VAEs.

``norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> dropout -> conv2`` plus a shortcut conv when the channel count
changes. HunyuanVideo, Open-Sora-Plan and the Open-Sora 1.2 temporal VAE all use this block; they differ only
in the conv type, the norm's groups/eps, conv biases and the shortcut's name, which are constructor arguments
so that each family's released state-dict keys come out unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# conv_factory(in_channels, out_channels, kernel_size) -> module applied to B C T H W (or B C H W).
ConvFactory = Callable[[int, int, int], nn.Module]


class ResnetBlock(nn.Module):
    """Pre-norm residual block on ``B C T H W`` (or ``B C H W`` with 2-D convs).

    Args:
        in_channels, out_channels: widths.
        conv_factory: builds the convs (e.g. a ``CausalConv3d`` with the family's padding).
        num_groups, eps: GroupNorm settings (statistics pool over all non-channel dims, time included).
        dropout: dropout before ``conv2``.
        shortcut_name: state-dict name of the 1x1(x1) shortcut conv ("conv_shortcut", "nin_shortcut", "conv3").
        shortcut_kernel_size: 1 normally; 3 for Open-Sora-Plan's ``conv_shortcut=True`` variant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        conv_factory: ConvFactory,
        num_groups: int = 32,
        eps: float = 1e-6,
        dropout: float = 0.0,
        shortcut_name: str = "conv_shortcut",
        shortcut_kernel_size: int = 1,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=eps)
        self.conv1 = conv_factory(in_channels, out_channels, 3)
        self.norm2 = nn.GroupNorm(num_groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_factory(out_channels, out_channels, 3)
        self.shortcut_name = shortcut_name if in_channels != out_channels else None
        if self.shortcut_name is not None:
            self.add_module(shortcut_name, conv_factory(in_channels, out_channels, shortcut_kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd, SiLU and the residual sum reuse their fresh inputs' memory (same values, fewer
        # full-size allocations); with autograd they stay out of place because backward needs the inputs.
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        if self.shortcut_name is not None:
            x = getattr(self, self.shortcut_name)(x)
        return h.add_(x) if inplace else x + h
