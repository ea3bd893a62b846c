"""Load time of the released-size Video DC-AE (``dc-ae-f32t4c128``, 459M parameters) through ``from_pretrained``.

Builds the released architecture once with random weights, saves it with ``save_pretrained`` to a temporary folder,
then times, ``--repeats`` times each (median, fp32, CPU), in the same process:

* ``from_pretrained(folder)``: parameters created on the meta device, then the checkpoint tensors assigned;
* the path it replaces: a full build with random init, then ``load_weights(model, folder)``.

The last line is ``load_ratio: X`` (random-init build + load over ``from_pretrained``; above 1 = faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from opensora_ae.models.checkpoint_io import load_weights
from opensora_ae.models.dc_ae import VideoDCAE

MODEL_NAME = "dc-ae-f32t4c128"


def time_from_pretrained(folder: Path) -> float:
    start = time.perf_counter()
    model = VideoDCAE.from_pretrained(folder)
    elapsed = time.perf_counter() - start
    del model
    return elapsed


def time_random_init_then_load(folder: Path) -> float:
    start = time.perf_counter()
    model = VideoDCAE(model_name=MODEL_NAME)
    load_weights(model, folder)
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
        meta = [time_from_pretrained(Path(tmp)) for _ in range(args.repeats)]
        eager = [time_random_init_then_load(Path(tmp)) for _ in range(args.repeats)]
        loaded = VideoDCAE.from_pretrained(tmp)
        assert loaded.state_dict().keys() == shapes.keys()
    print(f"{MODEL_NAME}: {params / 1e6:.0f}M parameters, {args.threads} thread(s)")
    for name, times in (("from_pretrained (meta + assign)", meta), ("random init + load_weights", eager)):
        print(f"{name}: median {statistics.median(times):.2f} s, runs " + ", ".join(f"{t:.2f}" for t in times))
    print(f"load_ratio: {statistics.median(eager) / statistics.median(meta):.2f}")


if __name__ == "__main__":
    main()
