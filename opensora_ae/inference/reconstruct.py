"""Reconstruct a dataset with any autoencoder and write the videos for evaluation.

Output layouts (``name`` = the input's path relative to the dataset root, without extension):

* ``v2`` (Open-Sora 2.0): ``D/orig/<name>_orig.mp4``, ``D/recn/<name>_recn.mp4`` and, for models that offer it
  (the Open-Sora 1.2 pipeline), ``D/spatial/<name>_spatial.mp4``.
* ``v1.2`` (Open-Sora 1.2): sibling folders ``D_ori/<name>_ori.mp4``, ``D_rec/<name>_rec.mp4``,
  ``D_spatial/<name>_spatial.mp4``.
* ``--save-latents``: ``D/latents/<name>.safetensors`` with the latent and the ``num_frames``/``height``/``width``
  needed to decode it.

``orig`` is the exact preprocessed clip the model saw (resized, cropped and rounded to uint8 levels before the
model runs). Videos are written with libx264 at ``crf`` (default 10, near-transparent, yuv420p); ``crf=0``
writes lossless libx264rgb, so metric differences measure the model only. Outputs are written through a
temporary file and ``recn`` last, so a clip whose ``recn`` exists is complete and is kept unless ``overwrite``;
a failed write (disk full) removes the temporary file and stops with one line naming the file. Output folders
inside the input folder are never read back as inputs, and a run that writes no video (and finds none done
before) fails with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import save_file

from opensora_ae.data.transforms import to_uint8_frames
from opensora_ae.data.video_io import write_video
from opensora_ae.inference.runner import Clip, build_inference_dataset, build_inference_model, iter_clips
from opensora_ae.models import VideoAutoencoder
from opensora_ae.train.parallel import DistContext, all_gather_objects, resolve_dtype
from opensora_ae.write_errors import WRITE_ERRORS, write_failed

# output kind -> (folder suffix, file suffix) per layout
LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "v2": {"orig": ("/orig", "_orig"), "recn": ("/recn", "_recn"), "spatial": ("/spatial", "_spatial")},
    "v1.2": {"orig": ("_ori", "_ori"), "recn": ("_rec", "_rec"), "spatial": ("_spatial", "_spatial")},
}


def check_layout(layout: str) -> None:
    """One-line error for a ``--layout`` that is not ``v2`` or ``v1.2``."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r} is unknown; use one of {sorted(LAYOUTS)}")


def output_path(save_dir: str | Path, layout: str, kind: str, name: str) -> Path:
    """Where the ``kind`` video ("orig", "recn", "spatial") of input ``name`` goes."""
    check_layout(layout)
    folder_suffix, file_suffix = LAYOUTS[layout][kind]
    return Path(f"{str(save_dir).rstrip('/')}{folder_suffix}") / f"{name}{file_suffix}.mp4"


def output_folders(save_dir: str | Path, layout: str) -> list[Path]:
    """Every folder a run writes into: ``save_dir`` and, for ``v1.2``, its ``_ori``/``_rec``/``_spatial``
    siblings."""
    return [Path(save_dir), *(output_path(save_dir, layout, kind, "x").parent for kind in LAYOUTS[layout])]


class NoVideoWrittenError(ValueError):
    """A reconstruction run that wrote no video and found none written before."""


@dataclass
class ReconstructionReport:
    """What a reconstruction run did on this rank (``gather`` merges ranks)."""

    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unreadable (or a clashing output name)
    too_short: list[tuple[str, str]] = field(default_factory=list)  # readable, but too short for the clip

    def gather(self) -> "ReconstructionReport":
        merged = ReconstructionReport()
        for part in all_gather_objects(self):
            merged.written += part.written
            merged.existing += part.existing
            merged.skipped += part.skipped
            merged.too_short += part.too_short
        return merged


def latent_path(save_dir: str | Path, name: str) -> Path:
    """Where ``--save-latents`` puts the latent of input ``name``."""
    return Path(save_dir) / "latents" / f"{name}.safetensors"


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a hidden temporary file in the same folder, then rename: an interrupted run never leaves a
    truncated file under the final name (which would count as done on the next run)."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(partial)
        os.replace(partial, path)
    except WRITE_ERRORS as err:
        partial.unlink(missing_ok=True)
        raise write_failed(err, path, "its temporary file removed, earlier outputs kept; free space and rerun "
                                      "(finished clips are kept)") from None


def _write_outputs(clip: Clip, outputs: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]) -> None:
    """Write latents, then ``orig``/``spatial``, and ``recn`` last: its presence marks the clip as done."""
    save_dir, layout, crf = cfg["save_dir"], cfg.get("layout", "v2"), int(cfg.get("crf", 10))
    if cfg.get("save_latents"):
        _, num_frames, height, width = clip.video.shape
        metadata = {"num_frames": str(num_frames), "height": str(height), "width": str(width),
                    "fps": str(clip.fps), "source": clip.path}
        tensors = {"latent": outputs["latent"].float().contiguous().cpu()}
        _write_atomically(latent_path(save_dir, clip.name), lambda path: save_file(tensors, str(path), metadata))
    videos = {"orig": clip.video, **{kind: outputs[kind] for kind in ("spatial", "recn") if kind in outputs}}
    for kind, video in videos.items():
        frames = to_uint8_frames(video)
        _write_atomically(output_path(save_dir, layout, kind, clip.name),
                          lambda path: write_video(path, frames, clip.fps, lossless=crf == 0, crf=crf))


