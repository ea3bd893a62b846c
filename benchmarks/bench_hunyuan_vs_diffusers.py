"""HunyuanVideo VAE: our implementation vs diffusers' ``AutoencoderKLHunyuanVideo``, same random weights.

Encodes a ``1x3x17x128x128`` clip and decodes a ``1x16x5x16x16`` latent with each implementation (untiled: diffusers'
default frame-wise tiling above 16 frames is switched off so both do the same computation), and reports the best
wall time over ``--repeats`` calls and the peak memory of one call:

* CPU: peak resident memory above the pre-call level (``/proc/self/status`` VmHWM after resetting it through
  ``/proc/self/clear_refs``), measured in its own process with glibc's mmap threshold pinned to 128 KiB so that
  freed tensors go back to the system instead of staying in the heap (where a reused heap would hide allocations);
  times are measured in separate processes with the default allocator. Every (implementation, phase) runs in fresh
  processes, alternating between implementations over ``--rounds`` rounds (the best time wins).
* CUDA: ``torch.cuda.max_memory_allocated`` above the pre-call allocation.

The outputs of the two implementations are compared (max abs difference is printed). The last line is
``time_ratio: X memory_ratio: Y`` = ours / diffusers for encode + decode wall time, and for the peak memory of the
two calls (the larger of the encode and decode peaks). Process CPU time (all threads) is printed too: on a shared
machine it is a steadier measure of the work than wall time.

    python benchmarks/bench_hunyuan_vs_diffusers.py                       # CPU fp32, half-width model
    python benchmarks/bench_hunyuan_vs_diffusers.py --widths 128,256,512,512   # released widths (slow on CPU)
    python benchmarks/bench_hunyuan_vs_diffusers.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

IMPLEMENTATIONS = ("ours", "diffusers")
PHASES = ("encode", "decode")
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="64,128,256,256", help="block_out_channels (released: 128,256,512,512)")
    parser.add_argument("--layers-per-block", type=int, default=2)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=128, help="height = width in pixels")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: fp32 CPU, bf16 CUDA")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating processes per implementation and phase")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "PHASE", "MODE", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def model_kwargs(args: argparse.Namespace) -> dict:
    widths = tuple(int(w) for w in args.widths.split(","))
    return dict(block_out_channels=widths, layers_per_block=args.layers_per_block, latent_channels=16)


def build(impl: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Both models get diffusers' seeded random init; ours loads those weights with strict key matching."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(SEED)
    reference = AutoencoderKLHunyuanVideo(**model_kwargs(args))
    reference.use_framewise_encoding = reference.use_framewise_decoding = False
    if impl == "diffusers":
        model = reference
    else:
        from opensora_ae.models.hunyuan_vae import HunyuanVAE

        model = HunyuanVAE(**model_kwargs(args))
        model.load_state_dict(reference.state_dict(), strict=True)
        del reference
    return model.to(device=device, dtype=dtype).eval()


def inputs(phase: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED + 1)
    if phase == "encode":
        x = torch.rand(1, 3, args.frames, args.size, args.size, generator=generator) * 2 - 1
    else:
        x = torch.randn(1, 16, (args.frames - 1) // 4 + 1, args.size // 8, args.size // 8, generator=generator)
    return x.to(device=device, dtype=dtype)


def call(impl: str, phase: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The public entry points: posterior mode for encode, pixels for decode (unscaled latent in both)."""
    if impl == "ours":
        return model.encode_moments(x).chunk(2, dim=1)[0] if phase == "encode" else model.decode_latent(x)
    return model.encode(x).latent_dist.mode() if phase == "encode" else model.decode(x).sample


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}; CPU peak memory needs Linux")
    return int(match.group(1))


def measure_peak(fn, device: torch.device) -> tuple[torch.Tensor, int]:
    """Run ``fn`` once; return its output and the peak memory above the level before the call (bytes)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated() - before
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    out = fn()
    return out, (_status_kib("VmHWM") - before) * 1024


def best_time(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """Best wall time and best process CPU time (all threads) over ``repeats`` calls."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best_wall, best_cpu


