"""The training loop shared by every autoencoder family; the differences live in configs.

Read :func:`train` top to bottom: set up processes and the run directory, build the model (+ EMA) and the
optional discriminator, the losses, optimizers and the data, restore a checkpoint, then for every batch do one
**optimizer iteration** = one autoencoder update plus, once ``disc_start`` is reached, one discriminator
update. ``global_step`` counts those iterations; ``gen_start``/``disc_start`` are compared with it.

Config-driven variations (see docs/training.md for every key):

* ``forward_kwargs`` / ``loss_inputs``: ``model(x, **forward_kwargs)`` may return a dict of intermediates
  (``x_rec``, ``posterior``, ...); ``loss_inputs = dict(spatial_latent="x_z", spatial_latent_rec="x_z_rec",
  temporal_latent="z_raw")`` maps ``VAELoss`` arguments to its keys. This is how the Open-Sora 1.2 stage 1/2
  latent losses and the identity loss (on single-frame steps) run through this loop; a frozen spatial VAE is
  simply a model whose parameters do not require grad (only trainable parameters reach the optimizer).
* ``mixed_strategy="mixed_video_image"`` is done by the sampler (a share of single-frame batches, drawn per
  rank); ``"mixed_video_random"`` (Open-Sora 1.2 stage 3) cuts each batch to a random length, any length or
  ``random_length_rule="4k+1"``, drawn from ``seed + global_step`` so every rank cuts to the same length (under
  FSDP2 all ranks must call the same blocks equally often).
* ``vae_loss_config.learn_logvar=True``: the loss's ``logvar`` joins the autoencoder optimizer (no weight decay);
  its gradient is averaged over ranks by hand (no wrapper owns it) and it is checkpointed as ``loss.safetensors``.
* ``skip_missing_perceptual=True`` (the demo): without the LPIPS backbone file, say so once and train with
  ``perceptual_loss_weight=0`` instead of failing.
"""

from __future__ import annotations

import inspect
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from ..config import format_config, save_config
from ..data import build_dataloader
from ..data.transforms import uint8_to_model_range
from ..losses import DiscriminatorLoss, GeneratorLoss, VAELoss, lpips_backbone_available
from ..models import build_model, resolve_model_class
from ..models.base import channels_last
from ..registry import DATASETS, DISCRIMINATORS, build, component_class, init_parameters
from . import parallel
from .checkpoint import (RunningStates, Trainable, check_checkpoint, load_checkpoint, restore_interrupted_save,
                         restore_interrupted_saves, save_checkpoint)
from .cpu_bf16 import backward_precision
from .ema import EMA
from .logging import TrainLogger
from .optim import build_lr_scheduler, build_optimizer
from .run_folder import RunFolder, RunFolderError, check_run_folder_free

MAX_CONSECUTIVE_NONFINITE = 10
# Keys the loop reads with a default: a command line may set them even when the config file does not.
OPTIONAL_KEYS = (
    "load", "save_dir", "outputs", "device", "plugin", "dtype", "grad_checkpoint", "seed", "epochs", "max_steps",
    "batch_size", "bucket_config", "num_workers", "prefetch_factor", "log_every", "ckpt_every", "keep_n_latest",
    "ema_decay", "grad_clip", "wandb", "wandb_project", "mixed_strategy", "mixed_image_ratio", "random_length_rule",
    "forward_kwargs", "loss_inputs", "skip_missing_perceptual", "lr_scheduler", "vae_loss_config",
    "find_unused_parameters", "overwrite", "channels_last",
)
RANDOM_LENGTH_RULES = ("any", "4k+1")


class NonFiniteLossError(RuntimeError):
    """Raised after ``MAX_CONSECUTIVE_NONFINITE`` skipped steps in a row (once the last good state is saved)."""


@dataclass
class Models:
    """The trained networks: ``*_ddp`` is what to call (DDP wrapper or the FSDP2/plain module itself)."""

    model: nn.Module
    model_ddp: nn.Module
    ema: EMA | None
    discriminator: nn.Module | None = None
    discriminator_ddp: nn.Module | None = None


@dataclass
class Losses:
    vae: VAELoss
    generator: GeneratorLoss | None = None
    discriminator: DiscriminatorLoss | None = None


