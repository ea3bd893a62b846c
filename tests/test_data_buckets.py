"""Open-Sora bucket semantics: resolution tables, assignment, batch sizes, probabilities."""

import numpy as np
import pytest

from opensora_ae.data.buckets import ASPECT_RATIOS, Bucket, BucketKey, aspect_ratio_sizes, closest_ratio, num_pixels


def test_resolution_tables():
    assert num_pixels("256px") == 256 * 256 and num_pixels("720p") == 1280 * 720
    assert num_pixels("256px_ar1:1") == 256 * 256
    for name in ("144p", "240p", "256px", "360p", "480p", "512px", "720p", "1024px", "1080p"):
        table = ASPECT_RATIOS[name]
        assert table["1:1"][0] == table["1:1"][1]
        for ratio, (height, width) in table.items():
            assert height % 16 == 0 and width % 16 == 0
            assert abs(height * width - num_pixels(name)) < 0.1 * num_pixels(name)
            w, h = (float(x) for x in ratio.split(":"))
            assert abs(height / width - h / w) / (h / w) < 0.12
    assert ASPECT_RATIOS["720p"]["16:9"] == (720, 1280) and ASPECT_RATIOS["720p"]["9:16"] == (1280, 720)
    assert ASPECT_RATIOS["256px"]["1:1"] == (256, 256) and ASPECT_RATIOS["512px"]["1:1"] == (512, 512)
    assert aspect_ratio_sizes("256px_ar1:1") == {"1:1": (256, 256)}
    assert aspect_ratio_sizes("720p_ar16:9") == {"16:9": (720, 1280)}
    with pytest.raises(ValueError, match="like '256px'"):
        num_pixels("big")


def test_aspect_ratio_snaps_to_closest():
    table = ASPECT_RATIOS["360p"]
    assert closest_ratio(1080, 1920, table) == "16:9"
    assert closest_ratio(1920, 1080, table) == "9:16"
    assert closest_ratio(500, 510, table) == "1:1"
    assert closest_ratio(480, 640, table) == "4:3"


def test_assignment_to_largest_fitting_bucket():
    bucket = Bucket({"256px_ar1:1": {32: (1.0, 1)}, "512px": {1: (1.0, 16), 17: (1.0, 2), 96: (1.0, 1)}})
    rng = np.random.default_rng(0)
    # 720p video with 100 frames: 512px (>= 0.8 * 512^2 pixels), 96 frames, 16:9
    assert bucket.assign(100, 720, 1280, 1, rng) == BucketKey("512px", 96, "16:9")
    # 50 frames: 96 does not fit, 17 does
    assert bucket.assign(50, 720, 1280, 1, rng) == BucketKey("512px", 17, "16:9")
    # frame interval 2: 96 frames need 191 source frames
    assert bucket.assign(150, 720, 1280, 2, rng) == BucketKey("512px", 17, "16:9")
    # too few pixels for 512px (< 0.8 * 262144) -> 256px, which is square only
    assert bucket.assign(40, 360, 480, 1, rng) == BucketKey("256px_ar1:1", 32, "1:1")
    assert bucket.assign(10, 360, 480, 1, rng) is None  # too short for 32, and 1 is for images only
    assert bucket.assign(1, 720, 1280, 1, rng) == BucketKey("512px", 1, "16:9")  # an image
    assert bucket.assign(1, 256, 256, 1, rng) is None  # image, but 256px has no 1-frame bucket
    assert bucket.assign(100, 100, 100, 1, rng) is None  # too small for every resolution
    assert bucket.assign(int(0.8 * 512 * 512) // 512 + 1, 410, 512, 1, rng).resolution == "512px"  # 0.8x rule


def test_bucket_sizes_and_batch_sizes():
    bucket = Bucket({"256px_ar1:1": {32: (1.0, 3)}, "512px": {1: (0.5, 16), 96: ((1.0, 0.3), 1)}})
    assert bucket.size(BucketKey("256px_ar1:1", 32, "1:1")) == (32, 256, 256)
    assert bucket.size(BucketKey("512px", 96, "16:9")) == (96, *ASPECT_RATIOS["512px"]["16:9"])
    assert bucket.batch_size(BucketKey("256px_ar1:1", 32, "1:1")) == 3
    assert bucket.batch_size(BucketKey("512px", 1, "1:1")) == 16
    with pytest.raises(ValueError, match="probability, batch_size"):
        Bucket({"256px": {17: 1.0}})


def test_keep_probability_with_fixed_seed():
    bucket = Bucket({"512px": {1: (0.5, 16)}, "256px": {1: (1.0, 4)}})
    rng = np.random.default_rng(123)
    keys = [bucket.assign(1, 720, 1280, 1, rng) for _ in range(4000)]
    share_512 = sum(key.resolution == "512px" for key in keys) / len(keys)
    assert abs(share_512 - 0.5) < 0.03
    # dropped from 512px, the sample falls to 256px (kept with probability 1)
    assert all(key is not None for key in keys)
    # same seed, same draws
    rng_again = np.random.default_rng(123)
    assert keys == [bucket.assign(1, 720, 1280, 1, rng_again) for _ in range(4000)]


def test_take_probability_skips_to_next_frame_count():
    bucket = Bucket({"512px": {17: (1.0, 2), 96: ((1.0, 0.3), 1)}})
    rng = np.random.default_rng(7)
    frames = [bucket.assign(120, 720, 1280, 1, rng).num_frames for _ in range(4000)]
    assert abs(frames.count(96) / len(frames) - 0.3) < 0.03
    assert set(frames) == {17, 96}
    # (keep, take) with keep < 1: taken 96 w.p. 0.5, then kept w.p. 0.5; otherwise 17 (kept always)
    bucket = Bucket({"512px": {17: (1.0, 2), 96: ((0.5, 0.5), 1)}})
    results = [bucket.assign(120, 720, 1280, 1, rng) for _ in range(4000)]
    assert abs(sum(r is not None and r.num_frames == 96 for r in results) / 4000 - 0.25) < 0.03
