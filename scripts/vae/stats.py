"""Latent statistics of a dataset and the scaling/shift factors that normalise them.

    [torchrun ...] scripts/vae/stats.py CONFIG.py --model.from_pretrained W --dataset.data_path D [--output stats.json]

See docs/inference.md.
"""

import json
from pathlib import Path

from opensora_ae.config import parse_args
from opensora_ae.inference.runner import CLIP_KEYS, run_script
from opensora_ae.inference.stats import latent_statistics
from opensora_ae.train.parallel import init_distributed

SCRIPT_KEYS = CLIP_KEYS + ("output",)


def main() -> None:
    cfg = parse_args(extra_keys=SCRIPT_KEYS)
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
    run_script(main)
