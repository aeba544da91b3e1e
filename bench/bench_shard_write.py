"""Throughput of our MDS writer and reader on token samples, beside mosaicml-streaming's writer.

    .venv/bin/python -m bench.bench_shard_write [--samples 40000] [--seq-len 2048] [--compression zstd]

Prints one JSON line per measurement. streaming's writer runs in a subprocess with
.cache/side/streaming on sys.path (see scripts/side_install_streaming.sh) and is skipped, with
a note, when that folder is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shards import MDSReader, MDSWriter, token_columns

REPO = Path(__file__).resolve().parents[1]
SIDE = REPO / ".cache" / "side" / "streaming"

STREAMING_WRITE = r"""
import sys, time, numpy as np
from streaming import MDSWriter
tokens = np.load(sys.argv[1])
compression = sys.argv[3] if sys.argv[3] != "none" else None
start = time.perf_counter()
with MDSWriter(out=sys.argv[2], columns={"tokens": "ndarray:uint16"}, compression=compression, hashes=["xxh64"]) as w:
    for row in tokens:
        w.write({"tokens": row})
print(time.perf_counter() - start)
"""


def report(name: str, seconds: float, samples: int, nbytes: int) -> None:
    print(json.dumps({
        "measure": name, "seconds": round(seconds, 3), "samples_per_s": round(samples / seconds),
        "token_MB_per_s": round(nbytes / seconds / 1e6, 1),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--compression", default="none", help="none, zstd, zstd:LEVEL, gz, bz2")
    args = parser.parse_args()
    compression = None if args.compression == "none" else args.compression

    tokens = np.random.default_rng(0).integers(0, 50_257, (args.samples, args.seq_len), dtype=np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        ours = os.path.join(tmp, "ours")
        start = time.perf_counter()
        with MDSWriter(ours, token_columns(50_257), compression=compression, hashes=["xxh64"]) as writer:
            for row in tokens:
                writer.write({"tokens": row})
        report("kiln MDSWriter.write", time.perf_counter() - start, args.samples, tokens.nbytes)

        reader = MDSReader(ours)
        order = np.random.default_rng(1).permutation(args.samples)
        start = time.perf_counter()
        for i in order:
            reader[int(i)]
        report("kiln MDSReader[i] random order", time.perf_counter() - start, args.samples, tokens.nbytes)
        start = time.perf_counter()
        for shard_idx in range(reader.num_shards):
            reader.read_shard(shard_idx)
        report("kiln MDSReader.read_shard", time.perf_counter() - start, args.samples, tokens.nbytes)

        if not SIDE.is_dir():
            print(json.dumps({"measure": "streaming MDSWriter.write", "skipped": f"{SIDE} missing"}))
            return
        np.save(os.path.join(tmp, "tokens.npy"), tokens)
        env = dict(os.environ, PYTHONPATH=str(SIDE))
        out = subprocess.run(
            [sys.executable, "-c", STREAMING_WRITE, os.path.join(tmp, "tokens.npy"), os.path.join(tmp, "theirs"),
             args.compression], env=env, capture_output=True, text=True, check=True,
        )
        report("streaming MDSWriter.write", float(out.stdout.strip().splitlines()[-1]), args.samples, tokens.nbytes)


if __name__ == "__main__":
    main()
