"""Erasure on a real local Spark + Delta: after `etl erase`, the erased documents' text is in no file
under the output (tables and their logs, indices, reports, the new dataset version's shards),
except the old dataset versions the report lists, and --retire-versions removes those too."""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import pyarrow.parquet as pq

from etl.__main__ import main
from etl.delta import append_rows, ever_removed_files, read_table, set_properties, vacuum, write_table
from etl.erase import RETENTION_CHECK, ErasureError, _retention_check_off, _vacuum
from etl.refresh import refresh
from etl.dataset.tokenizer import load_tokenizer
from etl.load_config import load_pipeline_config
from shards import MDSReader, list_versions, version_path
from tests.etl.corpus import dataset_ids, ids_of, make_corpus, write_config, write_jsonl

MARKERS = ("zqxmarkerone", "zqxmarkertwo", "zqxmarkerthree")


def _decoded(tokenizer, token_bytes: list[bytes]) -> str:
    return tokenizer.decode(np.frombuffer(b"".join(token_bytes), "<u2").tolist())


def _parquet_text(path: Path, tokenizer) -> str:
    """Every value of a parquet file as text; token columns decoded, as one stream so that nothing
    split across two samples escapes."""
    table = pq.read_table(path)
    return "\n".join(
        _decoded(tokenizer, table.column(field.name).to_pylist()) if field.name == "tokens" and pa.types.is_binary(field.type)
        else json.dumps(table.column(field.name).to_pylist(), default=str)
        for field in table.schema
    )


def _mds_text(split_dir: Path, tokenizer) -> str:
    """An MDS split's samples decoded, each bucket's samples in order as one token stream."""
    streams = defaultdict(list)
    for sample in sorted(MDSReader(str(split_dir)), key=lambda s: (int(s["bucket"]), int(s["bucket_index"]))):
        streams[int(sample["bucket"])].append(sample["tokens"].tobytes())
    return "\n".join(_decoded(tokenizer, parts) for parts in streams.values())


def marker_hits(root: Path, tokenizer) -> dict[str, set[str]]:
    """Where each marker appears under root: files (parquet values read, token columns decoded;
    everything else as bytes), and MDS split folders (their shards decoded)."""
    hits = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir() or path.suffix == ".mds":
            continue
        if path.suffix == ".parquet":
            text = _parquet_text(path, tokenizer)
        elif path.name == "index.json" and any(path.parent.glob("*.mds")):
            path, text = path.parent, _mds_text(path.parent, tokenizer)
        else:
            text = path.read_bytes().decode("utf-8", "replace")
        found = {m for m in MARKERS if m in text}
        if found:
            hits[str(path)] = found
    return hits


def test_erased_text_is_gone_except_from_the_old_versions_listed(spark, tmp_path, capsys):
    docs = make_corpus(n1=100).batch1
    for doc, marker in zip(docs, MARKERS):
        doc["text"] = doc["text"].replace(" ", f" {marker} ", 1)
    copy = {"id": "copy", "text": docs[2]["text"]}  # rejected as an exact duplicate; erased by content hash
    write_jsonl(tmp_path / "in" / "batch1.jsonl", docs + [copy])
    config_path = write_config(tmp_path, [d["text"] for d in docs])
    config, stages = load_pipeline_config(config_path)
    refresh(config, stages, spark, progress=lambda line: None)
    out, dataset = tmp_path / "out", tmp_path / "out" / "dataset"
    tokenizer = load_tokenizer(str(tmp_path / "tok")).tokenizer

    before = marker_hits(out, tokenizer)  # the search finds them where they are
    assert set().union(*(m for p, m in before.items() if p.startswith(str(dataset / "v=1")))) == set(MARKERS)
    assert any("/cumulative/" in p for p in before) and any("/tokenize/samples/" in p for p in before)
    assert any("/rejected/" in p and MARKERS[2] in m for p, m in before.items())

    request = tmp_path / "takedown.txt"
    content_hash = hashlib.sha1(docs[2]["text"].encode()).hexdigest()
    request.write_text(f"web/{docs[0]['id']}\nweb/{docs[1]['id']}\n{content_hash}\n\nweb/never-there\n")
    retention_check = spark.conf.get(RETENTION_CHECK, None)
    assert main(["erase", config_path, "--ids", str(request)]) == 0
    printed = capsys.readouterr()
    assert not any(m in printed.out + printed.err for m in MARKERS)
    assert "1 not found" in printed.out and "v=1 (3 documents)" in printed.out
    assert spark.conf.get(RETENTION_CHECK, None) == retention_check

    [report_file] = (out / "report").glob("erasure-*.json")
    report = json.loads(report_file.read_text())
    assert report["documents"] == 4 and report["not_found"] == ["web/never-there"]
    assert report["versions_holding"] == {"1": 3} and report["new_version"] == 2 and report["retired"] == []
    erased = {f"web/{d['id']}" for d in docs[:3]} | {"web/copy"}
    for table in ("cumulative", "ingest", "minhash_dedup", "exact_dedup/kept_ids", "_state/minhash_dedup/index"):
        assert not ids_of(spark, f"{out}/{table}") & erased, table
    assert not ids_of(spark, f"{out}/_state/exact_dedup_index", column="kept_id") & erased
    assert dataset_ids(spark, version_path(str(dataset), 2)) == {f"web/{d['id']}" for d in docs} - erased

    hits = marker_hits(out, tokenizer)
    assert set().union(*hits.values()) == set(MARKERS)  # still in v=1, which the report lists ...
    assert all(p.startswith(str(dataset / "v=1")) for p in hits), sorted(hits)  # ... and nowhere else

    # The same request again, retiring the listed versions: now nothing holds the text.
    assert main(["erase", config_path, "--ids", str(request), "--retire-versions"]) == 0
    assert "retired dataset versions: v=1" in capsys.readouterr().out
    assert list_versions(str(dataset)) == [2]
    assert marker_hits(out, tokenizer) == {}


