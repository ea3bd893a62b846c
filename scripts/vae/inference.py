"""Reconstruct videos with any autoencoder.

    [torchrun --nproc_per_node N] scripts/vae/inference.py CONFIG.py --save-dir D \
        [--model.from_pretrained W] [--dataset.data_path CSV|FOLDER|FILE] [--layout v1.2] [--save-latents] \
        [--overwrite] [--crf 0]
"""

import logging

from opensora_ae.config import format_config, parse_args
from opensora_ae.inference.reconstruct import format_report, reconstruct_dataset
from opensora_ae.train.parallel import destroy_distributed, init_distributed

SCRIPT_KEYS = ("save_dir", "layout", "save_latents", "overwrite", "crf", "dtype", "batch_size", "device",
               "num_frames", "resolution", "height", "width", "sample_rate", "fps_max")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = parse_args(extra_keys=SCRIPT_KEYS)
    if not cfg.get("save_dir"):
        raise SystemExit("inference needs an output folder: pass --save-dir D")
    ctx = init_distributed(cfg.get("device", "auto"))
    if ctx.is_main:
        print(format_config(cfg))
    report = reconstruct_dataset(cfg, ctx)
    if ctx.is_main:
        print(format_report(report, cfg.save_dir))
    destroy_distributed()


if __name__ == "__main__":
    main()
