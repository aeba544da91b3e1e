"""The pipeline's YAML, as typed dataclasses.

```yaml
output: out/run1
inputs:
  - {path: data/web/*.jsonl.gz, format: jsonl, source: web, id_field: url}
stages:
  - {name: fix_encoding}
  - {name: quality, params: {min_words: 50}}
  - {name: exact_dedup}
```
Each stage's ``params`` are checked against that stage's own ``Params`` dataclass when the config is
loaded (etl/load_config.py); this module holds the types and the checks of the config's own fields.

Local paths (output, state_dir, inputs, and the stage parameters a stage lists in ``path_params``)
are made absolute against the working directory when the config is loaded: Delta reads
``delta.`path` `` as a path only when it is absolute, and Spark's workers may run elsewhere. With a
master that is not ``local``, a relative local path is an error, since every node has its own
working directory. URLs (``s3a://``, ``dbfs:/``, ``file:/``) are left as they are.
"""
from __future__ import annotations

import glob
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Literal

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from shards.config import ConfigError

from .paths import COMPRESSED_SUFFIXES, is_url, join_path, local_fs_path
from .spark import is_connect

InputFormat = Literal["jsonl", "parquet", "text", "delta", "warc", "wet"]


@dataclass
class InputSpec:
    """One input: files (glob), a Delta table's folder, or a table in Spark's catalog; how its fields map to ours."""

    # A file, folder or glob (local, relative to the working directory, or s3a://), or a Delta table's folder.
    path: str | None = None
    source: str = ""  # a short name for this input; ids are namespaced by it and it is a column
    # Instead of a path: a table in the session's catalog, `db.name` or `catalog.schema.table` (Unity
    # Catalog), read with spark.table; it needs id_field, as a Delta folder does.
    table: str | None = None
    format: InputFormat = "jsonl"  # jsonl (plain, .gz, .bz2, .xz, .zst), parquet, text (a document per file), delta, warc or wet (plain or .gz)
    text_field: str = "text"  # the field or column holding the document text
    # The input's own document id; when absent the id is derived from (source, file, row). An id
    # given twice keeps the copy in the newest file (then last path, last row); see docs/etl/ingest.md.
    id_field: str | None = None
    # Extra input fields kept as a string map column `meta` (e.g. url, timestamp).
    keep_fields: list[str] = field(default_factory=list)
    # warc/wet inputs: how the main text is taken from HTML, resiliparse or trafilatura (docs/etl/ingest.md).
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"

    def __post_init__(self):
        if not self.source or "/" in self.source:
            raise ValueError(f"source must be a non-empty name without '/', got {self.source!r}")
        if (self.path is None) == (self.table is None):
            raise ValueError(f"input {self.source!r}: give a path (files or a Delta folder) or a table (a catalog "
                             f"name), one of the two")
        if self.table is not None:
            if not TABLE_NAME.fullmatch(self.table):
                raise ValueError(f"input {self.source!r}: table {self.table!r} is not a catalog name: "
                                 "db.name or catalog.schema.table")
            if self.format not in ("jsonl", "delta"):  # jsonl: the default, left as it is
                raise ValueError(f"input {self.source!r}: format {self.format!r} does not apply to a catalog table")
            if not self.id_field:
                raise ValueError(f"input {self.source!r}: a catalog table needs id_field (file positions are not stable in Delta)")
            self.format = "delta"
        if self.is_web_archive and (self.id_field or self.keep_fields):
            raise ValueError("id_field and keep_fields do not apply to warc/wet inputs (their URL and date are kept in meta)")

    @property
    def is_web_archive(self) -> bool:
        """WARC or WET: one row per record, some skipped as not documents, a URL rule beside the id rule."""
        return self.format in ("warc", "wet")

    @property
    def where(self) -> str:
        """The path, or the catalog table, for messages."""
        return self.path if self.table is None else f"table {self.table}"


# A catalog table's name: two or three identifiers, each plain or in backticks.
TABLE_NAME = re.compile(r"(?:\w+|`[^`]+`)(?:\.(?:\w+|`[^`]+`)){1,2}")


@dataclass
class StageSpec:
    name: str  # one of the stages below
    params: dict[str, Any] = field(default_factory=dict)  # that stage's parameters (its table below)


