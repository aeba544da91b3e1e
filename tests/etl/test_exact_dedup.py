"""exact_dedup: normalised hashing, the keep rule, the kept_ids table, and incremental runs against the index."""
from __future__ import annotations

import pytest

from etl.stages.base import StageContext
from etl.stages.exact_dedup import INDEX_TABLE, ExactDedup, ExactDedupParams

SCHEMA = "id string, source string, text string, content_hash string, meta map<string,string>"


def _docs(spark, texts: dict[str, str]):
    return spark.createDataFrame([(i, "s", t, "h", None) for i, t in texts.items()], SCHEMA)


def _run(spark, tmp_path, texts: dict[str, str], **params):
    """(id -> detail for duplicates, None for kept; kept_ids rows as {id: kept_id})."""
    ctx = StageContext(spark, str(tmp_path / "out"), str(tmp_path / "state"), "run-1")
    result = ExactDedup(ExactDedupParams(**params)).run(_docs(spark, texts), ctx)
    rows = result.docs.collect()
    assert all((r["reason"] == "exact_duplicate") == (r["detail"] is not None) for r in rows)
    assert set(result.docs.columns) == {"id", "source", "text", "content_hash", "meta", "exact_dedup_hash", "reason", "detail"}
    kept_ids = {r["id"]: r["kept_id"] for r in result.tables["kept_ids"].collect()}
    result.docs.unpersist()
    return {r["id"]: r["detail"] for r in rows}, kept_ids


TEXTS = {
    "a3": "The same  words\tin a line.\n",
    "a1": "the same words in a line.",
    "a2": "THE SAME WORDS\u00a0IN A\u3000LINE.",
    "b1": "Another text, with punctuation!",
    "b2": "Another text with punctuation",
    "c1": "\uff26\uff55\uff4c\uff4c width",
    "c2": "Full width",
    "d1": "A unique document.",
    "e1": "\u00c9cole publique.",
    "e2": "\u00c9COLE PUBLIQUE.",
}


def test_default_normalisation_and_smallest_id(spark, tmp_path):
    outcome, kept_ids = _run(spark, tmp_path, TEXTS)
    assert outcome == {"a1": None, "a2": "a1", "a3": "a1", "b1": None, "b2": None, "c1": None, "c2": None, "d1": None,
                       "e1": None, "e2": "e1"}
    assert kept_ids == {"a1": "a1", "a2": "a1", "a3": "a1", "e1": "e1", "e2": "e1"}


def test_punctuation_nfkc_and_longest(spark, tmp_path):
    outcome, kept_ids = _run(spark, tmp_path, TEXTS, strip_punctuation=True, nfkc=True, keep="longest")
    # a3 is the longest original (extra whitespace counts); b1 is longer than b2; c1 and c2 tie on length.
    assert outcome == {"a1": "a3", "a2": "a3", "a3": None, "b1": None, "b2": "b1", "c1": None, "c2": "c1", "d1": None,
                       "e1": None, "e2": "e1"}
    assert kept_ids == {"a1": "a3", "a2": "a3", "a3": "a3", "b1": "b1", "b2": "b1", "c1": "c1", "c2": "c1",
                        "e1": "e1", "e2": "e1"}


def test_case_and_whitespace_can_be_kept_apart(spark, tmp_path):
    outcome, _ = _run(spark, tmp_path, {"x": "Some Text", "y": "some text", "z": "Some  Text", "w": "Some Text"},
                      lowercase=False, collapse_whitespace=False)
    assert outcome == {"w": None, "x": "w", "y": None, "z": None}


def test_incremental_runs_against_the_index(spark, tmp_path):
    from etl.delta import read_table

    ctx = StageContext(spark, str(tmp_path / "out"), str(tmp_path / "state"), "run-1")
    stage = ExactDedup(ExactDedupParams(incremental=True))

    def run(texts, run_id):
        ctx.run_id = run_id
        result = stage.run(_docs(spark, texts), ctx)
        outcome = {r["id"]: r["detail"] for r in result.docs.collect()}
        kept_ids = {r["id"]: r["kept_id"] for r in result.tables["kept_ids"].collect()}
        result.docs.unpersist()
        return outcome, kept_ids, result.metrics(result.docs)

    def index():
        return sorted(map(tuple, read_table(spark, str(tmp_path / "state" / INDEX_TABLE)).collect()))

    batch1 = {"p2": "first text.", "p1": "First  text.", "q1": "second text."}
    outcome, _, metrics = run(batch1, "run-1")
    assert outcome == {"p1": None, "p2": "p1", "q1": None}
    assert metrics["index_hashes"] == 2
    index_after_1 = index()

    # New batch: a copy of p1 (smaller id than p1, but p1 came first), an internal pair, a new text.
    batch2 = {"p0": "FIRST TEXT.", "r2": "third text.", "r1": "Third text.", "s1": "fourth text."}
    outcome, kept_ids, metrics = run(batch2, "run-2")
    assert outcome == {"p0": "p1", "r1": None, "r2": "r1", "s1": None}
    assert kept_ids == {"p0": "p1", "r1": "r1", "r2": "r1"}
    assert metrics == {"duplicates": 2, "duplicate_groups": 2, "index_hashes": 4}
    index_after_2 = index()
    assert set(index_after_1) < set(index_after_2)

    # Rerunning a batch keeps the same documents (those already indexed under their own id stay) and
    # leaves the index as it was.
    assert run(batch2, "run-3")[0] == outcome
    assert index() == index_after_2

    with pytest.raises(ValueError, match="built with normalisation"):
        ExactDedup(ExactDedupParams(incremental=True, lowercase=False)).run(_docs(spark, batch1), ctx)