def _is_done(clip: Clip, cfg: Mapping[str, Any]) -> bool:
    """Whether an earlier run already wrote this clip's outputs (the latent too when ``save_latents``)."""
    if not output_path(cfg["save_dir"], cfg.get("layout", "v2"), "recn", clip.name).exists():
        return False
    return not cfg.get("save_latents") or latent_path(cfg["save_dir"], clip.name).exists()


def _reconstruct_batch(model: VideoAutoencoder, clips: list[Clip], ctx: DistContext, dtype: torch.dtype
                       ) -> list[dict[str, torch.Tensor]]:
    """Run ``model.reconstruct`` on the stacked clips; per clip, every output as float32 on the CPU."""
    x = torch.stack([clip.video for clip in clips]).to(ctx.device, dtype)
    with torch.inference_mode():
        outputs = model.reconstruct(x)
    return [{kind: value[i].float().cpu() for kind, value in outputs.items()} for i in range(len(clips))]


def reconstruct_dataset(cfg: Mapping[str, Any], ctx: DistContext) -> ReconstructionReport:
    """Reconstruct every clip of ``cfg.dataset`` in this rank's share and write the outputs.

    Config keys: ``model`` (+ ``from_pretrained`` or ``random_init``), ``dataset``, ``num_frames``,
    ``resolution`` or ``height``/``width``, ``sample_rate``, ``fps_max``, ``dtype``, ``batch_size``, ``save_dir``,
    ``layout`` (``v2``/``v1.2``), ``crf`` (0 = lossless), ``save_latents``, ``overwrite``. Returns the report
    merged over ranks.
    """
    check_layout(cfg.get("layout", "v2"))
    if not 0 <= int(cfg.get("crf", 10)) <= 51:
        raise ValueError(f"--crf {cfg['crf']} is out of range: libx264 takes 0 (lossless) to 51")
    dtype = resolve_dtype(cfg.get("dtype", "fp32"))
    model = build_inference_model(cfg["model"], ctx.device, dtype, cfg.get("cli_model_keys", ()))
    dataset = build_inference_dataset(cfg, exclude=output_folders(cfg["save_dir"], cfg.get("layout", "v2")))
    batch_size = int(cfg.get("batch_size", 1))
    if batch_size < 1:
        raise ValueError(f"config key batch_size={batch_size}: must be >= 1")
    report = ReconstructionReport()
    pending: list[Clip] = []
    for clip in iter_clips(dataset, ctx, report.skipped, desc="reconstruct", too_short=report.too_short):
        if not cfg.get("overwrite") and _is_done(clip, cfg):
            report.existing.append(clip.path)
            continue
        pending.append(clip)
        if len(pending) == batch_size:
            _flush(model, pending, cfg, ctx, dtype, report)
    if pending:
        _flush(model, pending, cfg, ctx, dtype, report)
    report = report.gather() if ctx.distributed else report
    if not report.written and not report.existing:
        if ctx.is_main:
            print(format_report(report, cfg["save_dir"]), flush=True)
        raise NoVideoWrittenError(nothing_written_reason(report, cfg["save_dir"]))
    return report


def nothing_written_reason(report: ReconstructionReport, save_dir: str) -> str:
    """One line: why a run wrote no video into ``save_dir``."""
    counts = f"{len(report.too_short)} too short or too small for the requested clip, {len(report.skipped)} unreadable"
    first = (report.too_short or report.skipped)[:1]
    example = f" (first: {first[0][1]})" if first else ""
    return (f"no video written into {save_dir}: every input was skipped - {counts}{example}; lower --num_frames or "
            f"--resolution, or check the files listed above")


def _flush(model: VideoAutoencoder, pending: list[Clip], cfg: Mapping[str, Any], ctx: DistContext, dtype: torch.dtype,
           report: ReconstructionReport) -> None:
    for clip, outputs in zip(pending, _reconstruct_batch(model, pending, ctx, dtype)):
        _write_outputs(clip, outputs, cfg)
        report.written.append(clip.path)
    pending.clear()


def format_report(report: ReconstructionReport, save_dir: str) -> str:
    """The end-of-run summary: counts, and every skipped input with its reason."""
    lines = [f"reconstructed {len(report.written)} videos into {save_dir}"]
    if report.existing:
        lines.append(f"kept {len(report.existing)} existing outputs (pass --overwrite to redo them)")
    if report.too_short:
        lines.append(f"skipped {len(report.too_short)} inputs too short or too small for the requested clip:")
        lines += [f"  {path}: {reason}" for path, reason in report.too_short]
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} unreadable inputs:")
        lines += [f"  {path}: {reason}" for path, reason in report.skipped]
    return "\n".join(lines)
