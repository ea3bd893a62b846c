"""``make demo``: train a tiny Video DC-AE on sample clips, then reconstruct and score held-out clips.

    python scripts/vae/demo.py [OUT_DIR] [training overrides, e.g. --max_steps 50]
"""

import logging
import sys

from opensora_ae.demo import run_demo


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = sys.argv[1:]
    out_dir = args.pop(0) if args and not args[0].startswith("--") else "outputs/demo"
    run_demo(out_dir, args)


if __name__ == "__main__":
    main()
