"""The ``opensora-ae`` console command: ``opensora-ae train|inference|eval|stats|compare|demo [ARGS ...]``.

Each subcommand runs the shipped entry script (``scripts/vae/<name>.py``, package data when installed) with the
same flags, so ``opensora-ae train video_dc_ae --max_steps 10`` is ``scripts/vae/train.py video_dc_ae
--max_steps 10``; configs resolve by name from the shipped ``configs/vae/{train,inference}``.
"""

from __future__ import annotations

import difflib
import runpy
import sys
from pathlib import Path
from typing import Sequence

# The shipped entry scripts: package data when installed; in a checkout a symlink to the repository's scripts/.
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts" / "vae"
SUBCOMMANDS = {
    "train": "train a model from a training config",
    "inference": "reconstruct videos with a model (writes orig/recn mp4s)",
    "eval": "score generated videos against real ones (PSNR, SSIM, LPIPS, ...)",
    "stats": "latent statistics and the scaling/shift factors that normalise them",
    "compare": "side-by-side original | reconstruction | error videos and PNGs",
    "demo": "train a small model on sample clips, reconstruct and score held-out clips",
}


def usage() -> str:
    lines = ["usage: opensora-ae COMMAND [ARGS ...]   (opensora-ae COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, summary in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the subcommand's script; returns the exit status (a failing script exits by SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        match = difflib.get_close_matches(name, list(SUBCOMMANDS), n=1)
        hint = f"; did you mean {match[0]}?" if match else f"; use one of {', '.join(SUBCOMMANDS)}"
        print(f"error: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    sys.argv = [f"opensora-ae {name}", *rest]
    runpy.run_path(str(SCRIPTS_DIR / f"{name}.py"), run_name="__main__")  # a failing script raises SystemExit
    return 0


if __name__ == "__main__":
    sys.exit(main())
