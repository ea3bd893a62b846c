"""CPU bf16 training: the fp32 fallback for 3-D convolution weight gradients on inputs shallower than the kernel
(a oneDNN bug returns garbage there; ``opensora_ae/train/cpu_bf16.py``), and the shipped Video DC-AE
discriminator phase in bf16 on 8-frame 64x64 clips (where that bug made every discriminator gradient NaN)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from opensora_ae.config import load_config
from opensora_ae.train.cpu_bf16 import backward_precision, is_affected_conv3d_backward
from opensora_ae.train.loop import OPTIONAL_KEYS, train
from train_helpers import REPO, write_fixed_clips

CPU = torch.device("cpu")


def _bf16_weight_grad(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, guarded: bool) -> torch.Tensor:
    # Fill freed memory with NaN first: the buggy kernel reads memory it never wrote.
    torch.full((1 << 18,), float("nan"))
    w = weight.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        out = F.conv3d(x, w, None, 1, tuple(k // 2 for k in weight.shape[2:]))
    with backward_precision(CPU, torch.bfloat16) if guarded else torch.enable_grad():
        out.backward(grad)
    return w.grad


def _fp32_weight_grad_of_bf16_values(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    w = weight.bfloat16().float().requires_grad_()
    out = F.conv3d(x.bfloat16().float(), w, None, 1, tuple(k // 2 for k in weight.shape[2:]))
    out.backward(grad.float())
    return w.grad


@pytest.mark.parametrize("depth, kernel_depth", [(2, 3), (3, 5), (4, 5)])
def test_shallow_conv3d_weight_gradient_matches_fp32_under_the_guard(depth, kernel_depth):
    torch.manual_seed(0)
    x = torch.randn(1, 32, depth, 8, 8)
    weight = torch.randn(32, 32, kernel_depth, 3, 3) * 0.05
    grad = torch.randn(1, 32, depth, 8, 8).bfloat16()
    reference = _fp32_weight_grad_of_bf16_values(x, weight, grad)
    for _ in range(10):  # the bug is intermittent
        got = _bf16_weight_grad(x, weight, grad, guarded=True)
        assert got.dtype == torch.float32
        assert ((got - reference).abs().max() / reference.abs().max()).item() < 1e-2


def test_the_guard_leaves_other_convolutions_to_their_kernels():
    torch.manual_seed(0)
    x, weight = torch.randn(1, 16, 4, 8, 8), torch.randn(16, 16, 3, 3, 3) * 0.05
    grad = torch.randn(1, 16, 4, 8, 8).bfloat16()
    assert torch.equal(_bf16_weight_grad(x, weight, grad, guarded=True),
                       _bf16_weight_grad(x, weight, grad, guarded=False))
    bf16 = torch.bfloat16
    assert is_affected_conv3d_backward(x[:, :, :2].to(bf16), weight.to(bf16))
    assert not is_affected_conv3d_backward(x.to(bf16), weight.to(bf16))  # depth 4 >= 3 taps
    assert not is_affected_conv3d_backward(x[:, :, :2], weight)  # fp32
    assert not is_affected_conv3d_backward(x[:, :, 0].to(bf16), weight[:, :, 0].to(bf16))  # 2-D
    for device, dtype in ((CPU, torch.float32), (CPU, torch.float16), (torch.device("cuda"), torch.bfloat16)):
        assert isinstance(backward_precision(device, dtype), contextlib.nullcontext)


def test_shipped_video_dc_ae_disc_phase_trains_in_bf16_on_8_frame_64px_clips(tmp_path: Path):
    """The issue's case: configs/vae/train/video_dc_ae_disc.py (full-size 3-D PatchGAN) on 1x3x8x64x64 clips in
    bf16 on CPU, with a small DC-AE. Every autoencoder and discriminator step is finite (before the fix the
    deepest DC-AE stages and the PatchGAN's depth-2 blocks got NaN or 1e30-sized weight gradients)."""
    clips = write_fixed_clips(tmp_path / "clips", count=2, frames=8, size=64, distinct=True)
    model = dict(_delete_=True, type="dc_ae", latent_channels=16, width_list=(8, 16, 32, 64),
                 encoder_depth_list=(1, 1, 1, 1), decoder_depth_list=(1, 1, 1, 1),
                 encoder_block_types=("ResBlock",) * 4, decoder_block_types=("ResBlock",) * 4,
                 temporal_downsample=(False, True, True, False), disc_off_grad_ckpt=True)
    config = tmp_path / "disc_bf16.py"
    config.write_text(
        f"_base_ = [{str(REPO / 'configs/vae/train/video_dc_ae_disc.py')!r}]\n"
        f"model = {model!r}\n"
        'bucket_config = {"64px_ar1:1": {8: (1.0, 1)}}\n'
        f"dataset = dict(data_path={str(clips)!r})\n"
        "mixed_strategy = None\nnum_workers = 0\nplugin = 'ddp'\ndevice = 'cpu'\ndtype = 'bf16'\n"
        "vae_loss_config = dict(perceptual_loss_weight=0)\nlog_every = 1\nckpt_every = 0\nmax_steps = 4\n"
        "ema_decay = None\n")
    run_dir = train(load_config(config, ["--save-dir", str(tmp_path / "run")], OPTIONAL_KEYS))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r.get("event") == "skipped_step"]
    steps = [r for r in records if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for record in steps:
        assert 0 < record["grad_norm"] < 1e6 and 0 < record["disc_grad_norm"] < 1e4, record
        assert record.get("disc_skipped", 0.0) == 0.0
