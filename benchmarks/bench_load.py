"""Load time of the released-size Video DC-AE (``dc-ae-f32t4c128``, 459M parameters) through ``from_pretrained``.

Builds the released architecture once with random weights, saves it with ``save_pretrained`` to a temporary folder,
then times ``VideoDCAE.from_pretrained(folder)`` (build + read + load, fp32, CPU) ``--repeats`` times and prints
the median. Run it against two checkouts to compare them (the script only uses the API both have):

    PYTHONPATH=/path/to/old/checkout python benchmarks/bench_load.py
    PYTHONPATH=$PWD python benchmarks/bench_load.py

The last line is ``load_s: X`` (median seconds of one from_pretrained call).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from opensora_ae.models.dc_ae import VideoDCAE

MODEL_NAME = "dc-ae-f32t4c128"


def time_load(folder: Path) -> float:
    start = time.perf_counter()
    model = VideoDCAE.from_pretrained(folder)
    elapsed = time.perf_counter() - start
    del model
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = fair on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        with torch.device("meta"):
            shapes = VideoDCAE(model_name=MODEL_NAME).state_dict()
        source = VideoDCAE(model_name=MODEL_NAME)
        params = sum(p.numel() for p in source.parameters())
        source.save_pretrained(tmp)
        del source
        times = [time_load(Path(tmp)) for _ in range(args.repeats)]
        loaded = VideoDCAE.from_pretrained(tmp)
        assert loaded.state_dict().keys() == shapes.keys()
    print(f"{MODEL_NAME}: {params / 1e6:.0f}M parameters, {args.threads} thread(s), runs: "
          + ", ".join(f"{t:.2f}" for t in times))
    print(f"load_s: {statistics.median(times):.2f}")


if __name__ == "__main__":
    main()
