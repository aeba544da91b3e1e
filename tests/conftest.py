"""Shared fixtures: one real local S3-compatible server and one real local Spark session with
Delta for each pytest worker (`make test` runs two, each taking whole groups of files: see
pytest_collection_modifyitems). The S3 server starts first so Spark is configured for s3a://."""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ivy's jar cache lives in the repo's .cache whatever directory pytest runs from.
os.environ.setdefault("KILN_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("KILN_SHUFFLE_PARTITIONS", "4")
TEST_BUCKET = "kiln-test"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Groups for `make test`'s two workers (pytest-xdist, --dist loadgroup), each run whole on one:
    a file, so that its module fixtures (a test cluster) start once; and every file that reads a shared
    run (demo_etl, refresh_nights), so that one worker runs each, once."""
    shared_files = {item.path for item in items if {"demo_etl", "refresh_nights"} & set(item.fixturenames)}
    for item in items:
        group = "shared_runs" if item.path in shared_files else item.path.relative_to(ROOT).as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1; AWS_ENDPOINT_URL and test credentials are set while it runs."""
    from shards.local_s3 import LocalS3

    with LocalS3() as server:
        server.create_bucket(TEST_BUCKET)
        yield server


@pytest.fixture(scope="session")
def s3_bucket(s3_server) -> str:
    """The test bucket on the S3 server, for a test that builds its own paths in it."""
    return TEST_BUCKET


@pytest.fixture
def s3_prefix(s3_bucket) -> str:
    """A fresh s3:// folder in the test bucket (use s3a:// for the same place in Spark)."""
    return f"s3://{s3_bucket}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def spark(s3_server):
    """The worker's only Spark session (local[2], Delta, s3a); tests must not stop it."""
    os.environ.setdefault("KILN_SPARK_MASTER", "local[2]")
    from etl.spark import INTERPRETED_PLANS, get_spark

    # Its jobs are small, so its plans run interpreted, as a short job's do: four ETL test files
    # (acceptance, minhash_dedup, report, quality) took 118 s against 131 s compiling each plan.
    session = get_spark("kiln-tests", INTERPRETED_PLANS, with_s3=True)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def demo_etl(spark, tmp_path_factory) -> dict[str, Path]:
    """The demo's corpus at a small size through every ETL stage of configs/demo_pipeline.yaml, report
    included, once per pytest worker: the notebooks and the report tests read it, none may change it.
    Keys: out (the demo folder), etl (the pipeline's output), tokenizer."""
    from jobs.demo import build_corpus, run_etl, train_tokenizer

    out = tmp_path_factory.mktemp("demo")
    raw, eval_path, texts = build_corpus(out, n_docs=150, planted=6)
    tokenizer = train_tokenizer(texts, out, vocab_size=512)
    etl = run_etl(raw, eval_path, tokenizer, out, spark, progress=lambda line: None)
    return {"out": out, "etl": etl, "tokenizer": tokenizer}


@pytest.fixture(scope="session")
def refresh_nights(spark, tmp_path_factory) -> dict:
    """tests/etl/corpus.py's refresh corpus through two local refreshes, once per pytest worker: the first
    night takes batch 1's two files, the second batch2.jsonl, which arrived after it. test_refresh checks
    what each night did; the cluster's refresh test (test_spark_submit) takes over from a copy of the
    first night's output and must end where the second left. Neither may change it. Keys: config (its
    path), inputs, out (after the second night), night1 (a copy of out after the first), runs
    (each night's PipelineRun), corpus."""
    from etl.load_config import load_pipeline_config
    from etl.refresh import refresh
    from tests.etl.corpus import make_corpus, write_config, write_jsonl

    work = tmp_path_factory.mktemp("refresh")
    corpus = make_corpus()
    write_jsonl(work / "in" / "batch1_a.jsonl", corpus.batch1[:50])
    write_jsonl(work / "in" / "batch1_b.jsonl", corpus.batch1[50:])
    config_path = write_config(work, [d["text"] for d in corpus.batch1])
    config, stages = load_pipeline_config(config_path)
    first = refresh(config, stages, spark, progress=lambda line: None)
    shutil.copytree(work / "out", work / "night1" / "out")
    write_jsonl(work / "in" / "batch2.jsonl", corpus.new + corpus.exact + corpus.near + corpus.replayed + corpus.republished)
    second = refresh(config, stages, spark, progress=lambda line: None)
    return {"config": config_path, "inputs": work / "in", "out": work / "out",
            "night1": work / "night1" / "out", "runs": [first, second], "corpus": corpus}
