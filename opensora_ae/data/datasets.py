"""Video datasets: a CSV file, a folder of videos/images, or one file.

``data_path`` decides the source:

* ``*.csv``: column ``path`` (required; relative paths resolve against the CSV's folder) and optional
  ``num_frames, height, width, fps`` (a row with all four is not probed); other columns are ignored.
* a folder: every video (:data:`VIDEO_EXTS`) and image (:data:`IMAGE_EXTS`) below it, recursively
  (the Open-Sora-Plan layout ``sub_dataset/sub_sub_dataset/video.mp4``), in sorted order.
* one video or image file.

Files without metadata are probed once at construction (container metadata, threads) and the result is
cached in the dataset. Unreadable files are left out with one warning each; when more than half of the
files are unreadable, construction fails with an error naming a few of them.

An item is a dict::

    video      float C T H W in [-1, 1]
    path       str, the file read
    num_frames, height, width, fps   the source file's metadata (fps 0.0 for images)
    skipped    list of (path, reason) of files that failed while producing this item

Indexing with a :class:`SampleRequest` (what the samplers yield) reads a clip of the requested size with
a reproducible random start and crop; a plain ``int`` uses the dataset's ``num_frames`` and
``image_size``. A file that fails at read time (corrupt data, shorter than its metadata says) is
replaced by another readable file that is long enough, so batches keep their size (``skipped`` records
the failure and the loader reports it in the main process).
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from opensora_ae.data.clips import check_transform_name, load_clip
from opensora_ae.data.transforms import clip_start, frame_interval, frames_needed
from opensora_ae.data.video_io import (IMAGE_EXTS, VIDEO_EXTS, VideoInfo, VideoReadError, is_image, is_video,
                                       probe)
from opensora_ae.registry import DATASETS

logger = logging.getLogger(__name__)

META_COLUMNS = ("num_frames", "height", "width", "fps")
MAX_REPLACEMENTS = 16  # read attempts for one item before giving up on it
PROBE_THREADS = 8


class SampleRequest(NamedTuple):
    """What a sampler asks of the dataset: a clip of ``num_frames`` x ``height`` x ``width`` from ``index``.

    ``seed`` makes the random clip start and crop reproducible (None: draw fresh randomness).
    """

    index: int
    num_frames: int
    height: int
    width: int
    seed: int | None = None


def _parse_meta(row: dict[str, str]) -> VideoInfo | None:
    """Metadata from a CSV row when all four columns hold numbers; None otherwise (probe the file)."""
    try:
        values = [row.get(column) for column in META_COLUMNS]
        if any(value in (None, "") for value in values):
            return None
        num_frames, height, width = (int(float(value)) for value in values[:3])
        return VideoInfo(num_frames, float(values[3]), height, width)
    except ValueError:
        return None


def read_csv_samples(csv_path: str) -> tuple[list[str], list[VideoInfo | None]]:
    """Paths (absolute) and optional metadata of a CSV dataset; one-line error without a ``path`` column."""
    root = os.path.dirname(os.path.abspath(csv_path))
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise ValueError(f"CSV {csv_path} has no 'path' column (columns: {', '.join(columns) or 'none'}); "
                             f"add a header row with 'path' naming the video files")
        paths, metas = [], []
        for row in reader:
            if not row["path"]:
                continue
            paths.append(os.path.normpath(os.path.join(root, row["path"])))
            metas.append(_parse_meta(row))
    if not paths:
        raise ValueError(f"CSV {csv_path} lists no files")
    return paths, metas


def list_media_files(folder: str) -> list[str]:
    """Every video and image below ``folder`` (recursive, hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames)
                     if not name.startswith(".") and (is_video(name) or is_image(name)))
    if not found:
        raise ValueError(f"folder {folder} holds no videos or images (extensions: "
                         f"{' '.join(VIDEO_EXTS + IMAGE_EXTS)})")
    return found


