"""WARC and WET ingest on a real local Spark: records to documents, rejected records with reasons,
skipped records counted, boilerplate gone from the extracted text, the newest crawl of a URL kept;
then url_filter on them, and c4_badwords on documents with a language."""
from __future__ import annotations

from collections import Counter

import pytest
from pyspark.sql import functions as F

from etl.delta import read_table
from etl.devtools.fixtures import make_warc_fixture
from etl.devtools.web_pages import BOILERPLATE, http_response, make_pages, page_records, warc_record, write_warc
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from etl.web.warc import read_records

_LATIN1_PARAGRAPH = "<p>Le café crème de la brasserie à côté était déjà célèbre, même à l'étranger.</p>"


def _write_crawl(folder):
    """May's crawl (gzipped): pages, a PDF, a truncated page, pages in other charsets; June's
    (plain): a newer copy of one page; a WET file; and a WARC that ends inside its last record."""
    folder.mkdir()
    pages = make_pages(4)
    latin1 = pages[2].html.replace('<meta charset="utf-8">', "").replace("<article>", "<article>" + _LATIN1_PARAGRAPH)
    meta_latin1 = pages[3].html.replace('<meta charset="utf-8">', '<meta charset="iso-8859-1">').replace(
        "<article>", "<article>" + _LATIN1_PARAGRAPH)
    may = [warc_record("warcinfo", b"software: kiln-test\r\nformat: WARC File Format 1.0\r\n")]
    pages[0].html = pages[0].html.replace("<article>", "<article><p>What the fuck is text wrapping?</p>")
    may += page_records(pages[:2])
    may += [
        warc_record("response", http_response(latin1.encode("latin-1"), "text/html"), "https://latin1.example/a"),
        warc_record("response", http_response(meta_latin1.encode("latin-1"), "text/html"), "https://latin1.example/b"),
        warc_record("response", http_response(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n", "application/pdf"),
                    "https://files.example/report.pdf"),
        warc_record("response", http_response(pages[0].html.encode()[:4000]), "https://big.example/page",
                    headers={"WARC-Truncated": "length"}),
        warc_record("response", http_response(b"<html><body><p>caf\xe9 \xff\xfe broken</p></body></html>"),
                    "https://broken.example/"),
        warc_record("metadata", b"fetchTimeMs: 120\r\n", pages[0].url),
    ]
    write_warc(str(folder / "may.warc.gz"), may)
    june = [warc_record("response", http_response(pages[1].html.encode()), pages[1].url, "2024-06-01T08:00:00Z")]
    write_warc(str(folder / "june.warc"), june)
    cut = [warc_record("response", http_response(pages[3].html.encode()), "https://cut.example/", cut=500)]
    write_warc(str(folder / "cut.warc"), cut)
    wet = [warc_record("warcinfo", b"software: kiln-test\r\n"),
           warc_record("conversion", "Plain text from a WET file, with an accent: naïve.\n".encode(), "https://wet.example/")]
    write_warc(str(folder / "text.warc.wet.gz"), wet)
    return pages


def test_read_records_classifies_every_record(tmp_path):
    _write_crawl(tmp_path / "crawl")
    with open(tmp_path / "crawl" / "may.warc.gz", "rb") as handle:
        records = list(read_records(handle))
    assert [r.skipped for r in records if r.skipped] == ["warcinfo", "request", "request", "metadata"]
    reasons = {r.meta["url"]: (r.reason, r.detail) for r in records if not r.skipped}
    assert reasons["https://files.example/report.pdf"] == ("not_html", "application/pdf")
    assert reasons["https://big.example/page"] == ("truncated_record", "WARC-Truncated: length")
    assert reasons["https://broken.example/"][0] == "undecodable"
    latin1 = {r.meta["url"]: r for r in records if r.meta and "latin1" in r.meta["url"]}
    assert latin1["https://latin1.example/b"].meta["charset"] == "cp1252"  # the meta tag, as browsers read it (WHATWG)
    for record in latin1.values():
        assert record.reason is None and "Le café crème" in record.text


def test_warc_pipeline_accounts_for_every_record(spark, tmp_path):
    pages = _write_crawl(tmp_path / "crawl")
    (tmp_path / "blocked.txt").write_text("latin1.example\n")
    (tmp_path / "allowed.txt").write_text("https://latin1.example/b\n")
    config, stages = validate_pipeline_config({
        "output": str(tmp_path / "out"),
        "inputs": [{"path": str(tmp_path / "crawl" / "*.warc*"), "source": "cc", "format": "warc"}],
        "stages": [
            {"name": "url_filter", "params": {"domain_lists": [str(tmp_path / "blocked.txt")],
                                              "allow_lists": [str(tmp_path / "allowed.txt")]}},
        ],
        "report": False,
    })
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    all_rejected = [r.asDict() for r in read_table(spark, str(tmp_path / "out" / "rejected")).collect()]
    by_stage = {stage: {r["id"]: r for r in all_rejected if r["stage"] == stage}
                for stage in ("ingest", "url_filter")}
    assert by_stage["url_filter"]["cc/may.warc.gz:5"]["detail"] == "blocked.txt: latin1.example"  # /b is allowed
    assert {r["id"] for r in read_table(spark, run.final_table).collect()} == {
        "cc/may.warc.gz:2", "cc/may.warc.gz:6", "cc/june.warc:0", "cc/text.warc.wet.gz:1"}
    assert all(step.docs_in == step.docs_out + sum(step.rejected.values()) for step in run.steps)

    kept = {r["id"]: r for r in read_table(spark, str(tmp_path / "out" / "ingest")).collect()}
    rejected = by_stage["ingest"]
    step = run.steps[0]
    # Documents are the response and conversion records; the others are counted, not rejected.
    assert step.docs_in == len(kept) + len(rejected) == 10
    assert step.metrics == {"skipped_warcinfo_records": 2, "skipped_request_records": 2, "skipped_metadata_records": 1}
    assert {r["reason"] for r in rejected.values()} == {
        "not_html", "truncated_record", "undecodable", "duplicate_url"}
    assert rejected["cc/cut.warc:0"]["reason"] == "truncated_record"
    assert rejected["cc/may.warc.gz:4"]["reason"] == "duplicate_url"  # May's copy of pages[1]; June's is newer
    assert "2024-06-01T08:00:00Z at cc/june.warc:0" in rejected["cc/may.warc.gz:4"]["detail"]
    assert set(kept) == {"cc/may.warc.gz:2", "cc/may.warc.gz:5", "cc/may.warc.gz:6", "cc/june.warc:0",
                         "cc/text.warc.wet.gz:1"}
    june = kept["cc/june.warc:0"]
    assert june["meta"]["url"] == pages[1].url and june["meta"]["crawl_date"] == "2024-06-01T08:00:00Z"
    assert june["meta"]["content_type"] == "text/html"
    assert kept["cc/text.warc.wet.gz:1"]["text"] == "Plain text from a WET file, with an accent: naïve.\n"
    for doc in kept.values():
        assert not [b for b in BOILERPLATE if b in doc["text"]], doc["id"]
    # textwrap's docstring, main content (pydoc writes &nbsp; between its words).
    assert "Text wrapping and filling." in kept["cc/may.warc.gz:2"]["text"].replace("\xa0", " ")


def test_c4_badwords_stage_reads_each_document_language(spark):
    from etl.stages.base import StageContext
    from etl.stages.c4_badwords import C4BadWords, C4BadWordsParams

    rows = [("a", "What the fuck is this?", "en"), ("b", "Das ist scheiße.", "de"), ("c", "Das ist scheiße.", "en"),
            ("d", "What the fuck is this?", None), ("e", "What the fuck is this?", "und")]
    docs = spark.createDataFrame(rows, "id string, text string, language string").withColumn("content_hash", F.lit(""))
    stage = C4BadWords(C4BadWordsParams())
    result = stage.run(docs, StageContext(spark, "unused", "unused", "test")).docs
    verdicts = {r["id"]: (r["reason"], r["detail"]) for r in result.collect()}
    assert verdicts == {"a": ("c4_badwords", "en: 'fuck'"), "b": ("c4_badwords", "de: 'scheiße'"), "c": (None, None),
                        "d": ("c4_badwords", "en: 'fuck'"), "e": (None, None)}


def test_warc_inputs_refuse_id_field():
    from shards.config import ConfigError

    with pytest.raises(ConfigError, match="id_field and keep_fields do not apply"):
        validate_pipeline_config({"output": "out", "inputs": [{"path": "x", "source": "cc", "format": "warc",
                                                               "id_field": "url"}], "stages": []}, check_inputs=False)


def test_demo_warc_fixture_holds_what_its_truth_says(tmp_path):
    truth = make_warc_fixture(str(tmp_path))
    with open(truth.path, "rb") as handle:
        records = {f"crawl/crawl-00000.warc.gz:{r.index}": r for r in read_records(handle)}
    skipped = Counter(r.skipped for r in records.values() if r.skipped)
    assert skipped == truth.skipped and 30 <= len(records) <= 60  # a few dozen records
    for doc_id in truth.pages:
        assert records[doc_id].reason is None and not [b for b in BOILERPLATE if b in records[doc_id].text]
    for doc_id, reason in truth.rejected.items():
        # duplicate_url is ingest's rule across records: the record itself is a good, older page.
        assert records[doc_id].reason == (None if reason == "duplicate_url" else reason)
