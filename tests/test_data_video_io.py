"""PyAV IO: exact clip reads on a lossless fixture, seeking, probing, images, writing, unreadable files."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from data_utils import (frame_indices, indexed_frames, write_empty_file, write_indexed_video, write_text_as_video,
                        write_truncated_video)
from opensora_ae.data.datasets import VideoTextDataset
from opensora_ae.data.video_io import (ClipTooShortError, VideoReadError, is_image, probe, read_clip, read_video,
                                       write_video)


@pytest.fixture(scope="module")
def lossless_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("io") / "indexed.mp4"
    frames = write_indexed_video(path, 120, fps=24.0, gop_size=24)
    return path, frames


@pytest.mark.parametrize("start,sample_rate,num_frames", [(0, 1, 5), (10, 1, 4), (24, 1, 3), (37, 3, 6),
                                                          (50, 7, 10), (119, 1, 1)])
def test_read_clip_returns_exact_frames(lossless_video, start, sample_rate, num_frames):
    path, frames = lossless_video
    clip = read_clip(path, num_frames, sample_rate, start)
    expected = frames[start:start + sample_rate * num_frames:sample_rate]
    assert clip.dtype == np.uint8 and clip.shape == expected.shape
    np.testing.assert_array_equal(clip, expected)


def test_read_video_and_probe(lossless_video):
    path, frames = lossless_video
    np.testing.assert_array_equal(read_video(path), frames)
    assert probe(path) == (120, 24.0, 24, 32)


def test_clip_past_the_end_is_too_short(lossless_video):
    path, _ = lossless_video
    with pytest.raises(ClipTooShortError, match="too short"):
        read_clip(path, 10, 2, 110)


def test_seek_decodes_only_from_the_keyframe_before_start(tmp_path):
    path = tmp_path / "long.mp4"
    write_indexed_video(path, 1200, fps=24.0, gop_size=48)
    stats = {}
    clip = read_clip(path, 8, 2, 1000, stats=stats)
    assert frame_indices(clip) == list(range(1000, 1016, 2))
    # keyframe at 960, last wanted frame 1014: 55 frames decoded, not 1015.
    assert stats["decoded_frames"] == 1014 - 960 + 1
    stats = {}
    read_clip(path, 4, 1, 960, stats=stats)
    assert stats["decoded_frames"] == 4  # start on a keyframe: nothing before it


def test_lossy_write_pads_odd_sizes_and_round_trips(tmp_path):
    frames = indexed_frames(12, 25, 31)
    frames[..., 2] = 128
    path = tmp_path / "odd.mp4"
    write_video(path, frames, fps=30.0, crf=10, preset="ultrafast")
    info = probe(path)
    assert (info.num_frames, info.height, info.width) == (12, 26, 32)
    assert info.fps == pytest.approx(30.0)
    decoded = read_video(path)
    # padding repeats the last row and column
    assert np.abs(decoded[:, 25].astype(int) - decoded[:, 24].astype(int)).mean() < 3.0
    assert np.abs(decoded[:, :, 31].astype(int) - decoded[:, :, 30].astype(int)).mean() < 3.0
    error = np.abs(decoded[:, :25, :31].astype(int) - frames.astype(int)).mean()
    assert error < 3.0


def test_images_read_as_single_frames(tmp_path):
    image = indexed_frames(1, 20, 30)[0]
    for ext in (".png", ".bmp", ".webp"):
        path = tmp_path / f"frame{ext}"
        Image.fromarray(image).save(path, **({"lossless": True} if ext == ".webp" else {}))
        assert is_image(path)
        assert probe(path) == (1, 0.0, 20, 30)
        np.testing.assert_array_equal(read_clip(path, 1), image[None])
        np.testing.assert_array_equal(read_video(path), image[None])
    with pytest.raises(ClipTooShortError):
        read_clip(tmp_path / "frame.png", 2)
    jpg = tmp_path / "frame.JPG"
    Image.fromarray(image).save(jpg, format="JPEG")
    assert read_clip(jpg, 1).shape == (1, 20, 30, 3)


@pytest.mark.parametrize("make_bad", [write_empty_file, write_text_as_video, write_truncated_video])
def test_unreadable_files_raise_an_error_naming_the_file(tmp_path, make_bad):
    path = tmp_path / "bad.mp4"
    make_bad(path)
    for read in (probe, lambda p: read_clip(p, 4), read_video):
        with pytest.raises(VideoReadError, match="bad.mp4"):
            read(path)
    with pytest.raises(VideoReadError, match="not found"):
        probe(tmp_path / "missing.mp4")


def write_png_header(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` RGB pixels (no real pixel data: Pillow refuses it first)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_images_are_unreadable_files(tmp_path):
    bomb = tmp_path / "bomb.png"
    write_png_header(bomb, 20000, 20000)  # 4e8 pixels: past 2 x PIL.Image.MAX_IMAGE_PIXELS
    assert 20000 * 20000 > 2 * Image.MAX_IMAGE_PIXELS
    for read in (probe, lambda p: read_clip(p, 1), read_video):
        with pytest.raises(VideoReadError, match="bomb.png.*decompression-bomb limit"):
            read(bomb)


def test_dataset_skips_and_names_a_decompression_bomb(tmp_path):
    write_indexed_video(tmp_path / "a.mp4", 12)
    write_indexed_video(tmp_path / "b.mp4", 12)
    write_png_header(tmp_path / "bomb.png", 20000, 20000)
    dataset = VideoTextDataset(str(tmp_path), num_frames=4, image_size=(16, 16))
    assert set(dataset.unreadable) == {str(tmp_path / "bomb.png")}
    assert "decompression-bomb" in dataset.unreadable[str(tmp_path / "bomb.png")]
