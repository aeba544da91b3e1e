"""Shard-writing MB/s to local disk and to a local S3-compatible server (moto), same samples, same run.

    .venv/bin/python bench/shard_write_bench.py [--samples 20000] [--seq-len 2048]

Writers, each given the same packed samples (seq_len uint16 tokens plus two uint32 key columns):

* ``shards.MDSWriter`` in one process (our codec alone);
* ``streaming.MDSWriter`` (mosaicml-streaming 0.13, from .cache/side/streaming) in one process,
  local disk only: the peer;
* the ``shuffle_and_write`` stage end to end on local[N] Spark: read the samples Delta table,
  globally shuffle, encode and write shards from the executors, index and manifest.

Rates are MB of uncompressed shard bytes (what the writer encodes) and of stored bytes (what
reaches the disk or the store; smaller with zstd) per second of wall time; CPU-s is the CPU time
of this process and everything under it (the peer's process, Spark's JVM and Python workers, and
the moto server for S3 runs) during the write, which stays meaningful on a busy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tokenize_bench import tree_cpu_seconds  # bench/ is this script's folder

REPO = Path(__file__).resolve().parents[1]
SIDE = REPO / ".cache" / "side" / "streaming"
sys.path.insert(0, str(REPO))

COLUMNS = {"tokens": "ndarray:uint16", "bucket": "uint32", "bucket_index": "uint32"}
NUM_BUCKETS = 16


def make_samples(count: int, seq_len: int) -> list[dict]:
    """Token ids drawn from a Zipf-like distribution (so compression has something to find)."""
    rng = np.random.default_rng(0)
    tokens = np.minimum(rng.zipf(1.2, size=(count, seq_len)), 50_000).astype(np.uint16)
    return [{"tokens": tokens[i], "bucket": i % NUM_BUCKETS, "bucket_index": i // NUM_BUCKETS} for i in range(count)]


def shard_bytes(folder: str) -> tuple[int, int]:
    """(uncompressed, stored) bytes of the shards listed in the folder's index."""
    from shards import read_index

    entries = read_index(folder)["shards"]
    return sum(e["raw_data"]["bytes"] for e in entries), sum((e["zip_data"] or e["raw_data"])["bytes"] for e in entries)


def write_ours(samples: list[dict], out: str, compression: str | None) -> float:
    """Seconds to write ``samples`` with our codec in this process."""
    from shards import MDSWriter

    start = time.perf_counter()
    with MDSWriter(out, COLUMNS, compression=compression) as writer:
        for sample in samples:
            writer.write(sample)
    return time.perf_counter() - start


PEER = r"""
import pickle, sys, time
from streaming import MDSWriter
samples, jobs = pickle.load(open(sys.argv[1], "rb"))
result = {}
for name, (out, compression) in jobs.items():
    start, cpu = time.perf_counter(), time.process_time()
    with MDSWriter(out=out, columns={"tokens": "ndarray:uint16", "bucket": "uint32", "bucket_index": "uint32"},
                   compression=compression, size_limit=1 << 26) as writer:
        for sample in samples:
            writer.write(sample)
    result[name] = (time.perf_counter() - start, time.process_time() - cpu)
pickle.dump(result, open(sys.argv[2], "wb"))
"""


def write_peer(samples: list[dict], jobs: dict[str, tuple[str, str | None]], work: Path) -> dict[str, tuple[float, float]]:
    (work / "peer_job.pkl").write_bytes(pickle.dumps((samples, jobs)))
    env = {**os.environ, "PYTHONPATH": str(SIDE)}
    subprocess.run([sys.executable, "-c", PEER, str(work / "peer_job.pkl"), str(work / "peer_out.pkl")],
                   env=env, check=True, capture_output=True, timeout=1800)
    return pickle.loads((work / "peer_out.pkl").read_bytes())


