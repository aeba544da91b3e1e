"""Where a dataset's samples came from: the tables `tokenize` wrote beside the Delta output of the ETL,
read with delta-rs (no Spark, no JVM) at the versions the dataset's manifest names.

Every sample of an ETL-built dataset carries ``bucket`` and ``bucket_index``, its key in
``<output>/tokenize/provenance``: rows ``(split, bucket, sample_index)`` naming the document tokens that
fill it (``sample_offset``, ``length``, ``doc_id``, ``source``, ``doc_offset``, ``doc_tokens``). The
manifest's ``source_tables`` pin that table's Delta version. A document's scores are the columns the
document stages added (``language``, ``language_score``, quality's ``q_*``, ``toxicity``,
``pii_entities``, ...), read from the tokenize stage's own document table ``<output>/tokenize``, which
carries every earlier stage's columns, at the newest version the dataset's tokenize run
(``extra.tokenize_run_id``) wrote.

Reading an old version needs Delta to keep it: the log (``delta.logRetentionDuration``, 30 days by
default) and the data files (VACUUM deletes the files of versions older than
``delta.deletedFileRetentionDuration``, 7 days by default; `etl erase` vacuums with 0 hours, on purpose).
deltalake is imported lazily: only the code that reads provenance needs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from shards.manifest import DatasetManifest

PROVENANCE_TABLE = "provenance"
KEY_COLUMNS = ("bucket", "bucket_index")  # the sample columns that key a sample in the provenance table
RUN_ID_PROPERTY = "kiln.run_id"  # the table property naming the ETL run that wrote a table
# Document columns that are not a stage's score: the text itself stays out (only the shards' tokens,
# written after the pii stage, are shown), and so do ingest's meta and the tokenize stage's own columns.
NOT_SCORES = ("id", "source", "text", "content_hash", "meta", "reason", "detail", "split", "num_tokens", "tokens")
_RETENTION = ("Delta keeps old versions only as long as delta.logRetentionDuration (the log) and "
              "delta.deletedFileRetentionDuration (files VACUUM spares) allow, and `etl erase` vacuums them all")


class ProvenanceError(Exception):
    """The provenance of a dataset version cannot be read (no such table, or the version is gone)."""


@dataclass(frozen=True)
class TableRef:
    """One Delta table at one version."""

    path: str
    delta_version: int

    def describe(self) -> dict:
        return {"path": self.path, "delta_version": self.delta_version}


@dataclass(frozen=True)
class Segment:
    """One document's tokens in one sample: ``length`` tokens from ``sample_offset`` in the sample, which
    are tokens ``doc_offset ...`` of the document's ``doc_tokens`` (EOS, and BOS when used, included)."""

    bucket: int
    sample_index: int
    sample_offset: int
    length: int
    doc_id: str
    source: str
    doc_offset: int
    doc_tokens: int


def open_delta_table(path: str, version: int | None = None):
    """A Delta table through delta-rs (no Spark job), raising delta-rs's own errors; ``s3a://`` paths
    (Spark's name) are read as ``s3://``."""
    import deltalake

    url = "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path
    # delta-rs reads the standard AWS variables itself; a plain-http endpoint (a local S3 server) must be allowed.
    options = {"AWS_ALLOW_HTTP": "true"} if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://") else None
    return deltalake.DeltaTable(url, version=version, storage_options=options)


def delta_table(path: str, version: int | None = None):
    """``open_delta_table``, a table that cannot be read being a ProvenanceError that names the retention it needs."""
    try:
        return open_delta_table(path, version)
    except Exception as err:  # delta-rs raises TableNotFoundError, DeltaError or OSError for a missing version
        at = "" if version is None else f" at version {version}"
        raise ProvenanceError(f"cannot read the Delta table {path}{at}: {err}. {_RETENTION}") from None


def arrow_dataset(table):
    """``table`` (a delta-rs DeltaTable) as a pyarrow dataset read through pyarrow's own filesystem.

    delta-rs's default reads go through a Python filesystem backed by its Rust runtime, whose threads can still
    be running when the interpreter exits: about half of the processes that read one that way aborted at exit
    ("terminate called without an active exception", delta-rs issue 2184; 4 of 8 runs here, 0 of 16 this way).
    """
    from urllib.parse import unquote, urlparse

    import pyarrow.fs as pa_fs

    uri = urlparse(table.table_uri)  # s3://bucket/prefix/ or file:///path/, percent-encoded
    root = unquote(uri.netloc + uri.path).rstrip("/")
    if uri.scheme == "s3":
        scheme, _, host = os.environ.get("AWS_ENDPOINT_URL", "").rpartition("://")
        files = pa_fs.S3FileSystem(endpoint_override=host or None, scheme=scheme or "https",
                                   region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None)
    else:
        files = pa_fs.LocalFileSystem()
    return table.to_pyarrow_dataset(filesystem=pa_fs.SubTreeFileSystem(root, files))


