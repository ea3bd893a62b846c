"""Video and image IO with PyAV.

Arrays are ``T H W C`` uint8 RGB (``C == 3``). Frame ``i`` of a video is the ``i``-th frame in
presentation order; its time is ``i / fps`` seconds after the stream start.

* :func:`read_clip` decodes only what a clip needs: it seeks to the keyframe at or before the first
  wanted frame, decodes forward (frames the clip does not keep and no other frame references are skipped by
  the decoder), picks frames by timestamp, converts only the picked ones and stops after the last wanted frame.
  With ``size`` it also resizes to cover ``size`` and crops while converting (FFmpeg's swscale does the
  YUV -> RGB conversion and the resize in one pass, on the kept frames only).
* Videos whose display matrix rotates them (phone footage: 90/180/270 degrees) come back upright, as a player
  shows them; :func:`probe` reports the displayed height and width.
* :func:`read_video` decodes a whole file.
* :func:`probe` reads frame count, fps, height and width from container metadata and falls back to
  counting packets when the container does not store a frame count.
* Images (:data:`IMAGE_EXTS`) read as one frame; their ``fps`` is ``0.0``.
* :func:`write_video` writes H.264 mp4 (libx264, yuv420p). yuv420p needs even sizes, so odd heights
  or widths are padded by repeating the last row/column (nothing is cropped). ``lossless=True``
  writes libx264rgb at crf 0 (exact RGB round trip, any size), which the tests use as fixtures.

Unreadable files raise :class:`VideoReadError` (a clip longer than the file raises its subclass
:class:`ClipTooShortError`); the message names the file. Images past Pillow's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``) are unreadable files too.
"""

from __future__ import annotations

import bisect
import os
from fractions import Fraction
from typing import Callable, Iterator, NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from opensora_ae.data.transforms import CropPlan, cover_crop_plan

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".flv", ".mpeg", ".mpg", ".gif")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# swscale filter of the decoder-side resize; with its footprint scaled to the ratio it antialiases like
# torch's bilinear ``antialias=True`` (docs/data.md gives the measured difference to ``resize_crop``).
RESIZE_INTERPOLATION = "BILINEAR"
# Decoder threads per open file. Measured in benchmarks/bench_loader.py: with DataLoader workers one
# thread per worker gives the most clips per busy core (docs/benchmarks.md).
DECODER_THREADS = 1


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
    except Image.DecompressionBombError as err:
        raise VideoReadError(f"cannot read image {path}: past Pillow's decompression-bomb limit "
                             f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {err}") from err
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


def _quarter_turns(frame: av.VideoFrame, path: str) -> int:
    """Counter-clockwise quarter turns that show ``frame`` upright (from its display matrix; 0 without one).

    FFmpeg's display rotation is counter-clockwise, the same sense as ``np.rot90`` on ``H W C`` arrays.
    """
    degrees = frame.rotation
    if degrees % 90:
        raise VideoReadError(f"video {path} has a display rotation of {degrees} degrees; only multiples of 90 "
                             f"are supported (re-encode it upright)")
    return (degrees // 90) % 4


def _set_threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    """``threads`` > 1: FFmpeg frame + slice threading with that many threads; 1: decode on the caller's thread."""
    if threads < 1:
        raise ValueError(f"decoder threads must be >= 1, got {threads}")
    context = stream.codec_context
    context.thread_count = threads
    context.thread_type = "AUTO" if threads > 1 else "SLICE"


def _first_frame_and_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                             count_packets: bool, path: str) -> tuple[av.VideoFrame, int]:
    """The first decodable frame and, when ``count_packets``, the number of non-empty packets (one pass).

    The decoder is drained after each packet until a frame comes out, so only the first keyframe is decoded
    (a decoder holds frames back for B-frame reordering otherwise, decoding several more).
    """
    context = stream.codec_context
    first, packets = None, 0
    for packet in container.demux(stream):
        packets += packet.size > 0
        if first is None and packet.size > 0:
            frames = stream.decode(packet) or stream.decode(None)
            first = frames[0] if frames else None
            context.flush_buffers()  # drained: reset before the next packet
        if first is not None and not count_packets:
            break
    if first is None:
        raise VideoReadError(f"video {path} has no decodable frames")
    return first, packets


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps, displayed height and width of a video (metadata, else packet count) or an image.

    The first frame is decoded for its display matrix: a video rotated by 90 or 270 degrees reports its
    coded width as height and its coded height as width, as a player shows it.
    """
    path = str(path)
    if is_image(path):
        frame = _read_image(path)
        return VideoInfo(1, 0.0, frame.shape[1], frame.shape[2])
    container = _open(path)
    try:
        stream = container.streams.video[0]
        _set_threads(stream, 1)
        fps = _stream_fps(stream, path)
        # No frame count stored (e.g. some mkv/webm): count packets without decoding them.
        first, packets = _first_frame_and_packets(container, stream, stream.frames <= 0, path)
        num_frames = stream.frames if stream.frames > 0 else packets
        height, width = first.height, first.width
        if _quarter_turns(first, path) % 2:
            height, width = width, height
    except av.error.FFmpegError as err:
        raise VideoReadError(f"cannot probe video {path}: {err}") from err
    finally:
        container.close()
    if num_frames <= 0 or height <= 0 or width <= 0:
        raise VideoReadError(f"video {path} has no frames")
    return VideoInfo(int(num_frames), float(fps), int(height), int(width))


class _UnpickedFrames:
    """Tells, packet by packet, which frames the clip cannot pick, so the decoder may drop them unless referenced.

    A frame is picked for target ``k`` only if it is the first frame shown at or after ``thresholds[k]``
    (the target time minus half a frame, in stream ticks). A frame shown before every threshold is never
    picked (the pre-roll after a seek). A later frame is not picked either once a frame that is decoded
    for sure (its packet was not marked) lies in ``[threshold, pts)`` for the last threshold at or before it:
    that frame is shown first, for that threshold and every earlier one. Marked packets still decode when
    other frames reference them (``skip_frame=NONREF``), so only unreferenced frames are dropped and the
    picked frames are exactly those of a full decode. One tick of margin keeps float timestamps on the safe side.
    """

    def __init__(self, thresholds: list[Fraction]):
        self.thresholds = thresholds
        self.decoded: list[int] = []  # sorted pts of packets sent to the decoder unmarked

    def unpicked(self, pts: int | None) -> bool:
        if pts is None:
            return False
        below = bisect.bisect_right(self.thresholds, pts + 1)
        if below == 0:
            return True
        earlier = bisect.bisect_left(self.decoded, pts)
        return earlier > 0 and self.decoded[earlier - 1] >= self.thresholds[below - 1] + 1

    def mark(self, pts: int | None) -> bool:
        """True when the packet's frame is never picked; otherwise records it as decoded for sure."""
        if self.unpicked(pts):
            return True
        if pts is not None:
            bisect.insort(self.decoded, pts)
        return False


def _decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    path: str, unpicked: _UnpickedFrames | None = None) -> Iterator[av.VideoFrame]:
    """Frames in presentation order; with ``unpicked``, frames the clip never picks decode only if referenced.

    The decoder still needs every reference frame, but the others (most B-frames before and between the
    clip's frames) are dropped before any decoding work.
    """
    context = stream.codec_context
    try:
        for packet in container.demux(stream):
            if unpicked is not None:
                context.skip_frame = "NONREF" if unpicked.mark(packet.pts) else "DEFAULT"
            yield from stream.decode(packet)
    except av.error.FFmpegError as err:
        raise VideoReadError(f"corrupt video data in {path}: {err}") from err


