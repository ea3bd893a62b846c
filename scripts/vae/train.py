"""Train a video autoencoder: ``[torchrun --nproc_per_node N] scripts/vae/train.py CONFIG.py [--key value ...]``.

``--load CKPT_DIR`` resumes a run exactly; ``--model.from_pretrained PATH`` loads weights only;
``--save-dir DIR`` picks the run directory. See docs/training.md.
"""

from opensora_ae.config import parse_args
from opensora_ae.train.loop import OPTIONAL_KEYS, train


def main() -> None:
    train(parse_args(extra_keys=OPTIONAL_KEYS))


if __name__ == "__main__":
    main()
