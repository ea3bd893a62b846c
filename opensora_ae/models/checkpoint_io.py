"""Checkpoint IO shared by every model family: load state dicts, match them to a model, save/load folders.

* ``load_state_dict_file(path)`` reads ``.safetensors`` or a torch pickle (``.pt/.pth/.bin/.ckpt``, always with
  ``weights_only=True``) and unwraps a top-level ``state_dict`` / ``module`` / ``model`` entry.
* ``find_weights_file(folder)`` picks the weights file of a model folder.
* ``load_weights(model, source)`` strips wrapper prefixes (``module.``, ``model.``) only when that makes the keys
  match, then loads; with ``strict=True`` any mismatch is ONE error listing missing/unexpected/mis-shaped keys
  and naming the model family the checkpoint's keys look like.
* ``PretrainedMixin`` gives a model ``config`` (its JSON-able constructor kwargs, captured automatically),
  ``save_pretrained(dir)`` (``config.json`` + ``model.safetensors``, written atomically) and
  ``from_pretrained(path)``; families override ``convert_state_dict`` (key fixes such as dropping ``loss.*``)
  and ``config_from_pretrained_dir`` (foreign folder layouts such as diffusers ``config.json``).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Top-level entries that wrap the real state dict (Lightning: state_dict; DeepSpeed/DDP dumps: module, model).
WRAPPER_ENTRIES = ("state_dict", "module", "model")
# Preferred weight file names inside a model folder, in order.
WEIGHT_FILE_NAMES = (
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pt",
    "diffusion_pytorch_model.bin",
    "model.pt",
    "model.pth",
    "model.ckpt",
)
CONFIG_FILE_NAME = "config.json"
MAX_LISTED_KEYS = 10

# Key patterns that identify a checkpoint's family (checked on prefix-stripped keys) -> human hint.
KEY_SIGNATURES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("dc_ae", re.compile(r"^(encoder|decoder)\.stages\.\d+\.op_list\."), "an Open-Sora 2.0 Video DC-AE checkpoint"),
    (
        "opensora_v1_2_vae",
        re.compile(r"^(spatial_vae\.module\.|temporal_vae\.)"),
        "an Open-Sora 1.2 VAE pipeline checkpoint",
    ),
    (
        "hunyuan_vae",
        re.compile(r"^(encoder|decoder)\.(down|up)_blocks\.\d+\.resnets\.\d+\.conv1\.conv\.weight$"),
        "a HunyuanVideo causal 3-D VAE checkpoint (Tencent or diffusers AutoencoderKLHunyuanVideo layout)",
    ),
    (
        "causal_vae",
        re.compile(r"^(encoder|decoder)\.(down|up)\.\d+\.block\.\d+\."),
        "an Open-Sora-Plan CausalVideoVAE checkpoint",
    ),
    (
        "diffusers AutoencoderKL",
        re.compile(r"^(encoder|decoder)\.(down|up)_blocks\.\d+\.resnets\.\d+\.conv1\.weight$"),
        "a 2-D image VAE (diffusers AutoencoderKL), not a video autoencoder",
    ),
)


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model."""


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, entry: str | None = None, source: str = "checkpoint") -> StateDict:
    """Return the tensor dict inside a loaded checkpoint object.

    ``entry`` selects a top-level entry explicitly (e.g. ``"ema_state_dict"``); otherwise ``state_dict``,
    ``module`` and ``model`` entries are unwrapped (repeatedly) until a dict of tensors remains. Non-tensor values
    next to the tensors (e.g. a Lightning ``global_step`` stored inside ``state_dict``) are dropped.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    if entry is not None:
        if entry not in obj:
            raise CheckpointError(f"{source}: no top-level entry {entry!r}; available entries: {sorted(obj)[:20]}")
        obj = obj[entry]
    while not _is_tensor_dict(obj):
        wrapper = next((name for name in WRAPPER_ENTRIES if isinstance(obj.get(name), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    tensors = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{source}: found no tensors; top-level entries are {sorted(map(str, obj))[:20]} "
            f"(pass the entry holding the weights, e.g. state_dict_key='ema_state_dict')"
        )
    return tensors


def load_state_dict_file(path: str | os.PathLike, state_dict_key: str | None = None) -> StateDict:
    """Load a weights file into a ``name -> tensor`` dict on the CPU.

    ``.safetensors`` files are read directly; ``.pt/.pth/.bin/.ckpt`` with ``torch.load(weights_only=True)``.
    A top-level ``state_dict``/``module``/``model`` wrapper is unwrapped; ``state_dict_key`` picks another entry
    (``"ema_state_dict"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    elif suffix in PICKLE_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError or RuntimeError depending on the payload
            raise CheckpointError(
                f"{path}: cannot load with torch.load(weights_only=True) ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}); re-save only the state dict, e.g. "
                f"torch.save(ckpt['state_dict'], 'weights.pt'), or convert it to .safetensors"
            ) from err
    else:
        raise CheckpointError(
            f"{path}: unknown weights format {suffix!r}; use one of "
            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}"
        )
    return unwrap_state_dict(obj, state_dict_key, source=str(path))


