"""The run report (etl/report/): the demo run's report section by section against its Delta tables,
and a tiny pipeline run twice (a permissive config, then one that removes 90% in one stage) for the
warnings, the run-to-run comparison and MLflow logging to a local file store."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from etl.delta import read_table
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline

# Values the demo plants in its PII documents (jobs/demo.py PII_LINES): none may reach the report.
RAW_PII = ("@example.com", "415 555", "4111 1111 1111 1111", "DE89 3704")


@pytest.fixture(scope="module")
def demo(demo_etl):
    folder = Path(demo_etl["etl"]) / "report"
    return json.loads((folder / "report.json").read_text()), (folder / "report.html").read_text(), Path(demo_etl["etl"])


def test_per_source_counts_equal_the_delta_tables(demo, spark):
    report, _, etl = demo
    rejected = read_table(spark, str(etl / "rejected")).unionByName(read_table(spark, str(etl / "rejected_curated")))
    rejected_counts = {(r["stage"], r["source"], r["reason"]): r["count"]
                       for r in rejected.groupBy("stage", "source", "reason").count().collect()}
    rows = report["by_source"]
    assert {"web", "forum"} <= {r["source"] for r in rows}
    for row in rows:
        kept = read_table(spark, report["tables"][row["stage"]]).where(F.col("source") == row["source"])
        got = kept.agg(F.count("*").alias("n"), F.sum(F.length("text")).alias("c")).collect()[0]
        assert (row["docs_out"], row["chars_out"]) == (got["n"], got["c"] or 0), row
        expected = {reason: n for (stage, source, reason), n in rejected_counts.items() if (stage, source) == (row["stage"], row["source"])}
        assert row["rejected"] == expected, row
        assert row["docs_in"] == row["docs_out"] + sum(expected.values())
    tokenized = read_table(spark, report["tables"]["tokenize"]).groupBy("source").agg(F.sum("num_tokens").alias("t")).collect()
    counted = {r["source"]: r["t"] for r in tokenized}
    assert {r["source"]: r["tokens_out"] for r in rows if r["stage"] == "tokenize"} == {s: counted.get(s, 0) for s in {r["source"] for r in rows}}
    for step in report["steps"]:  # the sources add up to the funnel
        mine = [r for r in rows if r["stage"] == step["stage"]]
        assert sum(r["docs_out"] for r in mine) == step["docs_out"] and sum(r["docs_in"] for r in mine) == step["docs_in"]


def test_every_rejection_reason_has_pii_free_truncated_examples(demo):
    report, page, etl = demo
    reasons = {(s["stage"], r) for s in report["steps"] for r in s["rejected"]}
    shown = {(e["stage"], e["reason"]) for e in report["examples"]}
    assert shown == reasons
    limit = report["config"]["report"]["example_chars"]
    for example in report["examples"]:
        assert len(example["text"]) <= limit + 2, example["id"]
    # The planted PII documents include some that a raw-zone stage rejected (near duplicates of them
    # are not planted, but quality and dedup examples come from raw text): nothing raw is shown.
    texts = [e["text"] for e in report["examples"]] + [t for p in report["dedup"]["pairs"] for t in (p["removed_text"], p["kept_text"])]
    for value in RAW_PII:
        assert not any(value in t for t in texts), value
        assert value not in page, value
    commands = re.findall(r"more: <code>(.*?)</code>", page)
    assert len(commands) >= len(reasons)  # one under each reason's examples
    assert any(c.startswith("python -m etl dedup-explain ") for c in commands)


def test_raw_zone_examples_are_redacted_with_the_pii_engine():
    """The report's redactor is the pii stage's engine: raw texts with the planted values come back without them."""
    from etl.report.collect import Redactor
    from jobs.demo import PII_LINES

    redacted = Redactor(None)([line.format(n=3) for line in PII_LINES])
    for value in RAW_PII:
        assert not any(value in text for text in redacted), (value, redacted)
    assert redacted[0] == "Contact me at <EMAIL> or call <PHONE>."


def test_score_histograms_show_kept_against_rejected_with_thresholds(demo):
    report, page, _ = demo
    quality = {h["column"]: h for h in report["scores"]["quality"]}
    top = quality["q_top_2gram_frac"]
    assert top["thresholds"] == {"max_top_2gram_char_frac": 0.2}
    rejected_here = report["steps"][[s["stage"] for s in report["steps"]].index("quality")]["rejected"]
    assert sum(top["rejected_by_rule"]) == rejected_here.get("quality:gopher_top_2gram_frac", 0)
    assert sum(top["kept"]) == next(s["docs_out"] for s in report["steps"] if s["stage"] == "quality")
    assert quality["q_words"]["thresholds"] == {"min_words": 50, "max_words": 100_000}
    assert sum(quality["q_words"]["rejected_by_rule"]) == rejected_here.get("quality:gopher_short_doc", 0)
    toxicity = report["scores"]["toxicity"][0]
    assert toxicity["thresholds"] == {"max_score": 0.3} and sum(toxicity["rejected_by_rule"]) > 0
    assert "tokenize" not in report["scores"]  # token counts are not a score
    assert "Scores: kept against rejected" in page


def test_dedup_section_lists_clusters_and_pairs(demo, spark):
    report, page, etl = demo
    clusters = read_table(spark, str(etl / "minhash_dedup" / "clusters"))
    sizes = sorted((r["count"] for r in clusters.groupBy("cluster_id").count().collect()), reverse=True)
    dedup = report["dedup"]
    assert [c["documents"] for c in dedup["largest"]] == sizes[:len(dedup["largest"])]
    lowest = sorted(r["similarity"] for r in clusters.collect() if r["id"] != r["kept_id"])
    assert [p["similarity"] for p in dedup["pairs"]] == lowest[:len(dedup["pairs"])]
    assert dedup["pairs"] and all(p["removed_text"] and p["kept_text"] for p in dedup["pairs"])
    assert "Near duplicates (minhash_dedup)" in page


def test_demo_report_has_every_section_and_no_stage_warning(demo):
    report, page, _ = demo
    # No stage of the demo config removes most of its input. (A source can still lose everything: the
    # warning names it, and the page opens with it.)
    assert [w for w in report["warnings"] if w["kind"] == "stage_removed_most"] == []
    assert ("No warnings" in page) == (not report["warnings"])
    for heading in ("Funnel", "Per source", "Why documents were removed", "Stage metrics", "Since the previous run", "Dataset"):
        assert heading in page, heading
    assert "<pre>{&#x27;" not in page  # stage metrics are tables, not printed dicts
    assert not re.search(r"src=['\"](?!data:)", page)  # images inline: readable offline
    assert report["dataset"]["tokens"] == sum(next(s for s in report["steps"] if s["stage"] == "shuffle_and_write")["metrics"]["num_tokens"].values())


def test_local_reads_pick_the_rows_spark_picks(demo, spark, monkeypatch, tmp_path):
    """On a local output the sections read the tables with pyarrow; elsewhere Spark reads them. Both pick the
    same rows: the demo's examples (one, three and twenty a reason) and its dedup section, and a table whose
    ids are null, not ASCII, or hash to a negative long. The funnel table (written by delta-rs here) holds
    the funnel's steps."""
    from etl.delta import local_dataset, write_table
    from etl.report import collect

    report, _, etl = demo
    rejected = collect.rejected_tables(spark, str(etl))
    assert set(rejected) == {"raw", "curated"}
    assert all(local_dataset(spark, path) is not None for path in rejected.values())
    odd = tmp_path / "rejected"
    ids = [None, "é", "日本語", "a", "b", "web/d0000001", "x" * 40, "ß", "Z", "0"]
    assert {collect.spark_xxhash64(i) < 0 for i in ids} == {True, False}
    rows = [(i, "s", "one", "r1" if n % 2 else "r2", "why", f"text of {i}") for n, i in enumerate(ids)]
    rows += [(i, "s", "two", "r3", "why", f"text of {i}") for i in ids if i is not None]  # a null id ties with none
    columns = "id string, source string, stage string, reason string, detail string, text string"
    write_table(spark.createDataFrame(rows, columns), str(odd), partition_by=["stage"])
    stages = [s["stage"] for s in report["steps"]] + ["one", "two"]

    def same(texts):
        return texts

    def sections():
        examples = [collect.rejected_examples(spark, tables, stages, n, 60, same)
                    for tables in (rejected, {"raw": str(odd)}) for n in (1, 3, 20)]
        dedup = collect.dedup_clusters(spark, str(etl), report["tables"]["minhash_dedup"], rejected, 3, 4, 60, same)
        return examples, dedup

    local = sections()
    assert local[1]["pairs"] and len(local[0][-1]) == len(ids) * 2 - 1  # every row of the odd table, 20 a reason
    monkeypatch.setattr(collect, "local_dataset", lambda spark, path: None)
    assert sections() == local
    funnel = [r.asDict() for r in read_table(spark, str(etl / "report" / "funnel")).orderBy("step").collect()]
    assert [(r["stage"], r["docs_in"], r["docs_out"], r["rejected"]) for r in funnel] == \
        [(s["stage"], s["docs_in"], s["docs_out"], s["rejected"]) for s in report["steps"]]


