"""Tokens/s of the `tokenize` stage vs `Tokenizer.encode_batch` called directly, same texts, same run.

    .venv/bin/python bench/tokenize_bench.py [--docs 24000] [--vocab 16384]

The peer is the tokenizer itself in one Python process: `encode_batch` (and `encode_batch_fast`,
which the stage calls) over batches of 1,000 texts, once on one thread (TOKENIZERS_PARALLELISM=false)
and once with the tokenizer's own thread pool on every core. The stage runs in its own process on
local[1] and on local[N] Spark (N = cores) over the same texts read from Parquet files; it is timed
on the encoding alone (the sum of num_tokens forces every document through it) and then with
packing into 2048-token samples. "Per core" divides the stage's tokens/s by the cores it ran on
and compares with encode_batch on one thread (the goal: >= 0.7).

CPU-seconds are also printed: the peer's process time, or that of the stage's process and every
process under it (Spark's JVM, its Python workers). On a machine shared with other jobs the
wall-clock rate of a run depends on how much CPU the scheduler handed it; compare runs made
close together, and look at local[1] against one thread, which compete for the same share.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_corpus(num_docs: int, seed: int = 0) -> list[str]:
    """English-like text: Zipf-distributed words made of syllables, sentences, numbers, punctuation."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou", "er", "an", "in")]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.choice((1, 1, 2, 2, 3, 4)))) for _ in range(8000)})
    weights = [1 / (rank + 1) for rank in range(len(words))]
    docs = []
    for _ in range(num_docs):
        chars = int(rng.lognormvariate(7.6, 0.8))  # median ~2,000 characters
        parts, size = [], 0
        while size < chars:
            sentence = rng.choices(words, weights, k=rng.randint(5, 25))
            sentence[0] = sentence[0].capitalize()
            if rng.random() < 0.2:
                sentence.insert(rng.randrange(len(sentence)), str(rng.randint(0, 99999)))
            text = " ".join(sentence) + rng.choice((".", ".", ".", "?", "!", ","))
            parts.append(text)
            size += len(text) + 1
        docs.append(" ".join(parts))
    return docs