@dataclass
class StopSignal:
    """Set by SIGTERM/SIGINT; the loop saves a checkpoint at the end of the current step and exits."""

    signum: int = 0
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def train(cfg: Config) -> Path:
    """Run the training ``cfg`` describes; returns the run directory. Works under torchrun or single-process."""
    ctx = parallel.init_distributed(cfg.get("device", "auto"))
    try:
        run_dir = _train(cfg, ctx)
    except BaseException:
        parallel.destroy_distributed()  # no barrier: the other ranks may be stuck in a collective
        raise
    parallel.finish_distributed()
    return run_dir


def _train(cfg: Config, ctx: parallel.DistContext) -> Path:
    dtype = parallel.resolve_dtype(cfg.get("dtype", "fp32"))
    run_dir, folder = claim_run_dir(cfg, ctx)
    try:
        return _run(cfg, ctx, dtype, run_dir, folder)
    finally:
        if folder is not None:
            folder.release(failed_before_start=not folder.started)


def _run(cfg: Config, ctx: parallel.DistContext, dtype: torch.dtype, run_dir: Path, folder: RunFolder | None
         ) -> Path:
    """Everything after the run folder is claimed; nothing is written into it before the ``--load`` succeeded."""
    if cfg.get("load"):
        check_checkpoint(cfg.load)
    # Same seed everywhere for identical initial weights; per-rank streams afterwards.
    seed_everything(int(cfg.get("seed", 42)))
    models = build_models(cfg, ctx)
    losses = build_losses(cfg, ctx)
    seed_everything(int(cfg.get("seed", 42)) + ctx.rank)
    trainables = build_trainables(cfg, models, losses, ctx, dtype)
    loader, sampler = build_data(cfg, ctx)

    states = RunningStates()
    if cfg.get("load"):
        states = load_checkpoint(cfg.load, ctx, trainables, models.ema, sampler)
    start_run(cfg, run_dir, folder, ctx)
    resume_mid_epoch = states.batches_in_epoch > 0

    epochs = int(cfg.get("epochs", 1))
    max_steps = cfg.get("max_steps")
    logger = TrainLogger(run_dir, ctx.is_main, total_steps=int(max_steps or epochs * max(len(loader), 1)),
                         initial_step=states.global_step, initial_samples=states.samples_seen,
                         use_wandb=bool(cfg.get("wandb", False)), wandb_project=cfg.get("wandb_project", "opensora_ae"),
                         run_name=run_dir.name, config=cfg.to_dict())
    logger.message(f"run dir {run_dir}; resolved config:\n{format_config(cfg)}")
    saver = _Saver(run_dir, ctx, trainables, models.ema, sampler, int(cfg.get("keep_n_latest", 0)), logger, folder)
    if resumes_in(cfg, run_dir):
        saver.last_saved_step = states.global_step  # the loaded checkpoint is this state: never re-save over it
    stop = StopSignal()
    stop.install()
    try:
        for epoch in range(states.epoch, epochs):
            if max_steps is not None and states.global_step >= max_steps:
                break
            states.epoch = epoch
            if not resume_mid_epoch:
                sampler.set_epoch(epoch)
                states.batches_in_epoch = 0
            resume_mid_epoch = False
            for batch in loader:
                states.batches_in_epoch += 1
                x = batch_video(batch, cfg, ctx.device, states.global_step)
                metrics, x_rec = train_iteration(x, models, losses, trainables, states, ctx, dtype, cfg)
                if metrics is not None:
                    states.samples_seen += int(parallel.all_reduce_sum(x.shape[0], ctx.device))
                    after_step(cfg, states, metrics, logger, saver, x, x_rec, ctx)
                if metrics is None or metrics.get("disc_skipped"):
                    report_skipped(batch, states, logger, ctx, saver, "discriminator" if metrics else "autoencoder")
                else:
                    states.extra["consecutive_skipped"] = 0
                if parallel.any_rank(bool(stop.signum), ctx.device):
                    signum = stop.signum or signal.SIGTERM  # another rank got the signal first
                    saver.save(states, reason=f"stopped by {signal.Signals(signum).name}")
                    raise SystemExit(128 + signum)
                if max_steps is not None and states.global_step >= max_steps:
                    break
            else:
                logger.write_event("epoch_end", epoch=epoch, skipped_files=getattr(loader, "last_epoch_skipped", 0))
                states.epoch, states.batches_in_epoch = epoch + 1, 0
        if saver.last_saved_step != states.global_step:
            saver.save(states, reason="end of training")
    finally:
        stop.restore()
        logger.plot_loss_curve()
        logger.close()
    return run_dir


