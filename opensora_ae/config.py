"""Python config files (mmengine ``Config``, ``_base_`` inheritance) with dotted command-line overrides.

Every script is called as ``script.py CONFIG.py [--dotted.key VALUE | --dotted.key=VALUE | --flag] ...``:

* ``--model.from_pretrained PATH`` sets ``cfg.model.from_pretrained``; dashes in a key mean underscores
  (``--save-dir D`` sets ``save_dir``).
* Values are Python literals (int, float, bool, None, tuple, list, dict) and fall back to strings; a flag
  with no value is ``True``.
* A nested key that does not exist is created only under a dict. A top-level key the config does not know is
  an error suggesting the closest known key, unless the script declares it (``extra_keys``, e.g. ``load``).
"""

from __future__ import annotations

import ast
import difflib
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from mmengine.config import Config, ConfigDict


class ConfigError(ValueError):
    """A config file or command-line override that cannot be applied."""


def parse_value(text: str) -> Any:
    """Parse a command-line value as a Python literal, falling back to the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _option_key(token: str) -> str:
    return ".".join(part.replace("-", "_") for part in token[2:].split("."))


def parse_overrides(tokens: Sequence[str]) -> list[tuple[str, Any]]:
    """Turn ``["--a.b", "1", "--c=x", "--flag"]`` into ``[("a.b", 1), ("c", "x"), ("flag", True)]``."""
    overrides: list[tuple[str, Any]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {token!r}: overrides look like --key value or --key=value")
        if "=" in token:
            name, _, raw = token.partition("=")
            overrides.append((_option_key(name), parse_value(raw)))
            index += 1
        elif index + 1 < len(tokens) and not tokens[index + 1].startswith("--"):
            overrides.append((_option_key(token), parse_value(tokens[index + 1])))
            index += 2
        else:
            overrides.append((_option_key(token), True))
            index += 1
    return overrides


def _known_dotted_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, dict):
        for name, value in node.items():
            dotted = f"{prefix}{name}"
            keys.append(dotted)
            keys.extend(_known_dotted_keys(value, dotted + "."))
    return keys


def _suggest(key: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean --{match[0]}?" if match else ""


def apply_override(cfg: Config, key: str, value: Any, extra_keys: Iterable[str] = ()) -> None:
    """Set dotted ``key`` to ``value`` in ``cfg`` following the module's rules (see the module docstring)."""
    parts = key.split(".")
    if parts[0] not in cfg and parts[0] not in set(extra_keys):
        known = _known_dotted_keys(cfg.to_dict()) + list(extra_keys)
        raise ConfigError(f"unknown config key --{key}{_suggest(key, known)}")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, (dict, Config)) else None
        if child is None:
            child = ConfigDict()
            node[part] = child
        elif not isinstance(child, dict):
            parent = ".".join(parts[: depth + 1])
            raise ConfigError(f"cannot set --{key}: {parent} is {type(child).__name__} {child!r}, not a dict")
        node = child
    node[parts[-1]] = value


def load_config(
    config_path: str | Path, overrides: Sequence[str] = (), extra_keys: Iterable[str] = ()
) -> Config:
    """Load a config file and apply command-line override tokens to it."""
    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass a .py file such as configs/vae/train/demo_dc_ae.py")
    cfg = Config.fromfile(str(path))
    extra_keys = tuple(extra_keys)
    for key, value in parse_overrides(overrides):
        apply_override(cfg, key, value, extra_keys)
    cfg.config_path = str(path)
    cfg.config_name = path.stem
    return cfg


def parse_args(argv: Sequence[str] | None = None, extra_keys: Iterable[str] = ()) -> Config:
    """Script entry point: ``argv = [CONFIG.py, *overrides]`` (default ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("--"):
        raise ConfigError("usage: SCRIPT CONFIG.py [--key value ...]: the first argument must be a config file")
    return load_config(argv[0], argv[1:], extra_keys)


def format_config(cfg: Config) -> str:
    """The resolved config as Python source (what ``save_config`` writes)."""
    return cfg.pretty_text


def save_config(cfg: Config, run_dir: str | Path) -> Path:
    """Write the resolved config into ``run_dir/config.py`` and return its path."""
    target = Path(run_dir) / "config.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(format_config(cfg))
    return target