def test_the_funnel_table_overwrites_a_table_spark_wrote(spark, tmp_path):
    """delta-rs overwrites the funnel table Spark's writer made (a rerun after a run on the Spark path) and keeps
    its properties and id; a partitioned table, which it would not repartition, is left to Spark; Spark's
    DataFrame of the same Arrow rows (the Spark path) holds them too."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from etl.delta import overwrite_small_table, table_properties, write_table
    from etl.report import _FUNNEL_SCHEMA

    def funnel(docs_in: int) -> pa.Table:
        return pa.Table.from_pylist([{"step": 0, "stage": "ingest", "docs_in": docs_in, "docs_out": 2, "chars_in": 30,
                                      "chars_out": 20, "bytes_in": 30, "bytes_out": 20, "rejected": {"bad_json": 1}}],
                                    schema=_FUNNEL_SCHEMA)

    def rows(path) -> list[dict]:
        return [{**r.asDict(), "rejected": dict(r["rejected"])} for r in read_table(spark, path).collect()]

    path = str(tmp_path / "funnel")
    write_table(spark.createDataFrame(funnel(3)), path, properties={"kiln.note": "mine"})
    assert rows(path) == [{**funnel(3).to_pylist()[0], "rejected": {"bad_json": 1}}]
    table_id = DeltaTable(path).metadata().id
    assert overwrite_small_table(spark, path, funnel(5))
    assert rows(path) == [{**funnel(5).to_pylist()[0], "rejected": {"bad_json": 1}}]
    assert table_properties(spark, path)["kiln.note"] == "mine" and DeltaTable(path).metadata().id == table_id
    partitioned = str(tmp_path / "partitioned")
    write_table(spark.createDataFrame(funnel(3)), partitioned, partition_by=["stage"])
    assert not overwrite_small_table(spark, partitioned, funnel(5))


GOOD = ("The river ran past the old mill, and the miller watched it from his door every morning. He had "
        "lived there for many years with his wife and their two dogs. In the spring the water rose to the "
        "edge of the garden. In the summer it was slow and warm, and the children of the village came to "
        "swim in it. The miller liked to hear them laugh. He would bring them bread and apples from the "
        "kitchen. When autumn came, the leaves fell into the water and were carried away to the sea.")


@pytest.fixture(scope="module")
def tiny_runs(spark, tmp_path_factory):
    """A source of one good and nine short documents, and a source of two short ones, through `quality`
    twice: first with every rule off, then with the defaults (92% removed, one source emptied)."""
    root = tmp_path_factory.mktemp("report_tiny")
    (root / "in").mkdir()
    main = [{"id": "good", "text": GOOD}] + [{"id": f"short-{i}", "text": f"a short note {i}"} for i in range(9)]
    (root / "in" / "main.jsonl").write_text("".join(json.dumps(d) + "\n" for d in main))
    (root / "in" / "notes.jsonl").write_text("".join(json.dumps({"id": f"n{i}", "text": f"note {i}"}) + "\n" for i in range(2)))
    tracking = (root / "mlruns").as_uri()  # MLflow's file store, which MLflow 3 keeps behind this switch
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        results = _run_twice(spark, root, tracking)
    return results, tracking


def _run_twice(spark, root: Path, tracking: str) -> list:
    results = []
    for quality in ({"gopher_repetition": False, "gopher_quality": False, "c4": False}, {}):
        config, stages = validate_pipeline_config({
            "output": str(root / "out"),
            "inputs": [{"path": str(root / "in" / "main.jsonl"), "source": "main", "id_field": "id"},
                       {"path": str(root / "in" / "notes.jsonl"), "source": "notes", "id_field": "id"}],
            "stages": [{"name": "quality", "params": quality}],
            "report": {"max_stage_removal": 0.5, "mlflow_tracking_uri": tracking, "mlflow_experiment": "tiny"},
        })
        lines: list[str] = []
        run_pipeline(config, stages, spark, progress=lines.append)
        results.append((json.loads((root / "out" / "report" / "report.json").read_text()), lines))
    return results


def test_warnings_fire_when_a_stage_removes_most_of_its_input(tiny_runs):
    (first, _), (second, lines) = tiny_runs[0]
    assert first["warnings"] == []
    kinds = {(w["kind"], w.get("stage"), w.get("source")) for w in second["warnings"]}
    assert ("stage_removed_most", "quality", None) in kinds
    assert ("source_lost_everything", "quality", "notes") in kinds
    assert any(line.startswith("warning: quality removed 11 of 12 documents") for line in lines), lines


def test_comparison_with_the_previous_run_names_what_changed(tiny_runs):
    (first, _), (second, _) = tiny_runs[0]
    assert first["comparison"] is None
    comparison = second["comparison"]
    assert comparison["previous_run_id"] == first["run_id"]
    quality = next(s for s in comparison["stages"] if s["stage"] == "quality")
    assert quality["docs_out"] == [12, 1]
    assert quality["params_changed"]["c4"] == [False, None]
    assert quality["reasons_changed"] and all(before == 0 for before, _ in quality["reasons_changed"].values())
    assert sum(now for _, now in quality["reasons_changed"].values()) == 11


def test_funnel_and_warnings_are_logged_to_mlflow(tiny_runs, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (first, _), (second, _) = tiny_runs[0]
    client = MlflowClient(tiny_runs[1])
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.data.tags["kiln.run_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {first["run_id"], second["run_id"]}
    logged = runs[second["run_id"]].data
    assert logged.metrics["funnel.quality.docs_in"] == 12 and logged.metrics["funnel.quality.docs_out"] == 1
    assert logged.metrics["source.notes.quality.docs_out"] == 0
    assert logged.metrics["warnings"] == 2
    assert sum(v for k, v in logged.metrics.items() if k.startswith("rejected.quality.quality_")) == 11
    assert "quality removed 11 of 12" in logged.tags["kiln.warnings"]
    artifacts = {a.path for a in client.list_artifacts(runs[second["run_id"]].info.run_id)}
    assert {"report.json", "report.html", "warnings.json"} <= artifacts


def test_report_settings_are_checked_when_the_config_loads(tmp_path):
    from shards.config import ConfigError

    base = {"output": str(tmp_path / "out"), "inputs": [{"path": __file__, "source": "x", "format": "text"}], "stages": []}
    with pytest.raises(ConfigError, match="config.report"):
        validate_pipeline_config({**base, "report": {"max_stage_removal": 1.5}})
    config, _ = validate_pipeline_config({**base, "report": False})
    assert config.report.enabled is False
