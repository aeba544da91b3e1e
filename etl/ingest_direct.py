"""Ingest straight into the tables' files: on a local run over file inputs (JSONL, text, WARC, WET), the
Python tasks that parse the files (etl.ingest's own readers, its rules unchanged) also write the Parquet
files of the ``ingest`` table and of ``rejected`` (``stage=ingest``), and delta-rs commits them.

Why: on bench/ingest_bench.py's 100,000 records (50 gzipped JSONL files, 2 cores) etl.ingest's Spark path
took 4.8-5.4 s for the step against a plain Python loop's 2.4 s. Its rows crossed from the Python tasks
into the JVM, were sorted there for the duplicate-id rule, counted in a second job and written again by
Delta's writer; staging them as Parquet and letting Spark write the tables was no faster (5.0-5.8 s).
Written by the tasks and committed by delta-rs, the whole run takes 1.9-2.2 s (1.07-1.14x the loop).

What the tasks return instead of rows: each file they wrote, the funnel's counts per (reason, source),
the web archives' skipped records by type, and every kept id with where it came from (and a web page's
URL and crawl time). The duplicate-id and duplicate-URL rules (etl.ingest's docstring) run on those on
the driver; a file holding a losing copy is rewritten without it, and the copy goes to ``rejected`` as
``duplicate_id`` or ``duplicate_url``. The driver holds about 100 bytes per document for this, and a
web page's URL.

When: a local master (every task on this machine), a local output, no catalog mode, not Spark Connect,
only file inputs (no Parquet or Delta input, which Spark's readers read), Delta's table defaults as Kiln
sets them (etl.spark), and any existing table at protocol (1, 2) or below, as Spark's Delta creates
them, and not append-only. Otherwise, etl.ingest's Spark path. Both give the same tables, row for row.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from pyspark import TaskContext
from pyspark.sql import SparkSession

from .config import PipelineConfig, is_local_master
from .delta import commit_files, delta_rs_folder, remove_unlisted, table_exists
from .ingest import _FILE_FORMATS, _LISTING_SCHEMA, SKIPPED, _read_files_task, file_listing
from .paths import local_fs_path
from .spark import default_parallelism, is_connect

STAGE = "ingest"
KEPT_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("text", pa.string()),
    ("meta", pa.map_(pa.string(), pa.string())), ("content_hash", pa.string()),
])
# `stage` is the partition column: in the log and the folder's name, not in the files.
REJECTED_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("text", pa.string()), ("content_hash", pa.string()),
])
_REJECTED_FILE_SCHEMA = pa.schema([field for field in REJECTED_SCHEMA if field.name != "stage"])
# What a task returns, a row per fact: kind "file" (a Parquet file it wrote: table, path, size, rows),
# "count" (reason, source, docs, chars, bytes), "skipped" (a web archive's records that are not documents:
# reason = their type, docs) or "doc" (a kept id, where it came from, where it is now, and a web page's
# url, crawl time and crawl date).
_RESULT_SCHEMA = pa.schema([
    ("kind", pa.string()), ("table", pa.string()), ("path", pa.string()), ("size", pa.int64()),
    ("rows", pa.int64()), ("reason", pa.string()), ("source", pa.string()), ("docs", pa.int64()),
    ("chars", pa.int64()), ("bytes", pa.int64()), ("id", pa.string()), ("modified", pa.int64()),
    ("file", pa.string()), ("row", pa.int64()), ("index", pa.int64()), ("url", pa.string()),
    ("crawled", pa.int64()), ("date", pa.string()),
])
_RESULT_DDL = ", ".join(f"`{f.name}` {'string' if f.type == pa.string() else 'long'}" for f in _RESULT_SCHEMA)


def writes_directly(spark: SparkSession, config: PipelineConfig, kept_path: str, rejected_path: str) -> bool:
    """Whether this run's ingest can take the direct path (the module's docstring says when)."""
    if is_connect(spark) or config.catalog is not None or not is_local_master(spark.sparkContext.master):
        return False
    if any(spec.format not in _FILE_FORMATS for spec in config.inputs):
        return False
    return (delta_rs_folder(spark, kept_path) is not None
            and delta_rs_folder(spark, rejected_path, REJECTED_SCHEMA, ("stage",)) is not None)


def ingest_directly(spark: SparkSession, config: PipelineConfig, files: list[tuple[str, str, str]] | None,
                    kept_path: str, rejected_path: str, properties: dict[str, str],
                    rejected_properties: dict[str, str]) -> tuple[dict, dict[str, int]]:
    """Read the file inputs (all, or only `files`), write and commit both tables (with `properties` and
    `rejected_properties`). Returns the funnel's counts as etl.pipeline's _counts gives them ((reason,
    source) -> (docs, chars, bytes, None)) and the skipped web-archive records, as etl.ingest.split_skipped."""
    listing = file_listing(config, files)
    if not listing:
        raise ValueError("no input files found")
    kept_dir = os.path.abspath(local_fs_path(kept_path))
    rejected_dir = os.path.abspath(local_fs_path(rejected_path))
    columns = {name: [row[i] for row in listing] for i, name in enumerate(_LISTING_SCHEMA.names)}
    tasks = min(len(listing), max(default_parallelism(spark) * 4, 1))
    listed = spark.createDataFrame(pa.table(columns, schema=_LISTING_SCHEMA)).repartition(tasks, "url")
    specs = {spec.source: spec for spec in config.inputs}
    rejected_folder = os.path.join(rejected_dir, f"stage={STAGE}")
    run = uuid.uuid4().hex[:12]  # in the name of every file this call writes, to remove them if it fails
    uncommitted = {kept_dir: None, rejected_dir: {"stage": STAGE}}  # table -> the partition its files go to
    try:
        task = _write_task(specs, config.max_doc_bytes, kept_dir, rejected_folder, run)
        result = listed.mapInArrow(task, _RESULT_DDL).toArrow()
        written = {table: {row["path"]: (row["size"], row["rows"]) for row in _rows_of(result, "file").to_pylist()
                           if row["table"] == table} for table in ("ingest", "rejected")}
        counts = defaultdict(lambda: [0, 0, 0])
        for row in _rows_of(result, "count").to_pylist():
            total = counts[(row["reason"], row["source"])]
            for i, key in enumerate(("docs", "chars", "bytes")):
                total[i] += row[key]
        skipped = defaultdict(int)
        for row in _rows_of(result, "skipped").to_pylist():
            skipped[f"skipped_{row['reason']}_records"] += row["docs"]
        docs = _rows_of(result, "doc")
        losers = _duplicate_ids(docs)
        losers.update(_duplicate_urls(docs, losers))
        _move_losers(losers, written, counts, kept_dir, rejected_folder)

        commit_files(kept_dir, KEPT_SCHEMA, written["ingest"], "overwrite")
        del uncommitted[kept_dir]
        DeltaTable(kept_dir).alter.set_table_properties(properties, raise_if_not_exists=False)
        rejected_exists = table_exists(spark, rejected_path)
        if written["rejected"] or not rejected_exists:  # (an empty commit creates the table)
            commit_files(rejected_dir, REJECTED_SCHEMA, written["rejected"], "append", {"stage": STAGE})
        del uncommitted[rejected_dir]
    except BaseException:
        # This call's own files that no log lists go (Spark's writer, failing, leaves its task files; here the
        # window is longer, up to the last commit).
        for table_dir, partition in uncommitted.items():
            remove_unlisted(table_dir, f"-{run}-", partition)
        raise
    rejected_table = DeltaTable(rejected_dir)
    if not rejected_properties.items() <= rejected_table.metadata().configuration.items():
        rejected_table.alter.set_table_properties(rejected_properties, raise_if_not_exists=False)
    return {key: (*total, None) for key, total in counts.items()}, dict(sorted(skipped.items()))


def _rows_of(result: pa.Table, kind: str) -> pa.Table:
    return result.filter(pc.equal(result["kind"], kind))


def _write_task(specs: dict, max_bytes: int, kept_dir: str, rejected_folder: str, run: str):
    """mapInArrow body: etl.ingest's rows of the task's files, written to one Parquet file per table."""
    read = _read_files_task(specs, max_bytes)

    def write(batches):
        # File names start with the task's partition, as Spark's do, so that `ingest` lists its files
        # (one a partition) in the same order on every rerun.
        prefix = f"{TaskContext.get().partitionId():05d}-{run}"
        writers = {"ingest": _FileWriter(kept_dir, KEPT_SCHEMA, prefix),
                   "rejected": _FileWriter(rejected_folder, _REJECTED_FILE_SCHEMA, prefix)}
        try:
            yield from _write_rows(read(batches), writers)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise

    return write


def _write_rows(batches, writers: dict):
    """Each batch's kept and rejected rows to their writers; then what the task returns (_RESULT_SCHEMA)."""
    counts = defaultdict(lambda: [0, 0, 0])
    skipped = defaultdict(int)
    docs = defaultdict(list)
    for batch in batches:
        is_skipped = pc.fill_null(pc.equal(batch.column("reason"), SKIPPED), False)
        for kind in batch.filter(is_skipped).column("detail").to_pylist():
            skipped[kind] += 1
        batch = batch.filter(pc.invert(is_skipped))
        texts = batch.column("text")
        hashes = pa.array([None if t is None else hashlib.sha1(t.encode("utf-8")).hexdigest()
                           for t in texts.to_pylist()], pa.string())
        rows = pa.Table.from_batches([batch]).append_column("content_hash", hashes)
        for reason, source, n, chars, size in _sizes(rows["reason"], rows["source"], texts):
            total = counts[(reason, source)]
            total[0] += n
            total[1] += chars
            total[2] += size
        is_kept = pc.is_null(rows["reason"])
        kept = rows.filter(is_kept)
        start = writers["ingest"].rows
        writers["ingest"].write(kept.select(KEPT_SCHEMA.names))
        writers["rejected"].write(rows.filter(pc.invert(is_kept)).select(_REJECTED_FILE_SCHEMA.names))
        for name in ("id", "_modified", "_file", "_row", "_crawled"):
            docs[name].extend(kept[name].to_pylist())
        has_pages = kept["_crawled"].null_count < kept.num_rows  # only web pages take part in the URL rule
        for key in ("url", "crawl_date"):
            values = pc.map_lookup(kept["meta"], key, "first").to_pylist() if has_pages else [None] * kept.num_rows
            docs[key].extend(values)
        docs["index"].extend(range(start, start + kept.num_rows))
    out = {name: [] for name in _RESULT_SCHEMA.names}

    def emit(**values):
        for name in _RESULT_SCHEMA.names:
            out[name].append(values.get(name))

    for table, writer in writers.items():
        if writer.close():
            emit(kind="file", table=table, path=writer.name, size=writer.size, rows=writer.rows)
    for (reason, source), (n, chars, size) in counts.items():
        emit(kind="count", reason=reason, source=source, docs=n, chars=chars, bytes=size)
    for kind, n in skipped.items():
        emit(kind="skipped", reason=kind, docs=n)
    yield pa.RecordBatch.from_pydict(out, schema=_RESULT_SCHEMA)
    n = len(docs["id"])
    kept_ids = {"kind": ["doc"] * n, "path": [writers["ingest"].name] * n, "id": docs["id"],
                "modified": docs["_modified"], "file": docs["_file"], "row": docs["_row"], "index": docs["index"],
                "url": docs["url"], "crawled": docs["_crawled"], "date": docs["crawl_date"]}
    yield pa.RecordBatch.from_arrays(
        [pa.array(kept_ids[f.name], f.type) if f.name in kept_ids else pa.nulls(n, f.type) for f in _RESULT_SCHEMA],
        schema=_RESULT_SCHEMA)