def list_samples(data_path: str) -> tuple[list[str], list[VideoInfo | None]]:
    """Paths and known metadata for a CSV, a folder or a single file."""
    if not data_path:
        raise ValueError("dataset.data_path is not set: give a CSV, a folder of videos or a video file "
                         "(--dataset.data_path PATH)")
    data_path = os.path.expanduser(str(data_path))
    if os.path.isdir(data_path):
        paths = list_media_files(data_path)
        return paths, [None] * len(paths)
    if not os.path.exists(data_path):
        raise FileNotFoundError(f"dataset.data_path {data_path} does not exist")
    if data_path.lower().endswith(".csv"):
        return read_csv_samples(data_path)
    if is_video(data_path) or is_image(data_path):
        return [os.path.abspath(data_path)], [None]
    raise ValueError(f"dataset.data_path {data_path} is not a .csv, a folder, or a video/image file "
                     f"({' '.join(VIDEO_EXTS + IMAGE_EXTS)})")


def _probe_or_reason(path: str) -> VideoInfo | str:
    try:
        return probe(path)
    except VideoReadError as err:
        return str(err)


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(value) for value in image_size)
    return height, width


@DATASETS.register_module(name=["video_text", "video"])
class VideoTextDataset(Dataset):
    """Clips from a CSV / folder / single file (see the module docstring for sources and items).

    Args:
        data_path: CSV, folder or video/image file.
        num_frames: frames per clip when no bucket config decides (``SampleRequest`` overrides it).
        image_size: ``(height, width)`` or an int, when no bucket config decides.
        sample_rate: frame interval of a clip (1 = consecutive frames).
        fps_max: when set, the interval is ``ceil(fps / fps_max)`` for sources faster than ``fps_max``
            (takes precedence over ``sample_rate``).
        transform_name: ``"resize_crop"`` (resize to cover while decoding, then crop) or
            ``"resize_crop_torch"`` (full-size RGB, then torch resize; see :mod:`opensora_ae.data.clips`).
        training: random clip start and random crop (True) or first frames and centre crop (False).
    """

    def __init__(self, data_path: str, num_frames: int = 17, image_size: int | Sequence[int] = (256, 256),
                 sample_rate: int = 1, fps_max: float | None = None, transform_name: str = "resize_crop",
                 training: bool = True):
        check_transform_name(transform_name)
        self.transform_name = transform_name
        if num_frames < 1 or sample_rate < 1:
            raise ValueError(f"dataset.num_frames and dataset.sample_rate must be >= 1, got {num_frames}, {sample_rate}")
        self.data_path = str(data_path)
        self.num_frames = int(num_frames)
        self.image_size = _as_size(image_size)
        self.sample_rate = int(sample_rate)
        self.fps_max = fps_max
        self.training = training
        paths, metas = list_samples(self.data_path)
        self.paths = paths
        self.infos, self.unreadable = self._fill_metadata(paths, metas)
        self._check_unreadable_share()

    def _fill_metadata(self, paths: list[str], metas: list[VideoInfo | None]
                       ) -> tuple[list[VideoInfo | None], dict[str, str]]:
        missing = [i for i, meta in enumerate(metas) if meta is None]
        infos = list(metas)
        unreadable: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=min(PROBE_THREADS, max(1, len(missing)))) as pool:
            results = pool.map(_probe_or_reason, [paths[i] for i in missing])
            for i, result in zip(missing, results):
                if isinstance(result, VideoInfo):
                    infos[i] = result
                else:
                    unreadable[paths[i]] = result
                    logger.warning("skipping unreadable file: %s", result)
        return infos, unreadable

    def _check_unreadable_share(self) -> None:
        if len(self.unreadable) * 2 > len(self.paths):
            raise unreadable_error(list(self.unreadable), len(self.paths), self.data_path)

    def __len__(self) -> int:
        return len(self.paths)

    def interval(self, index: int) -> int:
        """Frame interval for sample ``index`` (``sample_rate``, or derived from its fps and ``fps_max``)."""
        info = self.infos[index]
        return frame_interval(info.fps if info else 0.0, self.sample_rate, self.fps_max)

    def can_provide(self, index: int, num_frames: int) -> bool:
        """Whether sample ``index`` is readable (as far as known) and long enough for ``num_frames``."""
        info = self.infos[index]
        if info is None:
            return False
        if info.num_frames == 1:
            return num_frames == 1
        return frames_needed(num_frames, self.interval(index)) <= info.num_frames

    def __getitem__(self, request: int | SampleRequest) -> dict[str, Any] | None:
        if not isinstance(request, SampleRequest):
            request = SampleRequest(int(request), self.num_frames, *self.image_size)
        rng = np.random.default_rng(request.seed)
        skipped: list[tuple[str, str]] = []
        index = request.index
        for _ in range(MAX_REPLACEMENTS):
            try:
                item = self._load(index, request, rng)
                item["skipped"] = skipped
                return item
            except VideoReadError as err:
                skipped.append((self.paths[index], str(err)))
                self.infos[index] = None  # this worker will not pick it again as a replacement
            index = self._replacement(request, rng)
            if index is None:
                break
        return {"video": None, "skipped": skipped}

    def load_sample(self, request: SampleRequest) -> dict[str, Any]:
        """Read exactly ``request`` (no replacement by another file, for inference); raises VideoReadError."""
        return self._load(request.index, request, np.random.default_rng(request.seed))

    def _read(self, path: str, num_frames: int, interval: int, start: int, size: tuple[int, int],
              rng: np.random.Generator | None) -> torch.Tensor:
        """One clip as float ``C T H W`` in [-1, 1] (``transform_name`` decides where it is resized)."""
        return load_clip(path, num_frames, interval, start, size, rng, self.transform_name)

    def _replacement(self, request: SampleRequest, rng: np.random.Generator) -> int | None:
        candidates = rng.permutation(len(self))[:64]
        for index in candidates:
            if self.can_provide(int(index), request.num_frames):
                return int(index)
        return None

    def _load(self, index: int, request: SampleRequest, rng: np.random.Generator) -> dict[str, Any]:
        path, info = self.paths[index], self.infos[index]
        if info is None:
            raise VideoReadError(f"unreadable file {path}")
        interval = self.interval(index)
        if info.num_frames == 1 and request.num_frames > 1:
            raise VideoReadError(f"{path} is a single frame; a clip of {request.num_frames} frames was asked")
        if not self.can_provide(index, request.num_frames):
            raise VideoReadError(f"video {path} is too short: {info.num_frames} frames, a clip of "
                                 f"{request.num_frames} every {interval} needs {frames_needed(request.num_frames, interval)}")
        start = clip_start(info.num_frames, request.num_frames, interval, rng if self.training else None)
        video = self._read(path, request.num_frames, interval, start, (request.height, request.width),
                           rng if self.training else None)
        return {"video": video, "path": path, "num_frames": info.num_frames, "height": info.height,
                "width": info.width, "fps": info.fps}


