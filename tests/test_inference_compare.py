import numpy as np
from PIL import Image

from opensora_ae.data.video_io import read_video
from opensora_ae.inference.compare import ERROR_GAIN, HEADER_HEIGHT, side_by_side, video_psnr, write_comparison


def _videos(seed=0):
    rng = np.random.default_rng(seed)
    orig = rng.integers(0, 256, size=(6, 32, 48, 3), dtype=np.uint8)
    recn = np.clip(orig.astype(np.int16) + rng.integers(-8, 9, size=orig.shape), 0, 255).astype(np.uint8)
    return orig, recn


def test_side_by_side_panels_and_error_gain():
    orig, recn = _videos()
    panels = side_by_side(orig, recn)
    assert panels.shape == (6, 32, 144, 3)
    np.testing.assert_array_equal(panels[:, :, :48], orig)
    np.testing.assert_array_equal(panels[:, :, 48:96], recn)
    expected = np.clip(np.abs(orig.astype(float) - recn.astype(float)) * ERROR_GAIN, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(panels[:, :, 96:], expected)


def test_video_psnr_matches_numpy():
    orig, recn = _videos(1)
    mse = ((orig / 255.0 - recn / 255.0) ** 2).reshape(len(orig), -1).mean(axis=1)
    assert abs(video_psnr(orig, recn) - float(np.mean(10 * np.log10(1 / mse)))) < 1e-4
    assert video_psnr(orig, orig) == 100.0


def test_write_comparison_files(tmp_path):
    orig, recn = _videos(2)
    result = write_comparison(orig, recn, "clip", tmp_path, fps=8, num_rows=3)
    # 32-row clips are enlarged 4x (to 128 rows) under a label strip
    panel_height = HEADER_HEIGHT + 4 * 32
    grid = np.asarray(Image.open(result["png"]))
    assert grid.shape == (3 * panel_height, 4 * 144, 3)
    np.testing.assert_array_equal(grid[HEADER_HEIGHT:panel_height:4, ::4], side_by_side(orig, recn)[0])
    video = read_video(result["mp4"])
    assert video.shape == (6, panel_height, 4 * 144, 3)
    assert result["psnr"] > 20
