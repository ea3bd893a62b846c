"""Inference: reconstruct videos, latent statistics, visual comparisons and evaluation."""
