"""Video autoencoders and ``build_model``.

Each family module registers its classes in ``MODELS`` when imported; the import lines below fill the registry
(families append their own line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from ..registry import MODELS, build, import_object
from .base import VideoAutoencoder
from .checkpoint_io import CheckpointError, PretrainedMixin, build_loaded, stored_config_folder
from .config_io import (CONFIG_FILE_NAME, checkpoint_first_kwargs, config_model_class, read_config_json,
                        registry_name)
from .hub import resolve_pretrained

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


# Model config keys that say where weights come from and how to read them (not constructor arguments).
LOAD_KEYS = ("from_pretrained", "strict", "state_dict_key", "subfolder", "revision", "local_files_only")


def build_model(cfg: Mapping[str, Any], user_keys: Iterable[str] = frozenset()) -> VideoAutoencoder:
    """Build a model from ``dict(type=..., **kwargs)`` (or ``target``/``params``) and load ``from_pretrained``.

    Load keys: ``from_pretrained`` (weights file, model folder or Hugging Face Hub id, ``models/hub.py``; with
    ``subfolder``, ``revision``, ``local_files_only``), ``strict`` (default True), ``state_dict_key`` (checkpoint
    entry; Lightning ``.ckpt``: EMA weights unless ``"state_dict"``).

    Checkpoint first: when the source describes its own architecture (a folder's ``config.json``, or the
    ``config.json`` beside a weights / ``.ckpt`` file), the family and architecture come from there;
    ``type`` may then be omitted, and the config's own kwargs only fill keys the checkpoint does not store, except
    the runtime keys (tiling, micro-batching, freezing: ``config_io.RUNTIME_KEYS``), which always apply.
    ``user_keys`` are the keys the user set explicitly (``latent_channels`` or dotted ``model.latent_channels``,
    as the command-line parser reports them); one that contradicts the checkpoint is one ``CheckpointError``
    naming each. The model comes back in ``eval()`` mode when weights were loaded.
    """
    cfg = dict(cfg)
    load = {key: cfg.pop(key) for key in LOAD_KEYS if key in cfg}
    if not load.get("from_pretrained"):
        check = getattr(resolve_model_class(cfg), "check_random_init", None)
        if check is not None:
            check(cfg.get("params", cfg))
        return build(cfg, MODELS)
    source = resolve_pretrained(
        load["from_pretrained"], load.get("subfolder"), load.get("revision"), load.get("local_files_only")
    )
    config_folder = stored_config_folder(source)
    cls, kwargs = _class_and_kwargs(cfg, config_folder)
    if config_folder is not None:
        stored = cls.config_from_pretrained_dir(config_folder)
        kwargs = checkpoint_first_kwargs(stored, kwargs, user_keys, str(load["from_pretrained"]))
    return build_loaded(lambda: cls(**kwargs), source, load.get("strict", True), load.get("state_dict_key"))


def _class_and_kwargs(cfg: dict[str, Any], config_folder: Path | None) -> tuple[type, dict[str, Any]]:
    """The class to build (the config's ``type``/``target``, else the one the checkpoint folder names) and the
    config's constructor kwargs; a config naming another family than the checkpoint is one error."""
    stored_cls = None
    if config_folder is not None:
        path = config_folder / CONFIG_FILE_NAME
        stored_cls = config_model_class(read_config_json(path), path)
    if "type" not in cfg and "target" not in cfg:
        if stored_cls is None:
            raise KeyError(
                "model config needs 'type' (registered name) or 'target' (dotted path), or from_pretrained pointing "
                f"at a folder whose config.json names the family: got keys {sorted(cfg)}"
            )
        return stored_cls, cfg
    cls = resolve_model_class(cfg)
    kwargs = {**dict(cfg.get("params") or {}), **{k: v for k, v in cfg.items() if k not in ("target", "params")}}
    kwargs.pop("type", None)
    if stored_cls is not None and stored_cls is not cls:
        stored_name = registry_name(stored_cls) or stored_cls.__name__
        raise CheckpointError(
            f"{config_folder / CONFIG_FILE_NAME} holds a {stored_name!r} model but the model config builds "
            f"{registry_name(cls) or cls.__name__!r}; use a {stored_name} config or set type={stored_name!r}"
        )
    return cls, kwargs


from . import discriminator  # noqa: E402,F401  (registers N_Layer_discriminator_3D in DISCRIMINATORS)
from . import causal_vae  # noqa: E402,F401  (registers causal_vae)

# Family modules (importing them registers their classes in MODELS).
from . import dc_ae  # noqa: E402,F401
from . import opensora_v1_2  # noqa: E402,F401  (registers opensora_v1_2_vae)
from . import hunyuan_vae  # noqa: E402,F401  (registers hunyuan_vae)
