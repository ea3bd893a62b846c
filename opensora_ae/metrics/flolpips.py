"""FloLPIPS (Danier et al. 2022): LPIPS distance maps weighted by the optical-flow error.

For consecutive frames t, t+1: ``d = flow(real_t -> real_t+1) - flow(fake_t -> fake_t+1)`` (PWC-Net), and
``FloLPIPS_t = sum_k sum_{h,w} map_k[h, w] * |d_k[h, w]| / sum_{h,w} |d_k|`` where ``map_k`` is the LPIPS
distance map of layer k for (real_t, fake_t) and ``d_k`` the flow difference resized bilinearly to it.
A video scores the mean over its T-1 frame pairs.
"""

from __future__ import annotations

import lpips as lpips_package
import torch
import torch.nn.functional as F

from opensora_ae.metrics.lpips import lpips_layer_maps
from opensora_ae.metrics.pwcnet import PWCNet


def flow_weighted_sum(distance_map: torch.Tensor, flow_difference: torch.Tensor) -> torch.Tensor:
    """Weight a distance map by the normalised magnitude of a flow difference.

    Args:
        distance_map: ``B 1 h w`` LPIPS map of one layer.
        flow_difference: ``B 2 H W`` flow difference in pixels.

    Returns:
        ``B`` weighted sums. Where the flow difference is zero everywhere the reference divides 0 by 0 and
        returns NaN; there the weights are uniform instead (the limit of adding any constant to the
        magnitude), which gives the plain LPIPS of that layer (0 for identical frames).
    """
    height, width = distance_map.shape[-2:]
    flow = F.interpolate(flow_difference, size=(height, width), mode="bilinear", align_corners=False)
    magnitude = flow.pow(2).sum(dim=1, keepdim=True).sqrt()
    total = magnitude.sum(dim=(1, 2, 3), keepdim=True)
    uniform = torch.full_like(magnitude, 1.0 / (height * width))
    weights = torch.where(total > 0, magnitude / total.clamp_min(torch.finfo(total.dtype).tiny), uniform)
    return (distance_map * weights).sum(dim=(1, 2, 3))


def flow_difference(flow_net: PWCNet, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``flow(real_t -> real_t+1) - flow(fake_t -> fake_t+1)`` for ``T C H W`` frames in [0, 1]: ``T-1 2 H W``."""
    pairs = real.shape[0] - 1
    # One flow call for both videos: batch the real and the fake frame pairs together.
    flows = flow_net(torch.cat([real[:-1], fake[:-1]]).float(), torch.cat([real[1:], fake[1:]]).float())
    return flows[:pairs] - flows[pairs:]


def flolpips_from_maps(layer_maps: list[torch.Tensor], flow_differences: torch.Tensor) -> torch.Tensor:
    """FloLPIPS from the LPIPS layer maps of frames t (``N 1 h_k w_k``) and the flow differences of pairs
    (t, t+1) (``N 2 H W``): ``N`` values."""
    return sum(flow_weighted_sum(layer_map, flow_differences) for layer_map in layer_maps)


def flolpips(
    lpips_model: lpips_package.LPIPS, flow_net: PWCNet, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """FloLPIPS of each pair of consecutive frames.

    Args:
        lpips_model: AlexNet v0.1 ``lpips.LPIPS``.
        flow_net: PWC-Net (:func:`opensora_ae.metrics.pwcnet.load_pwcnet`).
        real, fake: ``T C H W`` consecutive frames in ``[0, 1]``, T >= 2.

    Returns:
        ``T-1`` values, one per pair (t, t+1).
    """
    if real.shape != fake.shape:
        raise ValueError(f"flolpips: real {tuple(real.shape)} and fake {tuple(fake.shape)} frames differ in shape")
    if real.shape[0] < 2:
        raise ValueError("flolpips: needs at least 2 consecutive frames")
    maps = lpips_layer_maps(lpips_model, real[:-1], fake[:-1])
    return flolpips_from_maps(maps, flow_difference(flow_net, real, fake))