PEER = r"""
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = json.load(open(sys.argv[2]))
batches = [texts[i:i + 1000] for i in range(0, len(texts), 1000)]
tok.encode_batch(batches[0], add_special_tokens=False)  # warm up
result = {}
for method in ("encode_batch", "encode_batch_fast"):
    encode = getattr(tok, method)
    start, cpu = time.perf_counter(), time.process_time()
    tokens = sum(len(e.ids) for b in batches for e in encode(b, add_special_tokens=False))
    result[method] = {"tokens": tokens, "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}
print(json.dumps(result))
"""


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by process ``root`` and all its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            # after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based
            stats[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo.extend(child for child, (parent, _) in stats.items() if parent == pid)
    return total / ticks


def run_peer(tokenizer_file: str, texts_file: str, parallel: bool) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true" if parallel else "false"}
    out = subprocess.run([sys.executable, "-c", PEER, tokenizer_file, texts_file], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def run_stage(work: Path, tokenizer_file: str, cores: int) -> dict:
    """The stage on local[cores] Spark, in its own process (one Spark master per process)."""
    env = {**os.environ, "KILN_SPARK_MASTER": f"local[{cores}]", "KILN_CACHE": str(REPO / ".cache")}
    out = subprocess.run([sys.executable, __file__, "--stage-only", str(work), tokenizer_file, str(cores)],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def stage_only(work: str, tokenizer_file: str, cores: int) -> None:
    """Runs in the subprocess: encode twice (the first also starts the workers), then encode + pack."""
    from pyspark.sql import functions as F

    from etl.spark import get_spark
    from etl.stages.base import StageContext
    from etl.dataset.tokenize import Tokenize, TokenizeParams

    spark = get_spark("tokenize-bench", {"spark.sql.shuffle.partitions": str(2 * cores)})
    docs = spark.read.parquet(f"{work}/docs")
    ctx = StageContext(spark, f"{work}/out", f"{work}/out/_state", "bench")
    result = {}
    for _ in range(2):
        stage = Tokenize(TokenizeParams(tokenizer=tokenizer_file, seq_len=2048, val_fraction=0.0))
        start, cpu = time.perf_counter(), tree_cpu_seconds(os.getpid())
        encoded = stage.run(docs, ctx)
        tokens = encoded.docs.agg(F.sum("num_tokens")).collect()[0][0]
        result["encode"] = {"tokens": tokens, "seconds": time.perf_counter() - start,
                            "cpu": tree_cpu_seconds(os.getpid()) - cpu}
    annotated = encoded.docs.persist()
    start, cpu = time.perf_counter(), tree_cpu_seconds(os.getpid())
    annotated.count()
    samples = encoded.tables["samples"].count()
    result["encode_and_pack"] = {"tokens": tokens, "samples": samples, "seconds": time.perf_counter() - start,
                                 "cpu": tree_cpu_seconds(os.getpid()) - cpu}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=24_000)
    parser.add_argument("--vocab", type=int, default=16_384)
    parser.add_argument("--stage-only", nargs=3, metavar=("WORK", "TOKENIZER", "CORES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage_only:
        stage_only(args.stage_only[0], args.stage_only[1], int(args.stage_only[2]))
        return
    cores = os.cpu_count() or 1

    import pyarrow as pa
    import pyarrow.parquet as pq

    from etl.dataset.tokenizer import save_tokenizer, train_bpe_tokenizer

    work = Path(tempfile.mkdtemp(prefix="kiln-tokenize-bench-"))
    try:
        texts = synthetic_corpus(args.docs)
        megabytes = sum(len(t.encode()) for t in texts) / 1e6
        tokenizer_file = save_tokenizer(train_bpe_tokenizer(texts[:2000], args.vocab), str(work / "tok"))
        (work / "texts.json").write_text(json.dumps(texts))
        ids = [f"bench/{i}" for i in range(len(texts))]
        table = pa.table({"id": ids, "source": ["bench"] * len(texts), "text": texts, "content_hash": [""] * len(texts),
                          "meta": pa.array([[]] * len(texts), pa.map_(pa.string(), pa.string()))})
        (work / "docs").mkdir()
        files = 4 * cores  # a table of several files, as the pipeline's Delta tables are: one task per core
        for i in range(files):
            start, stop = i * len(texts) // files, (i + 1) * len(texts) // files
            pq.write_table(table.slice(start, stop - start), work / "docs" / f"part-{i}.parquet")
        print(f"corpus: {len(texts):,} documents, {megabytes:.1f} MB; vocab {args.vocab}; {cores} cores")

        runs = [("peer, 1 thread", run_peer(tokenizer_file, str(work / "texts.json"), parallel=False))]
        runs.append((f"peer, {cores} threads", run_peer(tokenizer_file, str(work / "texts.json"), parallel=True)))
        runs.append(("stage, local[1]", run_stage(work, tokenizer_file, 1)))
        runs.append((f"stage, local[{cores}]", run_stage(work, tokenizer_file, cores)))
        runs.append(("peer, 1 thread (again)", run_peer(tokenizer_file, str(work / "texts.json"), parallel=False)))

        print(f"tokens: {runs[2][1]['encode']['tokens']:,} ({runs[2][1]['encode_and_pack']['samples']:,} samples of 2048)")
        print(f"{'run':44s} {'tokens/s':>10s} {'CPU-s':>7s} {'tokens/CPU-s':>13s}")
        for name, result in runs:
            for what, r in result.items():
                print(f"{name + ': ' + what.replace('_', ' '):44s} {r['tokens'] / r['seconds']:10,.0f} {r['cpu']:7.1f} "
                      f"{r['tokens'] / r['cpu']:13,.0f}")
        peers = [r["encode_batch"] for name, r in runs if name.startswith("peer, 1 thread")]
        peer_rate = max(r["tokens"] / r["seconds"] for r in peers)
        for name, result in runs[2:4]:
            used = int(name.split("[")[1].rstrip("]"))
            for what in ("encode", "encode_and_pack"):
                r = result[what]
                print(f"{name} {what.replace('_', ' ')}: per core {r['tokens'] / r['seconds'] / used / peer_rate:.2f} "
                      "of encode_batch on 1 thread (best of the two peer runs)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
