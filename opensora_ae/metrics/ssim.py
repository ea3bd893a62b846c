"""Structural similarity (Wang et al. 2004), one value per frame, batched on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from opensora_ae.metrics.blocks import cpu_frame_blocks

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
    h, w = real.shape[-2:]
    if min(h, w) < WINDOW_SIZE:
        raise ValueError(f"ssim: frames of {h}x{w} are smaller than the {WINDOW_SIZE}x{WINDOW_SIZE} window")
    return torch.cat([_ssim_block(real[block], fake[block], data_range) for block in cpu_frame_blocks(real)])


def _ssim_block(real: torch.Tensor, fake: torch.Tensor, data_range: float) -> torch.Tensor:
    """:func:`ssim` of ``N C H W`` frames in one pass (inputs already checked)."""
    n, c, h, w = real.shape
    x, y = real.float(), fake.float()
    # The five moments of every channel, stacked on the batch axis (channels-last memory: the depthwise
    # blur runs several times faster on CPU), blurred at once by one separable depthwise convolution.
    moments = torch.empty((5 * n, c, h, w), dtype=x.dtype, device=x.device).contiguous(
        memory_format=torch.channels_last
    )
    slot_x, slot_y, slot_xx, slot_yy, slot_xy = moments.chunk(5)
    slot_x.copy_(x)
    slot_y.copy_(y)
    torch.mul(x, x, out=slot_xx)
    torch.mul(y, y, out=slot_yy)
    torch.mul(x, y, out=slot_xy)
    taps = gaussian_window().to(device=x.device, dtype=x.dtype)
    blurred = F.conv2d(moments, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    blurred = F.conv2d(blurred, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = blurred.chunk(5)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    # In place where possible: these maps are the size of the video, and memory traffic dominates on CPU.
    mu_xy = mu_x * mu_y
    mu_squares = mu_x.square().addcmul_(mu_y, mu_y)  # mu_x^2 + mu_y^2
    covariance_term = mean_xy.sub_(mu_xy).mul_(2).add_(c2)  # 2 cov_xy + C2
    variance_term = mean_xx.add_(mean_yy).sub_(mu_squares).add_(c2)  # var_x + var_y + C2
    numerator = mu_xy.mul_(2).add_(c1).mul_(covariance_term)
    denominator = mu_squares.add_(c1).mul_(variance_term)
    return numerator.div_(denominator).mean(dim=(1, 2, 3))
