"""language -> pii -> toxicity -> tokenize -> shuffle_and_write in one real pipeline run: no planted
PII value survives anywhere downstream of `pii` (tables, logs, reports, MDS shards), raw and curated
zones are marked and kept apart, raw-zone tables are vacuumed, and no _delta_log holds document text."""
from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from etl.dataset.tokenizer import load_tokenizer
from etl.delta import ever_removed_files, read_table, write_table
from etl.devtools.pii_eval import generate
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from shards import MDSReader, read_manifest
from tests.etl.corpus import write_fixture_tokenizer

SALT_ENV = "KILN_TEST_PII_SALT"
REPEATED_EMAIL = "ann.lee@example.org"
SECRET = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
FILLER_MARK = "The shipment left the warehouse on Tuesday morning."


def _documents() -> tuple[list[dict], list[str], list[str], Counter]:
    """Input records, the PII values that reach the pii stage, those rejected before it (Italian),
    and how many values of each type reach the pii stage."""
    generated = generate(n_per_type=5, n_lookalike_docs=4, seed=3)
    records = [{"id": f"gen{i}", "text": FILLER_MARK + " " + d.text} for i, d in enumerate(generated)]
    planted = [v for d in generated for v in d.values()]
    expected = Counter(entity for d in generated for entity, _, _ in d.spans)
    expected.update({"EMAIL": 2 + 12 + 2, "SECRET": 1, "PHONE": 2})
    extra = [
        ("dup1", f"Please write to {REPEATED_EMAIL} about the invoice."),
        ("dup2", f"As agreed, {REPEATED_EMAIL} will host the next meeting."),
        ("secret", f"Thanks for setting up the build server. Our deploy token is {SECRET}, keep it safe."),
        ("dump", "Here is the list of contacts for the club: " + " ".join(f"member{i}@example.com" for i in range(12))),
        ("toxic1", "You are a pathetic idiot and a liar, call me at (415) 555-0187 if you dare."),
        ("toxic2", "Shut up, you moron. Everyone knows your address is olga.ivanova@posteo.de."),
        ("de1", "Bitte rufen Sie uns unter +49 30 12345678 an, wir helfen gern weiter."),
        ("de_toxic", "Halt die Fresse, du Vollidiot, schreib mir nie wieder an kurt.meier@example.de."),
    ]
    records += [{"id": i, "text": t} for i, t in extra]
    planted += [REPEATED_EMAIL, SECRET, "(415) 555-0187", "olga.ivanova@posteo.de", "+49 30 12345678",
                "kurt.meier@example.de"] + [f"member{i}@example.com" for i in range(12)]
    italian = [
        ("it1", "Per informazioni scrivete a giulia.rossi@example.it oppure chiamate il numero +39 06 6982 1234."),
        ("it2", "Il pagamento va fatto sul conto IT60X0542811101000000123456 entro la fine del mese."),
    ]
    records += [{"id": i, "text": t} for i, t in italian]
    raw_only = ["giulia.rossi@example.it", "IT60X0542811101000000123456"]
    return records, planted, raw_only, expected


@pytest.fixture(scope="module")
def pipeline_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("pii_pipeline")
    records, planted, raw_only, expected = _documents()
    (root / "in").mkdir()
    (root / "in" / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    os.environ[SALT_ENV] = "pipeline-test-salt-0123456789"
    tokenizer = write_fixture_tokenizer(root / "tok")
    config, stages = validate_pipeline_config({
        "output": str(root / "out"),
        "inputs": [{"path": str(root / "in" / "*.jsonl"), "source": "web", "id_field": "id"}],
        "raw_zone_retention_hours": 0,
        "stages": [
            {"name": "language", "params": {"allowed": ["en", "de"]}},
            {"name": "pii", "params": {"actions": {"EMAIL": "hash", "PHONE": "mask", "SECRET": "drop"},
                                       "max_density": 0.4, "hash_salt_env": SALT_ENV}},
            {"name": "toxicity", "params": {"max_score": 0.3}},
            # Padded tails: every token of every document reaches the shards, so all of it is searched.
            {"name": "tokenize", "params": {"tokenizer": tokenizer, "seq_len": 128, "num_buckets": 2,
                                            "val_fraction": 0.2, "tail": "pad"}},
            {"name": "shuffle_and_write", "params": {"size_limit": 20_000, "report_window": 4}},
        ],
    })
    # Tables an earlier run left: raw-zone ones must lose these files to VACUUM, curated ones keep them.
    for name in ("ingest", "language", "pii"):
        write_table(spark.createDataFrame([("old", "an earlier run's text")], "id string, text string"), str(root / "out" / name))
    lines: list[str] = []
    handler = _ListHandler()
    logging.getLogger().addHandler(handler)
    try:
        run = run_pipeline(config, stages, spark, progress=lines.append)
    finally:
        logging.getLogger().removeHandler(handler)
        del os.environ[SALT_ENV]
    return {"root": root, "out": root / "out", "run": run, "planted": planted, "raw_only": raw_only,
            "expected_counts": expected, "log": lines + handler.messages, "tokenizer": tokenizer,
            "dataset": run.steps[-1].metrics["dataset"]}


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(self.format(record))


def _table_strings(spark, path: Path) -> list[str]:
    """Every row of a Delta table as one JSON string (all columns, including meta and detail)."""
    df = read_table(spark, str(path))
    return [r[0] for r in df.select(F.to_json(F.struct(*df.columns))).collect()]


def _files_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.rglob("*")) if p.is_file())


