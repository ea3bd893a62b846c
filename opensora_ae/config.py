"""Python config files (mmengine ``Config``, ``_base_`` inheritance) with typed dotted command-line overrides.

Every script is called as ``script.py CONFIG [--dotted.key VALUE | --dotted.key=VALUE | --flag] ...``:

* ``--model.from_pretrained PATH`` sets ``cfg.model.from_pretrained``; dashes in a key mean underscores
  (``--save-dir D`` sets ``save_dir``).
* Values are Python literals (int, float, tuple, list, dict); ``true``/``false``/``none``/``null`` in any case
  are ``True``/``False``/``None``; anything else is a string. A flag with no value is ``True``.
* A value for a key the config already has is checked against that key's type: an int key takes ``1e3`` as
  1000 and refuses ``abc`` ("--max_steps: expected an int"), a string key keeps ``2024`` as the text "2024".
  Script keys the config may omit (``--max_steps``, ``--load``) are typed from :data:`KEY_TYPES`.
* A nested key that does not exist is created only under a dict; under a component dict (``model``,
  ``dataset``, losses, ``discriminator``) it must be a parameter of the class that dict builds, else the error
  suggests the closest parameter (``--model.latent_chanels`` -> "did you mean --model.latent_channels?").
* A top-level key the config does not know is an error suggesting the closest known key, unless the script
  declares it (``extra_keys``, e.g. ``load``).
"""

from __future__ import annotations

import ast
import difflib
import inspect
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from mmengine.config import Config, ConfigDict

# Words that mean a bool or None whatever their case (Python's own spellings included).
LITERAL_WORDS = {"true": True, "false": False, "none": None, "null": None}

# Types of the script keys a config may omit (OPTIONAL_KEYS of the training loop, the inference scripts' keys).
KEY_TYPES: dict[str, type] = {
    **dict.fromkeys(("max_steps", "epochs", "seed", "batch_size", "num_workers", "prefetch_factor", "log_every",
                     "ckpt_every", "keep_n_latest", "crf", "num_frames", "sample_rate", "height", "width"), int),
    **dict.fromkeys(("ema_decay", "grad_clip", "mixed_image_ratio", "fps_max"), float),
    **dict.fromkeys(("wandb", "grad_checkpoint", "skip_missing_perceptual", "find_unused_parameters", "overwrite",
                     "save_latents"), bool),
    **dict.fromkeys(("load", "save_dir", "outputs", "output", "device", "plugin", "dtype", "wandb_project",
                     "mixed_strategy", "random_length_rule", "layout"), str),
    **dict.fromkeys(("bucket_config", "forward_kwargs", "loss_inputs", "lr_scheduler", "vae_loss_config"), dict),
}

# The shipped configs: package data when installed; in a checkout a symlink to the repository's configs/.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

# Component dicts whose new keys must be constructor parameters: key -> registry attribute of opensora_ae.registry
# (for ``type=``) or the dotted class path it always builds.
COMPONENTS: dict[str, str] = {
    "model": "MODELS",
    "dataset": "DATASETS",
    "discriminator": "DISCRIMINATORS",
    "vae_loss_config": "opensora_ae.losses.VAELoss",
    "gen_loss_config": "opensora_ae.losses.GeneratorLoss",
    "disc_loss_config": "opensora_ae.losses.DiscriminatorLoss",
}
# Keys a component dict may hold besides constructor parameters (read by the builders, not the class).
BUILDER_KEYS: dict[str, tuple[str, ...]] = {
    # from_pretrained and the other weight-loading keys: opensora_ae.models.LOAD_KEYS.
    "model": ("type", "target", "params", "from_pretrained", "strict", "state_dict_key", "subfolder", "revision",
              "local_files_only", "random_init", "disc_off_grad_ckpt"),
    "dataset": ("type", "target", "params"),
    "discriminator": ("type", "target", "params", "from_pretrained"),
}


class ConfigError(ValueError):
    """A config file or command-line override that cannot be applied."""


class Override(NamedTuple):
    """One ``--key value`` pair: ``key`` dotted with underscores, ``text`` the raw value (None for a bare flag)."""

    key: str
    text: str | None

    @property
    def value(self) -> Any:
        return True if self.text is None else parse_value(self.text)


def parse_value(text: str) -> Any:
    """A command-line value: a literal word (true/none/... any case), a Python literal, else the raw string."""
    word = text.strip().lower()
    if word in LITERAL_WORDS:
        return LITERAL_WORDS[word]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def option_key(token: str) -> str:
    """``--save-dir`` -> ``save_dir``; ``--model.from-pretrained`` -> ``model.from_pretrained``."""
    return ".".join(part.replace("-", "_") for part in token.lstrip("-").split("."))


