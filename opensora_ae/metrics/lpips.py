"""LPIPS (Zhang et al. 2018) with the AlexNet backbone and the v0.1 linear heads of the ``lpips`` package.

The backbone weights are torchvision's ImageNet AlexNet (``alexnet-owt-7be5be79.pth``), read from a local
file (by default torchvision's hub cache); nothing is downloaded.
"""

from __future__ import annotations

import os
import warnings

import lpips as lpips_package
import torch

ALEXNET_FILE_NAME = "alexnet-owt-7be5be79.pth"


def default_alexnet_path() -> str:
    """Where torchvision caches the ImageNet AlexNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_FILE_NAME)


def _load_alexnet_backbone(backbone: torch.nn.Module, path: str) -> None:
    """Copy torchvision ``features.<i>.*`` weights into the lpips slices (``slice<k>.<i>.*``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapped = {}
    for key in backbone.state_dict():
        _, layer, param = key.split(".")
        source_key = f"features.{layer}.{param}"
        if source_key not in state:
            raise KeyError(f"{path}: key {source_key!r} missing; expected a torchvision AlexNet state dict")
        mapped[key] = state[source_key]
    backbone.load_state_dict(mapped)


def build_lpips(
    backbone_path: str | None = None,
    heads_path: str | None = None,
    pnet_rand: bool = False,
) -> lpips_package.LPIPS:
    """Build an eval-mode ``lpips.LPIPS(net='alex', version='0.1')`` without touching the network.

    Args:
        backbone_path: torchvision AlexNet state dict; default :func:`default_alexnet_path`.
        heads_path: v0.1 linear heads; default the ``alex.pth`` shipped with the lpips package.
        pnet_rand: keep a randomly initialised backbone (tests only; the numbers are then meaningless).
    """
    if not pnet_rand:
        backbone_path = backbone_path or default_alexnet_path()
        if not os.path.isfile(backbone_path):
            raise FileNotFoundError(
                f"LPIPS needs the AlexNet backbone weights: put {ALEXNET_FILE_NAME} at {backbone_path} "
                "(or pass its path with --lpips_backbone)"
            )
    if heads_path is not None and not os.path.isfile(heads_path):
        raise FileNotFoundError(f"LPIPS heads file {heads_path} does not exist (--lpips_weights)")
    with warnings.catch_warnings():
        # lpips builds its backbone through torchvision's deprecated `pretrained=` argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, model_path=heads_path, verbose=False)
    if not pnet_rand:
        _load_alexnet_backbone(model.net, backbone_path)
    return model.eval().requires_grad_(False)


def lpips_layer_maps(model: lpips_package.LPIPS, real: torch.Tensor, fake: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer LPIPS distance maps, before any spatial pooling.

    Args:
        model: an AlexNet v0.1 ``lpips.LPIPS``.
        real, fake: ``N C H W`` frames in ``[0, 1]``.

    Returns:
        One ``N 1 h_k w_k`` map per backbone layer k (5 for AlexNet); LPIPS is the sum of their means.
    """
    both = torch.cat([real, fake], dim=0).float() * 2 - 1
    features = model.net(model.scaling_layer(both.contiguous(memory_format=torch.channels_last)))
    maps = []
    for head, feature in zip(model.lins, features):
        feature_real, feature_fake = lpips_package.normalize_tensor(feature).chunk(2, dim=0)
        maps.append(head((feature_real - feature_fake) ** 2))
    return maps


def lpips_from_maps(layer_maps: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS from :func:`lpips_layer_maps`: the sum over layers of each map's spatial mean, ``N`` values."""
    return sum(layer_map.mean(dim=(2, 3)) for layer_map in layer_maps).squeeze(1)


def lpips_distance(model: lpips_package.LPIPS, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LPIPS of each frame pair.

    Args:
        model: an AlexNet v0.1 ``lpips.LPIPS`` (see :func:`build_lpips`).
        real, fake: ``N C H W`` frames in ``[0, 1]`` (mapped to ``[-1, 1]`` here).

    Returns:
        ``N`` distances.
    """
    if real.shape != fake.shape:
        raise ValueError(f"lpips: real {tuple(real.shape)} and fake {tuple(fake.shape)} frames differ in shape")
    return lpips_from_maps(lpips_layer_maps(model, real, fake))
