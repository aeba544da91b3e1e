"""Ingest: raw inputs -> one documents DataFrame with stable ids, plus rejected rows with reasons.

Files (JSONL plain/.gz/.bz2/.xz/.zst, one-document-per-file text, WARC/WET web archives) are read by Python
tasks, one task per file, so that each malformed line, invalid UTF-8 sequence or empty document becomes a rejected row
with its reason instead of being dropped or killing the job. Parquet and Delta inputs (folders, or
tables named in Spark's catalog) are read by Spark's own readers. Ids are ``<source>/<input id>`` when the input has ids, else
``<source>/<relative file>:<row>``: both are the same on every rerun, whatever the partitioning.

An input that holds one id more than once keeps the newest copy: the one in the file modified
last, then (same time) the one in the last path in sorted order, then the last row of that file
(a Delta input, which has no row numbers, breaks a tie by text). Every other copy is rejected as
``duplicate_id``, its ``detail`` naming where the kept copy and itself are. The rule is the same
on every rerun of the same files, however Spark partitions them.

Web archives (``etl.web.warc``) give one row per record: a page's extracted text, a rejected record
(not HTML, truncated, undecodable), or a skipped one (``warcinfo``, ``request``, ``metadata``: not
documents), which ``split_skipped`` takes out and counts. A URL crawled more than once keeps its
newest crawl (latest ``WARC-Date``, then the duplicate-id order); the others are ``duplicate_url``.

This module gives the rows as a DataFrame, which etl.pipeline writes with Spark's Delta writer. On a
local run over file inputs only, etl.ingest_direct runs the same readers in tasks that write the tables'
files themselves (faster; the same rows).
"""
from __future__ import annotations

import bz2
import datetime
import gzip
import io
import json
import lzma
import os
from contextlib import contextmanager
from typing import Iterator

import fsspec
import pyarrow as pa
import zstandard
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shards.config import ConfigError

from .config import InputSpec, PipelineConfig
from .delta import read_table
from .paths import to_fsspec_url, to_spark_path
from .spark import default_parallelism
from .web.warc import read_records

