"""The Open-Sora protocol (their LPIPS definition, resize, crop and frame picking), Open-Sora 1.2's eval command
as written, --help, per-metric skips and a kept --output."""

from __future__ import annotations

import json
import os
import runpy
import warnings

import lpips as lpips_package
import numpy as np
import pytest
import torch

from inference_utils import write_random_alexnet
from opensora_ae.data.video_io import read_video, write_video
from opensora_ae.inference.evaluate import EvalOptions, MetricWeights, evaluate, prepare_frames
from opensora_ae.metrics import build_lpips, lpips_distance
from opensora_ae.metrics.protocols import opensora_frame_indices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_SCRIPT = os.path.join(REPO_ROOT, "scripts", "vae", "eval.py")
# Width x height, as the issue names them.
ODD_SIZES = [(480, 272), (400, 320), (176, 144), (240, 320)]


def texture(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """``T H W 3`` uint8: smooth random colour fields with fine noise, drifting by a pixel per frame."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, height // 8 + 2, width // 8 + 2 + frames)).astype(np.float32))
    field = torch.nn.functional.interpolate(coarse, scale_factor=8, mode="bilinear", align_corners=False)[0]
    field = field.permute(1, 2, 0).numpy() + rng.normal(0, 0.04, size=field.shape[1:] + (3,))
    video = np.stack([field[:height, t : t + width] for t in range(frames)])
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)


def degraded(video: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 10, size=video.shape)
    return np.clip(video + noise, 0, 255).round().astype(np.uint8)


def write(path, frames: np.ndarray) -> None:
    write_video(path, frames, fps=24, lossless=True, preset="ultrafast")


def bilinear_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Independent ``H W C`` float64 bilinear resize with half-pixel centres and edge clamping
    (``align_corners=False``, no antialias), as ``F.interpolate`` defines it for a size-based call."""
    in_h, in_w = image.shape[:2]

    def taps(out_size: int, in_size: int):
        source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        source = np.maximum(source, 0)
        low = np.minimum(np.floor(source).astype(int), in_size - 1)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, source - low

    y0, y1, fy = taps(out_h, in_h)
    x0, x1, fx = taps(out_w, in_w)
    top = image[y0][:, x0] * (1 - fx)[None, :, None] + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx)[None, :, None] + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def their_preprocess(frames: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """Open-Sora's rule written from its description: x / 255, short side to ``short_side`` with the long side
    floored, bilinear without antialias, crop offset ``round((size - crop) / 2)`` half to even. ``T H W C``."""
    height, width = frames.shape[1:3]
    if width < height:
        size = (int(np.floor(height / width * short_side)), short_side)
    else:
        size = (short_side, int(np.floor(width / height * short_side)))
    resized = np.stack([bilinear_resize(frame / 255.0, *size) for frame in frames.astype(np.float64)])
    top, left = (int(np.round((dim - crop) / 2)) for dim in size)
    return resized[:, top : top + crop, left : left + crop]


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    return str(write_random_alexnet(tmp_path_factory.mktemp("weights")))


def reference_lpips(alexnet_file: str, spatial: bool) -> lpips_package.LPIPS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_package.LPIPS(net="alex", version="0.1", spatial=spatial, pnet_rand=True, verbose=False)
    model.load_state_dict(build_lpips(alexnet_file).state_dict())
    return model.eval()


@pytest.mark.parametrize("width, height", ODD_SIZES)
def test_opensora_resize_and_crop_match_their_rule(width, height):
    frames = texture(width + height, 2, height, width)
    ours = prepare_frames(frames, 256, 256, "clip.mp4", float_resize=True)
    expected = their_preprocess(frames, 256, 256)
    assert ours.shape == (2, 3, 256, 256) and ours.dtype == torch.float32
    # float32 source coordinates in torch: ~1e-5 off a float64 resize; the protocols differ by > 1e-3.
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), expected, atol=2e-5, rtol=0)
    # Our own protocol differs there (antialiased uint8 resize, rounded long side, floored crop offset).
    default = prepare_frames(frames, 256, 256, "clip.mp4").permute(0, 2, 3, 1).numpy()
    assert np.abs(default - expected).max() > 1e-3


