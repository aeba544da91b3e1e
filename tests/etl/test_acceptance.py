"""ETL foundation acceptance: ingest -> fix_encoding -> quality -> exact_dedup on a fixture with planted problems.

One pipeline run (module-scoped) over ~2,500 records; every planted problem must be caught by the stage
meant to catch it, the funnel must add up exactly, and clean documents must survive.
"""
from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from etl.__main__ import main
from etl.delta import read_table
from etl.devtools.fixtures import make_fixture
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from etl.spark import INTERPRETED_PLANS, temporary_conf
from shards.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]

STAGES = [{"name": "fix_encoding"}, {"name": "quality"}, {"name": "exact_dedup"}]


@pytest.fixture(scope="module")
def outcome(spark, tmp_path_factory):
    """The suite's one pipeline run whose plans Spark compiles to Java, as it does for every job over a
    short job's size: every other run in the suite is a short job, or in a session set up like one."""
    root = tmp_path_factory.mktemp("acceptance")
    truth = make_fixture(2500, seed=11, out_dir=str(root / "input"))
    config, stages = validate_pipeline_config({
        "output": str(root / "out"), "inputs": [truth.input_config()], "max_doc_bytes": truth.max_doc_bytes,
        "stages": STAGES, "report": False,
    })
    lines: list[str] = []
    with temporary_conf(spark, dict.fromkeys(INTERPRETED_PLANS)):  # Spark's own defaults: compiled plans
        assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"
        run = run_pipeline(config, stages, spark, progress=lines.append)
    print("\n".join(lines))
    rejected = {r["id"]: (r["stage"], r["reason"], r["detail"])
                for r in read_table(spark, str(root / "out" / "rejected")).select("id", "stage", "reason", "detail").collect()}
    kept = {r["id"] for r in read_table(spark, run.final_table).select("id").collect()}
    after_fix = read_table(spark, run.tables["fix_encoding"]).filter(F.col("id").isin(list(truth.mojibake)))
    repaired = {r["id"]: r["text"] for r in after_fix.select("id", "text").collect()}
    return truth, run, kept, rejected, repaired


def _rejected_by(rejected, stage, reason=None):
    return {i for i, (s, r, _) in rejected.items() if s == stage and (reason is None or r == reason)}


def test_funnel_adds_up_exactly(outcome):
    truth, run, kept, rejected, _ = outcome
    assert run.steps[0].docs_in == truth.n_records
    assert not kept & set(rejected)
    assert len(kept) + len(rejected) == truth.n_records


def test_bad_input_is_rejected_at_ingest_with_its_reason(outcome):
    truth, _, _, rejected, _ = outcome
    by_reason = defaultdict(set)
    for doc_id in _rejected_by(rejected, "ingest"):
        by_reason[rejected[doc_id][1]].add(doc_id)
    assert dict(by_reason) == {reason: set(ids) for reason, ids in truth.bad_input.items()}


def test_mojibake_is_repaired_to_the_original_and_undecodable_text_rejected(outcome):
    truth, run, kept, rejected, repaired = outcome
    for doc_id, original in truth.mojibake.items():
        assert repaired.get(doc_id) == original, doc_id
        assert doc_id in kept, rejected.get(doc_id)
    assert _rejected_by(rejected, "fix_encoding") == _rejected_by(rejected, "fix_encoding", "undecodable")
    assert _rejected_by(rejected, "fix_encoding") == set(truth.undecodable)
    step = next(s for s in run.steps if s.stage == "fix_encoding")
    assert step.metrics["documents_changed"] >= len(truth.mojibake)


def test_junk_is_rejected_by_quality(outcome):
    truth, _, _, rejected, _ = outcome
    by_quality = _rejected_by(rejected, "quality")
    for kind, ids in truth.junk.items():
        missed = set(ids) - by_quality
        assert not missed, f"quality kept {len(missed)} {kind} documents, e.g. {sorted(missed)[:3]}"


def test_duplicates_are_removed_except_one(outcome):
    truth, _, kept, rejected, _ = outcome
    expected_duplicates = set()
    for group in truth.duplicate_groups:
        survivors = [i for i in group if i in kept]
        assert len(survivors) == 1, (group, [rejected.get(i) for i in group])
        expected_duplicates |= set(group) - set(survivors)
    assert _rejected_by(rejected, "exact_dedup") == expected_duplicates
    for doc_id in expected_duplicates:
        assert rejected[doc_id][1] == "exact_duplicate" and rejected[doc_id][2] in kept


def test_clean_documents_are_kept(outcome):
    truth, _, kept, rejected, _ = outcome
    kept_clean = sum(i in kept for i in truth.clean)
    share = kept_clean / len(truth.clean)
    lost = Counter(rejected[i][:2] for i in truth.clean if i not in kept)
    print(f"\nclean documents kept: {kept_clean}/{len(truth.clean)} = {share:.2%}; lost: {dict(lost)}")
    assert share >= 0.98, f"only {share:.2%} of clean documents kept; lost to {dict(lost)}"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["stages"].append({"name": "qualty"}), "config.stages[3].name: unknown stage 'qualty'"),
        (lambda d: d["stages"][2].update(params={"lowercase": "yes"}),
         "config.stages[2].params.lowercase: expected true or false, got 'yes'"),
        (lambda d: d["inputs"][0].update(path="/nonexistent/kiln/*.jsonl"),
         "config.inputs[0].path: no file or table matches '/nonexistent/kiln/*.jsonl'"),
    ],
    ids=["unknown_stage", "wrong_param_type", "missing_input"],
)
def test_malformed_config_gives_one_clear_error(tmp_path, capsys, change, message):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    data = {"output": str(tmp_path / "out"), "inputs": [{"path": str(tmp_path / "in.jsonl"), "source": "web"}],
            "stages": [dict(s) for s in STAGES]}
    change(data)
    with pytest.raises(ConfigError) as err:
        validate_pipeline_config(data)
    assert str(err.value).startswith(message)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 2
    printed = capsys.readouterr().err.strip()
    assert printed.startswith(f"config error: {message}") and len(printed.splitlines()) == 1


def test_command_line_exits_2_on_a_config_error(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "inputs": [{"path": str(tmp_path), "source": "web"}],
                                    "stages": [{"name": "no_such_stage"}]}))
    done = subprocess.run([sys.executable, "-m", "etl", "run", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "config error: config.stages[0].name: unknown stage 'no_such_stage'" in done.stderr
    assert "Traceback" not in done.stderr


def test_fixture_is_deterministic_for_a_seed(tmp_path):
    first = make_fixture(150, seed=5, out_dir=str(tmp_path / "a"))
    second = make_fixture(150, seed=5, out_dir=str(tmp_path / "b"))
    other = make_fixture(150, seed=6, out_dir=str(tmp_path / "c"))
    contents = [[Path(f).read_bytes() for f in t.files] for t in (first, second, other)]
    assert contents[0] == contents[1] and contents[0] != contents[2]
    assert (first.clean, first.mojibake, first.duplicate_groups) == (second.clean, second.mojibake, second.duplicate_groups)
