"""Benchmark: batched evaluation vs the per-frame loop of Open-Sora's eval scripts.

Writes 20 clips of 33 frames at 256x256 (``<name>_orig.mp4``) and a perturbed copy of each (``<name>_recn.mp4``),
then scores PSNR + SSIM + LPIPS twice:

* ours: ``opensora_ae.inference.evaluate.evaluate`` (each video read once, metrics on frame batches);
* baseline: for every metric, every pair of videos is read again; PSNR per frame in numpy, SSIM per frame and
  channel with scikit-image, LPIPS one frame at a time with ``lpips.LPIPS``.

Both use the same AlexNet backbone (random weights saved to a temporary file: timings do not depend on the
values, and nothing is downloaded). The per-video numbers must agree; the last line is ``speedup: X``, the time ratio baseline / ours.

    python benchmarks/bench_eval.py [--clips 20 --frames 33 --size 256 --batch_size 33 --num_workers 8]

On CUDA the device is initialised before either side is timed, so its one-off start-up cost lands on neither.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import warnings

import lpips as lpips_package
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from skimage.metrics import structural_similarity

from opensora_ae.data.video_io import read_video, write_video
from opensora_ae.inference.evaluate import EvalOptions, MetricWeights, evaluate, pairing_key
from opensora_ae.metrics import build_lpips

METRICS = ("psnr", "ssim", "lpips")
# Absolute for PSNR (dB) and SSIM; LPIPS relative, since a random backbone gives small distances.
ABSOLUTE_TOLERANCE = {"psnr": 1e-3, "ssim": 1e-4, "lpips": 1e-7}
LPIPS_RELATIVE_TOLERANCE = 1e-4


def moving_texture(seed: int, frames: int, size: int) -> np.ndarray:
    """``T H W 3`` uint8: a smooth random texture panning diagonally (real-video-like motion)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 16, size // 16, generator=generator)
    canvas = F.interpolate(coarse, size=(2 * size, 2 * size), mode="bicubic", align_corners=False).clamp(0, 1)
    canvas = (canvas[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return np.stack([canvas[2 * t : 2 * t + size, 3 * t : 3 * t + size] for t in range(frames)])


def perturbed(frames: np.ndarray, seed: int) -> np.ndarray:
    """A stand-in reconstruction: the clip plus Gaussian noise (sigma 6 / 255)."""
    noise = np.random.default_rng(seed).normal(0.0, 6.0, size=frames.shape)
    return np.clip(frames + noise, 0, 255).round().astype(np.uint8)


def write_clips(root: str, clips: int, frames: int, size: int) -> tuple[str, str]:
    real_dir, generated_dir = os.path.join(root, "orig"), os.path.join(root, "recn")
    for index in range(clips):
        real = moving_texture(index, frames, size)
        write_video(os.path.join(real_dir, f"clip{index:03d}_orig.mp4"), real, fps=24, lossless=True,
                    preset="ultrafast")
        write_video(os.path.join(generated_dir, f"clip{index:03d}_recn.mp4"), perturbed(real, index), fps=24,
                    lossless=True, preset="ultrafast")
    return real_dir, generated_dir


def baseline_psnr(real: np.ndarray, fake: np.ndarray) -> float:
    values = []
    for frame_real, frame_fake in zip(real, fake):
        mse = np.mean((frame_real - frame_fake) ** 2)
        values.append(100.0 if mse < 1e-10 else 20 * np.log10(1.0 / np.sqrt(mse)))
    return float(np.mean(values))


def baseline_ssim(real: np.ndarray, fake: np.ndarray) -> float:
    values = []
    for frame_real, frame_fake in zip(real, fake):
        channels = [
            structural_similarity(frame_real[..., c], frame_fake[..., c], gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1)
            for c in range(frame_real.shape[-1])
        ]
        values.append(np.mean(channels))
    return float(np.mean(values))


def baseline_lpips(model: lpips_package.LPIPS, real: np.ndarray, fake: np.ndarray, device: str) -> float:
    values = []
    with torch.no_grad():
        for frame_real, frame_fake in zip(real, fake):
            image_real = torch.from_numpy(frame_real).permute(2, 0, 1)[None].float().to(device) * 2 - 1
            image_fake = torch.from_numpy(frame_fake).permute(2, 0, 1)[None].float().to(device) * 2 - 1
            values.append(model(image_real, image_fake).item())
    return float(np.mean(values))


def run_baseline(
    real_dir: str, generated_dir: str, model: lpips_package.LPIPS, device: str
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Open-Sora style: pair by sorted position, re-read every video for every metric.

    Returns the per-video scores and the seconds spent on each metric (reading included).
    """
    real_paths = sorted(os.path.join(real_dir, name) for name in os.listdir(real_dir))
    generated_paths = sorted(os.path.join(generated_dir, name) for name in os.listdir(generated_dir))
    scores: dict[str, dict[str, float]] = {pairing_key(os.path.basename(path)): {} for path in real_paths}
    seconds: dict[str, float] = {}
    metric_functions = {"psnr": baseline_psnr, "ssim": baseline_ssim,
                        "lpips": lambda real, fake: baseline_lpips(model, real, fake, device)}
    for name, function in metric_functions.items():
        start = time.perf_counter()
        for real_path, generated_path in zip(real_paths, generated_paths):
            real = read_video(real_path).astype(np.float64) / 255.0
            fake = read_video(generated_path).astype(np.float64) / 255.0
            scores[pairing_key(os.path.basename(real_path))][name] = function(real, fake)
        seconds[name] = time.perf_counter() - start
    return scores, seconds


def compare(ours: dict[str, dict], baseline: dict[str, dict[str, float]]) -> None:
    assert sorted(ours) == sorted(baseline), "the two runs scored different videos"
    for key, expected in baseline.items():
        for name in METRICS:
            allowed = ABSOLUTE_TOLERANCE[name]
            if name == "lpips":
                allowed += LPIPS_RELATIVE_TOLERANCE * abs(expected[name])
            difference = abs(ours[key][name] - expected[name])
            assert difference <= allowed, f"{key} {name}: ours {ours[key][name]} vs baseline {expected[name]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=33)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where both sides run LPIPS (ours also PSNR/SSIM); default: the GPU when present")
    parser.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="our decoding threads (default: the CPU count, at most 8)")
    args = parser.parse_args()
    on_cuda = torch.device(args.device).type == "cuda"
    if on_cuda:
        torch.ones(1, device=args.device).sum().item()

    root = tempfile.mkdtemp(prefix="bench_eval_")
    try:
        real_dir, generated_dir = write_clips(root, args.clips, args.frames, args.size)
        torch.manual_seed(0)
        backbone = os.path.join(root, "alexnet-owt-7be5be79.pth")
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision `pretrained=` deprecation inside lpips
            reference = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
              + (f" ({torch.cuda.get_device_name(args.device)})" if on_cuda else ""))
        print(f"data: {args.clips} clips x {args.frames} frames at {args.size}x{args.size}; "
              f"metrics {', '.join(METRICS)}; ours: batch {args.batch_size}, {args.num_workers} decoding threads")

        options = EvalOptions(batch_size=args.batch_size, device=args.device, num_workers=args.num_workers)
        weights = MetricWeights(lpips_backbone=backbone)
        start = time.perf_counter()
        results = evaluate(real_dir, generated_dir, list(METRICS), options, weights)
        ours_seconds = time.perf_counter() - start
        start = time.perf_counter()
        evaluate(real_dir, generated_dir, ["psnr", "ssim"], options, weights)
        ours_pixel_seconds = time.perf_counter() - start
        # The reference LPIPS gets exactly the weights our run used.
        reference.load_state_dict(build_lpips(backbone).state_dict())
        reference.to(args.device)

        baseline, baseline_per_metric = run_baseline(real_dir, generated_dir, reference, args.device)
        baseline_seconds = sum(baseline_per_metric.values())

        compare(results["videos"], baseline)
        for name in METRICS:
            print(f"{name}: mean {results['metrics'][name]['mean']:.5f} (same per-video values in both runs)")
        print("baseline per metric (reading included): "
              + ", ".join(f"{name} {value:.2f} s" for name, value in baseline_per_metric.items()))
        pixel_baseline = baseline_per_metric["psnr"] + baseline_per_metric["ssim"]
        print(f"psnr+ssim only: ours {ours_pixel_seconds:.2f} s, baseline {pixel_baseline:.2f} s "
              f"({pixel_baseline / ours_pixel_seconds:.1f}x)")
        print(f"ours: {ours_seconds:.2f} s, baseline: {baseline_seconds:.2f} s")
        print(f"speedup: {baseline_seconds / ours_seconds:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
