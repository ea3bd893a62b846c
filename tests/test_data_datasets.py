"""Datasets (CSV, folder, single file), transforms and the bad-file policy."""

import logging

import numpy as np
import pytest
import torch

from data_utils import (frame_indices, indexed_frames, write_empty_file, write_indexed_video, write_text_as_video,
                        write_truncated_video)
from opensora_ae.data import build_dataloader
from opensora_ae.data.datasets import SampleRequest, VideoTextDataset, collate_samples
from opensora_ae.data.transforms import frame_interval, resize_crop, to_uint8_frames, uint8_to_model_range
from opensora_ae.data.video_io import VideoReadError
from opensora_ae.registry import DATASETS, build
from PIL import Image


def _write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, row)) for row in rows]) + "\n")


@pytest.fixture()
def media(tmp_path):
    """clips/a.mp4 (40 frames), clips/sub/deeper/b.mp4 (20 frames, 30 fps), pic.png."""
    write_indexed_video(tmp_path / "clips" / "a.mp4", 40)
    write_indexed_video(tmp_path / "clips" / "sub" / "deeper" / "b.mp4", 20, fps=30.0)
    Image.fromarray(indexed_frames(1)[0]).save(tmp_path / "pic.png")
    return tmp_path


def test_csv_relative_paths_optional_metadata_and_extra_columns(media):
    csv = media / "train.csv"
    _write_csv(csv, ["path", "text", "num_frames", "height", "width", "fps"],
               [["clips/a.mp4", "a cat", 40, 24, 32, 24], ["clips/sub/deeper/b.mp4", "a dog", "", "", "", ""]])
    dataset = build(dict(type="video_text", data_path=str(csv), num_frames=4, image_size=(16, 16)), DATASETS)
    assert list(dataset.paths) == [str(media / "clips" / "a.mp4"), str(media / "clips" / "sub" / "deeper" / "b.mp4")]
    assert dataset.infos[1] == (20, 30.0, 24, 32)  # probed
    item = dataset[SampleRequest(0, 4, 16, 16, seed=1)]
    assert item["video"].shape == (3, 4, 16, 16) and item["video"].dtype == torch.float32
    assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0
    assert (item["path"], item["num_frames"], item["height"], item["width"], item["fps"]) == \
        (dataset.paths[0], 40, 24, 32, 24.0)


def test_csv_without_path_column_is_a_one_line_error(tmp_path):
    csv = tmp_path / "bad.csv"
    _write_csv(csv, ["video", "text"], [["a.mp4", "x"]])
    with pytest.raises(ValueError, match="no 'path' column") as err:
        VideoTextDataset(str(csv))
    assert "\n" not in str(err.value)


def test_folder_dataset_is_recursive_and_single_file_works(media):
    dataset = VideoTextDataset(str(media), num_frames=1, image_size=8)
    names = sorted(p.rsplit("/", 1)[1] for p in dataset.paths)
    assert names == ["a.mp4", "b.mp4", "pic.png"]
    single = VideoTextDataset(str(media / "clips" / "a.mp4"), num_frames=8, image_size=(12, 16), training=False)
    item = single[0]
    assert len(single) == 1 and item["video"].shape == (3, 8, 12, 16)
    # inference mode (training=False): first frames and a centre crop, so two reads are identical
    np.testing.assert_array_equal(item["video"].numpy(), single[0]["video"].numpy())


def test_empty_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="holds no videos"):
        VideoTextDataset(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoTextDataset(str(tmp_path / "nowhere.csv"))


def test_training_clip_start_is_reproducible_and_within_bounds(media):
    dataset = VideoTextDataset(str(media / "clips" / "a.mp4"), num_frames=5, sample_rate=3, image_size=(24, 32))
    starts = set()
    for seed in range(12):
        clip = to_uint8_frames(dataset[SampleRequest(0, 5, 24, 32, seed)]["video"])
        indices = frame_indices(clip)
        assert indices == list(range(indices[0], indices[0] + 15, 3)) and indices[-1] <= 39
        assert indices == frame_indices(to_uint8_frames(dataset[SampleRequest(0, 5, 24, 32, seed)]["video"]))
        starts.add(indices[0])
    assert len(starts) > 3


def test_fps_max_sets_the_frame_interval():
    assert frame_interval(60.0, sample_rate=1, fps_max=30) == 2
    assert frame_interval(30000 / 1001, sample_rate=1, fps_max=30) == 1
    assert frame_interval(50.0, sample_rate=1, fps_max=24) == 3
    assert frame_interval(24.0, sample_rate=2, fps_max=30) == 2
    assert frame_interval(0.0, sample_rate=1, fps_max=24) == 1  # images


def test_resize_crop_covers_then_crops():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 40:] = 255  # right half white
    centre = resize_crop(frames, 20, 20)
    assert centre.shape == (3, 2, 20, 20)
    # 40x80 -> 20x40, centre 20x20 covers columns 10..30: left half black, right half white
    assert centre[:, :, :, :9].max() == -1.0 and centre[:, :, :, 11:].min() == 1.0
    rng = np.random.default_rng(0)
    crops = {float(resize_crop(frames, 20, 20, rng).mean()) for _ in range(20)}
    assert len(crops) > 2
    upscaled = resize_crop(frames[:, :10, :10], 20, 30)
    assert upscaled.shape == (3, 2, 20, 30)


