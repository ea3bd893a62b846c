"""What every inference job shares: the model built for inference, the dataset, and this rank's share of it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import torch
from tqdm import tqdm

from opensora_ae.data.datasets import SampleRequest, VideoTextDataset
from opensora_ae.data.video_io import ClipTooShortError, VideoReadError
from opensora_ae.models import VideoAutoencoder, build_model
from opensora_ae.registry import DATASETS, build
from opensora_ae.train.parallel import DistContext

logger = logging.getLogger(__name__)

DEFAULT_FPS = 24.0  # for images and files without a frame rate

# Top-level config keys every inference script accepts on the command line even when the config omits them.
CLIP_KEYS = ("dtype", "batch_size", "device", "num_frames", "resolution", "height", "width", "sample_rate", "fps_max")


def build_inference_model(model_cfg: Mapping[str, Any], device: torch.device, dtype: torch.dtype,
                          user_keys: Iterable[str] = ()) -> VideoAutoencoder:
    """Build the model in eval mode on ``device``; weights are required unless ``random_init=True``.

    ``user_keys``: the dotted keys set on the command line (``cfg.cli_model_keys``), checked against a checkpoint that
    describes its own architecture (``build_model``); ``compile=True`` compiles its blocks
    (``VideoAutoencoder.compile_blocks``).
    """
    cfg = dict(model_cfg)
    random_init = bool(cfg.pop("random_init", False))
    compile_blocks = bool(cfg.pop("compile", False))
    if not cfg.get("from_pretrained") and not random_init:
        raise ValueError(
            "no weights given: set --model.from_pretrained PATH (a checkpoint file or folder), "
            "or --model.random_init True for a randomly initialised model (tests, benchmarks)"
        )
    model = build_model(cfg, user_keys=user_keys).to(device=device, dtype=dtype).eval()
    if compile_blocks:
        model.compile_blocks()
    return model


def build_inference_dataset(cfg: Mapping[str, Any], exclude: Iterable[str | os.PathLike] = ()) -> VideoTextDataset:
    """The config's dataset in inference mode (first frames, centre crop), without files below ``exclude``.

    Clip size comes from ``num_frames`` and ``resolution`` (or ``height``/``width``) at the top level of the
    config when given, else from the dataset dict. ``exclude`` names the run's output folders: outputs written
    inside the input folder are never read back as inputs.
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
    dataset = build(dataset_cfg, DATASETS)
    drop_paths_below(dataset, exclude)
    return dataset


def _is_below(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def drop_paths_below(dataset: VideoTextDataset, folders: Iterable[str | os.PathLike]) -> None:
    """Remove from ``dataset`` every listed file inside one of ``folders`` (paths compared fully resolved)."""
    resolved = [os.path.realpath(folder) for folder in folders]
    if not resolved:
        return
    keep = [i for i, path in enumerate(dataset.paths)
            if not any(_is_below(os.path.realpath(path), folder) for folder in resolved)]
    if len(keep) == len(dataset.paths):
        return
    logger.info("not reading %d files inside the output folder(s) %s as inputs", len(dataset.paths) - len(keep),
                ", ".join(resolved))
    dataset.keep_samples(keep)
    if not dataset.paths:
        raise ValueError(f"dataset.data_path {dataset.data_path}: every file in it lies inside the output folder(s) "
                         f"{', '.join(resolved)}; nothing to read")


def dataset_root(dataset: VideoTextDataset) -> str:
    """The folder that output names are relative to.

    ``data_path`` when it is a folder; else the folder of the CSV (or single file) when it holds every listed
    file; else the deepest folder common to all listed files (a CSV listing files elsewhere).
    """
    data_path = os.path.abspath(dataset.data_path)
    if os.path.isdir(data_path):
        return data_path
    folder = os.path.dirname(data_path)
    paths = [os.path.abspath(path) for path in dataset.paths]
    if all(os.path.commonpath([folder, path]) == folder for path in paths):
        return folder
    return os.path.commonpath([os.path.dirname(path) for path in paths])


def output_names(dataset: VideoTextDataset) -> list[str]:
    """Per input, its path relative to :func:`dataset_root` without extension (``cats/a`` for ``ROOT/cats/a.mp4``):
    outputs keep the input's sub-folders."""
    root = dataset_root(dataset)
    return [os.path.splitext(os.path.relpath(os.path.abspath(path), root))[0] for path in dataset.paths]


def name_collisions(names: list[str], paths: list[str]) -> dict[int, str]:
    """Index -> reason for inputs whose output name an earlier input already has (``a.mp4`` and ``a.avi``)."""
    first: dict[str, int] = {}
    collisions = {}
    for index, name in enumerate(names):
        if name in first:
            collisions[index] = f"same output name {name!r} as {paths[first[name]]}; rename one of them"
        else:
            first[name] = index
    return collisions


@dataclass
class Clip:
    """One preprocessed input: ``video`` float ``C T H W`` in [-1, 1], on the uint8 grid (see ``iter_clips``)."""

    index: int
    path: str
    name: str
    video: torch.Tensor
    fps: float


def rank_share(dataset: VideoTextDataset, ctx: DistContext) -> list[int]:
    """The dataset indices this rank processes: every ``world_size``-th file, starting at ``rank``."""
    return list(range(ctx.rank, len(dataset), ctx.world_size))


def snap_to_uint8_grid(video: torch.Tensor) -> torch.Tensor:
    """Round ``[-1, 1]`` values to the 256 levels a uint8 video can hold.

    The resize of the preprocessing gives values between those levels; snapping makes the clip the model sees
    exactly the clip written as ``orig`` (losslessly at ``crf=0``), so metrics compare like with like.
    """
    return ((video.clamp(-1, 1) + 1.0) * 127.5).round() / 127.5 - 1.0


def iter_clips(dataset: VideoTextDataset, ctx: DistContext, skipped: list[tuple[str, str]], desc: str = "clips",
               too_short: list[tuple[str, str]] | None = None) -> Iterator[Clip]:
    """This rank's clips, each file read once, with a progress bar on the main rank.

    Files found unreadable when the dataset was built or when read here, and files whose output name an earlier
    file already has, are appended to ``skipped`` as ``(path, reason)``; readable files too short (or too small)
    for the requested clip go to ``too_short`` when given, else to ``skipped`` too. Each rank only reports files
    of its own share, so merged reports list each file once.
    """
    names = output_names(dataset)
    collisions = name_collisions(names, dataset.paths)
    for index in tqdm(rank_share(dataset, ctx), desc=desc, unit="video", disable=not ctx.is_main):
        path = dataset.paths[index]
        if path in dataset.unreadable or index in collisions:
            skipped.append((path, dataset.unreadable.get(path) or collisions[index]))
            continue
        request = SampleRequest(index, dataset.num_frames, *dataset.image_size, seed=0)
        try:
            item = dataset.load_sample(request)
        except VideoReadError as err:
            readable_but_short = isinstance(err, ClipTooShortError) or (
                dataset.infos[index] is not None and not dataset.can_provide(index, dataset.num_frames))
            (too_short if readable_but_short and too_short is not None else skipped).append((path, str(err)))
            continue
        fps = item["fps"] / dataset.interval(index) if item["fps"] > 0 else DEFAULT_FPS
        yield Clip(index, path, names[index], snap_to_uint8_grid(item["video"]), fps)