def parse_overrides(tokens: Sequence[str]) -> list[Override]:
    """``["--a.b", "1", "--c=x", "--flag"]`` -> ``[Override("a.b", "1"), Override("c", "x"),
    Override("flag", None)]``."""
    overrides: list[Override] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {token!r}: overrides look like --key value or --key=value")
        if "=" in token:
            name, _, raw = token.partition("=")
            overrides.append(Override(option_key(name), raw))
            index += 1
        elif index + 1 < len(tokens) and not tokens[index + 1].startswith("--"):
            overrides.append(Override(option_key(token), tokens[index + 1]))
            index += 2
        else:
            overrides.append(Override(option_key(token), None))
            index += 1
    return overrides


# ---------------------------------------------------------------------------------------------------------------
# typed values
# ---------------------------------------------------------------------------------------------------------------

_TYPE_WORDS = {bool: "true or false", int: "an int", float: "a number", str: "a string", dict: "a dict",
               list: "a list", tuple: "a tuple"}


def coerce_value(key: str, override: Override, expected: type | None) -> Any:
    """The override's value as ``expected`` (the type of the key's current value); None is always allowed."""
    value = override.value
    if expected is None or value is None:
        return value
    if expected is str and override.text is not None:
        return override.text
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected in (list, tuple):
        if isinstance(value, (list, tuple)):
            return expected(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # int-or-sequence keys (image_size=256)
    elif expected is dict:
        if isinstance(value, dict):
            return value
    elif expected is not str:
        return value
    raise ConfigError(f"--{key}: expected {_TYPE_WORDS[expected]}, got {override.text!r}")


def _value_type(value: Any) -> type | None:
    for kind in (bool, int, float, str, dict, tuple, list):
        if isinstance(value, kind):
            return kind
    return None


# ---------------------------------------------------------------------------------------------------------------
# applying overrides
# ---------------------------------------------------------------------------------------------------------------


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


def apply_override(cfg: Config, override: Override, extra_keys: Iterable[str] = ()) -> bool:
    """Set ``override.key`` in ``cfg`` following the module's rules; True when it created a new nested key."""
    key = override.key
    parts = key.split(".")
    extra_keys = set(extra_keys)
    if parts[0] not in cfg and parts[0] not in extra_keys:
        known = _known_dotted_keys(cfg.to_dict()) + sorted(extra_keys)
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
    leaf = parts[-1]
    exists = leaf in node
    if exists:
        expected = _value_type(node[leaf])
    else:
        expected = KEY_TYPES.get(key) if len(parts) == 1 else None
    node[leaf] = coerce_value(key, override, expected)
    return not exists and len(parts) > 1


def component_parameters(name: str, component: Mapping[str, Any]) -> dict[str, type | None] | None:
    """Keys the component dict ``name`` may hold -> their expected type (None: any): the built class's constructor
    parameters plus the builder's keys; None = any key."""
    from opensora_ae import registry

    spec = COMPONENTS[name]
    try:
        if "." in spec:
            cls = registry.import_object(spec)
        else:
            cls = registry.component_class(component, getattr(registry, spec))
    except (ImportError, KeyError, ValueError):
        return None  # a broken type/target is reported by the builder, with its own message
    parameters = registry.init_parameters(cls)
    if parameters is None:
        return None
    types = {key: _parameter_type(parameter) for key, parameter in parameters.items()}
    return {**dict.fromkeys(BUILDER_KEYS.get(name, ())), **types}


_ANNOTATION_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _parameter_type(parameter: inspect.Parameter) -> type | None:
    """The type a constructor parameter takes: its default's, else a plain annotation (``int``, ``int | None``)."""
    if parameter.default is not parameter.empty and parameter.default is not None:
        return _value_type(parameter.default)
    annotation = parameter.annotation
    if isinstance(annotation, type):
        return _ANNOTATION_TYPES.get(annotation.__name__)
    parts = {part.strip() for part in str(annotation).split("|")} - {"None"}
    return _ANNOTATION_TYPES.get(parts.pop()) if len(parts) == 1 else None


def _new_component_key(cfg: Config, key: str) -> tuple[str, str] | None:
    """``("model", "latent_channels")`` for a direct key of a checkable component dict, else None."""
    top, _, rest = key.partition(".")
    if top not in COMPONENTS or not rest or "." in rest or not isinstance(cfg.get(top), dict):
        return None
    if "params" in cfg[top] and "target" in cfg[top]:
        return None  # LVDM-style: keys beside params are merged; checked by the constructor itself
    return top, rest


def check_component_keys(cfg: Config, new_keys: Iterable[str]) -> None:
    """Refuse new keys under component dicts that the built class does not take, naming the closest parameter."""
    for key in new_keys:
        found = _new_component_key(cfg, key)
        parameters = component_parameters(found[0], cfg[found[0]]) if found else None
        if parameters is None or found[1] in parameters:
            continue
        top = found[0]
        known = [f"{top}.{name}" for name in sorted(parameters)]
        hint = _suggest(key, known) or f"; {top} takes: {', '.join(sorted(parameters))}"
        raise ConfigError(f"unknown config key --{key}{hint}")


def coerce_component_values(cfg: Config, overrides: Iterable[Override]) -> None:
    """New component keys take the type of the constructor parameter's default (``--model.latent_channels abc``
    is "expected an int", not a string that fails inside the model)."""
    for override in overrides:
        found = _new_component_key(cfg, override.key)
        parameters = component_parameters(found[0], cfg[found[0]]) if found else None
        expected = (parameters or {}).get(found[1]) if found else None
        if expected is not None:
            cfg[found[0]][found[1]] = coerce_value(override.key, override, expected)


# ---------------------------------------------------------------------------------------------------------------
# config files
# ---------------------------------------------------------------------------------------------------------------


def _base_files(tree: ast.Module, path: Path) -> list[Path]:
    """The local ``_base_`` files a parsed config names (package-style bases are mmengine's to resolve)."""
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_base_" for target in statement.targets
        ):
            try:
                bases = ast.literal_eval(statement.value)
            except ValueError:
                return []
            bases = [bases] if isinstance(bases, str) else list(bases)
            return [path.parent / base for base in bases if isinstance(base, str) and "::" not in base]
    return []


