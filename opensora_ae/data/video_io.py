"""Video and image IO with PyAV.

Arrays are ``T H W C`` uint8 RGB (``C == 3``). Frame ``i`` of a video is the ``i``-th frame in
presentation order; its time is ``i / fps`` seconds after the stream start.

* :func:`read_clip` decodes only what a clip needs: it seeks to the keyframe at or before the first
  wanted frame, decodes forward, picks frames by timestamp and stops after the last wanted frame.
* :func:`read_video` decodes a whole file.
* :func:`probe` reads frame count, fps, height and width from container metadata and falls back to
  counting packets when the container does not store a frame count.
* Images (:data:`IMAGE_EXTS`) read as one frame; their ``fps`` is ``0.0``.
* :func:`write_video` writes H.264 mp4 (libx264, yuv420p). yuv420p needs even sizes, so odd heights
  or widths are padded by repeating the last row/column (nothing is cropped). ``lossless=True``
  writes libx264rgb at crf 0 (exact RGB round trip, any size), which the tests use as fixtures.

Unreadable files raise :class:`VideoReadError` (a clip longer than the file raises its subclass
:class:`ClipTooShortError`); the message names the file.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterator, NamedTuple

import av
import numpy as np
from PIL import Image

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".flv", ".mpeg", ".mpg", ".gif")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class VideoReadError(RuntimeError):
    """A video or image file cannot be read (missing, empty, corrupt, not a video)."""


class ClipTooShortError(VideoReadError):
    """The file has fewer frames than the requested clip needs."""


class VideoInfo(NamedTuple):
    """Container metadata of a video or image: ``fps`` is 0.0 for images."""

    num_frames: int
    fps: float
    height: int
    width: int


def is_image(path: str | os.PathLike) -> bool:
    """True when the file extension is one of :data:`IMAGE_EXTS` (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTS


def is_video(path: str | os.PathLike) -> bool:
    """True when the file extension is one of :data:`VIDEO_EXTS` (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in VIDEO_EXTS


def _read_image(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise VideoReadError(f"cannot read image {path}: {err}") from err
    return rgb[None].copy()


def _open(path: str) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise VideoReadError(f"video file not found: {path}")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"video file is empty (0 bytes): {path}")
    try:
        container = av.open(path, mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoReadError(f"cannot open video {path}: {err}") from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"no video stream in {path}")
    return container


def _stream_fps(stream: av.video.stream.VideoStream, path: str) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoReadError(f"video {path} has no frame rate in its metadata")
    return Fraction(rate)


def _stream_start_seconds(stream: av.video.stream.VideoStream) -> float:
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps, height and width of a video (metadata, else packet count) or an image."""
    path = str(path)
    if is_image(path):
        frame = _read_image(path)
        return VideoInfo(1, 0.0, frame.shape[1], frame.shape[2])
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream, path)
        num_frames = stream.frames
        if num_frames <= 0:
            # No frame count stored (e.g. some mkv/webm): count packets without decoding them.
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        height, width = stream.codec_context.height, stream.codec_context.width
    except av.error.FFmpegError as err:
        raise VideoReadError(f"cannot probe video {path}: {err}") from err
    finally:
        container.close()
    if num_frames <= 0 or height <= 0 or width <= 0:
        raise VideoReadError(f"video {path} has no frames")
    return VideoInfo(int(num_frames), float(fps), int(height), int(width))


def _decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    path: str) -> Iterator[av.VideoFrame]:
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as err:
        raise VideoReadError(f"corrupt video data in {path}: {err}") from err


def _frame_seconds(frame: av.VideoFrame, start: float, decoded_index: int, fps: Fraction) -> float:
    """Frame time relative to the stream start; frames without a timestamp count from the decode order."""
    if frame.pts is None or frame.time is None:
        return decoded_index / float(fps)
    return frame.time - start


def _pick_frames(frames: Iterator[av.VideoFrame], targets: list[float], half_period: float,
                 start: float, fps: Fraction, first_index: int, stats: dict) -> list[np.ndarray] | None:
    """Take, for each target time, the first decoded frame at or after it (within half a frame).

    Several targets may share one frame (variable frame rate gaps); decoding stops after the last target.
    Returns None when decoding started after the first target (a seek that overshot).
    """
    picked: list[np.ndarray] = []
    decoded = 0
    for frame in frames:
        seconds = _frame_seconds(frame, start, first_index + decoded, fps)
        if decoded == 0 and seconds > targets[0] + half_period:
            stats["decoded_frames"] = stats.get("decoded_frames", 0) + 1
            return None
        decoded += 1
        if seconds < targets[len(picked)] - half_period:
            continue
        rgb = frame.to_ndarray(format="rgb24")
        while len(picked) < len(targets) and seconds >= targets[len(picked)] - half_period:
            picked.append(rgb)
        if len(picked) == len(targets):
            break
    stats["decoded_frames"] = stats.get("decoded_frames", 0) + decoded
    return picked


