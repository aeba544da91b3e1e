"""Writing and reading the pipeline's Delta tables through Spark, the same way everywhere. Small tables
read on the driver without a Spark job go through delta-rs (shards.provenance.open_delta_table); so do,
on a local folder table, the report's reads (local_dataset) and the commits of Parquet files this process
wrote (delta_rs_folder says where they may: commit_files, overwrite_small_table).

Every statement is Spark SQL or the DataFrame reader and writer, never Delta's Python API
(``delta.tables.DeltaTable``): on Spark Connect (Databricks shared and serverless compute) that API
needs Delta's Connect plugin on the server, while SQL needs only Delta's SQL extension, which every
Delta-enabled server has. ``_temp_view`` names a DataFrame for a MERGE.

Catalog mode (``catalog: {schema: kiln_run1}``, see :func:`name_tables`): every table under the run's
output and state folders is also a table in Spark's catalog, ``kiln_run1.quality``, its data still in its
folder (an external table), and every statement here names it so, never ``delta.`path` ``: Unity Catalog
refuses path access to a table it governs. The folder of a table nested in another (exact_dedup/kept_ids)
becomes ``__`` in its name (``exact_dedup__kept_ids``).
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction, create_table_with_add_actions
from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException, PySparkException
from pyspark.sql import DataFrame, SparkSession

from shards import storage
from shards.config import ConfigError
from shards.provenance import arrow_dataset, open_delta_table

from .config import PipelineConfig, is_local_master
from .paths import is_url, join_path, local_fs_path, to_fsspec_url, to_spark_path
from .spark import is_connect


# Errors from the JVM reach Python as either, depending on whether PySpark knows the error class.
SPARK_ERRORS = (PySparkException, Py4JJavaError)

# Folder -> (schema, prefix): the tables below the folder are <schema>.<prefix><path below it, '/' as '__'>.
_NAMED_FOLDERS: dict[str, tuple[str, str]] = {}


def _absolute(path: str) -> str:
    """The path as Spark reads it, absolute: Delta reads ``delta.`path` `` as a path only when it is
    (a relative local path, as ``dedup-explain demo_out/etl ID`` gives, is made so against the working directory)."""
    spark_path = to_spark_path(path)
    if spark_path.startswith("file:"):  # as DESCRIBE DETAIL gives a local table's location
        spark_path = urlparse(spark_path).path
    return (spark_path if is_url(spark_path) else os.path.abspath(spark_path)).rstrip("/")


def delta_tables(root: str) -> list[str]:
    """Every Delta table under `root` (each folder holding a _delta_log), nested ones included."""
    if not storage.exists(to_fsspec_url(root)):
        return []
    found = set()
    for rel in storage.list_files(to_fsspec_url(root)):
        table, is_log, _ = ("/" + rel).partition("/_delta_log/")
        if is_log:
            found.add(join_path(root, table))
    return sorted(found)


def run_tables(config: PipelineConfig) -> list[str]:
    """Every Delta table of the config's run: under its output and its state folder (often inside the output)."""
    return sorted(set(delta_tables(config.output)) | set(delta_tables(config.state_root)))


