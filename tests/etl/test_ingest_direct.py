"""Ingest's direct path (etl.ingest_direct: the Python tasks write the tables, delta-rs commits them) against
its Spark path (etl.ingest), on a real local Spark + Delta: the same tables, row for row, and the same funnel."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

import etl.ingest_direct
import etl.pipeline
from etl.delta import read_table, table_properties
from etl.ingest_direct import writes_directly
from etl.load_config import validate_pipeline_config
from etl.devtools.web_pages import http_response, warc_record, write_warc
from etl.pipeline import run_pipeline
from tests.etl.test_ingest_warc import _write_crawl


def _write_inputs(root):
    """JSONL with every kind of bad line, an id in three files of different times and twice in one file,
    and text files: every rule of ingest has work to do."""
    (root / "in").mkdir()
    lines = [json.dumps({"doc_id": f"d{i}", "text": f"document {i}, é ü 中文", "url": f"http://x/{i}"}) for i in range(30)]
    lines += [
        '{"doc_id": "bad", "text": "unterminated',
        json.dumps({"doc_id": "n1", "text": None}),
        json.dumps({"doc_id": "e1", "text": "  "}),
        json.dumps({"doc_id": "big", "text": "x" * 3000}),
        json.dumps([1, 2]),
        json.dumps({"text": "no id"}),
        json.dumps({"doc_id": "d3", "text": "d3 again, later in the same file"}),
        json.dumps({"doc_id": "d7", "text": "d7, a third copy"}),
        '{"doc_id": "s1", "text": "lone \\ud800"}',
    ]
    (root / "in" / "a.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b'{"doc_id": "u1", "text": "\xff"}\n')
    (root / "in" / "newer.jsonl").write_text(json.dumps({"doc_id": "d7", "text": "d7 from the newest file"}) + "\n"
                                             + json.dumps({"doc_id": "new", "text": "only here"}) + "\n")
    (root / "in" / "older.jsonl").write_text(json.dumps({"doc_id": "d9", "text": "d9 from an older file"}) + "\n")
    os.utime(root / "in" / "a.jsonl", (1_700_000_000, 1_700_000_000))
    os.utime(root / "in" / "newer.jsonl", (1_800_000_000, 1_800_000_000))
    os.utime(root / "in" / "older.jsonl", (1_600_000_000, 1_600_000_000))
    (root / "txt").mkdir()
    (root / "txt" / "one.txt").write_text("a whole text file is one document")
    (root / "txt" / "bad.txt").write_bytes(b"\xc3\x28 invalid")


def _config(root, output, crawl: bool = False):
    """The inputs above; with `crawl`, also tests/etl/test_ingest_warc.py's crawl (skipped records, a
    URL crawled twice, rejected records)."""
    inputs = [
        {"path": str(root / "in" / "*"), "source": "web", "id_field": "doc_id", "keep_fields": ["url"]},
        {"path": str(root / "txt"), "source": "books", "format": "text"},
    ]
    if crawl:  # June's file listed twice, by two inputs: a tie on everything but the source
        inputs.append({"path": str(root / "crawl" / "*.warc*"), "source": "cc", "format": "warc"})
        inputs.append({"path": str(root / "crawl" / "june2.warc"), "source": "cc2", "format": "warc"})
    return validate_pipeline_config({"output": str(output), "max_doc_bytes": 1000, "report": False, "stages": [],
                                     "inputs": inputs})


def _tables(spark, output):
    ingest = read_table(spark, str(output / "ingest"))
    rejected = read_table(spark, str(output / "rejected"))
    return (sorted(map(tuple, ingest.select("id", "source", "text", "meta", "content_hash").collect())),
            sorted(map(tuple, rejected.select("id", "source", "stage", "reason", "detail", "text", "content_hash").collect())),
            ingest.schema, rejected.schema)


def _funnel(run):
    step = dataclasses.asdict(run.steps[0])
    step.pop("seconds")
    return step


def test_the_direct_path_writes_what_the_spark_path_writes(spark, tmp_path, monkeypatch):
    _write_inputs(tmp_path)
    pages = _write_crawl(tmp_path / "crawl")
    # June's page again, crawled at the same time, in a file of the same time: the later path wins.
    write_warc(str(tmp_path / "crawl" / "june2.warc"), [
        warc_record("response", http_response(pages[1].html.encode()), pages[1].url, "2024-06-01T08:00:00Z")])
    for name in ("june.warc", "june2.warc"):
        os.utime(tmp_path / "crawl" / name, (1_750_000_000, 1_750_000_000))
    config, stages = _config(tmp_path, tmp_path / "direct", crawl=True)
    assert writes_directly(spark, config, str(tmp_path / "direct" / "ingest"), str(tmp_path / "direct" / "rejected"))
    direct_run = run_pipeline(config, stages, spark, progress=lambda line: None)
    direct = _tables(spark, tmp_path / "direct")

    with monkeypatch.context() as patched:
        patched.setattr(etl.pipeline, "writes_directly", lambda *args: False)
        config, stages = _config(tmp_path, tmp_path / "spark", crawl=True)
        spark_run = run_pipeline(config, stages, spark, progress=lambda line: None)
    assert direct == _tables(spark, tmp_path / "spark")
    assert _funnel(direct_run) == _funnel(spark_run)
    assert direct_run.steps[0].metrics == {"skipped_metadata_records": 1, "skipped_request_records": 2,
                                           "skipped_warcinfo_records": 2}

    kept, rejected = direct[0], direct[1]
    assert {row[0]: row[2] for row in kept}["web/d7"] == "d7 from the newest file"
    assert {row[0]: row[2] for row in kept}["web/d3"] == "d3 again, later in the same file"
    reasons = {}
    for row in rejected:
        reasons[row[3]] = reasons.get(row[3], 0) + 1
    assert {row[0]: row[2] for row in kept}["web/d9"] == "document 9, é ü 中文"  # not the older file's
    assert "cc2/june2.warc:0" in {row[0] for row in kept}  # the later source's name wins the tie
    details = {row[0]: row[4] for row in rejected}
    assert details["cc/june2.warc:0"] == ("kept the newest crawl, 2024-06-01T08:00:00Z at cc2/june2.warc:0; "
                                          "this crawl is 2024-06-01T08:00:00Z at cc/june2.warc:0")
    assert details["cc/june.warc:0"] == ("kept the newest crawl, 2024-06-01T08:00:00Z at cc2/june2.warc:0; "
                                         "this crawl is 2024-06-01T08:00:00Z at cc/june.warc:0")
    assert reasons["duplicate_id"] == 4, rejected  # d3 and d9 once, d7 twice
    assert {"malformed_json", "missing_text", "empty_text", "too_large", "not_an_object", "missing_id",
            "invalid_unicode", "invalid_utf8", "duplicate_url", "not_html", "truncated_record"} <= set(reasons)
    for path in ("ingest", "rejected"):
        direct_properties = table_properties(spark, str(tmp_path / "direct" / path))
        spark_properties = table_properties(spark, str(tmp_path / "spark" / path))
        assert direct_properties.keys() == spark_properties.keys()
        assert {k: v for k, v in direct_properties.items() if k != "kiln.run_id"} == \
               {k: v for k, v in spark_properties.items() if k != "kiln.run_id"}


def test_the_direct_path_reruns_over_tables_spark_wrote(spark, tmp_path, monkeypatch):
    """An output the Spark path wrote (an earlier Kiln, or a run on a cluster) is rewritten by the direct
    path, and the other way round; each rerun leaves the same contents, and Spark's Delta reads each."""
    _write_inputs(tmp_path)
    config, stages = _config(tmp_path, tmp_path / "out")
    with monkeypatch.context() as patched:
        patched.setattr(etl.pipeline, "writes_directly", lambda *args: False)
        run_pipeline(config, stages, spark, progress=lambda line: None)
    first = _tables(spark, tmp_path / "out")
    spark.sql(f"ALTER TABLE delta.`{tmp_path / 'out' / 'ingest'}` SET TBLPROPERTIES ('team.owner' = 'data')")
    run_pipeline(config, stages, spark, progress=lambda line: None)
    assert _tables(spark, tmp_path / "out") == first
    assert table_properties(spark, str(tmp_path / "out" / "ingest"))["team.owner"] == "data"  # as Spark keeps it
    with monkeypatch.context() as patched:
        patched.setattr(etl.pipeline, "writes_directly", lambda *args: False)
        run_pipeline(config, stages, spark, progress=lambda line: None)
    assert _tables(spark, tmp_path / "out") == first
    history = spark.sql(f"DESCRIBE HISTORY delta.`{tmp_path / 'out' / 'ingest'}`").collect()
    assert len(history) >= 3


