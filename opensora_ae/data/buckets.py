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
    """Name of the ratio whose ``height / width`` is closest to the sample's (the first one on a tie)."""
    names = list(ratios)
    values = np.array([ratio_value(name) for name in names])
    return names[int(_closest(np.array([height / width]), values)[0])]


def _closest(targets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index into ``values`` of the closest value to each target; the lowest index wins ties."""
    best = np.zeros(len(targets), np.int64)
    best_distance = np.abs(values[0] - targets)
    for position in range(1, len(values)):
        distance = np.abs(values[position] - targets)
        closer = distance < best_distance
        best[closer], best_distance[closer] = position, distance[closer]
    return best


def _enough_frames(total_frames: np.ndarray, num_frames: int, interval: np.ndarray) -> np.ndarray:
    """Bool array: an image (1 frame) fits only 1 frame; a video fits ``(num_frames - 1) * interval + 1``."""
    if num_frames == 1:
        return total_frames == 1
    return (total_frames != 1) & ((num_frames - 1) * interval + 1 <= total_frames)


NO_BUCKET = -1  # assignment code of a sample that fits no bucket
DRAW_BLOCK = 1 << 16  # draws converted to Python floats at once (bounds their memory)
PATTERN_TABLE_BITS = 20  # up to this many options, patterns are found with a 2**bits lookup table
_TERMINAL_OFFSET = 2  # draw-program terminal of option o: -(o + 2); -1 is NO_BUCKET


def _run_programs(entries: list[int], nodes: list[tuple[float, int, int]], rng: np.random.Generator) -> list[int]:
    """Walk each sample's draw program in order on one stream of ``rng.random()`` draws; terminal per sample.

    A node ``(threshold, if_less, otherwise)`` consumes one draw. Every entry starts at a node, so each
    sample still to come needs at least one draw: refilling with at most that many never draws more than
    the one-sample-at-a-time loop would, and the generator ends in the same state.
    """
    thresholds = [node[0] for node in nodes]
    branches = [(node[1], node[2]) for node in nodes]  # indexed by "draw >= threshold"
    terminals = list(entries)
    draws: list[float] = []
    position = available = 0
    for sample, node in enumerate(entries):
        while node >= 0:
            if position == available:  # this sample and each later one need at least one more draw
                draws = rng.random(min(DRAW_BLOCK, len(entries) - sample)).tolist()
                position, available = 0, len(draws)
            node = branches[node][draws[position] >= thresholds[node]]
            position += 1
        terminals[sample] = node
    return terminals


def _parse_probability(value: Any, where: str) -> tuple[float, float]:
    """``p`` -> ``(p, 1.0)``; ``(keep, take)`` -> as is."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"bucket_config{where}: probability pair must be (keep, take), got {value!r}")
        return float(value[0]), float(value[1])
    return float(value), 1.0


def _add_node(nodes: list[tuple[float, int, int]], probability: float, if_less: int, otherwise: int) -> int:
    """A draw ``u < probability`` choosing ``if_less`` or ``otherwise``; no draw when the probability is >= 1."""
    if probability >= 1:
        return if_less
    nodes.append((probability, if_less, otherwise))
    return len(nodes) - 1


def _unique_patterns(columns: list[np.ndarray], size: int) -> tuple[list[tuple[bool, ...]], np.ndarray]:
    """Distinct rows of the bool matrix given by ``columns`` and, per row, the index of its pattern."""
    words = []
    for begin in range(0, len(columns), 62):  # 62 bits per int64 word
        word = np.zeros(size, np.int64)
        for bit, column in enumerate(columns[begin:begin + 62]):
            word |= column.astype(np.int64) << bit
        words.append(word)
    if len(columns) <= PATTERN_TABLE_BITS:  # few options: a lookup table instead of sorting the samples
        unique = np.flatnonzero(np.bincount(words[0], minlength=1))
        table = np.zeros(1 << len(columns), np.int32)
        table[unique] = np.arange(len(unique))
        inverse, unique = table[words[0]], unique[:, None]
    elif len(words) == 1:
        unique, inverse = np.unique(words[0], return_inverse=True)
        unique = unique[:, None]
    else:
        stacked = np.stack(words, axis=1) if words else np.zeros((size, 1), np.int64)
        unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    patterns = [tuple(bool(row[o // 62] >> (o % 62) & 1) for o in range(len(columns))) for row in unique]
    return patterns, inverse.reshape(-1)


def _one_sample(total_frames: int, height: int, width: int, interval: int) -> tuple[np.ndarray, ...]:
    return tuple(np.array([value], np.int64) for value in (total_frames, height, width, interval))


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
        # Options in assignment order: (resolution, num_frames, keep, take, batch_size).
        self.options = [(resolution, *option) for resolution in self.resolutions
                        for option in self.frame_options[resolution]]
        self._options_of = {resolution: [o for o, option in enumerate(self.options) if option[0] == resolution]
                            for resolution in self.resolutions}
        # Every bucket, coded by position; an option's buckets are its resolution's ratios in table order.
        self.keys = [BucketKey(resolution, num_frames, ratio) for resolution, num_frames, *_ in self.options
                     for ratio in self.ratio_sizes[resolution]]
        self._key_base = np.cumsum([0] + [len(self.ratio_sizes[option[0]]) for option in self.options[:-1]])
        self._option_resolution = np.array([self.resolutions.index(option[0]) for option in self.options])
        # Each ratio name parsed once: height / width per resolution, in table order.
        self._ratio_values = {resolution: np.array([ratio_value(name) for name in self.ratio_sizes[resolution]])
                              for resolution in self.resolutions}

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
        return bool(self.fits_many(*_one_sample(total_frames, height, width, interval))[0])

    def fits_many(self, total_frames: np.ndarray, height: np.ndarray, width: np.ndarray,
                  interval: np.ndarray) -> np.ndarray:
        """Bool array of :meth:`fits_any` for arrays of samples."""
        fits = np.zeros(len(total_frames), bool)
        for enough in self._enough_per_option(total_frames, height, width, interval):
            fits |= enough
        return fits

    def assign(self, total_frames: int, height: int, width: int, interval: int,
               rng: np.random.Generator) -> BucketKey | None:
        """The bucket of a sample of ``total_frames`` frames of ``height x width``, or None (see module doc)."""
        code = int(self.assign_many(*_one_sample(total_frames, height, width, interval), rng)[0])
        return None if code == NO_BUCKET else self.keys[code]

    def assign_many(self, total_frames: np.ndarray, height: np.ndarray, width: np.ndarray, interval: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
        """Bucket codes (indices into :attr:`keys`, :data:`NO_BUCKET` for none) of samples, in order.

        Exactly :meth:`assign` called on each sample in turn with the same ``rng``: the same draws in the same
        order. Samples are grouped by which options they have enough frames and pixels for; each group's
        decisions compile to a small program of draws; samples whose program draws nothing are decided
        without a loop, the others walk their program on one stream of draws.
        """
        patterns, inverse = _unique_patterns(self._enough_per_option(total_frames, height, width, interval),
                                             len(total_frames))
        nodes: list[tuple[float, int, int]] = []
        entries = np.array([self._compile(pattern, nodes) for pattern in patterns], np.int32)[inverse]
        drawing = np.flatnonzero(entries >= 0)
        entries[drawing] = _run_programs(entries[drawing].tolist(), nodes, rng)
        option = -entries - _TERMINAL_OFFSET  # -1 for NO_BUCKET
        codes = np.full(len(total_frames), NO_BUCKET, np.int64)
        assigned = np.flatnonzero(option >= 0)
        resolution_of = self._option_resolution[option[assigned]]
        for position, resolution in enumerate(self.resolutions):
            members = assigned[resolution_of == position]
            if len(members):
                ratio = _closest(height[members] / width[members], self._ratio_values[resolution])
                codes[members] = self._key_base[option[members]] + ratio
        return codes

    def _enough_per_option(self, total_frames: np.ndarray, height: np.ndarray, width: np.ndarray,
                           interval: np.ndarray) -> list[np.ndarray]:
        """Per option (assignment order): which samples have enough pixels and frames for it."""
        pixels = np.asarray(height, np.int64) * np.asarray(width, np.int64)
        enough = []
        for resolution, num_frames, *_ in self.options:
            qualifies = pixels >= MIN_PIXEL_FRACTION * self.pixels[resolution]
            enough.append(qualifies & _enough_frames(np.asarray(total_frames), num_frames, np.asarray(interval)))
        return enough

    def _compile(self, pattern: tuple[bool, ...], nodes: list[tuple[float, int, int]]) -> int:
        """Draw program of samples with ``pattern`` (enough per option): its entry node, or its terminal.

        Built from the smallest resolution up, so each step knows where a skip or a drop continues.
        """
        next_resolution = NO_BUCKET
        for resolution in reversed(self.resolutions):
            continuation = next_resolution  # no frame count taken: try the next smaller resolution
            for option in reversed(self._options_of[resolution]):
                if not pattern[option]:
                    continue
                _, _, keep, take, _ = self.options[option]
                chosen = _add_node(nodes, keep, -(option + _TERMINAL_OFFSET), next_resolution)
                continuation = _add_node(nodes, take, chosen, continuation)
            next_resolution = continuation
        return next_resolution

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
