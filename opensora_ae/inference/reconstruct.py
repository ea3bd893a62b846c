"""Reconstruct a dataset with any autoencoder and write the videos for evaluation.

Output layouts (``name`` = the input's path relative to the dataset root, without extension):

* ``v2`` (Open-Sora 2.0): ``D/orig/<name>_orig.mp4``, ``D/recn/<name>_recn.mp4`` and, for models that offer it
  (the Open-Sora 1.2 pipeline), ``D/spatial/<name>_spatial.mp4``.
* ``v1.2`` (Open-Sora 1.2): sibling folders ``D_ori/<name>_ori.mp4``, ``D_rec/<name>_rec.mp4``,
  ``D_spatial/<name>_spatial.mp4``.
* ``--save-latents``: ``D/latents/<name>.safetensors`` with the latent and the ``num_frames``/``height``/``width``
  needed to decode it.

``orig`` is the exact preprocessed clip the model saw. Videos are written with libx264 at ``crf`` (default 10,
near-transparent); ``crf=0`` writes lossless libx264rgb, so metric differences measure the model only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from opensora_ae.data.transforms import to_uint8_frames
from opensora_ae.data.video_io import write_video
from opensora_ae.inference.runner import Clip, build_inference_dataset, build_inference_model, iter_clips
from opensora_ae.models import VideoAutoencoder
from opensora_ae.train.parallel import DistContext, all_gather_objects, autocast, resolve_dtype

logger = logging.getLogger(__name__)

# output kind -> (folder suffix, file suffix) per layout
LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "v2": {"orig": ("/orig", "_orig"), "recn": ("/recn", "_recn"), "spatial": ("/spatial", "_spatial")},
    "v1.2": {"orig": ("_ori", "_ori"), "recn": ("_rec", "_rec"), "spatial": ("_spatial", "_spatial")},
}


def output_path(save_dir: str | Path, layout: str, kind: str, name: str) -> Path:
    """Where the ``kind`` video ("orig", "recn", "spatial") of input ``name`` goes."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r} is unknown; use one of {sorted(LAYOUTS)}")
    folder_suffix, file_suffix = LAYOUTS[layout][kind]
    return Path(f"{str(save_dir).rstrip('/')}{folder_suffix}") / f"{name}{file_suffix}.mp4"


@dataclass
class ReconstructionReport:
    """What a reconstruction run did on this rank (``gather`` merges ranks)."""

    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def gather(self) -> "ReconstructionReport":
        merged = ReconstructionReport()
        for part in all_gather_objects(self):
            merged.written += part.written
            merged.existing += part.existing
            merged.skipped += part.skipped
        return merged


def _write_outputs(clip: Clip, outputs: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]) -> None:
    save_dir, layout, crf = cfg["save_dir"], cfg.get("layout", "v2"), int(cfg.get("crf", 10))
    videos = {"orig": clip.video, **{kind: outputs[kind] for kind in ("recn", "spatial") if kind in outputs}}
    for kind, video in videos.items():
        path = output_path(save_dir, layout, kind, clip.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, to_uint8_frames(video), clip.fps, lossless=crf == 0, crf=crf)
    if cfg.get("save_latents"):
        latent_path = Path(save_dir) / "latents" / f"{clip.name}.safetensors"
        latent_path.parent.mkdir(parents=True, exist_ok=True)
        _, num_frames, height, width = clip.video.shape
        metadata = {"num_frames": str(num_frames), "height": str(height), "width": str(width), "source": clip.path}
        save_file({"latent": outputs["latent"].float().contiguous().cpu()}, str(latent_path), metadata=metadata)


def _reconstruct_batch(model: VideoAutoencoder, clips: list[Clip], ctx: DistContext, dtype: torch.dtype
                       ) -> list[dict[str, torch.Tensor]]:
    x = torch.stack([clip.video for clip in clips]).to(ctx.device, dtype)
    with torch.inference_mode(), autocast(ctx.device, dtype):
        outputs = model.reconstruct(x)
    return [{kind: value[i].float().cpu() for kind, value in outputs.items()} for i in range(len(clips))]


def reconstruct_dataset(cfg: Mapping[str, Any], ctx: DistContext) -> ReconstructionReport:
    """Reconstruct every clip of ``cfg.dataset`` on this rank's share and write the outputs.

    Config keys: ``model`` (+ ``from_pretrained`` or ``random_init``), ``dataset``, ``num_frames``,
    ``resolution`` or ``height``/``width``, ``dtype``, ``batch_size``, ``save_dir``, ``layout``, ``crf``,
    ``save_latents``, ``overwrite``.
    """
    dtype = resolve_dtype(cfg.get("dtype", "fp32"))
    model = build_inference_model(cfg["model"], ctx.device, torch.float32 if dtype == torch.float32 else dtype)
    dataset = build_inference_dataset(cfg)
    report = ReconstructionReport()
    batch_size = int(cfg.get("batch_size", 1))
    pending: list[Clip] = []
    progress = tqdm(total=len(range(ctx.rank, len(dataset), ctx.world_size)), disable=not ctx.is_main, desc="reconstruct")
    for clip in iter_clips(dataset, ctx, report.skipped):
        progress.update(1)
        if not cfg.get("overwrite") and output_path(cfg["save_dir"], cfg.get("layout", "v2"), "recn", clip.name).exists():
            report.existing.append(clip.path)
            continue
        pending.append(clip)
        if len(pending) == batch_size:
            _flush(model, pending, cfg, ctx, dtype, report)
    if pending:
        _flush(model, pending, cfg, ctx, dtype, report)
    progress.close()
    return report.gather() if ctx.distributed else report


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
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} unreadable inputs:")
        lines += [f"  {path}: {reason}" for path, reason in report.skipped]
    return "\n".join(lines)
