"""Samples/s of our streaming loader beside mosaicml-streaming's StreamingDataset, on the same shards.

    .venv/bin/python -m bench.dataloader_bench [--samples 40000] [--seq-len 2048] [--workers 0,2]

Three places the shards can be: a local folder (read in place), a local S3-compatible server with a
cold cache (every shard downloaded), and the same with a warm cache (shards already on local disk).
Both loaders shuffle, return int64 token batches of --batch-size through a torch DataLoader with the
same number of workers, and read one full epoch; each measurement runs in a fresh subprocess
(streaming's with .cache/side/streaming first on sys.path, see scripts/side_install_streaming.sh).
samples/s is the steady rate after the first batch; first_batch_s (process start to first batch,
imports included) is reported beside it. Prints one JSON line per measurement, then a table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIDE = REPO / ".cache" / "side" / "streaming"

# Each loader script prints {"seconds": total, "first_batch_s": ..., "samples": n}.
KILN_LOADER = r"""
import json, sys, time
start = time.perf_counter()
from training.data.cache import CacheSettings
from training.data.loader import StreamingLoader, TokenBatches
from training.data.order import BatchLayout, build_order
from training.data.sources import resolve_source
url, cache, batch, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
source = resolve_source(url, "train")
steps = source.num_samples // batch
batches = TokenBatches([source], build_order([source], 17, True, 8), BatchLayout(batch, batch, 0, 1),
                       CacheSettings(cache, 1 << 40, prefetch_shards=4), num_micro_batches=steps)
first = None
for i, b in enumerate(StreamingLoader(batches, num_workers=workers, prefetch_batches=4)):
    assert b["input_ids"].shape[0] == batch
    first = first or time.perf_counter() - start
print(json.dumps({"seconds": time.perf_counter() - start, "first_batch_s": first, "samples": steps * batch}))
"""

STREAMING_LOADER = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np, torch
from torch.utils.data import DataLoader
from streaming import StreamingDataset
from streaming.base.util import clean_stale_shared_memory
remote, local, batch, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
clean_stale_shared_memory()

class Tokens(StreamingDataset):  # as llm-foundry's text dataset: int64 tensors per sample
    def __getitem__(self, i):
        return torch.from_numpy(super().__getitem__(i)["tokens"].astype(np.int64))

ds = Tokens(remote=None if remote == "-" else remote, local=local, shuffle=True, shuffle_seed=17, batch_size=batch)
steps = ds.num_samples // batch
loader = DataLoader(ds, batch_size=batch, num_workers=workers, prefetch_factor=4 if workers else None, drop_last=True)
first = None
for i, b in enumerate(loader):
    if i == steps:
        break
    first = first or time.perf_counter() - start
print(json.dumps({"seconds": time.perf_counter() - start, "first_batch_s": first, "samples": steps * batch}))
"""


def run_loader(which: str, source: str, cache: str, batch: int, workers: int, env: dict) -> dict:
    script = KILN_LOADER if which == "kiln" else STREAMING_LOADER
    child_env = dict(env, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) if which == "kiln" else f"{SIDE}{os.pathsep}{REPO}")
    done = subprocess.run([sys.executable, "-c", script, source, cache, str(batch), str(workers)], env=child_env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{which} loader failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_dataset(folder: str, samples: int, seq_len: int, compression: str | None) -> None:
    from shards import MDSWriter, token_columns

    rng = np.random.default_rng(0)
    with MDSWriter(folder, token_columns(50_257), compression=compression, hashes=["xxh3_64"],
                   size_limit=1 << 24) as writer:
        for _ in range(samples):
            writer.write({"tokens": rng.integers(0, 50_257, seq_len, dtype=np.uint16)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--compression", default="none")
    args = parser.parse_args()
    if not SIDE.is_dir():
        sys.exit(f"{SIDE} is missing: run scripts/side_install_streaming.sh first")
    from shards.local_s3 import LocalS3
    import fsspec

    tmp = tempfile.mkdtemp(prefix="dataloader-bench-")
    rows = []
    try:
        local = os.path.join(tmp, "local")
        write_dataset(local, args.samples, args.seq_len, None if args.compression == "none" else args.compression)
        with LocalS3() as s3:
            s3.create_bucket("bench")
            fsspec.filesystem("s3").put(local + "/", "s3://bench/tokens/", recursive=True)
            env = dict(os.environ, S3_ENDPOINT_URL=s3.endpoint)  # streaming reads S3_ENDPOINT_URL
            for workers in [int(w) for w in args.workers.split(",")]:
                for which in ("kiln", "streaming"):
                    cache = os.path.join(tmp, f"{which}-cache-{workers}")
                    cases = [
                        ("local folder", local if which == "kiln" else "-", local),  # read in place
                        ("S3, cold cache", "s3://bench/tokens", cache),
                        ("S3, warm cache", "s3://bench/tokens", cache),
                    ]
                    for case, source, cache in cases:
                        result = run_loader(which, source, cache, args.batch_size, workers, env)
                        steady = (result["samples"] - args.batch_size) / (result["seconds"] - result["first_batch_s"])
                        row = {"loader": which, "case": case, "workers": workers, "samples_per_s": round(steady),
                               "first_batch_s": round(result["first_batch_s"], 2),
                               "seconds": round(result["seconds"], 2)}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print("\n| case | workers | kiln samples/s | streaming samples/s | kiln / streaming "
          "| first batch (s), kiln / streaming |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    keyed = {(r["loader"], r["case"], r["workers"]): r for r in rows}
    for (loader, case, workers), row in keyed.items():
        if loader != "kiln":
            continue
        theirs = keyed[("streaming", case, workers)]
        print(f"| {case} | {workers} | {row['samples_per_s']:,} | {theirs['samples_per_s']:,} | "
              f"{row['samples_per_s'] / theirs['samples_per_s']:.2f}x | "
              f"{row['first_batch_s']} / {theirs['first_batch_s']} |")


if __name__ == "__main__":
    main()
