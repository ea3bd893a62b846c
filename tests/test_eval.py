"""Evaluation: pairing rules, one-read scoring, metric errors, and scripts/vae/eval.py end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from inference_utils import write_random_alexnet
from opensora_ae.data.video_io import write_video
from opensora_ae.inference import evaluate as evaluate_module
from opensora_ae.inference.evaluate import (EvalOptions, MetricSuite, MetricWeights, VideoPair, evaluate,
                                            format_table, pair_videos, pairing_key, prepare_frames,
                                            read_pairs_ahead)
from opensora_ae.metrics import PWCNet, flolpips, lpips_distance

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_frames(seed: int, num_frames: int = 4, height: int = 48, width: int = 64) -> np.ndarray:
    """``T H W 3`` uint8 frames: a smooth pattern drifting right, so consecutive frames have motion."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8, width // 8 + num_frames, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), np.uint8))
    return np.stack([big[:, 8 * t : 8 * t + width] for t in range(num_frames)])


def noisy_copy(frames: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames.astype(np.int16) + rng.integers(-20, 21, size=frames.shape), 0, 255).astype(np.uint8)


def write(path, frames: np.ndarray) -> None:
    write_video(path, frames, fps=8, lossless=True, preset="ultrafast")


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Random AlexNet backbone and PWC-Net saved like the real weight files (nothing is downloaded)."""
    folder = tmp_path_factory.mktemp("weights")
    alexnet = write_random_alexnet(folder)
    pwcnet = folder / "network-default.pytorch"
    torch.save({key.replace("net", "module"): value for key, value in PWCNet().state_dict().items()}, pwcnet)
    return str(alexnet), str(pwcnet)


@pytest.fixture(scope="module")
def video_folders(tmp_path_factory):
    """Open-Sora 2.0 layout: orig/<name>_orig.mp4 and recn/<name>_recn.mp4, plus unmatched files."""
    root = tmp_path_factory.mktemp("videos")
    real_dir, generated_dir = root / "orig", root / "recn"
    same = random_frames(0)
    changed = random_frames(1)
    changed_generated = noisy_copy(changed, 2)
    write(real_dir / "sub" / "same_orig.mp4", same)
    write(generated_dir / "sub" / "same_recn.mp4", same)
    write(real_dir / "changed_orig.mp4", changed)
    write(generated_dir / "changed_recn.mp4", changed_generated)
    write(real_dir / "lonely_orig.mp4", random_frames(3))
    write(generated_dir / "extra_recn.mp4", random_frames(4))
    return str(real_dir), str(generated_dir), changed, changed_generated


def test_pairing_key_strips_extension_and_one_known_suffix():
    assert pairing_key("a/b/clip_recn.mp4") == "a/b/clip"
    assert pairing_key("clip_orig.mp4") == "clip"
    assert pairing_key("clip_spatial.mkv") == "clip"
    assert pairing_key("clip_ori.mp4") == pairing_key("clip_rec.mp4") == "clip"
    assert pairing_key("clip.mp4") == "clip"
    assert pairing_key("take_recn_recn.mp4") == "take_recn"
    assert pairing_key("_rec.mp4") == "_rec"  # a bare suffix is a name, not a suffix


def test_pair_videos_by_relative_path(video_folders, tmp_path):
    real_dir, generated_dir, _, _ = video_folders
    pairing = pair_videos(real_dir, generated_dir)
    assert [pair.key for pair in pairing.pairs] == ["changed", "sub/same"]
    assert [os.path.basename(path) for path in pairing.only_real] == ["lonely_orig.mp4"]
    assert [os.path.basename(path) for path in pairing.only_generated] == ["extra_recn.mp4"]
    # Same file name in another sub-folder is a different video: no cross-folder match.
    (tmp_path / "other").mkdir()
    write(tmp_path / "other" / "same_recn.mp4", random_frames(0, num_frames=2))
    assert pair_videos(real_dir, str(tmp_path)).pairs == []


def test_two_files_with_one_key_are_ambiguous(tmp_path):
    real_dir, generated_dir = tmp_path / "real", tmp_path / "generated"
    frames = random_frames(0, num_frames=2)
    write(real_dir / "clip.mp4", frames)
    write(real_dir / "clip_orig.mp4", frames)
    write(generated_dir / "clip_recn.mp4", frames)
    pairing = pair_videos(str(real_dir), str(generated_dir))
    assert pairing.pairs == [] and list(pairing.ambiguous) == ["clip"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pair_videos(str(tmp_path / "nope"), str(tmp_path))


def test_missing_pwcnet_fails_flolpips_only(video_folders, weight_files):
    real_dir, generated_dir, changed, changed_generated = video_folders
    alexnet, _ = weight_files
    results = evaluate(real_dir, generated_dir, ["psnr", "ssim", "lpips", "flolpips"],
                       EvalOptions(batch_size=3), MetricWeights(lpips_backbone=alexnet))
    assert "--pwcnet_weights" in results["metrics"]["flolpips"]["error"]
    assert results["metrics"]["psnr"]["count"] == 2 and results["metrics"]["lpips"]["count"] == 2
    mse = ((changed / 255.0 - changed_generated / 255.0) ** 2).mean(axis=(1, 2, 3))
    assert results["videos"]["changed"]["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), abs=1e-4)
    assert "error: FloLPIPS needs PWC-Net weights" in format_table(results)


def test_missing_lpips_backbone_fails_lpips_only(video_folders, tmp_path):
    real_dir, generated_dir, _, _ = video_folders
    results = evaluate(real_dir, generated_dir, ["psnr", "lpips"], EvalOptions(),
                       MetricWeights(lpips_backbone=str(tmp_path / "alexnet.pth")))
    assert "AlexNet backbone" in results["metrics"]["lpips"]["error"]
    assert results["metrics"]["psnr"]["count"] == 2


def test_chunking_does_not_change_results(weight_files):
    alexnet, pwcnet = weight_files
    suite = MetricSuite(["psnr", "ssim", "lpips", "flolpips"], "cpu", MetricWeights(alexnet, pwcnet))
    frames = random_frames(5, num_frames=3, height=32, width=48)
    real = torch.from_numpy(frames).permute(0, 3, 1, 2)
    fake = torch.from_numpy(noisy_copy(frames, 6)).permute(0, 3, 1, 2)
    whole, _ = suite.score_video(real, fake, EvalOptions(batch_size=16))
    chunked, _ = suite.score_video(real, fake, EvalOptions(batch_size=2))
    assert set(whole) == {"psnr", "ssim", "lpips", "flolpips"}
    for name in whole:
        assert chunked[name] == pytest.approx(whole[name], rel=1e-5)
    # Shared LPIPS maps give the same numbers as the standalone metric functions.
    with torch.no_grad():
        real_unit, fake_unit = real.float() / 255, fake.float() / 255
        assert whole["lpips"] == pytest.approx(lpips_distance(suite.lpips_model, real_unit, fake_unit).mean().item(),
                                               rel=1e-5)
        assert whole["flolpips"] == pytest.approx(
            flolpips(suite.lpips_model, suite.flow_net, real_unit, fake_unit).mean().item(), rel=1e-5)


def test_different_lengths_are_cut_and_sizes_must_match(tmp_path):
    real_dir, generated_dir = tmp_path / "real", tmp_path / "generated"
    write(real_dir / "long.mp4", random_frames(0, num_frames=5))
    write(generated_dir / "long.mp4", random_frames(0, num_frames=5)[:3])
    write(real_dir / "big.mp4", random_frames(1, height=48))
    write(generated_dir / "big.mp4", random_frames(1, height=32))
    results = evaluate(str(real_dir), str(generated_dir), ["psnr"])
    assert results["videos"]["long"]["frames"] == 3 and results["videos"]["long"]["psnr"] == 100.0
    assert "frame sizes differ" in results["skipped"]["failed"]["big"]
    resized = evaluate(str(real_dir), str(generated_dir), ["psnr"], EvalOptions(resolution=32, crop_size=32))
    assert resized["videos"]["big"]["frames"] == 4


def test_prepare_frames_resizes_short_side_then_centre_crops():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 38:42] = 255  # a bright vertical band in the centre survives the crop
    video = prepare_frames(frames, resolution=20, crop_size=16, path="x.mp4")
    assert video.shape == (2, 3, 16, 16) and video.dtype == torch.float32
    assert video.max() <= 1.0 and video[0, 0, 8, 8] > 0.5
    assert prepare_frames(frames, None, None, "x.mp4").dtype == torch.uint8
    with pytest.raises(ValueError, match="--crop_size 64"):
        prepare_frames(frames, None, 64, "x.mp4")


def test_unreadable_video_is_skipped(tmp_path):
    real_dir, generated_dir = tmp_path / "real", tmp_path / "generated"
    write(real_dir / "good.mp4", random_frames(0, num_frames=2))
    write(generated_dir / "good.mp4", random_frames(0, num_frames=2))
    generated_dir.joinpath("bad.mp4").write_text("not a video")
    real_dir.joinpath("bad.mp4").write_text("not a video")
    results = evaluate(str(real_dir), str(generated_dir), ["psnr"], EvalOptions(num_frames=2))
    assert list(results["videos"]) == ["good"] and "bad" in results["skipped"]["failed"]


def test_decoding_workers_keep_pair_order_and_bound_the_pairs_in_flight(monkeypatch):
    """Earlier pairs decode slowest, so with three workers later ones finish first; the order must hold."""
    pairs = [VideoPair(f"clip{index}", f"real{index}", f"fake{index}") for index in range(8)]
    lock, started, consumed = threading.Lock(), [], []

    def slow_read(pair, options):
        index = int(pair.key[4:])
        if index == 5:
            raise ValueError(f"{pair.real}: unreadable")
        with lock:
            started.append(index)
            # Never more than workers + 1 pairs are decoded ahead of the one being scored.
            assert index <= len(consumed) + options.num_workers + 1
        time.sleep(0.02 * (8 - index))
        return torch.full((1,), index), torch.full((1,), -index)

    monkeypatch.setattr(evaluate_module, "_read_pair", slow_read)
    for pair, loaded, error in read_pairs_ahead(pairs, EvalOptions(num_workers=3)):
        index = int(pair.key[4:])
        assert index == len(consumed)
        if index == 5:
            assert loaded is None and "real5: unreadable" in error
        else:
            assert error is None and loaded[0].item() == index and loaded[1].item() == -index
        consumed.append(index)
    assert consumed == list(range(8)) and sorted(started) == [0, 1, 2, 3, 4, 6, 7]


def test_worker_count_does_not_change_results(video_folders, weight_files):
    real_dir, generated_dir, _, _ = video_folders
    weights = MetricWeights(lpips_backbone=weight_files[0])
    one = evaluate(real_dir, generated_dir, ["psnr", "ssim", "lpips"], EvalOptions(num_workers=1), weights)
    three = evaluate(real_dir, generated_dir, ["psnr", "ssim", "lpips"], EvalOptions(num_workers=3), weights)
    assert one["videos"] == three["videos"] and list(one["videos"]) == ["changed", "sub/same"]
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        evaluate(real_dir, generated_dir, ["psnr"], EvalOptions(num_workers=0))


@pytest.mark.slow
def test_eval_script_end_to_end(video_folders, weight_files, tmp_path):
    real_dir, generated_dir, changed, changed_generated = video_folders
    alexnet, pwcnet = weight_files
    output = tmp_path / "out" / "metrics.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "vae", "eval.py"), "--real_video_dir", real_dir,
         "--generated_video_dir", generated_dir, "--metric", "psnr", "ssim", "lpips", "flolpips",
         "--batch_size", "2", "--device", "cpu", "--output", str(output), "--lpips_weights", alexnet,
         "--pwcnet_weights", pwcnet],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(output.read_text())
    same = results["videos"]["sub/same"]
    assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert same["lpips"] == 0.0 and same["flolpips"] == 0.0
    changed_scores = results["videos"]["changed"]
    assert 10 < changed_scores["psnr"] < 40 and 0 < changed_scores["ssim"] < 1
    assert changed_scores["lpips"] > 0 and np.isfinite(changed_scores["flolpips"]) and changed_scores["flolpips"] > 0
    for name in ("psnr", "ssim", "lpips", "flolpips"):
        summary = results["metrics"][name]
        values = [same[name], changed_scores[name]]
        assert summary["count"] == 2
        assert summary["mean"] == pytest.approx(np.mean(values)) and summary["std"] == pytest.approx(np.std(values))
    assert len(results["skipped"]["only_real"]) == 1 and len(results["skipped"]["only_generated"]) == 1
    assert "psnr" in completed.stdout and "skipped (no generated video)" in completed.stdout


def test_unavailable_device_is_a_clear_error(video_folders, monkeypatch):
    real_dir, generated_dir, _, _ = video_folders
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device 'cuda'"):
        evaluate(real_dir, generated_dir, ["psnr"], EvalOptions(device="cuda"))
    with pytest.raises(ValueError, match="not a torch device"):
        evaluate(real_dir, generated_dir, ["psnr"], EvalOptions(device="gpu0"))