@pytest.mark.parametrize("make_bad", [write_empty_file, write_text_as_video, write_truncated_video])
def test_bad_files_are_skipped_with_one_warning_each(media, caplog, make_bad):
    make_bad(media / "clips" / "bad.mp4")
    with caplog.at_level(logging.WARNING, logger="opensora_ae.data"):
        loader, sampler = build_dataloader(dict(data_path=str(media / "clips"), num_frames=4, image_size=16),
                                           batch_size=1, drop_last=False)
        batches = list(loader)
    warnings = [r.getMessage() for r in caplog.records if "bad.mp4" in r.getMessage()]
    assert len(warnings) == 1 and "skipping unreadable" in warnings[0]
    assert sorted(p for b in batches for p in b["path"]) == sorted(str(p) for p in (media / "clips").rglob("[ab].mp4"))
    assert loader.last_epoch_skipped == 1
    assert any("epoch 0: 1 of 3 files skipped" in r.getMessage() for r in caplog.records)


def test_a_clean_epoch_logs_its_count_at_debug_level_only(media, caplog):
    with caplog.at_level(logging.DEBUG, logger="opensora_ae.data"):
        loader, _ = build_dataloader(dict(data_path=str(media / "clips"), num_frames=4, image_size=16),
                                     batch_size=1, drop_last=False)
        for _ in range(2):
            list(loader)
    lines = [r for r in caplog.records if "files skipped" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.DEBUG] * 2 and loader.last_epoch_skipped == 0
    assert "0 of 2 files skipped" in lines[0].getMessage()


def test_more_than_half_unreadable_is_an_error_naming_them(tmp_path):
    write_indexed_video(tmp_path / "good.mp4", 10)
    for name in ("x.mp4", "y.mp4"):
        write_text_as_video(tmp_path / name)
    with pytest.raises(VideoReadError, match=r"2 of 3 files .* unreadable.*x\.mp4"):
        VideoTextDataset(str(tmp_path))


def test_too_short_videos_are_left_out(media, caplog):
    with caplog.at_level(logging.WARNING, logger="opensora_ae.data"):
        loader, sampler = build_dataloader(dict(data_path=str(media / "clips"), num_frames=30, image_size=16),
                                           batch_size=1)
    assert [r for r in caplog.records if "b.mp4" in r.getMessage() and "too short" in r.getMessage()]
    assert [b["path"] for b in loader] == [[str(media / "clips" / "a.mp4")]]
    with pytest.raises(ValueError, match="no sample"):
        build_dataloader(dict(data_path=str(media / "clips"), num_frames=64, image_size=16), batch_size=1)


def test_failure_at_read_time_is_replaced_and_reported_in_the_main_process(media, caplog):
    """b.mp4 claims 100 frames in the CSV but has 20: it fails inside a worker and a readable clip replaces it."""
    for name in ("c", "d"):
        write_indexed_video(media / "clips" / f"{name}.mp4", 40)
    csv = media / "lying.csv"
    rows = [[f"clips/{n}.mp4", 40, 24, 32, 24] for n in "acd"] + [["clips/sub/deeper/b.mp4", 100, 24, 32, 30]]
    _write_csv(csv, ["path", "num_frames", "height", "width", "fps"], rows)
    with caplog.at_level(logging.WARNING, logger="opensora_ae.data"):
        loader, _ = build_dataloader(dict(data_path=str(csv), num_frames=30, image_size=16), batch_size=2,
                                     num_workers=2, prefetch_factor=1)
        batches = list(loader)
    assert [b["video"].shape for b in batches] == [(2, 3, 30, 16, 16)] * 2
    assert sum(b["num_skipped"] for b in batches) == 1
    assert all("b.mp4" not in p for b in batches for p in b["path"])
    assert loader.last_epoch_skipped == 1 and list(loader.failed_files) == [str(media / "clips/sub/deeper/b.mp4")]
    assert len([r for r in caplog.records if "skipping unreadable" in r.getMessage()]) == 1


def test_collate_drops_failed_items():
    good = {"video": torch.zeros(3, 1, 2, 2), "path": "a", "num_frames": 5, "height": 2, "width": 2, "fps": 24.0,
            "skipped": [("b", "corrupt")]}
    batch = collate_samples([good, {"video": None, "skipped": [("c", "corrupt")]}, None])
    assert batch["video"].shape == (1, 3, 1, 2, 2) and batch["num_skipped"] == 2 and batch["path"] == ["a"]
    assert collate_samples([{"video": None, "skipped": []}])["video"] is None


@pytest.mark.parametrize("transform_name", ["resize_crop", "resize_crop_torch", "random_crop"])
def test_uint8_clips_map_to_the_float_clips_bit_for_bit(media, transform_name):
    cfg = dict(data_path=str(media / "clips"), num_frames=4, image_size=(12, 16), transform_name=transform_name)
    as_float = VideoTextDataset(**cfg)
    as_uint8 = VideoTextDataset(**cfg, video_dtype="uint8")
    for index in range(len(as_float)):
        request = SampleRequest(index, 4, 12, 16, seed=index)
        expected, got = as_float[request]["video"], as_uint8[request]["video"]
        assert got.dtype == torch.uint8 and got.shape == expected.shape == (3, 4, 12, 16) and got.is_contiguous()
        assert torch.equal(uint8_to_model_range(got), expected)


def test_unknown_video_dtype_is_one_line_naming_the_key(media):
    with pytest.raises(ValueError, match=r"^dataset.video_dtype='float16': use one of 'float32', 'uint8'$"):
        VideoTextDataset(str(media / "clips"), video_dtype="float16")