class _FileWriter:
    """One Parquet file in `folder`, opened on the first rows (a task with none writes none), named
    part-<task's partition>-<run>-<uuid>."""

    def __init__(self, folder: str, schema: pa.Schema, prefix: str):
        self.folder, self.schema = folder, schema
        self.name = f"part-{prefix}-{uuid.uuid4()}.c000.snappy.parquet"
        self.writer, self.rows, self.size = None, 0, 0

    def write(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        if self.writer is None:
            os.makedirs(self.folder, exist_ok=True)
            self.writer = pq.ParquetWriter(os.path.join(self.folder, self.name), self.schema)
        self.writer.write_table(rows)
        self.rows += rows.num_rows

    def close(self) -> bool:
        """Whether a file was written."""
        if self.writer is None:
            return False
        self.writer.close()
        self.size = os.path.getsize(os.path.join(self.folder, self.name))
        return True

    def abort(self) -> None:
        """Close and remove the file, if one was started."""
        if self.writer is not None:
            self.writer.close()
            os.remove(os.path.join(self.folder, self.name))
            self.writer = None


def _duplicate_ids(docs: pa.Table) -> dict[tuple[str, int], tuple[str, str]]:
    """etl.ingest's rule on the kept ids: the newest copy of an id stays (latest file time, then path,
    then row). Every other copy: (kept file, row in it) -> ("duplicate_id", detail)."""
    return _losers(docs, "id", lambda doc: (doc["modified"], doc["file"], doc["row"]),
                   lambda newest, doc: f"kept the newest copy, at {_origin(newest)}; this copy is at {_origin(doc)}",
                   "duplicate_id")


def _duplicate_urls(docs: pa.Table, taken: dict) -> dict[tuple[str, int], tuple[str, str]]:
    """etl.ingest's rule on the web pages the id rule kept: of the pages with one URL, the newest crawl stays
    (latest crawl time, then the id rule's order, then the origin); every other: (kept file, row) ->
    ("duplicate_url", detail)."""
    pages = docs.filter(pc.and_(pc.is_valid(docs["url"]), pc.is_valid(docs["crawled"])))
    if taken:
        pages = pages.filter(pc.invert(pa.array([(path, index) in taken for path, index in
                                                 zip(pages["path"].to_pylist(), pages["index"].to_pylist())],
                                                pa.bool_())))

    def detail(newest: dict, doc: dict) -> str:
        return (f"kept the newest crawl, {newest['date'] or '?'} at {_origin(newest)}; "
                f"this crawl is {doc['date'] or '?'} at {_origin(doc)}")

    return _losers(pages, "url",
                   lambda doc: (doc["crawled"], doc["modified"], doc["file"], doc["row"], _origin(doc)), detail,
                   "duplicate_url")


def _origin(doc: dict) -> str:
    """Where a document came from, as etl.ingest's _origin: <source>/<file>:<row> (the source is its id's head)."""
    return f"{doc['id'].split('/', 1)[0]}/{doc['file']}:{doc['row']}"


def _losers(docs: pa.Table, key: str, newest_first, detail, reason: str) -> dict:
    """Of the docs that share a `key`, all but the first by `newest_first` (descending)."""
    counted = docs.group_by(key).aggregate([([], "count_all")])
    shared = counted.filter(pc.greater(counted["count_all"], 1))[key]
    if len(shared) == 0:
        return {}
    groups = defaultdict(list)
    for doc in docs.filter(pc.is_in(docs[key], value_set=shared)).select(
            ["id", "modified", "file", "row", "path", "index", "url", "crawled", "date"]).to_pylist():
        groups[doc[key]].append(doc)
    losers = {}
    for same in groups.values():
        same.sort(key=newest_first, reverse=True)
        for doc in same[1:]:
            losers[(doc["path"], doc["index"])] = (reason, detail(same[0], doc))
    return losers


def _move_losers(losers: dict, written: dict, counts: dict, kept_dir: str, rejected_folder: str) -> None:
    """Each kept file holding a losing copy, rewritten without it; the copies go to rejected files, and the
    funnel's counts move with them."""
    by_file = defaultdict(dict)
    for (path, index), rejection in losers.items():
        by_file[path][index] = rejection
    # Side by side: reading, filtering and writing Parquet release the GIL.
    with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="kiln-ingest-rewrite") as pool:
        rewritten = list(pool.map(lambda item: _move_copies(kept_dir, rejected_folder, *item), by_file.items()))
    for path, (kept, rejected, moved) in zip(by_file, rewritten):
        del written["ingest"][path]
        if kept.rows:
            written["ingest"][kept.name] = (kept.size, kept.rows)
        written["rejected"][rejected.name] = (rejected.size, rejected.rows)
        for reason, source, n, chars, size in moved:
            for key, sign in (((None, source), -1), ((reason, source), 1)):
                total = counts.setdefault(key, [0, 0, 0])
                total[0] += sign * n
                total[1] += sign * chars
                total[2] += sign * size