# ---------------------------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_path(cfg: Config) -> Path:
    """``save_dir`` if given; else the folder of the ``load`` checkpoint; else ``<outputs>/<NNN>-<config name>``
    with ``NNN`` one past the highest number there."""
    if cfg.get("save_dir"):
        return Path(cfg.save_dir)
    if cfg.get("load"):
        return Path(cfg.load).resolve().parent
    root = Path(cfg.get("outputs", "outputs"))
    numbers = [int(p.name[:3]) for p in root.iterdir() if p.is_dir() and p.name[:3].isdigit()] if root.is_dir() else []
    return root / f"{max(numbers, default=-1) + 1:03d}-{cfg.get('config_name', 'train')}"


def resumes_in(cfg: Config, run_dir: Path) -> bool:
    """Whether this run resumes a checkpoint of ``run_dir`` itself (not a new run started from one)."""
    return bool(cfg.get("load")) and Path(cfg.load).resolve().parent == run_dir.resolve()


def claim_run_dir(cfg: Config, ctx: parallel.DistContext) -> tuple[Path, RunFolder | None]:
    """Pick the run folder, check that this run may write into it, and take its lock (rank 0).

    Returns the folder on every rank and the held :class:`RunFolder` on rank 0 (``None`` elsewhere); a refusal
    is the same one-line error on every rank. A save interrupted between its renames is repaired first.
    """
    folder, error = None, None
    if ctx.is_main:
        try:
            if cfg.get("load"):
                restore_interrupted_save(cfg.load)
            folder = RunFolder(run_dir_path(cfg))
            check_run_folder_free(folder.path, cfg.get("load"), bool(cfg.get("overwrite", False)))
            folder.acquire()
            restore_interrupted_saves(folder.path)
        except (RunFolderError, OSError) as err:
            if folder is not None:
                folder.release(failed_before_start=True)
            error = err
    shared = parallel.broadcast_object((str(folder.path) if folder else None, str(error) if error else None))
    if error is not None:
        raise error
    if shared[1] is not None:
        raise RunFolderError(shared[1])
    return Path(shared[0]), folder


def start_run(cfg: Config, run_dir: Path, folder: RunFolder | None, ctx: parallel.DistContext) -> None:
    """Once every check passed: set the previous run aside (``overwrite``) and write ``config.py``."""
    if ctx.is_main:
        if cfg.get("overwrite", False) and not resumes_in(cfg, run_dir):
            folder.set_aside_previous_run()
        save_config(cfg, run_dir)
        folder.started = True
    parallel.barrier()


def build_models(cfg: Config, ctx: parallel.DistContext) -> Models:
    """The autoencoder (+ EMA) and the optional discriminator, on the device and wrapped for data parallelism."""
    model_cfg = dict(cfg.model)
    compile_blocks = bool(model_cfg.pop("compile", False))
    # Models that know disc_off_grad_ckpt (DC-AE) take it as a constructor argument; for the others the loop
    # takes the module holding the last layer out of checkpointing.
    keep_last_layer = False
    if "disc_off_grad_ckpt" in model_cfg and not _accepts(resolve_model_class(model_cfg), "disc_off_grad_ckpt"):
        keep_last_layer = bool(model_cfg.pop("disc_off_grad_ckpt"))
    model = build_model(model_cfg, user_keys=cfg.get("cli_model_keys", ())).to(ctx.device)
    if cfg.get("grad_checkpoint", False):
        model.set_gradient_checkpointing(True)
        if keep_last_layer:
            exclude_last_layer_from_checkpointing(model)
    model.train()
    if cfg.get("channels_last", False):
        model.to_channels_last()
    if compile_blocks:
        model.compile_blocks()
    plugin = cfg.get("plugin", "ddp")
    model_ddp = parallel.wrap_model(model, ctx, plugin, keep_unsharded=model.get_last_layer(),
                                    find_unused_parameters=bool(cfg.get("find_unused_parameters", False)),
                                    param_dtype=parallel.resolve_dtype(cfg.get("dtype", "fp32")))
    ema = EMA(model, float(cfg.ema_decay)) if cfg.get("ema_decay") is not None else None
    models = Models(model=model, model_ddp=model_ddp, ema=ema)
    if cfg.get("discriminator"):
        disc = build(cfg.discriminator, DISCRIMINATORS).to(ctx.device).train()
        # The discriminator is small: plain DDP whatever the plugin (FSDP hooks would fire during the
        # generator pass, where the discriminator only routes gradients to the autoencoder).
        models.discriminator = disc
        models.discriminator_ddp = parallel.wrap_model(disc, ctx, "ddp")
    return models


