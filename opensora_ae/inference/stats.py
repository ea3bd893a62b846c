"""Latent statistics of a dataset: per-channel and global mean/std, and the factors that normalise them."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from opensora_ae.inference.runner import Clip, build_inference_dataset, build_inference_model, iter_clips
from opensora_ae.models import VideoAutoencoder
from opensora_ae.train.parallel import DistContext, all_gather_objects, resolve_dtype


class LatentMoments:
    """Running per-channel count, sum and sum of squares of ``B C t h w`` latents, in float64.

    Chunks may differ in batch size, frames and size; only the channel count must stay the same.
    """

    def __init__(self) -> None:
        self.count = 0  # values per channel
        self.sums: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, latent: torch.Tensor) -> None:
        """Accumulate a ``B C t h w`` (or any ``B C ...``) latent."""
        values = latent.detach().double().cpu().transpose(0, 1).flatten(1)
        if self.sums is None:
            self.sums = torch.zeros(values.shape[0], dtype=torch.float64)
            self.squares = torch.zeros_like(self.sums)
        elif values.shape[0] != self.sums.numel():
            raise ValueError(f"latent has {values.shape[0]} channels, earlier ones had {self.sums.numel()}")
        self.sums += values.sum(dim=1)
        self.squares += values.pow(2).sum(dim=1)
        self.count += values.shape[1]

    def merge(self, other: "LatentMoments") -> None:
        """Add ``other``'s values to these (another rank's, or another chunk of the data)."""
        if other.sums is None:
            return
        if self.sums is None:
            self.sums, self.squares = torch.zeros_like(other.sums), torch.zeros_like(other.squares)
        elif other.sums.numel() != self.sums.numel():
            raise ValueError(f"cannot merge moments of {other.sums.numel()} and {self.sums.numel()} channels")
        self.sums += other.sums
        self.squares += other.squares
        self.count += other.count

    def summary(self) -> dict[str, Any]:
        """Per-channel and global mean/std (population), ``scaling_factor = 1 / std`` and ``shift_factor = mean``.

        With those factors ``(z - shift_factor) * scaling_factor`` has zero mean and unit variance (the diffusers
        convention; Open-Sora 2.0's DC-AE divides by its ``scaling_factor``, i.e. use ``std`` there, and Open-Sora
        1.2 normalises per channel with ``shift = channel_mean``, ``scale = channel_std``).
        """
        if self.sums is None:
            raise ValueError("no latents were computed: every input was skipped (check dataset.data_path)")
        mean = self.sums / self.count
        var = (self.squares / self.count - mean.pow(2)).clamp(min=0)
        total = self.count * self.sums.numel()
        global_mean = float(self.sums.sum() / total)
        global_std = max(float(self.squares.sum() / total) - global_mean**2, 0.0) ** 0.5
        return {
            "num_values": int(total),
            "num_channels": int(self.sums.numel()),
            "channel_mean": mean.tolist(),
            "channel_std": var.sqrt().tolist(),
            "mean": global_mean,
            "std": global_std,
            "scaling_factor": 1.0 / global_std if global_std > 0 else float("inf"),
            "shift_factor": global_mean,
        }


def _encode_batch(model: VideoAutoencoder, clips: list[Clip], ctx: DistContext, dtype: torch.dtype) -> torch.Tensor:
    x = torch.stack([clip.video for clip in clips]).to(ctx.device, dtype)
    with torch.inference_mode():
        return model.encode(x)


def latent_statistics(cfg: Mapping[str, Any], ctx: DistContext) -> dict[str, Any]:
    """Encode this rank's share of ``cfg.dataset`` (``batch_size`` clips at a time, posterior mean) and return
    :meth:`LatentMoments.summary` over all ranks, plus ``num_videos`` and ``skipped`` (path -> reason).

    The latents are what ``model.encode`` returns, i.e. after the scaling/shift already configured in the model;
    set those to identity in the model config to measure the raw latent.
    """
    dtype = resolve_dtype(cfg.get("dtype", "fp32"))
    model = build_inference_model(cfg["model"], ctx.device, dtype, cfg.get("cli_model_keys", ()))
    dataset = build_inference_dataset(cfg)
    batch_size = int(cfg.get("batch_size", 1))
    moments, skipped, pending, encoded = LatentMoments(), [], [], 0
    for clip in iter_clips(dataset, ctx, skipped, desc="encode"):
        pending.append(clip)
        if len(pending) == batch_size:
            moments.add(_encode_batch(model, pending, ctx, dtype))
            encoded, pending = encoded + len(pending), []
    if pending:
        moments.add(_encode_batch(model, pending, ctx, dtype))
        encoded += len(pending)
    parts = all_gather_objects((moments, encoded, skipped))
    merged = LatentMoments()
    for part_moments, _, _ in parts:
        merged.merge(part_moments)
    summary = merged.summary()
    summary["num_videos"] = sum(part[1] for part in parts)
    summary["skipped"] = dict(sorted(entry for part in parts for entry in part[2]))
    return summary