def name_tables(spark: SparkSession, config: PipelineConfig) -> None:
    """In catalog mode, from here on in this process, the tables under the config's output and state
    folders are named in its schema (created if missing): ``<schema>.<stage>``, and
    ``<schema>.state__<table>`` for the state folder's (the dedup indexes, the refresh's file list).

    The catalog and the folders are made to agree first: a table on disk the schema lacks is registered
    (else it would read as absent and be overwritten: a dedup index, the refresh's list of files); a
    name whose folder is gone is dropped; a name of another output's table is refused, since every
    statement would go to that table instead."""
    folders = (_absolute(config.output), _absolute(config.state_root))
    for folder in folders:
        _NAMED_FOLDERS.pop(folder, None)
    if config.catalog is None:
        return
    if spark.conf.get("spark.sql.catalogImplementation", "in-memory") == "in-memory":
        raise ConfigError("catalog: Spark's catalog here is in-memory, gone when the job ends: catalog mode needs a "
                          "persistent one (Databricks' own, or spark.sql.catalogImplementation=hive on plain Spark)")
    schema = config.catalog.schema
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    _NAMED_FOLDERS[folders[0]] = (schema, "")
    _NAMED_FOLDERS[folders[1]] = (schema, "state__")
    for row in spark.sql(f"SHOW TABLES IN {schema}").collect():
        if row.isTemporary:
            continue
        name = f"{schema}.`{row.tableName}`"
        try:
            location = _catalog_location(spark, name)
        except AnalysisException as err:
            if err.getCondition() not in ("DELTA_PATH_DOES_NOT_EXIST", "DELTA_MISSING_DELTA_TABLE"):
                raise
            spark.sql(f"DROP TABLE {name}")  # its folder is gone (an output deleted): only the name was left
            continue
        if location is None:
            continue  # a view: no folder, no table of any output's
        location = _absolute(location)
        # Under this config's folders, not catalog_name's: this process may have named another output's.
        if not any(location.startswith(folder + "/") for folder in folders):
            raise ConfigError(f"catalog: {name} is the table at {location}, not one of this run's (under "
                              f"{config.output}): give each output a schema of its own, or DROP TABLE {name}")
    for path in run_tables(config):
        spark.sql(f"CREATE TABLE IF NOT EXISTS {catalog_name(path)} USING DELTA LOCATION '{_absolute(path)}'")


def _catalog_location(spark: SparkSession, name: str) -> str | None:
    """The table's folder as its catalog entry records it; None for a view. DESCRIBE TABLE EXTENDED
    takes 0.1 s a table on the Hive catalog; DESCRIBE DETAIL, which also computes the Delta snapshot's
    file statistics, took 0.6-0.9 s (4 s for the first in a JVM). Both fail with
    DELTA_PATH_DOES_NOT_EXIST when the folder is gone."""
    detailed = False
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect():
        detailed = detailed or row.col_name == "# Detailed Table Information"
        if detailed and row.col_name == "Location":
            return row.data_type or None
    return None


def catalog_name(path: str) -> str | None:
    """The table's name in the catalog, or None when its folder is not under one :func:`name_tables` named."""
    table = _absolute(path)
    for folder, (schema, prefix) in sorted(_NAMED_FOLDERS.items(), key=lambda item: -len(item[0])):
        if table.startswith(folder + "/"):
            return f"{schema}.`{prefix}{table[len(folder) + 1:].replace('/', '__')}`"
    return None


def sql_name(path: str) -> str:
    """The table as a SQL statement names it: its catalog name in catalog mode, else ``delta.`path` ``."""
    return catalog_name(path) or f"delta.`{_absolute(path)}`"


@contextmanager
def _temp_view(df: DataFrame):
    name = f"kiln_source_{uuid.uuid4().hex}"
    df.createOrReplaceTempView(name)
    try:
        yield name
    finally:
        df.sparkSession.catalog.dropTempView(name)


def write_table(
    df: DataFrame,
    path: str,
    *,
    partition_by: list[str] | None = None,
    replace_where: str | None = None,
    properties: dict[str, str] | None = None,
) -> None:
    """Overwrite a Delta table (or the slice `replace_where` names): reruns replace, never append."""
    path = to_spark_path(path)
    writer = df.write.format("delta").mode("overwrite")
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    else:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    _save(writer, path)
    if properties:
        set_properties(df.sparkSession, path, properties)


def _save(writer, path: str) -> None:
    """Write to the table's folder, through its catalog name in catalog mode (registering it there)."""
    name = catalog_name(path)
    if name is None:
        writer.save(path)
    else:
        writer.option("path", _absolute(path)).saveAsTable(name)


