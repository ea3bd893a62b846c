"""N-layer PatchGAN discriminator of Open-Sora 2.0 (3-D) and its per-frame 2-D variant.

Layout (Open-Sora 2.0 ``NLayerDiscriminator3D``, ``n_layers=5``): conv(3->64, stride 2) + LeakyReLU(0.2), then
``n_layers - 1`` blocks conv(no bias) + BatchNorm + LeakyReLU(0.2) + Dropout widening 64->128->256->512->512
(strides 2 then (1, 2, 2) in T, H, W), one stride-1 block (512->512) and a stride-1 conv to 1 logit channel.
Kernel 3, padding 1, so a ``32 x 256 x 256`` clip gives ``8 x 8 x 8`` logits. Parameter names
(``main.{i}.weight``, ...) match Open-Sora's so its discriminator checkpoints load.

``conv_cls="conv2d"`` builds the same stack with 2-D convs (stride 2 on H, W everywhere) and applies it to each
frame: ``B C T H W -> B 1 T h w``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..registry import DISCRIMINATORS
from .checkpoint_io import load_weights

_CONV_AND_NORM = {"conv3d": (nn.Conv3d, nn.BatchNorm3d), "conv2d": (nn.Conv2d, nn.BatchNorm2d)}
LEAKY_SLOPE = 0.2
MAX_WIDTH_MULT = 8


def _init_weights(module: nn.Module) -> None:
    """pix2pix / Open-Sora init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@DISCRIMINATORS.register_module("N_Layer_discriminator_3D")
class NLayerDiscriminator(nn.Module):
    """PatchGAN on videos ``B C T H W`` (values in [-1, 1]) -> logits ``B 1 t h w``.

    Args:
        input_nc: input channels.
        ndf: width of the first conv; later widths are ``ndf * min(2**n, 8)``.
        n_layers: number of stride-2 convs (the first plus ``n_layers - 1`` normalised blocks).
        conv_cls: ``"conv3d"`` (spatio-temporal, Open-Sora 2.0) or ``"conv2d"`` (per frame).
        kernel_size: conv kernel (Open-Sora 2.0: 3; taming / Open-Sora-Plan 2-D PatchGAN: 4).
        dropout: dropout after each normalised block (Open-Sora 2.0: 0.3).
        from_pretrained: ``.safetensors`` / ``.pt`` file (or folder) with a matching state dict, loaded strictly.
    """

    def __init__(
        self,
        input_nc: int = 3,
        ndf: int = 64,
        n_layers: int = 5,
        conv_cls: str = "conv3d",
        kernel_size: int = 3,
        dropout: float = 0.3,
        from_pretrained: str | Path | None = None,
    ) -> None:
        super().__init__()
        if conv_cls not in _CONV_AND_NORM:
            raise ValueError(f"discriminator.conv_cls={conv_cls!r}: use one of {sorted(_CONV_AND_NORM)}")
        if n_layers < 1:
            raise ValueError(f"discriminator.n_layers={n_layers}: needs at least 1")
        self.conv_cls = conv_cls
        conv, _norm = _CONV_AND_NORM[conv_cls]
        layers: list[nn.Module] = [
            conv(input_nc, ndf, kernel_size, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE, True),
        ]
        width = ndf
        for n in range(1, n_layers):
            next_width = ndf * min(2**n, MAX_WIDTH_MULT)
            layers += self._block(width, next_width, kernel_size, self._stride(n), dropout)
            width = next_width
        last_width = ndf * min(2**n_layers, MAX_WIDTH_MULT)
        layers += self._block(width, last_width, kernel_size, 1, dropout)
        layers.append(conv(last_width, 1, kernel_size, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)
        if from_pretrained is not None:
            load_weights(self, from_pretrained, strict=True)

    def _stride(self, n: int) -> int | tuple[int, int, int]:
        """Stride of the n-th normalised block: Open-Sora 2.0 halves T only in the first two convs."""
        if self.conv_cls == "conv2d" or n == 1:
            return 2
        return (1, 2, 2)

    def _block(
        self, in_width: int, out_width: int, kernel_size: int, stride: int | tuple[int, int, int], dropout: float
    ) -> list[nn.Module]:
        conv, norm = _CONV_AND_NORM[self.conv_cls]
        return [
            # No bias: BatchNorm's shift makes it redundant.
            conv(in_width, out_width, kernel_size, stride=stride, padding=1, bias=False),
            norm(out_width),
            nn.LeakyReLU(LEAKY_SLOPE, True),
            nn.Dropout(dropout),
        ]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5:
            raise ValueError(f"discriminator expects B C T H W, got shape {tuple(video.shape)}")
        if self.conv_cls == "conv3d":
            return self.main(video)
        batch, channels, frames, height, width = video.shape
        images = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
        logits = self.main(images)
        return logits.reshape(batch, frames, *logits.shape[1:]).transpose(1, 2)