def read_clip(path: str | os.PathLike, num_frames: int, sample_rate: int = 1, start: int = 0,
              stats: dict | None = None) -> np.ndarray:
    """Read frames ``start, start + sample_rate, ...`` (``num_frames`` of them) as ``T H W C`` uint8.

    Seeks to the keyframe at or before ``start`` and decodes forward only up to the last wanted frame.
    An image returns its single frame (``num_frames`` must be 1 and ``start`` 0).
    ``stats``, when given, receives ``decoded_frames`` (how many frames the decoder produced).
    Raises :class:`ClipTooShortError` when the file ends before the last wanted frame.
    """
    path = str(path)
    if num_frames < 1 or sample_rate < 1 or start < 0:
        raise ValueError(f"read_clip({path}): need num_frames >= 1, sample_rate >= 1, start >= 0; "
                         f"got {num_frames}, {sample_rate}, {start}")
    stats = {} if stats is None else stats
    if is_image(path):
        if num_frames != 1 or start != 0:
            raise ClipTooShortError(f"image {path} has 1 frame; asked for {num_frames} from frame {start}")
        stats["decoded_frames"] = 1
        return _read_image(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream, path)
        stream_start = _stream_start_seconds(stream)
        targets = [(start + k * sample_rate) / float(fps) for k in range(num_frames)]
        half_period = 0.5 / float(fps)
        first_index = 0
        if start > 0:
            # Exact arithmetic so the seek lands on a keyframe that sits exactly at ``start``.
            start_pts = (stream.start_time or 0) + Fraction(start) / fps / stream.time_base
            container.seek(int(start_pts), stream=stream, backward=True, any_frame=False)
            # After a seek the frame index of timestamp-less frames is unknown; assume the target.
            first_index = start
        picked = _pick_frames(_decoded_frames(container, stream, path), targets, half_period,
                              stream_start, fps, first_index, stats)
        if picked is None:
            # Some demuxers land after the wanted frame; fall back to decoding from the beginning.
            container.seek(0, stream=stream, backward=True, any_frame=False)
            picked = _pick_frames(_decoded_frames(container, stream, path), targets, half_period,
                                  stream_start, fps, 0, stats)
    except av.error.FFmpegError as err:
        raise VideoReadError(f"cannot read video {path}: {err}") from err
    finally:
        container.close()
    if len(picked) < num_frames:
        raise ClipTooShortError(
            f"video {path} is too short: clip needs frame {start + (num_frames - 1) * sample_rate} "
            f"(num_frames={num_frames}, sample_rate={sample_rate}, start={start}), got {len(picked)} of them")
    return np.stack(picked)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video (or the single frame of an image) as ``T H W C`` uint8."""
    path = str(path)
    if is_image(path):
        return _read_image(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in _decoded_frames(container, stream, path)]
    except av.error.FFmpegError as err:
        raise VideoReadError(f"cannot read video {path}: {err}") from err
    finally:
        container.close()
    if not frames:
        raise VideoReadError(f"video {path} has no decodable frames")
    return np.stack(frames)


def _as_rgb_uint8(frames: np.ndarray, path: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.shape[0] < 1:
        raise ValueError(f"write_video({path}): frames must be T H W C with C in (1, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): frames must be uint8, got {frames.dtype}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last row/column so height and width are even (yuv420p subsamples chroma by 2)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, lossless: bool = False,
                crf: int = 18, preset: str = "medium", gop_size: int | None = None) -> None:
    """Write ``T H W C`` uint8 RGB frames (``C`` 1 or 3) as an H.264 mp4.

    Lossy: libx264, yuv420p, ``crf`` (0-51, lower is better), odd sizes padded to even by edge
    repetition. Lossless: libx264rgb at crf 0, exact RGB, any size. ``gop_size`` is the keyframe
    interval in frames (libx264 default 250 when None).
    """
    path = str(path)
    frames = _as_rgb_uint8(frames, path)
    if fps <= 0:
        raise ValueError(f"write_video({path}): fps must be > 0, got {fps}")
    if not lossless:
        frames = _pad_to_even(frames)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w") as container:
        codec, pix_fmt = ("libx264rgb", "rgb24") if lossless else ("libx264", "yuv420p")
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": "0" if lossless else str(crf), "preset": preset}
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1) / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