@dataclass
class ReportConfig:
    """The run report (``<output>/report/report.html`` and its JSON twin ``report.json``): what it shows and when it warns."""

    enabled: bool = True  # write the report; `report: false` in the YAML is short for `report: {enabled: false}`
    # Warn when one stage removes more than this share of the documents it was given (0.9: nine in ten).
    max_stage_removal: float = 0.5
    # Warn when the published dataset version's tokens differ from the previous version's by more than this share.
    max_token_change: float = 0.3
    examples_per_reason: int = 3  # example documents shown per rejection reason (PII redacted, truncated)
    example_chars: int = 400  # characters shown of each example document
    # Kept, and as many rejected, documents per stage whose scores go to the driver for the histograms
    # (sampled while the stage's output is cached): a shape needs no more. 0: no histograms.
    histogram_sample: int = 20_000
    dedup_clusters: int = 8  # largest near-duplicate clusters listed
    dedup_pairs: int = 3  # near-duplicate pairs shown side by side (the least similar first: the borderline ones)
    # Log the funnel, warnings and stage metrics to MLflow at this tracking URI (e.g. sqlite:///mlflow.db,
    # http://mlflow:5000, databricks); null: no MLflow.
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "kiln-etl"  # the MLflow experiment the runs are logged under

    def __post_init__(self):
        for name in ("max_stage_removal", "max_token_change"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"report.{name} is a share between 0 and 1, got {getattr(self, name)!r}")
        for name in ("examples_per_reason", "example_chars", "histogram_sample", "dedup_clusters", "dedup_pairs"):
            if getattr(self, name) < 0:
                raise ValueError(f"report.{name} must not be negative, got {getattr(self, name)!r}")


@dataclass
class CatalogConfig:
    """Catalog mode: every table the run writes is also a table in Spark's catalog (external: its data stays
    in its folder), ``<schema>.<stage>``, ``<schema>.rejected``..., and Kiln's statements name them so. It needs
    a persistent catalog (Databricks' own, or Hive's), and a schema of its own for each output."""

    schema: str  # the schema (database) the tables go in, `name` or `catalog.schema` (Unity Catalog); created if missing

    def __post_init__(self):
        if not SCHEMA_NAME.fullmatch(self.schema):
            raise ValueError(f"catalog.schema {self.schema!r} is not a schema name: name or catalog.schema")


# A schema's name: one or two identifiers, each plain or in backticks.
SCHEMA_NAME = re.compile(r"(?:\w+|`[^`]+`)(?:\.(?:\w+|`[^`]+`))?")


@dataclass
class PipelineConfig:
    output: str  # root of every table, the report and (by default) the dataset; local (relative: to the working directory) or s3a://
    inputs: list[InputSpec]  # read and unioned by ingest
    stages: list[StageSpec]  # run in this order after ingest
    # Documents larger than this (UTF-8 bytes) are rejected at ingest: a 100 MB "document" is a bug upstream.
    max_doc_bytes: int = 1_000_000
    # Incremental runs keep state (processed files, dedup indices) here; default <output>/_state.
    state_dir: str | None = None
    # The run report under <output>/report (HTML, JSON, the funnel in Delta): true, false, or its settings.
    report: bool | ReportConfig = field(default_factory=ReportConfig)
    # Spark settings for a session this job creates; never applied over spark-submit's or a cluster's own.
    spark_conf: dict[str, str] = field(default_factory=dict)
    # Raw-zone tables (before the `pii` stage, and `rejected`) keep files an overwrite replaced for
    # this many hours, then VACUUM removes them; null: Delta's defaults (7 days, never vacuumed by us).
    raw_zone_retention_hours: int | None = None
    # Catalog mode: {schema: kiln_run1} registers each table as kiln_run1.<stage> (docs/cluster.md); null: paths only.
    catalog: CatalogConfig | None = None

    def __post_init__(self):
        if isinstance(self.report, bool):
            self.report = ReportConfig(enabled=self.report)
        if not self.inputs:
            raise ValueError("inputs: at least one input is required")
        sources = [i.source for i in self.inputs]
        if len(set(sources)) != len(sources):
            raise ValueError(f"inputs: source names must be unique, got {sources}")
        if self.max_doc_bytes <= 0:
            raise ValueError("max_doc_bytes must be positive")
        if self.raw_zone_retention_hours is not None and self.raw_zone_retention_hours < 0:
            raise ValueError(f"raw_zone_retention_hours must be >= 0, got {self.raw_zone_retention_hours}")

    @property
    def state_root(self) -> str:
        return self.state_dir or join_path(self.output, "_state")


