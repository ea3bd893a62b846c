"""Distributed batch sampler over buckets (or one fixed clip size), resumable mid-epoch.

Every epoch, from ``(seed, epoch)`` alone:

1. each eligible sample gets a target: a bucket of ``bucket_config`` (see :mod:`opensora_ae.data.buckets`)
   or, without buckets, the dataset's ``num_frames`` x ``image_size``;
2. samples of one target are shuffled and cut into batches of that target's batch size (a short last batch
   is dropped when ``drop_last``), so each batch holds one bucket;
3. all batches are shuffled (when ``shuffle``) and, with ``mixed_image_ratio > 0``, that share of batches
   (drawn per batch) become single frames (``num_frames = 1``, same height, width and batch size);
4. the list is cut to a multiple of ``world_size`` (``drop_last``) or padded by repeating its first
   batches, and rank ``r`` takes batches ``r, r + world_size, ...``: every rank gets the same number.

Batches are lists of :class:`~opensora_ae.data.datasets.SampleRequest`. ``state_dict()`` records
``(seed, epoch, batches done on this rank)``; after ``load_state_dict`` the next iteration yields exactly
the remaining batches of that epoch, then later epochs start from their beginning.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from opensora_ae.data.buckets import Bucket, BucketKey
from opensora_ae.data.datasets import SampleRequest, VideoTextDataset

logger = logging.getLogger(__name__)

MIXED_STRATEGIES = (None, "mixed_video_image")
# Independent random streams of one epoch.
_ASSIGN, _SHUFFLE, _MIXED, _ITEMS = range(4)

Target = tuple[int, int, int]  # (num_frames, height, width)


class BucketBatchSampler(Sampler[list[SampleRequest]]):
    """Yields this rank's batches of :class:`SampleRequest` for one epoch (module docstring for the rules).

    Args:
        dataset: a :class:`VideoTextDataset` (needs ``infos``, ``interval``, ``can_provide``, ``num_frames``,
            ``image_size``).
        batch_size: batch size without buckets (buckets carry their own).
        bucket_config: Open-Sora bucket config, or None for fixed ``num_frames`` x ``image_size``.
        seed, rank, world_size, shuffle, drop_last: as in ``DistributedSampler``.
        mixed_strategy: None or ``"mixed_video_image"``; mixed_image_ratio: share of single-frame batches.
    """

    def __init__(self, dataset: VideoTextDataset, batch_size: int = 1, bucket_config: dict | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 mixed_strategy: str | None = None, mixed_image_ratio: float = 0.0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mixed_strategy not in MIXED_STRATEGIES:
            raise ValueError(f"mixed_strategy {mixed_strategy!r} is unknown; use None or 'mixed_video_image'")
        if not 0.0 <= mixed_image_ratio <= 1.0:
            raise ValueError(f"mixed_image_ratio must be in [0, 1], got {mixed_image_ratio}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.bucket = Bucket(bucket_config) if bucket_config else None
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.image_ratio = mixed_image_ratio if mixed_strategy == "mixed_video_image" else 0.0
        self.epoch = 0
        self._start_batch = 0  # batches to skip in the next iteration (set by load_state_dict)
        self._done = 0  # batches yielded so far in the current epoch on this rank
        self._cache: tuple[tuple[int, int], list[list[SampleRequest]]] | None = None
        self.eligible, self.excluded = self._eligible_samples()
        if not self.eligible:
            raise ValueError(f"no sample of {dataset.data_path} fits {self._describe_targets()}: all "
                             f"{len(dataset)} files are unreadable, too short or too small")

    def _describe_targets(self) -> str:
        if self.bucket is not None:
            return f"any bucket of bucket_config {sorted(self.bucket.resolutions)}"
        return f"num_frames={self.dataset.num_frames} (sample_rate/fps_max applied)"

    def _fits(self, index: int) -> bool:
        info = self.dataset.infos[index]
        if self.bucket is not None:
            return self.bucket.fits_any(info.num_frames, info.height, info.width, self.dataset.interval(index))
        return self.dataset.can_provide(index, self.dataset.num_frames)

    def _eligible_samples(self) -> tuple[list[int], dict[str, str]]:
        """Readable samples that fit some target; the others (path -> reason) are warned about once each."""
        eligible, excluded = [], dict(self.dataset.unreadable)
        for index, info in enumerate(self.dataset.infos):
            if info is None:
                continue
            if self._fits(index):
                eligible.append(index)
                continue
            path = self.dataset.paths[index]
            kind = "image" if info.num_frames == 1 else f"{info.num_frames} frames of {info.height}x{info.width}"
            reason = f"{path} ({kind}) is too short or too small for {self._describe_targets()}"
            excluded[path] = reason
            logger.warning("skipping %s", reason)
        return eligible, excluded

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def _epoch_rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, stream])

    def _targets(self) -> dict[Target | BucketKey, list[int]]:
        """Samples grouped by target, in index order."""
        groups: dict[Target | BucketKey, list[int]] = {}
        if self.bucket is None:
            groups[(self.dataset.num_frames, *self.dataset.image_size)] = [
                index for index in self.eligible if self.dataset.infos[index] is not None]
            return groups
        rng = self._epoch_rng(_ASSIGN)
        for index in self.eligible:
            info = self.dataset.infos[index]
            if info is None:  # failed at read time (num_workers=0 shares this dataset object)
                continue
            key = self.bucket.assign(info.num_frames, info.height, info.width, self.dataset.interval(index), rng)
            if key is not None:
                groups.setdefault(key, []).append(index)
        return groups

    def _size_and_batch(self, target: Target | BucketKey) -> tuple[Target, int]:
        if isinstance(target, BucketKey):
            return self.bucket.size(target), self.bucket.batch_size(target)
        return target, self.batch_size

    def epoch_batches(self) -> list[list[SampleRequest]]:
        """All batches of the current epoch for this rank (cached per epoch)."""
        if self._cache is not None and self._cache[0] == (self.seed, self.epoch):
            return self._cache[1]
        shuffle_rng = self._epoch_rng(_SHUFFLE)
        batches: list[tuple[Target, list[int]]] = []
        for target, indices in sorted(self._targets().items(), key=lambda item: str(item[0])):
            size, batch_size = self._size_and_batch(target)
            order = shuffle_rng.permutation(indices).tolist() if self.shuffle else indices
            for begin in range(0, len(order), batch_size):
                chunk = order[begin:begin + batch_size]
                if len(chunk) == batch_size or not self.drop_last:
                    batches.append((size, chunk))
        if self.shuffle:
            batches = [batches[i] for i in shuffle_rng.permutation(len(batches))]
        batches = self._mix_images(batches)
        requests = self._to_requests(self._shard(batches))
        self._cache = ((self.seed, self.epoch), requests)
        return requests

    def _mix_images(self, batches: list[tuple[Target, list[int]]]) -> list[tuple[Target, list[int]]]:
        if self.image_ratio <= 0:
            return batches
        draws = self._epoch_rng(_MIXED).random(len(batches))
        return [((1, size[1], size[2]), chunk) if draw < self.image_ratio else (size, chunk)
                for draw, (size, chunk) in zip(draws, batches)]

    def _shard(self, batches: list) -> list:
        if not batches:
            return []
        if self.drop_last:
            batches = batches[:len(batches) // self.world_size * self.world_size]
        else:
            padding = -len(batches) % self.world_size
            batches = batches + [batches[i % len(batches)] for i in range(padding)]
        return batches[self.rank::self.world_size]

    def _to_requests(self, batches: list[tuple[Target, list[int]]]) -> list[list[SampleRequest]]:
        """Attach a per-(epoch, rank, position) seed to every sample so clip starts and crops are reproducible."""
        seeds = self._epoch_rng(_ITEMS + self.rank).integers(0, 2**63 - 1, size=sum(len(c) for _, c in batches))
        requests, position = [], 0
        for (num_frames, height, width), chunk in batches:
            requests.append([SampleRequest(index, num_frames, height, width, int(seeds[position + k]))
                             for k, index in enumerate(chunk)])
            position += len(chunk)
        return requests

    def __iter__(self) -> Iterator[list[SampleRequest]]:
        batches = self.epoch_batches()
        start, self._start_batch = self._start_batch, 0
        self._done = start
        for batch in batches[start:]:
            self._done += 1
            yield batch

    def __len__(self) -> int:
        """Batches the next iteration yields on this rank."""
        return max(0, len(self.epoch_batches()) - self._start_batch)

    def state_dict(self, num_batches_done: int | None = None) -> dict[str, int]:
        """Resume point. With DataLoader workers the sampler runs ahead of the training loop, so pass the
        number of batches the loop has consumed in this epoch; without it the count of yielded batches is used.
        """
        done = self._done if num_batches_done is None else int(num_batches_done)
        return {"seed": self.seed, "epoch": self.epoch, "batches_done": done, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the recorded epoch after its first ``batches_done`` batches."""
        if state.get("world_size", self.world_size) != self.world_size:
            raise ValueError(f"sampler state was saved with world_size={state['world_size']}, now {self.world_size}: "
                             f"mid-epoch resume needs the same number of ranks")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._start_batch = int(state["batches_done"])
        self._done = self._start_batch
