"""Process groups, data-parallel wrapping and mixed precision for training.

* Launch: ``torchrun`` sets ``RANK/WORLD_SIZE/LOCAL_RANK``; then the process group uses NCCL on GPU and
  gloo on CPU. A plain ``python`` launch runs single-process without a process group.
* ``plugin="ddp"``: :class:`~torch.nn.parallel.DistributedDataParallel`.
* ``plugin="zero2"`` / ``"zero3"``: PyTorch FSDP2 ``fully_shard`` (parameters, gradients and optimizer state
  sharded), with ``reshard_after_forward`` off (ZeRO-2: parameters stay gathered between forward and backward)
  or on (ZeRO-3). This is what Open-Sora gets from ColossalAI's ``LowLevelZeroPlugin`` / ``GeminiPlugin``;
  ColossalAI itself is not used (its ZeRO plugins need CUDA and it pins torch <= 2.5.1).
* ``dtype``: master weights stay fp32; forward/backward run under ``torch.autocast`` in bf16 or fp16
  (fp16 adds a gradient scaler, see :func:`make_grad_scaler`). Under FSDP2 a bf16/fp16 run also gathers the
  parameters in that dtype and reduces gradients in fp32 (``MixedPrecisionPolicy(param_dtype, reduce_dtype=fp32)``,
  as torchtitan does): half the all-gather traffic, no loss of gradient precision in the reduction, and the sharded
  master weights and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

PLUGINS = ("ddp", "zero2", "zero3")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_minutes: int = 30) -> DistContext:
    """Join the ``torchrun`` process group if launched by it; pick the device (``auto`` = GPU when present)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"config key device={device!r}: use 'auto', 'cpu' or 'cuda'")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config key device='cuda' but no CUDA GPU is visible; use --device auto or cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=timedelta(minutes=timeout_minutes),
            device_id=torch_device if use_cuda else None,
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def destroy_distributed() -> None:
    """Leave the process group (no-op single-process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def finish_distributed() -> None:
    """Leave the process group after a run that ended the same way on every rank.

    Garbage still holding the group (wrapped modules in reference cycles) is freed while the group is alive, and no
    rank shuts gloo down while another still uses it: one rank's early shutdown could abort its peer at exit
    ("terminate called without an active exception"), turning a finished run into a failed launch.
    """
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(value: float | torch.Tensor, device: torch.device) -> float:
    """Sum a scalar over ranks (identity single-process)."""
    tensor = torch.as_tensor(value, dtype=torch.float64, device=device).detach().clone()
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return float(tensor)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (keeps step-skip decisions in lockstep)."""
    return all_reduce_sum(float(flag), device) > 0


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list single-process)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _contains(module: nn.Module, tensor: torch.Tensor | None) -> bool:
    return tensor is not None and any(param is tensor for param in module.parameters())


def _is_container(module: nn.Module) -> bool:
    """True for modules without a forward of their own (``nn.ModuleList``/``ModuleDict``, a plain ``nn.Module``
    holding blocks as in the LDM ``down[i].block[j]`` layout): FSDP2 hooks run around ``forward``, so such a
    module cannot be a unit (``fully_shard`` refuses lists; a plain holder's hooks would never fire)."""
    return type(module).forward is nn.Module.forward


def _shard_units(model: nn.Module, keep_out: torch.Tensor | None) -> list[nn.Module]:
    """The modules to shard one by one: every element of an ``nn.ModuleList`` (the blocks of the encoder and
    decoder), outermost first, except the one holding ``keep_out``; an element that is itself a container (a
    nested list, a plain holder module) is replaced by its children, recursively.

    ``keep_out`` is the decoder's last layer: it stays in the root group, whose parameters FSDP2 never reshards
    after forward, so the adaptive GAN weight can differentiate with respect to the gathered weight.
    """
    units: list[nn.Module] = []
    claimed: set[int] = set()

    def consider(block: nn.Module) -> None:
        if id(block) in claimed or not any(True for _ in block.parameters()):
            return
        if _is_container(block):
            for child in block.children():
                consider(child)
        elif not _contains(block, keep_out):
            units.append(block)
            claimed.update(id(sub) for sub in block.modules())

    for module in model.modules():
        if isinstance(module, nn.ModuleList) and id(module) not in claimed:
            for block in module:
                consider(block)
    return units


def wrap_model(
    model: nn.Module,
    ctx: DistContext,
    plugin: str = "ddp",
    keep_unsharded: torch.Tensor | None = None,
    find_unused_parameters: bool = False,
    param_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Wrap ``model`` (already on ``ctx.device``) for data parallelism; returns the module to call.

    Without a process group (single process) the model is returned as is. With ``zero2``/``zero3`` the model is
    sharded in place and the returned module is the model itself; with ``ddp`` it is the DDP wrapper (``.module``
    is the model). ``find_unused_parameters`` (DDP only) lets trainable parameters that get no gradient in an
    iteration (e.g. a 2-D decoder that only latent losses reach) pass DDP's reduction, at the cost of a graph walk.
    ``param_dtype`` (the run's compute dtype) selects the FSDP2 mixed-precision policy (:func:`fsdp_mp_policy`).
    """
    if plugin not in PLUGINS:
        raise ValueError(f"config key plugin={plugin!r} is not supported; use one of {PLUGINS}")
    if not dist.is_initialized() or not any(p.requires_grad for p in model.parameters()):
        return model
    if plugin == "ddp":
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                   find_unused_parameters=find_unused_parameters)
    from torch.distributed.fsdp import fully_shard

    broadcast_buffers_and_params(model)
    reshard = plugin == "zero3"
    mp_policy = fsdp_mp_policy(param_dtype)
    for unit in _shard_units(model, keep_unsharded):
        fully_shard(unit, reshard_after_forward=reshard, mp_policy=mp_policy)
    # The root unit (parameters outside the blocks, the decoder's last layer among them) stays gathered after
    # forward in both modes: backward needs it at once, and the adaptive GAN weight differentiates through it.
    fully_shard(model, reshard_after_forward=False, mp_policy=mp_policy)
    return model


def fsdp_mp_policy(param_dtype: torch.dtype) -> Any:
    """FSDP2's mixed-precision policy for a run computing in ``param_dtype``.

    fp32: the default policy (no casts; bit-identical to no policy). bf16/fp16: parameters are all-gathered in
    that dtype for forward and backward, gradients are reduced and kept in fp32 (``reduce_dtype``), and the root
    casts its floating-point inputs to ``param_dtype`` (outputs stay in it; the loss runs under autocast).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if param_dtype == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)


def broadcast_buffers_and_params(model: nn.Module) -> None:
    """Make every rank start from rank 0's weights (DDP does this itself; needed before ``fully_shard``)."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average the gradients of parameters that no DDP/FSDP wrapper reduces (a learnable loss ``logvar``) over
    ranks, so their replicas take the same optimizer step. Parameters without a gradient are skipped (the same
    ones on every rank: the graph does not depend on the rank)."""
    if not dist.is_initialized():
        return
    world_size = dist.get_world_size()
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(world_size)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"config key dtype={name!r} is not supported; use one of {tuple(DTYPES)}")
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed-precision forward context (nothing for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 and fp32 do not underflow the way fp16 does)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def to_local_scalar(value: torch.Tensor) -> torch.Tensor:
    """A DTensor result (e.g. FSDP2 grad norm) as a plain tensor."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
