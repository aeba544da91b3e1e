"""The demo pipeline through Spark Connect, the way Databricks shared and serverless compute run it:
`python -m etl run` as a client of a local Spark Connect server (SPARK_REMOTE), with no SparkContext and
no JVM on the client's side. Every Delta table holds the rows, and the dataset the bytes, of the suite's
local[2] run of the same corpus."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etl.devtools.spark_cluster import ConnectServer
from etl.devtools.same_results import dataset_bytes, table_rows
from tests.training.subprocess_env import child_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    server = ConnectServer(tmp_path_factory.mktemp("connect-server"), env=child_env())
    yield server.start()
    server.stop()


@pytest.mark.timeout(900)
def test_the_demo_pipeline_through_spark_connect_matches_local(connect_server, demo_etl, tmp_path):
    from jobs.demo import build_corpus, train_tokenizer

    # The corpus and tokenizer of the suite's shared local run, and docs/cluster.md's config with absolute paths.
    _, _, texts = build_corpus(tmp_path / "demo_out", n_docs=150, planted=6)
    train_tokenizer(texts, tmp_path / "demo_out", vocab_size=512)
    config = (ROOT / "configs" / "demo_pipeline.yaml").read_text().replace("demo_out/", f"{tmp_path}/demo_out/")
    (tmp_path / "demo_out" / "cluster_pipeline.yaml").write_text(config)
    env = {key: value for key, value in child_env(SPARK_REMOTE=connect_server.url).items()
           if key not in ("KILN_SPARK_MASTER", "PYSPARK_PYTHON")}
    done = subprocess.run([sys.executable, "-m", "etl", "run", "demo_out/cluster_pipeline.yaml"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "published: dataset v=1" in done.stdout, done.stdout[-3000:]
    mine, local = table_rows(tmp_path / "demo_out" / "etl", tmp_path / "demo_out"), table_rows(demo_etl["etl"], demo_etl["out"])
    assert sorted(mine) == sorted(local)
    differ = [name for name in mine if mine[name] != local[name]]
    assert not differ, f"tables whose rows differ from the local[2] run's: {differ}"
    assert dataset_bytes(tmp_path / "demo_out" / "etl" / "dataset") == dataset_bytes(demo_etl["etl"] / "dataset")


def test_a_connect_client_refuses_relative_paths(connect_server, tmp_path):
    """The server runs elsewhere, in its own working directory: a relative path would name another place."""
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hello"}\n')
    (tmp_path / "pipeline.yaml").write_text("output: out\ninputs: [{path: in.jsonl, source: web, id_field: id}]\n"
                                            "stages: [{name: fix_encoding}]\n")
    done = subprocess.run([sys.executable, "-m", "etl", "run", "pipeline.yaml"], cwd=tmp_path,
                          env=child_env(SPARK_REMOTE=connect_server.url), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert f"config error: config.output: 'out' is relative, but Spark's master is '{connect_server.url}'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_static_setting_in_spark_conf_is_one_line_naming_the_fix(connect_server, tmp_path):
    """The server's JVM started before the client: its memory and jars are the server's to set."""
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hello"}\n')
    (tmp_path / "pipeline.yaml").write_text(f"output: {tmp_path}/out\ninputs: [{{path: {tmp_path}/in.jsonl, source: web}}]\n"
                                            "stages: [{name: fix_encoding}]\nspark_conf: {spark.driver.memory: 2g}\n")
    done = subprocess.run([sys.executable, "-m", "etl", "run", "pipeline.yaml"], cwd=tmp_path,
                          env=child_env(SPARK_REMOTE=connect_server.url), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert done.stderr.splitlines()[-1] == ("error: spark_conf spark.driver.memory: a Spark Connect client cannot set "
                                            "it (CANNOT_MODIFY_CONFIG); set it where the server starts"), done.stderr[-3000:]
