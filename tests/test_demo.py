import json

import numpy as np
import pytest
from PIL import Image

from opensora_ae.demo import run_demo


@pytest.mark.slow
def test_demo_runs_every_stage_end_to_end(tmp_path):
    results = run_demo(tmp_path, ["--max_steps", "4", "--ckpt_every", "2", "--log_every", "2"])
    checkpoints = sorted((tmp_path / "train").glob("epoch*-global_step*"))
    assert [c.name.split("-")[1] for c in checkpoints] == ["global_step2", "global_step4"]
    assert (checkpoints[-1] / "model.safetensors").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == results
    psnr = metrics["metrics"]["psnr"]
    assert psnr["count"] == 3 and 5.0 < psnr["mean"] < 100.0
    assert 0.0 < metrics["metrics"]["ssim"]["mean"] <= 1.0
    assert len(list((tmp_path / "recon" / "orig").rglob("*_orig.mp4"))) == 3
    assert len(list((tmp_path / "recon" / "recn").rglob("*_recn.mp4"))) == 3
    grid = np.asarray(Image.open(tmp_path / "side_by_side.png"))
    assert grid.ndim == 3 and grid.shape[1] > 3 * 32
    assert (tmp_path / "loss_curve.png").is_file()
