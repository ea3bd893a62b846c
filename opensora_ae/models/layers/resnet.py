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

from .conv import CausalConv3d

# conv_factory(in_channels, out_channels, kernel_size) -> module applied to B C T H W (or B C H W).
ConvFactory = Callable[[int, int, int], nn.Module]


class ResnetBlock(nn.Module):
    """Pre-norm residual block on ``B C T H W`` (or ``B C H W`` with 2-D convs); a checkpointing unit
    (``layers/checkpointing.py``).

    Args:
        in_channels, out_channels: widths.
        conv_factory: builds the convs (e.g. a ``CausalConv3d`` with the family's padding).
        num_groups, eps: GroupNorm settings (statistics pool over all non-channel dims, time included).
        dropout: dropout before ``conv2``.
        shortcut_name: state-dict name of the 1x1(x1) shortcut conv ("conv_shortcut", "nin_shortcut", "conv3").
        shortcut_kernel_size: 1 normally; 3 for Open-Sora-Plan's ``conv_shortcut=True`` variant.
    """

    gradient_checkpointing = False

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
        if torch.is_grad_enabled() or not self._fusable():
            h = self.conv1(F.silu(self.norm1(x)))
            h = self.conv2(self.dropout(F.silu(self.norm2(h))))
            return self._shortcut(x) + h
        # Inference with causal convs: each step replaces the previous tensor, so at most the input, one padded
        # activation and one conv output are alive (the straightforward form also keeps the unpadded activation).
        h = norm_silu_conv(self.norm1, self.conv1, x)
        h = norm_silu_conv(self.norm2, self.conv2, h)
        return h.add_(self._shortcut(x))

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.shortcut_name is None else getattr(self, self.shortcut_name)(x)

    def _fusable(self) -> bool:
        """Both convs are ``CausalConv3d`` and dropout is off (dropout does not commute with padding)."""
        dropout_off = not self.training or self.dropout.p == 0
        return dropout_off and isinstance(self.conv1, CausalConv3d) and isinstance(self.conv2, CausalConv3d)


def norm_silu_conv(norm: nn.Module, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(silu(norm(x)))``; without autograd and with a ``CausalConv3d``, the SiLU runs in place on the conv's
    padded input (``pad_silu_``), so the unpadded activation is never stored next to the padded one."""
    if torch.is_grad_enabled() or not isinstance(conv, CausalConv3d):
        return conv(F.silu(norm(x)))
    return conv.conv(pad_silu_(conv, norm(x)))


def pad_silu_(conv: CausalConv3d, h: torch.Tensor) -> torch.Tensor:
    """``conv.pad_input(silu(h))`` computed as ``silu_(conv.pad_input(h))``, without autograd.

    Padding commutes with SiLU (replicated values are copies, and ``silu(0) = 0``), and activating the padded copy
    in place means the unpadded activation is never stored next to it. ``h`` must be a fresh tensor (a norm
    output): when the conv needs no padding it is activated in place.
    """
    return F.silu(conv.pad_input(h), inplace=True)
