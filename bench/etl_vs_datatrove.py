"""Kiln's fix_encoding + quality + exact_dedup (Spark local[2]) against datatrove 0.10.1, on the same 2 cores.

    .venv/bin/python bench/etl_vs_datatrove.py [--docs 100000] [--seed 1] [--work /tmp/kiln-bench-etl]

Both sides read the same fixture (`etl.devtools.fixtures.make_fixture`: realistic prose with planted mojibake,
duplicates, junk and bad lines; without invalid-UTF-8 lines, because datatrove's JsonlReader gives up
on the rest of a file at the first one) and do the same work, reading JSONL and writing every result:

  Kiln       ingest -> fix_encoding -> quality -> exact_dedup (the `etl` pipeline, each step a Delta
             table plus the rejected rows; HTML report off), Spark local[2].
  datatrove  JsonlReader -> FTFYFormatter -> GopherRepetitionFilter -> GopherQualityFilter
             -> C4QualityFilter -> JsonlWriter -> ExactDedupSignature; ExactFindDedups;
             JsonlReader -> ExactDedupFilter -> JsonlWriter, LocalPipelineExecutor(tasks=2, workers=2).
             Exact dedup hashes the same normalisation as ours (lowercase, whitespace collapsed, SHA-1).

Start-up (the Spark session; datatrove's imports) is outside the timing on both sides. Prints
documents/s for each and their ratio, the time of each step on both sides, and (single core, CPU
time) how many documents/s fix_encoding's text repair handles against ftfy called the way
datatrove's FTFYFormatter calls it. datatrove runs in `.cache/venv-datatrove`
(scripts/side_install_datatrove.sh); its JSONL reader needs orjson, FTFYFormatter ftfy, and
`datatrove.pipeline.dedup` imports tokenizers: this script installs them once into
`.cache/side/datatrove-bench` (orjson 3.11.7, ftfy 6.3.1, wcwidth 0.9.4, tokenizers 0.22.1),
leaving that venv untouched.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATATROVE_PYTHON = ROOT / ".cache" / "venv-datatrove" / "bin" / "python"
DATATROVE_EXTRAS = ROOT / ".cache" / "side" / "datatrove-bench"
DATATROVE_EXTRA_PINS = ["orjson==3.11.7", "ftfy==6.3.1", "wcwidth==0.9.4", "tokenizers==0.22.1"]


def dedup_key(doc) -> str:
    """datatrove's exact-dedup content: the text lowercased with whitespace collapsed, as Kiln's default."""
    return " ".join(doc.text.lower().split())


def run_datatrove(input_dir: str, work: str) -> dict:
    """Runs inside datatrove's venv; returns seconds and counts."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import FTFYFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    config = ExactDedupConfig(content_getter=dedup_key, hash_config=HashConfig(hash_fc="sha1", precision=64))
    filtered, signatures, duplicates, output = (f"{work}/{name}" for name in ("filtered", "sigs", "dups", "output"))
    steps = [
        LocalPipelineExecutor(
            pipeline=[
                JsonlReader(input_dir, glob_pattern="*.jsonl*", id_key="id"),
                FTFYFormatter(),
                GopherRepetitionFilter(),
                GopherQualityFilter(),
                C4QualityFilter(),
                JsonlWriter(filtered),
                ExactDedupSignature(signatures, config=config, finder_workers=1),
            ],
            tasks=2, workers=2, logging_dir=f"{work}/logs/filter",
        ),
        LocalPipelineExecutor(
            pipeline=[ExactFindDedups(signatures, duplicates, config=config)],
            tasks=1, workers=1, logging_dir=f"{work}/logs/find",
        ),
        LocalPipelineExecutor(
            pipeline=[JsonlReader(filtered, id_key="id"), ExactDedupFilter(duplicates, config=config), JsonlWriter(output)],
            tasks=2, workers=2, logging_dir=f"{work}/logs/dedup",
        ),
    ]
    start = time.perf_counter()
    for step in steps:
        step.run()
    seconds = time.perf_counter() - start
    import gzip

    def count(folder):
        return sum(sum(1 for _ in gzip.open(os.path.join(folder, f))) for f in os.listdir(folder) if f.endswith(".gz"))

    # Per block: seconds summed over the tasks (two tasks share two cores, so about twice its wall time).
    block_seconds = {}
    for step in ("filter", "find", "dedup"):
        with open(f"{work}/logs/{step}/stats.json") as handle:
            for block in json.load(handle):
                block_seconds[f"{step}: {block['name']}"] = round(block["time_stats"]["total"], 1)
    return {"seconds": seconds, "after_quality": count(filtered), "kept": count(output), "block_seconds": block_seconds}