def _accepts(cls: type, argument: str) -> bool:
    parameters = inspect.signature(cls.__init__).parameters
    return argument in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def exclude_last_layer_from_checkpointing(model: nn.Module) -> None:
    """``disc_off_grad_ckpt``: turn checkpointing off for the modules holding the decoder's output conv, so the
    adaptive GAN weight differentiates an ordinary graph at that layer."""
    last = model.get_last_layer()
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing") and any(p is last for p in module.parameters()):
            module.gradient_checkpointing = False


def build_losses(cfg: Config, ctx: parallel.DistContext) -> Losses:
    vae_cfg = dict(cfg.get("vae_loss_config", {}))
    if cfg.get("skip_missing_perceptual", False) and float(vae_cfg.get("perceptual_loss_weight", 0.1) or 0) > 0:
        net, weights = vae_cfg.get("perceptual_net", "vgg"), vae_cfg.get("perceptual_weights")
        if not lpips_backbone_available(net, weights):
            if ctx.is_main:
                print(f"LPIPS {net} backbone weights are not cached (no internet): training without the perceptual "
                      f"term (perceptual_loss_weight=0)", flush=True)
            vae_cfg["perceptual_loss_weight"] = 0.0
    losses = Losses(vae=VAELoss(**vae_cfg).to(ctx.device))
    if cfg.get("discriminator"):
        losses.generator = GeneratorLoss(**dict(cfg.get("gen_loss_config", {})))
        losses.discriminator = DiscriminatorLoss(**dict(cfg.get("disc_loss_config", {})))
    return losses


def build_trainables(cfg: Config, models: Models, losses: Losses, ctx: parallel.DistContext, dtype: torch.dtype
                     ) -> list[Trainable]:
    """The autoencoder's optimizer (with the loss's learnable ``logvar``, if any) and the discriminator's."""
    optimizer = build_optimizer(models.model.parameters(), cfg.get("optim", {}), "optim",
                                no_decay_params=losses.vae.parameters())
    trainables = [Trainable("model", models.model, optimizer,
                            build_lr_scheduler(optimizer, cfg.get("lr_scheduler"), "lr_scheduler",
                                               cfg.get("max_steps")),
                            parallel.make_grad_scaler(ctx.device, dtype), loss=losses.vae)]
    if models.discriminator is not None:
        disc_optim_cfg = cfg.get("optim_discriminator", cfg.get("optim", {}))
        disc_optimizer = build_optimizer(models.discriminator.parameters(), disc_optim_cfg, "optim_discriminator")
        trainables.append(Trainable("discriminator", models.discriminator, disc_optimizer,
                                    build_lr_scheduler(disc_optimizer, cfg.get("disc_lr_scheduler"),
                                                       "disc_lr_scheduler", cfg.get("max_steps")),
                                    parallel.make_grad_scaler(ctx.device, dtype)))
    return trainables


def build_data(cfg: Config, ctx: parallel.DistContext) -> tuple[Any, Any]:
    strategy = cfg.get("mixed_strategy")
    if strategy not in (None, "mixed_video_image", "mixed_video_random"):
        raise ValueError(f"config key mixed_strategy={strategy!r}: use None, 'mixed_video_image' or "
                         f"'mixed_video_random'")
    if cfg.get("random_length_rule", "any") not in RANDOM_LENGTH_RULES:
        raise ValueError(f"config key random_length_rule={cfg.random_length_rule!r}: use one of {RANDOM_LENGTH_RULES}")
    dataset_cfg = dict(cfg.dataset)
    if "video_dtype" in (init_parameters(component_class({"type": "video_text", **dataset_cfg}, DATASETS)) or {}):
        # uint8 clips: a quarter of the bytes through the workers' shared memory (65 -> 17 ms of CPU per 32-frame
        # 256 px clip); batch_video maps them to [-1, 1] on the training device.
        dataset_cfg.setdefault("video_dtype", "uint8")
    return build_dataloader(
        dataset_cfg,
        batch_size=int(cfg.get("batch_size", 1)),
        bucket_config=cfg.get("bucket_config"),
        num_workers=int(cfg.get("num_workers", 0)),
        prefetch_factor=cfg.get("prefetch_factor"),
        seed=int(cfg.get("seed", 42)),
        rank=ctx.rank,
        world_size=ctx.world_size,
        mixed_strategy=strategy if strategy == "mixed_video_image" else None,
        mixed_image_ratio=float(cfg.get("mixed_image_ratio", 0.0)),
        pin_memory=ctx.device.type == "cuda",
    )


