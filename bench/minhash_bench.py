"""MinHash near-duplicate removal: quality and speed against datasketch and datatrove, and a scale run.

    python bench/minhash_bench.py quality --docs 20000       # F1 at 0.7 / 0.8, docs/s side by side
    python bench/minhash_bench.py scale --docs 1000000       # 1M short documents, peak RSS
    python bench/minhash_bench.py whole --docs 10000         # `python -m etl run` vs datatrove, as typed

`quality` builds the planted corpus (bench/minhash_corpus.py), its exact ground truth, then runs on
the same corpus and machine:
  * signatures only, one core each: etl.text.minhash vs datasketch (MinHash.update_batch per document,
    shingles built in Python with the same normalisation);
  * the whole job: the minhash_dedup Spark stage (local[2]) vs datasketch (MinHash + MinHashLSH
    insert/query + union-find, one process) vs datatrove 0.10.1's four-step MinHash pipeline
    (LocalPipelineExecutor, 2 workers, in .cache/venv-datatrove: scripts/side_install_datatrove.sh);
and prints document-level precision/recall/macro F1 (text-dedup's CORE scoring) and documents/s.

`whole` times each side's whole command from the shell, start-up included: `python -m etl run` of a
config that holds only minhash_dedup (its JVM start, the JSONL ingest, the stage, the report, as a
user gets them; once with the default verify=exact, once with verify=estimated) against a script of
datatrove's documented MinHash example (JsonlReader, the four steps, JsonlWriter of the kept and of
the removed documents; LocalPipelineExecutor, 2 workers), on the same JSONL files, in turns,
`--rounds` times (default 2). Every clustering is scored against exact-Jaccard truth.

`scale` writes N short documents to Parquet, runs the stage on local[2], and samples the resident
memory of the driver process tree (Python driver + JVM + Python workers) every 0.2 s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KILN_CACHE", str(ROOT / ".cache"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.minhash_corpus import components, core_scores, ground_truth, make_corpus, shingles  # noqa: E402
from bench.process_tree import TreeSampler  # noqa: E402
from etl.text import minhash  # noqa: E402

DATATROVE_PYTHON = ROOT / ".cache" / "venv-datatrove" / "bin" / "python"
NUM_PERM = 128


def _spark(cores: int = 2):
    os.environ.setdefault("KILN_SPARK_MASTER", f"local[{cores}]")
    from etl.spark import get_spark

    return get_spark("minhash-bench")


# ---------------------------------------------------------------- signatures, one core each


def signatures_ours(texts: list[str], batch: int = 10_000) -> tuple[float, float]:
    """(docs per wall second, docs per CPU second) of etl.text.minhash on one thread."""
    hasher = minhash.MinHasher(NUM_PERM, 1)
    spec = minhash.ShingleSpec()
    hasher.signatures_of_texts(pa.array(texts[:batch]), spec)  # warm the process (allocator, caches)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch):
        hasher.signatures_of_texts(pa.array(texts[i:i + batch]), spec)
    return len(texts) / (time.perf_counter() - start), len(texts) / (time.process_time() - cpu)


def signatures_datasketch(texts: list[str]) -> tuple[float, float]:
    """(docs per wall second, docs per CPU second) of datasketch's MinHash.update_batch."""
    from datasketch import MinHash

    start, cpu = time.perf_counter(), time.process_time()
    for text in texts:
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
    return len(texts) / (time.perf_counter() - start), len(texts) / (time.process_time() - cpu)


# ---------------------------------------------------------------- whole jobs


def datasketch_job(texts: list[str], threshold: float, weights=(0.5, 0.5)) -> tuple[float, list[int]]:
    """Signatures, LSH insert + query, union-find: the in-memory baseline (one process)."""
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=weights)
    hashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
        hashes.append(m)
        lsh.insert(i, m)
    pairs = [(i, j) for i, m in enumerate(hashes) for j in lsh.query(m) if j != i]
    labels = components(len(texts), pairs)
    return time.perf_counter() - start, labels