def unreadable_error(paths: list[str], total: int, data_path: str) -> VideoReadError:
    """The error raised when more than half of a dataset's files cannot be read."""
    examples = ", ".join(paths[:3])
    return VideoReadError(f"{len(paths)} of {total} files in {data_path} are unreadable (more than half), "
                          f"e.g. {examples}; check the files or the data_path")


def collate_samples(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack items into a batch: ``video`` B C T H W, per-sample lists/tensors, and the skip record.

    Items whose ``video`` is None (every read attempt failed) are dropped; ``skipped`` lists
    ``(path, reason)`` of every failure while building the batch and ``num_skipped`` counts them.
    When no item survives, ``video`` is None.
    """
    skipped = [entry for item in items if item for entry in item.get("skipped", [])]
    good = [item for item in items if item and item.get("video") is not None]
    batch: dict[str, Any] = {"skipped": skipped, "num_skipped": len(skipped)}
    if not good:
        batch["video"] = None
        return batch
    batch["video"] = torch.stack([item["video"] for item in good])
    batch["path"] = [item["path"] for item in good]
    for key in ("num_frames", "height", "width"):
        batch[key] = torch.tensor([item[key] for item in good], dtype=torch.long)
    batch["fps"] = torch.tensor([item["fps"] for item in good], dtype=torch.float32)
    return batch
