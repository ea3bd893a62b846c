"""Throughput and peak memory of one training iteration (the loop's own ``train_iteration``).

Cases: the tiny demo DC-AE (``configs/vae/train/demo_dc_ae.py``) and the released-size DC-AE
(``configs/vae/train/video_dc_ae.py``, 459M parameters), each for an autoencoder step with L1 + LPIPS (VGG)
and for a full iteration with the 3-D discriminator of ``video_dc_ae_disc.py`` (generator term with adaptive
weight + discriminator update, gradient checkpointing on as in that config). Input: batch 1 x 32 frames x
256 x 256 (Open-Sora 2.0's training bucket).

    python benchmarks/bench_train_step.py [--quick] [--steps N] [--cases tiny_ae,real_ae,...]

``--quick`` (or ``BENCH_QUICK=1``) uses 8 frames x 32 x 32 for the CPU-only machines where a 459M-parameter
step at 32 x 256 x 256 takes tens of minutes. Every case runs in its own subprocess so peak memory is per case:
CUDA ``max_memory_allocated`` on GPU, peak RSS of the process on CPU (weights + optimizer + activations). On
GPU the model FLOPs utilisation (MFU) is also printed: FLOPs counted by ``torch.utils.flop_counter`` for one
iteration / time / the GPU's dense bf16 peak. LPIPS uses the cached VGG16 backbone when there is one, else a
randomly initialised one of the same shape (same cost). The last line is ``samples_per_s: X`` for the real
config's autoencoder step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"tiny": REPO / "configs/vae/train/demo_dc_ae.py", "real": REPO / "configs/vae/train/video_dc_ae.py"}
DISC_CONFIG = REPO / "configs/vae/train/video_dc_ae_disc.py"
CASES = ("tiny_ae", "tiny_disc", "real_ae", "real_disc")
# Dense bf16 tensor-core peaks (FLOP/s) for MFU.
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


def _lpips_weights(tmp: Path) -> str:
    """The cached VGG16 backbone, or a random one with the same shapes written to ``tmp``."""
    from opensora_ae.losses import default_backbone_path

    cached = default_backbone_path("vgg")
    if cached.is_file():
        return str(cached)
    import torch
    import torchvision

    path = tmp / "vgg16_random_features.pth"
    features = torchvision.models.vgg16().features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return str(path)


def _case_config(case: str, tmp: Path):
    from mmengine.config import Config

    size, with_disc = case.split("_")
    cfg = Config.fromfile(str(CONFIGS[size]))
    if with_disc == "disc":
        disc = Config.fromfile(str(DISC_CONFIG))
        for key in ("discriminator", "gen_loss_config", "disc_loss_config", "optim_discriminator",
                    "disc_lr_scheduler", "grad_checkpoint"):
            cfg[key] = disc[key]
        cfg.model["disc_off_grad_ckpt"] = True
    cfg.vae_loss_config = dict(cfg.get("vae_loss_config", {}), perceptual_loss_weight=0.5,
                               perceptual_weights=_lpips_weights(tmp))
    cfg.model["from_pretrained"] = None
    cfg.ema_decay = cfg.get("ema_decay", 0.99)
    return cfg


def _gpu_peak_flops(name: str) -> float | None:
    return next((peak for key, peak in GPU_PEAK_FLOPS.items() if key in name), None)


def run_case(case: str, frames: int, size: int, steps: int) -> dict:
    """Build the case with the training loop's builders and time ``steps`` iterations after one warm-up."""
    import torch

    from opensora_ae.train import parallel
    from opensora_ae.train.checkpoint import RunningStates
    from opensora_ae.train.loop import build_losses, build_models, build_trainables, train_iteration

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _case_config(case, Path(tmp))
        ctx = parallel.init_distributed("auto")
        on_gpu = ctx.device.type == "cuda"
        dtype = parallel.resolve_dtype(cfg.get("dtype", "bf16") if on_gpu else "fp32")
        models = build_models(cfg, ctx)
        losses = build_losses(cfg, ctx)
        trainables = build_trainables(cfg, models, losses, ctx, dtype)
    states = RunningStates()
    batch = 1
    x = torch.rand(batch, 3, frames, size, size, device=ctx.device) * 2 - 1

    def iteration() -> None:
        metrics, _ = train_iteration(x, models, losses, trainables, states, ctx, dtype, cfg)
        if metrics is None:
            raise RuntimeError(f"{case}: non-finite loss in the benchmark step")

    iteration()  # warm-up (allocator, oneDNN/cuDNN algorithm choice)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        iteration()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    result = {
        "case": case,
        "input": f"{batch}x3x{frames}x{size}x{size}",
        "params_M": sum(p.numel() for p in models.model.parameters()) / 1e6,
        "s_per_step": seconds,
        "samples_per_s": batch / seconds,
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu x{torch.get_num_threads()} threads",
        "dtype": str(dtype).replace("torch.", ""),
    }
    if on_gpu:
        result["peak_mem_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            iteration()
        peak = _gpu_peak_flops(result["device"])
        result["tflop_per_step"] = counter.get_total_flops() / 1e12
        result["mfu"] = counter.get_total_flops() / seconds / peak if peak else None
    else:
        result["peak_mem_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return result


def _format(result: dict) -> str:
    text = (f"{result['case']:<10} {result['input']:<16} {result['params_M']:8.2f}M  {result['s_per_step']:9.3f} s/step"
            f"  {result['samples_per_s']:8.4f} samples/s  peak {result['peak_mem_GiB']:6.2f} GiB")
    if result.get("mfu") is not None:
        text += f"  {result['tflop_per_step']:.2f} TFLOP/step  MFU {100 * result['mfu']:.1f}%"
    return text + f"  [{result['device']}, {result['dtype']}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1",
                        help="8 frames x 32 x 32 instead of 32 x 256 x 256 (CPU-only machines)")
    parser.add_argument("--steps", type=int, default=None, help="timed iterations per case (default 3, quick 1)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    frames, size = (8, 32) if args.quick else (32, 256)
    steps = args.steps or (1 if args.quick else 3)
    if args.case:
        print(json.dumps(run_case(args.case, frames, size, steps)))
        return
    results = {}
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"--cases: unknown case {case!r}; choose from {CASES}")
        command = [sys.executable, __file__, "--case", case, "--steps", str(steps)] + (["--quick"] if args.quick else [])
        out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{out.stderr[-3000:]}")
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
        print(_format(results[case]), flush=True)
    if "real_ae" in results:
        print(f"samples_per_s: {results['real_ae']['samples_per_s']:.4g}")


if __name__ == "__main__":
    main()
