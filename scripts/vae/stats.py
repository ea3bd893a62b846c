"""Latent statistics of a dataset and the scaling/shift factors that normalise them.

    [torchrun ...] scripts/vae/stats.py CONFIG.py --model.from_pretrained W --dataset.data_path D [--output stats.json]
"""

import json
import logging
from pathlib import Path

from opensora_ae.config import parse_args
from opensora_ae.train.parallel import destroy_distributed, init_distributed
from opensora_ae.inference.stats import latent_statistics

SCRIPT_KEYS = ("output", "dtype", "device", "num_frames", "resolution", "height", "width", "sample_rate", "fps_max")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = parse_args(extra_keys=SCRIPT_KEYS)
    ctx = init_distributed(cfg.get("device", "auto"))
    summary = latent_statistics(cfg, ctx)
    if ctx.is_main:
        text = json.dumps(summary, indent=2)
        print(text)
        output = cfg.get("output") or "latent_stats.json"
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    destroy_distributed()


if __name__ == "__main__":
    main()
