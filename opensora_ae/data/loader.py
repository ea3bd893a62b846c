"""The one entry point training and inference use to get batches: :func:`build_dataloader`.

::

    loader, sampler = build_dataloader(
        dict(type="video_text", data_path="data/train.csv", num_frames=17, image_size=(256, 256)),
        batch_size=4,                       # used when bucket_config is None
        bucket_config=None,                 # or {"256px_ar1:1": {17: (1.0, 4)}}
        num_workers=2, prefetch_factor=2,   # prefetch_factor only with workers
        seed=0, rank=0, world_size=1,
        mixed_strategy=None, mixed_image_ratio=0.0,
        shuffle=True, drop_last=True,       # shuffle=False + dataset training=False for inference
    )
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        for step, batch in enumerate(loader):
            x = batch["video"]              # float B C T H W in [-1, 1], one bucket per batch
            ...
            ckpt["sampler"] = sampler.state_dict(num_batches_done=step + 1)
        # loader.last_epoch_skipped: files skipped this epoch (also logged as one warning line when any)

A batch is ``{"video": B C T H W, "path": [str], "num_frames"/"height"/"width": LongTensor[B] (source
metadata), "fps": FloatTensor[B], "skipped": [(path, reason)], "num_skipped": int}``.
To resume mid-epoch, ``sampler.load_state_dict(ckpt["sampler"])`` before iterating: the next pass yields
the remaining batches of the saved epoch (call ``set_epoch`` only for the epochs after it).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from torch.utils.data import DataLoader

from opensora_ae.data.datasets import VideoTextDataset, collate_samples, unreadable_error
from opensora_ae.data.sampler import BucketBatchSampler
from opensora_ae.data.video_io import VideoReadError
from opensora_ae.registry import DATASETS, build

logger = logging.getLogger(__name__)

FAILURE_WARNINGS = 20  # read failures warned about one by one; later ones only counted


class VideoDataLoader(DataLoader):
    """DataLoader that reports skipped files in the main process, whatever ``num_workers`` is.

    Each file that fails while reading is warned about once (the first time it is seen; after
    :data:`FAILURE_WARNINGS` files only counted, in one line per epoch), files left out
    before the epoch (unreadable, too short) are counted every epoch, and the per-epoch total is logged at the
    end of each full pass and kept in ``last_epoch_skipped``. When more than half of the dataset's files have
    proved unreadable, iteration stops with an error naming a few of them.
    """

    def __init__(self, dataset: VideoTextDataset, batch_sampler: BucketBatchSampler, **kwargs: Any):
        super().__init__(dataset, batch_sampler=batch_sampler, collate_fn=collate_samples, **kwargs)
        self._failures = FailureLog(dataset)
        self.failed_files = self._failures.files  # path -> reason, failures seen while reading (all epochs)
        self.last_epoch_skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next pass yields (delegates to the sampler)."""
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.batch_sampler.epoch
        failed_this_epoch: set[str] = set()
        for batch in super().__iter__():
            for path, reason in batch["skipped"]:
                failed_this_epoch.add(path)
                self._record_failure(path, reason)
            if batch["video"] is None:
                raise VideoReadError(f"every sample of a batch failed to read (last: {batch['skipped'][-1][1]})")
            yield batch
        excluded = self.batch_sampler.excluded
        self.last_epoch_skipped = len(excluded) + len(failed_this_epoch - excluded.keys())
        # A clean epoch is a debug line: small datasets end an epoch every few steps (the training loop records
        # every epoch's count in metrics.jsonl either way).
        logger.log(logging.WARNING if self.last_epoch_skipped else logging.DEBUG,
                   "epoch %d: %d of %d files skipped (%d left out before the epoch, %d failed while reading)",
                   epoch, self.last_epoch_skipped, len(self.dataset), len(excluded), len(failed_this_epoch))

    def _record_failure(self, path: str, reason: str) -> None:
        if self._failures.record(path, reason):
            self._warn_failure(len(self.failed_files), reason)

    @staticmethod
    def _warn_failure(count: int, reason: str) -> None:
        if count <= FAILURE_WARNINGS:
            logger.warning("skipping unreadable file: %s", reason)
        elif count == FAILURE_WARNINGS + 1:
            logger.warning("more files fail to read; they are counted in the end-of-epoch line and listed in "
                           "loader.failed_files")


class FailureLog:
    """Files that failed while reading (path -> reason), counted in O(1) per failure.

    ``record`` raises the "more than half unreadable" error once probing's unreadable files and these
    together pass half of the dataset.
    """

    def __init__(self, dataset: VideoTextDataset):
        self.files: dict[str, str] = {}
        self.dataset = dataset
        self.limit = len(dataset) / 2
        self.unreadable = len(dataset.unreadable)  # probing's, plus each new failure not among them

    def record(self, path: str, reason: str) -> bool:
        """Remember a failure; True when the file had not failed before."""
        if path in self.files:
            return False
        self.files[path] = reason
        if path not in self.dataset.unreadable:
            self.unreadable += 1
            if self.unreadable > self.limit:
                everything = sorted(set(self.dataset.unreadable) | set(self.files))
                raise unreadable_error(everything, len(self.dataset), self.dataset.data_path)
        return True


def build_dataloader(dataset_cfg: dict, *, batch_size: int = 1, bucket_config: dict | None = None,
                     num_workers: int = 0, prefetch_factor: int | None = None, seed: int = 0, rank: int = 0,
                     world_size: int = 1, mixed_strategy: str | None = None, mixed_image_ratio: float = 0.0,
                     shuffle: bool = True, drop_last: bool = True, pin_memory: bool = False
                     ) -> tuple[VideoDataLoader, BucketBatchSampler]:
    """Build the dataset from ``dataset_cfg`` (registry ``type``/``target``; ``type`` defaults to
    ``"video_text"``), its :class:`BucketBatchSampler` and a :class:`VideoDataLoader` (see module docstring).
    """
    cfg = dict(dataset_cfg)
    if "type" not in cfg and "target" not in cfg:
        cfg["type"] = "video_text"
    dataset = build(cfg, DATASETS)
    sampler = BucketBatchSampler(dataset, batch_size=batch_size, bucket_config=bucket_config, seed=seed,
                                 rank=rank, world_size=world_size, shuffle=shuffle, drop_last=drop_last,
                                 mixed_strategy=mixed_strategy, mixed_image_ratio=mixed_image_ratio)
    extra: dict[str, Any] = {}
    if num_workers > 0 and prefetch_factor is not None:
        extra["prefetch_factor"] = prefetch_factor
    loader = VideoDataLoader(dataset, sampler, num_workers=num_workers, pin_memory=pin_memory, **extra)
    return loader, sampler
