"""What every script shares: ``--help``, ``--print-config``, the original projects' flags, one-line errors.

A config-driven script (train, inference, stats) is ``SCRIPT CONFIG [--key value ...]`` where ``CONFIG`` is a
file or a shipped config name (``video_dc_ae``). :func:`run_command` parses that command line with
:mod:`opensora_ae.config`, maps the flags users bring from Open-Sora 1.2 / 2.0 and Open-Sora-Plan onto our keys
(an explicit table, :data:`COMMON_ALIASES` + per-script tables), and runs the script's ``main(cfg)`` under
:func:`run_script`: a user error (config, data, checkpoint, disk, value) is one line on stderr and exit status 2;
the traceback is shown only with ``--debug True`` or ``OPENSORA_AE_DEBUG=1``. Under torchrun, errors every rank
meets alike (config errors) are printed by rank 0 only; other errors name the rank that met them.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mmengine.config import Config

from opensora_ae.config import (ConfigError, Override, apply_overrides, check_component_keys, format_config,
                                parse_overrides, parse_value, read_config_file, resolve_config_path, shipped_configs)

DEBUG_ENV = "OPENSORA_AE_DEBUG"
PRINT_CONFIG = "print_config"


def apply_model_config(cfg: Config, path: str) -> None:
    """Open-Sora-Plan ``--model_config CONFIG.json``: the model's architecture comes from that file.

    Keys starting with ``_`` (``_class_name``, ``_diffusers_version``: diffusers metadata) are ignored; keys set
    on the command line afterwards still win.
    """
    from opensora_ae.models.config_io import CheckpointError, is_metadata_key, read_config_json

    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"--model_config {path}: no such file; pass a model config.json (e.g. configs/vae/causal_vae/v1_1.json)")
    try:
        fields = {key: value for key, value in read_config_json(file).items() if not is_metadata_key(key)}
    except CheckpointError as err:
        raise ConfigError(f"--model_config {err}") from None
    if not isinstance(cfg.get("model"), dict):
        raise ConfigError(f"--model_config {path}: the config has no model dict to apply it to")
    cfg.model.update(fields)
    check_component_keys(cfg, [f"model.{key}" for key in fields])


@dataclass(frozen=True)
class Alias:
    """A flag of an original project: the keys of ours it sets, or the error naming the exact equivalent."""

    origin: str
    targets: tuple[str, ...] = ()
    error: str | None = None
    spelling: str | None = None  # how the original project writes the flag, when not with underscores
    apply: Callable[[Config, str], None] | None = None  # a flag that edits the config itself ...
    summary: str | None = None  # ... and what it does, for --help

    def describe(self) -> str:
        if self.summary:
            return self.summary
        return " + ".join(f"--{target}" for target in self.targets) if self.targets else self.error or ""


_WEIGHTS = ("model.from_pretrained",)
COMMON_ALIASES: dict[str, Alias] = {
    "data_path": Alias("Open-Sora 1.2", ("dataset.data_path",), spelling="--data-path"),
    "ckpt_path": Alias("Open-Sora 1.2", _WEIGHTS, spelling="--ckpt-path"),
    "pretrained_model_name_or_path": Alias("Open-Sora-Plan", _WEIGHTS),
    "ae_path": Alias("Open-Sora-Plan", _WEIGHTS),
    "ckpt": Alias("Open-Sora-Plan", _WEIGHTS),
    "model_path": Alias("Open-Sora-Plan", _WEIGHTS),
    "video_path": Alias("Open-Sora-Plan", ("dataset.data_path",)),
    "enable_tiling": Alias("Open-Sora-Plan", ("model.use_spatial_tiling", "model.use_temporal_tiling")),
    "model_config": Alias("Open-Sora-Plan", spelling="--model_config CONFIG.json", apply=apply_model_config,
                          summary="the model's architecture from that file"),
}
INFERENCE_ALIASES: dict[str, Alias] = {
    **COMMON_ALIASES,
    "rec_path": Alias("Open-Sora-Plan", error="outputs go to a folder: use --save-dir D (the reconstruction is "
                      "D/recn/<name>_recn.mp4, the input clip D/orig/<name>_orig.mp4)"),
    "output_origin": Alias("Open-Sora-Plan", error="the input clip is always written (D/orig/<name>_orig.mp4, "
                           "or <name>_ori.mp4 with --layout v1.2); drop the flag"),
}
TRAIN_ALIASES: dict[str, Alias] = {
    **COMMON_ALIASES,
    "resume_from_checkpoint": Alias("Open-Sora-Plan", ("load",)),
    "resolution": Alias("Open-Sora-Plan", ("dataset.image_size",)),
    "num_frames": Alias("Open-Sora-Plan", ("dataset.num_frames",)),
    "sample_rate": Alias("Open-Sora-Plan", ("dataset.sample_rate",)),
    "lr": Alias("Open-Sora-Plan", ("optim.lr",)),
}
# Clip-size flags that a bucketed config takes from bucket_config instead of the dataset dict.
_CLIP_SIZE_ALIASES = ("resolution", "num_frames")


@dataclass(frozen=True)
class Command:
    """A config-driven script: its usage text, the shipped config folder, its own keys and flag aliases."""

    name: str
    usage: str
    config_kind: str
    extra_keys: tuple[str, ...]
    aliases: Mapping[str, Alias] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "fix the config, the flags, the files or the disk": one line, no traceback.

    ``NonFiniteLossError`` is the training loop's stop after too many non-finite steps in a row: its message
    says what to change (learning rate, data, dtype); ``RunFolderError`` a run folder that belongs to another run
    or a live process.
    """
    from opensora_ae.data.video_io import VideoReadError
    from opensora_ae.models.checkpoint_io import CheckpointError
    from opensora_ae.train.loop import NonFiniteLossError
    from opensora_ae.train.run_folder import RunFolderError

    return (ConfigError, ValueError, KeyError, OSError, CheckpointError, VideoReadError, NonFiniteLossError,
            RunFolderError)