def set_properties(spark: SparkSession, path: str, properties: dict[str, str]) -> None:
    """ALTER TABLE ... SET TBLPROPERTIES, unless a table on this machine has them already (an ALTER is a
    commit, 0.1-0.3 s a table, even when it changes nothing)."""
    folder = local_table_folder(spark, path)
    if folder is not None and properties.items() <= open_delta_table(folder).metadata().configuration.items():
        return
    assignments = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(properties.items()))
    spark.sql(f"ALTER TABLE {sql_name(path)} SET TBLPROPERTIES ({assignments})")


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    name = catalog_name(path)
    if name is not None:
        return spark.sql(f"SELECT * FROM {name}" + (f" VERSION AS OF {version}" if version is not None else ""))
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(to_spark_path(path))


# A commit or a checkpoint in a table's _delta_log: 00000000000000000012.json, ...12.checkpoint.parquet,
# ...12.checkpoint.0000000001.0000000002.parquet, ...12.checkpoint.<uuid>.parquet.
_LOG_ENTRY = re.compile(r"^\d{20}\.(json|checkpoint(\.[\w-]+)*\.parquet)$")


def table_exists(spark: SparkSession, path: str) -> bool:
    """A folder table is looked up by its log's files, on this side: DESCRIBE DETAIL builds the table's
    snapshot, 0.5 s a call on a warm local session (as long as writing 10,000 documents; 3.6 s for the
    first in a JVM), and a run asks a dozen times. A named table is looked up in the catalog (0.06 s),
    which name_tables made agree with the folders. On Spark Connect (whose server may see other
    files), Spark is asked."""
    name = catalog_name(path)
    if name is not None:
        return spark.catalog.tableExists(name)
    if not is_connect(spark):
        return any(_LOG_ENTRY.match(entry) for entry in storage.list_names(to_fsspec_url(join_path(path, "_delta_log"))))
    try:
        spark.sql(f"DESCRIBE DETAIL {sql_name(path)}").collect()
    except AnalysisException as err:
        if err.getCondition() in ("DELTA_MISSING_DELTA_TABLE", "TABLE_OR_VIEW_NOT_FOUND"):
            return False
        raise
    return True


def local_table_folder(spark: SparkSession, path: str) -> str | None:
    """The folder of a table this process may read and commit to through delta-rs: a local folder table
    (not catalog mode, which names tables in Spark's catalog, nor Spark Connect, whose server may see other
    files) that exists."""
    folder = local_fs_path(path)
    if folder is None or is_connect(spark) or catalog_name(path) is not None or not table_exists(spark, path):
        return None
    return os.path.abspath(folder)


def count_rows(spark: SparkSession, path: str) -> int:
    """The table's rows. A local folder table's log counts them: every file's numRecords, which Spark's and
    delta-rs's writers record, when all are there and no file can have deletion vectors (reader version
    3 and up), in milliseconds; a Spark count is 0.3-0.7 s a table on a warm local session."""
    folder = local_table_folder(spark, path)
    if folder is not None:
        table = open_delta_table(folder)
        if table.protocol().min_reader_version < 3:
            counts = pa.table(table.get_add_actions(flatten=True)).column("num_records")
            if counts.null_count == 0:
                return pc.sum(counts).as_py() or 0
    return read_table(spark, path).count()


def local_dataset(spark: SparkSession, path: str):
    """A local run's folder table as a pyarrow dataset, read on the driver without a Spark job (a few small
    Spark jobs cost 1-3 s on a warm local session); None where Spark reads it: a cluster (its driver is one
    machine of many), not a local folder table (local_table_folder), one whose files may carry deletion
    vectors or mapped column names (reader version 2 and up), or one delta-rs cannot open."""
    folder = local_table_folder(spark, path)
    if folder is None or not is_local_master(spark.sparkContext.master):
        return None
    try:
        table = open_delta_table(folder)
    except (DeltaError, OSError):  # a table feature or log delta-rs cannot read: Spark reads it
        return None
    return arrow_dataset(table) if table.protocol().min_reader_version == 1 else None


