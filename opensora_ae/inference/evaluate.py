"""Score generated videos against real ones: pairing by relative path, one read per video, batched metrics.

``evaluate`` pairs ``real_dir/<rel>`` with ``generated_dir/<rel>`` after dropping the extension and one known
suffix (``_orig``, ``_recn``, ``_ori``, ``_rec``, ``_spatial``) from the file name, reads each video once (the
next pairs are decoded by ``num_workers`` background threads while the current one is scored), and runs every
requested metric on chunks of ``batch_size`` frames on the chosen device. Every metric is averaged over the
frames (FloLPIPS: frame pairs) of a video, then over videos; FVD is one number for the whole set (or per group
of videos, averaged). ``EvalOptions.protocol`` selects our preprocessing or Open-Sora's
(:mod:`opensora_ae.metrics.protocols`).
"""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator

import numpy as np
import torch

from opensora_ae.data.transforms import resize_crop
from opensora_ae.data.video_io import VIDEO_EXTS, ClipTooShortError, VideoReadError, read_clip, read_video
from opensora_ae.metrics import (build_lpips, flolpips_from_maps, flow_difference, load_pwcnet, lpips_from_maps,
                                lpips_layer_maps, psnr, ssim)
from opensora_ae.metrics.fvd import FVDSet, load_i3d
from opensora_ae.metrics.protocols import (Protocol, floor_short_side_size, get_protocol, opensora_frame_indices,
                                          opensora_resize_crop)

KNOWN_SUFFIXES = ("_orig", "_recn", "_ori", "_rec", "_spatial")
METRIC_NAMES = ("psnr", "ssim", "lpips", "flolpips", "fvd")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "flolpips": False, "fvd": False}


@dataclass
class VideoPair:
    """A real video and the generated video with the same pairing key."""

    key: str
    real: str
    generated: str


@dataclass
class Pairing:
    """The outcome of matching two folders; unmatched and ambiguous files are listed, not scored."""

    pairs: list[VideoPair] = field(default_factory=list)
    only_real: list[str] = field(default_factory=list)
    only_generated: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class EvalOptions:
    """How frames are read and scored.

    ``num_frames`` None reads whole videos; ``sample_rate`` keeps every n-th frame; ``resolution`` resizes the
    short side (aspect kept) and ``crop_size`` takes a centred square; ``batch_size`` frames go through each
    metric at once on ``device``; ``num_workers`` threads decode the next pairs meanwhile (each holds one
    pair in memory). ``protocol`` picks frame selection, resizing and the LPIPS definition
    (:mod:`opensora_ae.metrics.protocols`). ``sample_fps`` is recorded only: Open-Sora 1.2's and
    Open-Sora-Plan's eval scripts accept ``--sample_fps`` and never use it, so it changes no frame.
    ``fvd_variant`` is the I3D of FVD; ``fvd_group_size`` None computes one FVD over all videos, ``n`` one per
    group of ``n`` videos, averaged (Open-Sora-Plan's per-batch FVD). ``lpips_spatial`` picks the LPIPS
    definition (True: ``spatial=True``, False: the package default); None takes the protocol's.
    """

    num_frames: int | None = None
    sample_rate: int = 1
    resolution: int | None = None
    crop_size: int | None = None
    batch_size: int = 16
    device: str = "cpu"
    num_workers: int = 2
    protocol: str = "ours"
    sample_fps: float | None = None
    fvd_variant: str = "styleganv"
    fvd_group_size: int | None = None
    lpips_spatial: bool | None = None


@dataclass
class MetricWeights:
    """Local weight files: the AlexNet backbone of (Flo)LPIPS (its v0.1 heads ship with the lpips package) and
    PWC-Net for FloLPIPS; the I3D file of the FVD variant (``i3d_torchscript.pt`` or ``i3d_pretrained_400.pt``)."""

    lpips_backbone: str | None = None
    pwcnet: str | None = None
    i3d: str | None = None


