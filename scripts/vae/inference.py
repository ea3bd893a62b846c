"""Reconstruct videos with any autoencoder.

    [torchrun --nproc_per_node N] scripts/vae/inference.py CONFIG --save-dir D \
        [--model.from_pretrained W] [--dataset.data_path CSV|FOLDER|FILE] [--layout v1.2] [--save-latents] \
        [--overwrite] [--crf 0] [--batch_size B] [--dtype bf16]
    opensora-ae inference CONFIG --save-dir D ...

See docs/inference.md and docs/config.md.
"""

from mmengine.config import Config

from opensora_ae.command import INFERENCE_ALIASES, Command, run_command
from opensora_ae.config import format_config
from opensora_ae.inference.reconstruct import format_report, reconstruct_dataset
from opensora_ae.inference.runner import CLIP_KEYS
from opensora_ae.train.parallel import init_distributed

SCRIPT_KEYS = CLIP_KEYS + ("save_dir", "layout", "save_latents", "overwrite", "crf")
COMMAND = Command("inference", __doc__, "inference", SCRIPT_KEYS, INFERENCE_ALIASES)


def main(cfg: Config) -> None:
    if not cfg.get("save_dir"):
        raise ValueError("inference needs an output folder: pass --save-dir D (or set save_dir in the config)")
    ctx = init_distributed(cfg.get("device", "auto"))
    if ctx.is_main:
        print(format_config(cfg))
    report = reconstruct_dataset(cfg, ctx)
    if ctx.is_main:
        print(format_report(report, cfg.save_dir))


if __name__ == "__main__":
    run_command(COMMAND, main)
