"""``config.json`` of a model folder: the one reader and writer, constructor-argument capture, family lookup and
the checkpoint-first merge of a shipped config with a checkpoint that describes its own architecture.

* ``capture_config(init)`` wraps a model ``__init__`` so that ``self.config`` holds EVERY constructor argument,
  defaults included: a folder saved today rebuilds the same model after a default changes.
* ``read_config_json(path)`` is the only ``json.loads`` of a ``config.json``; ``constructor_kwargs`` turns one
  into constructor arguments (``type``/``target`` and every ``_``-prefixed metadata key such as ``_class_name``,
  ``_diffusers_version`` or ``_name_or_path`` are dropped; unknown keys are one error naming them).
* ``write_config_json(model, folder)`` writes ``{"type": <registered name>, **model.config}`` atomically.
* ``config_model_class(config, path)`` finds the registered family a ``config.json`` describes, through ``type``,
  diffusers' ``_class_name`` or transformers' ``model_type`` (each family lists the names it reads in
  ``config_class_names``).
* ``checkpoint_first_kwargs`` merges: the checkpoint's architecture wins over the shipped config, runtime keys
  (tiling, micro-batching, freezing) come from the config, and keys the user set that contradict the checkpoint
  are one error naming them.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from torch import nn

CONFIG_FILE_NAME = "config.json"

# Keys that change how a model runs, not what it computes from its weights: they come from the shipped config or
# the command line even when the checkpoint stores another value (checkpoint-first keeps everything else).
RUNTIME_KEYS = frozenset(
    {
        "use_spatial_tiling",
        "use_temporal_tiling",
        "spatial_tile_size",
        "temporal_tile_size",
        "tile_overlap_factor",
        "micro_batch_size",
        "micro_frame_size",
        "freeze_vae_2d",
        "freeze_vae_2d_decoder",
        "disc_off_grad_ckpt",
        "pad_to_valid",
    }
)
# Foreign classes whose folders look like ours but hold another kind of model: class name -> what to do instead.
FOREIGN_CLASSES = {
    "AutoencoderDC": (
        "diffusers' 2-D (image) DC-AE; type 'dc_ae' is the Open-Sora 2.0 Video DC-AE (3-D): load a video DC-AE "
        "checkpoint (Open-Sora 2.0's hpcai-tech/Open-Sora-v2-Video-DC-AE) instead"
    ),
    "AutoencoderKL": (
        "a 2-D image VAE (diffusers AutoencoderKL), not a video autoencoder; as the spatial VAE of "
        "opensora_v1_2_vae pass it as vae_2d_pretrained"
    ),
}


class CheckpointError(RuntimeError):
    """A checkpoint or its ``config.json`` could not be read or does not fit the model."""


# ---- capture -------------------------------------------------------------------------------------------------------
def jsonable(value: Any, key: str = "config") -> Any:
    """``value`` with tuples as lists, checked to be storable in JSON (``key`` names it in the error)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(item, key) for item in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"constructor argument {key!r} of type {type(value).__name__} cannot be stored in config.json")


