"""Million-row manifests: vectorised buckets and sampler equal the per-sample algorithm, linear failure
bookkeeping, CSV edge cases, symlink-safe listing, parallel probing and its cache."""

import logging
import math
import os
import time

import numpy as np
import pytest

from data_utils import write_indexed_video, write_text_as_video
from opensora_ae.data import BucketBatchSampler, VideoTextDataset
from opensora_ae.data import probing
from opensora_ae.data.buckets import Bucket, BucketKey
from opensora_ae.data.datasets import SampleRequest
from opensora_ae.data.loader import VideoDataLoader
from opensora_ae.data.manifest import read_csv_manifest
from opensora_ae.data.transforms import frame_interval
from opensora_ae.data.video_io import VideoReadError

BUCKETS = {"256px": {1: (0.6, 8), 17: (1.0, 4), 33: ((0.7, 0.5), 2), 65: ((1.0, 0.3), 1)},
           "480p": {1: (0.5, 4), 17: ((0.4, 0.6), 2), 49: (0.5, 1)},
           "720p_max": {17: ((0.5, 0.5), 1), 33: (0.3, 1)},
           "144p": {17: (1.0, 8)}}
SIZES = [(720, 1280), (1280, 720), (480, 640), (300, 300), (1080, 1920), (256, 256), (544, 960), (200, 100)]


# ---- reference: the per-sample algorithm the vectorised code replaced (kept here to check equality) ----

def _reference_enough(total, num_frames, interval):
    if total == 1 or num_frames == 1:
        return total == 1 and num_frames == 1
    return (num_frames - 1) * interval + 1 <= total


def _reference_ratio(name):
    width, height = (float(part) for part in name.split(":"))
    return height / width


def _reference_assign(bucket, total, height, width, interval, rng):
    for resolution in bucket.resolutions:
        if height * width < 0.8 * bucket.pixels[resolution]:
            continue
        chosen = None
        for num_frames, keep, take, _ in bucket.frame_options[resolution]:
            if not _reference_enough(total, num_frames, interval):
                continue
            if take < 1 and rng.random() >= take:
                continue
            chosen = num_frames, keep
            break
        if chosen is None:
            continue
        if chosen[1] >= 1 or rng.random() < chosen[1]:
            ratios = bucket.ratio_sizes[resolution]
            ratio = min(ratios, key=lambda name: abs(_reference_ratio(name) - height / width))
            return BucketKey(resolution, chosen[0], ratio)
    return None