def find_weights_file(folder: str | os.PathLike) -> Path:
    """Return the weights file of a model folder (``model.safetensors``, ``diffusion_pytorch_model.safetensors``,
    ``pytorch_model.bin``, ..., else the only ``*.safetensors`` / ``*.pt`` / ... file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    for suffix in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        candidates = sorted(folder.glob(f"*{suffix}"))
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(path.name for path in candidates)
            raise CheckpointError(f"{folder}: several weight files ({names}); pass the file path instead of the folder")
    listing = ", ".join(sorted(path.name for path in folder.iterdir())) or "(empty)"
    raise FileNotFoundError(
        f"{folder}: no weights file found (looked for {', '.join(WEIGHT_FILE_NAMES[:4])}, *.safetensors, *.pt, "
        f"*.pth, *.bin, *.ckpt); folder contains: {listing}"
    )


def detect_checkpoint_family(keys: Iterable[str]) -> tuple[str, str] | None:
    """``(family, description)`` of the first key signature that the keys match, or None."""
    keys = list(keys)
    for family, pattern, description in KEY_SIGNATURES:
        if any(pattern.search(key) for key in keys):
            return family, description
    return None


def strip_matching_prefixes(
    state_dict: StateDict, model_keys: set[str], prefixes: Iterable[str], max_depth: int = 3
) -> StateDict:
    """Strip wrapper prefixes (possibly nested, e.g. ``module.model.``) only when that increases the overlap of
    the keys with ``model_keys``; the sequence of strips with the largest overlap wins, ties keep fewer strips."""
    prefixes = tuple(prefixes)
    best, best_overlap = dict(state_dict), len(model_keys.intersection(state_dict))
    frontier = [best]
    for _ in range(max_depth):
        next_frontier = []
        for current in frontier:
            for prefix in prefixes:
                if not any(k.startswith(prefix) for k in current):
                    continue
                candidate = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in current.items()}
                if len(candidate) != len(current):  # stripping would merge two keys: not a wrapper prefix
                    continue
                next_frontier.append(candidate)
                overlap = len(model_keys.intersection(candidate))
                if overlap > best_overlap:
                    best, best_overlap = candidate, overlap
        frontier = next_frontier
    return best


@dataclass
class LoadResult:
    """Keys that did not load: absent from the checkpoint, unknown to the model, or of another shape."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = f" ... (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return f"{len(keys)} {title}: [{shown}{more}]"


def _mismatch_message(model: nn.Module, source_name: str, result: LoadResult, state_dict: StateDict) -> str:
    parts = [f"{source_name} does not fit {type(model).__name__}"]
    if result.missing:
        parts.append(_listing("missing keys", result.missing))
    if result.unexpected:
        parts.append(_listing("unexpected keys", result.unexpected))
    if result.mismatched:
        parts.append(_listing("shape mismatches", result.mismatched))
    family = detect_checkpoint_family(state_dict)
    # Families may name the exact config a checkpoint needs: checkpoint_hint(state_dict) -> str | None.
    hint = getattr(model, "checkpoint_hint", None)
    extra = hint(state_dict) if callable(hint) else None
    if family is not None:
        parts.append(f"keys look like {family[1]} (model type {family[0]!r})")
    if extra:
        parts.append(extra)
    parts.append("build the matching model/config or pass strict=False to load what fits")
    return "; ".join(parts)


def load_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = True,
    ignore_prefixes: Iterable[str] = (),
    strip_prefixes: Iterable[str] = ("module.", "model."),
    state_dict_key: str | None = None,
) -> LoadResult:
    """Load weights into ``model`` from a file, a folder or a state dict.

    The model's ``convert_state_dict`` (when it has one) fixes family-specific keys first; then keys starting
    with any of ``ignore_prefixes`` are dropped and ``strip_prefixes`` are removed where that makes keys match.
    With ``strict`` every mismatch raises one ``CheckpointError``; otherwise matching tensors load and the
    returned ``LoadResult`` lists the rest.
    """
    if isinstance(source, Mapping):
        source_name = "state dict"
        state_dict = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            path = find_weights_file(path)
        source_name = str(path)
        state_dict = load_state_dict_file(path, state_dict_key)
    convert = getattr(model, "convert_state_dict", None)
    if callable(convert):
        state_dict = convert(state_dict)
    ignore_prefixes = tuple(ignore_prefixes)
    if ignore_prefixes:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    model_state = model.state_dict()
    state_dict = strip_matching_prefixes(state_dict, set(model_state), strip_prefixes)

    result = LoadResult(
        missing=[k for k in model_state if k not in state_dict],
        unexpected=[k for k in state_dict if k not in model_state],
        mismatched=[
            f"{k}: checkpoint {list(v.shape)} vs model {list(model_state[k].shape)}"
            for k, v in state_dict.items()
            if k in model_state and v.shape != model_state[k].shape
        ],
    )
    if strict and not result.ok:
        raise CheckpointError(_mismatch_message(model, source_name, result, state_dict))
    loadable = {k: v for k, v in state_dict.items() if k in model_state and v.shape == model_state[k].shape}
    model.load_state_dict(loadable, strict=False, assign=_is_meta(model))
    return result


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _atomic_write(path: Path, write: Any) -> None:
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