def test_a_malformed_request_is_an_error(tmp_path, capsys):
    config_path = write_config(tmp_path, ["one two three four five six"])
    request = tmp_path / "request.txt"
    request.write_text("web/1\nnot an id\n")
    assert main(["erase", config_path, "--ids", str(request)]) == 1
    assert "request.txt:2: neither a document id" in capsys.readouterr().err


def test_a_table_that_never_dropped_a_file_is_passed_over_until_its_log_is_cleaned_up(spark, tmp_path):
    """Nothing to delete, so no VACUUM (and no record of one). Once log cleanup has dropped its first
    commits, whether a file was dropped cannot be told, and LITE has no earlier VACUUM to start from:
    the table is vacuumed FULL, its rows intact."""
    table = str(tmp_path / "t")
    write_table(spark.createDataFrame([("web/0", "text 0")], "id string, text string"), table)
    set_properties(spark, table, {"delta.checkpointInterval": "1"})
    append_rows(spark.createDataFrame([("web/1", "text 1")], "id string, text string"), table)
    assert not ever_removed_files(spark, table) and not vacuum(spark, table, 0, [])
    for commit in ("00000000000000000000.json", "00000000000000000001.json"):  # what log cleanup does
        (tmp_path / "t" / "_delta_log" / commit).unlink()
    assert ever_removed_files(spark, table)
    with _retention_check_off(spark):
        assert vacuum(spark, table, 0, [])
    assert sorted(r["text"] for r in read_table(spark, table).collect()) == ["text 0", "text 1"]


def test_vacuum_finds_what_a_cleaned_up_log_forgot(spark, tmp_path):
    """Log cleanup drops the commits that removed old files; VACUUM LITE then cannot find them. A table
    with nothing nested in it falls back to FULL; one with nested tables is an error saying why."""
    table = str(tmp_path / "t")
    for n in range(3):
        write_table(spark.createDataFrame([(f"web/{n}", f"text {n}")], "id string, text string").coalesce(1), table)
        if n == 0:
            set_properties(spark, table, {"delta.checkpointInterval": "1"})
    for commit in ("00000000000000000000.json", "00000000000000000001.json"):  # what log cleanup does
        (tmp_path / "t" / "_delta_log" / commit).unlink()
    assert len(list((tmp_path / "t").glob("*.parquet"))) == 3
    with _retention_check_off(spark):
        with pytest.raises(ErasureError, match="only VACUUM FULL could delete them, and that would also delete"):
            _vacuum(spark, table, [f"{table}/kept_ids"])
        _vacuum(spark, table, [])
    assert len(list((tmp_path / "t").glob("*.parquet"))) == 1
    assert [r["text"] for r in read_table(spark, table).collect()] == ["text 2"]
