"""Open-Sora style buckets: group samples by (resolution, frame count, aspect ratio).

``bucket_config`` maps a resolution name to ``{num_frames: (probability, batch_size)}``::

    {"256px_ar1:1": {32: (1.0, 1)},
     "512px": {1: (0.5, 16), 96: ((1.0, 0.3), 1)}}

Resolution names (any number works, these are the usual ones):

* ``"<N>px"`` (``256px``, ``512px``, ``768px``, ``1024px``): ``N * N`` pixels;
* ``"<N>p"`` (``144p``, ``240p``, ``360p``, ``480p``, ``720p``, ``1080p``): ``N * N * 16 / 9`` pixels (16:9 base).
* A suffix ``_ar<W>:<H>`` (e.g. ``256px_ar1:1``, ``360p_ar16:9``) keeps only that aspect ratio;
  ``_max`` keeps only the ratio whose size has the most pixels.

Each resolution has the Open-Sora 2.0 ratio set :data:`ASPECT_RATIOS` (names are ``width:height``,
landscape ratios and their portrait flips). The ``height x width`` of a ratio are multiples of
``size_multiple`` (16 by default, the spatial compression of most autoencoders), rounded from the exact
size so that pixel count and ratio both stay close (ratios that round to an already listed size are dropped).

Assignment of a sample with ``T`` frames of ``H x W`` (frame interval ``k``), as in Open-Sora:

1. Resolutions are tried from the largest pixel count down; one qualifies when ``H * W >= 0.8 * pixels``.
2. An image (``T == 1``) goes only to a frame count of 1, if that resolution has one.
   A video tries that resolution's frame counts (other than 1) from the largest down and takes the first
   it has enough frames for (``(t - 1) * k + 1 <= T``). When the probability is a pair ``(keep, take)``,
   a frame count is only considered with probability ``take``; otherwise the sample falls through to the
   next smaller frame count (so ``1 - take`` is the skip-to-next-frame-count probability).
3. The sample is then kept with probability ``keep`` (the plain float, or the pair's first element);
   if it is dropped it goes on to the next smaller resolution.
4. The aspect ratio snaps to the closest (in ``height / width``) of that resolution's ratios.

All draws come from the generator passed in, so the assignment is deterministic given a seed.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import numpy as np

# Open-Sora 2.0 ratio list (width:height); the portrait flips are added by `aspect_ratio_sizes`.
LANDSCAPE_RATIOS = ("2.39:1", "2:1", "16:9", "1.85:1", "3:2", "4:3", "5:4", "1:1")
STANDARD_RESOLUTIONS = ("144p", "240p", "256px", "360p", "480p", "512px", "720p", "768px", "1024px", "1080p")
MIN_PIXEL_FRACTION = 0.8  # a sample qualifies for a resolution with >= 80% of its pixels

_RESOLUTION_NAME = re.compile(r"^(\d+)(px|p)$")


class BucketKey(NamedTuple):
    """One bucket: resolution name (as in the config), frame count and aspect-ratio name."""

    resolution: str
    num_frames: int
    aspect_ratio: str


def ratio_value(name: str) -> float:
    """``"16:9"`` (width:height) -> height / width."""
    try:
        width, height = (float(part) for part in name.split(":"))
    except ValueError as err:
        raise ValueError(f"aspect ratio {name!r} is not 'width:height' like '16:9'") from err
    return height / width


def num_pixels(resolution: str) -> int:
    """Pixel count of ``"256px"`` (256*256) or ``"360p"`` (360*640); a ``_ar..``/``_max`` suffix is ignored."""
    base = resolution.split("_")[0]
    match = _RESOLUTION_NAME.match(base)
    if match is None:
        raise ValueError(f"resolution {resolution!r} is not like '256px' or '360p' "
                         f"(optionally with '_ar1:1' or '_max'); usual ones: {', '.join(STANDARD_RESOLUTIONS)}")
    size = int(match.group(1))
    return size * size if match.group(2) == "px" else int(size * size * 16 / 9)


def _size_for_ratio(total_pixels: int, width_over_height: float, multiple: int) -> tuple[int, int]:
    """``(height, width)``, multiples of ``multiple``, closest to the pixel count and the ratio together.

    Of the four roundings (down/up) of the ideal height and width, the one with the smallest
    ``|log(pixels / target)| + |log(ratio / target ratio)|`` wins.
    """
    ideal_h, ideal_w = math.sqrt(total_pixels / width_over_height), math.sqrt(total_pixels * width_over_height)

    def roundings(value: float) -> set[int]:
        return {max(multiple, math.floor(value / multiple) * multiple), math.ceil(value / multiple) * multiple}

    def cost(hw: tuple[int, int]) -> float:
        height, width = hw
        return abs(math.log(height * width / total_pixels)) + abs(math.log(width / height / width_over_height))

    return min(((h, w) for h in roundings(ideal_h) for w in roundings(ideal_w)), key=lambda hw: (cost(hw), hw))


def aspect_ratio_sizes(resolution: str, size_multiple: int = 16) -> dict[str, tuple[int, int]]:
    """``{ratio name: (height, width)}`` for a resolution name, honouring ``_ar<W>:<H>`` and ``_max``."""
    total = num_pixels(resolution)
    sizes: dict[str, tuple[int, int]] = {}
    for name in LANDSCAPE_RATIOS:
        width_part, height_part = name.split(":")
        height, width = _size_for_ratio(total, 1.0 / ratio_value(name), size_multiple)
        if (height, width) in sizes.values():
            continue  # at small sizes two ratios can round to the same size
        sizes[name] = (height, width)
        if width_part != height_part:
            sizes[f"{height_part}:{width_part}"] = (width, height)
    _, _, setting = resolution.partition("_")
    if not setting:
        return sizes
    if setting == "max":
        best = max(sizes, key=lambda name: sizes[name][0] * sizes[name][1])
        return {best: sizes[best]}
    if setting.startswith("ar"):
        wanted = setting[2:]
        if wanted in sizes:
            return {wanted: sizes[wanted]}
        # Accept any W:H, e.g. "ar1.5:1", by computing its size directly.
        return {wanted: _size_for_ratio(total, 1.0 / ratio_value(wanted), size_multiple)}
    raise ValueError(f"resolution {resolution!r}: suffix must be '_ar<W>:<H>' (e.g. '_ar1:1') or '_max'")


ASPECT_RATIOS: dict[str, dict[str, tuple[int, int]]] = {name: aspect_ratio_sizes(name) for name in STANDARD_RESOLUTIONS}


def closest_ratio(height: int, width: int, ratios: dict[str, tuple[int, int]]) -> str:
    """Name of the ratio whose ``height / width`` is closest to the sample's."""
    target = height / width
    return min(ratios, key=lambda name: abs(ratio_value(name) - target))


