"""Checkpoint IO shared by every model family: load state dicts, match them to a model, save/load folders.

* ``load_state_dict_file(path)`` reads ``.safetensors``, a sharded ``*.index.json`` or a torch pickle
  (``.pt/.pth/.bin/.ckpt``, always with ``weights_only=True``) and unwraps a top-level ``state_dict`` / ``module`` /
  ``model`` entry; Lightning ``.ckpt`` files follow ``models/lightning.py`` (EMA weights when present). A truncated
  file, or a pickle holding Python objects, is one error naming the file.
* ``find_weights_file(folder)`` picks the weights file of a model folder.
* ``load_weights(model, source)`` strips wrapper prefixes (``module.``, ``model.``) only when that makes the keys
  match, then loads; with ``strict=True`` any mismatch is ONE error listing missing/unexpected/mis-shaped keys
  and naming the model family the checkpoint's keys look like.
* ``build_loaded(factory, source)`` builds a model with its parameters on the meta device (no throw-away random
  init; buffers are built for real) and assigns the checkpoint's tensors, in ``eval()`` mode.
* ``PretrainedMixin`` gives a model ``config`` (every constructor argument, defaults included, captured
  automatically; ``models/config_io.py``), ``save_pretrained(dir)`` (``config.json`` + ``model.safetensors``,
  written atomically) and ``from_pretrained(path_or_hub_id, torch_dtype, device, strict)``; families override
  ``convert_state_dict`` (key fixes such as dropping ``loss.*``) and ``config_from_pretrained_dir`` (foreign folder
  layouts such as diffusers ``config.json``), and list the foreign ``_class_name`` / ``model_type`` values their
  folders carry in ``config_class_names``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from .config_io import (
    CONFIG_FILE_NAME,
    CheckpointError,
    atomic_write,
    capture_config,
    config_model_class,
    constructor_kwargs,
    read_config_json,
    read_folder_config,
    read_json_file,
    registry_name,
    write_config_json,
)
from .hub import resolve_pretrained
from .lightning import is_lightning_checkpoint, lightning_entry

__all__ = [
    "CONFIG_FILE_NAME", "CheckpointError", "LoadResult", "PretrainedMixin", "StateDict", "build_loaded",
    "find_weights_file", "load_state_dict_file", "load_weights", "read_folder_config", "registry_name",
    "save_state_dict_file", "unwrap_state_dict",
]  # fmt: skip

StateDict = dict[str, torch.Tensor]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Sharded checkpoints: an index (``weight_map``: tensor name -> shard file) next to the shards.
INDEX_SUFFIX = ".index.json"
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
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
MAX_LISTED_KEYS = 10
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

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
        if not obj:
            raise CheckpointError(f"{source}: entry {entry!r} is empty; pick another entry with state_dict_key")
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


def _first_line(err: BaseException) -> str:
    """The first line of an exception message without terminal colour codes (torch's pickle errors carry them)."""
    text = _ANSI.sub("", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _truncated(path: Path, kind: str, detail: str) -> CheckpointError:
    return CheckpointError(f"{path} is truncated or not a {kind} file ({detail}); re-download or re-save it")


def _check_safetensors_file(path: Path) -> None:
    """Raise a ``CheckpointError`` naming ``path`` unless its header is complete and its data fits the file."""
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(8)
        header_size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if header_size < 0 or 8 + header_size > size:
            raise _truncated(path, "safetensors", f"{size} bytes, too short for its header")
        try:
            header = json.loads(file.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise _truncated(path, "safetensors", f"unreadable header: {err}") from err
    if not isinstance(header, dict):
        raise _truncated(path, "safetensors", "header is not a JSON object")
    offsets = [info.get("data_offsets", [0, 0]) for name, info in header.items() if name != "__metadata__"]
    needed = 8 + header_size + max((int(end) for _, end in offsets), default=0)
    if needed > size:
        raise _truncated(path, "safetensors", f"{size} bytes but its header describes {needed}")


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _check_safetensors_file(path)
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise _truncated(path, "safetensors", _first_line(err)) from err


def _unsafe_globals(path: Path, err: BaseException) -> list[str]:
    """Python classes a torch pickle needs besides tensors (e.g. ``argparse.Namespace``): listed from the archive
    (zip format), else from the ``GLOBAL <name>`` that the weights-only unpickler names in its error."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    if zipfile.is_zipfile(path):
        try:
            return get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # an unreadable archive: the caller reports the original error
            return []
    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", _ANSI.sub("", str(err)))))


def _load_pickle(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with one clear error per failure kind, naming the file."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        objects = _unsafe_globals(path, err)
        if objects:
            raise CheckpointError(
                f"{path}: holds Python objects besides tensors ({', '.join(objects)}), which "
                f"torch.load(weights_only=True) refuses to run; re-save only its weights from a Python session you "
                f"trust, e.g. torch.save(ckpt['state_dict'], 'weights.pt'), or convert them to .safetensors"
            ) from err
        if not zipfile.is_zipfile(path):
            raise _truncated(path, "torch checkpoint (.pt/.ckpt)", _first_line(err)) from err
        raise CheckpointError(
            f"{path}: cannot load with torch.load(weights_only=True) ({_first_line(err)}); re-save only the "
            f"state dict, e.g. torch.save(ckpt['state_dict'], 'weights.pt'), or convert it to .safetensors"
        ) from err


def _load_sharded(index_path: Path, state_dict_key: str | None) -> StateDict:
    """Every shard listed in the ``weight_map`` of ``index_path``, merged (each shard read once)."""
    weight_map = read_json_file(index_path).get("weight_map")
    if not isinstance(weight_map, Mapping) or not weight_map:
        raise CheckpointError(f"{index_path}: a shard index needs a non-empty 'weight_map' (tensor name -> shard file)")
    merged: StateDict = {}
    for shard_name in sorted(set(weight_map.values())):
        shard = index_path.parent / shard_name
        if not shard.is_file():
            raise CheckpointError(f"{index_path}: shard {shard_name!r} listed in its weight_map is missing")
        merged.update(load_state_dict_file(shard, state_dict_key))
    absent = sorted(set(weight_map) - set(merged))
    if absent:
        raise CheckpointError(f"{index_path}: {_listing('tensors listed but absent from their shards', absent)}")
    return merged


def load_state_dict_file(path: str | os.PathLike, state_dict_key: str | None = None) -> StateDict:
    """Load a weights file into a ``name -> tensor`` dict on the CPU.

    ``.safetensors`` files are read directly, ``*.index.json`` shard indexes shard by shard,
    ``.pt/.pth/.bin/.ckpt`` with ``torch.load(weights_only=True)``. A Lightning checkpoint gives its
    ``ema_state_dict`` when not empty, else its ``state_dict`` (``models/lightning.py``); other pickles have a
    top-level ``state_dict``/``module``/``model`` wrapper unwrapped. ``state_dict_key`` picks an entry explicitly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if path.name.lower().endswith(INDEX_SUFFIX):
        return _load_sharded(path, state_dict_key)
    if suffix in SAFETENSORS_SUFFIXES:
        obj: Any = _load_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        obj = _load_pickle(path)
        if is_lightning_checkpoint(obj):
            state_dict_key = lightning_entry(obj, state_dict_key)
    else:
        raise CheckpointError(
            f"{path}: unknown weights format {suffix!r}; use one of "
            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)} or a sharded *{INDEX_SUFFIX}"
        )
    return unwrap_state_dict(obj, state_dict_key, source=str(path))


def find_weights_file(folder: str | os.PathLike) -> Path:
    """Return the weights file of a model folder (``model.safetensors``, ``diffusion_pytorch_model.safetensors``,
    ``pytorch_model.bin``, ..., a shard index ``*.index.json``, else the only ``*.safetensors`` / ``*.pt`` / ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    for pattern in (f"*{INDEX_SUFFIX}",) + tuple(f"*{suffix}" for suffix in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES):
        candidates = sorted(folder.glob(pattern))
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(path.name for path in candidates)
            raise CheckpointError(f"{folder}: several weight files ({names}); pass the file path instead of the folder")
    listing = ", ".join(sorted(path.name for path in folder.iterdir())) or "(empty)"
    raise FileNotFoundError(
        f"{folder}: no weights file found (looked for {', '.join(WEIGHT_FILE_NAMES[:4])}, *{INDEX_SUFFIX}, "
        f"*.safetensors, *.pt, *.pth, *.bin, *.ckpt); folder contains: {listing}"
    )


def read_weights(source: str | os.PathLike | Mapping[str, torch.Tensor], state_dict_key: str | None = None
                 ) -> tuple[StateDict, str]:
    """``(state dict, name for messages)`` of a weights file, a model folder or an in-memory state dict."""
    if isinstance(source, Mapping):
        return dict(source), "state dict"
    path = Path(source)
    if path.is_dir():
        path = find_weights_file(path)
    return load_state_dict_file(path, state_dict_key), str(path)


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


def prepare_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    ignore_prefixes: Iterable[str] = (),
    strip_prefixes: Iterable[str] = ("module.", "model."),
) -> StateDict:
    """The model's ``convert_state_dict`` (when it has one), minus ``ignore_prefixes`` keys, with wrapper prefixes
    stripped where that makes the keys match the model's."""
    state_dict = dict(state_dict)
    convert = getattr(model, "convert_state_dict", None)
    if callable(convert):
        state_dict = convert(state_dict)
    ignore_prefixes = tuple(ignore_prefixes)
    if ignore_prefixes:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    return strip_matching_prefixes(state_dict, set(model.state_dict()), strip_prefixes)


def match_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> LoadResult:
    """Which keys of a prepared state dict are missing, unexpected or of another shape than the model's."""
    model_state = model.state_dict()
    return LoadResult(
        missing=[k for k in model_state if k not in state_dict],
        unexpected=[k for k in state_dict if k not in model_state],
        mismatched=[
            f"{k}: checkpoint {list(v.shape)} vs model {list(model_state[k].shape)}"
            for k, v in state_dict.items()
            if k in model_state and v.shape != model_state[k].shape
        ],
    )


def _assign_loadable(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load the tensors that fit; into a meta model by assignment, cast to the dtype the model was built with."""
    model_state = model.state_dict()
    loadable = {k: v for k, v in state_dict.items() if k in model_state and v.shape == model_state[k].shape}
    if not _is_meta(model):
        model.load_state_dict(loadable, strict=False)
        return
    cast = {k: v.to(model_state[k].dtype) if v.is_floating_point() else v for k, v in loadable.items()}
    model.load_state_dict(cast, strict=False, assign=True)


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
    raw, source_name = read_weights(source, state_dict_key)
    state_dict = prepare_state_dict(model, raw, ignore_prefixes, strip_prefixes)
    result = match_state_dict(model, state_dict)
    if strict and not result.ok:
        raise CheckpointError(_mismatch_message(model, source_name, result, state_dict))
    _assign_loadable(model, state_dict)
    return result


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every ``nn.Parameter`` on the meta device: no memory and no random init for weights a checkpoint
    replaces. Buffers stay real, so values a constructor computes (scales, shifts, tables) keep their init."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_loaded(
    factory: Callable[[], nn.Module],
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = True,
    state_dict_key: str | None = None,
    ignore_prefixes: Iterable[str] = (),
) -> nn.Module:
    """``factory()`` with the weights of ``source``, in ``eval()`` mode, built without a throw-away random init.

    The model is built with meta parameters and the checkpoint's tensors are assigned. With ``strict=False`` and
    parameters the checkpoint lacks, the model is built for real instead so that those keep their random init.
    """
    raw, source_name = read_weights(source, state_dict_key)
    with parameters_on_meta():
        model = factory()
    state_dict = prepare_state_dict(model, raw, ignore_prefixes)
    result = match_state_dict(model, state_dict)
    if strict and not result.ok:
        raise CheckpointError(_mismatch_message(model, source_name, result, state_dict))
    if result.missing or result.mismatched:
        model = factory()
    _assign_loadable(model, state_dict)
    still_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if still_meta:
        raise CheckpointError(f"{source_name}: {type(model).__name__} left {_listing('tensors unloaded', still_meta)}")
    return model.eval()


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
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp))


class PretrainedMixin:
    """``config`` capture, ``save_pretrained`` and ``from_pretrained`` for ``nn.Module`` model classes.

    Every subclass's ``__init__`` is wrapped so that the outermost constructor call stores ALL its arguments,
    defaults included, in ``self.config`` (a dict), which ``save_pretrained`` writes to ``config.json`` together
    with ``type`` (the registry name, or ``target`` = dotted class path for unregistered classes).
    ``config_class_names`` lists the diffusers ``_class_name`` / transformers ``model_type`` values of foreign
    folders the family reads (``build_model`` finds the family of a folder through them).
    """

    config: dict[str, Any]
    config_class_names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = capture_config(cls.__init__)  # type: ignore[method-assign]

    def register_to_config(self, **changes: Any) -> None:
        """Record constructor arguments whose effective value differs from the one passed (e.g. a folder path
        whose contents now live in the weights), so that ``config.json`` rebuilds this model."""
        self.config = {**self.config, **changes}

    # ---- hooks for families -------------------------------------------------------------------------------
    @classmethod
    def convert_state_dict(cls, state_dict: StateDict) -> StateDict:
        """Fix family-specific key layouts before matching (e.g. drop ``loss.*``, strip ``vae.``)."""
        return state_dict

    @classmethod
    def config_from_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """Constructor kwargs of a ``config.json`` file (metadata ``_*`` keys dropped, unknown keys refused)."""
        return constructor_kwargs(cls, read_config_json(path), path)

    @classmethod
    def config_from_pretrained_dir(cls, folder: str | os.PathLike) -> dict[str, Any]:
        """Constructor kwargs stored in a model folder (``{}`` when it has no ``config.json``)."""
        path = Path(folder) / CONFIG_FILE_NAME
        return cls.config_from_file(path) if path.is_file() else {}

    # ---- save / load ----------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (atomically); returns the folder."""
        assert isinstance(self, nn.Module)
        folder = Path(folder)
        save_state_dict_file(self.state_dict(), folder / "model.safetensors")
        write_config_json(self, folder)
        return folder

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        strict: bool = True,
        state_dict_key: str | None = None,
        subfolder: str | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        **overrides: Any,
    ):
        """Build the model, load its weights and return it in ``eval()`` mode (no throw-away random init).

        ``path`` is a folder, a weights file or a Hugging Face Hub id (``models/hub.py``: ``org/repo`` with an
        optional ``subfolder``, ``org/repo/file.safetensors``). Constructor kwargs come from the folder's
        ``config.json`` (for a file: the ``config.json`` beside it), updated by ``overrides``.
        ``state_dict_key`` picks a checkpoint entry (Lightning: ``"state_dict"`` instead of the EMA weights).
        """
        local = resolve_pretrained(path, subfolder=subfolder, revision=revision, local_files_only=local_files_only)
        config_folder = stored_config_folder(local)
        stored = cls.config_from_pretrained_dir(config_folder) if config_folder else {}
        kwargs = {**stored, **overrides}
        model = build_loaded(lambda: cls(**kwargs), local, strict=strict, state_dict_key=state_dict_key)
        return model.to(device=device, dtype=torch_dtype)


def _describes_model(folder: Path) -> bool:
    """True when ``folder/config.json`` names one of our model families (so it describes a file beside it)."""
    config = read_folder_config(folder)
    return config is not None and config_model_class(config, folder / CONFIG_FILE_NAME) is not None


def stored_config_folder(path: Path) -> Path | None:
    """The folder whose ``config.json`` describes the checkpoint at ``path`` (a folder, or a file with a family-
    naming ``config.json`` beside it), or None when it describes nothing."""
    if path.is_dir():
        return path if (path / CONFIG_FILE_NAME).is_file() else None
    return path.parent if _describes_model(path.parent) else None