def save_state_dict_file(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write ``state_dict`` to a ``.safetensors`` file atomically (tied tensors are stored as copies)."""
    from safetensors.torch import save_file

    seen: set[tuple[int, int]] = set()
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        tensors[name] = tensor.clone() if ident in seen else tensor
        seen.add(ident)
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    raise TypeError(f"constructor argument of type {type(value).__name__} cannot be stored in config.json")


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def registry_name(cls: type) -> str | None:
    """The name under which ``cls`` is registered in ``MODELS`` (None when it is not registered)."""
    from ..registry import MODELS

    return next((name for name, registered in MODELS.module_dict.items() if registered is cls), None)


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``config.json`` of a model folder, or None when it has none; invalid JSON is a CheckpointError."""
    path = Path(folder) / CONFIG_FILE_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from err


class PretrainedMixin:
    """``config`` capture, ``save_pretrained`` and ``from_pretrained`` for ``nn.Module`` model classes.

    Every subclass's ``__init__`` is wrapped so that the outermost constructor call stores its bound keyword
    arguments in ``self.config`` (a dict), which ``save_pretrained`` writes to ``config.json`` together with
    ``type`` (the registry name, or ``target`` = dotted class path for unregistered classes).
    """

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _capture_config(cls.__init__)  # type: ignore[method-assign]

    # ---- hooks for families -------------------------------------------------------------------------------
    @classmethod
    def convert_state_dict(cls, state_dict: StateDict) -> StateDict:
        """Fix family-specific key layouts before matching (e.g. drop ``loss.*``, strip ``vae.``)."""
        return state_dict

    @classmethod
    def config_from_pretrained_dir(cls, folder: str | os.PathLike) -> dict[str, Any]:
        """Constructor kwargs stored in a model folder (``{}`` when it has no ``config.json``)."""
        config = read_folder_config(folder)
        if config is None:
            return {}
        path = Path(folder) / CONFIG_FILE_NAME
        stored_type = config.pop("type", None)
        config.pop("target", None)
        expected = registry_name(cls)
        if stored_type is not None and expected is not None and stored_type != expected:
            raise CheckpointError(
                f"{path}: folder holds a {stored_type!r} model but {cls.__name__} is {expected!r}; "
                f"build it with type={stored_type!r}"
            )
        # diffusers-style metadata keys (_class_name, _diffusers_version) are not constructor arguments.
        return {k: v for k, v in config.items() if not k.startswith("_")}

    # ---- save / load ----------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (atomically); returns the folder."""
        folder = Path(folder)
        config = dict(_jsonable(getattr(self, "config", {})))
        name = registry_name(type(self))
        header = {"type": name} if name else {"target": f"{type(self).__module__}.{type(self).__qualname__}"}
        text = json.dumps({**header, **config}, indent=2, sort_keys=False) + "\n"
        assert isinstance(self, nn.Module)
        save_state_dict_file(self.state_dict(), folder / "model.safetensors")
        _atomic_write(folder / CONFIG_FILE_NAME, lambda tmp: Path(tmp).write_text(text))
        return folder

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        strict: bool = True,
        state_dict_key: str | None = None,
        **overrides: Any,
    ):
        """Build the model and load its weights.

        ``path`` is a folder (constructor kwargs from its ``config.json`` via ``config_from_pretrained_dir``,
        updated by ``overrides``; weights from ``find_weights_file``) or a weights file (kwargs = ``overrides``).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"from_pretrained: {str(path)!r} does not exist")
        kwargs = {**cls.config_from_pretrained_dir(path), **overrides} if path.is_dir() else dict(overrides)
        model = cls(**kwargs)
        load_weights(model, path, strict=strict, state_dict_key=state_dict_key)  # type: ignore[arg-type]
        return model


def _capture_config(init: Any) -> Any:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        if "config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            config: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    config[name] = value
            # Plain attribute set before nn.Module.__init__ runs: bypass Module.__setattr__ bookkeeping.
            # Tuples become lists so that a config equals its own config.json round trip.
            object.__setattr__(self, "config", {k: _lists(v) for k, v in config.items()})
        init(self, *args, **kwargs)

    return wrapped
