"""Training checkpoints: atomic save, ``keep_n_latest`` pruning and exact resume.

A checkpoint is a folder ``<run_dir>/epoch{E}-global_step{S}/``::

    model.safetensors          full weights, the unwrapped model's key names (+ config.json when the model has one)
    loss.safetensors           the loss's trainable parameters (a learnable logvar), when it has any
    ema.safetensors            EMA weights
    discriminator.safetensors  (discriminator phase only)
    optimizer.pt, optimizer_discriminator.pt        full (unsharded) optimizer states, keyed by parameter name
                                                    (``model.<name>`` / ``loss.<name>`` when the loss has
                                                    trainable parameters in the autoencoder optimizer)
    lr_scheduler.pt, lr_scheduler_discriminator.pt
    scaler.pt                  fp16 gradient scaler(s)
    sampler.pt                 data sampler position
    rng/rank{R}.pt             python / numpy / torch / CUDA generator states of every rank (as tensors)
    running_states.json        epoch, global_step, samples seen, skipped-step counter

Every ``.pt`` file holds only tensors and plain containers (dicts, lists, numbers, strings) and is read with
``torch.load(weights_only=True)``: a crafted pickle in a checkpoint folder is refused with one line naming the
file, never run.

Full state dicts are gathered with ``torch.distributed.checkpoint.state_dict`` (a collective under FSDP2) and
written by rank 0, so a checkpoint of a ``zero2``/``zero3`` run loads into DDP or single-process runs and vice
versa. Writes go to ``.<name>.tmp`` first and the folder is renamed once complete; ranks share the run
directory (one machine, or a shared filesystem for multi-node runs). Saving over an existing step folder moves
the old one aside (``.<name>.old``) before the new one moves in and deletes it last; a save interrupted between
the two renames is repaired by :func:`restore_interrupted_save`, so a kill at any instant leaves a loadable
checkpoint under its final name. A failed write (disk full) removes the temporary folder and raises one line.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..models.checkpoint_io import CheckpointError, load_state_dict_file, save_state_dict_file
from ..models.config_io import CONFIG_FILE_NAME, write_config_json
from ..write_errors import WRITE_ERRORS, write_failed
from .ema import EMA
from .parallel import DistContext, any_rank, barrier, broadcast_object

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^epoch(\d+)-global_step(\d+)$")
RUNNING_STATES = "running_states.json"
FULL_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass
class RunningStates:
    """Counters that place a run in time; saved as ``running_states.json``."""

    epoch: int = 0
    global_step: int = 0  # optimizer iterations done
    samples_seen: int = 0  # over all ranks
    skipped_steps: int = 0  # non-finite losses/gradients
    batches_in_epoch: int = 0  # batches of the current epoch consumed (global_step within the epoch)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trainable:
    """A model with its optimizer, scheduler and gradient scaler, saved under ``name``-derived file names.

    ``loss`` is a loss module whose trainable parameters (Open-Sora-Plan's learnable ``logvar``) the same
    optimizer steps; no DDP/FSDP wrapper reduces them, so the loop averages their gradients over ranks.
    """

    name: str  # "model" or "discriminator"
    model: nn.Module  # unwrapped (FSDP2-sharded in place, never the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loss: nn.Module | None = None

    def suffix(self) -> str:
        return "" if self.name == "model" else f"_{self.name}"

    def loss_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.loss.parameters() if p.requires_grad] if self.loss is not None else []

    def optimized_modules(self) -> nn.Module:
        """The module tree holding every parameter of ``optimizer`` (for name-keyed optimizer state dicts)."""
        if not self.loss_parameters():
            return self.model
        return _ModelAndLoss(self.model, self.loss)


class _ModelAndLoss(nn.Module):
    """A view grouping a model and its loss: parameter names ``model.<name>`` and ``loss.<name>``."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model, self.loss = model, loss


def checkpoint_name(epoch: int, global_step: int) -> str:
    return f"epoch{epoch}-global_step{global_step}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of ``run_dir``, oldest first (by global step)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(2)), p) for p in run_dir.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def _rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain values (``torch.load(weights_only=True)`` reads them back)."""
    version, python_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _TmpWriter:
    """Writes files into a checkpoint's temporary folder, keeping the first failure instead of raising at once:
    every rank still reaches the save's collectives, then all ranks raise together (:meth:`raise_if_failed`)."""

    def __init__(self) -> None:
        self.failure: tuple[Path, BaseException] | None = None

    def write(self, path: Path, write: Any) -> None:
        """Call ``write(path)`` unless an earlier write failed."""
        if self.failure is not None:
            return
        try:
            write(path)
        except WRITE_ERRORS as err:
            self.failure = (path, err)

    def torch_save(self, obj: Any, path: Path) -> None:
        self.write(path, lambda target: torch.save(obj, target))

    def raise_if_failed(self, ctx: DistContext, tmp: Path, final: Path) -> None:
        """On every rank, when a write failed on any: remove ``tmp`` (rank 0) and raise one line."""
        if not any_rank(self.failure is not None, ctx.device):
            return
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        consequence = f"checkpoint {final.name} not saved, its temporary folder removed, earlier checkpoints untouched"
        if self.failure is None:
            raise OSError(f"{final}: another rank failed to write its part; {consequence}")
        path, err = self.failure
        raise write_failed(err, path, consequence) from None


def _write_model_files(folder: Path, trainable: Trainable, ctx: DistContext, writer: _TmpWriter) -> None:
    """Gather full model and optimizer states (collective) and write them from rank 0."""
    weights = get_model_state_dict(trainable.model, options=FULL_CPU)
    optim_state = get_optimizer_state_dict(trainable.optimized_modules(), trainable.optimizer, options=FULL_CPU)
    if not ctx.is_main:
        return
    writer.write(folder / f"{trainable.name}.safetensors", lambda path: save_state_dict_file(weights, path))
    if trainable.loss_parameters():
        # Replicated on every rank (gradients averaged), so rank 0's copy is the state.
        writer.write(folder / f"loss{trainable.suffix()}.safetensors",
                     lambda path: save_state_dict_file(trainable.loss.state_dict(), path))
    config = getattr(trainable.model, "config", None)
    if trainable.name == "model" and isinstance(config, dict) and hasattr(trainable.model, "save_pretrained"):
        # Makes the checkpoint folder a model folder: --model.from_pretrained CKPT rebuilds the same model.
        writer.write(folder / CONFIG_FILE_NAME, lambda path: write_config_json(trainable.model, path.parent))
    suffix = trainable.suffix()
    writer.torch_save(optim_state, folder / f"optimizer{suffix}.pt")
    writer.torch_save(trainable.scheduler.state_dict(), folder / f"lr_scheduler{suffix}.pt")
    writer.torch_save(trainable.scaler.state_dict(), folder / f"scaler{suffix}.pt")


def save_checkpoint(
    run_dir: str | Path,
    ctx: DistContext,
    trainables: list[Trainable],
    ema: EMA | None,
    sampler_state: dict[str, Any] | None,
    states: RunningStates,
    keep_n_latest: int = 0,
) -> Path:
    """Write a complete checkpoint atomically on all ranks together; returns its final path.

    ``keep_n_latest > 0`` deletes older checkpoints beyond that many, only after the new one is in place.
    """
    run_dir = Path(run_dir)
    final = run_dir / checkpoint_name(states.epoch, states.global_step)
    tmp = run_dir / f".{final.name}.tmp"
    writer = _TmpWriter()
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        writer.write(tmp / "rng", lambda path: path.mkdir(parents=True))
    barrier()
    writer.torch_save(_rng_state(), tmp / "rng" / f"rank{ctx.rank}.pt")
    for trainable in trainables:
        _write_model_files(tmp, trainable, ctx, writer)
    ema_state = ema.state_dict() if ema is not None else None
    if ctx.is_main:
        if ema_state is not None:
            writer.write(tmp / "ema.safetensors", lambda path: save_state_dict_file(ema_state, path))
        if sampler_state is not None:
            writer.torch_save(sampler_state, tmp / "sampler.pt")
        # Written last: a folder with running_states.json is complete.
        writer.write(tmp / RUNNING_STATES, lambda path: path.write_text(json.dumps(asdict(states), indent=2) + "\n"))
    writer.raise_if_failed(ctx, tmp, final)
    if ctx.is_main:
        _move_into_place(tmp, final)
        if keep_n_latest > 0:
            for old in list_checkpoints(run_dir)[:-keep_n_latest]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _aside_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final``. An existing ``final`` is moved aside first and deleted last, so
    at every instant either ``final`` or its aside copy is a complete checkpoint (see restore_interrupted_save)."""
    aside = _aside_name(final)
    if not final.exists():
        tmp.rename(final)
        return
    shutil.rmtree(aside, ignore_errors=True)
    final.rename(aside)
    tmp.rename(final)
    shutil.rmtree(aside)


def restore_interrupted_save(folder: str | Path) -> None:
    """Finish what an interrupted :func:`_move_into_place` left: ``folder`` missing but its aside copy complete
    -> move the copy back; both present -> drop the copy (``folder`` is the newer complete one)."""
    folder = Path(folder)
    aside = _aside_name(folder)
    if not aside.is_dir():
        return
    if (folder / RUNNING_STATES).is_file():
        shutil.rmtree(aside, ignore_errors=True)
    elif not folder.exists() and (aside / RUNNING_STATES).is_file():
        logger.warning("%s: restoring the checkpoint from %s (a save over it was interrupted)", folder, aside.name)
        aside.rename(folder)


def restore_interrupted_saves(run_dir: str | Path) -> None:
    """:func:`restore_interrupted_save` for every step folder of ``run_dir`` that was being replaced."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for aside in run_dir.glob(".epoch*-global_step*.old"):
        restore_interrupted_save(run_dir / aside.name[1:-len(".old")])


def check_checkpoint(folder: str | Path) -> None:
    """One clear error unless ``folder`` is a complete training checkpoint."""
    folder = Path(folder)
    if not (folder / RUNNING_STATES).is_file():
        raise FileNotFoundError(
            f"--load {folder}: not a training checkpoint (no {RUNNING_STATES}); pass a folder like "
            f"outputs/000-name/epoch0-global_step100, or use --model.from_pretrained for weights only"
        )


def load_checkpoint(
    folder: str | Path,
    ctx: DistContext,
    trainables: list[Trainable],
    ema: EMA | None,
    sampler: Any,
) -> RunningStates:
    """Restore everything :func:`save_checkpoint` wrote, on every rank; returns the running states.

    Call after wrapping the models (DDP / FSDP2) and building optimizers and schedulers. RNG states are restored
    per rank when the checkpoint has one for this rank (ranks without one are reseeded). With another world size
    than the saved run the model, EMA and optimizer states load the same, but the current epoch's data restarts
    from its beginning (the sampler deals batches to ranks by world size).
    """
    folder = Path(folder)
    restore_interrupted_save(folder)
    check_checkpoint(folder)
    for trainable in trainables:
        weights_file = folder / f"{trainable.name}.safetensors"
        if not weights_file.is_file():
            raise FileNotFoundError(f"--load {folder}: missing {weights_file.name}; the checkpoint is incomplete")
        _fit(weights_file, lambda: set_model_state_dict(trainable.model, load_state_dict_file(weights_file),
                                                        options=FULL_CPU))
        suffix = trainable.suffix()
        _load_loss_parameters(folder, trainable)
        optim_file = folder / f"optimizer{suffix}.pt"
        optim_state = load_plain_file(optim_file)
        _fit(optim_file, lambda: set_optimizer_state_dict(trainable.optimized_modules(), trainable.optimizer,
                                                          optim_state, options=FULL_CPU))
        scheduler_file, scaler_file = folder / f"lr_scheduler{suffix}.pt", folder / f"scaler{suffix}.pt"
        _fit(scheduler_file, lambda: trainable.scheduler.load_state_dict(load_plain_file(scheduler_file)))
        _fit(scaler_file, lambda: trainable.scaler.load_state_dict(load_plain_file(scaler_file)))
    if ema is not None:
        ema_file = folder / "ema.safetensors"
        ema.load_state_dict(load_state_dict_file(ema_file) if ema_file.is_file() else _weights_as_ema(trainables))
    states = RunningStates(**json.loads((folder / RUNNING_STATES).read_text()))
    if sampler is not None and (folder / "sampler.pt").is_file():
        sampler_state = load_plain_file(folder / "sampler.pt")
        if sampler_state.get("world_size", ctx.world_size) == ctx.world_size:
            sampler.load_state_dict(sampler_state)
        else:
            # The batches of an epoch are dealt to ranks by world size: another world size restarts the epoch.
            logger.warning("--load %s: saved with %s ranks, now %s: epoch %d restarts from its first batch",
                           folder, sampler_state["world_size"], ctx.world_size, states.epoch)
            states.batches_in_epoch = 0
    rng_file = folder / "rng" / f"rank{ctx.rank}.pt"
    if rng_file.is_file():
        _fit(rng_file, lambda: _set_rng_state(load_plain_file(rng_file)))
    else:
        torch.manual_seed(torch.initial_seed() + ctx.rank)
    return broadcast_object(states)


def load_plain_file(path: Path) -> Any:
    """A ``.pt`` file of tensors and plain containers, read with ``torch.load(weights_only=True)``.

    A file holding any other object (a pickle that could run code on load) is refused, never executed; a
    truncated or foreign file is one error naming it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--load {path.parent}: missing {path.name}; the checkpoint is incomplete")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain containers "
                              f"({_unpickler_reason(err)}), which could run code; nothing in it was run") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint file ({_first_line(err)})") from None


def _unpickler_reason(err: BaseException) -> str:
    """The ``Unsupported global: GLOBAL x.y`` part of the weights-only unpickler's long message."""
    found = re.search(r"Unsupported (?:global|operand)[^.\n]*", str(err))
    return found.group(0).strip() if found else "not a weights-only file"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _fit(path: Path, load: Any) -> None:
    """Run ``load()`` (restoring state from ``path``); a key or shape mismatch is one error naming the file."""
    try:
        load()
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
        if isinstance(err, CheckpointError):
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "mismatch" in line or "Missing" in line or "Unexpected" in line),
                      lines[0] if lines else type(err).__name__)
        raise CheckpointError(f"--load {path.parent}: {path.name} does not fit this run's "
                              f"{'configuration' if path.suffix == '.pt' else 'model'} ({detail[:300]})") from None


def _load_loss_parameters(folder: Path, trainable: Trainable) -> None:
    """Restore the loss's trainable parameters; one clear error when the checkpoint and the config disagree on
    whether the loss has any (``vae_loss_config.learn_logvar``)."""
    loss_file = folder / f"loss{trainable.suffix()}.safetensors"
    if bool(trainable.loss_parameters()) != loss_file.is_file():
        saved = "with" if loss_file.is_file() else "without"
        raise ValueError(f"--load {folder}: the checkpoint was saved {saved} a learnable loss logvar "
                         f"({loss_file.name}); set vae_loss_config.learn_logvar={loss_file.is_file()} to resume it")
    if loss_file.is_file():
        trainable.loss.load_state_dict(load_state_dict_file(loss_file))


def _weights_as_ema(trainables: list[Trainable]) -> dict[str, torch.Tensor]:
    """A checkpoint without EMA starts the EMA from the loaded weights."""
    model = next(t.model for t in trainables if t.name == "model")
    return get_model_state_dict(model, options=FULL_CPU)