@pytest.mark.parametrize("input_format", ["parquet", "delta"])
def test_inputs_spark_reads_take_the_spark_path(spark, tmp_path, input_format):
    (tmp_path / "in" / "_delta_log").mkdir(parents=True)
    (tmp_path / "in" / f"part.{input_format}").write_bytes(b"")
    config, _ = validate_pipeline_config({
        "output": str(tmp_path / "out"), "stages": [], "report": False,
        "inputs": [{"path": str(tmp_path / "in"), "source": "x", "format": input_format, "id_field": "id"}],
    })
    assert not writes_directly(spark, config, str(tmp_path / "out" / "ingest"), str(tmp_path / "out" / "rejected"))


def test_a_table_spark_would_refuse_to_overwrite_takes_the_spark_path(spark, tmp_path):
    _write_inputs(tmp_path)
    config, _ = _config(tmp_path, tmp_path / "out")
    spark.sql(f"CREATE TABLE delta.`{tmp_path / 'out' / 'ingest'}` (id string) USING DELTA "
              "TBLPROPERTIES ('delta.appendOnly' = 'true')")
    assert not writes_directly(spark, config, str(tmp_path / "out" / "ingest"), str(tmp_path / "out" / "rejected"))


def test_a_failed_commit_leaves_no_file_behind(spark, tmp_path, monkeypatch):
    """Files no Delta log lists would outlive VACUUM and erasure: when a commit fails, the run's files go."""
    _write_inputs(tmp_path)
    config, stages = _config(tmp_path, tmp_path / "out")

    def disk_full(*args):
        raise OSError("disk full while committing")

    monkeypatch.setattr(etl.ingest_direct, "commit_files", disk_full)
    with pytest.raises(OSError, match="disk full"):
        run_pipeline(config, stages, spark, progress=lambda line: None)
    left = [path for path in (tmp_path / "out").rglob("*.parquet")]
    assert left == []


def test_a_commit_that_fails_after_its_log_entry_keeps_the_files_it_listed(spark, tmp_path, monkeypatch):
    """delta-rs runs its post-commit hooks (a checkpoint) after the log entry: an error there must not take the
    committed files with it, or the table could no longer be read; the files no log lists still go."""
    _write_inputs(tmp_path)
    config, stages = _config(tmp_path, tmp_path / "out")
    commit = etl.ingest_direct.commit_files

    def hook_fails(*args):
        commit(*args)
        raise OSError("checkpoint failed")

    monkeypatch.setattr(etl.ingest_direct, "commit_files", hook_fails)
    with pytest.raises(OSError, match="checkpoint failed"):
        run_pipeline(config, stages, spark, progress=lambda line: None)
    assert read_table(spark, str(tmp_path / "out" / "ingest")).select("text").collect()  # its files are all there
    assert list((tmp_path / "out" / "rejected").rglob("*.parquet")) == []  # its commit never came
