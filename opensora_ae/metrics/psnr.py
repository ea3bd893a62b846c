"""Peak signal-to-noise ratio, one value per frame."""

from __future__ import annotations

import torch

# Identical frames have infinite PSNR; Open-Sora reports them as 100 dB (mse < 1e-10).
PSNR_CAP_DB = 100.0


def psnr(real: torch.Tensor, fake: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR of each frame over its C, H, W values.

    Args:
        real, fake: ``N C H W`` frames in ``[0, data_range]``.
        data_range: the peak value (1 for ``[0, 1]`` inputs).

    Returns:
        ``N`` PSNR values in dB, capped at 100.
    """
    if real.shape != fake.shape:
        raise ValueError(f"psnr: real {tuple(real.shape)} and fake {tuple(fake.shape)} frames differ in shape")
    mse = (real.float() - fake.float()).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).clamp(max=PSNR_CAP_DB)