# Every table from `pii` on, with the extra tables `tokenize` writes beside its own.
CURATED_TABLES = ("pii", "toxicity", "tokenize", "tokenize/samples", "tokenize/provenance", "tokenize/buckets",
                  "tokenize/info", "shuffle_and_write", "rejected_curated", "report/funnel")


def test_no_planted_value_downstream_of_pii(spark, pipeline_run):
    out = pipeline_run["out"]
    haystacks = {name: "\n".join(_table_strings(spark, out / name)) for name in CURATED_TABLES}
    for name in CURATED_TABLES:
        haystacks[f"{name}/_delta_log"] = _files_text(out / name / "_delta_log")
    # Every file of the run report and of the dataset: shards, index.json, manifest, shuffle report.
    haystacks["report"] = _files_text(out / "report")
    haystacks["dataset"] = _files_text(out / "dataset")
    haystacks["logs"] = "\n".join(pipeline_run["log"])
    leaks = [(where, value) for value in pipeline_run["planted"] for where, text in haystacks.items() if value in text]
    assert leaks == []
    # The rejected rows of later stages are there, and redacted.
    curated_rejects = read_table(spark, str(out / "rejected_curated")).collect()
    assert {r["stage"] for r in curated_rejects} == {"pii", "toxicity"}
    assert all("<" in r["text"] or "*" in r["text"] for r in curated_rejects if r["stage"] == "pii")


def _documents_in_shards(dataset: str, eos: int, tokenizer) -> list[str]:
    """The documents as the shards hold them: each bucket's samples in packing order, concatenated,
    cut at EOS and decoded (the padded tail decodes to nothing)."""
    texts = []
    for split in read_manifest(dataset).splits:
        samples = sorted((int(s["bucket"]), int(s["bucket_index"]), s["tokens"].tolist())
                         for s in MDSReader(f"{dataset}/{split}"))
        for bucket in sorted({b for b, _, _ in samples}):
            stream = [t for b, _, tokens in samples if b == bucket for t in tokens]
            ends = [i for i, t in enumerate(stream) if t == eos]
            texts += [tokenizer.decode(stream[a + 1:b]) for a, b in zip([-1] + ends, ends)]
    return texts


def test_shards_hold_the_redacted_documents_and_no_planted_value(spark, pipeline_run):
    """Decoded, the shards hold exactly the final table's texts, so searching them sees every
    document; no planted value is in them. The raw shard bytes hold no planted value's token ids
    either (as tokenised alone and after a space: how it reads at the start of a text or a word)."""
    loaded = load_tokenizer(pipeline_run["tokenizer"])
    tokenizer, eos = loaded.tokenizer, loaded.token_id("<|endoftext|>", "eos")
    decoded = _documents_in_shards(pipeline_run["dataset"], eos, tokenizer)
    final = [r["text"] for r in read_table(spark, str(pipeline_run["out"] / "shuffle_and_write")).select("text").collect()]
    assert Counter(decoded) == Counter(final)
    assert [v for v in pipeline_run["planted"] if any(v in text for text in decoded)] == []

    shards = [p.read_bytes() for p in Path(pipeline_run["dataset"]).rglob("*.mds")]
    dtype = np.dtype(read_manifest(pipeline_run["dataset"]).extra["columns"]["tokens"].split(":")[1])

    def token_bytes(text: str) -> bytes:
        return np.array(tokenizer.encode(text, add_special_tokens=False).ids, dtype).tobytes()

    assert any(token_bytes(FILLER_MARK) in shard for shard in shards)  # the search does find what is there
    leaks = [v for v in pipeline_run["planted"] for variant in (v, " " + v) if any(token_bytes(variant) in shard for shard in shards)]
    assert leaks == []


