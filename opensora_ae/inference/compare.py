"""Visual comparisons: original | reconstruction | amplified absolute error, as an mp4 and a PNG grid.

Frames are ``T H W C`` uint8 RGB throughout. Each panel row is labelled with the file name and its PSNR.
:func:`compare_folders` pairs two folders exactly as evaluation does (by relative path, known suffixes
dropped, see ``evaluate.pair_videos``) and writes ``<save_dir>/<key>_compare.{mp4,png}`` per pair.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from opensora_ae.data.video_io import VideoReadError, probe, read_video, write_video
from opensora_ae.inference.evaluate import pair_videos
from opensora_ae.metrics.psnr import psnr

ERROR_GAIN = 4.0  # |orig - recn| is small; amplify it so structure in the error is visible


def side_by_side(orig: np.ndarray, recn: np.ndarray, error_gain: float = ERROR_GAIN) -> np.ndarray:
    """``T H 3W C`` frames: original | reconstruction | ``error_gain * |orig - recn|`` (clipped to 255)."""
    if orig.shape != recn.shape:
        raise ValueError(f"cannot compare videos of shapes {orig.shape} and {recn.shape}; they must match")
    error = np.clip(np.abs(orig.astype(np.int16) - recn.astype(np.int16)) * error_gain, 0, 255).astype(np.uint8)
    return np.concatenate([orig, recn, error], axis=2)


def video_psnr(orig: np.ndarray, recn: np.ndarray) -> float:
    """Mean per-frame PSNR (dB, capped at 100) of two ``T H W C`` uint8 videos."""
    to_frames = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    return float(psnr(to_frames(orig), to_frames(recn)).mean())


MIN_PANEL_HEIGHT = 128  # small clips are enlarged (nearest) so that a comparison stays readable
HEADER_HEIGHT = 16  # the label sits in a strip above the frames, never over them


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """Enlarge ``frame`` by an integer factor to at least ``MIN_PANEL_HEIGHT`` rows and put ``text`` above it."""
    factor = max(1, -(-MIN_PANEL_HEIGHT // frame.shape[0]))
    enlarged = frame.repeat(factor, axis=0).repeat(factor, axis=1)
    canvas = Image.new("RGB", (enlarged.shape[1], enlarged.shape[0] + HEADER_HEIGHT))
    canvas.paste(Image.fromarray(enlarged), (0, HEADER_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def grid_image(panels: np.ndarray, num_rows: int = 4) -> np.ndarray:
    """Stack ``num_rows`` evenly spaced frames of ``T H W' C`` panels vertically."""
    rows = np.linspace(0, len(panels) - 1, num=min(num_rows, len(panels))).round().astype(int)
    return np.concatenate([panels[i] for i in rows], axis=0)


def write_comparison(orig: np.ndarray, recn: np.ndarray, name: str, out_dir: str | Path, fps: float = 24.0,
                     num_rows: int = 4) -> dict[str, object]:
    """Write ``out_dir/<name>_compare.mp4`` and ``out_dir/<name>_compare.png``; return their paths and the PSNR."""
    value = video_psnr(orig, recn)
    label = f"{name}  PSNR {value:.2f} dB  (orig | recn | {ERROR_GAIN:g}x error)"
    panels = np.stack([_label(frame, label) for frame in side_by_side(orig, recn)])
    out_dir = Path(out_dir)
    mp4_path, png_path = out_dir / f"{name}_compare.mp4", out_dir / f"{name}_compare.png"
    mp4_path.parent.mkdir(parents=True, exist_ok=True)
    write_video(mp4_path, panels, fps)
    Image.fromarray(grid_image(panels, num_rows)).save(png_path)
    return {"name": name, "psnr": value, "mp4": str(mp4_path), "png": str(png_path)}


@dataclass
class ComparisonReport:
    """What :func:`compare_folders` wrote (``compared``: one entry per pair, as ``write_comparison`` returns) and
    what it could not compare."""

    compared: list[dict[str, object]] = field(default_factory=list)
    only_real: list[str] = field(default_factory=list)
    only_generated: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def _read_pair(real_path: str, generated_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Both videos cut to the shorter one; ValueError when their frame sizes differ."""
    real, generated = read_video(real_path), read_video(generated_path)
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"frame sizes differ: {real_path} is {real.shape[1]}x{real.shape[2]}, "
                         f"{generated_path} is {generated.shape[1]}x{generated.shape[2]}")
    frames = min(len(real), len(generated))
    return real[:frames], generated[:frames]


def compare_folders(real_dir: str, generated_dir: str, save_dir: str | Path, num_rows: int = 4,
                    num_frames: int | None = None) -> ComparisonReport:
    """Write a side-by-side mp4 and PNG grid for every pair of ``real_dir`` / ``generated_dir`` videos.

    Outputs keep the pairing key's sub-folders: ``save_dir/<key>_compare.mp4`` and ``.png``; ``num_frames``
    keeps only the first frames of each video. ``save_dir/compare.json`` holds the report.
    """
    if num_rows < 1 or (num_frames is not None and num_frames < 1):
        raise ValueError(f"--num_rows and --num_frames must be >= 1, got {num_rows} and {num_frames}")
    pairing = pair_videos(real_dir, generated_dir)
    report = ComparisonReport(only_real=pairing.only_real, only_generated=pairing.only_generated,
                              ambiguous=pairing.ambiguous)
    for pair in pairing.pairs:
        try:
            real, generated = _read_pair(pair.real, pair.generated)
            fps = probe(pair.generated).fps
        except (VideoReadError, ValueError) as err:
            report.failed[pair.key] = str(err)
            continue
        real, generated = real[:num_frames], generated[:num_frames]
        report.compared.append(write_comparison(real, generated, pair.key, save_dir, fps, num_rows))
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    (Path(save_dir) / "compare.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def format_comparison_report(report: ComparisonReport) -> str:
    """One line per compared video (PSNR and PNG path), then every video that was not compared and why."""
    lines = [f"{item['name']}: PSNR {item['psnr']:.2f} dB -> {item['png']}" for item in report.compared]
    lines.append(f"compared {len(report.compared)} videos")
    lines += [f"skipped (no generated video): {path}" for path in report.only_real]
    lines += [f"skipped (no real video): {path}" for path in report.only_generated]
    lines += [f"skipped (several files pair as {key!r}): {', '.join(paths)}" for key, paths in report.ambiguous.items()]
    lines += [f"skipped {key}: {reason}" for key, reason in report.failed.items()]
    return "\n".join(lines)
