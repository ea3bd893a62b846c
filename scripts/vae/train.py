"""Train a video autoencoder.

    [torchrun --nproc_per_node N] scripts/vae/train.py CONFIG [--key value ...]
    opensora-ae train CONFIG [--key value ...]

``--load CKPT_DIR`` resumes a run exactly; ``--model.from_pretrained PATH`` loads weights only;
``--save-dir DIR`` picks the run directory. See docs/training.md and docs/config.md.
"""

from mmengine.config import Config

from opensora_ae.command import TRAIN_ALIASES, Command, check_perceptual_backbone, run_command
from opensora_ae.train.loop import OPTIONAL_KEYS, train

COMMAND = Command("train", __doc__, "train", OPTIONAL_KEYS, TRAIN_ALIASES)


def main(cfg: Config) -> None:
    check_perceptual_backbone(cfg)
    train(cfg)


if __name__ == "__main__":
    run_command(COMMAND, main)
