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
"""

from __future__ import annotations

import numpy as np
import torch

from opensora_ae.data.transforms import random_crop_frames, resize_crop_frames, to_model_input, to_model_layout
from opensora_ae.data.video_io import read_clip

CLIP_TRANSFORMS = ("resize_crop", "resize_crop_torch", "random_crop")


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
    if transform_name == "resize_crop_torch":
        frames = resize_crop_frames(read_clip(path, num_frames, interval, start), size[0], size[1], rng)
    elif transform_name == "random_crop":
        frames = random_crop_frames(read_clip(path, num_frames, interval, start), size[0], size[1], rng)
    else:
        frames = read_clip(path, num_frames, interval, start, size=size, rng=rng)
    return to_model_layout(frames) if as_uint8 else to_model_input(frames)