def parse_bool(text: str) -> bool:
    """``true``/``false`` in any case (argparse ``type=`` for flags of the argparse scripts)."""
    value = parse_value(text)
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {text!r}")
    return value


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug [VALUE]`` / ``--debug=VALUE`` (not a config key), and whether it asked for
    tracebacks (a bare ``--debug`` does; ``--debug false`` does not)."""
    kept, debug, index = [], False, 0
    while index < len(argv):
        token = argv[index]
        name, has_equals, text = token.partition("=")
        if name != "--debug":
            kept.append(token)
            index += 1
            continue
        if not has_equals:
            has_value = index + 1 < len(argv) and not argv[index + 1].startswith("--")
            text = argv[index + 1] if has_value else "true"
            index += 1 if has_value else 0
        debug = parse_value(text) is True
        index += 1
    return kept, debug


def debug_requested(argv: Sequence[str] = ()) -> bool:
    """``--debug [True]`` on the command line or ``OPENSORA_AE_DEBUG=1`` in the environment."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes") or split_debug(argv)[1]


def strip_debug(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--debug`` flag."""
    return split_debug(argv)[0]


def _error_line(err: BaseException) -> str:
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    rank = int(os.environ.get("RANK", "0"))
    where = f"[rank {rank}] " if rank else ""
    return f"error: {where}{message}"


# How long a silent rank waits for rank 0 to print a shared config error: leaving first would have torchrun
# stop rank 0 before it prints. The launcher stops the waiting rank once rank 0 has exited.
SILENT_RANK_GRACE_S = 20.0


def _reports_error(err: BaseException) -> bool:
    """Under torchrun, a config error is the same on every rank: rank 0 reports it."""
    return not isinstance(err, ConfigError) or int(os.environ.get("RANK", "0")) == 0


def run_script(main: Callable[[], int | None], debug: bool = False) -> None:
    """Run ``main``; a user error prints one line on stderr and exits 2 (re-raised as is when ``debug``)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    status: int | None = None
    try:
        status = main()
    except user_errors() as err:
        if debug:
            raise
        if _reports_error(err):
            print(_error_line(err), file=sys.stderr, flush=True)
        else:
            time.sleep(SILENT_RANK_GRACE_S)
        raise SystemExit(2) from None
    finally:
        from opensora_ae.train.parallel import destroy_distributed

        destroy_distributed()
    if status:
        raise SystemExit(status)


# ---------------------------------------------------------------------------------------------------------------
# fail early
# ---------------------------------------------------------------------------------------------------------------


def check_perceptual_backbone(cfg: Config) -> None:
    """Before anything heavy is built (and before torchrun ranks build models): a config whose loss needs the
    LPIPS backbone stops here, naming the file it looked for and both ways out, when that file is missing."""
    from opensora_ae.losses import VAELoss, lpips_backbone_path

    vae_cfg = dict(cfg.get("vae_loss_config") or {})
    default_weight = inspect.signature(VAELoss.__init__).parameters["perceptual_loss_weight"].default
    if not float(vae_cfg.get("perceptual_loss_weight", default_weight) or 0) > 0 or cfg.get("skip_missing_perceptual"):
        return
    net = vae_cfg.get("perceptual_net", "vgg")
    try:
        path = lpips_backbone_path(net, vae_cfg.get("perceptual_weights"))
    except ValueError as err:
        raise ConfigError(f"--vae_loss_config.perceptual_net: {err}") from None
    if not path.is_file():
        raise ConfigError(
            f"the loss needs the LPIPS {net} backbone and {path} does not exist: put torchvision's {path.name} there "
            f"(or pass --vae_loss_config.perceptual_weights FILE), or train without LPIPS: "
            f"--vae_loss_config.perceptual_loss_weight 0"
        )


# ---------------------------------------------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------------------------------------------


def wants_help(argv: Sequence[str]) -> bool:
    return any(token in ("-h", "--help") for token in argv)


def wants_print_config(overrides: Sequence[str]) -> bool:
    """``--print-config [True]`` (or ``--print_config``) among the override tokens: a flag, not a config key."""
    return any(override.key == PRINT_CONFIG and override.value is True for override in parse_overrides(overrides))


def resolve_aliases(cfg: Config, overrides: Sequence[Override], command: Command) -> list[Override]:
    """Map the original projects' flags onto our keys; a flag the config itself defines is never an alias."""
    resolved: list[Override] = []
    for override in overrides:
        alias = command.aliases.get(override.key)
        if alias is None or override.key in cfg or override.key in command.extra_keys:
            resolved.append(override)
            continue
        flag = f"--{override.key} ({alias.origin})"
        if alias.apply is not None:
            alias.apply(cfg, override.text or "")
        elif alias.error:
            raise ConfigError(f"{flag}: {alias.error}")
        elif override.key in _CLIP_SIZE_ALIASES and cfg.get("bucket_config"):
            raise ConfigError(f"{flag}: this config draws clip sizes from bucket_config; set --bucket_config "
                              f"\"{{'256px_ar1:1': {{17: (1.0, 1)}}}}\" "
                              f"({{resolution: {{num_frames: (keep probability, batch size)}}}})")
        else:
            resolved.extend(Override(target, override.text) for target in alias.targets)
    return resolved


def load_command_config(command: Command, argv: Sequence[str]) -> Config:
    """``[CONFIG, *overrides]`` -> the resolved config (aliases mapped, overrides typed and checked)."""
    if not argv or argv[0].startswith("-"):
        raise ConfigError(f"usage: {command.name} CONFIG [--key value ...]: the first argument must be a config file "
                          f"or a shipped config name ({', '.join(shipped_configs(command.config_kind))})")
    path = resolve_config_path(argv[0], command.config_kind)
    cfg = read_config_file(path)
    overrides = [override for override in parse_overrides(argv[1:]) if override.key != PRINT_CONFIG]
    resolved = resolve_aliases(cfg, overrides, command)
    apply_overrides(cfg, resolved, command.extra_keys)
    # The model keys the user typed: a checkpoint that describes its own architecture refuses contradicting ones.
    cfg.cli_model_keys = sorted({override.key for override in resolved if override.key.startswith("model.")})
    cfg.config_path = str(path)
    cfg.config_name = path.stem
    return cfg


def _short(value: Any, width: int = 100) -> str:
    text = repr(value.to_dict() if isinstance(value, Config) else value)
    return text if len(text) <= width else text[: width - 3] + "..."


def help_text(command: Command, argv: Sequence[str]) -> str:
    """Usage, flags, aliases and, when ``argv`` names a config, its top-level keys with their values."""
    lines = [f"usage: {command.name} CONFIG [--key value ...] [--print-config] [--debug True]", "",
             command.usage.strip(), "", f"CONFIG: a .py file or a shipped name from configs/vae/{command.config_kind}: "
             f"{', '.join(shipped_configs(command.config_kind))}", "", "options:",
             "  -h, --help          this help (with CONFIG: also its keys and values); runs nothing",
             "  --print-config      print the resolved config (after overrides) and exit",
             f"  --debug True        full tracebacks instead of one-line errors (or {DEBUG_ENV}=1)",
             "  --KEY VALUE         set a config key; --a.b VALUE a nested one; true/false/none in any case",
             f"  script keys:        {' '.join('--' + key for key in command.extra_keys)}"]
    if command.aliases:
        lines += ["", "flags of the original projects (docs/config.md):"]
        lines += [f"  {alias.spelling or '--' + name:<32} {alias.describe()}  [{alias.origin}]"
                  for name, alias in command.aliases.items()]
    config = next((token for token in argv if not token.startswith("-")), None)
    if config is not None:
        path = resolve_config_path(config, command.config_kind)
        cfg = read_config_file(path)
        lines += ["", f"keys of {path}:"]
        lines += [f"  {key} = {_short(value)}" for key, value in cfg.items()]
    return "\n".join(lines)


def run_command(command: Command, main: Callable[[Config], None], argv: Sequence[str] | None = None) -> None:
    """The whole life of a config-driven script: help, config, ``main(cfg)``, one-line errors, exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = strip_debug(argv)

    def body() -> None:
        if wants_help(argv):
            print(help_text(command, argv))
            return
        cfg = load_command_config(command, argv)
        if wants_print_config(argv[1:]):
            print(format_config(cfg))
            return
        main(cfg)

    run_script(body, debug)
