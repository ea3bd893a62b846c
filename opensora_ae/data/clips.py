"""Training clips: decode, resize to cover, crop and map to model input in one call (:func:`load_clip`).

``transform_name`` chooses where the resize happens; both follow the same crop rule
(:func:`~opensora_ae.data.transforms.cover_crop_plan`, same ``rng`` draws) and give the same clip up to the
resize filter (docs/data.md, "Decode path"):

* ``"resize_crop"``: FFmpeg scales each kept frame while converting it from YUV (swscale), then the crop is
  cut; no full-size RGB frame is made.
* ``"resize_crop_torch"``: every kept frame is converted to full-size RGB, then
  :func:`~opensora_ae.data.transforms.resize_crop` resizes with torch (bilinear, antialiased) and crops.

``"random_crop"`` keeps the source's scale instead: a window of ``size`` at a random offset (centre at inference),
as image-codec training does; frames smaller than the window are scaled to cover it first.

:class:`DecodedVideoCache` keeps whole decoded videos in memory for datasets that fit in RAM: :func:`cut_clip`
then cuts the same clip as :func:`load_clip` from the cached frames, for the two transforms that resize after
decoding.
"""

from __future__ import annotations

import numpy as np
import torch

from opensora_ae.data.transforms import (frames_needed, random_crop_frames, resize_crop_frames, to_model_input,
                                         to_model_layout)
from opensora_ae.data.video_io import ClipTooShortError, read_clip, read_video

CLIP_TRANSFORMS = ("resize_crop", "resize_crop_torch", "random_crop")
# The transforms whose input is the decoded full-size frames, so a clip can be cut from cached frames.
CACHEABLE_TRANSFORMS = ("resize_crop_torch", "random_crop")


def check_transform_name(transform_name: str) -> None:
    """One-line error for a ``dataset.transform_name`` that is not in :data:`CLIP_TRANSFORMS`."""
    if transform_name not in CLIP_TRANSFORMS:
        raise ValueError(f"dataset.transform_name {transform_name!r} is unknown; use one of "
                         f"{', '.join(repr(name) for name in CLIP_TRANSFORMS)}")


def load_clip(path: str, num_frames: int, interval: int, start: int, size: tuple[int, int],
              rng: np.random.Generator | None, transform_name: str = "resize_crop", as_uint8: bool = False
              ) -> torch.Tensor:
    """Frames ``start, start + interval, ...`` of ``path`` as float ``C T H W`` in [-1, 1] of ``size = (H, W)``
    (``as_uint8``: the same clip as uint8 ``C T H W``, 0-255, for :func:`~opensora_ae.data.transforms.
    uint8_to_model_range` to map later, e.g. on the training device).

    ``rng`` draws the crop offset (training); None crops at the centre.
    """
    check_transform_name(transform_name)
    if transform_name == "resize_crop":
        return _model_clip(read_clip(path, num_frames, interval, start, size=size, rng=rng), as_uint8)
    return _transform(read_clip(path, num_frames, interval, start), size, rng, transform_name, as_uint8)


def cut_clip(video: np.ndarray, path: str, num_frames: int, interval: int, start: int, size: tuple[int, int],
             rng: np.random.Generator | None, transform_name: str, as_uint8: bool = False) -> torch.Tensor:
    """:func:`load_clip` from ``video``, every decoded ``T H W C`` uint8 frame of ``path`` (upright): the same
    clip for a constant-frame-rate video, for the :data:`CACHEABLE_TRANSFORMS`."""
    if transform_name not in CACHEABLE_TRANSFORMS:
        raise ValueError(f"cut_clip: transform_name {transform_name!r} resizes while decoding; use one of "
                         f"{CACHEABLE_TRANSFORMS}")
    end = start + frames_needed(num_frames, interval)
    frames = video[start:end:interval]
    if len(frames) < num_frames:
        raise ClipTooShortError(f"video {path} is too short: clip needs frame {end - 1} "
                                f"(num_frames={num_frames}, interval={interval}, start={start}), it has {len(video)}")
    return _transform(frames, size, rng, transform_name, as_uint8)


def _transform(frames: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None, transform_name: str,
               as_uint8: bool) -> torch.Tensor:
    """Full-size ``T H W C`` uint8 frames -> the clip of ``size`` in the model's layout."""
    crop = resize_crop_frames if transform_name == "resize_crop_torch" else random_crop_frames
    return _model_clip(crop(frames, size[0], size[1], rng), as_uint8)


def _model_clip(frames: np.ndarray | torch.Tensor, as_uint8: bool) -> torch.Tensor:
    """``T H W C`` uint8 -> ``C T H W``: uint8 0-255 (``as_uint8``) or float in [-1, 1]."""
    return to_model_layout(frames) if as_uint8 else to_model_input(frames)


class DecodedVideoCache:
    """Whole decoded videos (``T H W C`` uint8) by path, filled on first use up to ``max_bytes``.

    Each process holds its own (DataLoader workers each fill theirs). A video that would pass ``max_bytes`` is
    decoded once, not kept and remembered as too large: its clips are then read from the file as without the
    cache (decoding only up to each clip, not the whole video every time), so memory stays bounded.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.videos: dict[str, np.ndarray] = {}
        self.too_large: set[str] = set()
        self.bytes = 0

    def get(self, path: str) -> np.ndarray | None:
        """Every decoded frame of ``path``, or None when the video does not fit (read the clip from the file)."""
        video = self.videos.get(path)
        if video is None and path not in self.too_large:
            video = read_video(path)
            if self.bytes + video.nbytes > self.max_bytes:
                self.too_large.add(path)
                return None
            self.videos[path] = video
            self.bytes += video.nbytes
        return video