# The table properties Spark's Delta gives a new table from Kiln's session defaults (etl.spark).
_DELTA_DEFAULTS_PREFIX = "spark.databricks.delta.properties.defaults."
_KILN_DELTA_DEFAULTS = {"delta.dataSkippingNumIndexedCols": "0"}


def delta_rs_folder(spark: SparkSession, path: str, append_schema: pa.Schema | None = None,
                    partition_by: tuple[str, ...] = ()) -> str | None:
    """The folder of a table delta-rs may commit to as Spark's Delta would; None where Spark must write it.

    That is: a local folder (not catalog mode, nor Spark Connect, whose server may see other files); the
    session's Delta table defaults Kiln's own (read from spark.conf, so runtime settings count), so a new
    table gets the properties Spark would give it; and an existing table delta-rs opens, at a protocol Spark
    gives by default ((1, 2) or below), not append-only (Spark refuses to overwrite one), partitioned by
    `partition_by` (delta-rs would keep another partitioning and read the column back as null), and, to
    append, of `append_schema`."""
    folder = local_fs_path(path)
    if folder is None or is_connect(spark) or catalog_name(path) is not None:
        return None
    defaults = {"delta." + key[len(_DELTA_DEFAULTS_PREFIX):]: value for key, value in spark.conf.getAll.items()
                if key.startswith(_DELTA_DEFAULTS_PREFIX)}
    if defaults != _KILN_DELTA_DEFAULTS:
        return None
    folder = os.path.abspath(folder)
    if table_exists(spark, path):
        try:
            table = open_delta_table(folder)
        except (DeltaError, OSError):  # a table feature or log delta-rs cannot read: Spark writes it
            return None
        if table.metadata().partition_columns != list(partition_by):
            return None
        protocol = table.protocol()
        if protocol.min_reader_version > 1 or protocol.min_writer_version > 2:
            return None
        if table.metadata().configuration.get("delta.appendOnly", "false").lower() == "true":
            return None
        fields = [(field.name, field.type.type) for field in table.schema().fields]
        if append_schema is not None and fields != [(field.name, "string") for field in append_schema]:
            return None
    return folder


def commit_files(folder: str, schema: pa.Schema, files: dict[str, tuple[int, int]], mode: str,
                 partition: dict[str, str] | None = None) -> None:
    """One Delta commit adding `files` (name under the partition's folder -> (bytes, rows)), written by this
    process into a folder delta_rs_folder gave, overwriting or appending (`mode`), or creating the table.
    An existing table keeps its properties and id, as under Spark's writer. Statistics are the row count
    alone, as in Kiln's Spark tables (no min/max of any text). `partition`: column -> the value every file
    holds (a column of `schema` that the files lack)."""
    prefix = _partition_prefix(partition)
    now = int(time.time() * 1000)
    actions = [AddAction(path=prefix + name, size=size, partition_values=dict(partition or {}), modification_time=now,
                         data_change=True, stats=json.dumps({"numRecords": rows}))
               for name, (size, rows) in sorted(files.items())]
    partition_by = list(partition) if partition else None
    if _has_log(folder):
        DeltaTable(folder).create_write_transaction(actions, mode, Schema.from_arrow(schema), partition_by=partition_by)
    else:
        create_table_with_add_actions(folder, Schema.from_arrow(schema), actions, partition_by=partition_by,
                                      configuration=_KILN_DELTA_DEFAULTS)


def _partition_prefix(partition: dict[str, str] | None) -> str:
    """The folder below the table's that holds a partition's files: ``stage=ingest/``; empty for none."""
    return "".join(f"{column}={value}/" for column, value in (partition or {}).items())


def _has_log(folder: str) -> bool:
    log = os.path.join(folder, "_delta_log")
    return any(_LOG_ENTRY.match(name) for name in (os.listdir(log) if os.path.isdir(log) else []))