def check_config_syntax(path: Path, seen: set[Path] | None = None) -> None:
    """Parse ``path`` and its ``_base_`` files; a syntax error names the file and the line."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen or path.suffix != ".py":
        return
    seen.add(path)
    if not path.is_file():
        raise ConfigError(f"config {path}: _base_ file does not exist")
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as err:
        raise ConfigError(f"{path}:{err.lineno}: syntax error in config: {err.msg}") from None
    for base in _base_files(tree, path):
        check_config_syntax(base, seen)


def read_config_file(path: Path) -> Config:
    """``Config.fromfile`` with one-line errors naming the file."""
    check_config_syntax(path)
    try:
        return Config.fromfile(str(path))
    except (ConfigError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - any error executing a config file is the file's fault
        raise ConfigError(f"config {path}: {type(err).__name__}: {err}") from None


def shipped_configs(kind: str) -> list[str]:
    """Names of the shipped ``configs/vae/<kind>/*.py`` (``kind`` = "train" or "inference")."""
    return sorted(path.stem for path in (CONFIGS_DIR / "vae" / kind).glob("*.py"))


def resolve_config_path(name: str, kind: str) -> Path:
    """A config file path as given, or a shipped config by name (``video_dc_ae`` -> configs/vae/<kind>/video_dc_ae.py).

    A name may also be relative to the shipped root (``train/stage1``, ``vae/train/stage1.py``).
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = name[:-3] if name.endswith(".py") else name
    for candidate in (CONFIGS_DIR / "vae" / kind / f"{stem}.py", CONFIGS_DIR / "vae" / f"{stem}.py",
                      CONFIGS_DIR / f"{stem}.py"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"config {name!r} is neither a file nor a shipped {kind} config; shipped: {', '.join(shipped_configs(kind))}"
    )


def load_config(
    config_path: str | Path, overrides: Sequence[str] = (), extra_keys: Iterable[str] = ()
) -> Config:
    """Load a config file and apply command-line override tokens to it."""
    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass a .py file such as configs/vae/train/demo_dc_ae.py")
    cfg = read_config_file(path)
    apply_overrides(cfg, parse_overrides(overrides), extra_keys)
    cfg.config_path = str(path)
    cfg.config_name = path.stem
    return cfg


def apply_overrides(cfg: Config, overrides: Iterable[Override], extra_keys: Iterable[str] = ()) -> None:
    """Apply parsed overrides in order, then check the new component keys against their classes."""
    extra_keys = tuple(extra_keys)
    new = [override for override in overrides if apply_override(cfg, override, extra_keys)]
    check_component_keys(cfg, [override.key for override in new])
    coerce_component_values(cfg, new)


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