# Everything ingest emits, kept or not; `reason` null means the row is a document. The columns
# starting with `_` say where each row came from, for the duplicate-id rule, and are dropped after it.
INGEST_SCHEMA = (
    "id string, source string, text string, meta map<string,string>, reason string, detail string, "
    "_origin string, _modified long, _file string, _row long, _crawled long"
)
_ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("meta", pa.map_(pa.string(), pa.string())),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("_origin", pa.string()),  # <source>/<relative file>:<row>, as a derived id is written
        ("_modified", pa.int64()),  # the file's modification time, microseconds since the epoch
        ("_file", pa.string()),  # the file's path relative to its input
        ("_row", pa.int64()),  # the row within the file
        ("_crawled", pa.int64()),  # a web page's crawl date (WARC-Date, microseconds); null for other inputs
    ]
)
_LISTING_SCHEMA = pa.schema([("url", pa.string()), ("rel", pa.string()), ("source", pa.string())])
_ORIGIN_COLUMNS = ("_origin", "_modified", "_file", "_row", "_crawled")
# A web archive's record that is not a document; split_skipped counts these rows and drops them.
SKIPPED = "skipped_record"
_FILE_FORMATS = ("jsonl", "text", "warc", "wet")
_GLOB_CHARS = "*?["


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: ids are relative to it."""
    cut = min([pattern.index(c) for c in _GLOB_CHARS if c in pattern], default=len(pattern))
    head = pattern[:cut]
    return head if head.endswith("/") else os.path.dirname(head) + "/"


def list_input_files(spec: InputSpec) -> list[tuple[str, str]]:
    """(full url, path relative to the glob's base) for every file the input names, sorted."""
    url = to_fsspec_url(spec.path)
    fs, _, paths = fsspec.get_fs_token_paths(url)
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    bare = url.split("://", 1)[-1] if protocol else url
    is_glob = any(c in bare for c in _GLOB_CHARS)
    base = _glob_base(bare) if is_glob or not fs.isdir(bare) else bare.rstrip("/") + "/"
    files = []
    for p in sorted(paths):
        if fs.isdir(p):
            files.extend(sorted(f for f in fs.find(p) if not os.path.basename(f).startswith((".", "_"))))
        else:
            files.append(p)
    return [(protocol + f if protocol and not f.startswith(protocol) else f, _relative(f, base)) for f in files]


def _relative(path: str, base: str) -> str:
    path = path.split("://", 1)[-1]
    base = base.split("://", 1)[-1]
    if base and path.startswith(base):
        return path[len(base):]
    return os.path.basename(path)


def file_modified(info: dict):
    """A file's modification time whatever the store calls it (local mtime, S3 LastModified, ...): a
    UTC datetime, or the store's own value when it is not a number or a datetime (None: not given)."""
    value = next((info[k] for k in ("mtime", "LastModified", "last_modified", "updated") if info.get(k) is not None), None)
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return value


def _modified_micros(url: str) -> int:
    """The modification time of the file at ``url`` in microseconds, for the duplicate-id rule."""
    fs, path = fsspec.core.url_to_fs(url)
    value = file_modified(fs.info(path))
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if not isinstance(value, datetime.datetime):
        return 0
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return (value - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) // datetime.timedelta(microseconds=1)


# What reading a damaged or unreadable file raises (a truncated .gz: EOFError; not gzip at all: OSError;
# xz's and zstd's decoders raise their own).
UNREADABLE_FILE_ERRORS = (OSError, EOFError, ValueError, lzma.LZMAError, zstandard.ZstdError)


def decompressed(url: str, raw):
    """The binary file ``raw`` (opened from ``url``), decompressed as its suffix says (COMPRESSED_SUFFIXES)."""
    if url.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if url.endswith(".bz2"):
        return bz2.BZ2File(raw)
    if url.endswith(".xz"):
        return lzma.LZMAFile(raw)
    if url.endswith((".zst", ".zstd")):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


@contextmanager
def _open_decompressed(url: str):
    """The file's bytes, decompressed; the file under the decompressor is closed with it."""
    with fsspec.open(url, "rb") as raw, decompressed(url, raw) as handle:
        yield handle


class _Rows:
    """Column buffers for one Arrow batch; rows come from the file set by `start_file`."""

    def __init__(self):
        self.cols = {name: [] for name in _ARROW_SCHEMA.names}
        self.source, self.rel, self.modified = None, None, 0

    def start_file(self, source: str, rel: str, modified: int) -> None:
        self.source, self.rel, self.modified = source, rel, modified

    def add(self, row, doc_id, source, text, meta=None, reason=None, detail=None, crawled=None):
        origin = f"{self.source}/{self.rel}:{row}"
        values = (doc_id, source, text, meta, reason, detail, origin, self.modified, self.rel, row, crawled)
        for name, value in zip(_ARROW_SCHEMA.names, values):
            self.cols[name].append(value)

    def __len__(self):
        return len(self.cols["id"])

    def batch(self) -> pa.RecordBatch:
        out = pa.RecordBatch.from_pydict(self.cols, schema=_ARROW_SCHEMA)
        self.cols = {name: [] for name in _ARROW_SCHEMA.names}
        return out


def _check_text(text, max_bytes: int) -> tuple[str | None, str | None]:
    """(reason, detail) when a text value cannot be a document."""
    if text is None:
        return "missing_text", None
    if not isinstance(text, str):
        return "text_not_string", type(text).__name__
    if not text.strip():
        return "empty_text", None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return "too_large", f"{size} bytes > max_doc_bytes {max_bytes}"
    return None, None


def _jsonl_rows(url: str, rel: str, spec: InputSpec, max_bytes: int, rows: _Rows) -> Iterator[pa.RecordBatch]:
    with _open_decompressed(url) as handle:
        for line_no, raw in enumerate(handle):
            doc_id = f"{spec.source}/{rel}:{line_no}"
            if not raw.strip():
                continue  # blank separator lines are not documents
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                rows.add(line_no, doc_id, spec.source, raw.decode("utf-8", "replace"), None, "invalid_utf8", f"byte {err.start}")
            else:
                try:
                    record = json.loads(line)
                except ValueError as err:
                    rows.add(line_no, doc_id, spec.source, line, None, "malformed_json", str(err)[:200])
                else:
                    if not isinstance(record, dict):
                        rows.add(line_no, doc_id, spec.source, line, None, "not_an_object", type(record).__name__)
                    else:
                        _add_record(record, line_no, doc_id, spec, max_bytes, rows, line)
            if len(rows) >= 2048:
                yield rows.batch()


def _unencodable(*values) -> str | None:
    """Where the first string that cannot be written as UTF-8 (a lone surrogate) breaks, if any."""
    for value in values:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                return f"lone surrogate at character {err.start}"
    return None


def _add_record(record: dict, row: int, derived_id: str, spec: InputSpec, max_bytes: int, rows: _Rows, line: str) -> None:
    doc_id = derived_id
    if spec.id_field:
        value = record.get(spec.id_field)
        if value is None or value == "":
            rows.add(row, derived_id, spec.source, line, None, "missing_id", f"field {spec.id_field!r}")
            return
        doc_id = f"{spec.source}/{value}"
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k in spec.keep_fields if (v := record.get(k)) is not None}
    text = record.get(spec.text_field)
    broken = _unencodable(doc_id, text, *meta.values())
    if broken is not None:
        # JSON escapes such as "\ud800" decode to lone surrogates, which no UTF-8 table can hold:
        # the record is rejected, keeping its raw line (which is valid UTF-8) and its derived id.
        rows.add(row, derived_id, spec.source, line, None, "invalid_unicode", broken)
        return
    reason, detail = _check_text(text, max_bytes)
    if reason:
        rows.add(row, doc_id, spec.source, text if isinstance(text, str) else line, meta, reason, detail)
    else:
        rows.add(row, doc_id, spec.source, text, meta)