def remove_unlisted(folder: str, marker: str, partition: dict[str, str] | None = None) -> None:
    """After a failed commit_files: remove the files this process wrote for it (those under the partition's
    folder whose name holds `marker`) that the table's log does not list; no log would list them, so they
    would outlive VACUUM LITE and erasure. The log is read again first: a commit can fail after its entry is
    written (delta-rs then runs its post-commit hooks, such as a checkpoint), and its files are the table's.
    A log delta-rs cannot read leaves them all."""
    files = os.path.join(folder, _partition_prefix(partition))
    try:
        listed = {os.path.normpath(uri) for uri in DeltaTable(folder).file_uris()} if _has_log(folder) else set()
    except (DeltaError, OSError):  # keep the files rather than risk removing one the table holds
        return
    for name in os.listdir(files) if os.path.isdir(files) else []:
        path = os.path.join(files, name)
        if marker in name and os.path.normpath(path) not in listed:
            os.remove(path)


def overwrite_small_table(spark: SparkSession, path: str, rows: pa.Table) -> bool:
    """Overwrite the table with `rows` as one Parquet file committed by delta-rs, where delta_rs_folder allows
    (a Spark write of a few rows is a job and two commits, 1-2 s on a local session); False where it does not,
    and the caller writes through Spark."""
    folder = delta_rs_folder(spark, path)
    if folder is None:
        return False
    os.makedirs(folder, exist_ok=True)
    name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
    pq.write_table(rows, os.path.join(folder, name), compression="snappy")
    try:
        commit_files(folder, rows.schema, {name: (os.path.getsize(os.path.join(folder, name)), rows.num_rows)},
                     "overwrite")
    except BaseException:
        remove_unlisted(folder, name)
        raise
    return True


def table_version(spark: SparkSession, path: str) -> int:
    history = spark.sql(f"DESCRIBE HISTORY {sql_name(path)} LIMIT 1").select("version").collect()
    return int(history[0]["version"])


# Commits that never remove a data file; any other may, unless its metrics say it removed none.
_REMOVES_NO_FILES = {"SET TBLPROPERTIES", "UNSET TBLPROPERTIES", "VACUUM START", "VACUUM END"}


def ever_removed_files(spark: SparkSession, path: str) -> bool:
    """Whether any commit of the table may have removed a data file (or replaced a deletion vector),
    so that VACUUM may have one to delete. Only a table whose whole log is still there (from version 0)
    can answer no: one a run has just created, or one whose writes never replaced anything."""
    history = spark.sql(f"DESCRIBE HISTORY {sql_name(path)}").select(
        "version", "operation", "operationParameters", "operationMetrics").collect()
    if min(row.version for row in history) != 0:
        return True

    def removed(row) -> bool:  # a commit without the metric (MERGE counts numTargetFilesRemoved) may have
        metrics = row.operationMetrics or {}
        removed_none = metrics.get("numRemovedFiles") == "0" and all(
            metrics.get(key, "0") == "0" for key in ("numDeletionVectorsAdded", "numDeletionVectorsUpdated"))
        appended = row.operation == "WRITE" and (row.operationParameters or {}).get("mode") == "Append"
        return row.version > 0 and row.operation not in _REMOVES_NO_FILES and not removed_none and not appended

    return any(removed(row) for row in history)


class VacuumError(RuntimeError):
    """A table only VACUUM FULL could clean, which would also delete the tables nested in it."""


