import json

import numpy as np
import pytest
from PIL import Image

from opensora_ae.demo import run_demo

# A shortened demo: every stage on the real 128 px sample clips, 2 training steps on small crops.
SHORT = ["--max_steps", "2", "--ckpt_every", "1", "--log_every", "1", "--keep_n_latest", "0",
         "--dataset.num_frames", "8", "--dataset.image_size", "(32, 32)", "--batch_size", "1"]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    first, second = tmp_path_factory.mktemp("demo1"), tmp_path_factory.mktemp("demo2")
    return (first, run_demo(first, SHORT)), (second, run_demo(second, SHORT))


@pytest.mark.slow
def test_demo_runs_every_stage_end_to_end(demo_runs):
    (out, results), _ = demo_runs
    checkpoints = sorted((out / "train").glob("epoch*-global_step*"))
    assert [c.name.split("-")[1] for c in checkpoints] == ["global_step1", "global_step2"]
    assert (checkpoints[-1] / "model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == results
    psnr = metrics["metrics"]["psnr"]
    assert psnr["count"] == 3 and 5.0 < psnr["mean"] < 100.0
    assert 0.0 < metrics["metrics"]["ssim"]["mean"] <= 1.0
    assert len(list((out / "recon" / "orig").rglob("*_orig.mp4"))) == 3
    assert len(list((out / "recon" / "recn").rglob("*_recn.mp4"))) == 3
    grid = np.asarray(Image.open(out / "side_by_side.png"))
    assert grid.ndim == 3 and grid.shape[0] >= 128 and grid.shape[1] >= 3 * 128  # original | reconstruction | error
    assert Image.open(out / "loss_curve.png").size[0] > 0
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["stages"]) == {"data", "train", "reconstruct", "score", "compare"}
    assert timings["total"]["cpu_s"] > 0 and timings["total"]["wall_s"] > 0


def _scores(metrics: dict) -> dict:
    """metrics.json without the paths (the two runs write into different folders)."""
    per_video = {key: {k: v for k, v in video.items() if k not in ("real", "generated")}
                 for key, video in metrics["videos"].items()}
    return {"metrics": metrics["metrics"], "videos": per_video, "options": metrics["options"]}


@pytest.mark.slow
def test_demo_is_deterministic(demo_runs):
    (first, first_results), (second, second_results) = demo_runs
    first_json = json.loads((first / "metrics.json").read_text())
    assert _scores(first_json) == _scores(json.loads((second / "metrics.json").read_text()))
    assert len(first_json["videos"]) == 3 and all("psnr" in video for video in first_json["videos"].values())
    assert first_results["metrics"]["psnr"]["mean"] == second_results["metrics"]["psnr"]["mean"]


def test_demo_inference_config_rebuilds_the_trained_model():
    from opensora_ae.config import CONFIGS_DIR, load_config
    from opensora_ae.demo import CLIP_FRAMES, INFERENCE_CONFIG, SHORT_SIDE, TRAIN_CONFIG

    # The package's configs (package data once pip-installed), not a checkout's: `opensora-ae demo` runs anywhere.
    assert TRAIN_CONFIG.parent == CONFIGS_DIR / "vae" / "train"
    assert INFERENCE_CONFIG.parent == CONFIGS_DIR / "vae" / "inference"

    train_cfg, cfg = load_config(TRAIN_CONFIG).to_dict(), load_config(INFERENCE_CONFIG).to_dict()
    assert cfg["model"] == train_cfg["model"] and cfg["model"]["type"] == "dc_ae"
    assert tuple(cfg["resolution"]) == (SHORT_SIDE, SHORT_SIDE)  # held-out clips: centre square, full scale
    assert train_cfg["dataset"]["transform_name"] == "random_crop"  # training windows at the same scale
    assert cfg["num_frames"] == CLIP_FRAMES and CLIP_FRAMES % 4 == 0 and train_cfg["dataset"]["num_frames"] % 4 == 0
    assert train_cfg["vae_loss_config"]["perceptual_loss_weight"] == 0.0  # same result with or without LPIPS cached
