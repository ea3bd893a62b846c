"""Video autoencoders and ``build_model``.

Each family module registers its classes in ``MODELS`` when imported; the import lines below fill the registry
(families append their own line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..registry import MODELS, build, import_object
from .base import VideoAutoencoder
from .checkpoint_io import PretrainedMixin, load_weights

__all__ = ["MODELS", "VideoAutoencoder", "PretrainedMixin", "build_model", "resolve_model_class"]


def resolve_model_class(cfg: Mapping[str, Any]) -> type:
    """The class a model config names, via ``type`` (registry) or ``target`` (dotted path)."""
    if "target" in cfg:
        return import_object(cfg["target"])
    if "type" not in cfg:
        raise KeyError(f"model config needs 'type' (registered name) or 'target' (dotted path): got keys {sorted(cfg)}")
    if not isinstance(cfg["type"], str):
        return cfg["type"]
    cls = MODELS.get(cfg["type"])
    if cls is None:
        raise KeyError(f"unknown model type {cfg['type']!r}; registered: {', '.join(sorted(MODELS.module_dict))}")
    return cls


def build_model(cfg: Mapping[str, Any]) -> VideoAutoencoder:
    """Build a model from ``dict(type=..., **kwargs)`` (or ``target``/``params``) and load ``from_pretrained``.

    Extra keys: ``from_pretrained`` (weights file or model folder), ``strict`` (default True). For a folder with
    hyper-parameters (``config.json``), the class's ``config_from_pretrained_dir`` supplies the constructor kwargs
    and the config's own kwargs override them, so ``dict(type=..., from_pretrained=FOLDER)`` is enough.
    """
    cfg = dict(cfg)
    source = cfg.pop("from_pretrained", None)
    strict = cfg.pop("strict", True)
    if not source:
        check = getattr(resolve_model_class(cfg), "check_random_init", None)
        if check is not None:
            check(cfg.get("params", cfg))
        return build(cfg, MODELS)
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"model config from_pretrained={str(source)!r}: no such file or folder")
    cls = resolve_model_class(cfg)
    if source.is_dir() and hasattr(cls, "config_from_pretrained_dir"):
        cfg = _with_folder_config(cfg, cls.config_from_pretrained_dir(source))
    model = build(cfg, MODELS)
    load_weights(model, source, strict=strict)
    return model.eval()


def _with_folder_config(cfg: dict[str, Any], folder_config: dict[str, Any]) -> dict[str, Any]:
    """Merge folder hyper-parameters under the config's own kwargs (which win)."""
    if "target" in cfg:
        params = {**folder_config, **dict(cfg.get("params") or {})}
        return {**cfg, "params": params}
    return {"type": cfg["type"], **folder_config, **{k: v for k, v in cfg.items() if k != "type"}}


from . import discriminator  # noqa: E402,F401  (registers N_Layer_discriminator_3D in DISCRIMINATORS)
from . import causal_vae  # noqa: E402,F401  (registers causal_vae)

# Family modules (importing them registers their classes in MODELS).
from . import dc_ae  # noqa: E402,F401
from . import opensora_v1_2  # noqa: E402,F401  (registers opensora_v1_2_vae)
from . import hunyuan_vae  # noqa: E402,F401  (registers hunyuan_vae)
