"""LPIPS perceptual distance from the ``lpips`` package, loaded offline.

The ``lpips`` package ships its v0.1 linear heads; only the ImageNet backbone is missing offline. It is read
from the torch hub cache (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`` for VGG, torchvision's file
name) or from an explicit ``perceptual_weights=PATH``; nothing is ever downloaded.

``lpips`` (and through it torchvision) is imported only where an LPIPS network is built, so importing the
losses - every training process and torchrun rank does - or training with ``perceptual_loss_weight=0`` does not
pay for it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    import lpips

# torchvision's ImageNet checkpoint file names, as torch.hub caches them.
BACKBONE_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def _check_net(net: str) -> None:
    if net not in BACKBONE_FILES:
        raise ValueError(f"perceptual net {net!r} is not supported; use one of {sorted(BACKBONE_FILES)}")


def default_backbone_path(net: str = "vgg") -> Path:
    """Where torch hub caches torchvision's ImageNet weights for ``net`` (``TORCH_HOME`` aware)."""
    _check_net(net)
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def lpips_backbone_path(net: str = "vgg", weights: str | Path | None = None) -> Path:
    """The file :func:`build_lpips` reads: ``weights`` when given, else the hub-cache default for ``net``."""
    _check_net(net)
    return Path(weights) if weights is not None else default_backbone_path(net)


def lpips_backbone_available(net: str = "vgg", weights: str | Path | None = None) -> bool:
    """True when the LPIPS backbone file (``weights`` or the hub-cache default) exists."""
    return lpips_backbone_path(net, weights).is_file()


def _load_backbone(backbone: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy torchvision ``features.{i}.*`` weights into lpips' ``slice{k}.{i}.*`` modules."""
    target = backbone.state_dict()
    missing = []
    for name in target:
        _slice, index, param = name.split(".")
        source = f"features.{index}.{param}"
        if source not in state:
            missing.append(source)
            continue
        target[name] = state[source]
    if missing:
        raise KeyError(f"{path}: not a torchvision backbone checkpoint, missing keys {missing[:4]}...")
    backbone.load_state_dict(target)


def build_lpips(net: str = "vgg", weights: str | Path | None = None) -> lpips.LPIPS:
    """Frozen eval-mode ``lpips.LPIPS`` (v0.1 heads) with its backbone read from a local file.

    Raises FileNotFoundError naming where to put the file when it is missing.
    """
    path = lpips_backbone_path(net, weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS {net} backbone weights not found at {path}: copy torchvision's {BACKBONE_FILES[net]} there "
            f"(or set perceptual_weights=PATH), or set perceptual_loss_weight=0 to train without LPIPS"
        )
    import lpips

    # pnet_rand=True builds the backbone without torchvision's download; its weights are loaded just below.
    with warnings.catch_warnings():
        # lpips still calls torchvision with the deprecated `pretrained=` argument; not actionable for users.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    _load_backbone(model.net, torch.load(path, map_location="cpu", weights_only=True), path)
    return model.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """LPIPS distance of each image pair: ``B C H W`` in ``[-1, 1]`` (C = 1 or 3) -> ``B``.

    The network is frozen and kept outside the module tree on purpose: it never enters train mode (its
    dropout stays off), never shows up in ``parameters()`` (so no optimizer picks it up) and never bloats
    a ``state_dict``. ``.to()`` / ``.cuda()`` / ``.half()`` still move it (see ``_apply``).
    """

    def __init__(self, net: str = "vgg", weights: str | Path | None = None) -> None:
        super().__init__()
        self.__dict__["lpips"] = build_lpips(net, weights)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> "PerceptualLoss":
        self.lpips._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(self, images: torch.Tensor, images_rec: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape != images_rec.shape:
            raise ValueError(
                f"perceptual loss expects two B C H W tensors of one shape, got {tuple(images.shape)} "
                f"and {tuple(images_rec.shape)}"
            )
        channels = images.shape[1]
        if channels == 1:
            images, images_rec = images.expand(-1, 3, -1, -1), images_rec.expand(-1, 3, -1, -1)
        elif channels != 3:
            raise ValueError(f"perceptual loss needs 1 or 3 channels, got {channels}; set perceptual_loss_weight=0")
        return self.lpips(images, images_rec).flatten()