# ---------------------------------------------------------------------------------------------------------------
# one iteration
# ---------------------------------------------------------------------------------------------------------------


def batch_video(batch: dict[str, Any], cfg: Config, device: torch.device, step: int) -> torch.Tensor:
    """The batch's ``B C T H W`` clip on ``device`` as float in [-1, 1] (uint8 batches are mapped there, on the
    device), cut to a random length for ``mixed_video_random``.

    The length is drawn from ``seed + step`` (``step`` = optimizer iterations done), not from the per-rank random
    streams: every rank cuts to the same length, so all ranks run the same sequence of block calls (FSDP2 gathers
    parameters collectively per call), and a resumed run cuts as the uninterrupted one.
    """
    x = batch["video"].to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = uint8_to_model_range(x)
    if cfg.get("channels_last", False):
        x = channels_last(x)
    if cfg.get("mixed_strategy") == "mixed_video_random":
        rng = random.Random(int(cfg.get("seed", 42)) + step)
        x = x[:, :, : random_clip_length(x.shape[2], cfg.get("random_length_rule", "any"), rng)]
    return x


def random_clip_length(num_frames: int, rule: str, rng: random.Random) -> int:
    """Uniform over ``1..num_frames`` (``any``) or over the ``4k+1`` lengths up to ``num_frames``."""
    if rule == "4k+1":
        return rng.choice(range(1, num_frames + 1, 4))
    return rng.randint(1, num_frames)


def split_model_outputs(outputs: Any, loss_inputs: dict[str, str]) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    """``model(x)``'s outputs -> ``(x_rec, posterior, extra VAELoss inputs)``.

    A tuple is the interface's ``(x_rec, posterior, z)``. A dict (a model asked for its intermediates through
    ``forward_kwargs``) gives ``x_rec``, ``posterior`` and, per ``loss_inputs`` entry ``VAELoss argument ->
    output key``, the extra loss inputs.
    """
    if isinstance(outputs, dict):
        missing = [key for key in ("x_rec", *loss_inputs.values()) if outputs.get(key) is None]
        if missing:
            raise KeyError(f"model outputs {sorted(outputs)} lack {missing} (config keys forward_kwargs/loss_inputs)")
        return outputs["x_rec"], outputs.get("posterior"), {arg: outputs[key] for arg, key in loss_inputs.items()}
    if loss_inputs:
        raise ValueError("config key loss_inputs needs a model forward that returns a dict of intermediates; set "
                         "forward_kwargs so that it does")
    return outputs[0], outputs[1], {}