def _reference_batches(samples, *, bucket_config, batch_size, fixed, seed, epoch, rank, world_size, shuffle,
                       drop_last, image_ratio):
    """One rank's batches as (index, num_frames, height, width, seed) lists, sample by sample."""
    bucket = Bucket(bucket_config) if bucket_config else None

    def rng(stream):
        return np.random.default_rng([seed, epoch, stream])

    groups = {}
    assign_rng = rng(0)
    for index, (total, height, width, interval) in enumerate(samples):
        if bucket is None:
            if _reference_enough(total, fixed[0], interval) or (fixed[0] == 1 and total >= 1):
                groups.setdefault(fixed, []).append(index)
            continue
        fits = any(height * width >= 0.8 * bucket.pixels[res] and _reference_enough(total, n, interval)
                   for res in bucket.resolutions for n, *_ in bucket.frame_options[res])
        if fits:
            key = _reference_assign(bucket, total, height, width, interval, assign_rng)
            if key is not None:
                groups.setdefault(key, []).append(index)
    shuffle_rng, batches = rng(1), []
    for target, indices in sorted(groups.items(), key=lambda item: str(item[0])):
        size, size_batch = (bucket.size(target), bucket.batch_size(target)) if bucket else (target, batch_size)
        order = shuffle_rng.permutation(indices).tolist() if shuffle else indices
        for begin in range(0, len(order), size_batch):
            chunk = order[begin:begin + size_batch]
            if len(chunk) == size_batch or not drop_last:
                batches.append((size, chunk))
    if shuffle:
        batches = [batches[i] for i in shuffle_rng.permutation(len(batches))]
    if image_ratio > 0:
        draws = rng(2).random(len(batches))
        batches = [((1, s[1], s[2]), c) if d < image_ratio else (s, c) for d, (s, c) in zip(draws, batches)]
    if batches:
        if drop_last:
            batches = batches[:len(batches) // world_size * world_size]
        else:
            batches = batches + [batches[i % len(batches)] for i in range(-len(batches) % world_size)]
    batches = batches[rank::world_size]
    seeds = rng(3 + rank).integers(0, 2**63 - 1, size=sum(len(c) for _, c in batches))
    result, position = [], 0
    for (num_frames, height, width), chunk in batches:
        result.append([(i, num_frames, height, width, int(seeds[position + k])) for k, i in enumerate(chunk)])
        position += len(chunk)
    return result


# ---- fixtures ----

def _write_rows(path, rows, header="path,num_frames,height,width,fps"):
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def varied_csv(tmp_path_factory):
    """3000 rows: images, short and long videos, 8 sizes, 24/30/60 fps (intervals differ with fps_max)."""
    rng = np.random.default_rng(4)
    rows = []
    for i in range(3000):
        height, width = SIZES[int(rng.integers(len(SIZES)))]
        total = 1 if i % 9 == 0 else int(rng.integers(5, 200))
        fps = 0 if total == 1 else float(rng.choice([24, 30, 60]))
        rows.append((f"clips/v{i}.mp4", total, height, width, fps))
    return _write_rows(tmp_path_factory.mktemp("varied") / "meta.csv", rows)


def _samples(dataset):
    return [(info.num_frames, info.height, info.width, dataset.interval(i)) for i, info in enumerate(dataset.infos)]


def _flat(batches):
    return [[(r.index, r.num_frames, r.height, r.width, r.seed) for r in batch] for batch in batches]


# ---- vectorised equals per-sample ----

def test_vectorised_assignment_equals_per_sample_draws_and_leaves_the_same_generator_state(varied_csv, monkeypatch):
    monkeypatch.setattr("opensora_ae.data.buckets.DRAW_BLOCK", 7)  # many refills, one mid-program
    dataset = VideoTextDataset(varied_csv, fps_max=30)
    samples = _samples(dataset)
    assert {s[3] for s in samples} == {1, 2}
    bucket = Bucket(BUCKETS)
    expected_rng, rng = np.random.default_rng(11), np.random.default_rng(11)
    expected = [_reference_assign(bucket, *sample, expected_rng) for sample in samples]
    columns = [np.array(column, np.int64) for column in zip(*samples)]
    codes = bucket.assign_many(*columns, rng)
    assert [None if c < 0 else bucket.keys[c] for c in codes] == expected
    assert len({key for key in expected if key}) > 15 and expected.count(None) > 100
    assert rng.random() == expected_rng.random()  # exactly as many draws as the per-sample loop
    fits = bucket.fits_many(*columns)
    assert fits.tolist() == [bucket.fits_any(*sample) for sample in samples]


@pytest.mark.parametrize("resolutions,frame_counts", [(["256px"], 25), (["256px", "480p", "720p"], 22)])
def test_many_options_equal_per_sample_draws(varied_csv, resolutions, frame_counts):
    """25 options (patterns found by sorting) and 66 options (more than one 62-bit pattern word)."""
    config = {name: {1 + 8 * k: ((0.8, 0.6) if k % 2 else 0.7, 1) for k in range(frame_counts)}
              for name in resolutions}
    bucket = Bucket(config)
    samples = _samples(VideoTextDataset(varied_csv))[:600]
    expected_rng, rng = np.random.default_rng(2), np.random.default_rng(2)
    expected = [_reference_assign(bucket, *sample, expected_rng) for sample in samples]
    codes = bucket.assign_many(*(np.array(column, np.int64) for column in zip(*samples)), rng)
    assert [None if c < 0 else bucket.keys[c] for c in codes] == expected and rng.random() == expected_rng.random()
    assert len(bucket.options) == len(resolutions) * frame_counts and len(set(expected)) > 20


@pytest.mark.parametrize("shuffle,drop_last,image_ratio,world_size", [
    (True, True, 0.0, 3), (True, False, 0.3, 4), (False, False, 0.0, 2), (True, True, 0.5, 1)])
def test_vectorised_sampler_gives_the_same_batches_as_per_sample_planning(varied_csv, shuffle, drop_last,
                                                                          image_ratio, world_size):
    dataset = VideoTextDataset(varied_csv, fps_max=30)
    samples = _samples(dataset)
    for bucket_config in (BUCKETS, None):
        for epoch in (0, 3):
            for rank in range(world_size):
                sampler = BucketBatchSampler(
                    dataset, batch_size=3, bucket_config=bucket_config, seed=7, rank=rank, world_size=world_size,
                    shuffle=shuffle, drop_last=drop_last, mixed_strategy="mixed_video_image",
                    mixed_image_ratio=image_ratio)
                sampler.set_epoch(epoch)
                expected = _reference_batches(
                    samples, bucket_config=bucket_config, batch_size=3, fixed=(17, 256, 256), seed=7, epoch=epoch,
                    rank=rank, world_size=world_size, shuffle=shuffle, drop_last=drop_last, image_ratio=image_ratio)
                assert expected and _flat(sampler) == expected


def test_excluded_samples_are_one_summary_warning(tmp_path, caplog):
    rows = [(f"v{i}.mp4", 5 if i < 50 else 40, 256, 256, 24) for i in range(80)]
    dataset = VideoTextDataset(_write_rows(tmp_path / "short.csv", rows), num_frames=17)
    with caplog.at_level(logging.WARNING, logger="opensora_ae.data"):
        sampler = BucketBatchSampler(dataset, batch_size=2, rank=0, world_size=2)
        BucketBatchSampler(dataset, batch_size=2, rank=1, world_size=2)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "skipping 50 of 80 files" in warnings[0] and "v0.mp4" in warnings[0]
    assert len(sampler.excluded) == 50 and "too short" in sampler.excluded[str(tmp_path / "v0.mp4")]


# ---- failure bookkeeping ----

@pytest.fixture(scope="module")
def large_dataset(tmp_path_factory):
    rows = "".join(f"clips/v{i}.mp4,40,256,256,24\n" for i in range(250_000))
    csv = tmp_path_factory.mktemp("large") / "large.csv"
    csv.write_text("path,num_frames,height,width,fps\n" + rows)
    return VideoTextDataset(str(csv), num_frames=17)


def test_100k_recorded_failures_take_under_a_second(large_dataset):
    loader = VideoDataLoader(large_dataset, BucketBatchSampler(large_dataset, batch_size=4))
    logging.getLogger("opensora_ae.data").setLevel(logging.ERROR)  # time the bookkeeping, not the log output
    try:
        paths = [f"/data/clips/v{i}.mp4" for i in range(100_000)]
        begin = time.process_time()  # CPU time: the CI cores are shared
        for path in paths:
            loader._record_failure(path, "corrupt")
        elapsed = time.process_time() - begin
    finally:
        logging.getLogger("opensora_ae.data").setLevel(logging.NOTSET)
    assert len(loader.failed_files) == 100_000 and elapsed < 1.0, elapsed
    with pytest.raises(VideoReadError, match="more than half"):
        for i in range(100_000, 125_001):
            loader._record_failure(f"/data/clips/v{i}.mp4", "corrupt")


def test_replacement_cost_does_not_grow_with_the_dataset(large_dataset):
    request_rng = np.random.default_rng(0)
    request = SampleRequest(0, 17, 64, 64)
    begin = time.process_time()
    picks = [large_dataset._replacement(request, request_rng) for _ in range(2000)]
    assert time.process_time() - begin < 1.0
    assert len(set(picks)) > 1900 and all(large_dataset.can_provide(p, 17) for p in picks)


# ---- CSV edge cases ----

@pytest.fixture()
def three_videos(tmp_path):
    for name, frames in (("a", 12), ("b", 20), ("c", 9)):
        write_indexed_video(tmp_path / f"{name}.mp4", frames)
    return tmp_path


def test_invalid_num_frames_rows_are_probed_with_one_warning(three_videos, caplog):
    csv = _write_rows(three_videos / "bad.csv", [("a.mp4", -5, 24, 32, 24), ("b.mp4", "nan", 24, 32, 24),
                                                 ("c.mp4", "inf", 24, 32, 24), ("a.mp4", 0, 24, 32, 24),
                                                 ("b.mp4", 20, 24, 32, 24)])
    with caplog.at_level(logging.WARNING, logger="opensora_ae.data"):
        dataset = VideoTextDataset(csv)
    assert [info.num_frames for info in dataset.infos] == [12, 20, 9, 12, 20]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and csv in warnings[0] and "4 row(s)" in warnings[0]
    assert "row 1 num_frames='-5'" in warnings[0] and "row 4 num_frames='0'" in warnings[0]


def test_excel_bom_csv_reads_and_non_utf8_is_one_line(three_videos):
    text = "path,num_frames,height,width,fps\na.mp4,12,24,32,24\n"
    (three_videos / "excel.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    dataset = VideoTextDataset(str(three_videos / "excel.csv"))
    assert list(dataset.paths) == [str(three_videos / "a.mp4")] and dataset.infos[0].num_frames == 12
    (three_videos / "latin1.csv").write_bytes((text + "caf\u00e9.mp4,3,24,32,24\n").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv is not UTF-8 text: line 3 has byte 0xe9") as err:
        VideoTextDataset(str(three_videos / "latin1.csv"))
    assert "\n" not in str(err.value)


def test_short_rows_and_non_ascii_paths(three_videos):
    os.rename(three_videos / "a.mp4", three_videos / "\u00e4.mp4")
    csv = three_videos / "mixed.csv"
    csv.write_text("path,num_frames,height,width,fps,text\n\u00e4.mp4,12,24,32,24,x\nb.mp4\n\n,1,2,3,4\n"
                   f"{three_videos / 'c.mp4'},9,24,32,24\n", encoding="utf-8")
    dataset = VideoTextDataset(str(csv))
    assert list(dataset.paths) == [str(three_videos / name) for name in ("\u00e4.mp4", "b.mp4", "c.mp4")]
    assert [info.num_frames for info in dataset.infos] == [12, 20, 9]


def test_quoted_csv_equals_the_unquoted_fast_path(tmp_path, monkeypatch):
    monkeypatch.setattr("opensora_ae.data.manifest.CSV_CHUNK_BYTES", 64)  # many blocks, some falling back
    rows = [(f"dir/clip {i}.mp4", 10 + i, 240, 320, 24) for i in range(40)] + [("dir/e.mp4", "", 240, 320, 24)]
    unquoted = read_csv_manifest(_write_rows(tmp_path / "plain.csv", rows))
    quoted_rows = [(f'"{p}"', f'"{n}"', h, w, f) for p, n, h, w, f in rows]
    quoted = read_csv_manifest(_write_rows(tmp_path / "quoted.csv", quoted_rows))
    for table in (unquoted, quoted):
        assert list(table.paths) == [str(tmp_path / p) for p, *_ in rows]
        assert table.infos.num_frames.tolist() == [10 + i for i in range(40)] + [0]
        assert table.to_probe.tolist() == [40] and table.infos.height.tolist() == [240] * 40 + [0]
    comma = read_csv_manifest(_write_rows(tmp_path / "comma.csv", [('"a,b.mp4"', 5, 16, 16, 24)]))
    assert list(comma.paths) == [str(tmp_path / "a,b.mp4")] and comma.infos[0].num_frames == 5


# ---- folder listing ----

def test_symlink_loops_list_each_real_file_once(tmp_path):
    root = tmp_path / "data"
    write_indexed_video(root / "x" / "a.mp4", 4)
    write_indexed_video(root / "y" / "b.mp4", 4)
    os.symlink(root, root / "x" / "loop_to_root")
    os.symlink(root / "x", root / "y" / "loop_to_x")
    os.symlink(root / "y" / "b.mp4", root / "x" / "c.mp4")  # a second name for b.mp4
    dataset = VideoTextDataset(str(root), num_frames=1, image_size=8)
    assert sorted(os.path.realpath(p) for p in dataset.paths) == [str(root / "x" / "a.mp4"), str(root / "y" / "b.mp4")]


# ---- probing ----

def test_process_pool_probing_equals_in_process(three_videos):
    write_text_as_video(three_videos / "bad.mp4")
    paths = [str(three_videos / f"{name}.mp4") for name in "abcab"] + [str(three_videos / "bad.mp4")]
    pooled = probing.probe_files(paths, workers=2, chunk_size=2)
    inline = probing.probe_files(paths, workers=1)
    assert pooled.num_frames.tolist() == inline.num_frames.tolist() == [12, 20, 9, 12, 20, 0]
    assert pooled.ok.tolist() == [True] * 5 + [False] and "bad.mp4" in pooled.reasons[5]
    assert pooled.reasons == inline.reasons


def test_probe_cache_next_to_the_csv_makes_the_next_run_skip_probing(three_videos, monkeypatch):
    csv = three_videos / "plain.csv"
    csv.write_text("path\na.mp4\nb.mp4\nc.mp4\n")
    first = VideoTextDataset(str(csv))
    assert os.path.isfile(str(csv) + probing.CACHE_SUFFIX)

    def no_probing(*args, **kwargs):
        raise AssertionError("probed although the cache matches")

    monkeypatch.setattr("opensora_ae.data.datasets.probe_files", no_probing)
    again = VideoTextDataset(str(csv))
    assert list(again.infos) == list(first.infos) and again.infos[1].num_frames == 20
    csv.write_text("path\nc.mp4\nb.mp4\n")  # new content, new key: probed again
    with pytest.raises(AssertionError, match="probed although"):
        VideoTextDataset(str(csv))


def test_probe_cache_falls_back_to_the_user_cache(three_videos, tmp_path_factory, monkeypatch):
    user_cache = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    csv = three_videos / "fallback.csv"
    csv.write_text("path\na.mp4\n")
    os.mkdir(str(csv) + probing.CACHE_SUFFIX)  # the location next to the CSV cannot take a file
    VideoTextDataset(str(csv))
    cached = list((user_cache / "opensora_ae" / "probe").glob("*.npz"))
    assert [p.stem for p in cached] == [probing.csv_key(str(csv))]
    monkeypatch.setattr("opensora_ae.data.datasets.probe_files", lambda *a, **k: pytest.fail("probed again"))
    assert VideoTextDataset(str(csv)).infos[0].num_frames == 12


def test_frame_intervals_column_matches_frame_interval(varied_csv):
    dataset = VideoTextDataset(varied_csv, sample_rate=2, fps_max=25)
    expected = [frame_interval(info.fps, 2, 25) for info in dataset.infos]
    assert dataset.intervals().tolist() == expected and set(expected) == {2, 3}
    assert math.isclose(dataset.infos.fps.mean(), np.mean([info.fps for info in dataset.infos]))
