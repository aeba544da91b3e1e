"""Ingest and the pipeline's accounting, on a real local Spark + Delta."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest
import zstandard
from pyspark.sql import functions as F

from etl.delta import read_table
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from etl.stages.base import Stage, StageResult
from shards.provenance import arrow_dataset


def _write_inputs(tmp_path):
    good = [{"doc_id": f"d{i}", "text": f"document number {i} with some words", "url": f"http://x/{i}"} for i in range(20)]
    lines = [json.dumps(r) for r in good]
    lines += [
        '{"doc_id": "bad1", "text": "unterminated',          # malformed JSON
        json.dumps({"doc_id": "n1", "text": None}),           # null text
        json.dumps({"doc_id": "e1", "text": "   "}),          # empty text
        json.dumps({"doc_id": "big", "text": "x" * 5000}),    # over max_doc_bytes
        json.dumps({"doc_id": "t1", "text": 42}),             # not a string
        json.dumps([1, 2, 3]),                                # not an object
        json.dumps({"text": "no id here"}),                   # missing id
        json.dumps({"doc_id": "d3", "text": "a repeated id"}),  # duplicate id
        '{"doc_id": "s1", "text": "lone surrogate \\ud800 here"}',  # decodes to an unencodable string
    ]
    raw = ("\n".join(lines) + "\n").encode()
    raw += b'{"doc_id": "u1", "text": "bad \xff\xfe bytes"}\n'  # invalid UTF-8
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(raw)
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"doc_id": "g1", "text": "from a gzip file"}) + "\n")
    (tmp_path / "in" / "c.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress((json.dumps({"doc_id": "z1", "text": "from a zstd file"}) + "\n").encode())
    )
    for suffix, module in ((".bz2", bz2), (".xz", lzma)):
        (tmp_path / "in" / f"d.jsonl{suffix}").write_bytes(
            module.compress((json.dumps({"doc_id": f"c{suffix[1:]}", "text": f"from a {suffix} file"}) + "\n").encode()))
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "one.txt").write_text("a whole text file is one document")
    (tmp_path / "txt" / "two.txt").write_bytes(b"\xc3\x28 invalid")


def _config(tmp_path, **extra):
    data = {
        "output": str(tmp_path / "out"),
        "max_doc_bytes": 1000,
        "inputs": [
            {"path": str(tmp_path / "in" / "*"), "source": "web", "id_field": "doc_id", "keep_fields": ["url"]},
            {"path": str(tmp_path / "txt"), "source": "books", "format": "text"},
        ],
        "stages": [],
        "report": False,
    }
    data.update(extra)
    return validate_pipeline_config(data)


def test_ingest_rejects_bad_input_with_reasons(spark, tmp_path):
    _write_inputs(tmp_path)
    config, stages = _config(tmp_path)
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    kept = read_table(spark, run.final_table)
    rejected = read_table(spark, str(tmp_path / "out" / "rejected"))
    reasons = {r["reason"] for r in rejected.collect()}
    assert reasons == {
        "malformed_json", "missing_text", "empty_text", "too_large", "text_not_string",
        "not_an_object", "missing_id", "duplicate_id", "invalid_utf8", "invalid_unicode",
    }
    assert kept.count() == 20 + 4 + 1
    read = run.steps[0].docs_in
    assert read == kept.count() + rejected.count() == 20 + 10 + 4 + 2
    ids = {r["id"] for r in kept.collect()}
    assert {"web/d0", "web/g1", "web/z1", "web/cbz2", "web/cxz", "books/one.txt"} <= ids
    row = kept.filter("id = 'web/d1'").collect()[0]
    assert row["meta"] == {"url": "http://x/1"} and len(row["content_hash"]) == 40


def test_a_damaged_compressed_file_is_one_rejected_row_naming_it(spark, tmp_path):
    """A download cut short, or bytes that are not the format its suffix says: the file is one
    `unreadable_file` row, and the other files' documents are read."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.jsonl").write_text(json.dumps({"doc_id": "ok", "text": "a readable document"}) + "\n")
    packed = lzma.compress("".join(json.dumps({"doc_id": f"x{i}", "text": "words " * 50}) + "\n" for i in range(50)).encode())
    (tmp_path / "in" / "cut.jsonl.xz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "in" / "not.jsonl.xz").write_bytes(b"plain text, not xz")
    (tmp_path / "in" / "not.jsonl.zst").write_bytes(b"plain text, not zstd")
    config, stages = _config(tmp_path, inputs=[{"path": str(tmp_path / "in" / "*"), "source": "web", "id_field": "doc_id"}])
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    rejected = {r["id"]: (r["reason"], r["detail"]) for r in read_table(spark, str(tmp_path / "out" / "rejected")).collect()}
    assert {i for i, (reason, _) in rejected.items() if reason == "unreadable_file"} == {
        "web/cut.jsonl.xz", "web/not.jsonl.xz", "web/not.jsonl.zst"}, rejected
    assert rejected["web/not.jsonl.xz"][1].startswith("LZMAError") and rejected["web/not.jsonl.zst"][1].startswith("ZstdError")
    kept = {r["id"] for r in read_table(spark, run.final_table).collect()}
    assert "web/ok" in kept and kept <= {"web/ok"} | {f"web/x{i}" for i in range(50)}  # lines before the cut are read


def test_rerun_leaves_identical_contents(spark, tmp_path):
    _write_inputs(tmp_path)
    config, stages = _config(tmp_path)
    run_pipeline(config, stages, spark, progress=lambda line: None)
    first = sorted(map(tuple, read_table(spark, str(tmp_path / "out" / "ingest")).select("id", "content_hash").collect()))
    first_rej = read_table(spark, str(tmp_path / "out" / "rejected")).count()
    run_pipeline(config, stages, spark, progress=lambda line: None)
    second = sorted(map(tuple, read_table(spark, str(tmp_path / "out" / "ingest")).select("id", "content_hash").collect()))
    assert first == second
    assert read_table(spark, str(tmp_path / "out" / "rejected")).count() == first_rej


def test_delta_tables_read_back_with_deltalake(spark, tmp_path):
    deltalake = pytest.importorskip("deltalake")
    _write_inputs(tmp_path)
    config, stages = _config(tmp_path)
    run_pipeline(config, stages, spark, progress=lambda line: None)
    table = arrow_dataset(deltalake.DeltaTable(str(tmp_path / "out" / "ingest"))).to_table()
    assert table.num_rows == read_table(spark, str(tmp_path / "out" / "ingest")).count()
    assert set(table.column_names) >= {"id", "source", "text", "content_hash"}


def test_pipeline_reads_and_writes_s3(spark, tmp_path, s3_prefix):
    """Inputs and Delta outputs on the local S3 server, through s3a://."""
    import fsspec

    _write_inputs(tmp_path)
    fs = fsspec.filesystem("s3")
    fs.put(str(tmp_path / "in" / "a.jsonl"), f"{s3_prefix}/in/a.jsonl")
    config, stages = validate_pipeline_config({
        "output": s3_prefix.replace("s3://", "s3a://") + "/out",
        "max_doc_bytes": 1000,
        "inputs": [{"path": f"{s3_prefix}/in/*.jsonl", "source": "web", "id_field": "doc_id"}],
        "stages": [],
        "report": True,
    })
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    assert read_table(spark, run.final_table).count() == 20
    assert fs.exists(f"{s3_prefix}/out/report/report.html")


class _TwoBrokenOutputs(Stage):
    """Keeps every document, but the extra table it hands the pipeline fails as it is written, and so does its metrics."""

    name = "fix_encoding"

    def run(self, docs, ctx):
        broken = docs.select("id", F.raise_error(F.lit("disk full while writing the extra table")).cast("string").alias("x"))

        def metrics(annotated):
            raise ValueError("the metrics could not be counted")

        return StageResult(docs.withColumn("reason", F.lit(None).cast("string")), tables={"extra": broken}, metrics=metrics)


def test_every_failed_write_of_a_step_is_said(spark, tmp_path):
    """A step's writes run side by side: the first failure is raised, and the others are named in its notes."""
    _write_inputs(tmp_path)
    config, _ = _config(tmp_path)
    with pytest.raises(Exception) as raised:
        run_pipeline(config, [_TwoBrokenOutputs(None)], spark, progress=lambda line: None)
    said = str(raised.value) + "\n".join(getattr(raised.value, "__notes__", []))
    assert "disk full while writing the extra table" in said and "the metrics could not be counted" in said, said
    assert "another of its writes failed too" in said