def _frame_seconds(frame: av.VideoFrame, start: float, decoded_index: int, fps: Fraction) -> float:
    """Frame time relative to the stream start; frames without a timestamp count from the decode order."""
    if frame.pts is None or frame.time is None:
        return decoded_index / float(fps)
    return frame.time - start


class _FrameConverter:
    """Decoded frame -> upright ``H W 3`` uint8 RGB; with ``size``, resized to cover it and cropped.

    With ``size = (height, width)`` the crop follows :func:`cover_crop_plan` on the displayed size of the
    first converted frame (``rng`` draws its offset once per clip); swscale scales the YUV frame to the
    resized size and converts that small frame to RGB, so no full-size RGB frame is made. Every frame is
    scaled to that plan.
    """

    def __init__(self, path: str, size: tuple[int, int] | None, rng: np.random.Generator | None):
        self.path, self.size, self.rng = path, size, rng
        self.plan: CropPlan | None = None
        # One scaler and one converter per clip keep their swscale set-up across frames.
        self.scaler, self.to_rgb = VideoReformatter(), VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        turns = _quarter_turns(frame, self.path)
        if self.size is None:
            return np.rot90(frame.to_ndarray(format="rgb24"), turns)
        if self.plan is None:
            shown_h, shown_w = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
            self.plan = cover_crop_plan(shown_h, shown_w, self.size[0], self.size[1], self.rng)
        plan = self.plan
        coded_h, coded_w = (plan.resized_w, plan.resized_h) if turns % 2 else (plan.resized_h, plan.resized_w)
        # Scaling the planar YUV frame and converting the small result is ~3x cheaper than swscale's
        # combined scale-and-convert (docs/data.md); chroma keeps its own subsampled resolution.
        # One swscale thread: loader workers are the parallelism, extra threads only add overhead.
        scaled = self.scaler.reformat(frame, width=coded_w, height=coded_h, interpolation=RESIZE_INTERPOLATION,
                                      threads=1)
        rgb = self.to_rgb.reformat(scaled, format="rgb24", threads=1).to_ndarray()
        upright = np.rot90(rgb, turns)
        return upright[plan.top:plan.top + plan.height, plan.left:plan.left + plan.width]


