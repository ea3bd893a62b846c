"""KL regulariser of the Gaussian posterior."""

from __future__ import annotations

from typing import Protocol

import torch


class GaussianPosterior(Protocol):
    """What the KL term needs from a posterior (``models.layers.posterior.DiagonalGaussianDistribution``)."""

    def kl(self) -> torch.Tensor:
        """KL to ``N(0, I)`` summed over all non-batch dims; shape ``B``."""


def kl_loss(posterior: GaussianPosterior) -> torch.Tensor:
    """``sum_b KL_b / B`` with ``KL_b = 0.5 * sum(mean^2 + var - 1 - logvar)`` over the latent ``C t h w``.

    As in Open-Sora / Open-Sora-Plan the KL is summed over latent elements and averaged over the batch only
    (not over frames, unlike the pixel terms).
    """
    per_sample = posterior.kl()
    return per_sample.sum() / per_sample.shape[0]
