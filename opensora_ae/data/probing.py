"""Probe files for metadata in parallel, and cache what a CSV's probing found.

:func:`probe_files` probes with a process pool (PyAV holds the GIL for much of a probe, so threads did not
scale): work goes out in chunks with a bounded number in flight, so a million paths never become a million
futures, and a tqdm bar shows progress on a terminal.

:func:`load_probe_cache` / :func:`save_probe_cache`: the probed columns of a CSV go to
``<csv>.probe-cache.npz`` next to it, keyed by the SHA-256 of the CSV's bytes, so the next run (and every
other rank) starts at once. When the CSV's folder is not writable the cache goes to
``$XDG_CACHE_HOME/opensora_ae/probe/<sha256>.npz`` (``~/.cache`` without ``XDG_CACHE_HOME``). A changed
CSV has another key and is probed again; delete the cache file to re-probe after changing the videos.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from opensora_ae.data.video_io import VideoInfo, VideoReadError, probe

logger = logging.getLogger(__name__)

PROBE_WORKERS = 8  # processes at most (fewer on machines with fewer cores)
PROBE_CHUNK = 64  # paths per task sent to a worker
CACHE_SUFFIX = ".probe-cache.npz"
CACHE_VERSION = 1


class ProbeResults(NamedTuple):
    """Metadata of probed files, one entry per path; ``reasons[i]`` is "" where ``ok[i]``."""

    num_frames: np.ndarray  # int64
    fps: np.ndarray  # float64
    height: np.ndarray  # int64
    width: np.ndarray  # int64
    ok: np.ndarray  # bool
    reasons: list[str]


def _probe_chunk(paths: list[str]) -> list[VideoInfo | str]:
    """Metadata of each path, or the reason it cannot be read (runs in a worker process)."""
    results: list[VideoInfo | str] = []
    for path in paths:
        try:
            results.append(probe(path))
        except VideoReadError as err:
            results.append(str(err))
    return results


def default_workers() -> int:
    """Probe processes: :data:`PROBE_WORKERS`, at most the cores this process may use."""
    return max(1, min(PROBE_WORKERS, len(os.sched_getaffinity(0))))


def probe_files(paths: Sequence[str], workers: int | None = None, chunk_size: int = PROBE_CHUNK,
                description: str = "probing") -> ProbeResults:
    """Probe every path (``workers`` processes; in this process when 1 or when one chunk covers all)."""
    workers = default_workers() if workers is None else max(1, int(workers))
    chunks = [list(paths[begin:begin + chunk_size]) for begin in range(0, len(paths), chunk_size)]
    results: list[VideoInfo | str] = []
    with tqdm(total=len(paths), desc=description, unit="file", disable=None, leave=False) as progress:
        for chunk_results in _chunk_results(chunks, workers):
            results.extend(chunk_results)
            progress.update(len(chunk_results))
    return _as_columns(results)


def _chunk_results(chunks: list[list[str]], workers: int):
    """Results chunk by chunk, in order; at most ``2 * workers`` chunks in flight."""
    if workers == 1 or len(chunks) <= 1:
        yield from map(_probe_chunk, chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque[Future] = collections.deque()
        for chunk in chunks:
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
            pending.append(pool.submit(_probe_chunk, chunk))
        while pending:
            yield pending.popleft().result()


def _as_columns(results: list[VideoInfo | str]) -> ProbeResults:
    ok = np.array([isinstance(result, VideoInfo) for result in results], dtype=bool)
    rows = [result if isinstance(result, VideoInfo) else (0, 0.0, 0, 0) for result in results]
    table = np.array(rows, dtype=np.float64).reshape(len(rows), 4)  # frame counts and sizes are exact in float64
    reasons = ["" if isinstance(result, VideoInfo) else result for result in results]
    return ProbeResults(table[:, 0].astype(np.int64), table[:, 1], table[:, 2].astype(np.int64),
                        table[:, 3].astype(np.int64), ok, reasons)


def csv_key(csv_path: str) -> str:
    """SHA-256 of the CSV's bytes: the cache's key."""
    digest = hashlib.sha256()
    with open(csv_path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def cache_locations(csv_path: str, key: str) -> list[str]:
    """Where the cache of ``csv_path`` is looked for, in order: next to the CSV, then the user cache."""
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.abspath(csv_path) + CACHE_SUFFIX, os.path.join(user_cache, "opensora_ae", "probe", key + ".npz")]


def load_probe_cache(csv_path: str, key: str, rows: np.ndarray) -> ProbeResults | None:
    """The cached probe results of ``rows`` for this CSV content, or None (no cache, other key, other rows)."""
    for location in cache_locations(csv_path, key):
        try:
            with np.load(location, allow_pickle=False) as cache:
                if (int(cache["version"]) != CACHE_VERSION or str(cache["key"]) != key
                        or not np.array_equal(cache["rows"], rows)):
                    continue
                return ProbeResults(cache["num_frames"], cache["fps"], cache["height"], cache["width"],
                                    cache["ok"], cache["reasons"].tolist())
        except (OSError, ValueError, KeyError):
            continue  # missing, unreadable or foreign file: probe again
    return None


def save_probe_cache(csv_path: str, key: str, rows: np.ndarray, results: ProbeResults) -> str | None:
    """Write the cache atomically to the first writable location; its path, or None when none is writable."""
    arrays = dict(version=np.array(CACHE_VERSION), key=np.array(key), rows=rows, num_frames=results.num_frames,
                  fps=results.fps, height=results.height, width=results.width, ok=results.ok,
                  reasons=np.array(results.reasons, dtype=str))
    for location in cache_locations(csv_path, key):
        try:
            os.makedirs(os.path.dirname(location), exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=os.path.dirname(location), suffix=".tmp")
        except OSError:
            continue
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, **arrays)
            os.replace(temporary, location)
            return location
        except OSError as err:
            logger.warning("cannot write probe cache %s: %s", location, err)
            os.unlink(temporary)
    return None
