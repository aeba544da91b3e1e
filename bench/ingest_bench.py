"""Kiln's ingest (Spark local[2]) against a plain single-process Python loop, on the same gzipped JSONL files.

    .venv/bin/python bench/ingest_bench.py [--docs 100000] [--fixed-docs 1000] [--repeat 2] [--copies 0] [--work /tmp/kiln-bench-ingest]

Input: the 100k-record fixture (`etl.devtools.fixtures.make_fixture`: prose of realistic length with
planted bad lines: invalid UTF-8, malformed JSON, missing and empty text, oversized records; no id
repeats, so the duplicate-id rule runs on both sides but rejects nothing), every file gzipped (50
files; a gzip file is one task), all with one modification time. `--copies K` adds K of those files again
under names that sort last, so that every id in them repeats and the later copy wins on both sides (2,000
records a file: about K x 1,960 `duplicate_id` rejections). Both sides write the same rows:

  Kiln  the `etl` pipeline with no stage after ingest and no report: documents to the `ingest` Delta
        table, every rejected line with its reason to `rejected`, the funnel counted and checked (on
        local[2], ingest's direct path: etl/ingest_direct.py).
  loop  one Python process: gzip.open, json.loads, the same checks and id rule, the newest copy of an
        id kept (the later file, then the later line), SHA-1 of each text; documents and rejected
        rows written to two Parquet files with pyarrow.

The kept ids of both sides are checked equal before anything is printed. The Spark session's start
(JVM, Delta's jars) is timed apart: it is a fixed cost per job, not per document. So is, in a second
ratio, what a run costs whatever its size (planning, Delta's log and commits, the funnel's checks):
each side's time on a fixture of `--fixed-docs` records (one file) stands for it. Prints each side's
best of `--repeat` turns, in turns, for both fixtures, and the ratios. Kiln writes to a new output
each turn, as the loop writes new files.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def gzipped_fixture(docs: int, work: Path, copies: int = 0):
    """The fixture with every file gzipped, the first `copies` files twice, and one modification time; its truth."""
    from etl.devtools.fixtures import make_fixture

    truth = make_fixture(docs, 1, str(work / "input"))
    for path in sorted((work / "input").iterdir()):
        if not path.name.endswith(".gz"):
            with open(path, "rb") as plain, gzip.open(f"{path}.gz", "wb", compresslevel=1) as packed:
                shutil.copyfileobj(plain, packed)
            path.unlink()
    for path in sorted((work / "input").iterdir())[:copies]:
        shutil.copyfile(path, work / "input" / f"zz-again-{path.name}")
        with gzip.open(path, "rb") as handle:
            truth.n_records += sum(1 for _ in handle)
    for path in (work / "input").iterdir():
        os.utime(path, (1_700_000_000, 1_700_000_000))
    return truth


def loop_ingest(input_dir: Path, out: Path, source: str, max_bytes: int) -> tuple[float, set[str], int]:
    """The plain loop; returns (seconds, kept ids, rejected rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    kept: dict[str, tuple[str, str, dict]] = {}
    rejected: list[tuple[str, str]] = []
    for path in sorted(input_dir.iterdir()):
        rel = path.name
        with gzip.open(path, "rb") as handle:
            for line_no, raw in enumerate(handle):
                derived = f"{source}/{rel}:{line_no}"
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    rejected.append((derived, "invalid_utf8"))
                    continue
                except ValueError:
                    rejected.append((derived, "malformed_json"))
                    continue
                if not isinstance(record, dict):
                    rejected.append((derived, "not_an_object"))
                    continue
                if record.get("id") in (None, ""):
                    rejected.append((derived, "missing_id"))
                    continue
                doc_id, text = f"{source}/{record['id']}", record.get("text")
                if text is None or not isinstance(text, str) or not text.strip():
                    rejected.append((doc_id, "missing_text" if text is None else "empty_text"))
                    continue
                try:
                    size = len(text.encode("utf-8"))
                except UnicodeEncodeError:
                    rejected.append((derived, "invalid_unicode"))
                    continue
                if size > max_bytes:
                    rejected.append((doc_id, "too_large"))
                    continue
                if doc_id in kept:  # the later copy is the newer one: same file time, later path or line
                    rejected.append((doc_id, "duplicate_id"))
                kept[doc_id] = (text, hashlib.sha1(text.encode("utf-8")).hexdigest(), {})
    ids = list(kept)
    pq.write_table(pa.table({
        "id": ids, "source": [source] * len(ids), "text": [kept[i][0] for i in ids],
        "meta": pa.array([[] for _ in ids], pa.map_(pa.string(), pa.string())),
        "content_hash": [kept[i][1] for i in ids],
    }), out / "documents.parquet")
    pq.write_table(pa.table({"id": [r[0] for r in rejected], "reason": [r[1] for r in rejected]}),
                   out / "rejected.parquet")
    return time.perf_counter() - start, set(ids), len(rejected)


def kiln_ingest(spark, input_dir: Path, out: Path, source: str, max_bytes: int) -> tuple[float, dict]:
    """The pipeline with ingest alone; returns (seconds, the ingest step's counts)."""
    from etl.load_config import validate_pipeline_config
    from etl.pipeline import run_pipeline

    config, stages = validate_pipeline_config({
        "output": str(out), "max_doc_bytes": max_bytes, "report": False,
        "inputs": [{"path": f"{input_dir}/*", "source": source, "id_field": "id"}], "stages": [],
    })
    start = time.perf_counter()
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    seconds = time.perf_counter() - start
    step = run.steps[0]
    return seconds, {"in": step.docs_in, "kept": step.docs_out, "rejected": sum(step.rejected.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--fixed-docs", type=int, default=1000, help="records of the run whose time stands for a run's fixed cost")
    parser.add_argument("--copies", type=int, default=0, help="files of the fixture given twice, so that their ids repeat")
    parser.add_argument("--work", default="/tmp/kiln-bench-ingest")
    args = parser.parse_args()
    if args.fixed_docs >= args.docs:
        parser.error(f"--fixed-docs ({args.fixed_docs}) must be fewer than --docs ({args.docs}): its run's time is taken from theirs")
    os.environ.setdefault("KILN_SPARK_MASTER", "local[2]")

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    truth = gzipped_fixture(args.docs, work / "full", args.copies)
    small = gzipped_fixture(args.fixed_docs, work / "small")
    files = sorted((work / "full" / "input").iterdir())
    size = sum(p.stat().st_size for p in files)
    print(f"{truth.n_records:,} records in {len(files)} gzipped JSONL files, {size / 1e6:.0f} MB; "
          f"{os.cpu_count()} CPUs, Spark local[2]; load average {os.getloadavg()[0]:.1f}", flush=True)

    start = time.perf_counter()
    from etl.spark import get_spark

    spark = get_spark("kiln-bench-ingest")
    startup = time.perf_counter() - start
    spark.range(1).collect()  # the first job's own start-up, outside both sides

    kiln_best, loop_best = best_turns(spark, work / "full", truth, args.repeat)
    print(f"the fixed cost of a run: {small.n_records:,} records, the same turns", flush=True)
    kiln_fixed, loop_fixed = best_turns(spark, work / "small", small, args.repeat)

    n = truth.n_records
    print(f"\n| side | seconds | records/s | a run of {small.n_records:,} records (s) | records/s, that apart |\n|---|---|---|---|---|")
    print(f"| Kiln ingest, Spark local[2] (Delta tables, funnel checked) | {kiln_best:.1f} | {n / kiln_best:,.0f} | "
          f"{kiln_fixed:.1f} | {n / (kiln_best - kiln_fixed):,.0f} |")
    print(f"| plain Python loop, 1 process (pyarrow Parquet) | {loop_best:.1f} | {n / loop_best:,.0f} | "
          f"{loop_fixed:.2f} | {n / (loop_best - loop_fixed):,.0f} |")
    print(f"\nKiln / loop throughput: {loop_best / kiln_best:.2f}x; with each side's {small.n_records:,}-record run "
          f"apart: {(loop_best - loop_fixed) / (kiln_best - kiln_fixed):.2f}x; Spark session start (once per job, "
          f"apart): {startup:.1f} s")


def best_turns(spark, work: Path, truth, repeat: int) -> tuple[float, float]:
    """Each side's best of `repeat` turns on ``work``'s input, Kiln's output new each turn as the loop's
    files are; the kept ids and rejected counts checked equal in the first."""
    kiln_best = loop_best = float("inf")
    for turn in range(repeat):
        (work / "loop").mkdir(exist_ok=True)
        loop_s, loop_ids, loop_rejected = loop_ingest(work / "input", work / "loop", truth.source, truth.max_doc_bytes)
        shutil.rmtree(work / "kiln", ignore_errors=True)
        kiln_s, counts = kiln_ingest(spark, work / "input", work / "kiln", truth.source, truth.max_doc_bytes)
        if turn == 0:
            from deltalake import DeltaTable

            kiln_ids = set(DeltaTable(str(work / "kiln" / "ingest")).to_pyarrow_table(columns=["id"])["id"].to_pylist())
            if kiln_ids != loop_ids or counts["rejected"] != loop_rejected:
                sys.exit(f"the sides disagree: kept {len(kiln_ids):,} vs {len(loop_ids):,} ids "
                         f"({len(kiln_ids ^ loop_ids)} differ), rejected {counts['rejected']:,} vs {loop_rejected:,}")
            print(f"same rows: {len(kiln_ids):,} documents kept, {loop_rejected:,} rejected on both sides", flush=True)
        print(f"  turn {turn + 1}: Kiln {kiln_s:.2f} s, loop {loop_s:.2f} s; load average {os.getloadavg()[0]:.1f}",
              flush=True)
        loop_best, kiln_best = min(loop_best, loop_s), min(kiln_best, kiln_s)
    return kiln_best, loop_best


if __name__ == "__main__":
    main()
