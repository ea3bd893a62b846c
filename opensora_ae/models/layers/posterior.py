"""Diagonal Gaussian posterior of KL autoencoders."""

from __future__ import annotations

import torch


class DiagonalGaussianDistribution:
    """Gaussian with diagonal covariance built from the ``2C`` channels of a quant-conv output.

    ``parameters`` has layout ``B 2C ...`` (mean first, then log-variance). The log-variance is clamped to
    ``[-30, 20]`` as in every released KL video VAE.
    """

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False) -> None:
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        if deterministic:
            self.logvar = torch.zeros_like(self.mean)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``mean + std * eps`` (the mean itself when deterministic)."""
        if self.deterministic:
            return self.mean
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: "DiagonalGaussianDistribution | None" = None) -> torch.Tensor:
        """KL divergence to ``N(0, I)`` (or to ``other``), summed over all non-batch dims; shape ``B``."""
        dims = list(range(1, self.mean.ndim))
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)
        return 0.5 * torch.sum(
            (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar,
            dim=dims,
        )

    def nll(self, sample: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``sample``, summed over all non-batch dims; shape ``B``."""
        dims = list(range(1, self.mean.ndim))
        log_two_pi = 1.8378770664093453
        return 0.5 * torch.sum(log_two_pi + self.logvar + (sample - self.mean).pow(2) / self.var, dim=dims)
