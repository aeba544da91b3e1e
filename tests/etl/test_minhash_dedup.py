"""The minhash_dedup stage on a real local Spark + Delta: quality, determinism, incremental runs, explain."""
from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from bench.minhash_corpus import core_scores, ground_truth, make_corpus
from etl.__main__ import main as etl_main
from etl.delta import read_table, table_version
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from etl.stages.base import StageContext
from etl.stages.minhash_dedup import MinHashDedup, MinHashDedupParams, connected_components

BATCHES = 3


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(360, seed=11)


@pytest.fixture(scope="module")
def docs(spark, corpus):
    """The corpus as stage input, with the batch each document arrives in."""
    rows = [(doc_id, text, i % BATCHES) for i, (doc_id, text) in enumerate(zip(corpus.ids, corpus.texts))]
    return spark.createDataFrame(rows, "id string, text string, batch int")


def _run(spark, docs, tmp_path, name, **params):
    ctx = StageContext(spark, str(tmp_path / name), str(tmp_path / name / "_state"), name)
    result = MinHashDedup(MinHashDedupParams(**params)).run(docs, ctx)
    annotated = {r["id"]: (r["reason"], r["detail"]) for r in result.docs.select("id", "reason", "detail").collect()}
    clusters = sorted(tuple(r) for r in result.tables["clusters"].select("id", "cluster_id", "kept_id").collect())
    return annotated, clusters


def _kept(annotated):
    return {doc_id for doc_id, (reason, _) in annotated.items() if reason is None}


# The incremental index keeps signatures, not texts: these runs verify pairs by estimated similarity.
SETTINGS = {"verify": "estimated", "priority_column": "batch"}


@pytest.fixture(scope="module")
def full_runs(spark, docs, tmp_path_factory):
    """One full run per input partitioning, keeping the earliest batch first; the 16-partition run finds
    its connected components in star rounds, the others on the driver."""
    tmp = tmp_path_factory.mktemp("full")
    return {n: _run(spark, docs.repartition(n), tmp, f"p{n}", **SETTINGS, driver_cc_max_pairs=0 if n == 16 else 500_000)
            for n in (1, 4, 16)}


def test_same_kept_set_whatever_the_partitioning(full_runs):
    kept = {n: _kept(annotated) for n, (annotated, _) in full_runs.items()}
    assert kept[1] == kept[4] == kept[16]
    assert full_runs[1][1] == full_runs[4][1] == full_runs[16][1]  # clusters table too
    removed = [doc for doc, (reason, _) in full_runs[1][0].items() if reason]
    assert removed and all(full_runs[1][0][d][0] == "near_duplicate" for d in removed)


def test_kept_document_follows_priority_then_id(full_runs, docs):
    batch_of = {r["id"]: r["batch"] for r in docs.select("id", "batch").collect()}
    _, clusters = full_runs[1]
    members: dict[str, list[str]] = {}
    for doc_id, cluster_id, kept_id in clusters:
        members.setdefault(cluster_id, []).append(doc_id)
        assert cluster_id == min(members[cluster_id] + [cluster_id])
    kept_of = {cluster_id: kept_id for _, cluster_id, kept_id in clusters}
    for cluster_id, ids in members.items():
        assert kept_of[cluster_id] == min(ids, key=lambda i: (batch_of[i], i))


def test_incremental_batches_match_one_full_run(spark, docs, full_runs, tmp_path):
    settings = SETTINGS
    kept, decisions = set(), {}
    for batch in range(BATCHES):  # the middle batch links to indexed clusters in star rounds, the others on the driver
        annotated, _ = _run(spark, docs.where(F.col("batch") == batch), tmp_path, "inc", incremental=True, **settings,
                            driver_cc_max_pairs=0 if batch == 1 else 500_000)
        kept |= _kept(annotated)
        decisions.update(annotated)
    assert kept == _kept(full_runs[4][0])

    # Re-running a batch replays its decisions and leaves the index as it was.
    index_path = str(tmp_path / "inc" / "_state" / "minhash_dedup" / "index")
    version = table_version(spark, index_path)
    rows = sorted(tuple(r) for r in read_table(spark, index_path).select("id", "cluster_id", "kept_id").collect())
    annotated, _ = _run(spark, docs.where(F.col("batch") == BATCHES - 1), tmp_path, "inc", incremental=True, **settings)
    assert annotated == {k: v for k, v in decisions.items() if k in annotated}
    assert table_version(spark, index_path) == version
    assert sorted(tuple(r) for r in read_table(spark, index_path).select("id", "cluster_id", "kept_id").collect()) == rows

    # The index refuses a run whose signatures would not be comparable.
    with pytest.raises(ValueError, match="differs in bands, num_perm, rows"):
        _run(spark, docs.limit(5), tmp_path, "inc", incremental=True, verify="estimated", num_perm=64)


