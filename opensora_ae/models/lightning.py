"""PyTorch-Lightning ``.ckpt`` files (Open-Sora-Plan's training output): which of their weights to load.

One rule for every path (``build_model``, ``from_pretrained`` of every family, the scripts): a Lightning checkpoint
loads ``ema_state_dict`` when it holds a non-empty one, as Open-Sora-Plan's own ``CausalVAEModel`` loader does,
else ``state_dict``. ``state_dict_key="state_dict"`` (config key ``model.state_dict_key``) picks the raw weights,
``state_dict_key="ema_state_dict"`` requires the EMA ones.
"""

from __future__ import annotations

from typing import Any, Mapping

EMA_ENTRY = "ema_state_dict"
STATE_ENTRY = "state_dict"
# Entries Lightning (or Open-Sora-Plan's trainer) writes next to state_dict.
_LIGHTNING_MARKERS = ("pytorch-lightning_version", "global_step", "epoch", "optimizer_states", EMA_ENTRY)


def is_lightning_checkpoint(obj: Any) -> bool:
    """True for a loaded Lightning checkpoint dict (``state_dict`` next to trainer entries)."""
    return (
        isinstance(obj, Mapping)
        and isinstance(obj.get(STATE_ENTRY), Mapping)
        and any(marker in obj for marker in _LIGHTNING_MARKERS)
    )


def lightning_entry(obj: Mapping[str, Any], state_dict_key: str | None) -> str:
    """The entry to load: ``state_dict_key`` when given, else ``ema_state_dict`` if not empty, else ``state_dict``."""
    if state_dict_key is not None:
        return state_dict_key
    return EMA_ENTRY if obj.get(EMA_ENTRY) else STATE_ENTRY
