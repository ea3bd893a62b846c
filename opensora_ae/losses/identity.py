"""Latent-space terms of the Open-Sora 1.2 VAE stages.

The OS 1.2 pipeline stacks a temporal VAE on a (frozen in stage 1) per-frame spatial VAE. Its stage-1/2
losses compare latents, taken as plain tensors here so they do not depend on model internals:

* latent reconstruction (``use_z_rec_loss`` in OS 1.2): L1 between the spatial latent ``B 4 T h w`` and
  the temporal VAE's reconstruction of it;
* identity (``use_image_identity_loss``): on single-frame steps only, L1 between the spatial latent and
  the temporal latent, which then have the same shape ``B 4 1 h w`` - it teaches the temporal VAE to pass
  images through unchanged.

Both use the pixel terms' normalisation (sum over ``C h w``, mean over ``B * T``).
"""

from __future__ import annotations

import torch

from .reconstruction import reconstruction_loss


def is_image_step(video: torch.Tensor) -> bool:
    """True when the batch ``B C T H W`` holds single frames (``T == 1``)."""
    return video.shape[2] == 1


def latent_reconstruction_loss(spatial_latent: torch.Tensor, spatial_latent_rec: torch.Tensor) -> torch.Tensor:
    """L1 between the spatial latent and its temporal-VAE reconstruction, both ``B C T h w``; a scalar."""
    return reconstruction_loss(spatial_latent, spatial_latent_rec, "l1")


def identity_loss(spatial_latent: torch.Tensor, temporal_latent: torch.Tensor) -> torch.Tensor:
    """L1 between the spatial latent and the temporal latent of a single-frame batch (``B C 1 h w``)."""
    if spatial_latent.shape != temporal_latent.shape:
        raise ValueError(
            f"identity loss compares the spatial latent {tuple(spatial_latent.shape)} with the temporal latent "
            f"{tuple(temporal_latent.shape)}: they must match (single-frame steps only)"
        )
    return reconstruction_loss(spatial_latent, temporal_latent, "l1")
