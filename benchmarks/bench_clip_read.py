"""Clip reading: ``read_clip`` (keyframe seek) vs decoding from the start of the file.

Writes a 60 s, 24 fps, 256x448 (256p, 16:9) H.264 video with a keyframe every 2 s, then reads random
32-frame clips from its middle both ways (same frames, checked) and prints the median times.
The last line is ``speedup: X``, the time ratio decode-from-start / read_clip (the peer is plain decoding).

    python benchmarks/bench_clip_read.py [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import av
import numpy as np

from opensora_ae.data.video_io import read_clip, write_video

FPS = 24
SECONDS = 60
HEIGHT, WIDTH = 256, 448
GOP_SECONDS = 2
CLIP_FRAMES = 32


def synthetic_frames(num_frames: int, seed: int) -> np.ndarray:
    """A smooth random texture panning across the frame, plus a moving bright square (realistic to encode)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (HEIGHT // 16 + 1, 2 * WIDTH // 16 + 1, 3)).astype(np.float32)
    texture = np.kron(coarse, np.ones((16, 16, 1), np.float32))[:HEIGHT, : 2 * WIDTH]
    texture += rng.normal(0, 6, texture.shape).astype(np.float32)  # grain, so frames are not trivially cheap
    texture = texture.clip(0, 255).astype(np.uint8)
    frames = np.empty((num_frames, HEIGHT, WIDTH, 3), np.uint8)
    for index in range(num_frames):
        offset = (index * 3) % WIDTH
        frames[index] = texture[:, offset:offset + WIDTH]
        top, left = (index * 2) % (HEIGHT - 32), (index * 5) % (WIDTH - 32)
        frames[index, top:top + 32, left:left + 32] = 255
    return frames


def decode_from_start(path: str, num_frames: int, start: int) -> np.ndarray:
    """The baseline: decode every frame from the first one, keep frames ``start .. start + num_frames - 1``."""
    picked = []
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                picked.append(frame.to_ndarray(format="rgb24"))
            if len(picked) == num_frames:
                break
    return np.stack(picked)


def timed(function, *args) -> tuple[float, np.ndarray]:
    began = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="random clips to time (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    total = FPS * SECONDS
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long_256p.mp4")
        began = time.perf_counter()
        write_video(path, synthetic_frames(total, args.seed), FPS, crf=23, preset="veryfast",
                    gop_size=FPS * GOP_SECONDS)
        print(f"wrote {SECONDS} s {HEIGHT}x{WIDTH} @ {FPS} fps, keyframe every {GOP_SECONDS} s "
              f"({os.path.getsize(path) / 1e6:.1f} MB) in {time.perf_counter() - began:.1f} s")
        seek_times, full_times = [], []
        for _ in range(args.repeats):
            start = int(rng.integers(int(0.4 * total), int(0.6 * total)))
            seek_time, clip = timed(read_clip, path, CLIP_FRAMES, 1, start)
            full_time, reference = timed(decode_from_start, path, CLIP_FRAMES, start)
            if not np.array_equal(clip, reference):
                raise AssertionError(f"read_clip and decoding from the start disagree at start={start}")
            seek_times.append(seek_time)
            full_times.append(full_time)
        seek, full = statistics.median(seek_times), statistics.median(full_times)
        print(f"read_clip (seek to keyframe): {seek * 1e3:.1f} ms  (median of {args.repeats} random "
              f"{CLIP_FRAMES}-frame clips from the middle)")
        print(f"decode from start:            {full * 1e3:.1f} ms")
        print(f"speedup: {full / seek:.2f}")


if __name__ == "__main__":
    main()