def test_keep_rules_and_exact_verification(spark, tmp_path):
    base = " ".join(f"word{i} filler{i % 7}" for i in range(60))
    rows = [
        ("a", base, 0.2), ("b", base + " and a longer tail of words", 0.9), ("c", base.replace("word5 ", "w5 "), None),
        ("x", "completely different text " * 12, 0.5), ("y", "", 0.1),
    ]
    small = spark.createDataFrame(rows, "id string, text string, score double")
    longest, _ = _run(spark, small, tmp_path, "longest", keep="longest", verify="exact")
    assert _kept(longest) == {"b", "x", "y"} and longest["a"] == ("near_duplicate", "b")
    quality, clusters = _run(spark, small, tmp_path, "quality", keep="quality", quality_column="score", verify="none")
    assert _kept(quality) == {"b", "x", "y"}
    assert {c[0] for c in clusters} == {"a", "b", "c"}
    with pytest.raises(ValueError, match="quality_column: no column 'nope'"):
        _run(spark, small, tmp_path, "bad", keep="quality", quality_column="nope")


def test_connected_components_label_by_smallest_id(spark):
    edges = spark.createDataFrame(
        [("e", "d"), ("d", "c"), ("c", "b"), ("b", "a"), ("x", "y"), ("z", "y"), ("q", "q")], "a string, b string"
    )
    expected = {"a": "a", "b": "a", "c": "a", "d": "a", "e": "a", "x": "x", "y": "x", "z": "x"}
    found, rounds = connected_components(edges)
    assert dict(found.collect()) == expected and rounds >= 1
    for limit in (7, 6):  # 6 distinct pairs: on the driver at 6 and more, in rounds below
        found, rounds = connected_components(edges, driver_max_pairs=limit)
        assert dict(found.collect()) == expected and rounds == 0
    found, rounds = connected_components(edges, driver_max_pairs=5)
    assert dict(found.collect()) == expected and rounds >= 1
    found, rounds = connected_components(edges.where(F.col("a") == "q"), driver_max_pairs=5)  # no pair at all
    assert found.collect() == [] and found.dtypes == [("id", "string"), ("component", "string")]


def test_pipeline_run_macro_f1_and_dedup_explain(spark, corpus, tmp_path, capsys):
    """The stage with its defaults in a pipeline: high macro F1 against the exact ground truth."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"doc_id": i, "text": t}) + "\n" for i, t in zip(corpus.ids, corpus.texts)))
    config, stages = validate_pipeline_config({
        "output": str(tmp_path / "out"), "report": False,
        "inputs": [{"path": str(path), "source": "web", "id_field": "doc_id"}],
        "stages": [{"name": "minhash_dedup"}],
    })
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    step = run.steps[-1]
    assert step.rejected.get("near_duplicate", 0) > 0
    assert (step.metrics["bands"], step.metrics["rows"]) == (12, 10) and step.metrics["verified_pairs"] > 0
    clusters = read_table(spark, str(tmp_path / "out" / "minhash_dedup" / "clusters"))
    assert set(clusters.columns) == {"id", "cluster_id", "kept_id", "similarity"}
    cluster_of = {r["id"]: r["cluster_id"] for r in clusters.collect()}
    predicted = [cluster_of.get(f"web/{doc_id}", doc_id) for doc_id in corpus.ids]
    scores = core_scores(ground_truth(corpus.texts, 0.8), predicted)
    assert scores["macro_f1"] >= 0.93, scores

    removed = clusters.where("id != kept_id").orderBy("id").first()
    assert etl_main(["dedup-explain", str(tmp_path / "out"), removed["id"]]) == 0
    shown = capsys.readouterr().out
    assert f"kept:        {removed['kept_id']}" in shown and "removed as near-duplicate" in shown
    kept_text = read_table(spark, run.final_table).where(F.col("id") == removed["kept_id"]).first()["text"]
    assert kept_text.split()[0] in shown  # the matched text is printed
    assert etl_main(["dedup-explain", str(tmp_path / "out"), "web/not-a-document"]) == 1
