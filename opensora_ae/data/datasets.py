"""Video datasets: a CSV file, a folder of videos/images, or one file.

``data_path`` decides the source:

* ``*.csv`` (UTF-8, BOM allowed): column ``path`` (required; relative paths resolve against the CSV's folder)
  and optional ``num_frames, height, width, fps`` (a row with all four valid is not probed; invalid values
  such as ``-5``, ``0``, ``nan``, ``inf`` are probed, with one warning per CSV); other columns are ignored.
* a folder: every video (:data:`VIDEO_EXTS`) and image (:data:`IMAGE_EXTS`) below it, recursively
  (the Open-Sora-Plan layout ``sub_dataset/sub_sub_dataset/video.mp4``), in sorted order.
* one video or image file.

Paths and metadata are held as columns (:mod:`opensora_ae.data.manifest`: one bytes blob, numpy arrays), so
a million-row manifest costs tens of MiB and DataLoader workers share it copy-on-write. Files without
metadata are probed once at construction by a process pool (:mod:`opensora_ae.data.probing`); a CSV's probe
results are cached next to it for the next run. Unreadable files are left out (the first
:data:`UNREADABLE_WARNINGS` with one warning each, then one summary line); when more than half of the files are
unreadable, construction fails with an error naming a few of them. Folder listings follow symlinks but list
each real file once and always terminate.

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

import itertools
import logging
import os
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from opensora_ae.data.clips import CACHEABLE_TRANSFORMS, DecodedVideoCache, check_transform_name, cut_clip, load_clip
from opensora_ae.data.manifest import InfoColumns, PathTable, read_csv_manifest
from opensora_ae.data.probing import csv_key, load_probe_cache, probe_files, save_probe_cache
from opensora_ae.data.transforms import clip_start, frame_interval, frames_needed
from opensora_ae.data.video_io import IMAGE_EXTS, VIDEO_EXTS, VideoReadError, is_image, is_video
from opensora_ae.registry import DATASETS

logger = logging.getLogger(__name__)

MAX_REPLACEMENTS = 16  # read attempts for one item before giving up on it
REPLACEMENT_DRAWS = 64  # random candidates checked for one replacement
UNREADABLE_WARNINGS = 20  # unreadable files warned about one by one; the rest in one summary line
VIDEO_DTYPES = ("float32", "uint8")  # dataset.video_dtype


class SampleRequest(NamedTuple):
    """What a sampler asks of the dataset: a clip of ``num_frames`` x ``height`` x ``width`` from ``index``.

    ``seed`` makes the random clip start and crop reproducible (None: draw fresh randomness).
    """

    index: int
    num_frames: int
    height: int
    width: int
    seed: int | None = None


def list_media_files(folder: str) -> list[str]:
    """Every video and image below ``folder`` (recursive, hidden entries skipped), sorted.

    Symlinks are followed, but each real directory is entered once and each real file listed once (the
    first path to it in sorted order), so symlink loops and links to siblings neither repeat nor hang.
    """
    found: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        if _identity(dirpath) in seen_dirs:  # reached again through another link
            dirnames[:] = []
            continue
        seen_dirs.add(_identity(dirpath))
        dirnames[:] = [name for name in sorted(dirnames)
                       if not name.startswith(".") and _identity(os.path.join(dirpath, name)) not in seen_dirs]
        for name in sorted(filenames):
            if name.startswith(".") or not (is_video(name) or is_image(name)):
                continue
            path = os.path.join(dirpath, name)
            identity = _identity(path)
            if identity is None or identity not in seen_files:
                found.append(path)  # a broken link is listed: probing reports it as unreadable
                seen_files.add(identity)
    if not found:
        raise ValueError(f"folder {folder} holds no videos or images (extensions: "
                         f"{' '.join(VIDEO_EXTS + IMAGE_EXTS)})")
    return found


def _identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of what ``path`` points to, None for a broken link."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class Sources(NamedTuple):
    """What :func:`list_samples` found: paths, known metadata, rows to probe, and the CSV (for its cache)."""

    paths: PathTable
    infos: InfoColumns
    to_probe: np.ndarray
    csv_path: str | None


def list_samples(data_path: str) -> Sources:
    """Paths and known metadata for a CSV, a folder or a single file."""
    if not data_path:
        raise ValueError("dataset.data_path is not set: give a CSV, a folder of videos or a video file "
                         "(--dataset.data_path PATH)")
    data_path = os.path.expanduser(str(data_path))
    if os.path.isdir(data_path):
        return _unprobed(list_media_files(data_path))
    if not os.path.exists(data_path):
        raise FileNotFoundError(f"dataset.data_path {data_path} does not exist")
    if data_path.lower().endswith(".csv"):
        return Sources(*read_csv_manifest(data_path), csv_path=data_path)
    if is_video(data_path) or is_image(data_path):
        return _unprobed([os.path.abspath(data_path)])
    raise ValueError(f"dataset.data_path {data_path} is not a .csv, a folder, or a video/image file "
                     f"({' '.join(VIDEO_EXTS + IMAGE_EXTS)})")


def _unprobed(paths: list[str]) -> Sources:
    return Sources(PathTable.from_strings(paths), InfoColumns.empty(len(paths)), np.arange(len(paths)), None)


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
        transform_name: ``"resize_crop"`` (resize to cover while decoding, then crop),
            ``"resize_crop_torch"`` (full-size RGB, then torch resize) or ``"random_crop"`` (a window at the
            source's scale); see :mod:`opensora_ae.data.clips`.
        training: random clip start and random crop (True) or first frames and centre crop (False).
        probe_workers: processes probing files without metadata (None: ``min(8, usable cores)``; 1: in this
            process).
        video_dtype: ``"float32"`` (``video`` in [-1, 1]) or ``"uint8"`` (the same clip as 0-255 values, a quarter
            of the bytes through a DataLoader worker's shared memory; the training loop maps it to [-1, 1] on its
            device with :func:`~opensora_ae.data.transforms.uint8_to_model_range`, bit-identical).
        decoded_cache_mib: keep up to this many MiB of whole decoded videos in memory per process (each
            DataLoader worker has its own) and cut later clips of them from memory, the same clips; for datasets
            that fit in RAM, where decoding would be most of a step. 0 (default) decodes every clip from its file.
            Needs ``transform_name`` ``"random_crop"`` or ``"resize_crop_torch"``.
    """

    def __init__(self, data_path: str, num_frames: int = 17, image_size: int | Sequence[int] = (256, 256),
                 sample_rate: int = 1, fps_max: float | None = None, transform_name: str = "resize_crop",
                 training: bool = True, probe_workers: int | None = None, video_dtype: str = "float32",
                 decoded_cache_mib: float = 0):
        check_transform_name(transform_name)
        if decoded_cache_mib and transform_name not in CACHEABLE_TRANSFORMS:
            raise ValueError(f"dataset.decoded_cache_mib needs dataset.transform_name in {CACHEABLE_TRANSFORMS} "
                             f"(got {transform_name!r}, which resizes while decoding); or set decoded_cache_mib=0")
        self.decoded = DecodedVideoCache(int(decoded_cache_mib * 2**20)) if decoded_cache_mib > 0 else None
        if video_dtype not in VIDEO_DTYPES:
            raise ValueError(f"dataset.video_dtype={video_dtype!r}: use one of {', '.join(map(repr, VIDEO_DTYPES))}")
        self.transform_name = transform_name
        self.video_dtype = video_dtype
        if num_frames < 1 or sample_rate < 1:
            raise ValueError(f"dataset.num_frames and dataset.sample_rate must be >= 1, got {num_frames}, {sample_rate}")
        self.data_path = str(data_path)
        self.num_frames = int(num_frames)
        self.image_size = _as_size(image_size)
        self.sample_rate = int(sample_rate)
        self.fps_max = fps_max
        self.training = training
        sources = list_samples(self.data_path)
        self.paths: PathTable = sources.paths
        self.infos: InfoColumns = sources.infos
        self.unreadable: dict[str, str] = self._probe(sources, probe_workers)
        self._intervals: np.ndarray | None = None
        self._check_unreadable_share()

    def _probe(self, sources: Sources, workers: int | None) -> dict[str, str]:
        """Fill the metadata of ``sources.to_probe`` (from the CSV's cache when it matches); path -> reason
        of the unreadable files."""
        rows = sources.to_probe
        if not len(rows):
            return {}
        key = csv_key(sources.csv_path) if sources.csv_path else None
        results = load_probe_cache(sources.csv_path, key, rows) if key else None
        if results is None:
            results = probe_files(self.paths.subset(rows), workers, description=f"probing {self.data_path}")
            if key:
                save_probe_cache(sources.csv_path, key, rows, results)
        good = rows[results.ok]
        self.infos.num_frames[good], self.infos.fps[good] = results.num_frames[results.ok], results.fps[results.ok]
        self.infos.height[good], self.infos.width[good] = results.height[results.ok], results.width[results.ok]
        self.infos.known[good] = True
        unreadable = {self.paths[int(row)]: results.reasons[position]
                      for position, row in enumerate(rows) if not results.ok[position]}
        _warn_unreadable(unreadable)
        return unreadable

    def _check_unreadable_share(self) -> None:
        if len(self.unreadable) * 2 > len(self.paths):
            raise unreadable_error(list(self.unreadable), len(self.paths), self.data_path)

    def __len__(self) -> int:
        return len(self.paths)

    def keep_samples(self, indices: Sequence[int]) -> None:
        """Keep only the samples at ``indices`` (in that order); unreadable files outside them are forgotten."""
        rows = np.asarray(indices, dtype=np.int64)
        kept = self.paths.subset(rows)
        self.paths = PathTable.from_strings(kept)
        self.infos = self.infos.subset(rows)
        self._intervals = None
        kept_set = set(kept)
        self.unreadable = {path: reason for path, reason in self.unreadable.items() if path in kept_set}

    def intervals(self) -> np.ndarray:
        """Frame interval of every sample (int64 array; see :meth:`interval`)."""
        if self._intervals is None:
            fps_values, inverse = np.unique(self.infos.fps, return_inverse=True)
            per_fps = [frame_interval(float(fps), self.sample_rate, self.fps_max) for fps in fps_values]
            self._intervals = np.asarray(per_fps, dtype=np.int64)[inverse].reshape(-1)
        return self._intervals

    def interval(self, index: int) -> int:
        """Frame interval for sample ``index`` (``sample_rate``, or derived from its fps and ``fps_max``)."""
        return int(self.intervals()[index])

    def provides(self, indices: np.ndarray, num_frames: int) -> np.ndarray:
        """Bool array: which of ``indices`` are readable (as far as known) and long enough for ``num_frames``.

        An image (1 frame) provides only ``num_frames == 1``.
        """
        total = self.infos.num_frames[indices]
        if num_frames == 1:
            return self.infos.known[indices] & (total >= 1)
        return self.infos.known[indices] & (frames_needed(num_frames, self.intervals()[indices]) <= total)

    def can_provide(self, index: int, num_frames: int) -> bool:
        """Whether sample ``index`` is readable (as far as known) and long enough for ``num_frames``."""
        return bool(self.provides(np.array([index]), num_frames)[0])

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
        """One clip ``C T H W`` as ``video_dtype`` (``transform_name`` decides where it is resized)."""
        as_uint8 = self.video_dtype == "uint8"
        video = self.decoded.get(path) if self.decoded is not None else None
        if video is not None:
            return cut_clip(video, path, num_frames, interval, start, size, rng, self.transform_name, as_uint8)
        return load_clip(path, num_frames, interval, start, size, rng, self.transform_name, as_uint8=as_uint8)

    def _replacement(self, request: SampleRequest, rng: np.random.Generator) -> int | None:
        """A random sample that can provide the request: the first fit of 64 random draws (O(1) in the size)."""
        candidates = rng.integers(0, len(self), size=REPLACEMENT_DRAWS)
        fits = np.flatnonzero(self.provides(candidates, request.num_frames))
        return int(candidates[fits[0]]) if len(fits) else None

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


def _warn_unreadable(unreadable: dict[str, str]) -> None:
    for reason in itertools.islice(unreadable.values(), UNREADABLE_WARNINGS):
        logger.warning("skipping unreadable file: %s", reason)
    if len(unreadable) > UNREADABLE_WARNINGS:
        logger.warning("skipping %d more unreadable files (dataset.unreadable lists all %d with reasons)",
                       len(unreadable) - UNREADABLE_WARNINGS, len(unreadable))


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