def test_actions_and_metrics(spark, pipeline_run):
    out = pipeline_run["out"]
    kept = {r["id"]: r for r in read_table(spark, str(out / "pii")).collect()}
    tokens = [re.search(r"<EMAIL:[0-9a-f]{16}>", kept[f"web/{i}"]["text"]).group() for i in ("dup1", "dup2")]
    assert tokens[0] == tokens[1]  # the salted hash is stable across documents
    assert "*" * len("+49 30 12345678") in kept["web/de1"]["text"]
    rejected = {r["id"]: r for r in read_table(spark, str(out / "rejected_curated")).collect()}
    assert (rejected["web/secret"]["reason"], rejected["web/secret"]["detail"]) == ("pii", "contains SECRET")
    assert rejected["web/secret"]["text"].endswith("Our deploy token is <SECRET>, keep it safe.")
    assert rejected["web/dump"]["reason"] == "pii_density"
    assert {rejected[f"web/{i}"]["reason"] for i in ("toxic1", "toxic2", "de_toxic")} == {"toxic"}
    assert kept["web/de1"]["content_hash"] != rejected["web/secret"]["content_hash"]

    step = next(s for s in json.loads((out / "report" / "funnel.json").read_text())["steps"] if s["stage"] == "pii")
    metrics = step["metrics"]
    assert metrics["entities"]["EMAIL"]["action"] == "hash" and metrics["entities"]["PHONE"]["action"] == "mask"
    assert metrics["entities"]["SECRET"]["action"] == "drop" and metrics["entities"]["IBAN"]["action"] == "redact"
    assert {e: v["count"] for e, v in metrics["entities"].items()} == dict(pipeline_run["expected_counts"])
    rejected_at_pii = [r for r in rejected.values() if r["stage"] == "pii"]
    assert metrics["documents_with_pii"] == len([r for r in kept.values() if r["pii_entities"]]) + len(rejected_at_pii)
    assert sum(metrics["by_action"].values()) == sum(pipeline_run["expected_counts"].values())


def test_every_document_carries_language_and_toxicity(spark, pipeline_run):
    final = read_table(spark, str(pipeline_run["out"] / "toxicity"))
    assert final.filter("language is null or language_score is null or toxicity is null").count() == 0
    assert {r["language"] for r in final.select("language").distinct().collect()} <= {"en", "de"}


def test_zones_are_marked_and_raw_rejects_stay_in_the_raw_zone(spark, pipeline_run):
    out = pipeline_run["out"]

    def zone(name):
        props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{out / name}`").collect()}
        return props.get("kiln.zone")

    assert [zone(n) for n in ("ingest", "language", "rejected")] == ["raw"] * 3
    assert [zone(n) for n in ("pii", "toxicity", "tokenize", "shuffle_and_write", "rejected_curated")] == ["curated"] * 5
    raw_rejects = read_table(spark, str(out / "rejected")).collect()
    assert {r["stage"] for r in raw_rejects} == {"language"}
    assert any(pipeline_run["raw_only"][0] in r["text"] for r in raw_rejects)  # raw text stays raw, in its zone
    curated = "\n".join(_table_strings(spark, out / "rejected_curated"))
    assert all(value not in curated for value in pipeline_run["raw_only"])


def test_no_delta_log_holds_document_text(pipeline_run):
    logs = [p for p in pipeline_run["out"].rglob("_delta_log") if p.is_dir()]
    assert len(logs) >= 7
    text = "\n".join(_files_text(p) for p in logs)
    assert FILLER_MARK not in text and "pathetic idiot" not in text
    assert all(value not in text for value in pipeline_run["planted"] + pipeline_run["raw_only"])
    assert "minValues" not in text  # statistics are row counts only


def _old_rows(spark, table: Path) -> int:
    """Rows in the table's data files that its current version no longer references."""
    import pyarrow.parquet as pq

    current = {Path(p.removeprefix("file:")).name for p in read_table(spark, str(table)).inputFiles()}
    return sum(pq.read_metadata(p).num_rows for p in table.rglob("*.parquet")
               if "_delta_log" not in p.parts and p.name not in current)


def test_raw_zone_keeps_no_overwritten_files(spark, pipeline_run):
    """The run overwrote what an earlier run left; VACUUM LITE removed the old raw-zone files only.
    (Empty files Delta never logged may stay: they hold no rows.)"""
    out = pipeline_run["out"]
    for name in ("ingest", "language", "rejected"):
        assert _old_rows(spark, out / name) == 0, name
        props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{out / name}`").collect()}
        assert props["delta.deletedFileRetentionDuration"] == "interval 0 hours"
    assert _old_rows(spark, out / "pii") == 1  # the curated zone is not vacuumed


def test_vacuum_runs_only_where_a_commit_removed_files(spark, pipeline_run):
    """A table the run itself created (rejected) has no removed file for VACUUM to delete: it is not
    vacuumed. An overwritten one (ingest) is."""
    out = pipeline_run["out"]
    operations = {name: [r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{out / name}`").collect()]
                  for name in ("ingest", "rejected")}
    assert "VACUUM END" in operations["ingest"], operations
    assert not any(op.startswith("VACUUM") for op in operations["rejected"]), operations
    assert ever_removed_files(spark, str(out / "ingest")) and not ever_removed_files(spark, str(out / "rejected"))
