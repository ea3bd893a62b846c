"""Side-by-side comparisons: original | reconstruction | amplified error, an mp4 and a PNG grid per video.

    python scripts/vae/compare.py --real_video_dir A --generated_video_dir B --save-dir C [--num_rows 4]
        [--num_frames N]
    opensora-ae compare --real_video_dir A --generated_video_dir B --save-dir C ...

Videos pair by relative path after dropping the suffixes _orig/_recn/_ori/_rec/_spatial, as in eval.py.
Writes C/<relative name>_compare.mp4, C/<relative name>_compare.png and C/compare.json. See docs/inference.md.
"""

from __future__ import annotations

import argparse
import sys

from opensora_ae.command import DEBUG_ENV, debug_requested, parse_bool, run_script
from opensora_ae.inference.compare import compare_folders, format_comparison_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real_video_dir", required=True, help="folder of real (original) videos")
    parser.add_argument("--generated_video_dir", required=True, help="folder of reconstructed / generated videos")
    parser.add_argument("--save-dir", "--save_dir", dest="save_dir", required=True, help="output folder")
    parser.add_argument("--num_rows", type=int, default=4, help="frames shown in each PNG grid")
    parser.add_argument("--num_frames", type=int, help="compare only the first N frames (default: all)")
    parser.add_argument("--debug", type=parse_bool, nargs="?", const=True, default=False,
                        help=f"full tracebacks instead of one-line errors (or {DEBUG_ENV}=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = compare_folders(args.real_video_dir, args.generated_video_dir, args.save_dir, args.num_rows,
                             args.num_frames)
    print(format_comparison_report(report))
    return 0 if report.compared else 1


if __name__ == "__main__":
    run_script(main, debug_requested(sys.argv[1:]))