def worker(args: argparse.Namespace) -> None:
    """One process: ``MODE`` is ``memory`` (peak of one call) or ``time`` (best of ``--repeats`` calls)."""
    impl, phase, mode, out_path = args.worker
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = build(impl, args, device, dtype)
    x = inputs(phase, args, device, dtype)
    result = {"impl": impl, "phase": phase}
    with torch.inference_mode():
        fn = lambda: call(impl, phase, model, x)  # noqa: E731
        fn()  # warm-up: one-time kernel selection and allocations of the runtime
        if mode == "memory":
            out, result["peak_bytes"] = measure_peak(fn, device)
            torch.save(out.float().cpu(), out_path)
        else:
            result["seconds"], result["cpu_seconds"] = best_time(fn, device, args.repeats)
    print(json.dumps(result))


def run_worker(impl: str, phase: str, mode: str, args: argparse.Namespace, out_path: Path) -> dict:
    command = [sys.executable, __file__, "--worker", impl, phase, mode, str(out_path)]
    for name in ("widths", "layers_per_block", "frames", "size", "device", "dtype", "repeats", "threads"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = dict(os.environ)
    if mode == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {impl}/{phase}/{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.worker:
        worker(args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    print(f"config: {model_kwargs(args)} input 1x3x{args.frames}x{args.size}x{args.size} "
          f"{args.device} {args.dtype}, threads {args.threads or torch.get_num_threads()}")
    seconds = {(i, p): float("inf") for i in IMPLEMENTATIONS for p in PHASES}
    cpu_seconds = dict(seconds)
    peaks = {(i, p): 0 for i in IMPLEMENTATIONS for p in PHASES}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in PHASES:
            for impl in IMPLEMENTATIONS:
                result = run_worker(impl, phase, "memory", args, Path(tmp) / f"{impl}_{phase}.pt")
                peaks[impl, phase] = result["peak_bytes"]
                print(f"{impl:9s} {phase}: peak {result['peak_bytes'] / 2**20:.0f} MiB", flush=True)
            ours, theirs = (torch.load(Path(tmp) / f"{i}_{phase}.pt", weights_only=True) for i in IMPLEMENTATIONS)
            print(f"{phase}: max |ours - diffusers| = {(ours - theirs).abs().max().item():.3e} "
                  f"(max |diffusers| = {theirs.abs().max().item():.3e})", flush=True)
        for round_index in range(args.rounds):
            for phase in PHASES:
                # Alternate the order so that neither implementation always runs first.
                order = IMPLEMENTATIONS if round_index % 2 == 0 else IMPLEMENTATIONS[::-1]
                for impl in order:
                    result = run_worker(impl, phase, "time", args, Path(tmp) / "unused.pt")
                    seconds[impl, phase] = min(seconds[impl, phase], result["seconds"])
                    cpu_seconds[impl, phase] = min(cpu_seconds[impl, phase], result["cpu_seconds"])
                    print(f"round {round_index} {impl:9s} {phase}: {result['seconds']:.2f} s "
                          f"(process CPU {result['cpu_seconds']:.2f} s)", flush=True)
    for impl in IMPLEMENTATIONS:
        print(" ".join(f"{impl:9s} {p} {seconds[impl, p]:.2f} s (CPU {cpu_seconds[impl, p]:.2f} s) "
                       f"{peaks[impl, p] / 2**20:.0f} MiB;" for p in PHASES))
    cpu_ratio = sum(cpu_seconds["ours", p] for p in PHASES) / sum(cpu_seconds["diffusers", p] for p in PHASES)
    print(f"process CPU time ratio (ours / diffusers, encode + decode): {cpu_ratio:.3f}")
    time_ratio = sum(seconds["ours", p] for p in PHASES) / sum(seconds["diffusers", p] for p in PHASES)
    memory_ratio = max(peaks["ours", p] for p in PHASES) / max(peaks["diffusers", p] for p in PHASES)
    print(f"time_ratio: {time_ratio:.3f} memory_ratio: {memory_ratio:.3f}")


if __name__ == "__main__":
    main()
