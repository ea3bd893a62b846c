"""LPIPS (Zhang et al. 2018) with the AlexNet backbone and the v0.1 linear heads of the ``lpips`` package.

The network is built by :func:`opensora_ae.losses.perceptual.build_lpips` (the one place that loads LPIPS
offline); the backbone weights are torchvision's ImageNet AlexNet (``alexnet-owt-7be5be79.pth``), read from a
local file (by default torchvision's hub cache). Nothing is downloaded.
"""

from __future__ import annotations

import os
from functools import lru_cache

import lpips as lpips_package
import torch
import torch.nn.functional as F

from opensora_ae.losses.perceptual import BACKBONE_FILES, default_backbone_path
from opensora_ae.losses.perceptual import build_lpips as build_frozen_lpips
from opensora_ae.metrics.blocks import cpu_frame_blocks

ALEXNET_FILE_NAME = BACKBONE_FILES["alex"]


def default_alexnet_path() -> str:
    """Where torchvision caches the ImageNet AlexNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    return str(default_backbone_path("alex"))


def build_lpips(backbone_path: str | None = None) -> lpips_package.LPIPS:
    """Frozen eval-mode ``lpips.LPIPS(net='alex', version='0.1')`` with the AlexNet backbone from a local file.

    Args:
        backbone_path: torchvision AlexNet state dict; default :func:`default_alexnet_path`.
    """
    backbone_path = backbone_path or default_alexnet_path()
    if not os.path.isfile(backbone_path):
        raise FileNotFoundError(
            f"LPIPS needs the AlexNet backbone weights: put {ALEXNET_FILE_NAME} at {backbone_path} "
            "(or pass its path with --lpips_weights)"
        )
    return build_frozen_lpips("alex", backbone_path)


def lpips_layer_maps(model: lpips_package.LPIPS, real: torch.Tensor, fake: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer LPIPS distance maps, before any spatial pooling (on CPU computed in cache-sized frame blocks).

    Args:
        model: an AlexNet v0.1 ``lpips.LPIPS``.
        real, fake: ``N C H W`` frames in ``[0, 1]``.

    Returns:
        One ``N 1 h_k w_k`` map per backbone layer k (5 for AlexNet); LPIPS is the sum of their means.
    """
    per_block = [_block_layer_maps(model, real[block], fake[block]) for block in cpu_frame_blocks(real)]
    return [torch.cat(layer_blocks) for layer_blocks in zip(*per_block)]


def _block_layer_maps(model: lpips_package.LPIPS, real: torch.Tensor, fake: torch.Tensor) -> list[torch.Tensor]:
    """:func:`lpips_layer_maps` of one block: real and fake frames through the backbone in one batch."""
    both = torch.cat([real, fake], dim=0).float() * 2 - 1
    features = model.net(model.scaling_layer(both.contiguous(memory_format=torch.channels_last)))
    maps = []
    for head, feature in zip(model.lins, features):
        feature_real, feature_fake = lpips_package.normalize_tensor(feature).chunk(2, dim=0)
        maps.append(head((feature_real - feature_fake) ** 2))
    return maps


def lpips_from_maps(layer_maps: list[torch.Tensor], frame_size: tuple[int, int] | None = None) -> torch.Tensor:
    """LPIPS from :func:`lpips_layer_maps`, ``N`` values: the sum over layers of each map's spatial mean.

    ``frame_size`` None: the mean at each map's own resolution (``lpips.LPIPS(spatial=False)``, the package
    default). ``frame_size=(H, W)``: the mean of the map upsampled bilinearly (``align_corners=False``) to the
    frame, as ``lpips.LPIPS(spatial=True)`` followed by ``.mean()`` (Open-Sora's and Open-Sora-Plan's
    ``cal_lpips``). Bilinear upsampling is separable, so that mean is the map weighted by one row and one
    column weight vector; the upsampled map itself is never built.
    """
    if frame_size is None:
        return sum(layer_map.mean(dim=(2, 3)) for layer_map in layer_maps).squeeze(1)
    total = 0
    for layer_map in layer_maps:
        rows = upsampled_mean_weights(layer_map.shape[2], frame_size[0]).to(layer_map)
        columns = upsampled_mean_weights(layer_map.shape[3], frame_size[1]).to(layer_map)
        total = total + torch.einsum("nhw,h,w->n", layer_map[:, 0], rows, columns)
    return total


@lru_cache(maxsize=64)
def upsampled_mean_weights(source: int, target: int) -> torch.Tensor:
    """Weight of each of ``source`` samples in the mean of their 1-D linear upsampling (``align_corners=False``,
    torch's size-based scale ``source / target``) to ``target`` samples (float64, sums to 1)."""
    basis = torch.eye(source, dtype=torch.float64).view(source, 1, source)
    upsampled = F.interpolate(basis, size=target, mode="linear", align_corners=False)
    return upsampled.mean(dim=2).squeeze(1)


def lpips_distance(model: lpips_package.LPIPS, real: torch.Tensor, fake: torch.Tensor,
                   spatial: bool = False) -> torch.Tensor:
    """LPIPS of each frame pair.

    Args:
        model: an AlexNet v0.1 ``lpips.LPIPS`` (see :func:`build_lpips`).
        real, fake: ``N C H W`` frames in ``[0, 1]`` (mapped to ``[-1, 1]`` here).
        spatial: the ``spatial=True`` definition (maps upsampled to the frame before the mean; see
            :func:`lpips_from_maps`).

    Returns:
        ``N`` distances.
    """
    if real.shape != fake.shape:
        raise ValueError(f"lpips: real {tuple(real.shape)} and fake {tuple(fake.shape)} frames differ in shape")
    return lpips_from_maps(lpips_layer_maps(model, real, fake), tuple(real.shape[-2:]) if spatial else None)
