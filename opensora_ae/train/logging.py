"""Training logs: rank-0 progress bar, ``metrics.jsonl``, loss-curve PNG and optional wandb.

Only rank 0 writes. ``metrics.jsonl`` gets one JSON object per logged step (``step``, ``epoch``, the loss terms,
``lr``, ``steps_per_s``, ``samples_per_s``) and one per event (``event`` = ``"skipped_step"``, ``"epoch_end"``
...). wandb runs offline automatically when there is no API key or no network, so ``--wandb True`` never blocks.
The wandb run id is kept in the run folder (``wandb_run_id.txt``): a run resumed with ``--load`` (same folder)
continues the same wandb run (``wandb.init(id=..., resume="allow")``), online or offline.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import secrets
import socket
import string
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
WANDB_ID_FILE = "wandb_run_id.txt"


def _wandb_reachable(host: str = "api.wandb.ai", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode() -> str:
    """``online`` only with an API key (env or ~/.netrc entry) and a reachable server; ``offline`` otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    return "online" if has_key and _wandb_reachable() else "offline"


def wandb_run_id(run_dir: Path) -> str:
    """The wandb run id of ``run_dir``: the one stored in ``wandb_run_id.txt``, else a new one written there
    (atomically: a crash never leaves a half-written id that a resume would pick up)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        run_id = path.read_text().strip()
        if run_id:
            return run_id
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # wandb's id form
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(run_id + "\n")
    os.replace(partial, path)
    return run_id


def optional_import(module: str) -> Any | None:
    """``module`` imported, or None when it is not installed (wandb and matplotlib are extras of the package)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class TrainLogger:
    """Collects step metrics; rank 0 prints, writes files and (optionally) talks to wandb."""

    def __init__(
        self,
        run_dir: Path,
        is_main: bool,
        total_steps: int,
        initial_step: int = 0,
        initial_samples: int = 0,
        use_wandb: bool = False,
        wandb_project: str = "opensora_ae",
        run_name: str = "",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.history: list[dict[str, Any]] = []
        self._window: dict[str, list[float]] = {}
        self._last_time = time.perf_counter()
        self._last_step = initial_step
        self._last_samples = initial_samples
        self.bar = (
            tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True, desc="train", file=sys.stderr)
            if is_main
            else None
        )
        self.wandb = None
        if is_main and use_wandb:
            wandb = optional_import("wandb")
            if wandb is None:
                raise ValueError("--wandb True needs the wandb package: pip install 'opensora_ae[wandb]', "
                                 "or pass --wandb False")

            mode, run_id = wandb_mode(), wandb_run_id(self.run_dir)
            self.wandb = wandb.init(project=wandb_project, name=run_name, dir=str(self.run_dir), config=config or {},
                                    mode=mode, id=run_id, resume="allow")
            self.write_event("wandb", mode=mode, run_id=run_id)
        if is_main:
            self.history = _read_history(self.run_dir / METRICS_FILE)

    def write(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def write_event(self, event: str, **fields: Any) -> None:
        """Record a non-periodic event (skipped step, epoch end, checkpoint ...)."""
        self.write({"event": event, "time": time.time(), **fields})

    def message(self, text: str) -> None:
        """One line to the console from rank 0, without breaking the progress bar."""
        if self.is_main:
            (self.bar.write if self.bar is not None else print)(text)

    def accumulate(self, metrics: dict[str, float]) -> None:
        """Remember one step's metrics (every rank) for the next record's window average."""
        for key, value in metrics.items():
            self._window.setdefault(key, []).append(float(value))

    def window_metrics(self) -> dict[str, float]:
        """Loss terms averaged over the steps since the last record (one step's loss is noisy); other values
        (lr, adaptive weight, ...) as of the last step. Empties the window."""
        window, self._window = self._window, {}
        return {key: sum(values) / len(values) if key == "loss" or key.startswith("loss_") else values[-1]
                for key, values in window.items()}

    def step(self, step: int, samples_seen: int, metrics: dict[str, float], log: bool, epoch: int) -> None:
        """Advance the bar to ``step``; when ``log``, compute rates and write a metrics record."""
        if not self.is_main:
            return
        self.bar.update(step - self.bar.n)
        if not log:
            return
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        record = {
            "step": step,
            "epoch": epoch,
            **{k: float(v) for k, v in metrics.items()},
            "steps_per_s": (step - self._last_step) / elapsed,
            "samples_per_s": (samples_seen - self._last_samples) / elapsed,
        }
        self._last_time, self._last_step, self._last_samples = now, step, samples_seen
        self.history.append(record)
        self.write(record)
        self.bar.set_postfix(
            loss=f"{record.get('loss', float('nan')):.4g}",
            lr=f"{record.get('lr', 0.0):.2e}",
            steps_s=f"{record['steps_per_s']:.2f}",
            samples_s=f"{record['samples_per_s']:.2f}",
            refresh=False,
        )
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)

    def log_video(self, step: int, original: Any, reconstruction: Any, fps: int = 8) -> None:
        """wandb only: side-by-side ``original | reconstruction`` video (``C T H W`` in [-1, 1]).

        The mp4 is written with the toolkit's PyAV writer (``<run_dir>/wandb_media/``), so wandb needs no moviepy.
        """
        if self.wandb is None:
            return
        import torch
        import wandb

        from ..data.video_io import write_video

        pair = torch.cat([original, reconstruction], dim=-1).detach().float().cpu()
        frames = ((pair.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
        path = self.run_dir / "wandb_media" / f"reconstruction_step{step}.mp4"
        write_video(path, frames, fps=fps)
        self.wandb.log({"train/reconstruction": wandb.Video(str(path), format="mp4")}, step=step)

    def plot_loss_curve(self) -> Path | None:
        """Write ``loss_curve.png`` (the logged loss terms against the step) into the run dir.

        Terms that are zero throughout, or that repeat another term's values (``loss`` equals ``loss_nll`` when it
        is the only term), are left out. Drawn with matplotlib's object API on its own Agg canvas: the caller's
        pyplot backend and figures are untouched.
        """
        if not self.is_main or not self.history:
            return None
        if optional_import("matplotlib") is None:
            print("notice: loss_curve.png needs matplotlib (pip install 'opensora_ae[plot]'); skipped", file=sys.stderr)
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for key, points in loss_series(self.history).items():
            ax.plot(*zip(*points), label=key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        if all(r.get("loss", 0) > 0 for r in self.history):
            ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.run_dir / LOSS_CURVE_FILE
        fig.savefig(path, dpi=100)
        return path

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def loss_series(history: list[dict[str, Any]], rel_tol: float = 1e-3) -> dict[str, list[tuple[int, float]]]:
    """``{term: [(step, value), ...]}`` of the loss terms worth plotting: ``loss`` and ``loss_*`` terms that are
    not zero throughout and that do not repeat a term already kept (same steps, every value within ``rel_tol``:
    ``loss`` is ``loss_recon`` plus a 1e-6-weighted KL, one line on any plot)."""
    keys = [k for k in history[-1] if k == "loss" or k.startswith("loss_")]
    series: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        points = [(r["step"], r[key]) for r in history if key in r and math.isfinite(r[key])]
        if points and any(v != 0.0 for _, v in points) and not any(
                _same_curve(points, kept, rel_tol) for kept in series.values()):
            series[key] = points
    return series


def _same_curve(a: list[tuple[int, float]], b: list[tuple[int, float]], rel_tol: float) -> bool:
    return len(a) == len(b) and all(sa == sb and math.isclose(va, vb, rel_tol=rel_tol, abs_tol=1e-12)
                                    for (sa, va), (sb, vb) in zip(a, b))


def _read_history(path: Path) -> list[dict[str, Any]]:
    """Step records already in ``metrics.jsonl`` (a resumed run keeps its loss curve)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" in record and "event" not in record:
            records.append(record)
    return records
