"""The peer of ``bench_manifest.py``: Open-Sora 1.2's manifest path, re-implemented from its documented behaviour.

Open-Sora 1.2 (``opensora/datasets/{datasets,bucket,sampler}.py``) reads the CSV into a table and numbers the rows
(``id``); ``VariableVideoBatchSampler.group_by_bucket`` calls ``Bucket.get_bucket_id`` once per row (a pandas
``apply`` over rows, in parallel with pandarallel); ``__iter__`` pads/drops each bucket to whole batches, shuffles
every bucket and the bucket access order with a ``torch.Generator`` seeded ``seed + epoch``, trims the order to a
multiple of the world size and yields this rank's slice of every ``world_size`` accesses. The per-row bucket logic:

* resolutions from the largest pixel count down; one qualifies when ``H * W >= 0.8 * pixels``;
* every draw comes from ``np.random.default_rng(row_seed + bucket_index)``, a fresh generator per (row, resolution,
  frame count) tried, with ``row_seed = seed + id * num_bucket``;
* an image takes the resolution's 1-frame bucket with probability ``keep``; a video walks the frame counts from
  the largest down, skipping one with probability ``1 - take`` for ``(keep, take)`` pairs, takes the first it has
  more than ``t * frame_interval`` frames for, then is kept with probability ``keep`` (else the next resolution);
* the aspect ratio is the closest ``height / width`` of the resolution's table.

Differences, all in the peer's favour: rows come from the stdlib ``csv`` module as dicts (no pandas here; a pandas
row ``apply`` builds a Series per row and is slower), on one core (no pandarallel), and ``len(sampler)`` - which
repeats ``group_by_bucket`` in their code - is not timed.
"""

from __future__ import annotations

import csv
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np
import torch

from opensora_ae.data.buckets import MIN_PIXEL_FRACTION, aspect_ratio_sizes, num_pixels, ratio_value


def read_rows(path: str) -> list[dict[str, Any]]:
    """The CSV as one dict per row with its ``id`` (Open-Sora keeps a pandas table with an ``id`` column)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for index, row in enumerate(rows):
        row["id"] = index
    return rows


class OpenSoraBucket:
    """Open-Sora 1.2's ``Bucket``: per-resolution criteria ordered largest first, one index per (resolution,
    frame count), aspect-ratio tables per resolution."""

    def __init__(self, bucket_config: dict) -> None:
        ordered = sorted(bucket_config, key=num_pixels, reverse=True)
        self.probs = OrderedDict((hw, OrderedDict(sorted(bucket_config[hw].items(), reverse=True))) for hw in ordered)
        self.pixels = {hw: num_pixels(hw) for hw in ordered}
        self.ratios = {hw: aspect_ratio_sizes(hw) for hw in ordered}
        self.index: dict[str, dict[int, int]] = {}
        counter = 0
        for hw, frames in self.probs.items():
            self.index[hw] = {}
            for t in frames:
                self.index[hw][t] = counter
                counter += 1
        self.num_bucket = sum(len(self.ratios[hw]) * len(frames) for hw, frames in self.probs.items())

    @staticmethod
    def _keep_take(prob: Any) -> tuple[float, float | None]:
        return (prob[0], prob[1]) if isinstance(prob, tuple) else (prob, None)

    def bucket_id(self, frames: int, height: int, width: int, frame_interval: int, seed: int
                  ) -> tuple[str, int, str] | None:
        for hw, criteria in self.probs.items():
            if height * width < self.pixels[hw] * MIN_PIXEL_FRACTION:
                continue
            if frames == 1:
                if 1 not in criteria:
                    continue
                rng = np.random.default_rng(seed + self.index[hw][1])
                if rng.random() < self._keep_take(criteria[1][0])[0]:
                    return hw, 1, self._closest_ratio(hw, height, width)
                continue
            chosen = self._frame_count(hw, criteria, frames, frame_interval, seed)
            if chosen is None:
                continue
            t, rng = chosen
            keep = self._keep_take(criteria[t][0])[0]
            if keep >= 1 or rng.random() < keep:
                return hw, t, self._closest_ratio(hw, height, width)
        return None

    def _frame_count(self, hw: str, criteria: dict, frames: int, frame_interval: int, seed: int
                     ) -> tuple[int, np.random.Generator] | None:
        for t, (prob, _batch) in criteria.items():
            rng = np.random.default_rng(seed + self.index[hw][t])
            take = self._keep_take(prob)[1]
            if take is not None and rng.random() > take:
                continue
            if t != 1 and frames > t * frame_interval:
                return t, rng
        return None

    def _closest_ratio(self, hw: str, height: int, width: int) -> str:
        aspect = height / width
        return min(self.ratios[hw], key=lambda name: abs(ratio_value(name) - aspect))

    def batch_size(self, key: tuple[str, int, str]) -> int:
        return self.probs[key[0]][key[1]][1]

    def thw(self, key: tuple[str, int, str]) -> tuple[int, int, int]:
        return (key[1], *self.ratios[key[0]][key[2]])


class OpenSoraSampler:
    """Open-Sora 1.2's ``VariableVideoBatchSampler`` (shuffle, drop_last) for one rank."""

    def __init__(self, rows: list[dict[str, Any]], bucket_config: dict, rank: int, world_size: int,
                 seed: int = 0, epoch: int = 0, frame_interval: int = 1) -> None:
        self.rows, self.bucket = rows, OpenSoraBucket(bucket_config)
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.frame_interval = frame_interval

    def group_by_bucket(self) -> OrderedDict:
        groups: OrderedDict = OrderedDict()
        seed = self.seed + self.epoch
        for row in self.rows:
            key = self.bucket.bucket_id(int(row["num_frames"]), int(row["height"]), int(row["width"]),
                                        self.frame_interval, seed + row["id"] * self.bucket.num_bucket)
            if key is not None:
                groups.setdefault(key, []).append(row["id"])
        return groups

    def __iter__(self) -> Iterator[list[str]]:
        return self.plan(self.group_by_bucket())

    def plan(self, groups: OrderedDict) -> Iterator[list[str]]:
        """This rank's batches of one epoch from ``group_by_bucket``'s groups (modified in place, as theirs are)."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        batches_per_bucket = OrderedDict()
        for key, indices in groups.items():
            batch = self.bucket.batch_size(key)
            indices = indices[:len(indices) - len(indices) % batch]
            order = torch.randperm(len(indices), generator=generator).tolist()
            groups[key] = [indices[i] for i in order]
            batches_per_bucket[key] = len(indices) // batch
        access = [key for key, count in batches_per_bucket.items() for _ in range(count)]
        access = [access[i] for i in torch.randperm(len(access), generator=generator).tolist()]
        access = access[:len(access) - len(access) % self.world_size]
        consumed: dict = {}
        for step in range(len(access) // self.world_size):
            mine = None
            for position, key in enumerate(access[step * self.world_size:(step + 1) * self.world_size]):
                begin = consumed.get(key, 0)
                consumed[key] = begin + self.bucket.batch_size(key)
                if position == self.rank:
                    mine = (key, begin, consumed[key])
            key, begin, end = mine
            t, h, w = self.bucket.thw(key)
            yield [f"{index}-{t}-{h}-{w}" for index in groups[key][begin:end]]
