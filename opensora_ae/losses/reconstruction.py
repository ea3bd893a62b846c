"""Pixel reconstruction terms with Open-Sora's normalisation.

Open-Sora (1.2 and 2.0) and Open-Sora-Plan fold video frames into the batch, take the element-wise error,
**sum** it over ``C, H, W`` and divide by the number of frames ``B * T``. Every term of this package that
compares two tensors uses that normalisation (``sum_per_frame``) so that config weights mean what they mean
in those code bases.
"""

from __future__ import annotations

import torch

RECON_LOSS_TYPES = ("l1", "l2")


def frames_as_images(video: torch.Tensor) -> torch.Tensor:
    """``B C T H W`` -> ``(B T) C H W`` (frame index fastest within a sample)."""
    if video.ndim != 5:
        raise ValueError(f"expected a video tensor B C T H W, got shape {tuple(video.shape)}")
    batch, channels, frames, height, width = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)


def elementwise_error(target: torch.Tensor, prediction: torch.Tensor, loss_type: str = "l1") -> torch.Tensor:
    """``|target - prediction|`` (``l1``) or ``(target - prediction)^2`` (``l2``), same shape as the inputs."""
    if target.shape != prediction.shape:
        raise ValueError(f"reconstruction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    diff = target - prediction
    if loss_type == "l1":
        return diff.abs()
    if loss_type == "l2":
        return diff.pow(2)
    raise ValueError(f"recon_loss_type={loss_type!r} is not supported; use one of {RECON_LOSS_TYPES}")


def num_frames_in(tensor: torch.Tensor) -> int:
    """``B * T`` of a ``B C T H W`` tensor, ``B`` of a ``B C H W`` one: the divisor of ``sum_per_frame``."""
    if tensor.ndim == 5:
        return tensor.shape[0] * tensor.shape[2]
    if tensor.ndim == 4:
        return tensor.shape[0]
    raise ValueError(f"expected B C T H W or B C H W, got shape {tuple(tensor.shape)}")


def sum_per_frame(error: torch.Tensor) -> torch.Tensor:
    """Sum of an element-wise error over everything, divided by the frame count (``B*T`` or ``B``)."""
    return error.sum() / num_frames_in(error)


def reconstruction_loss(target: torch.Tensor, prediction: torch.Tensor, loss_type: str = "l1") -> torch.Tensor:
    """Per-frame summed L1/L2 between two ``B C T H W`` (or ``B C H W``) tensors; a scalar.

    Used for pixels (``x`` vs ``x_rec``) and for latents (OS 1.2 stage 1/2: the spatial latent vs the
    temporal VAE's reconstruction of it).
    """
    return sum_per_frame(elementwise_error(target, prediction, loss_type))
