"""Fixture media for the data tests: frames whose content encodes their index, written losslessly."""

from __future__ import annotations

import os

import numpy as np

from opensora_ae.data.video_io import write_video


def indexed_frames(num_frames: int, height: int = 24, width: int = 32) -> np.ndarray:
    """``T H W 3`` uint8 frames that differ per index: R = i mod 256, G = i // 256, B = a bar at column i mod W."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for index in range(num_frames):
        frames[index, ..., 0] = index % 256
        frames[index, ..., 1] = index // 256
        frames[index, :, index % width, 2] = 255
    return frames


def frame_indices(clip: np.ndarray) -> list[int]:
    """Recover the indices of frames made by :func:`indexed_frames` (exact for lossless videos)."""
    return [int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1]) for frame in clip]


def write_indexed_video(path: str | os.PathLike, num_frames: int, fps: float = 24.0, height: int = 24,
                        width: int = 32, gop_size: int | None = None) -> np.ndarray:
    """Write :func:`indexed_frames` as a lossless mp4 and return the frames."""
    frames = indexed_frames(num_frames, height, width)
    write_video(path, frames, fps, lossless=True, preset="ultrafast", gop_size=gop_size)
    return frames


def write_truncated_video(path: str | os.PathLike, num_frames: int = 30) -> None:
    """A lossy mp4 cut to half its bytes (its index, written last, is gone)."""
    full = f"{path}.full.mp4"
    write_video(full, indexed_frames(num_frames), 24.0, preset="ultrafast")
    with open(full, "rb") as handle:
        data = handle.read()
    os.remove(full)
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


def write_text_as_video(path: str | os.PathLike) -> None:
    """A text file with an .mp4 name."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("this is not a video\n" * 20)


def write_empty_file(path: str | os.PathLike) -> None:
    """A zero-byte file."""
    open(path, "wb").close()