def _text_file_rows(url: str, rel: str, spec: InputSpec, max_bytes: int, rows: _Rows) -> None:
    doc_id = f"{spec.source}/{rel}"
    with _open_decompressed(url) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        rows.add(0, doc_id, spec.source, raw.decode("utf-8", "replace"), None, "invalid_utf8", f"byte {err.start}")
        return
    reason, detail = _check_text(text, max_bytes)
    rows.add(0, doc_id, spec.source, text, None, reason, detail)


def _web_rows(url: str, rel: str, spec: InputSpec, max_bytes: int, rows: _Rows) -> Iterator[pa.RecordBatch]:
    """One row per record of a WARC or WET file (etl.web.warc says which records are documents)."""
    with fsspec.open(url, "rb") as handle:
        for record in read_records(handle, spec.extractor):
            doc_id = f"{spec.source}/{rel}:{record.index}"
            if record.skipped:
                rows.add(record.index, doc_id, spec.source, None, None, SKIPPED, record.skipped)
            else:
                reason, detail = (record.reason, record.detail) if record.reason else _check_text(record.text, max_bytes)
                rows.add(record.index, doc_id, spec.source, record.text, record.meta, reason, detail, record.crawled)
            if len(rows) >= 2048:
                yield rows.batch()


def _read_files_task(specs: dict[str, InputSpec], max_bytes: int):
    """mapInArrow body: each input row names one file; yields its documents and rejects."""

    def read(batches):
        rows = _Rows()
        for batch in batches:
            for url, rel, source in zip(*(batch.column(i).to_pylist() for i in range(3))):
                spec = specs[source]
                try:
                    rows.start_file(source, rel, _modified_micros(url))
                    if spec.format == "jsonl":
                        yield from _jsonl_rows(url, rel, spec, max_bytes, rows)
                    elif spec.is_web_archive:
                        yield from _web_rows(url, rel, spec, max_bytes, rows)
                    else:
                        _text_file_rows(url, rel, spec, max_bytes, rows)
                except UNREADABLE_FILE_ERRORS as err:
                    # A truncated archive or unreadable file: one rejected row for the whole file.
                    rows.add(None, f"{source}/{rel}", source, None, None, "unreadable_file", f"{type(err).__name__}: {err}"[:300])
                if len(rows) >= 2048:
                    yield rows.batch()
        if len(rows):
            yield rows.batch()

    return read


def _read_files(
    spark: SparkSession, specs: list[InputSpec], max_bytes: int, listing: list[tuple[str, str, str]]
) -> DataFrame | None:
    """One task per listed file (url, relative path, source)."""
    if not listing:
        return None
    # From Arrow: a local relation in the JVM, so no Python task runs just to unpickle the listing.
    columns = {name: [row[i] for row in listing] for i, name in enumerate(_LISTING_SCHEMA.names)}
    files = spark.createDataFrame(pa.table(columns, schema=_LISTING_SCHEMA))
    files = files.repartition(min(len(listing), max(default_parallelism(spark) * 4, 1)), "url")
    return files.mapInArrow(_read_files_task({s.source: s for s in specs}, max_bytes), INGEST_SCHEMA)


