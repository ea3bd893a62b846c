"""Exponential moving average of the autoencoder's weights.

``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, in fp32. The EMA mirrors the model's
parameters as they are held locally, so with FSDP2 each rank keeps only its shards (DTensors) and the update
needs no communication; :meth:`EMA.state_dict` gathers full tensors for saving. Buffers are copied, not
averaged.
"""

from __future__ import annotations

import torch
from torch import nn


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor shard gathered to the full tensor; plain tensors unchanged."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class EMA:
    """EMA weights of ``model`` (the unwrapped model; with FSDP2 after ``fully_shard``)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"config key ema_decay={decay} must be in [0, 1]")
        self.decay = float(decay)
        with torch.no_grad():
            self.params = {name: p.detach().clone().float() for name, p in model.named_parameters()}
            self.buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the current weights of ``model``."""
        names, shadows, currents = [], [], []
        for name, param in model.named_parameters():
            names.append(name)
            shadows.append(self.params[name])
            currents.append(param.detach().float())
        torch._foreach_lerp_(shadows, currents, 1.0 - self.decay)
        for name, buffer in model.named_buffers():
            self.buffers[name].copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (gathered) EMA weights on CPU with the model's key names; collective under FSDP2."""
        state = {name: _full(t).detach().cpu() for name, t in self.params.items()}
        state.update({name: _full(t).detach().cpu() for name, t in self.buffers.items()})
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load full weights (as saved by :meth:`state_dict`); each rank keeps its own shard under FSDP2."""
        missing = sorted(set(self.params) - set(state))
        if missing:
            raise KeyError(f"EMA checkpoint lacks {len(missing)} parameters, e.g. {missing[:5]}")
        for store in (self.params, self.buffers):
            for name, local in store.items():
                if name in state:
                    local.copy_(_shard_like(state[name], local))


def _shard_like(full: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """``full`` laid out like ``local`` (a DTensor shard of the same global shape, or a plain tensor)."""
    if hasattr(local, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(local.device_mesh.device_type), local.device_mesh, local.placements)
    return full.to(local.device)
