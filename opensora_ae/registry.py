"""Registries for models, datasets, losses and discriminators.

Two config styles build objects:

* mmengine style ``dict(type="dc_ae", **kwargs)`` looks ``type`` up in the registry;
* LVDM style ``dict(target="pkg.module.Class", params={...})`` imports the class by dotted path,
  so users can plug in their own modules without editing the toolkit.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any, Mapping

from mmengine.registry import Registry

MODELS = Registry("model")
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
DISCRIMINATORS = Registry("discriminator")

# Modules whose import fills the registries; imported lazily so that `registry` stays import-light.
_REGISTERING_MODULES = ("opensora_ae.models", "opensora_ae.data", "opensora_ae.losses")


def import_object(dotted_path: str) -> Any:
    """Import ``pkg.module.Name`` and return ``Name``; raise a one-line error naming the path."""
    module_name, _, attr = dotted_path.rpartition(".")
    if not module_name:
        raise ValueError(f"target {dotted_path!r} is not a dotted path like 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"target {dotted_path!r}: cannot import module {module_name!r} ({err})") from err
    if not hasattr(module, attr):
        raise ImportError(f"target {dotted_path!r}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _ensure_registered() -> None:
    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


def component_class(cfg: Mapping[str, Any], registry: Registry) -> type:
    """The class ``dict(type=...)`` (looked up in ``registry``) or ``dict(target=...)`` names."""
    if "target" in cfg:
        return import_object(cfg["target"])
    if "type" not in cfg:
        raise KeyError(f"{registry.name} config needs 'type' (registered name) or 'target' (dotted path): "
                       f"got keys {sorted(cfg)}")
    if not isinstance(cfg["type"], str):
        return cfg["type"]
    _ensure_registered()
    cls = registry.get(cfg["type"])
    if cls is None:
        known = ", ".join(sorted(registry.module_dict))
        raise KeyError(f"unknown {registry.name} type {cfg['type']!r}; registered: {known}")
    return cls


def init_parameters(cls: type) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters of ``cls(...)`` by name; None when its ``__init__`` takes ``**kwargs`` (any name).

    ``**kwargs: Unpack[SomeTypedDict]`` (the models' shared keys) counts as that TypedDict's keys.
    """
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {parameter.name: parameter for parameter in parameters if parameter.kind in keyword_kinds}
    var_keyword = next((parameter for parameter in parameters if parameter.kind is parameter.VAR_KEYWORD), None)
    if var_keyword is None:
        return named
    typed_keys = _unpacked_keys(cls.__init__, var_keyword.name)
    if typed_keys is None:
        return None
    return {**named, **{key: inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
                        for key, annotation in typed_keys.items()}}


def _unpacked_keys(function: Any, name: str) -> dict[str, Any] | None:
    """The keys -> types of ``**name: Unpack[TypedDict]`` in ``function``'s signature, else None."""
    try:
        hint = typing.get_type_hints(function, include_extras=True).get(name)
    except (NameError, TypeError):
        return None
    if typing.get_origin(hint) is not typing.Unpack:
        return None
    (typed_dict,) = typing.get_args(hint)
    return typing.get_type_hints(typed_dict) if typing.is_typeddict(typed_dict) else None


def build(cfg: dict | None, registry: Registry, **extra: Any) -> Any:
    """Build an object from ``dict(type=..., **kw)`` or ``dict(target=..., params=...)``.

    ``extra`` keyword arguments are passed to the constructor and override the config.
    Returns None when ``cfg`` is None.
    """
    if cfg is None:
        return None
    cfg = dict(cfg)
    cls = component_class(cfg, registry)
    if "target" in cfg:
        cfg.pop("target")
        params = dict(cfg.pop("params", None) or {})
        params.update(cfg)
        params.update(extra)
        return cls(**params)
    cfg.pop("type")
    cfg.update(extra)
    return cls(**cfg)