def train_iteration(x: torch.Tensor, models: Models, losses: Losses, trainables: list[Trainable],
                    states: RunningStates, ctx: parallel.DistContext, dtype: torch.dtype, cfg: Config
                    ) -> tuple[dict[str, float] | None, torch.Tensor]:
    """One optimizer iteration; returns its metrics and the detached reconstruction.

    Metrics are None when the iteration is skipped (non-finite loss, or non-finite gradient in fp32/bf16): no
    update and ``global_step`` unchanged. A non-finite discriminator gradient skips only the discriminator update
    (the autoencoder step counts) and sets ``disc_skipped`` = 1 in the metrics. An fp16 gradient overflow is the
    grad scaler's normal probing: the update is skipped, the scale backs off, and the iteration counts
    (``fp16_overflow`` = 1 in the metrics).
    """
    step = states.global_step
    ae, disc = trainables[0], (trainables[1] if len(trainables) > 1 else None)
    with parallel.autocast(ctx.device, dtype):
        outputs = models.model_ddp(x, **dict(cfg.get("forward_kwargs", {})))
        x_rec, posterior, extras = split_model_outputs(outputs, dict(cfg.get("loss_inputs", {})))
        terms = losses.vae(x, x_rec, posterior, **extras)
        loss = terms["total"]
        metrics = {f"loss_{k}": v for k, v in terms.items() if k != "total"}
        if losses.generator is not None and losses.generator.active(step):
            gen = generator_terms(x_rec, terms["nll"], models, losses.generator, step)
            loss = loss + gen["total"]
            metrics.update(loss_gen=gen["gen"], gen_weight=gen["weight"])
    x_rec = x_rec.detach()
    if parallel.any_rank(not torch.isfinite(loss).item(), ctx.device):
        ae.optimizer.zero_grad(set_to_none=True)
        return None, x_rec
    grad_norm = backward_and_step(loss, ae, float(cfg.get("grad_clip", 0) or 0), ctx.device, dtype)
    overflow = not torch.isfinite(grad_norm)
    if overflow and not ae.scaler.is_enabled():
        return None, x_rec
    if models.ema is not None and not overflow:
        models.ema.update(models.model)
    metrics.update(loss=loss.detach(), lr=ae.optimizer.param_groups[0]["lr"])
    if ae.loss_parameters():
        metrics["logvar"] = losses.vae.logvar.detach()
    if overflow:
        metrics["fp16_overflow"] = 1.0
    else:
        metrics["grad_norm"] = grad_norm
    if disc is not None and losses.discriminator.active(step):
        metrics.update(discriminator_iteration(x, x_rec, models, losses.discriminator, disc, step, ctx, dtype,
                                               float(cfg.get("grad_clip", 0) or 0)))
    states.global_step += 1
    metrics["frames"] = float(x.shape[2])
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in metrics.items()}, x_rec


def generator_terms(x_rec: torch.Tensor, nll: torch.Tensor, models: Models, generator: GeneratorLoss, step: int
                    ) -> dict[str, torch.Tensor]:
    """Adversarial term for the autoencoder update. The discriminator's weights are frozen for this pass (its
    graph only routes gradients to ``x_rec``) and the unwrapped module is called, so DDP does not expect them."""
    disc = models.discriminator
    for p in disc.parameters():
        p.requires_grad_(False)
    try:
        fake_logits = disc(x_rec)
    finally:
        for p in disc.parameters():
            p.requires_grad_(True)
    return generator(fake_logits, nll, models.model.get_last_layer(), step)


