"""What every inference job shares: the model built for inference, the dataset, and this rank's share of it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch

from opensora_ae.data.datasets import SampleRequest, VideoTextDataset
from opensora_ae.data.video_io import VideoReadError
from opensora_ae.models import VideoAutoencoder, build_model
from opensora_ae.registry import DATASETS, build
from opensora_ae.train.parallel import DistContext


def build_inference_model(model_cfg: Mapping[str, Any], device: torch.device, dtype: torch.dtype) -> VideoAutoencoder:
    """Build the model in eval mode on ``device``; weights are required unless ``random_init=True``."""
    cfg = dict(model_cfg)
    random_init = bool(cfg.pop("random_init", False))
    if not cfg.get("from_pretrained") and not random_init:
        raise ValueError(
            "no weights given: set --model.from_pretrained PATH (a checkpoint file or folder), "
            "or --model.random_init True for a randomly initialised model (tests, benchmarks)"
        )
    return build_model(cfg).to(device=device, dtype=dtype).eval()


def build_inference_dataset(cfg: Mapping[str, Any]) -> VideoTextDataset:
    """The config's dataset in inference mode (first frames, centre crop).

    Clip size comes from ``num_frames`` and ``resolution`` (or ``height``/``width``) at the top level of the
    config when given, else from the dataset dict.
    """
    dataset_cfg = dict(cfg["dataset"])
    dataset_cfg.setdefault("type", "video_text")
    dataset_cfg["training"] = False
    if cfg.get("num_frames"):
        dataset_cfg["num_frames"] = cfg["num_frames"]
    if cfg.get("height") and cfg.get("width"):
        dataset_cfg["image_size"] = (cfg["height"], cfg["width"])
    elif cfg.get("resolution"):
        dataset_cfg["image_size"] = cfg["resolution"]
    for key in ("sample_rate", "fps_max"):
        if cfg.get(key):
            dataset_cfg[key] = cfg[key]
    return build(dataset_cfg, DATASETS)


def relative_name(dataset: VideoTextDataset, path: str) -> str:
    """``path`` relative to the dataset root (folder, or the CSV's folder), without extension.

    Outputs keep the input's sub-folders this way; files outside the root keep only their file name.
    """
    root = dataset.data_path
    if os.path.isfile(root):
        root = os.path.dirname(os.path.abspath(root))
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if relative.startswith(".."):
        relative = os.path.basename(path)
    return os.path.splitext(relative)[0]


@dataclass
class Clip:
    """One preprocessed input: ``video`` float ``C T H W`` in [-1, 1]."""

    index: int
    path: str
    name: str
    video: torch.Tensor
    fps: float


def iter_clips(dataset: VideoTextDataset, ctx: DistContext, skipped: list[tuple[str, str]]) -> Iterator[Clip]:
    """This rank's clips (every ``world_size``-th file), reading each file once; failures go to ``skipped``."""
    skipped.extend(sorted(dataset.unreadable.items()))
    for index in range(ctx.rank, len(dataset), ctx.world_size):
        path = dataset.paths[index]
        if path in dataset.unreadable:
            continue
        request = SampleRequest(index, dataset.num_frames, *dataset.image_size, seed=0)
        try:
            item = dataset.load_sample(request)
        except VideoReadError as err:
            skipped.append((path, str(err)))
            continue
        fps = item["fps"] / dataset.interval(index) if item["fps"] > 0 else 24.0
        yield Clip(index, path, relative_name(dataset, path), item["video"], fps)