def ours_job(spark, parquet: str, ids: list[str], threshold: float, workdir: Path, **params) -> tuple[float, list, dict]:
    from etl.stages.base import StageContext
    from etl.stages.minhash_dedup import MinHashDedup, MinHashDedupParams

    start = time.perf_counter()
    docs = spark.read.parquet(parquet)
    ctx = StageContext(spark, str(workdir / "ours"), str(workdir / "ours" / "_state"), "bench")
    result = MinHashDedup(MinHashDedupParams(threshold=threshold, **params)).run(docs, ctx)
    # Force both outputs as the pipeline would: the annotated documents and the clusters table.
    result.docs.write.mode("overwrite").parquet(str(workdir / "ours" / "annotated"))
    clusters = result.tables["clusters"]
    clusters.write.mode("overwrite").parquet(str(workdir / "ours" / "clusters"))
    seconds = time.perf_counter() - start
    cluster_of = dict(spark.read.parquet(str(workdir / "ours" / "clusters")).select("id", "cluster_id").collect())
    metrics = result.metrics(result.docs) if result.metrics else {}
    return seconds, [cluster_of.get(i, i) for i in ids], metrics


_DATATROVE_SCRIPT = r'''
import glob, json, sys
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.utils.hashing import HashConfig

src, work, bands, rows, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
files = sorted(glob.glob(f"{src}/*.jsonl"))


def read(data, rank=0, world_size=1):
    # datatrove's JsonlReader needs orjson, which its side venv lacks: read the same records with json.
    with open(files[rank]) as handle:
        for line in handle:
            record = json.loads(line)
            yield Document(text=record["text"], id=record["id"])


def write_clusters(data, rank=0, world_size=1):
    with open(f"{work}/clusters-{rank}.jsonl", "w") as out:
        for doc in data:
            out.write(json.dumps({"id": doc.id, "cluster": doc.metadata.get("minhash_cluster_id")}) + "\n")
        yield from ()


def main():
    config = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows, seed=1, hash_config=HashConfig(precision=64))
    common = dict(workers=workers, logging_dir=f"{work}/logs", skip_completed=False)
    LocalPipelineExecutor(pipeline=[read, MinhashDedupSignature(output_folder=f"{work}/sigs", config=config)],
                          tasks=len(files), **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config)],
                          tasks=bands, **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove",
                                                        config=config, save_cluster_id=True)],
                          tasks=1, workers=1, logging_dir=f"{work}/logs", skip_completed=False).run()
    LocalPipelineExecutor(pipeline=[read, MinhashDedupFilter(input_folder=f"{work}/remove", load_cluster_ids=True,
                                                             exclusion_writer=None), write_clusters],
                          tasks=len(files), **common).run()


# datatrove's workers start from a forkserver that re-imports __main__: run only when executed.
if __name__ == "__main__":
    main()
'''


def _lend(folder: Path, *modules) -> str:
    """datatrove's MinHash needs `tokenizers` (imported by datatrove.pipeline.dedup) and `xxhash`, which
    its side venv does not install: a folder that holds only .venv's copies of ``modules`` (same
    interpreter), for its PYTHONPATH."""
    folder.mkdir()
    for module in modules:
        package = Path(module.__file__).parent
        for path in [package, *package.parent.glob(f"{module.__name__}-*.dist-info")]:
            (folder / path.name).symlink_to(path)
    return str(folder)


def _datatrove_clusters(jsonl_dir: Path, remove_dir: Path) -> dict[str, str]:
    """Cluster membership from datatrove's own output: <rank>.clusters holds (document index within the
    rank's input file, cluster id) as uint32 pairs for every clustered document, kept or removed."""
    cluster_of = {}
    for rank, path in enumerate(sorted(jsonl_dir.glob("*.jsonl"))):
        with open(path) as handle:
            rank_ids = [json.loads(line)["id"] for line in handle]
        clusters_file = remove_dir / f"{rank:06d}.clusters"
        if clusters_file.exists():
            for doc, cluster in np.fromfile(clusters_file, dtype="<u4").reshape(-1, 2).tolist():
                cluster_of[rank_ids[doc]] = f"c{cluster}"
    return cluster_of