def _read_table(spark: SparkSession, spec: InputSpec, max_bytes: int, files: list[str] | None = None) -> DataFrame:
    if spec.format == "delta":
        # Delta has no row numbers (files are rewritten by OPTIMIZE anyway): the row is null.
        df = (_catalog_table(spark, spec) if spec.table else read_table(spark, spec.path)).select(
            "*", "_metadata.file_name", "_metadata.file_modification_time", F.lit(None).cast("long").alias("row_index"))
    else:
        paths = [to_spark_path(f) for f in (files if files is not None else [spec.path])]
        df = spark.read.parquet(*paths).select(
            "*", "_metadata.file_name", "_metadata.file_modification_time", "_metadata.row_index")
    missing = [c for c in [spec.text_field, spec.id_field, *spec.keep_fields] if c and c not in df.columns]
    if missing:
        raise ValueError(f"input {spec.source!r} ({spec.where}): no column {missing[0]!r}; columns are {df.columns}")
    if spec.id_field:
        doc_id = F.concat(F.lit(spec.source + "/"), F.col(spec.id_field).cast("string"))
    elif spec.format == "delta":
        raise ValueError(f"input {spec.source!r}: Delta inputs need id_field (file positions are not stable in Delta)")
    origin = F.concat_ws(":", F.concat(F.lit(spec.source + "/"), F.col("file_name")), F.col("row_index").cast("string"))
    if not spec.id_field:
        doc_id = origin
    text = F.col(spec.text_field).cast("string")
    meta = (
        F.create_map(*[x for k in spec.keep_fields for x in (F.lit(k), F.col(k).cast("string"))])
        if spec.keep_fields
        else F.lit(None).cast("map<string,string>")
    )
    size = F.octet_length(text)
    reason = (
        F.when(text.isNull(), "missing_text")
        .when(F.length(F.trim(text)) == 0, "empty_text")
        .when(size > max_bytes, "too_large")
    )
    if spec.id_field:
        reason = F.when(F.col(spec.id_field).isNull(), "missing_id").otherwise(reason)
    detail = F.when(size > max_bytes, F.concat(size.cast("string"), F.lit(f" bytes > max_doc_bytes {max_bytes}")))
    return df.select(
        doc_id.alias("id"), F.lit(spec.source).alias("source"), text.alias("text"), meta.alias("meta"),
        reason.alias("reason"), detail.cast("string").alias("detail"), origin.alias("_origin"),
        F.unix_micros("file_modification_time").alias("_modified"), F.col("file_name").alias("_file"),
        F.col("row_index").alias("_row"), F.lit(None).cast("long").alias("_crawled"),
    )


def _catalog_table(spark: SparkSession, spec: InputSpec) -> DataFrame:
    """The input's catalog table; one that is not there is a config error naming it and the session's catalog."""
    if not spark.catalog.tableExists(spec.table):
        current = f"{spark.catalog.currentCatalog()}.{spark.catalog.currentDatabase()}"
        raise ConfigError(
            f"input {spec.source!r}: no table {spec.table} in Spark's catalog (the current schema is {current}): "
            "create it or correct the name (db.name, or catalog.schema.table on Unity Catalog); a table that outlives "
            "the job needs a persistent catalog: Databricks' own, or spark.sql.catalogImplementation=hive on plain Spark")
    return spark.table(spec.table)


def ingest(spark: SparkSession, config: PipelineConfig, files: list[tuple[str, str, str]] | None = None) -> DataFrame:
    """All inputs as one annotated DataFrame (INGEST_SCHEMA plus content_hash); with `files`
    ((url, relative path, source) of file inputs), only those files."""
    if files is None:
        parts = [_read_table(spark, s, config.max_doc_bytes) for s in config.inputs if s.format in ("parquet", "delta")]
    else:
        chosen = {s.source: [url for url, _, source in files if source == s.source] for s in config.inputs}
        parts = [_read_table(spark, s, config.max_doc_bytes, chosen[s.source])
                 for s in config.inputs if s.format == "parquet" and chosen[s.source]]
    from_files = _read_files(spark, [s for s in config.inputs if s.format in _FILE_FORMATS], config.max_doc_bytes,
                             file_listing(config, files))
    if from_files is not None:
        parts.append(from_files)
    if not parts:
        raise ValueError("no input files found")
    docs = parts[0]
    for part in parts[1:]:
        docs = docs.unionByName(part)
    docs = _reject_duplicate_ids(docs)
    if _has_web_archives(config):
        docs = _reject_duplicate_urls(docs)
    return docs.drop(*_ORIGIN_COLUMNS).withColumn("content_hash", F.sha1(F.encode(F.col("text"), "UTF-8")))