def _parse_probability(value: Any, where: str) -> tuple[float, float]:
    """``p`` -> ``(p, 1.0)``; ``(keep, take)`` -> as is."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"bucket_config{where}: probability pair must be (keep, take), got {value!r}")
        return float(value[0]), float(value[1])
    return float(value), 1.0


class Bucket:
    """Parsed ``bucket_config``: assigns samples to :class:`BucketKey` and gives sizes and batch sizes."""

    def __init__(self, bucket_config: dict, size_multiple: int = 16):
        if not isinstance(bucket_config, dict) or not bucket_config:
            raise ValueError(f"bucket_config must be a non-empty dict like {{'256px': {{17: (1.0, 4)}}}}, "
                             f"got {bucket_config!r}")
        self.ratio_sizes: dict[str, dict[str, tuple[int, int]]] = {}
        self.pixels: dict[str, int] = {}
        # resolution -> [(num_frames, keep, take, batch_size)] sorted by frame count, largest first
        self.frame_options: dict[str, list[tuple[int, float, float, int]]] = {}
        for resolution, frames_cfg in bucket_config.items():
            self.ratio_sizes[resolution] = aspect_ratio_sizes(resolution, size_multiple)
            self.pixels[resolution] = num_pixels(resolution)
            self.frame_options[resolution] = self._parse_frames(resolution, frames_cfg)
        self.resolutions = sorted(bucket_config, key=lambda name: self.pixels[name], reverse=True)

    @staticmethod
    def _parse_frames(resolution: str, frames_cfg: Any) -> list[tuple[int, float, float, int]]:
        if not isinstance(frames_cfg, dict) or not frames_cfg:
            raise ValueError(f"bucket_config[{resolution!r}] must map frame counts to (probability, batch_size), "
                             f"got {frames_cfg!r}")
        options = []
        for num_frames, value in frames_cfg.items():
            where = f"[{resolution!r}][{num_frames!r}]"
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ValueError(f"bucket_config{where} must be (probability, batch_size), got {value!r}")
            keep, take = _parse_probability(value[0], where)
            batch_size = int(value[1])
            if int(num_frames) < 1 or batch_size < 1:
                raise ValueError(f"bucket_config{where}: frame count and batch size must be >= 1")
            options.append((int(num_frames), keep, take, batch_size))
        return sorted(options, key=lambda option: option[0], reverse=True)

    def fits_any(self, total_frames: int, height: int, width: int, interval: int = 1) -> bool:
        """Whether some bucket could take the sample when every probability is 1."""
        for resolution in self.resolutions:
            if height * width < MIN_PIXEL_FRACTION * self.pixels[resolution]:
                continue
            for num_frames, *_ in self.frame_options[resolution]:
                if self._enough_frames(total_frames, num_frames, interval):
                    return True
        return False

    @staticmethod
    def _enough_frames(total_frames: int, num_frames: int, interval: int) -> bool:
        if total_frames == 1 or num_frames == 1:
            return total_frames == 1 and num_frames == 1
        return (num_frames - 1) * interval + 1 <= total_frames

    def assign(self, total_frames: int, height: int, width: int, interval: int,
               rng: np.random.Generator) -> BucketKey | None:
        """The bucket of a sample of ``total_frames`` frames of ``height x width``, or None (see module doc)."""
        for resolution in self.resolutions:
            if height * width < MIN_PIXEL_FRACTION * self.pixels[resolution]:
                continue
            chosen = self._choose_frames(resolution, total_frames, interval, rng)
            if chosen is None:
                continue
            num_frames, keep = chosen
            if keep >= 1 or rng.random() < keep:
                ratio = closest_ratio(height, width, self.ratio_sizes[resolution])
                return BucketKey(resolution, num_frames, ratio)
        return None

    def _choose_frames(self, resolution: str, total_frames: int, interval: int,
                       rng: np.random.Generator) -> tuple[int, float] | None:
        for num_frames, keep, take, _ in self.frame_options[resolution]:
            if not self._enough_frames(total_frames, num_frames, interval):
                continue
            if take < 1 and rng.random() >= take:
                continue  # skip to the next smaller frame count
            return num_frames, keep
        return None

    def size(self, key: BucketKey) -> tuple[int, int, int]:
        """``(num_frames, height, width)`` of a bucket."""
        height, width = self.ratio_sizes[key.resolution][key.aspect_ratio]
        return key.num_frames, height, width

    def batch_size(self, key: BucketKey) -> int:
        """Batch size configured for the bucket's resolution and frame count."""
        for num_frames, _, _, batch_size in self.frame_options[key.resolution]:
            if num_frames == key.num_frames:
                return batch_size
        raise KeyError(f"no frame count {key.num_frames} under bucket_config[{key.resolution!r}]")