def pairing_key(relative_path: str) -> str:
    """``a/b/clip_recn.mp4`` -> ``a/b/clip``: drop the extension, then one known suffix of the file name."""
    stem, _ = os.path.splitext(relative_path.replace(os.sep, "/"))
    for suffix in KNOWN_SUFFIXES:
        if stem.endswith(suffix) and len(os.path.basename(stem)) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def list_videos(root: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Videos under ``root`` by pairing key, and the keys that more than one file maps to."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"video folder {root} does not exist")
    by_key: dict[str, list[str]] = {}
    for directory, _, files in os.walk(root):
        for name in sorted(files):
            if name.lower().endswith(VIDEO_EXTS):
                path = os.path.join(directory, name)
                by_key.setdefault(pairing_key(os.path.relpath(path, root)), []).append(path)
    unique = {key: paths[0] for key, paths in by_key.items() if len(paths) == 1}
    ambiguous = {key: paths for key, paths in by_key.items() if len(paths) > 1}
    return unique, ambiguous


def pair_videos(real_dir: str, generated_dir: str) -> Pairing:
    """Match videos of two folders by relative path (see :func:`pairing_key`), never by sorted position."""
    real, real_ambiguous = list_videos(real_dir)
    generated, generated_ambiguous = list_videos(generated_dir)
    ambiguous = {**real_ambiguous, **generated_ambiguous}
    real = {key: path for key, path in real.items() if key not in ambiguous}
    generated = {key: path for key, path in generated.items() if key not in ambiguous}
    return Pairing(
        pairs=[VideoPair(key, real[key], generated[key]) for key in sorted(real.keys() & generated.keys())],
        only_real=sorted(real[key] for key in real.keys() - generated.keys()),
        only_generated=sorted(generated[key] for key in generated.keys() - real.keys()),
        ambiguous=ambiguous,
    )


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Height and width after resizing the short side to ``short_side``, keeping the aspect ratio."""
    scale = short_side / min(height, width)
    return max(short_side, round(height * scale)), max(short_side, round(width * scale))


def prepare_frames(frames: np.ndarray, resolution: int | None, crop_size: int | None, path: str,
                   float_resize: bool = False) -> torch.Tensor:
    """``T H W C`` uint8 -> ``T C H W``: uint8 as read, or float in [0, 1] when resized.

    ``resolution`` resizes the short side (bilinear, antialiased when shrinking); ``crop_size`` then takes the
    centred ``crop_size x crop_size`` square. ``float_resize`` applies Open-Sora's rule instead (float frames,
    no antialias, floored long side, half-to-even crop offset; :func:`opensora_resize_crop`). The result is
    stored channels-last (as decoded), the memory layout the batched convolutions of SSIM and LPIPS run
    fastest on.
    """
    video = torch.from_numpy(np.ascontiguousarray(frames))
    if crop_size is not None:
        height, width = video.shape[1:3]
        if resolution is not None:
            height, width = (short_side_size(height, width, resolution) if not float_resize
                             else floor_short_side_size(height, width, resolution))
        if crop_size > min(height, width):
            raise ValueError(f"{path}: frames of {height}x{width} are smaller than --crop_size {crop_size}")
    if float_resize:
        video = opensora_resize_crop(video.permute(0, 3, 1, 2), resolution, crop_size)
        return video.contiguous(memory_format=torch.channels_last)
    if resolution is not None:
        height, width = short_side_size(video.shape[1], video.shape[2], resolution)
        video = ((resize_crop(video, height, width) + 1.0) / 2.0).permute(1, 0, 2, 3)
    else:
        video = video.permute(0, 3, 1, 2)
    if crop_size is not None:
        height, width = video.shape[-2:]
        top, left = (height - crop_size) // 2, (width - crop_size) // 2
        video = video[:, :, top : top + crop_size, left : left + crop_size]
    return video.contiguous(memory_format=torch.channels_last)


def read_frames(path: str, options: EvalOptions, protocol: Protocol) -> np.ndarray:
    """The ``T H W C`` uint8 frames a protocol scores: every ``sample_rate``-th frame from the start
    (``num_frames`` of them, or all), or Open-Sora's ``linspace`` pick (:func:`opensora_frame_indices`)."""
    if options.num_frames is None:
        return read_video(path)[:: options.sample_rate]
    if not protocol.linspace_frames:
        return read_clip(path, options.num_frames, options.sample_rate)
    try:
        frames = read_clip(path, options.num_frames * options.sample_rate)
    except ClipTooShortError:
        frames = read_video(path)
    indices = opensora_frame_indices(len(frames), options.num_frames, options.sample_rate)
    if indices.size == 0:
        raise ClipTooShortError(f"video {path} has {len(frames)} frames: too few for one frame of a "
                                f"{options.num_frames} x {options.sample_rate} clip")
    return frames[indices]


def load_video(path: str, options: EvalOptions) -> torch.Tensor:
    """Read and prepare one video as ``T C H W`` (see :func:`prepare_frames`)."""
    protocol = get_protocol(options.protocol)
    return prepare_frames(read_frames(path, options, protocol), options.resolution, options.crop_size, path,
                          protocol.float_resize)


