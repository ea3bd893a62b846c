"""opensora_ae: train, fine-tune, run and evaluate video autoencoders.

The model API is importable from the top level (``from opensora_ae import build_model, VideoDCAE``); the names
resolve lazily, so ``import opensora_ae`` stays light (no torch import until one is used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_LAZY = {
    "build_model": "opensora_ae.models",
    "VideoAutoencoder": "opensora_ae.models.base",
    "VideoDCAE": "opensora_ae.models.dc_ae",
    "HunyuanVAE": "opensora_ae.models.hunyuan_vae",
    "OpenSoraVAEV12": "opensora_ae.models.opensora_v1_2",
    "CausalVAEModel": "opensora_ae.models.causal_vae",
    "MODELS": "opensora_ae.registry",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'opensora_ae' has no attribute {name!r}")
    if _LAZY[name] != "opensora_ae.models":
        importlib.import_module("opensora_ae.models")  # fills the registry with every family
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