def file_listing(config: PipelineConfig, files: list[tuple[str, str, str]] | None = None) -> list[tuple[str, str, str]]:
    """(url, relative path, source) of every file the file inputs name, or of those among `files`."""
    file_specs = [s for s in config.inputs if s.format in _FILE_FORMATS]
    if files is None:
        return [(url, rel, spec.source) for spec in file_specs for url, rel in list_input_files(spec)]
    return [f for f in files if f[2] in {s.source for s in file_specs}]


def _has_web_archives(config: PipelineConfig) -> bool:
    return any(s.is_web_archive for s in config.inputs)


def _reject_duplicate_ids(docs: DataFrame) -> DataFrame:
    """The newest copy of each id stays (see the module's docstring); the others become `duplicate_id`."""
    newest_first = Window.partitionBy("id").orderBy(
        F.col("reason").isNotNull(), F.col("_modified").desc(), F.col("_file").desc(), F.col("_row").desc(),
        F.xxhash64("text"), F.col("text"))
    duplicate = F.col("reason").isNull() & (F.row_number().over(newest_first) > 1)
    detail = F.concat(F.lit("kept the newest copy, at "), F.first("_origin").over(newest_first),
                      F.lit("; this copy is at "), F.col("_origin"))
    return docs.select(
        *[c for c in docs.columns if c not in ("reason", "detail")],
        F.when(duplicate, F.lit("duplicate_id")).otherwise(F.col("reason")).alias("reason"),
        F.when(duplicate, detail).otherwise(F.col("detail")).alias("detail"),
    )


def _reject_duplicate_urls(docs: DataFrame) -> DataFrame:
    """Web pages only: of the documents with one URL, the newest crawl stays; the others become
    `duplicate_url`, their detail naming both crawls. Ties fall back to the duplicate-id order, then to
    the source's name (a file two inputs list)."""
    web = F.col("_crawled").isNotNull() & F.col("meta")["url"].isNotNull()
    url = F.when(web, F.col("meta")["url"])
    # Other rows each get a key of their own, so no partition gathers them all.
    newest_first = Window.partitionBy(F.coalesce(url, F.concat(F.lit("\0"), F.col("_origin")))).orderBy(
        F.col("reason").isNotNull(), F.col("_crawled").desc(), F.col("_modified").desc(), F.col("_file").desc(),
        F.col("_row").desc(), F.col("_origin").desc())  # last: one file listed by two inputs
    date = F.coalesce(F.col("meta")["crawl_date"], F.lit("?"))
    duplicate = F.col("reason").isNull() & web & (F.row_number().over(newest_first) > 1)
    detail = F.concat(F.lit("kept the newest crawl, "), F.first(date).over(newest_first), F.lit(" at "),
                      F.first("_origin").over(newest_first), F.lit("; this crawl is "), date, F.lit(" at "),
                      F.col("_origin"))
    return docs.select(
        *[c for c in docs.columns if c not in ("reason", "detail")],
        F.when(duplicate, F.lit("duplicate_url")).otherwise(F.col("reason")).alias("reason"),
        F.when(duplicate, detail).otherwise(F.col("detail")).alias("detail"),
    )


def split_skipped(annotated: DataFrame, config: PipelineConfig) -> tuple[DataFrame, dict[str, int]]:
    """The rows that are documents (kept or rejected), and how many web-archive records of each type
    were skipped as not documents (for the funnel's metrics; none, and no Spark job, for other inputs)."""
    if not _has_web_archives(config):
        return annotated, {}
    skipped = annotated.filter(F.col("reason") == SKIPPED).groupBy("detail").count().collect()
    counts = {f"skipped_{row['detail']}_records": row["count"] for row in sorted(skipped, key=lambda r: r["detail"])}
    return annotated.filter(F.col("reason").isNull() | (F.col("reason") != SKIPPED)), counts