def check_device(device: str) -> None:
    """Fail early, naming ``--device``, when the device string is malformed or its backend is missing."""
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a torch device ({err})") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: CUDA is not available here; use --device cpu")


def to_unit_float(frames: torch.Tensor, device: str) -> torch.Tensor:
    """``T C H W`` uint8 or float in [0, 1] -> float32 in [0, 1] on ``device``."""
    frames = frames.to(device, non_blocking=True)
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


class MetricSuite:
    """The requested metrics, built once. A metric that cannot be built (e.g. missing weights) is kept in
    ``errors`` and skipped; the others still run.

    When both LPIPS and FloLPIPS are asked for, the AlexNet distance maps of each frame are computed once and
    serve both. ``lpips_spatial`` selects the ``spatial=True`` LPIPS definition (see
    :func:`opensora_ae.metrics.lpips_from_maps`).
    """

    def __init__(self, names: list[str], device: str, weights: MetricWeights | None = None,
                 lpips_spatial: bool = False, fvd_variant: str = "styleganv",
                 fvd_group_size: int | None = None) -> None:
        unknown = [name for name in names if name not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")
        weights = weights or MetricWeights()
        self.names = list(dict.fromkeys(names))
        self.lpips_spatial = lpips_spatial
        self.errors: dict[str, str] = {}
        self.lpips_model = None
        self.flow_net = None
        perceptual = [name for name in self.names if name in ("lpips", "flolpips")]
        if perceptual:
            try:
                self.lpips_model = build_lpips(weights.lpips_backbone).to(device)
            except (OSError, KeyError, RuntimeError) as err:
                self.errors.update({name: str(err) for name in perceptual})
        if "flolpips" in self.names and self.lpips_model is not None:
            try:
                self.flow_net = load_pwcnet(weights.pwcnet).to(device)
            except (OSError, KeyError, RuntimeError) as err:
                self.errors["flolpips"] = str(err)
        self.fvd_set: FVDSet | None = None
        if "fvd" in self.names:
            try:
                model = load_i3d(fvd_variant, weights.i3d, device)
                self.fvd_set = FVDSet(model, fvd_variant, device, group_size=fvd_group_size)
            except (OSError, ValueError) as err:
                self.errors["fvd"] = str(err)

    @property
    def active(self) -> list[str]:
        """The requested metrics that can be computed."""
        return [name for name in self.names if name not in self.errors]

    @torch.inference_mode()
    def score_video(self, real: torch.Tensor, fake: torch.Tensor,
                    options: EvalOptions) -> tuple[dict[str, float], dict[str, str]]:
        """Mean of every active metric over the frames (FloLPIPS: consecutive pairs) of one ``T C H W`` video.

        Returns the scores and, per metric that cannot score this video (e.g. frames smaller than SSIM's
        window or AlexNet's receptive field), the reason; the other metrics are still scored.
        """
        failures: dict[str, str] = {}
        per_frame: dict[str, list[torch.Tensor]] = {name: [] for name in self.active}
        total = real.shape[0]
        for begin in range(0, total, options.batch_size):
            end = min(begin + options.batch_size, total)
            # FloLPIPS also needs the frame after the chunk: the flow of the chunk's last pair ends there.
            stop = min(end + 1, total) if self.flow_net is not None else end
            real_chunk = to_unit_float(real[begin:stop], options.device)
            fake_chunk = to_unit_float(fake[begin:stop], options.device)
            for name, values in self._score_chunk(real_chunk, fake_chunk, end - begin, failures).items():
                per_frame[name].append(values.double().cpu())
        scores = {name: torch.cat(values).mean().item() for name, values in per_frame.items()
                  if values and name not in failures}
        return scores, failures

    def _score_chunk(self, real: torch.Tensor, fake: torch.Tensor, frames: int,
                     failures: dict[str, str]) -> dict[str, torch.Tensor]:
        """Scores of the first ``frames`` frames of the chunk (a further frame, if present, only serves the
        flow); a metric that fails is added to ``failures`` and not computed again for this video."""
        active = [name for name in self.active if name not in failures]
        scored_real, scored_fake = real[:frames], fake[:frames]
        scores = {}
        for name, metric in (("psnr", psnr), ("ssim", ssim)):
            if name in active:
                scores[name] = attempt([name], failures, lambda: metric(scored_real, scored_fake))
        perceptual = [name for name in ("lpips", "flolpips") if name in active]
        if self.lpips_model is None or not perceptual:
            return {name: values for name, values in scores.items() if values is not None}
        maps = attempt(perceptual, failures, lambda: lpips_layer_maps(self.lpips_model, scored_real, scored_fake))
        if maps is not None and "lpips" in active:
            frame_size = tuple(scored_real.shape[-2:]) if self.lpips_spatial else None
            scores["lpips"] = lpips_from_maps(maps, frame_size)
        if maps is not None and "flolpips" in active and self.flow_net is not None and real.shape[0] >= 2:
            pairs = real.shape[0] - 1
            differences = attempt(["flolpips"], failures, lambda: flow_difference(self.flow_net, real, fake))
            if differences is not None:
                scores["flolpips"] = flolpips_from_maps([layer_map[:pairs] for layer_map in maps], differences)
        return {name: values for name, values in scores.items() if values is not None}


def attempt(names: list[str], failures: dict[str, str], compute: Callable[[], object]) -> object | None:
    """``compute()``, or None after recording its error for every metric in ``names`` (a frame size or shape
    that metric cannot take). Running out of device memory is not a property of one video: it propagates."""
    try:
        return compute()
    except torch.cuda.OutOfMemoryError:
        raise
    except (ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        failures.update({name: reason for name in names})
        return None


def _read_pair(pair: VideoPair, options: EvalOptions) -> tuple[torch.Tensor, torch.Tensor]:
    return load_video(pair.real, options), load_video(pair.generated, options)


def read_pairs_ahead(
    pairs: list[VideoPair], options: EvalOptions
) -> Iterator[tuple[VideoPair, tuple[torch.Tensor, torch.Tensor] | None, str | None]]:
    """Yield ``(pair, (real, generated) or None, error or None)`` in order, decoding ahead in ``num_workers``
    threads (PyAV releases the GIL while it decodes).

    One pair more than there are workers is kept in flight, so that every worker has a pair to decode while
    the caller scores the current one.
    """
    with ThreadPoolExecutor(max_workers=options.num_workers) as pool:
        pending: deque[tuple[VideoPair, Future]] = deque()
        upcoming = iter(pairs)
        for pair in upcoming:
            pending.append((pair, pool.submit(_read_pair, pair, options)))
            if len(pending) > options.num_workers:
                break
        while pending:
            pair, future = pending.popleft()
            next_pair = next(upcoming, None)
            if next_pair is not None:
                pending.append((next_pair, pool.submit(_read_pair, next_pair, options)))
            try:
                loaded, error = future.result(), None
            except (VideoReadError, ValueError) as err:
                loaded, error = None, str(err)
            yield pair, loaded, error


def match_lengths(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """Cut both videos to the shorter one; an error string when their frame sizes differ."""
    if real.shape[1:] != fake.shape[1:]:
        return real, fake, (
            f"frame sizes differ ({tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}); "
            "use --resolution/--crop_size to compare at one size"
        )
    frames = min(real.shape[0], fake.shape[0])
    return real[:frames], fake[:frames], None


def summarise(values: list[float]) -> dict[str, float | int]:
    """Mean, population standard deviation and count over videos."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "count": int(array.size)}


def evaluate(
    real_dir: str,
    generated_dir: str,
    metrics: list[str],
    options: EvalOptions | None = None,
    weights: MetricWeights | None = None,
    progress: Callable[[Iterator, int], Iterator] | None = None,
) -> dict:
    """Score every pair of videos; returns the content of ``metrics.json``.

    ``progress(iterator, total)`` may wrap the loop over pairs (e.g. with tqdm).

    Keys: ``metrics`` (per metric ``mean``, ``std``, ``count``, or ``error``), ``videos`` (per pairing key
    the two paths, frame count and metric values), ``skipped`` (``only_real``, ``only_generated``,
    ``ambiguous``, ``failed``) and the ``options`` used.
    """
    options = options or EvalOptions()
    check_device(options.device)
    if min(options.batch_size, options.sample_rate, options.num_workers) < 1:
        raise ValueError(f"batch_size, sample_rate and num_workers must be >= 1, got {options.batch_size}, "
                         f"{options.sample_rate}, {options.num_workers}")
    protocol = get_protocol(options.protocol)
    if options.lpips_spatial is not None:
        protocol = replace(protocol, lpips_spatial=options.lpips_spatial)
    suite = MetricSuite(metrics, options.device, weights, protocol.lpips_spatial, options.fvd_variant,
                        options.fvd_group_size)
    pairing = pair_videos(real_dir, generated_dir)
    videos: dict[str, dict] = {}
    failed: dict[str, str] = {}
    metric_failed: dict[str, dict[str, str]] = {}
    stream = read_pairs_ahead(pairing.pairs, options) if suite.active else iter(())
    for pair, loaded, error in progress(stream, len(pairing.pairs)) if progress else stream:
        if loaded is not None:
            real, fake, error = match_lengths(*loaded)
        if error is not None:
            failed[pair.key] = error
            continue
        scores, failures = suite.score_video(real, fake, options)
        if suite.fvd_set is not None and "fvd" in suite.active:
            attempt(["fvd"], failures, lambda: suite.fvd_set.add(real, fake))
        for name, reason in failures.items():
            metric_failed.setdefault(name, {})[pair.key] = reason
        videos[pair.key] = {"real": pair.real, "generated": pair.generated, "frames": int(real.shape[0]), **scores}
    summary = {name: summarise_metric(name, suite, videos) for name in suite.names}
    return {
        "real_video_dir": real_dir,
        "generated_video_dir": generated_dir,
        "options": asdict(options),
        "definitions": {name: metric_definition(name, protocol, options) for name in suite.names},
        "metrics": summary,
        "videos": videos,
        "skipped": {
            "only_real": pairing.only_real,
            "only_generated": pairing.only_generated,
            "ambiguous": pairing.ambiguous,
            "failed": failed,
            "metric_failed": metric_failed,
        },
    }


def summarise_metric(name: str, suite: MetricSuite, videos: dict[str, dict]) -> dict:
    """The ``metrics.json`` summary of one metric: its ``error``, the FVD of the set, or the per-video stats."""
    if name in suite.errors:
        return {"error": suite.errors[name]}
    if name == "fvd":
        try:
            return suite.fvd_set.result()
        except ValueError as err:
            return {"error": str(err)}
    values = [video[name] for video in videos.values() if name in video]
    return summarise(values) if values else {"error": "no video pair could be scored"}


def metric_definition(name: str, protocol: Protocol, options: EvalOptions) -> str:
    """One line naming how ``name`` was computed (written to ``metrics.json`` next to the values)."""
    if name == "lpips":
        pooling = ("spatial=True: each layer's map upsampled bilinearly to the frame, then averaged (Open-Sora, "
                   "Open-Sora-Plan cal_lpips)" if protocol.lpips_spatial
                   else "spatial=False: each layer's map averaged at its own resolution (lpips package default)")
        return f"lpips.LPIPS(net='alex', version='0.1'), {pooling}"
    if name == "fvd":
        grouping = (f"one FVD per group of {options.fvd_group_size} videos, averaged (Open-Sora-Plan's batches)"
                    if options.fvd_group_size else "one FVD over the whole set")
        return (f"FVD with the {options.fvd_variant} I3D, clip prefixes of 10..T frames averaged, 224x224 "
                f"bilinear resize + centre crop, float64 Frechet distance; {grouping}")
    return {
        "psnr": "10 log10(1 / MSE) per frame over C, H, W in [0, 1], capped at 100 dB",
        "ssim": "Gaussian 11x11 sigma 1.5, per RGB channel, valid region, averaged",
        "flolpips": "LPIPS layer maps weighted by |PWC-Net flow difference| per frame pair (Danier et al. 2022)",
    }[name]


def format_table(results: dict) -> str:
    """A plain-text table of the summary plus the skipped files."""
    lines = [f"{'metric':<10} {'mean':>12} {'std':>12} {'videos':>7}"]
    for name, summary in results["metrics"].items():
        if "error" in summary:
            lines.append(f"{name:<10} error: {summary['error']}")
        else:
            arrow = "(higher is better)" if HIGHER_IS_BETTER[name] else "(lower is better)"
            lines.append(f"{name:<10} {summary['mean']:>12.4f} {summary['std']:>12.4f} {summary['count']:>7}  {arrow}")
    skipped = results["skipped"]
    for path in skipped["only_real"]:
        lines.append(f"skipped (no generated video): {path}")
    for path in skipped["only_generated"]:
        lines.append(f"skipped (no real video): {path}")
    for key, paths in skipped["ambiguous"].items():
        lines.append(f"skipped (several files pair as {key!r}): {', '.join(paths)}")
    for key, reason in skipped["failed"].items():
        lines.append(f"skipped {key}: {reason}")
    for name, reasons in skipped.get("metric_failed", {}).items():
        for key, reason in reasons.items():
            lines.append(f"skipped for {name}: {key}: {reason}")
    return "\n".join(lines)


def write_results(results: dict, path: str) -> None:
    """Write ``results`` as indented JSON, creating the parent folder. The file appears complete or not at all:
    written beside ``path`` first, then renamed over it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
