"""Bucket batch sampler: one bucket per batch, determinism, sharding, mid-epoch resume, mixed images."""

import numpy as np
import pytest

from data_utils import write_indexed_video
from opensora_ae.data import BucketBatchSampler, VideoTextDataset, build_dataloader
from opensora_ae.data.buckets import ASPECT_RATIOS

BUCKETS = {"256px_ar1:1": {8: (1.0, 3)}, "512px": {1: (0.5, 4), 16: ((1.0, 0.5), 2), 32: (1.0, 1)}}


@pytest.fixture(scope="module")
def metadata_csv(tmp_path_factory):
    """200 samples known from CSV metadata only (the sampler never opens files)."""
    rng = np.random.default_rng(0)
    rows = ["path,num_frames,height,width,fps"]
    sizes = [(720, 1280), (1280, 720), (480, 640), (300, 300), (1080, 1920)]
    for i in range(200):
        height, width = sizes[i % len(sizes)]
        num_frames = 1 if i % 7 == 0 else int(rng.integers(9, 60))
        rows.append(f"v{i}.mp4,{num_frames},{height},{width},24")
    csv = tmp_path_factory.mktemp("meta") / "meta.csv"
    csv.write_text("\n".join(rows) + "\n")
    return str(csv)


@pytest.fixture()
def metadata_dataset(metadata_csv):
    return VideoTextDataset(metadata_csv)


def _indices(batches):
    return [[r.index for r in batch] for batch in batches]


def _flat(batches):
    return [(r.index, r.num_frames, r.height, r.width, r.seed) for batch in batches for r in batch]


def test_each_batch_holds_one_bucket_with_its_batch_size(metadata_dataset):
    sampler = BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, seed=3)
    batches = list(sampler)
    assert batches and len(batches) == len(sampler)
    batch_sizes = {(8, 256, 256): 3, 1: 4, 16: 2, 32: 1}
    for batch in batches:
        shapes = {(r.num_frames, r.height, r.width) for r in batch}
        assert len(shapes) == 1
        num_frames, height, width = shapes.pop()
        assert (height, width) in ASPECT_RATIOS["512px"].values() or (height, width) == (256, 256)
        expected = batch_sizes[(8, 256, 256)] if (height, width) == (256, 256) else batch_sizes[num_frames]
        assert len(batch) == expected
        for r in batch:
            info = metadata_dataset.infos[r.index]
            assert info.num_frames >= r.num_frames and (info.num_frames == 1) == (r.num_frames == 1)
    indices = [r.index for batch in batches for r in batch]
    assert len(indices) == len(set(indices))


def test_same_seed_and_epoch_give_same_batches(metadata_dataset):
    first = BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, seed=5)
    second = BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, seed=5)
    assert _flat(first) == _flat(second)
    first.set_epoch(1)
    second.set_epoch(1)
    epoch_1 = _flat(first)
    assert epoch_1 == _flat(second)
    first.set_epoch(0)
    assert epoch_1 != _flat(first)
    assert _flat(BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, seed=6)) != _flat(first)


def test_ranks_get_disjoint_shards_of_equal_length(metadata_dataset):
    whole = BucketBatchSampler(metadata_dataset, batch_size=4, seed=1, world_size=1)
    shards = [list(BucketBatchSampler(metadata_dataset, batch_size=4, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert len({len(shard) for shard in shards}) == 1
    indices = [r.index for shard in shards for batch in shard for r in batch]
    assert len(indices) == len(set(indices))
    whole_batches = list(whole)
    assert len(shards[0]) == len(whole_batches) // 3
    assert _indices(whole_batches[: 3 * len(shards[0])])[1::3] == _indices(shards[1])
    padded = [list(BucketBatchSampler(metadata_dataset, batch_size=4, rank=r, world_size=7, drop_last=False))
              for r in range(7)]
    assert len({len(shard) for shard in padded}) == 1


def test_no_bucket_path_uses_fixed_size_and_batch_size(metadata_csv):
    metadata_dataset = VideoTextDataset(metadata_csv, num_frames=17, image_size=(64, 48))
    sampler = BucketBatchSampler(metadata_dataset, batch_size=5, seed=0)
    for batch in sampler:
        assert len(batch) == 5 and {(r.num_frames, r.height, r.width) for r in batch} == {(17, 64, 48)}
        assert all(metadata_dataset.infos[r.index].num_frames >= 17 for r in batch)
    assert set(sampler.excluded) == {p for p, i in zip(metadata_dataset.paths, metadata_dataset.infos)
                                     if i.num_frames < 17}


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_mid_epoch_gives_the_remaining_batches(metadata_dataset, world_size):
    for rank in range(world_size):
        reference = BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, seed=9, rank=rank,
                                       world_size=world_size)
        reference.set_epoch(2)
        expected = list(reference)
        running = BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, seed=9, rank=rank,
                                     world_size=world_size)
        running.set_epoch(2)
        iterator = iter(running)
        consumed = [next(iterator) for _ in range(5)]
        state = running.state_dict()
        assert state == {"seed": 9, "epoch": 2, "batches_done": 5, "world_size": world_size}
        assert running.state_dict(num_batches_done=3)["batches_done"] == 3

        resumed = BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, seed=0, rank=rank,
                                     world_size=world_size)
        resumed.load_state_dict(state)
        assert len(resumed) == len(expected) - 5
        assert consumed + list(resumed) == expected
        resumed.set_epoch(3)
        reference.set_epoch(3)
        assert list(resumed) == list(reference)  # the following epoch starts from its beginning
    with pytest.raises(ValueError, match="world_size"):
        BucketBatchSampler(metadata_dataset, bucket_config=BUCKETS, world_size=2).load_state_dict(state | {"world_size": 3})


def test_mixed_image_ratio_turns_that_share_of_batches_into_single_frames(metadata_csv):
    metadata_dataset = VideoTextDataset(metadata_csv, num_frames=9, image_size=(32, 32))
    sampler = BucketBatchSampler(metadata_dataset, batch_size=1, seed=0, mixed_strategy="mixed_video_image",
                                 mixed_image_ratio=0.2)
    frames = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        frames += [batch[0].num_frames for batch in sampler]
    assert set(frames) == {1, 9}
    assert abs(frames.count(1) / len(frames) - 0.2) < 0.04
    with pytest.raises(ValueError, match="mixed_strategy"):
        BucketBatchSampler(metadata_dataset, mixed_strategy="images_only")


def test_mixed_loader_end_to_end(tmp_path):
    for i in range(6):
        write_indexed_video(tmp_path / f"v{i}.mp4", 12)
    loader, sampler = build_dataloader(dict(data_path=str(tmp_path), num_frames=6, image_size=16), batch_size=2,
                                       seed=1, mixed_strategy="mixed_video_image", mixed_image_ratio=0.5)
    shapes = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        shapes += [tuple(batch["video"].shape) for batch in loader]
    assert set(shapes) == {(2, 3, 6, 16, 16), (2, 3, 1, 16, 16)}
