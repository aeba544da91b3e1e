"""The ETL as a newcomer types it: `python -m etl ...` in a subprocess, from a fresh working
directory outside the repository, with relative paths. Each trap that used to fail late (after
Spark started, or with a Java trace) or silently now fails at once with one line naming the key."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from etl.delta import read_table
from etl.devtools.fixtures import make_fixture
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from shards.config import ConfigError, parse_override
from tests.etl.corpus import write_fixture_tokenizer
from training.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def kiln(cwd: Path, *args: str, module: str = "etl", master: str = "local[2]", timeout: int = 600):
    """``python -m <module> ARGS`` run in ``cwd`` as a user would, with Spark's master ``master``."""
    env = {**os.environ, "KILN_SPARK_MASTER": master}
    env.pop("PYTHONPATH", None)  # Kiln comes from the installed package, as for a user
    start = time.time()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    done.seconds = time.time() - start
    return done


def assert_config_error(done, message: str) -> None:
    """Exit status 2 and one line, ``config error: <message>...``, with no traceback."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"config error: {message}"), done.stderr
    assert done.seconds < 60, "the check must not wait for Spark"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A fresh working directory outside the repo: a small corpus, a tokenizer, an eval set, and a
    pipeline config that names them all relative to it."""
    cwd = tmp_path_factory.mktemp("newcomer")
    truth = make_fixture(150, seed=3, out_dir=str(cwd / "data" / "web"))
    write_fixture_tokenizer(cwd / "tok")
    (cwd / "eval").mkdir()
    (cwd / "eval" / "tasks.jsonl").write_text(json.dumps({"context": "a question that is not in the corpus"}) + "\n")
    pipeline = {
        "output": "out/run1",
        "max_doc_bytes": truth.max_doc_bytes,
        "report": False,
        "inputs": [{"path": "data/web/*", "source": "web", "id_field": "id"}],
        "stages": [
            {"name": "quality"},
            {"name": "decontaminate", "params": {"eval_paths": ["eval/tasks.jsonl"]}},
            {"name": "tokenize", "params": {"tokenizer": "tok", "seq_len": 32, "num_buckets": 2}},
            {"name": "shuffle_and_write"},
        ],
    }
    (cwd / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return cwd


def _variant(workdir: Path, name: str, stages: list[dict]) -> str:
    """A copy of pipeline.yaml with other stages; returns its (relative) file name."""
    data = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    data["stages"] = stages
    (workdir / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return name


def test_commands_run_from_a_folder_holding_an_output_named_etl(tmp_path):
    """An output root holds etl/ (make demo's demo_out/ does); a command typed from there still runs
    Kiln's own package, not that folder (with setuptools' default editable install it did not)."""
    (tmp_path / "etl" / "dataset" / "v=1").mkdir(parents=True)
    (tmp_path / "training" / "run").mkdir(parents=True)
    assert_config_error(kiln(tmp_path, "erase", "missing.yaml", "--ids", "ids.txt"), "")
    done = kiln(tmp_path, "--help", module="training.consolidate")
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- relative paths
# A whole run with relative paths, as typed, is in test_publish_idempotent (its first `etl run`) and
# test_docs_commands (the README's own command); here, what the loader makes of them.

def test_config_paths_are_made_absolute_and_urls_left_alone(tmp_path, monkeypatch):
    tokenizer_path = write_fixture_tokenizer(tmp_path / "tokenizer")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "eval.jsonl").write_text('{"q": "y"}\n')
    os.symlink(tokenizer_path, tmp_path / "tok.json")
    config, stages = validate_pipeline_config({
        "output": "out", "state_dir": "state",
        "inputs": [{"path": "in/*.jsonl", "source": "web"}, {"path": "s3a://bucket/in/*", "source": "s3"}],
        "stages": [
            {"name": "decontaminate", "params": {"eval_paths": ["eval.jsonl"]}},
            {"name": "tokenize", "params": {"tokenizer": "tok.json"}},
            {"name": "shuffle_and_write", "params": {"dataset_root": "datasets/web"}},
        ],
    }, check_inputs=False)
    assert config.output == str(tmp_path / "out") and config.state_dir == str(tmp_path / "state")
    assert [i.path for i in config.inputs] == [str(tmp_path / "in" / "*.jsonl"), "s3a://bucket/in/*"]
    assert stages[0].params.eval_paths == [str(tmp_path / "eval.jsonl")]
    assert stages[1].params.tokenizer == str(tmp_path / "tok.json")
    assert stages[2].params.dataset_root == str(tmp_path / "datasets" / "web")
    # The report records the config: the raw params show the paths the run used.
    assert config.stages[1].params["tokenizer"] == str(tmp_path / "tok.json")
    assert not (tmp_path / "out").exists(), "loading a config creates nothing"


def test_relative_path_with_a_cluster_master_names_the_fix(workdir):
    done = kiln(workdir, "run", "pipeline.yaml", master="spark://head:7077")
    assert_config_error(done, "config.output: 'out/run1' is relative, but Spark's master is 'spark://head:7077'")
    assert "absolute path on storage every node sees, or an object-store URL" in done.stderr


# --------------------------------------------------------------------------- YAML numbers

def test_yaml_floats_in_a_training_file_and_an_override(tmp_path):
    """PyYAML's YAML 1.1 rule reads 3e-4 as a string; Kiln's loader reads it as YAML 1.2 does."""
    text = (ROOT / "configs" / "train_tiny.yaml").read_text()
    assert "lr: 3.0e-3" in text
    path = tmp_path / "train.yaml"
    path.write_text(text.replace("lr: 3.0e-3", "lr: 3e-4"))
    assert load_config(path).optimizer.lr == 3e-4
    assert load_config(path, ["optimizer.lr=1e-3"]).optimizer.lr == 1e-3
    assert parse_override("optimizer.weight_decay=1e-5") == (["optimizer", "weight_decay"], 1e-5)
    done = kiln(tmp_path, "--config", "train.yaml", "--override", "optimizer.lr=2e-4", module="training.memory")
    assert done.returncode == 0 and "fits:" in done.stdout, done.stderr


def test_yaml_float_override_on_the_etl_side(workdir):
    """`--set quality.max_dup_para_frac=3e-1` is a float: the error is the deliberate one after it."""
    done = kiln(workdir, "run", "pipeline.yaml", "--set", "quality.max_dup_para_frac=3e-1",
                "--set", "tokenize.seq_len=1e3")
    assert_config_error(done, "config.stages[2].params.seq_len: expected int, got 1000.0")


def test_several_configs_that_would_collide_fail_before_spark_starts(workdir):
    """`etl run A B` runs both in one Spark session: made with A's spark_conf, so B may not ask for
    another, and B may not write over A's output."""
    data = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    (workdir / "same_output.yaml").write_text(yaml.safe_dump(data))
    (workdir / "other_conf.yaml").write_text(yaml.safe_dump(
        {**data, "output": "out/other", "spark_conf": {"spark.sql.shuffle.partitions": "4"}}))
    done = kiln(workdir, "run", "pipeline.yaml", "same_output.yaml")
    assert_config_error(done, f"same_output.yaml and pipeline.yaml both write to {workdir}/out/run1: give each its own output")
    done = kiln(workdir, "run", "pipeline.yaml", "other_conf.yaml")
    assert_config_error(done, "other_conf.yaml: spark_conf {'spark.sql.shuffle.partitions': '4'} differs from pipeline.yaml's {}")
    assert not (workdir / "out" / "other").exists(), "nothing was written"


# --------------------------------------------------------------------------- pre-flight checks of stages

def test_missing_tokenizer_fails_before_spark_starts(workdir):
    """It used to fail after 8 stages and 5 minutes, their tables overwritten by then."""
    done = kiln(workdir, "run", "pipeline.yaml", "--set", "output=out/tok-missing", "--set", "tokenize.tokenizer=tok2")
    assert_config_error(done, f"config.stages[2].params.tokenizer: no tokenizer at {workdir}/tok2/tokenizer.json")
    assert not (workdir / "out" / "tok-missing").exists(), "nothing was written"


def test_missing_eval_set_fails_at_config_load(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    data = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    data["stages"][1]["params"]["eval_paths"] = ["eval/tasks.jsonl", "eval/gone.jsonl"]
    with pytest.raises(ConfigError, match=rf"config\.stages\[1\]\.params\.eval_paths\[1\]: no evaluation file at {workdir}/eval/gone\.jsonl"):
        validate_pipeline_config(data)


def test_missing_word_list_fails_at_config_load(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    data = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    data["stages"] = [{"name": "toxicity", "params": {"wordlists": {"de": "lists/de.txt"}}}]
    with pytest.raises(ConfigError, match=rf"config\.stages\[0\]\.params\.wordlists: .*{workdir}/lists/de\.txt"):
        validate_pipeline_config(data)


def test_hash_action_without_its_salt_fails_at_config_load(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("KILN_PII_SALT", raising=False)
    data = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    data["stages"] = [{"name": "quality"}, {"name": "pii", "params": {"actions": {"EMAIL": "hash"}}}]
    with pytest.raises(ConfigError, match=r"config\.stages\[1\]\.params\.hash_salt_env: .*KILN_PII_SALT"):
        validate_pipeline_config(data)


def test_shuffle_and_write_before_tokenize_is_refused(workdir):
    """It used to exit 0 and publish the previous run's tokenize tables as this run's dataset."""
    name = _variant(workdir, "reversed.yaml", [{"name": "shuffle_and_write"}, {"name": "tokenize", "params": {"tokenizer": "tok"}}])
    done = kiln(workdir, "run", name)
    assert_config_error(done, f"config.stages[0].params.samples_table: {workdir}/out/run1/tokenize/samples is this "
                              "run's tokenize output, but tokenize does not run before shuffle_and_write")
    assert "put tokenize before it in stages" in done.stderr


def test_shuffle_and_write_reads_only_this_runs_tokenize_tables(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    data = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    data["stages"] = [{"name": "quality"}, {"name": "shuffle_and_write"}]
    with pytest.raises(ConfigError, match=r"config\.stages\[1\]\.params\.samples_table: .* tokenize does not run before"):
        validate_pipeline_config(data)
    data["stages"] = [{"name": "tokenize", "params": {"tokenizer": "tok"}},
                      {"name": "shuffle_and_write", "params": {"samples_table": "/elsewhere/tokenize/samples"}}]
    with pytest.raises(ConfigError, match=rf"samples_table: /elsewhere/tokenize/samples is not this run's tokenize "
                                          rf"output \({workdir}/out/run1/tokenize/samples\)"):
        validate_pipeline_config(data)


# --------------------------------------------------------------------------- unwritable outputs

def test_unwritable_output_is_one_line(workdir):
    """It used to be a 183-line Java trace."""
    (workdir / "notes.txt").write_text("a file, not a folder\n")
    done = kiln(workdir, "run", "pipeline.yaml", "--set", "output=notes.txt/out")
    assert_config_error(done, f"config.output: cannot create {workdir}/notes.txt/out: {workdir}/notes.txt is a file")


def test_output_where_no_folder_can_be_made(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    data = yaml.safe_load((workdir / "pipeline.yaml").read_text())
    data["state_dir"] = "/proc/kiln-state"  # no one, not even root, can make a folder there
    with pytest.raises(ConfigError, match=r"config\.state_dir: cannot write /proc/kiln-state: creating a folder in /proc fails"):
        validate_pipeline_config(data)


# --------------------------------------------------------------------------- duplicate ids

def test_duplicate_ids_keep_the_newest_file_and_name_it(spark, tmp_path):
    """The copy in the file modified last wins (then the later path, then the later row), whatever
    the paths sort as; the rejected copy's detail says where the kept one is."""
    web = tmp_path / "web"
    web.mkdir()
    rows = lambda *pairs: "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in pairs)  # noqa: E731
    (web / "a.jsonl").write_text(rows(("x", "new x"), ("y", "y from a"), ("z", "first z"), ("z", "last z")))
    (web / "b.jsonl").write_text(rows(("x", "old x"), ("y", "y from b")))
    os.utime(web / "a.jsonl", (2_000_000, 2_000_000))  # a.jsonl is newer though it sorts first
    os.utime(web / "b.jsonl", (1_000_000, 1_000_000))
    tables = tmp_path / "tables"
    spark.createDataFrame([("p", "older parquet")], "id string, text string").coalesce(1).write.parquet(str(tables / "1"))
    spark.createDataFrame([("p", "newer parquet")], "id string, text string").coalesce(1).write.parquet(str(tables / "2"))
    for stamp, folder in ((3_000_000, "2"), (1_000_000, "1")):
        for part in (tables / folder).glob("part-*"):
            os.utime(part, (stamp, stamp))
    config, stages = validate_pipeline_config({
        "output": str(tmp_path / "out"), "report": False, "stages": [],
        "inputs": [{"path": str(web / "*.jsonl"), "source": "web", "id_field": "id"},
                   {"path": str(tables / "*" / "*.parquet"), "source": "pq", "format": "parquet", "id_field": "id"}],
    })
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    kept = {r["id"]: r["text"] for r in read_table(spark, run.final_table).collect()}
    assert kept == {"web/x": "new x", "web/y": "y from a", "web/z": "last z", "pq/p": "newer parquet"}
    rejected = {(r["id"], r["text"]): r["detail"] for r in read_table(spark, str(tmp_path / "out" / "rejected"))
                .filter("reason = 'duplicate_id'").collect()}
    assert rejected[("web/x", "old x")] == "kept the newest copy, at web/a.jsonl:0; this copy is at web/b.jsonl:0"
    assert rejected[("web/z", "first z")] == "kept the newest copy, at web/a.jsonl:3; this copy is at web/a.jsonl:2"
    parquet_detail = rejected[("pq/p", "older parquet")]
    assert parquet_detail.startswith("kept the newest copy, at pq/part-") and parquet_detail.endswith(":0")
    assert len(rejected) == 4


# --------------------------------------------------------------------------- train-tokenizer

def test_train_tokenizer_skips_a_truncated_gz_and_says_how_far_the_vocabulary_got(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    lines = "".join(json.dumps({"text": f"document {i} says hello to the small corpus"}) + "\n" for i in range(300))
    (data / "good.jsonl").write_text(lines)
    whole = gzip.compress(lines.encode())
    (data / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # a download that stopped halfway
    done = kiln(tmp_path, "train-tokenizer", "--input", "data/*", "--format", "jsonl", "--vocab-size", "5000", "--out", "tok")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "cut.jsonl.gz: unreadable after line" in done.stderr and "skipped the rest of the file" in done.stderr
    assert "tokens in" in done.stdout and (tmp_path / "tok" / "tokenizer.json").exists()
    assert "of the 5000 tokens asked for: the corpus is too small or --min-frequency 2 too high" in done.stdout
