"""Normalisation layers shared by the model families."""

from __future__ import annotations

import torch
from torch import nn


class ChannelRMSNorm(nn.Module):
    """RMS normalisation over the channel dim (dim 1) of ``B C ...`` tensors, with per-channel weight and bias.

    ``y = x / sqrt(mean_c(x^2) + eps) * weight + bias``; the statistics are computed in float32 and the result is
    cast back to the input dtype before the affine (as DC-AE's ``RMSNorm3d`` does). Works for ``B C H W`` and
    ``B C T H W`` alike. State-dict keys: ``weight``, ``bias``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inv_rms = torch.rsqrt(x.float().square().mean(dim=1, keepdim=True) + self.eps)
        out = (x * inv_rms).to(x.dtype)
        if self.weight is None:
            return out
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return torch.addcmul(self.bias.view(shape), out, self.weight.view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"
