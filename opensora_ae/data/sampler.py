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

The plan is computed on numpy arrays (vectorised bucket assignment with the same draws as assigning sample
by sample, see :meth:`~opensora_ae.data.buckets.Bucket.assign_many`), and a rank keeps only its own batches
as arrays (:class:`EpochBatches`); a million-sample epoch creates no per-sample Python objects.

Batches are lists of :class:`~opensora_ae.data.datasets.SampleRequest`. ``state_dict()`` records
``(seed, epoch, batches done on this rank)``; after ``load_state_dict`` the next iteration yields exactly
the remaining batches of that epoch, then later epochs start from their beginning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from opensora_ae.data.buckets import NO_BUCKET, Bucket, BucketKey
from opensora_ae.data.datasets import SampleRequest, VideoTextDataset

logger = logging.getLogger(__name__)

MIXED_STRATEGIES = (None, "mixed_video_image")
# Independent random streams of one epoch.
_ASSIGN, _SHUFFLE, _MIXED, _ITEMS = range(4)

Target = tuple[int, int, int]  # (num_frames, height, width)


def _concat(arrays: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(empty_shape, np.int64)


class EpochBatches(Sequence):
    """One rank's batches of an epoch as arrays; ``batches[i]`` builds batch ``i``'s :class:`SampleRequest` list.

    Only the batches asked for become Python objects, so planning an epoch of a million samples stays a
    few arrays.
    """

    def __init__(self, indices: np.ndarray, seeds: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                 sizes: np.ndarray):
        self.indices, self.seeds = indices, seeds  # per sample, in batch order
        self.starts, self.lengths, self.sizes = starts, lengths, sizes  # per batch; sizes (num_frames, h, w)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, batch: int) -> list[SampleRequest]:
        if not -len(self) <= batch < len(self):
            raise IndexError(f"batch {batch} out of range for {len(self)} batches")
        begin = int(self.starts[batch])
        span = slice(begin, begin + int(self.lengths[batch]))
        num_frames, height, width = (int(value) for value in self.sizes[batch])
        return [SampleRequest(index, num_frames, height, width, seed)
                for index, seed in zip(self.indices[span].tolist(), self.seeds[span].tolist())]


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
        self._cache: tuple[tuple[int, int], EpochBatches] | None = None
        self.eligible, self._excluded_rows = self._eligible_samples()
        self._excluded: dict[str, str] | None = None
        if not len(self.eligible):
            raise ValueError(f"no sample of {dataset.data_path} fits {self._describe_targets()}: all "
                             f"{len(dataset)} files are unreadable, too short or too small")
        self._warn_excluded()

    def _describe_targets(self) -> str:
        if self.bucket is not None:
            return f"any bucket of bucket_config {sorted(self.bucket.resolutions)}"
        return f"num_frames={self.dataset.num_frames} (sample_rate/fps_max applied)"

    def _eligible_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the readable samples that fit some target, and of the readable ones that fit none."""
        infos, everything = self.dataset.infos, np.arange(len(self.dataset))
        if self.bucket is not None:
            fits = infos.known & self.bucket.fits_many(infos.num_frames, infos.height, infos.width,
                                                       self.dataset.intervals())
        else:
            fits = self.dataset.provides(everything, self.dataset.num_frames)
        return np.flatnonzero(fits), np.flatnonzero(infos.known & ~fits)

    def _warn_excluded(self) -> None:
        """One summary line on rank 0 (every rank leaves out the same files)."""
        count = len(self._excluded_rows)
        if not count or self.rank != 0:
            return
        examples = ", ".join(f"{self.dataset.paths[int(i)]} ({self._kind(int(i))})" for i in self._excluded_rows[:3])
        logger.warning("skipping %d of %d files that are too short or too small for %s, e.g. %s "
                       "(sampler.excluded lists them)", count, len(self.dataset), self._describe_targets(), examples)

    def _kind(self, index: int) -> str:
        infos = self.dataset.infos
        total = int(infos.num_frames[index])
        return "image" if total == 1 else f"{total} frames of {infos.height[index]}x{infos.width[index]}"

    def _exclusion_reason(self, index: int) -> str:
        return (f"{self.dataset.paths[index]} ({self._kind(index)}) is too short or too small for "
                f"{self._describe_targets()}")

    @property
    def excluded(self) -> dict[str, str]:
        """Files left out before every epoch: path -> reason (unreadable, too short or too small)."""
        if self._excluded is None:
            self._excluded = dict(self.dataset.unreadable)
            self._excluded.update((self.dataset.paths[int(i)], self._exclusion_reason(int(i)))
                                  for i in self._excluded_rows)
        return self._excluded

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def _epoch_rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, stream])

    def _targets(self) -> tuple[list[Target | BucketKey], np.ndarray, np.ndarray]:
        """``(targets, members, codes)``: the samples still readable and assigned, in index order, with the
        position of each one's target in ``targets``."""
        members = self.eligible[self.dataset.infos.known[self.eligible]]  # failed reads (num_workers=0) drop out
        if self.bucket is None:
            return [(self.dataset.num_frames, *self.dataset.image_size)], members, np.zeros(len(members), np.int64)
        infos = self.dataset.infos
        codes = self.bucket.assign_many(infos.num_frames[members], infos.height[members], infos.width[members],
                                        self.dataset.intervals()[members], self._epoch_rng(_ASSIGN))
        assigned = codes != NO_BUCKET
        return self.bucket.keys, members[assigned], codes[assigned]

    def _size_and_batch(self, target: Target | BucketKey) -> tuple[Target, int]:
        if isinstance(target, BucketKey):
            return self.bucket.size(target), self.bucket.batch_size(target)
        return target, self.batch_size

    def epoch_batches(self) -> EpochBatches:
        """All batches of the current epoch for this rank (cached per epoch)."""
        if self._cache is not None and self._cache[0] == (self.seed, self.epoch):
            return self._cache[1]
        shuffle_rng = self._epoch_rng(_SHUFFLE)
        order, starts, lengths, sizes = self._group_batches(shuffle_rng)
        if self.shuffle:
            permutation = shuffle_rng.permutation(len(starts))
            starts, lengths, sizes = starts[permutation], lengths[permutation], sizes[permutation]
        sizes = self._mix_images(sizes)
        mine = self._shard(len(starts))
        batches = self._rank_batches(order, starts[mine], lengths[mine], sizes[mine])
        self._cache = ((self.seed, self.epoch), batches)
        return batches

    def _group_batches(self, shuffle_rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each target's samples shuffled and cut into batches, targets in the order of their names.

        Returns the concatenated sample order and, per batch, its start in it, its length and its
        ``(num_frames, height, width)``.
        """
        targets, members, codes = self._targets()
        by_code = np.argsort(codes, kind="stable")  # keeps index order inside each target
        present, first, counts = np.unique(codes[by_code], return_index=True, return_counts=True)
        parts, starts, lengths, sizes, offset = [], [], [], [], 0
        for position in sorted(range(len(present)), key=lambda p: str(targets[present[p]])):
            group = members[by_code[first[position]:first[position] + counts[position]]]
            size, batch_size = self._size_and_batch(targets[present[position]])
            parts.append(shuffle_rng.permutation(group) if self.shuffle else group)
            group_starts = np.arange(0, len(group), batch_size)
            group_lengths = np.minimum(batch_size, len(group) - group_starts)
            if self.drop_last:
                group_starts, group_lengths = group_starts[group_lengths == batch_size], \
                    group_lengths[group_lengths == batch_size]
            starts.append(group_starts + offset)
            lengths.append(group_lengths)
            sizes.append(np.tile(np.array(size, np.int64), (len(group_starts), 1)))
            offset += len(group)
        order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return (order, _concat(starts, (0,)), _concat(lengths, (0,)), _concat(sizes, (0, 3)))

    def _mix_images(self, sizes: np.ndarray) -> np.ndarray:
        if self.image_ratio <= 0:
            return sizes
        draws = self._epoch_rng(_MIXED).random(len(sizes))
        sizes = sizes.copy()
        sizes[draws < self.image_ratio, 0] = 1
        return sizes

    def _shard(self, num_batches: int) -> np.ndarray:
        """Positions of this rank's batches: cut to a multiple of world_size, or padded with the first ones."""
        if not num_batches:
            return np.zeros(0, np.int64)
        if self.drop_last:
            positions = np.arange(num_batches // self.world_size * self.world_size)
        else:
            positions = np.arange(num_batches + (-num_batches % self.world_size)) % num_batches
        return positions[self.rank::self.world_size]

    def _rank_batches(self, order: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                      sizes: np.ndarray) -> EpochBatches:
        """Gather this rank's samples and give each a per-(epoch, rank, position) seed for its clip start/crop."""
        ends = np.cumsum(lengths)
        within = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lengths, lengths)
        indices = order[np.repeat(starts, lengths) + within]
        seeds = self._epoch_rng(_ITEMS + self.rank).integers(0, 2**63 - 1, size=len(indices))
        return EpochBatches(indices, seeds, ends - lengths, lengths, sizes)

    def __iter__(self) -> Iterator[list[SampleRequest]]:
        batches = self.epoch_batches()
        start, self._start_batch = self._start_batch, 0
        self._done = start
        for position in range(start, len(batches)):
            self._done += 1
            yield batches[position]

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
