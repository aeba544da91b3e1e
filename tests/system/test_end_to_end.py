"""The whole system through the object store, as a cluster would run it.

The ETL reads local JSONL, writes every Delta table to s3a:// and the MDS dataset to s3://; then
`python -m training.launch` starts two ranks that stream those shards from s3:// and checkpoint to
s3://. The loss must fall on the data the ETL produced, and a relaunch must resume from the object
store.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from etl.delta import read_table
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from shards import read_manifest
from tests.etl.corpus import fixture_docs, write_fixture_tokenizer
from training.run.checkpoint import latest_complete

ROOT = Path(__file__).resolve().parents[2]
SEQ_LEN = 32
STEPS = 40


@pytest.fixture(scope="module")
def etl_run(spark, s3_bucket, tmp_path_factory):
    """A pipeline run from local files into the S3 server; returns the paths involved."""
    work = tmp_path_factory.mktemp("e2e")
    bucket = f"{s3_bucket}/e2e-{uuid.uuid4().hex[:8]}"
    docs = fixture_docs(60)
    (work / "in").mkdir()
    with open(work / "in" / "docs.jsonl", "w") as handle:
        for doc in docs:
            handle.write(json.dumps({"doc_id": doc["id"], "text": doc["text"]}) + "\n")
        for doc in docs[:10]:  # ten exact copies under other ids, for exact_dedup to find
            handle.write(json.dumps({"doc_id": doc["id"] + "-copy", "text": doc["text"]}) + "\n")
    tokenizer = write_fixture_tokenizer(work / "tok")
    config, stages = validate_pipeline_config({
        "output": f"s3a://{bucket}/etl", "report": False,
        "inputs": [{"path": str(work / "in" / "docs.jsonl"), "source": "fixture", "id_field": "doc_id"}],
        "stages": [
            {"name": "fix_encoding"},
            {"name": "exact_dedup"},
            {"name": "tokenize", "params": {"tokenizer": tokenizer, "seq_len": SEQ_LEN, "num_buckets": 4,
                                            "val_fraction": 0.1, "seed": 1}},
            {"name": "shuffle_and_write", "params": {"dataset_root": f"s3://{bucket}/dataset",
                                                     "size_limit": 4_000, "compression": "zstd", "seed": 2}},
        ],
    })
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    return {"work": work, "bucket": bucket, "run": run, "spark": spark, "docs": len(docs)}


def test_etl_writes_delta_and_shards_to_the_object_store(etl_run):
    run, bucket = etl_run["run"], etl_run["bucket"]
    assert run.steps[0].docs_in == etl_run["docs"] + 10
    funnel = {step.stage: step.rejected for step in run.steps}
    assert funnel["ingest"] == {} and funnel["exact_dedup"] == {"exact_duplicate": 10}, funnel
    kept = read_table(etl_run["spark"], f"s3a://{bucket}/etl/tokenize").count()
    assert kept == etl_run["docs"]
    manifest = read_manifest(f"s3://{bucket}/dataset")
    assert manifest.version == 1 and manifest.seq_len == SEQ_LEN
    assert manifest.num_samples["train"] >= 16 * STEPS // 4  # a few passes at most over the data


def launch(config: Path, cwd: Path, log: Path, *args: str) -> None:
    """Two ranks; the child inherits the S3 server's endpoint and credentials from this process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-m", "training.launch", str(config), "--nproc-per-node", "2", *args]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log.read_text()[-6000:]}"


def test_training_streams_the_etl_shards_from_s3_and_learns(etl_run):
    work, bucket = etl_run["work"], etl_run["bucket"]
    checkpoints = f"s3://{bucket}/checkpoints"
    config = work / "train.yaml"
    config.write_text(textwrap.dedent(f"""\
        name: e2e
        output_dir: {work / 'runs'}
        model: {{preset: tiny, overrides: {{d_model: 64, n_heads: 2, n_layers: 2, max_seq_len: {SEQ_LEN},
                                            vocab_size: 320}}}}
        data: {{datasets: [{{path: s3://{bucket}/dataset}}], num_workers: 1, cache_dir: {work / 'cache'}}}
        train: {{max_steps: {STEPS}, global_batch_size: 16, micro_batch_size: 4}}
        optimizer: {{lr: 1.0e-2}}
        schedule: {{warmup_steps: 4, decay: cosine}}
        eval: {{every_steps: {STEPS // 2}, batches: 1, global_batch_size: 8}}
        checkpoint: {{dir: {checkpoints}, every_steps: {STEPS // 2}}}
        logging: {{every_steps: 1, progress_bar: false, mlflow: false, plot: false}}
        """))
    launch(config, work, work / "first.log", f"train.max_steps={STEPS // 2}")
    assert latest_complete(checkpoints)[0].endswith(f"step-{STEPS // 2:08d}")
    launch(config, work, work / "second.log")  # a relaunch of the same run resumes from S3
    assert latest_complete(checkpoints)[0].endswith(f"step-{STEPS:08d}")

    run_dir = work / "runs" / "e2e"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(losses) == STEPS, "the resumed run logs steps 21..40 after the first run's 1..20"
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, losses
    assert len(evals) == 2 and evals[1] < evals[0], evals
    info = json.loads((run_dir / "run_info.json").read_text())
    source = info["data"]["train"][0]
    assert source["version"] == 1 and source["path"].startswith(f"s3://{bucket}/dataset")