def text_repair_rates(texts: list[str]) -> dict:
    """Single-thread CPU docs/s of fix_encoding's Python work and of ftfy as datatrove's FTFYFormatter calls it."""
    import ftfy

    from etl.stages.fix_encoding import TextRepair, undecodable_detail

    repair = TextRepair()
    # FTFYFormatter's defaults in datatrove 0.10.1.
    datatrove_config = ftfy.TextFixerConfig(
        fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
        normalization=None, explain=False,
    )
    candidates = {
        "kiln fix_encoding (repair + undecodable check)": lambda t: undecodable_detail(repair.fix(t), 0.01, 0.01),
        "ftfy.fix_text, FTFYFormatter's options": lambda t: ftfy.fix_text(t, datatrove_config),
    }
    rates = {}
    for name, function in candidates.items():
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for text in texts:
                function(text)
            best = min(best, time.process_time() - start)
        rates[name] = len(texts) / best
    return rates


def run_kiln(input_config: dict, max_doc_bytes: int, work: str) -> dict:
    os.environ.setdefault("KILN_SPARK_MASTER", "local[2]")
    sys.path.insert(0, str(ROOT))
    from etl.load_config import validate_pipeline_config
    from etl.pipeline import run_pipeline
    from etl.spark import get_spark

    spark = get_spark("bench-etl-vs-datatrove")
    config, stages = validate_pipeline_config({
        "output": f"{work}/out", "inputs": [input_config], "max_doc_bytes": max_doc_bytes,
        "stages": [{"name": "fix_encoding"}, {"name": "quality"}, {"name": "exact_dedup"}], "report": False,
    })
    start = time.perf_counter()
    run = run_pipeline(config, stages, spark, progress=print)
    seconds = time.perf_counter() - start
    by_stage = {s.stage: s for s in run.steps}
    return {
        "seconds": seconds,
        "stage_seconds": {s.stage: s.seconds for s in run.steps},
        "after_quality": by_stage["quality"].docs_out,
        "kept": run.steps[-1].docs_out,
    }


def ensure_datatrove() -> None:
    if not DATATROVE_PYTHON.exists():
        sys.exit(f"datatrove's venv is missing: run scripts/side_install_datatrove.sh first ({DATATROVE_PYTHON})")
    if not all((DATATROVE_EXTRAS / name).is_dir() for name in ("orjson", "ftfy", "wcwidth", "tokenizers")):
        print(f"installing {' '.join(DATATROVE_EXTRA_PINS)} into {DATATROVE_EXTRAS}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(DATATROVE_EXTRAS), *DATATROVE_EXTRA_PINS], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", default="/tmp/kiln-bench-etl")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from etl.devtools.fixtures import BAD_INPUT_KINDS, make_fixture

    ensure_datatrove()
    shutil.rmtree(args.work, ignore_errors=True)
    start = time.perf_counter()
    bad_kinds = tuple(k for k in BAD_INPUT_KINDS if k != "invalid_utf8")
    truth = make_fixture(args.docs, args.seed, f"{args.work}/input", bad_input_kinds=bad_kinds)
    size = sum(os.path.getsize(f) for f in truth.files)
    print(f"fixture: {truth.n_records:,} records in {len(truth.files)} files, {size / 1e6:.0f} MB compressed/plain mix, "
          f"made in {time.perf_counter() - start:.0f}s")

    from etl.devtools.fixtures import read_fixture_texts

    sample = [text for _, text in read_fixture_texts(truth)][:5000]
    for name, rate in text_repair_rates(sample).items():
        print(f"{name}: {rate:,.0f} docs/s (one core, CPU time, {len(sample):,} fixture documents)")

    kiln = run_kiln(truth.input_config(), truth.max_doc_bytes, f"{args.work}/kiln")
    print(f"kiln: {json.dumps(kiln)}")
    done = subprocess.run(
        [str(DATATROVE_PYTHON), __file__, "--datatrove-side", truth.out_dir, f"{args.work}/datatrove"],
        env={**os.environ, "PYTHONPATH": str(DATATROVE_EXTRAS)}, capture_output=True, text=True,
    )
    if done.returncode != 0:
        sys.exit(f"datatrove failed:\n{done.stderr[-4000:]}")
    datatrove = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"datatrove: {json.dumps(datatrove)}")

    kiln_rate, datatrove_rate = truth.n_records / kiln["seconds"], truth.n_records / datatrove["seconds"]
    print(f"\n| | seconds | documents/s | after quality | kept |\n|---|---|---|---|---|")
    for name, result, rate in (("Kiln (Spark local[2])", kiln, kiln_rate), ("datatrove (2 tasks, 2 workers)", datatrove, datatrove_rate)):
        print(f"| {name} | {result['seconds']:.1f} | {rate:,.0f} | {result['after_quality']:,} | {result['kept']:,} |")
    print(f"\nKiln / datatrove throughput: {kiln_rate / datatrove_rate:.2f}x  ({truth.n_records:,} records)")
    print("\nKiln step wall seconds (incl. writing Delta):", kiln["stage_seconds"])
    print("datatrove block seconds (summed over its 2 tasks):", datatrove["block_seconds"])


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--datatrove-side":
        print(json.dumps(run_datatrove(sys.argv[2], sys.argv[3])))
    else:
        main()