def provenance_table(manifest: DatasetManifest) -> TableRef:
    """The provenance table and the Delta version this dataset version was built from."""
    for table in manifest.source_tables:
        if table["path"].rstrip("/").endswith("/" + PROVENANCE_TABLE):
            return TableRef(table["path"], table["delta_version"])
    raise ProvenanceError(f"dataset v={manifest.version} names no {PROVENANCE_TABLE} table among its source "
                          "tables: it was not built by the ETL's tokenize stage")


def read_segments(manifest: DatasetManifest, split: str, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], list[Segment]]:
    """The segments of each sample ``(bucket, bucket_index)`` of ``split``, in sample order, from the
    provenance table at the manifest's version (one scan)."""
    import pyarrow.compute as pc

    keys = {(int(b), int(i)) for b, i in keys}
    table = provenance_table(manifest)
    data = arrow_dataset(delta_table(table.path, table.delta_version)).to_table(
        filter=(pc.field("split") == split) & pc.field("bucket").isin(sorted({b for b, _ in keys}))
        & pc.field("sample_index").isin(sorted({i for _, i in keys})))
    found: dict[tuple[int, int], list[Segment]] = {key: [] for key in keys}
    for row in data.to_pylist():
        key = (row["bucket"], row["sample_index"])
        if key in found:
            found[key].append(Segment(row["bucket"], row["sample_index"], row["sample_offset"], row["length"],
                                      row["doc_id"], row["source"], row["doc_offset"], row["doc_tokens"]))
    for segments in found.values():
        segments.sort(key=lambda s: s.sample_offset)
    return found


def document_segments(manifest: DatasetManifest, split: str, doc_ids: Iterable[str]) -> list[Segment]:
    """Every segment of the documents ``doc_ids`` in ``split``'s samples: which samples ``(bucket, sample_index)``
    hold their tokens and where, from the provenance table at the manifest's version (one scan, filtered by id).
    Segments in a bucket's partial last sample, which the dataset does not hold (``kept`` false), are left out."""
    import pyarrow.compute as pc

    table = provenance_table(manifest)
    data = arrow_dataset(delta_table(table.path, table.delta_version)).to_table(
        filter=(pc.field("split") == split) & pc.field("kept") & pc.field("doc_id").isin(sorted(set(doc_ids))))
    return sorted((Segment(row["bucket"], row["sample_index"], row["sample_offset"], row["length"], row["doc_id"],
                           row["source"], row["doc_offset"], row["doc_tokens"]) for row in data.to_pylist()),
                  key=lambda s: (s.bucket, s.sample_index, s.sample_offset))


def documents_table(manifest: DatasetManifest) -> TableRef:
    """``<output>/tokenize``, the documents the dataset was tokenized from with every stage's columns, at
    the newest Delta version written by the manifest's tokenize run."""
    run_id = manifest.extra.get("tokenize_run_id")
    path = provenance_table(manifest).path.rstrip("/").rsplit("/", 1)[0]
    latest = delta_table(path)
    for version in range(latest.version(), -1, -1):
        table = latest if version == latest.version() else delta_table(path, version)
        if table.metadata().configuration.get(RUN_ID_PROPERTY) == run_id:
            return TableRef(path, version)
    raise ProvenanceError(f"{path} keeps no version written by the ETL run {run_id} that built dataset "
                          f"v={manifest.version}. {_RETENTION}")


def read_scores(table: TableRef, doc_ids: Iterable[str]) -> dict[str, dict]:
    """Each document's score columns (every column but ``NOT_SCORES``); documents not found are left out
    (erased since, or never there)."""
    import pyarrow.compute as pc

    dataset = arrow_dataset(delta_table(table.path, table.delta_version))
    columns = ["id"] + [name for name in dataset.schema.names if name not in NOT_SCORES]
    data = dataset.to_table(columns=columns, filter=pc.field("id").isin(sorted(set(doc_ids))))
    return {row.pop("id"): row for row in data.to_pylist()}
