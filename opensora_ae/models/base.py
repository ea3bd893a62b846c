"""The interface every autoencoder of the toolkit implements.

Training, inference and evaluation only see models through this interface, so a new family needs nothing
outside its own file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from .layers.posterior import DiagonalGaussianDistribution


class VideoAutoencoder(nn.Module, ABC):
    """Base class of the video autoencoders.

    Subclasses set ``latent_channels`` and ``compression = (t, h, w)`` and implement ``encode``/``decode``.
    Layouts: pixels ``B 3 T H W`` in ``[-1, 1]``; latents ``B C t h w`` already scaled/shifted the way a
    diffusion model consumes them.
    """

    latent_channels: int
    compression: tuple[int, int, int]
    # True when frames are encoded causally so that 4k+1 frames give k+1 latents (the first frame alone).
    causal: bool = False

    def encode(self, x: torch.Tensor, sample_posterior: bool = False) -> torch.Tensor:
        """Pixels ``B 3 T H W`` in [-1, 1] -> latent ``B C t h w`` (scale/shift applied)."""
        return self.encode_with_posterior(x, sample_posterior)[0]

    @abstractmethod
    def encode_with_posterior(
        self, x: torch.Tensor, sample_posterior: bool = False
    ) -> tuple[torch.Tensor, DiagonalGaussianDistribution | None]:
        """Like ``encode`` but also return the posterior (None for plain autoencoders)."""

    @abstractmethod
    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Latent ``B C t h w`` -> pixels ``B 3 T H W``; crops to ``num_frames`` when given."""

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, DiagonalGaussianDistribution | None, torch.Tensor]:
        """Reconstruct ``x``; returns ``(x_rec, posterior or None, z)``."""
        z, posterior = self.encode_with_posterior(x, sample_posterior)
        x_rec = self.decode(z, num_frames=x.shape[2])
        return x_rec, posterior, z

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Deterministic reconstructions for inference: ``{"latent": z, "recn": x_rec}``.

        Families with extra outputs add them (the Open-Sora 1.2 pipeline adds ``"spatial"``, its spatial-VAE-only
        reconstruction); every pixel output has the layout and frame count of ``x``.
        """
        z = self.encode(x)
        return {"latent": z, "recn": self.decode(z, num_frames=x.shape[2])}

    def get_latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Latent ``(t, h, w)`` for an input of ``num_frames x height x width``."""
        # Causal models map 4k+1 frames to k+1 latents, DC-AE maps 4k frames to k: both are (T - 1) // ct + 1.
        ct, ch, cw = self.compression
        return (num_frames - 1) // ct + 1, height // ch, width // cw

    @abstractmethod
    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (for the adaptive GAN weight)."""

    def set_tiling(self, **changes: Any) -> None:
        """Change tiling keys at run time (models holding a ``layers.tiling.VideoTiler`` at ``self.tiler``), e.g.
        ``set_tiling(use_temporal_tiling=True, temporal_tile_size=32)``; the saved ``config`` follows."""
        tiler = getattr(self, "tiler", None)
        if tiler is None:
            raise ValueError(f"{type(self).__name__} has no tiled inference (no 'tiler' attribute)")
        self.tiler = tiler.with_changes(**changes)
        config = getattr(self, "config", None)
        if isinstance(config, dict):
            config.update(changes)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Turn activation checkpointing of the encoder/decoder blocks on or off."""
        for module in self.modules():
            if module is not self and hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = enabled
