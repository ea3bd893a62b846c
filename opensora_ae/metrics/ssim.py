"""Structural similarity (Wang et al. 2004), one value per frame, batched on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (float64)."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def ssim(real: torch.Tensor, fake: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of each frame: 11x11 Gaussian window (sigma 1.5), C1 = (0.01 R)^2, C2 = (0.03 R)^2.

    Statistics use the population (not sample) covariance; the SSIM map keeps only the valid region
    (no padding) and is averaged over its pixels and over the channels (RGB treated separately).

    Args:
        real, fake: ``N C H W`` frames in ``[0, data_range]``, H and W at least 11.
        data_range: the peak value R (1 for ``[0, 1]`` inputs).

    Returns:
        ``N`` SSIM values.
    """
    if real.shape != fake.shape:
        raise ValueError(f"ssim: real {tuple(real.shape)} and fake {tuple(fake.shape)} frames differ in shape")
    n, c, h, w = real.shape
    if min(h, w) < WINDOW_SIZE:
        raise ValueError(f"ssim: frames of {h}x{w} are smaller than the {WINDOW_SIZE}x{WINDOW_SIZE} window")
    x, y = real.float(), fake.float()
    # One depthwise separable blur over the five moments of every channel at once; channels-last memory
    # makes the depthwise convolution several times faster on CPU.
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1).contiguous(memory_format=torch.channels_last)
    taps = gaussian_window().to(device=x.device, dtype=x.dtype)
    groups = moments.shape[1]
    blurred = F.conv2d(moments, taps.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    blurred = F.conv2d(blurred, taps.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = blurred.chunk(5, dim=1)
    var_x = mean_xx - mu_x * mu_x
    var_y = mean_yy - mu_y * mu_y
    cov_xy = mean_xy - mu_x * mu_y
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))