def tokenize_tables(spark, samples: list[dict], seq_len: int, out: str) -> None:
    """The tables `tokenize` would have written for these samples (all in the train split)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from etl.delta import write_table

    tokens = np.stack([s["tokens"] for s in samples])
    table = pa.table({
        "split": ["train"] * len(samples), "bucket": pa.array([s["bucket"] for s in samples], pa.int32()),
        "index": pa.array([s["bucket_index"] for s in samples], pa.int64()),
        "tokens": pa.array([row.tobytes() for row in tokens], pa.binary()),
    })
    os.makedirs(out, exist_ok=True)
    pq.write_table(table, f"{out}/samples.parquet", row_group_size=2_000)
    write_table(spark.read.parquet(f"{out}/samples.parquet"), f"{out}/tokenize/samples")
    counts = np.bincount([s["bucket"] for s in samples], minlength=NUM_BUCKETS)
    buckets = [("train", b, 0, int(c) * seq_len, int(c), 0, None) for b, c in enumerate(counts)]
    write_table(spark.createDataFrame(buckets, "split string, bucket int, docs long, tokens long, samples long, "
                                      "tail_tokens int, tail_action string"), f"{out}/tokenize/buckets")
    write_table(spark.createDataFrame([], "split string, bucket int, sample_index long, sample_offset int, doc_id string, "
                                      "source string, doc_offset int, length int, doc_tokens int, kept boolean"),
                f"{out}/tokenize/provenance")
    from etl.dataset.info import INFO_SCHEMA

    info = ("bench", "0" * 64, 50_257, "uint16", seq_len, NUM_BUCKETS, 0, ["train"], "drop", 0, None, None,
            json.dumps({"bench": True}), "bench")
    write_table(spark.createDataFrame([info], INFO_SCHEMA), f"{out}/tokenize/info")


def write_stage(spark, out: str, dataset_root: str, compression: str | None) -> float:
    from etl.stages.base import StageContext
    from etl.dataset.shuffle_write import ShuffleAndWrite, ShuffleWriteParams

    docs = spark.createDataFrame([], "id string, source string, text string, content_hash string, meta map<string,string>")
    params = ShuffleWriteParams(dataset_root=dataset_root, compression=compression, quality_report=False)
    start = time.perf_counter()
    ShuffleAndWrite(params).run(docs, StageContext(spark, out, out + "/_state", "bench"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    os.environ.setdefault("KILN_SPARK_MASTER", f"local[{cores}]")
    os.environ.setdefault("KILN_CACHE", str(REPO / ".cache"))

    from shards.local_s3 import LocalS3

    work = Path(tempfile.mkdtemp(prefix="kiln-shard-bench-"))
    s3 = LocalS3().start()  # before Spark, so its executors see the endpoint
    try:
        s3.create_bucket("bench")
        samples = make_samples(args.samples, args.seq_len)
        results = []  # (writer, target, compression, raw MB, stored MB, seconds, CPU seconds)

        def record(writer, target, compression, folder, seconds, cpu):
            raw, stored = shard_bytes(folder)
            results.append((writer, target, compression or "none", raw / 1e6, stored / 1e6, seconds, cpu))

        def cpu_of(write, *args):
            """(seconds the call reports, CPU seconds of this process tree during it)."""
            before = tree_cpu_seconds(os.getpid())
            seconds = write(*args)
            return seconds, tree_cpu_seconds(os.getpid()) - before

        for compression in (None, "zstd"):
            tag = compression or "raw"
            for target, out in (("local disk", str(work / f"ours_{tag}")), ("local S3", f"s3://bench/ours_{tag}")):
                record("shards.MDSWriter, 1 process", target, compression, out, *cpu_of(write_ours, samples, out, compression))
        if SIDE.is_dir():
            jobs = {tag: (str(work / f"peer_{tag}"), c) for tag, c in (("raw", None), ("zstd", "zstd"))}
            for tag, (seconds, cpu) in write_peer(samples, jobs, work).items():
                record("streaming.MDSWriter, 1 process", "local disk", jobs[tag][1], jobs[tag][0], seconds, cpu)
        else:
            print(f"(no {SIDE}: run scripts/side_install_streaming.sh to include the peer)")

        from etl.spark import get_spark

        spark = get_spark("shard-write-bench", {"spark.sql.shuffle.partitions": str(2 * cores)})
        tokenize_tables(spark, samples, args.seq_len, str(work / "pipeline"))
        write_stage(spark, str(work / "pipeline"), str(work / "warmup"), None)  # starts the Python workers
        for compression in (None, "zstd"):
            tag = compression or "raw"
            for target, root in (("local disk", str(work / f"stage_{tag}")), ("local S3", f"s3://bench/stage_{tag}")):
                folder = f"{root}/v=1/train"
                seconds, cpu = cpu_of(lambda: write_stage(spark, str(work / "pipeline"), root, compression))
                record(f"shuffle_and_write stage, local[{cores}]", target, compression, folder, seconds, cpu)

        print(f"{len(samples):,} samples of {args.seq_len} uint16 tokens; {cores} cores")
        print(f"{'writer':38s} {'target':11s} {'compression':11s} {'raw MB':>7s} {'stored':>7s} {'seconds':>8s} "
              f"{'raw MB/s':>9s} {'stored MB/s':>11s} {'CPU-s':>6s}")
        for writer, target, compression, raw, stored, seconds, cpu in results:
            print(f"{writer:38s} {target:11s} {compression:11s} {raw:7.1f} {stored:7.1f} {seconds:8.2f} "
                  f"{raw / seconds:9.1f} {stored / seconds:11.1f} {cpu:6.1f}")
        by_key = {(w.split(",")[0], t, c): raw / s for w, t, c, raw, _, s, _ in results}
        for compression in ("none", "zstd"):
            peer = by_key.get(("streaming.MDSWriter", "local disk", compression))
            if peer:
                ours = by_key[("shards.MDSWriter", "local disk", compression)]
                print(f"shards.MDSWriter / streaming.MDSWriter, local disk, {compression}: {ours / peer:.2f}")
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