def _move_copies(kept_dir: str, rejected_folder: str, path: str, rejections: dict[int, tuple[str, str]]):
    """The kept file `path` rewritten without its rows at `rejections`' indexes, which go to a rejected file
    with their (reason, detail): (the kept file's writer, the rejected one's, [(reason, source, docs, chars,
    bytes)])."""
    rows = pq.read_table(os.path.join(kept_dir, path))
    lost = pa.array([i in rejections for i in range(rows.num_rows)])
    moved = rows.filter(lost)
    reasons, details = (pa.array(column, pa.string()) for column in zip(*(rejections[i] for i in sorted(rejections))))
    prefix = "-".join(path.split("-")[1:3])  # the task's partition and the run, as the file it replaces
    rejected = _FileWriter(rejected_folder, _REJECTED_FILE_SCHEMA, prefix)
    rejected.write(pa.table({
        "id": moved["id"], "source": moved["source"], "reason": reasons,
        "detail": details, "text": moved["text"], "content_hash": moved["content_hash"]}))
    rejected.close()
    os.remove(os.path.join(kept_dir, path))
    kept = _FileWriter(kept_dir, KEPT_SCHEMA, prefix)
    kept.write(rows.filter(pc.invert(lost)))
    kept.close()
    return kept, rejected, _sizes(reasons, moved["source"], moved["text"])


def _sizes(reasons, sources, texts) -> list[tuple[str | None, str, int, int, int]]:
    """(reason, source, documents, characters, UTF-8 bytes) per (reason, source) of the rows, as etl.pipeline's
    _counts measures them (Spark's length and octet_length; no text counts 0)."""
    sizes = pa.table({"reason": reasons, "source": sources, "chars": pc.utf8_length(texts),
                      "bytes": pc.binary_length(texts)})
    groups = sizes.group_by(["reason", "source"], use_threads=False).aggregate(
        [([], "count_all"), ("chars", "sum"), ("bytes", "sum")])
    return [(r["reason"], r["source"], r["count_all"], r["chars_sum"] or 0, r["bytes_sum"] or 0)
            for r in groups.to_pylist()]

