"""Publishing is idempotent and no run builds on another's leftovers.

As a nightly job runs it: `python -m etl run CONFIG` twice on the same input, as typed, from a fresh
working directory with relative paths. The second run publishes nothing ("unchanged: dataset v=1"),
and a training job started on the first run's dataset resumes after it. A run that stops midway
leaves its output marked incomplete: refresh, erase and a later shuffle_and_write refuse it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from etl.__main__ import main
from etl.load_config import load_pipeline_config
from etl.pipeline import Pipeline, run_pipeline
from etl.run_state import read_marker
from etl.spark import cache_dir
from etl.stages.base import Stage
from shards import list_versions, read_manifest
from shards.config import ConfigError
from tests.etl.corpus import fixture_docs, make_corpus, write_config, write_fixture_tokenizer, write_jsonl
from training.run.journal import read_events

SEQ_LEN = 32


def command(cwd: Path, *args: str) -> str:
    """One command line in a subprocess, as a user types it; its output, which must end well."""
    env = dict(os.environ, OMP_NUM_THREADS="1", KILN_CACHE=str(cache_dir()))  # the jars fetched once
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{output[-6000:]}"
    return output


def test_a_rerun_on_unchanged_input_keeps_the_version_and_training_resumes(tmp_path):
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    with open(work / "in" / "docs.jsonl", "w") as handle:
        for doc in fixture_docs(20):
            handle.write(json.dumps({"doc_id": doc["id"], "text": doc["text"]}) + "\n")
    write_fixture_tokenizer(work / "tok")
    (work / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        output: out
        report: false
        inputs: [{{path: in/docs.jsonl, source: fixture, id_field: doc_id}}]
        stages:
          - {{name: tokenize, params: {{tokenizer: tok, seq_len: {SEQ_LEN}, num_buckets: 2, val_fraction: 0.1}}}}
          - {{name: shuffle_and_write, params: {{size_limit: 4000, quality_report: false}}}}
        """))
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        name: nightly
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 32, n_heads: 2, max_seq_len: {SEQ_LEN}, vocab_size: 320}}}}
        data: {{datasets: [{{path: out/dataset}}], num_workers: 0, eval_split: null}}
        train: {{max_steps: 4, global_batch_size: 4, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        schedule: {{warmup_steps: 0, decay: constant}}
        checkpoint: {{every_steps: 2}}
        logging: {{every_steps: 1, progress_bar: false, mlflow: false, plot: false}}
        """))
    dataset = work / "out" / "dataset"

    assert "published: dataset v=1" in command(work, "-m", "etl", "run", "pipeline.yaml")
    first = read_manifest(str(dataset))
    assert first.format == 2 and first.version == 1
    command(work, "-m", "training.launch", "train.yaml", "--nproc-per-node", "1")

    assert "unchanged: dataset v=1" in command(work, "-m", "etl", "run", "pipeline.yaml")
    assert list_versions(str(dataset), include_incomplete=True) == [1]  # the rebuilt copy was removed
    assert read_manifest(str(dataset)) == first
    assert read_marker(str(work / "out"))["status"] == "complete"

    command(work, "-m", "training.launch", "train.yaml", "--nproc-per-node", "1", "train.max_steps=6")
    journal = read_events(work / "runs" / "nightly" / "journal.jsonl")
    assert [e["step"] for e in journal if e["event"] == "resume"] == [4]
    assert journal[-1]["event"] == "finish"


class StopsMidway(Stage):
    """A shuffle_and_write that fails as a full disk or a lost driver would."""

    name = "shuffle_and_write"

    def run(self, docs, ctx):
        raise OSError("No space left on device")


def test_a_run_that_stops_midway_is_refused_by_refresh_erase_and_publish(spark, tmp_path, capsys):
    corpus = make_corpus(n1=30, n_dup=2)
    write_jsonl(tmp_path / "in" / "batch1.jsonl", corpus.batch1)
    config_path = write_config(tmp_path, [d["text"] for d in corpus.batch1])
    config, stages = load_pipeline_config(config_path)
    out = str(tmp_path / "out")

    with pytest.raises(OSError, match="No space left"):
        quick = [s for s in stages[:-1] if s.name != "minhash_dedup"]
        run_pipeline(config, [*quick, StopsMidway(None)], spark, progress=lambda line: None)
    marker = read_marker(out)
    assert marker["status"] == "running" and marker["command"] == "run"

    (tmp_path / "erase.txt").write_text("web/a1\n")
    for args in (["refresh", config_path], ["erase", config_path, "--ids", str(tmp_path / "erase.txt")]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"the last run there, {marker['run_id']} (`python -m etl run`" in err, err
        assert "stopped before it finished" in err and "re-run `python -m etl run`" in err
    assert list_versions(f"{out}/dataset", include_incomplete=True) == []

    # A later run that only publishes would take the stopped run's tokenize tables: refused.
    pipeline = Pipeline(config, stages, spark)
    run = pipeline.new_run()
    with pytest.raises(ConfigError, match=rf"tokenize/samples was written by run {marker['run_id']}, not by this "
                                          rf"run {run.run_id}.*put tokenize before shuffle_and_write"):
        pipeline.run_stages(run, stages[-1:], lambda line: None, source=f"{out}/tokenize")
    assert list_versions(f"{out}/dataset", include_incomplete=True) == []
