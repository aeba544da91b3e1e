"""decontaminate: documents sharing a 13-word run with an evaluation set are removed (or flagged),
whatever the case and punctuation, and the report counts them per evaluation file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xxhash

from etl.delta import read_table
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from etl.stages.base import StageContext
from etl.stages.decontaminate import (Decontaminate, DecontaminateParams, load_eval_ngrams, match_counts,
                                      ngram_hashes, words)

QUESTION = ("Which piece of safety equipment is used to keep mold spores from entering the respiratory system "
            "of a student in the lab")
PROBLEM = {"task_id": "Kiln/0", "prompt": "def add(a, b):\n    \"\"\"Return the sum of a and b, two integers given by "
           "the caller of this small function.\"\"\"\n", "canonical_solution": "    return a + b\n",
           "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}
DOCS = {
    "copied_question": f"Some forum post. {QUESTION.upper()}? Nobody knew the answer.",
    "copied_code": "Here is my homework: def add(a, b): Return the sum of a and b, two integers given by the caller "
                   "of this small function. return a + b",
    "twelve_words": "which piece of safety equipment is used to keep mold spores from",
    "clean": "The weather was pleasant and the students went outside to play football after lunch.",
}


@pytest.fixture
def eval_files(tmp_path):
    arc = tmp_path / "arc_easy.jsonl"
    arc.write_text(json.dumps({"query": f"Question: {QUESTION}?", "choices": ["safety goggles", "breathing mask"],
                               "gold": 1}) + "\n" + json.dumps({"query": "Too short.", "choices": ["a"], "gold": 0}) + "\n")
    code = tmp_path / "humaneval.jsonl"
    code.write_text(json.dumps(PROBLEM) + "\n")
    return [str(arc), str(code)]


def test_ngram_hash_is_a_rolling_hash_of_word_hashes():
    tokens = words("The Quick brown-fox, jumps! over 3 lazy_dogs")
    assert tokens == ["the", "quick", "brown", "fox", "jumps", "over", "3", "lazy", "dogs"]
    hashes = ngram_hashes(tokens, 3)
    for i, value in enumerate(hashes):
        expected = 0
        for word in tokens[i:i + 3]:
            expected = (expected * 0x100000001B3 + xxhash.xxh3_64_intdigest(word)) % 2**64
        assert int(value) == expected
    assert len(ngram_hashes(tokens, 10)) == 0 and hashes.dtype == np.uint64


def test_matches_ignore_case_and_punctuation(eval_files):
    ngrams = load_eval_ngrams(eval_files, 13)
    assert ngrams.records == {"arc_easy.jsonl": 2, "humaneval.jsonl": 1}
    assert ngrams.too_short == {"arc_easy.jsonl": 1, "humaneval.jsonl": 0}
    hits, source = match_counts(DOCS["copied_question"], ngrams, 13)
    assert hits >= 8 and ngrams.labels[source] == "arc_easy.jsonl:1"
    assert match_counts(DOCS["copied_code"], ngrams, 13)[0] > 0
    assert match_counts(DOCS["twelve_words"], ngrams, 13) == (0, None)
    assert match_counts(DOCS["clean"], ngrams, 13) == (0, None)
    with pytest.raises(ValueError, match="eval_paths"):
        DecontaminateParams(eval_paths=[])


def test_pipeline_removes_contaminated_documents_and_reports_counts(spark, tmp_path, eval_files):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_text("".join(json.dumps({"doc_id": k, "text": v}) + "\n"
                                                        for k, v in DOCS.items()))
    config, stages = validate_pipeline_config({
        "output": str(tmp_path / "out"), "report": False,
        "inputs": [{"path": str(tmp_path / "in" / "*.jsonl"), "source": "web", "id_field": "doc_id"}],
        "stages": [{"name": "decontaminate", "params": {"eval_paths": eval_files}}],
    })
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    step = run.steps[-1]
    assert step.rejected == {"contaminated": 2}
    assert step.metrics["docs_contaminated"] == 2
    assert step.metrics["docs_contaminated_by_eval_file"] == {"arc_easy.jsonl": 1, "humaneval.jsonl": 1}
    assert step.metrics["eval_records_too_short"] == {"arc_easy.jsonl": 1, "humaneval.jsonl": 0}
    kept = read_table(spark, run.final_table).toPandas()
    assert sorted(kept["id"].str.split("/").str[-1]) == sorted(["twelve_words", "clean"]) or \
        sorted(kept["text"]) == sorted([DOCS["twelve_words"], DOCS["clean"]])
    rejected = spark.read.format("delta").load(str(tmp_path / "out" / "rejected")).toPandas()
    details = dict(zip(rejected["text"], rejected["detail"]))
    assert "first with arc_easy.jsonl:1" in details[DOCS["copied_question"]]
    assert "first with humaneval.jsonl:1" in details[DOCS["copied_code"]]


def test_flag_mode_keeps_documents(spark, eval_files):
    docs = spark.createDataFrame([(k, "web", v, "", {}) for k, v in DOCS.items()],
                                 "id string, source string, text string, content_hash string, meta map<string,string>")
    stage = Decontaminate(DecontaminateParams(eval_paths=eval_files, mode="flag"))
    result = stage.run(docs, StageContext(spark, "", "", "test"))
    rows = {r["id"]: r for r in result.docs.collect()}
    assert all(r["reason"] is None for r in rows.values())
    assert rows["copied_question"]["contamination_ngrams"] > 0 and rows["clean"]["contamination_ngrams"] == 0
    assert rows["copied_question"]["contamination_source"] == "arc_easy.jsonl:1"
    assert result.metrics(result.docs)["docs_contaminated"] == 2
