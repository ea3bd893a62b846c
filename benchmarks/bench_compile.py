"""Compiled vs eager encode+decode of a Video DC-AE on CPU (``VideoAutoencoder.compile_blocks``).

The demo's Video DC-AE (3 stages, widths 16-64, 4x4x4, random weights) on an 8 x 128 x 128 clip, float32, no
autograd; ``compile_blocks`` compiles its 9 outermost blocks (projections and stages) with inductor.
Each mode is warmed up once (the compiled one compiles then), then timed as the median of ``--repeats`` runs.
Last line: ``compile_ratio: X`` (eager time / compiled time; above 1 = compiled is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from opensora_ae.models.dc_ae import VideoDCAE


def encode_decode_seconds(model: VideoDCAE, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        model.decode(model.encode(x), num_frames=x.shape[2])  # warm-up (compiles when compiled)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.decode(model.encode(x), num_frames=x.shape[2])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = VideoDCAE(
        latent_channels=16, width_list=(16, 32, 64), encoder_depth_list=(1, 1, 1), decoder_depth_list=(1, 1, 1),
        encoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU"),
        decoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU"),
        temporal_downsample=(True, True, False), attention_head_dim=16,
    ).eval()
    x = torch.rand(1, 3, args.frames, args.size, args.size) * 2 - 1
    eager = encode_decode_seconds(model, x, args.repeats)
    model.compile_blocks()
    compiled = encode_decode_seconds(model, x, args.repeats)
    print(f"threads: {torch.get_num_threads()}, clip 1x3x{args.frames}x{args.size}x{args.size}")
    print(f"eager encode+decode: {eager:.3f} s")
    print(f"compiled encode+decode: {compiled:.3f} s")
    print(f"compile_ratio: {eager / compiled:.2f}")


if __name__ == "__main__":
    main()
