"""Shared fixtures: one real local S3-compatible server and one real local Spark session with
Delta for each pytest worker (`make test` runs two, each taking whole groups of files: see
pytest_collection_modifyitems). The S3 server starts first so Spark is configured for s3a://."""
from __future__ import annotations

import os
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
    a file, so that its module fixtures (a test cluster) start once; and every file that reads the
    shared demo run (demo_etl), so that one worker runs it, once."""
    demo_files = {item.path for item in items if "demo_etl" in item.fixturenames}
    for item in items:
        group = "demo_etl" if item.path in demo_files else item.path.relative_to(ROOT).as_posix()
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
