"""Latent statistics of a dataset and the scaling/shift factors that normalise them.

    [torchrun ...] scripts/vae/stats.py CONFIG --model.from_pretrained W --dataset.data_path D [--output stats.json]
    opensora-ae stats CONFIG ...

CONFIG is an inference config (configs/vae/inference). See docs/inference.md.
"""

import json
from pathlib import Path

from mmengine.config import Config

from opensora_ae.command import INFERENCE_ALIASES, Command, run_command
from opensora_ae.inference.runner import CLIP_KEYS
from opensora_ae.inference.stats import latent_statistics
from opensora_ae.train.parallel import init_distributed

SCRIPT_KEYS = CLIP_KEYS + ("output",)
COMMAND = Command("stats", __doc__, "inference", SCRIPT_KEYS, INFERENCE_ALIASES)


def main(cfg: Config) -> None:
    ctx = init_distributed(cfg.get("device", "auto"))
    summary = latent_statistics(cfg, ctx)
    if ctx.is_main:
        text = json.dumps(summary, indent=2)
        print(text)
        output = Path(cfg.get("output") or "latent_stats.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"wrote {output}")


if __name__ == "__main__":
    run_command(COMMAND, main)