def spark_master() -> str:
    """The master of the job's Spark session, known before the session starts: the active session's,
    spark-submit's (its JVM is already running), else KILN_SPARK_MASTER, else local."""
    if os.environ.get("SPARK_REMOTE"):  # Spark Connect: the server, and its master, are elsewhere
        return os.environ["SPARK_REMOTE"]
    active = SparkSession.getActiveSession()
    if active is not None:
        return "spark-connect" if is_connect(active) else active.sparkContext.master
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # launched by spark-submit, whose JVM holds --master
        SparkContext._ensure_initialized()
        return SparkConf().get("spark.master", "local[*]")
    return os.environ.get("KILN_SPARK_MASTER", "local[*]")


def is_local_master(master: str) -> bool:
    """Whether every Spark worker runs on this machine, in this working directory."""
    return master == "local" or master.startswith("local[")


def absolute_path(value, where: str, master: str):
    """A local path made absolute against the working directory (see the module's docstring); a
    list or mapping of paths, each; None and URLs as they are."""
    if isinstance(value, list):
        return [absolute_path(v, f"{where}[{i}]", master) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: absolute_path(v, f"{where}.{k}", master) for k, v in value.items()}
    if value is None or is_url(value):
        return value
    path = os.path.expanduser(value)
    if os.path.isabs(path):
        return path
    if not is_local_master(master):
        raise ConfigError(
            f"{where}: {path!r} is relative, but Spark's master is {master!r}, whose nodes do not share "
            "this working directory: give an absolute path on storage every node sees, or an object-store "
            "URL (s3a://bucket/...)")
    return os.path.abspath(path)


def make_paths_absolute(config: PipelineConfig, master: str) -> None:
    """The config's own local paths (output, state_dir, inputs), absolute."""
    config.output = absolute_path(config.output, "config.output", master)
    config.state_dir = absolute_path(config.state_dir, "config.state_dir", master)
    for i, spec in enumerate(config.inputs):
        spec.path = absolute_path(spec.path, f"config.inputs[{i}].path", master)


def check_inputs_exist(config: PipelineConfig) -> None:
    """Each local input matches a file, and a Delta input is a table, before Spark starts."""
    for i, spec in enumerate(config.inputs):
        local = local_fs_path(spec.path) if spec.table is None else None  # a catalog table: checked by ingest
        if local is not None and not glob.glob(local):
            raise ConfigError(f"config.inputs[{i}].path: no file or table matches {spec.path!r}")
        if spec.format == "delta" and local is not None and not os.path.isdir(os.path.join(local, "_delta_log")):
            raise ConfigError(f"config.inputs[{i}].path: {spec.path!r} is not a Delta table (no _delta_log)")


# A compressed input holds about this many times its size in text (gzipped JSONL of web text: 3-4x).
COMPRESSED_TEXT_RATIO = 4


def local_data_bytes(config: PipelineConfig, stop_above: int, reads_output: bool) -> int | None:
    """About how many bytes a run of ``config`` reads from files on this machine: its inputs (a
    compressed file counted at COMPRESSED_TEXT_RATIO times its size), its state (dedup indexes, the
    refresh's list of files), and with ``reads_output`` its output's tables as they stand (a refresh
    adds to them, an erasure rewrites them). None when one of them is elsewhere (an object store, a
    catalog table), whose size is not known here. Counting stops once it passes ``stop_above``."""
    if any(spec.table is not None for spec in config.inputs):
        return None
    inputs = [local_fs_path(spec.path) for spec in config.inputs]
    folders = [local_fs_path(path) for path in ([config.output] if reads_output else [config.state_root])]
    if None in inputs + folders:
        return None
    places = [match for pattern in inputs for match in glob.glob(pattern, recursive=True)] + folders
    total = 0
    for place in places:
        if os.path.isdir(place):
            files = (os.path.join(folder, name) for folder, _, names in os.walk(place) for name in names)
        else:
            files = [place] if os.path.exists(place) else []
        for path in files:
            try:
                size = os.path.getsize(path)
            except OSError:
                continue  # removed meanwhile
            total += size * COMPRESSED_TEXT_RATIO if path.endswith(COMPRESSED_SUFFIXES) else size
            if total > stop_above:
                return total
    return total


def check_outputs_writable(config: PipelineConfig) -> None:
    for key in ("output", "state_dir"):
        if getattr(config, key) is not None:
            check_writable(getattr(config, key), f"config.{key}")


def check_writable(path: str, where: str) -> None:
    """A one-line error now, instead of a Java stack trace later, when a local output folder cannot
    be created or written. Nothing is left behind: a probe folder is made and removed."""
    local = local_fs_path(path)
    if local is None:
        return
    existing = local
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{where}: cannot create {path}: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kiln-write-check-", dir=existing))
    except OSError as err:
        raise ConfigError(f"{where}: cannot write {path}: creating a folder in {existing} fails ({err.strerror})") from None

