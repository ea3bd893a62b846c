"""A guard around CPU bf16 backward passes against a oneDNN bug in 3-D convolution weight gradients.

On CPUs with AVX-512 (seen on AMD EPYC with ``avx512_bf16``, torch 2.14 / its bundled oneDNN), the bf16 weight
gradient of a ``Conv3d`` whose input is shallower than its temporal kernel (depth 2 under a 3-tap kernel, depth
2-4 under a 5-tap one, padding on both sides) comes back as garbage: NaN, inf or finite values 1e30 times too
large, varying from call to call (it reads memory it never wrote). Forward outputs and input gradients are right,
depth 1 and depth >= kernel are right, 2-D convolutions and fp16 are right. Video models meet these shapes on short
clips: 8 frames are 2 latent frames after a 4x temporal compression, and 2 frames in the last blocks of Open-Sora
2.0's 3-D PatchGAN - the bf16 NaN discriminator gradients on 1x3x8x64x64 clips.

:func:`backward_precision` recomputes exactly those gradients in fp32 (cheap: the affected layers are the
smallest ones) and leaves everything else to the normal kernels. Only CPU bf16 training uses it; CUDA and fp32 runs
are untouched, and model code stays free of device tricks.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_CONV_BACKWARD = torch.ops.aten.convolution_backward.default


def is_affected_conv3d_backward(conv_input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's bf16 weight gradient for this convolution is unreliable: a CPU bf16 3-D convolution
    (weight ``C_out C_in kT kH kW``) whose input ``B C_in T H W`` has ``T`` below ``kT``."""
    return (weight.ndim == 5 and conv_input.device.type == "cpu" and torch.bfloat16 in (conv_input.dtype, weight.dtype)
            and conv_input.shape[2] < weight.shape[2])


class Fp32ShallowConv3dBackward(TorchDispatchMode):
    """Runs the backward of the affected 3-D convolutions (:func:`is_affected_conv3d_backward`) in fp32 and casts
    the gradients back to their tensors' dtypes; every other op runs as dispatched."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, ...)
        if func is not _CONV_BACKWARD or not is_affected_conv3d_backward(args[1], args[2]):
            return func(*args, **kwargs)
        grad_output, conv_input, weight = args[:3]
        grads = func(grad_output.float(), conv_input.float(), weight.float(), *args[3:], **kwargs)
        dtypes = (conv_input.dtype, weight.dtype, weight.dtype)
        return tuple(None if g is None else g.to(dtype) for g, dtype in zip(grads, dtypes))


def backward_precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Context for ``loss.backward()`` of a run computing in ``dtype`` on ``device``: the fp32 fallback of
    :class:`Fp32ShallowConv3dBackward` for CPU bf16 runs, nothing otherwise."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        return Fp32ShallowConv3dBackward()
    return contextlib.nullcontext()
