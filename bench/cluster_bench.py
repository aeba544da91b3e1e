"""Kiln's ETL on a Spark standalone cluster (2 workers x 1 core) against local[2], on the same files.

    .venv/bin/python bench/cluster_bench.py [--docs 100000] [--work /tmp/kiln-bench-cluster]

Input: the 100k-record fixture (`etl.devtools.fixtures.make_fixture`) through fix_encoding, quality,
exact_dedup and minhash_dedup, no report. The same config runs three times, each a spark-submit of
jobs/run_pipeline.py with the same settings (8 shuffle partitions, 2 GB per core), one after another:

  local      --master local[2]; Kiln from the source tree (the editable install): one JVM, the
             driver's own Python workers.
  local+zip  --master local[2]; Kiln only from dist/kiln-0.1.0.zip through --py-files, run by a Python
             that has the dependencies but not Kiln (as a cluster's executors): what shipping the wheel costs.
  cluster    --master spark://127.0.0.1:PORT, a master and two workers of one core each
             (etl/devtools/spark_cluster.py), each executor its own JVM with its own Python workers,
             Kiln from the zip: what running as separate processes costs (executor start, shuffle
             through the block manager, task serialization to another JVM).

Before anything is printed, every Delta table of the three runs is checked to hold the same rows.
Prints each run's wall time (spark-submit start to exit, JVM and executors included), each stage's
seconds (from the run's own progress lines) and the ratios to `local`.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etl.devtools.same_results import table_rows  # noqa: E402
from etl.devtools.spark_cluster import StandaloneCluster, python_without_kiln, submit_env  # noqa: E402
from etl.spark import DELTA_PACKAGE  # noqa: E402

STAGES = ("fix_encoding", "quality", "exact_dedup", "minhash_dedup")
SETTINGS = ["--conf", "spark.sql.shuffle.partitions=8", "--conf", "spark.databricks.delta.snapshotPartitions=2",
            "--conf", "spark.sql.sources.parallelPartitionDiscovery.parallelism=8", "--driver-memory", "4g",
            "--conf", "spark.executor.memory=2g", "--conf", "spark.ui.showConsoleProgress=false"]


def write_config(work: Path, name: str, input_dir: Path, source: str, max_doc_bytes: int) -> Path:
    config = {"output": str(work / "runs" / name / "out"), "report": False, "max_doc_bytes": max_doc_bytes,
              "inputs": [{"path": str(input_dir / "*"), "source": source, "id_field": "id"}],
              "stages": [{"name": stage} for stage in STAGES]}
    path = work / "runs" / name / "pipeline.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config))
    return path


def submit(name: str, master: str, config: Path, python: Path, py_files: Path | None) -> tuple[float, dict[str, float]]:
    """Runs the job; its wall seconds and each stage's seconds."""
    command = ["spark-submit", "--master", master, "--packages", DELTA_PACKAGE, *SETTINGS]
    if py_files:
        command += ["--py-files", str(py_files)]
    command += [str(ROOT / "jobs" / "run_pipeline.py"), "--config", str(config)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=config.parent, env=submit_env(python), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    stages = {m[1]: float(m[2]) for m in re.finditer(r"^\[\s*(\w+)\].*\(([\d.]+)s\)", done.stdout, re.M)}
    print(f"  {name}: {wall:.1f} s; load average {os.getloadavg()[0]:.1f}", flush=True)
    return wall, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--work", default="/tmp/kiln-bench-cluster")
    args = parser.parse_args()

    from etl.devtools.fixtures import make_fixture

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    truth = make_fixture(args.docs, 1, str(work / "input"))
    subprocess.run(["make", "wheel", f"PY={sys.executable}"], cwd=ROOT, check=True, capture_output=True)
    zip_file = work / "kiln-0.1.0.zip"
    shutil.copy2(ROOT / "dist" / "kiln-0.1.0.zip", zip_file)
    bare_python = python_without_kiln(work / "python")
    print(f"{truth.n_records:,} records in {len(truth.files)} JSONL files; stages {', '.join(STAGES)}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)

    runs = {}
    for name in ("local", "local+zip"):
        config = write_config(work, name, work / "input", truth.source, truth.max_doc_bytes)
        python = Path(sys.executable) if name == "local" else bare_python
        runs[name] = submit(name, "local[2]", config, python, zip_file if name == "local+zip" else None)
    cluster = StandaloneCluster(work / "cluster", workers=2, cores=1, memory="2g",
                                env={**os.environ, "PYSPARK_PYTHON": str(bare_python)})
    cluster.start()
    try:
        config = write_config(work, "cluster", work / "input", truth.source, truth.max_doc_bytes)
        runs["cluster"] = submit("cluster", cluster.url, config, bare_python, zip_file)
    finally:
        cluster.stop()

    reference = table_rows(work / "runs" / "local" / "out", work / "runs" / "local")
    for name in ("local+zip", "cluster"):
        mine = table_rows(work / "runs" / name / "out", work / "runs" / name)
        differ = sorted(t for t in set(mine) | set(reference) if mine.get(t) != reference.get(t))
        if differ:
            sys.exit(f"{name} and local disagree on the rows of {differ}")
    print(f"same rows in all {len(reference)} Delta tables of the three runs", flush=True)

    base_wall, base_stages = runs["local"]
    print("\n| run | wall s | " + " | ".join(f"{s} s" for s in ("ingest", *STAGES)) + " | stages s | wall vs local | stages vs local |")
    print("|---|" + "---|" * (len(STAGES) + 5))
    for name, (wall, stages) in runs.items():
        total, base_total = sum(stages.values()), sum(base_stages.values())
        cells = " | ".join(f"{stages.get(s, float('nan')):.1f}" for s in ("ingest", *STAGES))
        print(f"| {name} | {wall:.1f} | {cells} | {total:.1f} | {wall / base_wall:.2f}x | {total / base_total:.2f}x |")


if __name__ == "__main__":
    main()