def _pick_frames(frames: Iterator[av.VideoFrame], targets: list[float], half_period: float,
                 start: float, fps: Fraction, first_index: int, stats: dict,
                 convert: Callable[[av.VideoFrame], np.ndarray]) -> list[np.ndarray] | None:
    """Take, for each target time, the first decoded frame at or after it (within half a frame).

    Several targets may share one frame (variable frame rate gaps); decoding stops after the last target.
    Only picked frames are converted. Returns None when decoding started after the first target (a seek
    that overshot).
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
        rgb = convert(frame)
        while len(picked) < len(targets) and seconds >= targets[len(picked)] - half_period:
            picked.append(rgb)
        if len(picked) == len(targets):
            break
    stats["decoded_frames"] = stats.get("decoded_frames", 0) + decoded
    return picked


def _check_clip_args(path: str, num_frames: int, sample_rate: int, start: int,
                     size: tuple[int, int] | None) -> None:
    if num_frames < 1 or sample_rate < 1 or start < 0:
        raise ValueError(f"read_clip({path}): need num_frames >= 1, sample_rate >= 1, start >= 0; "
                         f"got {num_frames}, {sample_rate}, {start}")
    if size is not None and min(size) < 1:
        raise ValueError(f"read_clip({path}): size must be (height, width) >= 1, got {size}")


def read_clip(path: str | os.PathLike, num_frames: int, sample_rate: int = 1, start: int = 0,
              stats: dict | None = None, size: tuple[int, int] | None = None,
              rng: np.random.Generator | None = None, threads: int | None = None,
              skip_unpicked: bool = True) -> np.ndarray:
    """Read frames ``start, start + sample_rate, ...`` (``num_frames`` of them) as ``T H W C`` uint8, upright.

    Seeks to the keyframe at or before ``start`` and decodes forward only up to the last wanted frame.
    ``size = (height, width)``: each kept frame is resized (swscale, :data:`RESIZE_INTERPOLATION`) to
    cover ``size`` and cropped to it by :func:`cover_crop_plan` (offset drawn from ``rng``, centre when
    None), giving ``T height width 3``; the same clip as ``resize_crop(read_clip(...), height, width, rng)``
    up to the resize filter. ``threads``: decoder threads (frame threading when > 1; None: the module's
    :data:`DECODER_THREADS` at call time). ``skip_unpicked=False`` decodes every frame from the keyframe on,
    as before the skipping existed (same frames; for comparisons).
    An image returns its single frame (``num_frames`` must be 1 and ``start`` 0).
    ``stats``, when given, receives ``decoded_frames`` (how many frames the decoder produced).
    Raises :class:`ClipTooShortError` when the file ends before the last wanted frame.
    """
    path = str(path)
    _check_clip_args(path, num_frames, sample_rate, start, size)
    stats = {} if stats is None else stats
    convert = _FrameConverter(path, size, rng)
    if is_image(path):
        if num_frames != 1 or start != 0:
            raise ClipTooShortError(f"image {path} has 1 frame; asked for {num_frames} from frame {start}")
        stats["decoded_frames"] = 1
        image = _read_image(path)[0]
        return image[None] if size is None else convert(av.VideoFrame.from_ndarray(image, format="rgb24"))[None]
    container = _open(path)
    try:
        picked = _read_picked(container, path, num_frames, sample_rate, start, stats, convert, threads,
                              skip_unpicked)
    except av.error.FFmpegError as err:
        raise VideoReadError(f"cannot read video {path}: {err}") from err
    finally:
        container.close()
    if len(picked) < num_frames:
        raise ClipTooShortError(
            f"video {path} is too short: clip needs frame {start + (num_frames - 1) * sample_rate} "
            f"(num_frames={num_frames}, sample_rate={sample_rate}, start={start}), got {len(picked)} of them")
    return np.stack(picked)


def _read_picked(container: av.container.InputContainer, path: str, num_frames: int, sample_rate: int,
                 start: int, stats: dict, convert: _FrameConverter, threads: int | None,
                 skip_unpicked: bool) -> list[np.ndarray]:
    """Seek, decode and pick the clip's frames (see :func:`read_clip`)."""
    stream = container.streams.video[0]
    _set_threads(stream, DECODER_THREADS if threads is None else threads)
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
    thresholds = [(stream.start_time or 0) + (Fraction(start + k * sample_rate) - Fraction(1, 2)) / fps
                  / stream.time_base for k in range(num_frames)]
    unpicked = _UnpickedFrames(thresholds) if skip_unpicked else None
    picked = _pick_frames(_decoded_frames(container, stream, path, unpicked), targets,
                          half_period, stream_start, fps, first_index, stats, convert)
    if picked is None:
        # Some demuxers land after the wanted frame; fall back to decoding from the beginning.
        container.seek(0, stream=stream, backward=True, any_frame=False)
        unpicked = _UnpickedFrames(thresholds) if skip_unpicked else None
        picked = _pick_frames(_decoded_frames(container, stream, path, unpicked), targets,
                              half_period, stream_start, fps, 0, stats, convert)
    return picked


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video (or the single frame of an image) as ``T H W C`` uint8, upright."""
    path = str(path)
    if is_image(path):
        return _read_image(path)
    container = _open(path)
    convert = _FrameConverter(path, None, None)
    try:
        stream = container.streams.video[0]
        frames = [convert(frame) for frame in _decoded_frames(container, stream, path)]
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