def backward_and_step(loss: torch.Tensor, trainable: Trainable, grad_clip: float, device: torch.device,
                      dtype: torch.dtype) -> torch.Tensor:
    """Backward, unscale (fp16), clip, step and schedule; returns the gradient norm before clipping.

    A CPU bf16 backward runs under :func:`~opensora_ae.train.cpu_bf16.backward_precision` (a oneDNN bug returns
    garbage weight gradients for 3-D convolutions on inputs shallower than their kernel, e.g. 8-frame clips).

    A non-finite norm means no update (and, with fp16, a smaller loss scale). The norm is global (identical on
    every rank under DDP and FSDP2), so every rank takes the same decision - GradScaler's own per-rank check
    could disagree between FSDP2 shards.
    """
    optimizer, scaler = trainable.optimizer, trainable.scaler
    optimizer.zero_grad(set_to_none=True)
    with backward_precision(device, dtype):
        scaler.scale(loss).backward()
    parallel.average_gradients(trainable.loss_parameters())
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = parallel.to_local_scalar(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
        return grad_norm.detach()
    scaler.step(optimizer)
    scaler.update()
    trainable.scheduler.step()
    return grad_norm.detach()


def discriminator_iteration(x: torch.Tensor, x_rec: torch.Tensor, models: Models, loss_fn: DiscriminatorLoss,
                            trainable: Trainable, step: int, ctx: parallel.DistContext, dtype: torch.dtype,
                            grad_clip: float) -> dict[str, torch.Tensor]:
    """One discriminator update on real ``x`` and detached reconstructions."""
    with parallel.autocast(ctx.device, dtype):
        real_logits = models.discriminator_ddp(x.contiguous())
        fake_logits = models.discriminator_ddp(x_rec.contiguous())
        terms = loss_fn(real_logits, fake_logits, step)
    disc_norm = backward_and_step(terms["total"], trainable, grad_clip, ctx.device, dtype)
    metrics = {"loss_disc": terms["disc"], "logits_real": terms["logits_real"], "logits_fake": terms["logits_fake"],
               "disc_grad_norm": disc_norm}
    if not torch.isfinite(disc_norm) and not trainable.scaler.is_enabled():  # fp16 overflow is the scaler probing
        metrics["disc_skipped"] = 1.0
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# bookkeeping
# ---------------------------------------------------------------------------------------------------------------


class _Saver:
    """Checkpoint writer that remembers the last step it saved and updates the loss curve each time."""

    def __init__(self, run_dir: Path, ctx: parallel.DistContext, trainables: list[Trainable], ema: EMA | None,
                 sampler: Any, keep_n_latest: int, logger: TrainLogger, folder: RunFolder | None = None) -> None:
        self.run_dir, self.ctx, self.trainables, self.ema = run_dir, ctx, trainables, ema
        self.sampler, self.keep_n_latest, self.logger = sampler, keep_n_latest, logger
        self.folder = folder  # rank 0's run folder: drops a run set aside by overwrite once this one has a checkpoint
        self.last_saved_step = -1

    def save(self, states: RunningStates, reason: str = "") -> Path:
        # The DataLoader prefetches, so the sampler's own count runs ahead of what the loop consumed.
        sampler_state = self.sampler.state_dict(num_batches_done=states.batches_in_epoch)
        path = save_checkpoint(self.run_dir, self.ctx, self.trainables, self.ema, sampler_state, states,
                               self.keep_n_latest)
        self.last_saved_step = states.global_step
        if self.folder is not None:
            self.folder.drop_replaced()
        self.logger.write_event("checkpoint", step=states.global_step, path=str(path), reason=reason)
        self.logger.message(f"saved checkpoint {path}" + (f" ({reason})" if reason else ""))
        self.logger.plot_loss_curve()
        return path


def after_step(cfg: Config, states: RunningStates, metrics: dict[str, float], logger: TrainLogger, saver: _Saver,
               x: torch.Tensor, x_rec: torch.Tensor, ctx: parallel.DistContext) -> None:
    """Log every ``log_every`` steps and checkpoint every ``ckpt_every`` steps."""
    log_every, ckpt_every = int(cfg.get("log_every", 1)), int(cfg.get("ckpt_every", 0))
    step = states.global_step
    log_now = step % max(log_every, 1) == 0
    logger.accumulate(metrics)
    if log_now:
        metrics = mean_over_ranks(logger.window_metrics(), ctx)
    logger.step(step, states.samples_seen, metrics, log_now, states.epoch)
    if ckpt_every > 0 and step % ckpt_every == 0:
        saver.save(states)
        logger.log_video(step, x[0], x_rec[0])


def mean_over_ranks(metrics: dict[str, float], ctx: parallel.DistContext) -> dict[str, float]:
    if not ctx.distributed:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(values)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, values.tolist())}


def report_skipped(batch: dict[str, Any], states: RunningStates, logger: TrainLogger, ctx: parallel.DistContext,
                   saver: _Saver, part: str = "autoencoder") -> None:
    """Count a skipped (non-finite) update of ``part`` ("autoencoder": the whole step; "discriminator": its update
    only), log the batch's files; after too many in a row, save the last good state (skipped updates changed no
    weights) and stop."""
    states.skipped_steps += 1
    consecutive = states.extra.get("consecutive_skipped", 0) + 1
    states.extra["consecutive_skipped"] = consecutive
    paths = [p for rank_paths in parallel.all_gather_objects(list(batch.get("path", []))) for p in rank_paths]
    step = states.global_step - (part == "discriminator")  # the 0-based iteration (a discriminator skip counted it)
    logger.write_event("skipped_step", step=step, part=part, skipped_steps=states.skipped_steps,
                       consecutive=consecutive, paths=paths)
    what = "step skipped" if part == "autoencoder" else "discriminator update skipped"
    logger.message(f"non-finite {part} loss or gradient at step {step}: {what} "
                   f"({states.skipped_steps} so far); batch files: {', '.join(paths)}")
    if consecutive >= MAX_CONSECUTIVE_NONFINITE:
        states.extra["consecutive_skipped"] = 0  # a resumed run gets a fresh allowance
        if saver.last_saved_step != states.global_step:
            saver.save(states, reason=f"{consecutive} non-finite steps in a row")
        raise NonFiniteLossError(f"{consecutive} non-finite losses in a row (last batch: {', '.join(paths)}); "
                                 f"the last good state is saved in {saver.run_dir} (step {states.global_step}); "
                                 f"stopping the run - lower the learning rate or check these files, then --load it")

