"""Optimizers and learning-rate schedules from Open-Sora config dicts.

``optim = dict(cls="AdamW" | "HybridAdam", lr, eps, weight_decay, betas, adamw_mode=True, fused=None,
foreach=None)``: ``HybridAdam`` is ColossalAI's fused CPU/GPU Adam; here it is an alias of
:class:`torch.optim.AdamW` (``adamw_mode=False`` gives Adam with L2 weight decay, as in ColossalAI). ``fused`` and
``foreach`` go to the torch optimizer as they are; left unset, the update is fused when every parameter is on a
CUDA device (one kernel per step instead of one per tensor, as torchtitan does) and torch's own default
(``foreach`` on CPU) otherwise. ``lr_scheduler = dict(warmup_steps)``: Open-Sora's
``LinearWarmupLR``, ``lr * (step + 1) / (warmup_steps + 1)`` for the first ``warmup_steps`` steps, then constant.
``lr_scheduler = dict(warmup_steps, decay="cosine", decay_steps=None, min_lr_ratio=0.0)``: the same warm-up, then
a half cosine from ``lr`` down to ``min_lr_ratio * lr`` at optimizer step ``decay_steps`` (None: the run's
``max_steps``), constant after that.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from torch.optim.lr_scheduler import LRScheduler

OPTIMIZER_NAMES = ("AdamW", "HybridAdam", "Adam")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping[str, Any], key: str = "optim",
                    no_decay_params: Iterable[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` describes over ``params`` (only those with ``requires_grad``).

    ``no_decay_params`` join as a second parameter group without weight decay: a learnable loss ``logvar`` is a
    log-variance, not a weight, and decaying it would pull the loss towards unit variance.
    """
    cfg = dict(cfg)
    name = cfg.pop("cls", "AdamW")
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"config key {key}.cls={name!r} is not supported; use one of {OPTIMIZER_NAMES}")
    adamw_mode = cfg.pop("adamw_mode", name != "Adam")
    kwargs = dict(
        lr=float(cfg.pop("lr", 1e-4)),
        eps=float(cfg.pop("eps", 1e-8)),
        weight_decay=float(cfg.pop("weight_decay", 0.0)),
        betas=tuple(cfg.pop("betas", (0.9, 0.999))),
    )
    implementation = _implementation(cfg.pop("fused", None), cfg.pop("foreach", None), key)
    if cfg:
        raise ValueError(f"config key {key} has unknown entries {sorted(cfg)}; known: cls, lr, eps, weight_decay, "
                         f"betas, adamw_mode, fused, foreach")
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError(f"{key}: the model has no trainable parameters")
    no_decay = [p for p in no_decay_params if p.requires_grad]
    if not implementation and all(p.is_cuda for p in trainable + no_decay):
        implementation = {"fused": True}
    groups = [{"params": trainable}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    cls = torch.optim.AdamW if adamw_mode else torch.optim.Adam
    return cls(groups, **kwargs, **implementation)


def _implementation(fused: Any, foreach: Any, key: str) -> dict[str, bool]:
    """The ``fused``/``foreach`` keyword arguments the user set (None = unset); both true is an error."""
    chosen = {}
    for name, value in (("fused", fused), ("foreach", foreach)):
        if value is None:
            continue
        if not isinstance(value, bool):
            raise ValueError(f"config key {key}.{name}={value!r} must be true, false or none")
        chosen[name] = value
    if chosen.get("fused") and chosen.get("foreach"):
        raise ValueError(f"config keys {key}.fused and {key}.foreach are both true; torch optimizers take one: "
                         f"set the other to false or none")
    return chosen


class LinearWarmupLR(LRScheduler):
    """Open-Sora's linear warm-up: ``base_lr * (step + 1) / (warmup_steps + 1)`` while ``step < warmup_steps``."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, last_epoch: int = -1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"lr_scheduler.warmup_steps={warmup_steps} must be >= 0")
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch < self.warmup_steps:
            return [base * (self.last_epoch + 1) / (self.warmup_steps + 1) for base in self.base_lrs]
        return list(self.base_lrs)


class WarmupCosineLR(LinearWarmupLR):
    """``LinearWarmupLR``'s warm-up, then ``base_lr * (m + (1 - m) * (1 + cos(pi * p)) / 2)`` with ``m`` =
    ``min_lr_ratio`` and ``p`` the share of steps ``warmup_steps..decay_steps`` done (1 after ``decay_steps``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, decay_steps: int = 0,
                 min_lr_ratio: float = 0.0, last_epoch: int = -1) -> None:
        if decay_steps <= warmup_steps:
            raise ValueError(f"lr_scheduler.decay_steps={decay_steps} must be larger than warmup_steps={warmup_steps}"
                             " (the step where the cosine reaches min_lr_ratio * lr; e.g. max_steps)")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"lr_scheduler.min_lr_ratio={min_lr_ratio} must be in [0, 1]")
        self.decay_steps = int(decay_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, warmup_steps, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch < self.warmup_steps:
            return super().get_lr()
        progress = min(1.0, (self.last_epoch - self.warmup_steps) / (self.decay_steps - self.warmup_steps))
        factor = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return [base * factor for base in self.base_lrs]


SCHEDULER_KEYS = ("warmup_steps", "decay", "decay_steps", "min_lr_ratio")
DECAYS = ("constant", "cosine")


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any] | None, key: str = "lr_scheduler",
                       max_steps: int | None = None) -> LinearWarmupLR:
    """The schedule of ``cfg`` (see the module docstring); ``max_steps`` is the cosine's default end."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(SCHEDULER_KEYS))
    if unknown:
        raise ValueError(f"config key {key} has unknown entries {unknown}; known: {', '.join(SCHEDULER_KEYS)}")
    decay = cfg.pop("decay", "constant")
    warmup = int(cfg.pop("warmup_steps", 0))
    if decay == "cosine":
        decay_steps = cfg.pop("decay_steps", None)
        if decay_steps is None and max_steps is None:
            raise ValueError(f"config key {key}: decay='cosine' needs decay_steps (or a max_steps for the run)")
        if decay_steps is None:  # a run shorter than its warm-up (a smoke test) never reaches the cosine
            decay_steps = max(int(max_steps), warmup + 1)
        return WarmupCosineLR(optimizer, warmup, int(decay_steps), float(cfg.pop("min_lr_ratio", 0.0)))
    if decay != "constant":
        raise ValueError(f"config key {key}.decay={decay!r}: use one of {DECAYS}")
    if cfg:
        raise ValueError(f"config key {key}: {sorted(cfg)} only apply with decay='cosine'")
    return LinearWarmupLR(optimizer, warmup_steps=warmup)
