"""Benchmark: our evaluation vs a faithful re-implementation of Open-Sora 1.2's eval loop, same clips, same numbers.

Writes ``--clips`` clips of ``--frames`` frames at ``--size`` squared (``<name>_orig.mp4``) and a perturbed copy of
each (``<name>_recn.mp4``), then scores PSNR + SSIM + LPIPS with Open-Sora 1.2's options (``--resolution`` and
``--crop_size`` = ``--size``, ``--num_frames`` = ``--frames``, sample rate 1) twice:

* ours: ``opensora_ae.inference.evaluate.evaluate`` with ``--protocol opensora`` (each video decoded once for
  all metrics in background threads, metrics batched);
* theirs (``eval/vae/eval_common_metric.py`` + ``cal_psnr/cal_ssim/cal_lpips``, re-implemented): for every
  metric, every video is read again and preprocessed (``x / 255``, ``ShortSideScale``, ``CenterCropVideo``);
  PSNR per frame in numpy; SSIM per frame and per channel in float64 (11x11 Gaussian, sigma 1.5, valid
  region: cv2's ``filter2D`` written as two separable numpy/scipy passes, no cv2 here); LPIPS one frame pair
  at a time with ``lpips.LPIPS(spatial=True)`` and ``.mean()``.

Both use the same AlexNet backbone (random weights saved to a temporary file: timings do not depend on the
values, nothing is downloaded). Every per-video number must agree. Wall and process CPU time are printed for
each side and each metric, then where our time goes (decode, colour conversion, resize/crop, each metric);
the last line is ``speedup: X``, their wall time / ours.

    python benchmarks/bench_eval.py [--clips 12 --frames 17 --size 256 --batch_size 17 --num_workers 2]

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

import av
import lpips as lpips_package
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from scipy.ndimage import correlate1d

from opensora_ae.data.video_io import read_clip, write_video
from opensora_ae.inference.evaluate import (EvalOptions, MetricWeights, evaluate, pair_videos, pairing_key,
                                            prepare_frames)
from opensora_ae.metrics import build_lpips, lpips_distance, psnr, ssim
from opensora_ae.metrics.protocols import opensora_frame_indices, opensora_resize_crop
from opensora_ae.metrics.ssim import gaussian_window

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


def their_load(path: str, frames: int, size: int) -> np.ndarray:
    """Their ``VideoDataset._load_video`` + ``_preprocess``: linspace frames, ``x / 255``, resize, crop ->
    ``T C H W`` float32 numpy (decord there, PyAV here: both decode the file from its start)."""
    video = read_clip(path, frames)
    video = video[opensora_frame_indices(len(video), frames, 1)]
    return opensora_resize_crop(torch.from_numpy(video).permute(0, 3, 1, 2), size, size).numpy()


def their_psnr(real: np.ndarray, fake: np.ndarray) -> float:
    values = []
    for frame_real, frame_fake in zip(real, fake):
        mse = np.mean((frame_real / 1.0 - frame_fake / 1.0) ** 2)
        values.append(100.0 if mse < 1e-10 else 20 * np.log10(1 / np.sqrt(mse)))
    return float(np.mean(values))


def their_ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """cv2-style SSIM of one ``H W`` float64 channel: Gaussian filter, valid region ``[5:-5, 5:-5]``."""
    taps = gaussian_window().numpy()

    def blur(image: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(image, taps, axis=0), taps, axis=1)[5:-5, 5:-5]

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    sigma_x, sigma_y, sigma_xy = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return float(ssim_map.mean())


def their_ssim(real: np.ndarray, fake: np.ndarray) -> float:
    values = []
    for frame_real, frame_fake in zip(real.astype(np.float64), fake.astype(np.float64)):
        values.append(np.mean([their_ssim_channel(frame_real[c], frame_fake[c]) for c in range(3)]))
    return float(np.mean(values))


def their_lpips(model: lpips_package.LPIPS, real: np.ndarray, fake: np.ndarray, device: str) -> float:
    values = []
    with torch.no_grad():
        for frame_real, frame_fake in zip(real, fake):
            image_real = torch.from_numpy(frame_real)[None].to(device) * 2 - 1
            image_fake = torch.from_numpy(frame_fake)[None].to(device) * 2 - 1
            values.append(model.forward(image_real, image_fake).mean().detach().cpu().tolist())
    return float(np.mean(values))


def run_theirs(real_dir: str, generated_dir: str, model: lpips_package.LPIPS, device: str, frames: int,
               size: int) -> tuple[dict[str, dict[str, float]], dict[str, tuple[float, float]]]:
    """Their loop: pair by sorted position, per metric read and preprocess every video again.

    Returns the per-video scores and, per metric, (wall seconds, process CPU seconds), reading included.
    """
    real_paths = sorted(os.path.join(real_dir, name) for name in os.listdir(real_dir))
    generated_paths = sorted(os.path.join(generated_dir, name) for name in os.listdir(generated_dir))
    scores: dict[str, dict[str, float]] = {pairing_key(os.path.basename(path)): {} for path in real_paths}
    seconds: dict[str, tuple[float, float]] = {}
    metric_functions = {"psnr": their_psnr, "ssim": their_ssim,
                        "lpips": lambda real, fake: their_lpips(model, real, fake, device)}
    for name, function in metric_functions.items():
        start, start_cpu = time.perf_counter(), time.process_time()
        for real_path, generated_path in zip(real_paths, generated_paths):
            real, fake = their_load(real_path, frames, size), their_load(generated_path, frames, size)
            scores[pairing_key(os.path.basename(real_path))][name] = function(real, fake)
        seconds[name] = (time.perf_counter() - start, time.process_time() - start_cpu)
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


def profile_stages(pairs: list[tuple[str, str]], options: EvalOptions, backbone: str) -> dict[str, float]:
    """Seconds each stage of our path spends on the given video pairs, one stage at a time on this thread:
    decoding alone, decoding + colour conversion to RGB (``read_clip``), the protocol's resize/crop, and each
    metric on the prepared frames."""
    model = build_lpips(backbone).to(options.device)
    totals = dict.fromkeys(("decode", "decode+rgb", "resize/crop", "psnr", "ssim", "lpips"), 0.0)
    for path_pair in pairs:
        prepared = []
        for path in path_pair:
            start = time.perf_counter()
            with av.open(path) as container:
                for _ in container.decode(video=0):
                    pass
            totals["decode"] += time.perf_counter() - start
            start = time.perf_counter()
            frames = read_clip(path, options.num_frames)
            totals["decode+rgb"] += time.perf_counter() - start
            start = time.perf_counter()
            prepared.append(prepare_frames(frames, options.resolution, options.crop_size, path, float_resize=True))
            totals["resize/crop"] += time.perf_counter() - start
        with torch.inference_mode():
            for name, metric in (("psnr", psnr), ("ssim", ssim),
                                 ("lpips", lambda real, fake: lpips_distance(model, real, fake, spatial=True))):
                start = time.perf_counter()
                metric(*(video.to(options.device) for video in prepared))
                totals[name] += time.perf_counter() - start
    return totals


def timed_evaluate(real_dir: str, generated_dir: str, metrics: list[str], options: EvalOptions,
                   weights: MetricWeights) -> tuple[dict, float, float]:
    """``evaluate`` with its wall and process CPU seconds."""
    start, start_cpu = time.perf_counter(), time.process_time()
    results = evaluate(real_dir, generated_dir, metrics, options, weights)
    return results, time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=17, help="our frames per metric pass")
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
            reference = lpips_package.LPIPS(net="alex", version="0.1", spatial=True, pnet_rand=True,
                                            verbose=False).eval()
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
              f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"device {args.device}" + (f" ({torch.cuda.get_device_name(args.device)})" if on_cuda else ""))
        print(f"data: {args.clips} clips x {args.frames} frames at {args.size}x{args.size}; "
              f"metrics {', '.join(METRICS)}; ours: batch {args.batch_size}, {args.num_workers} decoding threads")

        options = EvalOptions(num_frames=args.frames, resolution=args.size, crop_size=args.size,
                              batch_size=args.batch_size, device=args.device, num_workers=args.num_workers,
                              protocol="opensora")
        weights = MetricWeights(lpips_backbone=backbone)
        results, ours_wall, ours_cpu = timed_evaluate(real_dir, generated_dir, list(METRICS), options, weights)
        per_metric_ours = {name: timed_evaluate(real_dir, generated_dir, [name], options, weights)[1:]
                           for name in METRICS}
        # Their LPIPS gets exactly the weights our run used.
        reference.load_state_dict(build_lpips(backbone).state_dict())
        reference.to(args.device)
        theirs, theirs_per_metric = run_theirs(real_dir, generated_dir, reference, args.device, args.frames,
                                               args.size)
        theirs_wall = sum(wall for wall, _ in theirs_per_metric.values())
        theirs_cpu = sum(cpu for _, cpu in theirs_per_metric.values())

        stages = profile_stages([(pair.real, pair.generated) for pair in pair_videos(real_dir, generated_dir).pairs],
                                options, backbone)
        print("ours by stage (one thread of work, all clips): "
              + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stages.items()))
        compare(results["videos"], theirs)
        for name in METRICS:
            print(f"{name}: mean {results['metrics'][name]['mean']:.5f} (same per-video values in both runs)")
        for name in METRICS:
            (their_wall, their_cpu), (our_wall, our_cpu) = theirs_per_metric[name], per_metric_ours[name]
            print(f"{name} alone (reading included): theirs {their_wall:.2f} s wall / {their_cpu:.2f} s cpu, "
                  f"ours {our_wall:.2f} s / {our_cpu:.2f} s ({their_wall / our_wall:.2f}x)")
        print(f"all three: ours {ours_wall:.2f} s wall / {ours_cpu:.2f} s cpu, "
              f"theirs {theirs_wall:.2f} s wall / {theirs_cpu:.2f} s cpu (cpu ratio {theirs_cpu / ours_cpu:.2f})")
        print(f"speedup: {theirs_wall / ours_wall:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