def _as_lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def capture_config(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``__init__`` so that the outermost call stores all its arguments, defaults included, in ``self.config``.

    Tuples become lists so that a config equals its own ``config.json`` round trip.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        if "config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    config[name] = value
            # Plain attribute set before nn.Module.__init__ runs: bypass Module.__setattr__ bookkeeping.
            object.__setattr__(self, "config", {k: _as_lists(v) for k, v in config.items()})
        init(self, *args, **kwargs)

    return wrapped


# ---- read ----------------------------------------------------------------------------------------------------------
def read_json_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object file (``config.json``, a shard index) as a dict; a clear error names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` at ``path`` (a file); the one reader used everywhere."""
    return read_json_file(path)


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``config.json`` of a model folder, or None when it has none."""
    path = Path(folder) / CONFIG_FILE_NAME
    return read_config_json(path) if path.is_file() else None


def is_metadata_key(key: str) -> bool:
    """diffusers / transformers bookkeeping (``_class_name``, ``_diffusers_version``, ``_name_or_path``)."""
    return key.startswith("_")


def _unwrapped_class(cls: type) -> type:
    """``cls`` without the dynamic subclass FSDP2's ``fully_shard`` swaps in (``FSDP<Name>(FSDPModule, <Name>)``)."""
    from torch.distributed.fsdp import FSDPModule

    while issubclass(cls, FSDPModule) and cls is not FSDPModule:
        cls = next(base for base in cls.__bases__ if base is not FSDPModule)
    return cls


def registry_name(cls: type) -> str | None:
    """The registered ``MODELS`` name of ``cls`` (of the model class under an FSDP2 wrapper class), None when it
    is not registered (a subclass of a registered class is another model: it is not named after its base)."""
    from ..registry import MODELS

    cls = _unwrapped_class(cls)
    return next((name for name, registered in MODELS.module_dict.items() if registered is cls), None)


def _registered_classes() -> dict[str, type]:
    from ..registry import MODELS, _ensure_registered

    _ensure_registered()
    return dict(MODELS.module_dict)


def _class_by_target(target: str, path: Path) -> type:
    """The class a ``target`` entry names; ``abc.FSDP<Name>`` (written by FSDP2 runs before ``type`` was used, a
    dynamic class no import finds) maps back to the registered class ``<Name>``."""
    from ..registry import import_object

    try:
        return import_object(target)
    except (ImportError, ValueError) as err:
        class_name = target.rpartition(".")[2]
        for cls in _registered_classes().values():
            if class_name == f"FSDP{cls.__name__}":
                return cls
        raise CheckpointError(f"{path}: 'target': {target!r} cannot be imported ({err}); set 'type' instead") from err


def config_model_class(config: Mapping[str, Any], path: str | os.PathLike) -> type | None:
    """The model class a ``config.json`` describes (None when it names none of ours), via ``type``, ``target``,
    ``_class_name`` or ``model_type``; a foreign 2-D class is one error saying what to load instead."""
    path = Path(path)
    classes = _registered_classes()
    if "type" in config:
        if config["type"] not in classes:
            known = ", ".join(sorted(classes))
            raise CheckpointError(f"{path}: unknown model type {config['type']!r}; registered: {known}")
        return classes[config["type"]]
    if "target" in config:
        return _class_by_target(str(config["target"]), path)
    for key in ("_class_name", "model_type"):
        name = config.get(key)
        if name is None:
            continue
        for cls in classes.values():
            if name in getattr(cls, "config_class_names", ()):
                return cls
        if name in FOREIGN_CLASSES:
            raise CheckpointError(f"{path}: {key} {name!r} is {FOREIGN_CLASSES[name]}")
    return None


def check_config_class(cls: type, config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise unless the ``config.json`` describes ``cls`` (or names no class at all)."""
    described = config_model_class(config, path)
    if described is None:
        names = getattr(cls, "config_class_names", ())
        class_name = config.get("_class_name")
        if names and class_name is not None and class_name not in names:
            raise CheckpointError(f"{path}: _class_name is {class_name!r}; {cls.__name__} reads {', '.join(names)}")
        return
    if issubclass(cls, described) or issubclass(described, cls):
        return
    stored, expected = registry_name(described) or described.__name__, registry_name(cls) or cls.__name__
    raise CheckpointError(f"{path}: folder holds a {stored!r} model, not {expected}; build it with type={stored!r}")


def constructor_kwargs(cls: type, config: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Constructor arguments of ``cls`` from a parsed ``config.json`` (``type``/``target``/``_*`` dropped)."""
    check_config_class(cls, config, path)
    kwargs = {k: v for k, v in config.items() if k not in ("type", "target") and not is_metadata_key(k)}
    # VideoAutoencoder.config_keys also lists the shared keys its constructor takes through **shared.
    if hasattr(cls, "config_keys"):
        names = list(cls.config_keys())
    else:
        parameters = inspect.signature(cls.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return kwargs
        names = list(parameters)[1:]
    known = [name for name in names if not is_metadata_key(name)]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise CheckpointError(f"{path}: unknown {cls.__name__} config keys {unknown}; known keys: {known}")
    return kwargs


# ---- write ---------------------------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def model_config_header(model: nn.Module) -> dict[str, str]:
    """``{"type": <registered name>}``, or ``{"target": <dotted class path>}`` for an unregistered class."""
    cls = _unwrapped_class(type(model))
    name = registry_name(cls)
    return {"type": name} if name else {"target": f"{cls.__module__}.{cls.__qualname__}"}


def write_config_json(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Write ``folder/config.json`` = header + ``model.config`` atomically; returns its path."""
    config = jsonable(dict(getattr(model, "config", {})))
    text = json.dumps({**model_config_header(model), **config}, indent=2) + "\n"
    path = Path(folder) / CONFIG_FILE_NAME
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


# ---- checkpoint first ----------------------------------------------------------------------------------------------
def _same_value(a: Any, b: Any) -> bool:
    return _as_lists(a) == _as_lists(b)


def user_model_keys(user_keys: Iterable[str]) -> set[str]:
    """Top-level model keys among the user-set keys: ``latent_channels``, ``model.latent_channels`` and
    ``model.vae_temporal.embed_dim`` (-> ``vae_temporal``) are all accepted."""
    return {key.removeprefix("model.").split(".")[0] for key in user_keys}


def checkpoint_first_kwargs(
    stored: Mapping[str, Any],
    configured: Mapping[str, Any],
    user_keys: Iterable[str],
    source: str,
    runtime_keys: Iterable[str] = RUNTIME_KEYS,
) -> dict[str, Any]:
    """Constructor kwargs for a checkpoint whose folder stores its architecture (``stored``).

    ``configured`` are the shipped config's kwargs: they fill keys the checkpoint does not store, and its
    ``runtime_keys`` always apply; every other stored key wins. A user-set key (``user_keys``) that contradicts a
    stored architecture key is one ``CheckpointError`` naming each such key.
    """
    runtime_keys = frozenset(runtime_keys)
    user = user_model_keys(user_keys)
    conflicts = sorted(
        key
        for key in user & set(configured) & set(stored)
        if key not in runtime_keys and not _same_value(configured[key], stored[key])
    )
    if conflicts:
        details = ", ".join(f"{key}={configured[key]!r} (checkpoint: {stored[key]!r})" for key in conflicts)
        raise CheckpointError(
            f"--model.from_pretrained {source} stores its own architecture and the command line contradicts it: "
            f"{details}; drop these flags or point --model.from_pretrained at a checkpoint of that architecture"
        )
    runtime = {k: v for k, v in configured.items() if k in runtime_keys}
    return {**configured, **stored, **runtime}