def test_opensora_sizes_and_offsets_are_floor_and_half_even():
    frames = texture(1, 1, 272, 480)
    # 480x272 -> 451x256 (floor of 451.76), crop offset (451 - 256) / 2 = 97.5 -> 98 (half to even).
    resized = prepare_frames(frames, 256, None, "clip.mp4", float_resize=True)
    assert resized.shape[-2:] == (256, 451)
    cropped = prepare_frames(frames, 256, 256, "clip.mp4", float_resize=True)
    torch.testing.assert_close(cropped, resized[:, :, :, 98 : 98 + 256])
    # 240x320 -> 256x341, offset 42.5 -> 42.
    tall = prepare_frames(texture(2, 1, 320, 240), 256, None, "clip.mp4", float_resize=True)
    assert tall.shape[-2:] == (341, 256)


def test_opensora_frame_indices_use_linspace():
    assert opensora_frame_indices(100, 16, 2)[-1] == 31  # ours takes frame 30 there
    assert list(opensora_frame_indices(100, 17, 1)) == list(range(17))
    # A video shorter than num_frames * sample_rate: int(20 / 32 * 16) = 10 frames spread over it.
    assert list(opensora_frame_indices(20, 16, 2)) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 19]


def test_spatial_lpips_equals_the_lpips_package(alexnet_file):
    model = build_lpips(alexnet_file)
    spatial_reference = reference_lpips(alexnet_file, spatial=True)
    mean_reference = reference_lpips(alexnet_file, spatial=False)
    real = torch.from_numpy(texture(3, 3, 67, 93)).permute(0, 3, 1, 2).float() / 255
    fake = torch.from_numpy(degraded(texture(3, 3, 67, 93), 4)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = spatial_reference(real * 2 - 1, fake * 2 - 1).mean(dim=(1, 2, 3))
        expected_mean = mean_reference(real * 2 - 1, fake * 2 - 1).flatten()
        ours = lpips_distance(model, real, fake, spatial=True)
        ours_mean = lpips_distance(model, real, fake)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(ours_mean, expected_mean, rtol=1e-5, atol=0)
    # The two definitions differ by more than the parity tolerance, so the test tells them apart.
    assert ((expected - expected_mean).abs() / expected).max() > 1e-4


def test_opensora_protocol_end_to_end_matches_their_pipeline(tmp_path, alexnet_file):
    """480x272 videos scored under --protocol opensora equal their preprocessing + numpy PSNR + their LPIPS."""
    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    real = texture(5, 6, 272, 480)
    fake = degraded(real, 6)
    write(real_dir / "a.mp4", real)
    write(fake_dir / "a.mp4", fake)
    options = EvalOptions(num_frames=3, sample_rate=2, resolution=256, crop_size=256, protocol="opensora",
                          sample_fps=24)
    results = evaluate(str(real_dir), str(fake_dir), ["psnr", "lpips"], options,
                       MetricWeights(lpips_backbone=alexnet_file))
    picked = [0, 2, 5]  # linspace(0, 5, 3) as int
    real_frames = their_preprocess(read_video(real_dir / "a.mp4")[picked], 256, 256)
    fake_frames = their_preprocess(read_video(fake_dir / "a.mp4")[picked], 256, 256)
    mse = ((real_frames - fake_frames) ** 2).mean(axis=(1, 2, 3))
    assert results["videos"]["a"]["psnr"] == pytest.approx(np.mean(20 * np.log10(1 / np.sqrt(mse))), abs=1e-4)
    reference = reference_lpips(alexnet_file, spatial=True)
    with torch.no_grad():
        to_input = lambda frames: torch.from_numpy(frames).permute(0, 3, 1, 2).float() * 2 - 1  # noqa: E731
        expected = np.mean([reference(to_input(real_frames[[t]]), to_input(fake_frames[[t]])).mean().item()
                            for t in range(3)])
    assert results["videos"]["a"]["lpips"] == pytest.approx(expected, rel=1e-4)
    assert "spatial=True" in results["definitions"]["lpips"]
    assert results["options"]["protocol"] == "opensora" and results["options"]["sample_fps"] == 24
    # The other definition on the same frames, chosen explicitly, is named and gives the package default.
    mean_options = EvalOptions(**{**results["options"], "lpips_spatial": False})
    averaged = evaluate(str(real_dir), str(fake_dir), ["lpips"], mean_options,
                        MetricWeights(lpips_backbone=alexnet_file))
    assert "spatial=False" in averaged["definitions"]["lpips"]
    with torch.no_grad():
        mean_reference = reference_lpips(alexnet_file, spatial=False)
        expected_mean = np.mean([mean_reference(to_input(real_frames[[t]]), to_input(fake_frames[[t]])).item()
                                 for t in range(3)])
    assert averaged["videos"]["a"]["lpips"] == pytest.approx(expected_mean, rel=1e-4)


def test_pair_too_small_for_one_metric_is_skipped_for_that_metric_only(tmp_path):
    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    write(real_dir / "tiny.mp4", texture(7, 2, 8, 8))
    write(fake_dir / "tiny.mp4", degraded(texture(7, 2, 8, 8), 8))
    write(real_dir / "big.mp4", texture(9, 2, 32, 32))
    write(fake_dir / "big.mp4", degraded(texture(9, 2, 32, 32), 10))
    results = evaluate(str(real_dir), str(fake_dir), ["psnr", "ssim"])
    assert results["metrics"]["psnr"]["count"] == 2 and results["metrics"]["ssim"]["count"] == 1
    assert "11x11 window" in results["skipped"]["metric_failed"]["ssim"]["tiny"]
    assert "ssim" not in results["videos"]["tiny"] and "psnr" in results["videos"]["tiny"]


def eval_main():
    """``main`` of scripts/vae/eval.py, loaded in this process (the script's own import is the slow part)."""
    return runpy.run_path(EVAL_SCRIPT)["main"]


def test_help_prints_usage_and_touches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        eval_main()(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "usage:" in printed and "--protocol" in printed and "--sample_fps" in printed
    assert os.listdir(tmp_path) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    write(real_dir / "a.mp4", texture(11, 2, 16, 16))
    write(fake_dir / "a.mp4", degraded(texture(11, 2, 16, 16), 12))
    output = tmp_path / "metrics.json"
    output.write_text('{"mine": 1}')
    arguments = ["--real_video_dir", str(real_dir), "--generated_video_dir", str(fake_dir), "--metric", "psnr",
                 "--device", "cpu", "--output", str(output)]
    main = eval_main()
    assert main(arguments) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads(output.read_text()) == {"mine": 1}
    assert main([*arguments, "--overwrite"]) == 0
    assert json.loads(output.read_text())["metrics"]["psnr"]["count"] == 1
    assert sorted(os.listdir(tmp_path)) == ["fake", "metrics.json", "real"]  # no temporary file left


@pytest.mark.slow
def test_open_sora_eval_command_runs_as_written(tmp_path, alexnet_file, monkeypatch, capsys):
    """Open-Sora 1.2's documented command, with the weights where their loaders cache them (torch hub)."""
    from opensora_ae.metrics import PWCNet

    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "alexnet-owt-7be5be79.pth").write_bytes(open(alexnet_file, "rb").read())
    torch.manual_seed(1)
    torch.save({key.replace("net", "module"): value for key, value in PWCNet().state_dict().items()},
               checkpoints / "network-default.pytorch")
    real = texture(13, 17, 24, 32)
    write(tmp_path / "A" / "clip.mp4", real)
    write(tmp_path / "B" / "clip.mp4", degraded(real, 14))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    status = eval_main()(
        "--batch_size 2 --real_video_dir A --generated_video_dir B --device cpu --sample_fps 24 --crop_size 256 "
        "--resolution 256 --num_frames 17 --sample_rate 1 --metric ssim psnr lpips flolpips".split()
    )
    printed = capsys.readouterr().out
    assert status == 0
    for name in ("ssim", "psnr", "lpips", "flolpips"):
        line = next(line for line in printed.splitlines() if line.startswith(name + " "))
        assert "error" not in line and line.split()[3] == "1", line  # one video scored


def test_opensora_resize_to_the_same_size_is_skipped_exactly():
    frames = texture(15, 2, 64, 64)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    interpolated = torch.nn.functional.interpolate(video, size=(64, 64), mode="bilinear", align_corners=False)
    ours = prepare_frames(frames, 64, 64, "clip.mp4", float_resize=True)
    assert torch.equal(ours, interpolated) and torch.equal(ours, video)
