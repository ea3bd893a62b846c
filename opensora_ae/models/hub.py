"""Hugging Face Hub ids as ``from_pretrained`` sources, resolved through ``huggingface_hub`` and its cache.

Accepted besides local paths:

* ``org/repo`` (e.g. ``hpcai-tech/OpenSora-VAE-v1.2``): the repository snapshot;
* ``org/repo`` + ``subfolder="vae"``, or ``org/repo/vae`` (e.g. ``LanguageBind/Open-Sora-Plan-v1.1.0/vae``): that
  folder of the snapshot;
* ``org/repo/file.safetensors`` (as Open-Sora 2.0 configs write it): that one file.

``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``) resolves from the cache only (``HF_HUB_CACHE`` / ``HF_HOME``,
read at call time); a source neither on disk nor in the cache is one line naming the id and the download command.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json")
# org/repo[/path...]: Hub names are letters, digits, '-', '_' and '.', never starting with '.' or '-'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/[\w./-]+)?$")
_TRUE = {"1", "true", "yes", "on"}


def split_hub_id(source: str) -> tuple[str, str | None, str | None] | None:
    """``(repo_id, subfolder, filename)`` of a Hub-id-shaped source, or None when it cannot be one."""
    if source.startswith((".", "/", "~")) or "\\" in source or "//" in source or not _HUB_ID.match(source):
        return None
    org, repo, *rest = source.split("/")
    repo_id = f"{org}/{repo}"
    if rest and rest[-1].lower().endswith(WEIGHT_SUFFIXES):
        return repo_id, None, "/".join(rest)
    return repo_id, "/".join(rest) or None, None


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _cache_dir() -> str | None:
    """The cache ``huggingface_hub`` would use, from the environment now (its constants are read at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def download_command(repo_id: str, subfolder: str | None, filename: str | None, revision: str | None) -> str:
    """The ``hf download`` command that puts the needed files into the cache."""
    parts = ["hf download", repo_id]
    if filename:
        parts.append(filename)
    elif subfolder:
        parts.append(f"--include '{subfolder}/*'")
    if revision:
        parts.append(f"--revision {revision}")
    return " ".join(parts)


def _not_available(source: str, repo_id: str, subfolder: str | None, filename: str | None, revision: str | None,
                   reason: str) -> FileNotFoundError:
    command = download_command(repo_id, subfolder, filename, revision)
    legacy = command.replace("hf download", "huggingface-cli download", 1)
    return FileNotFoundError(
        f"from_pretrained={source!r}: no such local file or folder, and Hugging Face Hub id {repo_id!r} is not in "
        f"the local cache ({_cache_dir() or 'default HF cache'}) {reason}; download it first: `{command}` "
        f"(older huggingface_hub: `{legacy}`)"
    )


def resolve_pretrained(
    source: str | os.PathLike,
    subfolder: str | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """The local file or folder for ``source``: a path on disk, or a Hub id fetched into / found in the cache."""
    path = Path(source).expanduser()
    if path.exists():
        return path / subfolder if subfolder else path
    parsed = split_hub_id(str(source))
    if parsed is None:
        raise FileNotFoundError(f"from_pretrained={str(source)!r}: no such file or folder")
    repo_id, id_subfolder, filename = parsed
    folder = "/".join(part for part in (id_subfolder, subfolder) if part) or None
    offline = _offline(local_files_only)
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    reason = "and HF_HUB_OFFLINE=1 / local_files_only forbids downloading" if offline else "and the download failed"
    try:
        if filename:
            name = f"{folder}/{filename}" if folder else filename
            return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=_cache_dir(),
                                        local_files_only=offline))
        patterns = [f"{folder}/*"] if folder else None
        snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, cache_dir=_cache_dir(),
                                          local_files_only=offline))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as err:
        detail = reason if offline else f"{reason} ({type(err).__name__})"
        raise _not_available(str(source), repo_id, folder, filename, revision, detail) from err
    resolved = snapshot / folder if folder else snapshot
    if not resolved.exists():
        raise _not_available(str(source), repo_id, folder, filename, revision, f"(no {folder!r} in its snapshot)")
    return resolved