def datatrove_job(jsonl_dir: Path, ids: list[str], bands: int, rows: int, workdir: Path, workers: int = 2) -> tuple[float, list]:
    import shutil

    work = workdir / "datatrove"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    script = work / "run.py"
    script.write_text(_DATATROVE_SCRIPT)
    import tokenizers
    import xxhash

    env = {**os.environ, "PYTHONPATH": _lend(work / "extra", tokenizers, xxhash)}
    start = time.perf_counter()
    subprocess.run([str(DATATROVE_PYTHON), str(script), str(jsonl_dir), str(work), str(bands), str(rows), str(workers)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - start
    cluster_of = _datatrove_clusters(jsonl_dir, work / "remove")
    return seconds, [cluster_of.get(i, i) for i in ids]


# ---------------------------------------------------------------- commands


def _print_row(name: str, docs_per_s: float, s: dict) -> None:
    print(f"{name:<58} {docs_per_s:>8,.0f} {s['precision_dup']:>6.3f} {s['recall_dup']:>6.3f} "
          f"{s['precision_nondup']:>6.3f} {s['recall_nondup']:>6.3f} {s['macro_f1']:>8.4f}", flush=True)


def quality(args) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.docs, args.seed)
    ids, texts = corpus.ids, corpus.texts
    parquet = str(workdir / "corpus.parquet")
    pq.write_table(pa.table({"id": ids, "text": texts}), parquet, row_group_size=5_000)
    jsonl_dir = workdir / "jsonl"
    jsonl_dir.mkdir(exist_ok=True)
    for old in jsonl_dir.glob("*.jsonl"):
        old.unlink()
    shards = 8
    for s in range(shards):
        with open(jsonl_dir / f"part{s}.jsonl", "w") as handle:
            for i in range(s, len(ids), shards):
                handle.write(json.dumps({"id": ids[i], "text": texts[i]}) + "\n")
    print(f"corpus: {len(ids):,} documents, {sum(len(t) for t in texts) / len(texts):.0f} chars on average")

    results = {"docs": len(ids), "thresholds": {}}
    # Per core: both on one thread (Arrow's pool too), in turns, best of three each. CPU seconds of
    # this process are what a core did; wall seconds also count what other tenants of the machine took.
    pa.set_cpu_count(1)
    ours = [signatures_ours(texts) for _ in range(3)]
    peer = [signatures_datasketch(texts[: min(len(texts), 5000)]) for _ in range(3)]
    (ours_wall, ours_cpu), (ds_wall, ds_cpu) = (tuple(max(r[i] for r in runs) for i in (0, 1)) for runs in (ours, peer))
    results["signatures_docs_per_s"] = {
        "ours_1core_wall": round(ours_wall), "datasketch_1core_wall": round(ds_wall), "ratio_wall": round(ours_wall / ds_wall, 1),
        "ours_1core_cpu": round(ours_cpu), "datasketch_1core_cpu": round(ds_cpu), "ratio_cpu": round(ours_cpu / ds_cpu, 1)}
    print(f"signatures, one core: ours {ours_wall:,.0f} docs/s, datasketch {ds_wall:,.0f} docs/s -> {ours_wall / ds_wall:.1f}x; "
          f"per CPU second {ours_cpu:,.0f} vs {ds_cpu:,.0f} -> {ours_cpu / ds_cpu:.1f}x")

    spark = _spark(2)
    # The JVM's JIT and the Python workers warm up once per Spark session (a cluster pays it once,
    # not per job): an untimed run on a slice, so the first threshold timed is not charged for it.
    warm = str(workdir / "warmup.parquet")
    pq.write_table(pa.table({"id": ids[:1000], "text": texts[:1000]}), warm)
    ours_job(spark, warm, ids[:1000], args.thresholds[0], workdir / "warmup")
    for threshold in args.thresholds:
        start = time.perf_counter()
        truth = ground_truth(texts, threshold)
        print(f"\nthreshold {threshold}: ground truth in {time.perf_counter() - start:.0f}s, "
              f"{sum(1 for i, t in enumerate(truth) if truth.count(t) > 1) if len(truth) < 30000 else 'many'} duplicate documents")
        from etl.stages.minhash_dedup import MinHashDedupParams

        bands, rows = MinHashDedupParams(threshold=threshold).band_rows()
        rows_out = {}
        for verify in ("exact", "estimated"):
            seconds, labels, metrics = ours_job(spark, parquet, ids, threshold, workdir, verify=verify)
            name = f"kiln minhash_dedup (Spark local[2], verify={verify})"
            rows_out[name] = (seconds, core_scores(truth, labels))
            _print_row(name, len(ids) / seconds, rows_out[name][1])  # early, in case a peer fails later
        seconds, labels = datasketch_job(texts, threshold)
        rows_out["datasketch MinHashLSH (1 process, weights 0.5/0.5)"] = (seconds, core_scores(truth, labels))
        seconds, labels = datasketch_job(texts, threshold, weights=(0.2, 0.8))
        rows_out["datasketch MinHashLSH (1 process, weights 0.2/0.8)"] = (seconds, core_scores(truth, labels))
        if DATATROVE_PYTHON.exists():
            seconds, labels = datatrove_job(jsonl_dir, ids, bands, rows, workdir)
            rows_out[f"datatrove 0.10.1 MinHash ({bands}x{rows}, 2 workers)"] = (seconds, core_scores(truth, labels))
        else:
            print("datatrove: not installed (run scripts/side_install_datatrove.sh)")
        print(f"{'system':<58} {'docs/s':>8} {'P dup':>6} {'R dup':>6} {'P non':>6} {'R non':>6} {'macroF1':>8}")
        for name, (seconds, s) in rows_out.items():
            _print_row(name, len(ids) / seconds, s)
        results["thresholds"][str(threshold)] = {
            name: {"seconds": round(seconds, 1), "docs_per_s": round(len(ids) / seconds),
                   **{k: round(v, 4) for k, v in s.items()}} for name, (seconds, s) in rows_out.items()
        }
    print(json.dumps(results))


def scale(args) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    parquet = workdir / f"short_{args.docs}.parquet"
    if not parquet.exists():
        start = time.perf_counter()
        writer = None
        per_part = 100_000
        for part in range(0, args.docs, per_part):
            corpus = make_corpus(min(per_part, args.docs - part), seed=args.seed + part, short=True)
            table = pa.table({"id": [f"p{part // per_part:03d}-{i}" for i in corpus.ids], "text": corpus.texts})
            writer = writer or pq.ParquetWriter(str(parquet), table.schema)
            writer.write_table(table, row_group_size=50_000)
        writer.close()
        print(f"wrote {args.docs:,} short documents in {time.perf_counter() - start:.0f}s")
    monitor = TreeSampler(os.getpid(), interval=0.2)
    monitor.start()
    spark = _spark(2)
    from etl.stages.base import StageContext
    from etl.stages.minhash_dedup import MinHashDedup, MinHashDedupParams

    start = time.perf_counter()
    docs = spark.read.parquet(str(parquet))
    ctx = StageContext(spark, str(workdir / "scale"), str(workdir / "scale" / "_state"), "scale")
    result = MinHashDedup(MinHashDedupParams(threshold=args.threshold, verify=args.verify)).run(docs, ctx)
    result.docs.where("reason IS NOT NULL").write.mode("overwrite").parquet(str(workdir / "scale" / "removed"))
    result.tables["clusters"].write.mode("overwrite").parquet(str(workdir / "scale" / "clusters"))
    seconds = time.perf_counter() - start
    metrics = result.metrics(result.docs)
    monitor.stopped = True
    monitor.join()
    removed = spark.read.parquet(str(workdir / "scale" / "removed")).count()
    print(json.dumps({
        "docs": args.docs, "seconds": round(seconds, 1), "docs_per_s": round(args.docs / seconds),
        "removed": removed, "metrics": metrics,
        "peak_rss_gib": {kind: round(value / 2**30, 2) for kind, value in monitor.peak.items()},
        "driver_memory": os.environ.get("KILN_DRIVER_MEMORY", "4g"),
    }))


_DATATROVE_WHOLE = r"""
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig

src, work, bands, rows, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])


def main():
    config = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows, seed=1, hash_config=HashConfig(precision=64))
    common = dict(workers=2, logging_dir=f"{work}/logs", skip_completed=False)
    LocalPipelineExecutor(pipeline=[JsonlReader(src, id_key="id"), MinhashDedupSignature(output_folder=f"{work}/sigs", config=config)],
                          tasks=tasks, **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config)],
                          tasks=bands, **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove",
                                                        config=config, save_cluster_id=True)],
                          tasks=1, workers=1, logging_dir=f"{work}/logs", skip_completed=False).run()
    LocalPipelineExecutor(pipeline=[JsonlReader(src, id_key="id"),
                                    MinhashDedupFilter(input_folder=f"{work}/remove", load_cluster_ids=True,
                                                       exclusion_writer=JsonlWriter(f"{work}/removed")),
                                    JsonlWriter(f"{work}/kept")],
                          tasks=tasks, **common).run()


if __name__ == "__main__":
    main()
"""


def whole(args) -> None:
    """Both whole commands from the shell, start-up included, in turns."""
    import shutil

    import yaml

    from bench.etl_vs_datatrove import DATATROVE_EXTRAS, ensure_datatrove

    ensure_datatrove()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    jsonl_dir = workdir / "jsonl"
    jsonl_dir.mkdir(parents=True)
    corpus = make_corpus(args.docs, args.seed, paragraphs_per_doc=(6, 16))  # web-length documents
    ids, texts = corpus.ids, corpus.texts
    files = 8
    for f in range(files):
        with open(jsonl_dir / f"part{f}.jsonl", "w") as handle:
            for i in range(f, len(ids), files):
                handle.write(json.dumps({"id": ids[i], "text": texts[i]}) + "\n")
    print(f"corpus: {len(ids):,} documents in {files} JSONL files, {sum(len(t) for t in texts) / len(texts):,.0f} "
          f"characters on average", flush=True)
    truth = ground_truth(texts, args.threshold)

    from etl.stages.minhash_dedup import MinHashDedupParams

    bands, rows = MinHashDedupParams(threshold=args.threshold).band_rows()
    configs = {}
    for verify in ("exact", "estimated"):  # the default, and the cheaper verification
        configs[verify] = workdir / f"minhash_only_{verify}.yaml"
        configs[verify].write_text(yaml.safe_dump({
            "output": str(workdir / f"kiln-{verify}"),
            "inputs": [{"path": str(jsonl_dir / "*.jsonl"), "id_field": "id", "source": "web"}],
            "stages": [{"name": "minhash_dedup", "params": {"threshold": args.threshold, "verify": verify}}]}))
    script = workdir / "datatrove_minhash.py"
    script.write_text(_DATATROVE_WHOLE)
    import xxhash  # tokenizers and orjson (for JsonlReader) come from the extras folder

    datatrove_env = {**os.environ, "PYTHONPATH": f"{DATATROVE_EXTRAS}{os.pathsep}{_lend(workdir / 'extra', xxhash)}"}
    kiln_env = {k: v for k, v in os.environ.items() if k != "KILN_SPARK_MASTER"}
    commands = {
        **{f"kiln-{verify}": ([sys.executable, "-m", "etl", "run", str(config)], kiln_env, ROOT)
           for verify, config in configs.items()},
        "datatrove": ([str(DATATROVE_PYTHON), str(script), str(jsonl_dir), str(workdir / "datatrove"), str(bands),
                       str(rows), str(files)], datatrove_env, workdir),
    }
    seconds = {name: [] for name in commands}
    for round_ in range(args.rounds):
        for name, (command, env, cwd) in commands.items():
            shutil.rmtree(workdir / name, ignore_errors=True)
            start = time.perf_counter()
            done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
            seconds[name].append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{(done.stdout + done.stderr)[-4000:]}")
            print(f"round {round_ + 1}: {name} {seconds[name][-1]:.1f} s", flush=True)
    # Scores of the last round's outputs.
    spark = _spark(2)
    scores = {}
    for verify in configs:
        clusters = spark.read.format("delta").load(str(workdir / f"kiln-{verify}" / "minhash_dedup" / "clusters"))
        # Kiln's ids carry their source ("web/d0000001"); the truth's are the file's own.
        cluster_of = {i.split("/", 1)[1]: c for i, c in clusters.select("id", "cluster_id").collect()}
        scores[f"kiln-{verify}"] = core_scores(truth, [cluster_of.get(i, i) for i in ids])
    cluster_of = _datatrove_clusters(jsonl_dir, workdir / "datatrove" / "remove")
    scores["datatrove"] = core_scores(truth, [cluster_of.get(i, i) for i in ids])
    best = {name: min(values) for name, values in seconds.items()}
    print(f"\nwhole command, {len(ids):,} documents, threshold {args.threshold} ({bands}x{rows}), best of {args.rounds}:")
    for name in commands:
        each = ", ".join(f"{d / k:.2f}x" for k, d in zip(seconds[name], seconds["datatrove"]))
        print(f"  {name:<20} {best[name]:6.1f} s  {len(ids) / best[name]:5,.0f} docs/s  F1 {scores[name]['macro_f1']:.3f}  "
              f"vs datatrove {best['datatrove'] / best[name]:.2f}x (each round: {each})")
    print(json.dumps({"docs": len(ids), "seconds": {k: [round(v, 1) for v in vs] for k, vs in seconds.items()},
                      "f1": {k: round(v["macro_f1"], 4) for k, v in scores.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--docs", type=int, default=20_000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.7])
    q.add_argument("--workdir", default="/tmp/minhash_bench")
    q.set_defaults(func=quality)
    s = sub.add_parser("scale")
    s.add_argument("--docs", type=int, default=1_000_000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threshold", type=float, default=0.8)
    s.add_argument("--verify", default="exact")
    s.add_argument("--workdir", default="/tmp/minhash_scale")
    s.set_defaults(func=scale)
    w = sub.add_parser("whole")
    w.add_argument("--docs", type=int, default=10_000)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--threshold", type=float, default=0.8)
    w.add_argument("--rounds", type=int, default=2)
    w.add_argument("--workdir", default="/tmp/minhash_whole")
    w.set_defaults(func=whole)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
