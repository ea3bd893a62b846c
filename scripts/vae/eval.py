"""Score generated videos against real ones.

``python scripts/vae/eval.py --real_video_dir A --generated_video_dir B --metric psnr ssim lpips flolpips fvd
[--protocol opensora --num_frames N --sample_rate S --resolution R --crop_size C --batch_size B --device cuda
 --num_workers W --fvd_method styleganv --output metrics.json --overwrite]``

Videos pair by relative path after dropping the suffixes _orig/_recn/_ori/_rec/_spatial. Open-Sora 1.2's eval
command runs as written (``--sample_fps`` is accepted and, as in their script, changes nothing). See docs/eval.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from tqdm import tqdm

from opensora_ae.inference.evaluate import (METRIC_NAMES, EvalOptions, MetricWeights, evaluate, format_table,
                                            write_results)
from opensora_ae.metrics.fvd import FVD_VARIANTS
from opensora_ae.metrics.protocols import PROTOCOLS


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real_video_dir", required=True, help="folder of real (reference) videos")
    parser.add_argument("--generated_video_dir", required=True, help="folder of generated / reconstructed videos")
    parser.add_argument("--metric", nargs="+", choices=METRIC_NAMES, default=["psnr", "ssim", "lpips"])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="ours",
                        help="opensora: Open-Sora 1.2 / Open-Sora-Plan frame picking, float resize (no antialias, "
                             "floored long side, half-to-even crop) and LPIPS spatial=True (docs/eval.md)")
    parser.add_argument("--lpips_definition", choices=("mean", "spatial"),
                        help="mean: lpips package default (spatial=False); spatial: spatial=True, Open-Sora's "
                             "(default: the protocol's choice)")
    parser.add_argument("--sample_fps", type=float,
                        help="accepted for Open-Sora 1.2 / Open-Sora-Plan commands; their scripts never use it, "
                             "so it changes no frame (use --sample_rate)")
    parser.add_argument("--num_frames", type=positive_int, help="frames per video (default: all)")
    parser.add_argument("--sample_rate", type=positive_int, default=1, help="keep every n-th frame")
    parser.add_argument("--resolution", type=positive_int, help="resize the short side to this many pixels")
    parser.add_argument("--crop_size", type=positive_int, help="then take the centred square of this size")
    parser.add_argument("--batch_size", type=positive_int, default=16, help="frames per metric forward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num_workers", type=positive_int, default=2,
                        help="threads decoding the next video pairs while one is scored (each holds a pair)")
    parser.add_argument("--output", help="write metrics.json here (an existing file is kept unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--fvd_method", choices=FVD_VARIANTS, default="styleganv",
                        help="I3D of --metric fvd: styleganv (i3d_torchscript.pt) or videogpt (i3d_pretrained_400.pt)")
    parser.add_argument("--i3d_weights", help="the I3D file of --fvd_method (default: torch hub checkpoints folder)")
    parser.add_argument("--fvd_group_size", type=positive_int,
                        help="FVD per group of this many videos, averaged (Open-Sora-Plan's per-batch FVD; "
                             "--protocol opensora defaults it to --batch_size); default: one FVD over all videos")
    parser.add_argument("--lpips_weights", "--lpips_backbone", dest="lpips_weights",
                        help="torchvision AlexNet weights alexnet-owt-7be5be79.pth (default: torch hub cache)")
    parser.add_argument("--pwcnet_weights", "--flolpips_weights", dest="pwcnet_weights",
                        help="PWC-Net network-default.pytorch for FloLPIPS")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.output and os.path.exists(args.output) and not args.overwrite:
        print(f"error: --output {args.output} already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    group_size = args.fvd_group_size
    if group_size is None and args.protocol == "opensora":
        group_size = args.batch_size
    options = EvalOptions(num_frames=args.num_frames, sample_rate=args.sample_rate, resolution=args.resolution,
                          crop_size=args.crop_size, batch_size=args.batch_size, device=args.device,
                          num_workers=args.num_workers, protocol=args.protocol, sample_fps=args.sample_fps,
                          fvd_variant=args.fvd_method, fvd_group_size=group_size,
                          lpips_spatial=None if args.lpips_definition is None else args.lpips_definition == "spatial")
    weights = MetricWeights(lpips_backbone=args.lpips_weights, pwcnet=args.pwcnet_weights, i3d=args.i3d_weights)
    try:
        results = evaluate(args.real_video_dir, args.generated_video_dir, args.metric, options, weights,
                           progress=lambda pairs, total: tqdm(pairs, total=total, desc="eval", unit="video"))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.output:
        write_results(results, args.output)
        print(f"wrote {args.output}")
    scored = any("error" not in summary for summary in results["metrics"].values())
    return 0 if scored else 1


if __name__ == "__main__":
    sys.exit(main())
