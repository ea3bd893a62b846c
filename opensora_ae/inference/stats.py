"""Latent statistics of a dataset: per-channel and global mean/std, and the factors that normalise them."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from tqdm import tqdm

from opensora_ae.inference.runner import build_inference_dataset, build_inference_model, iter_clips
from opensora_ae.train.parallel import DistContext, all_reduce_sum, autocast, resolve_dtype


class LatentMoments:
    """Running per-channel sums of ``B C t h w`` latents in float64 (merged across ranks by ``all_reduce``)."""

    def __init__(self) -> None:
        self.count = 0.0
        self.sums: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, latent: torch.Tensor) -> None:
        values = latent.detach().double().transpose(0, 1).flatten(1)
        if self.sums is None:
            self.sums = torch.zeros(values.shape[0], dtype=torch.float64)
            self.squares = torch.zeros_like(self.sums)
        self.sums += values.sum(dim=1).cpu()
        self.squares += values.pow(2).sum(dim=1).cpu()
        self.count += values.shape[1]

    def all_reduce(self, device: torch.device) -> None:
        self.count = all_reduce_sum(self.count, device)
        self.sums = torch.tensor([all_reduce_sum(v, device) for v in self.sums.tolist()], dtype=torch.float64)
        self.squares = torch.tensor([all_reduce_sum(v, device) for v in self.squares.tolist()], dtype=torch.float64)

    def summary(self) -> dict[str, Any]:
        """Per-channel and global mean/std, ``scaling_factor = 1 / std`` and ``shift_factor = mean``.

        With those factors ``(z - shift_factor) * scaling_factor`` has zero mean and unit variance (the diffusers
        convention; Open-Sora 2.0's DC-AE divides by its ``scaling_factor``, i.e. use ``std`` there).
        """
        if self.sums is None:
            raise ValueError("no latents were computed: every input was skipped")
        channels = self.sums.numel()
        mean = self.sums / (self.count / channels)
        var = self.squares / (self.count / channels) - mean.pow(2)
        global_mean = float(self.sums.sum() / self.count)
        global_var = float(self.squares.sum() / self.count) - global_mean**2
        global_std = max(global_var, 0.0) ** 0.5
        return {
            "num_values": int(self.count),
            "channel_mean": mean.tolist(),
            "channel_std": var.clamp(min=0).sqrt().tolist(),
            "mean": global_mean,
            "std": global_std,
            "scaling_factor": 1.0 / global_std if global_std > 0 else float("inf"),
            "shift_factor": global_mean,
        }


def latent_statistics(cfg: Mapping[str, Any], ctx: DistContext) -> dict[str, Any]:
    """Encode this rank's share of ``cfg.dataset`` and return the statistics over all ranks."""
    dtype = resolve_dtype(cfg.get("dtype", "fp32"))
    model = build_inference_model(cfg["model"], ctx.device, dtype)
    dataset = build_inference_dataset(cfg)
    moments, skipped = LatentMoments(), []
    for clip in tqdm(iter_clips(dataset, ctx, skipped), disable=not ctx.is_main, desc="encode"):
        with torch.inference_mode(), autocast(ctx.device, dtype):
            moments.add(model.encode(clip.video[None].to(ctx.device, dtype)))
    if ctx.distributed:
        moments.all_reduce(ctx.device)
    summary = moments.summary()
    summary["skipped"] = [path for path, _ in skipped]
    return summary