def vacuum(spark: SparkSession, path: str, hours: int, tables: list[str]) -> bool:
    """Delete the files the table's log dropped over `hours` ago; False when it cannot have one
    (:func:`ever_removed_files`), where VACUUM would cost 1.4-2.5 s (it logs two commits) to delete
    nothing. LITE finds the files in the log, so the `tables` nested in this one are never touched;
    once log cleanup has dropped commits since the last VACUUM, only FULL (a listing of the folder)
    finds them, which a table with nested tables cannot take."""
    if not ever_removed_files(spark, path):
        return False
    nested = [t for t in tables if t.startswith(path + "/")]
    table = sql_name(path)
    try:
        spark.sql(f"VACUUM {table} LITE RETAIN {hours} HOURS").collect()
    except SPARK_ERRORS as err:
        if "DELTA_CANNOT_VACUUM_LITE" not in str(err):
            raise
        if nested:
            raise VacuumError(
                f"{path}: its log no longer lists every file it dropped, so only VACUUM FULL could delete "
                f"them, and that would also delete the tables nested in it ({', '.join(nested)}). Copy those "
                f"tables elsewhere, run VACUUM {table} RETAIN {hours} HOURS, and copy them back."
            ) from None
        spark.sql(f"VACUUM {table} RETAIN {hours} HOURS").collect()
    return True


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    return spark.sql(f"DESCRIBE DETAIL {sql_name(path)}").select("properties").collect()[0]["properties"]


def create_table_if_not_exists(spark: SparkSession, path: str, columns: list[tuple[str, str, bool]],
                               properties: dict[str, str]) -> None:
    """An empty table with ``columns`` (name, SQL type, nullable) and ``properties``, unless one is there."""
    listed = ", ".join(f"`{name}` {sql_type}{'' if nullable else ' NOT NULL'}" for name, sql_type, nullable in columns)
    assignments = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(properties.items()))
    location = f" LOCATION '{_absolute(path)}'" if catalog_name(path) else ""
    spark.sql(f"CREATE TABLE IF NOT EXISTS {sql_name(path)} ({listed}) USING DELTA{location}"
              + (f" TBLPROPERTIES ({assignments})" if properties else ""))


def append_rows(df: DataFrame, path: str, partition_by: list[str] | None = None) -> None:
    """Append to a Delta table (creating it, partitioned by ``partition_by``): for logs of what happened, or
    a table the running job emptied itself (etl.pipeline's rejected rows), never for data a rerun rewrites."""
    writer = df.write.format("delta").mode("append")
    _save(writer.partitionBy(*partition_by) if partition_by else writer, to_spark_path(path))


def merge_into(spark: SparkSession, path: str, source: DataFrame, key: str, clauses: str,
               evolve_schema: bool = False) -> None:
    """MERGE ``source`` (aliased ``s``) into the table (aliased ``t``) on equal ``key``, with the SQL
    ``clauses`` (WHEN MATCHED ... / WHEN NOT MATCHED ...). ``evolve_schema``: columns the table lacks are
    added to it."""
    evolution = " WITH SCHEMA EVOLUTION" if evolve_schema else ""
    with _temp_view(source) as view:
        spark.sql(f"MERGE{evolution} INTO {sql_name(path)} t USING {view} s ON t.`{key}` = s.`{key}` {clauses}")


def insert_new_rows(spark: SparkSession, path: str, rows: DataFrame, key: str, evolve_schema: bool = False) -> None:
    """A MERGE that only inserts: the rows whose ``key`` the table lacks; rows it has stay as they are.
    ``evolve_schema``: columns the table lacks are added to it."""
    merge_into(spark, path, rows, key, "WHEN NOT MATCHED THEN INSERT *", evolve_schema)


def delete_rows(spark: SparkSession, path: str, key: str, targets: DataFrame) -> None:
    """Delete the rows whose ``key`` is one of ``targets.id``, and rewrite the files that held them."""
    # A MERGE rather than DELETE ... IN (...): the ids never enter the table's log.
    with _temp_view(targets) as view:
        spark.sql(f"MERGE INTO {sql_name(path)} t USING {view} e ON t.`{key}` = e.id WHEN MATCHED THEN DELETE")
    # Deletion vectors (on by default on Databricks) only mark rows deleted: rewrite those files.
    spark.sql(f"REORG TABLE {sql_name(path)} APPLY (PURGE)").collect()
