"""Peak memory of tiled decoding vs video length.

Decodes latents of 1x and 8x the length (default 8 and 64 latent frames = 32 and 256 frames) with temporal and
spatial tiling on, each in a fresh subprocess, and reports the decode's peak memory above what the process
held before decoding (the model and the latents):

* CPU: the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` right before the
  decode) minus the resident set before it, with glibc's mmap threshold pinned to 128 KiB in the worker so that
  freed tensors go back to the system instead of being counted as heap caching;
* CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated`` minus the memory allocated before it.

The model is a random-init DC-AE with the released block structure and first-stage width (128 channels at
full resolution, which is what dominates a tile's activations), made cheaper by using 4 stages (8x spatial
compression) and one block per stage. The decoded video itself (which has to exist) grows with the length; the
tiles' working memory does not. The last line is ``memory_growth: X`` (the peak ratio 8x / 1x: the 1x-length decode is the peer; goal <= 1.2).

    python benchmarks/bench_tiling_memory.py [--size 32] [--latent-frames 8] [--factor 8] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

MODEL = dict(
    type="dc_ae",
    latent_channels=16,
    width_list=(128, 256, 256, 256),
    encoder_depth_list=(1, 1, 1, 1),
    decoder_depth_list=(1, 1, 1, 1),
    encoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU", "EViTS5_GLU"),
    decoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU", "EViTS5_GLU"),
    temporal_downsample=(False, True, True, False),
    # Open-Sora 2.0's released DC-AE inference settings.
    use_spatial_tiling=True,
    use_temporal_tiling=True,
    spatial_tile_size=256,
    temporal_tile_size=32,
    tile_overlap_factor=0.25,
)


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def measure(latent_frames: int, size: int, device: str, threads: int) -> dict:
    """Decode ``latent_frames`` latents in this process and return the decode's peak memory (bytes)."""
    from opensora_ae.models import build_model

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(MODEL).eval().to(device)
    _, ch, cw = model.compression
    z = torch.randn(1, model.latent_channels, latent_frames, size // ch, size // cw, device=device)
    with torch.no_grad():
        model.decode(z[:, :, :2])  # warm-up: one-time allocations (oneDNN/cuDNN kernels) are not part of the peak
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
            baseline = _status_kib("VmRSS") * 1024
        start = time.perf_counter()
        x = model.decode(z)
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_kib("VmHWM") * 1024
        seconds = time.perf_counter() - start
    return dict(
        latent_frames=latent_frames,
        output_shape=list(x.shape),
        output_bytes=x.numel() * x.element_size(),
        baseline_bytes=baseline,
        peak_bytes=peak,
        decode_peak_bytes=peak - baseline,
        seconds=seconds,
    )


def run_worker(latent_frames: int, size: int, device: str, threads: int) -> dict:
    """Measure in a fresh interpreter so that earlier runs leave no cached memory behind."""
    command = [sys.executable, __file__, "--worker", "--latent-frames", str(latent_frames), "--size", str(size),
               "--device", device, "--threads", str(threads)]
    # glibc raises its mmap threshold each time a large block is freed, after which freed tensors stay in the heap
    # and the RSS high-water mark counts allocator caching rather than live tensors; pin the threshold.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"worker for {latent_frames} latent frames failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="frame height and width in pixels")
    parser.add_argument("--latent-frames", type=int, default=8, help="latent frames of the 1x run")
    parser.add_argument("--factor", type=int, default=8, help="length multiplier of the long run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU intra-op threads (1 is fastest on a shared, busy machine; 0 = torch's default)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.latent_frames, args.size, args.device, args.threads)))
        return

    metric = "CUDA max allocated" if args.device == "cuda" else "CPU RSS high-water mark"
    print(f"tiled decode, {args.size}x{args.size} px, {metric} above the pre-decode baseline")
    runs = [run_worker(args.latent_frames * k, args.size, args.device, args.threads) for k in (1, args.factor)]
    for label, run in zip(("1x", f"{args.factor}x"), runs):
        print(
            f"{label}: {run['latent_frames']} latents -> output {tuple(run['output_shape'])} "
            f"({run['output_bytes'] / 2**20:.1f} MiB), decode peak {run['decode_peak_bytes'] / 2**20:.1f} MiB "
            f"(process peak {run['peak_bytes'] / 2**20:.1f} MiB), {run['seconds']:.1f} s"
        )
    print(f"memory_growth: {runs[1]['decode_peak_bytes'] / runs[0]['decode_peak_bytes']:.3f}")


if __name__ == "__main__":
    main()
