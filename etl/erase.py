"""Erasure requests (takedowns, data-subject requests): documents out of every Delta table of a
pipeline, the old files holding their text deleted, and a dataset version published without them.

``python -m etl erase CONFIG --ids FILE [--retire-versions]``. FILE holds one document id per line
(ids always hold a '/'), or a content hash (40 hex digits) that stands for every document whose
``content_hash``, in any table, has that value. In order:

1. which dataset versions hold the documents: each version's manifest names the provenance table
   and the Delta version it was built from, read before anything is deleted;
2. their rows leave every Delta table under the output and state roots: by ``id``, provenance by
   ``doc_id``, the exact_dedup index by ``kept_id``; deletion vectors are purged;
3. the dataset stages run again over the dataset's source table: a new version without them;
4. every table is vacuumed with retention 0, so no file of an earlier table version remains (time
   travel to those versions ends here);
5. a report, printed (counts and versions, never text) and in ``<output>/report/erasure-<run>.json``:
   the old dataset versions that still hold the documents, or can no longer be checked, and
   ``--retire-versions`` deletes those.

An output that another command left incomplete (see etl/run_state.py) is refused before anything
is read; an erasure that stopped midway is finished by running it again.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import fsspec
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from tqdm import tqdm

from shards import list_versions, read_manifest, storage, version_path

from .config import PipelineConfig
from .dataset.publish import publish, split_stages
from .delta import SPARK_ERRORS, VacuumError, delete_rows, read_table, run_tables, vacuum
from .funnel import new_run_id
from .paths import join_path, to_fsspec_url
from .pipeline import Pipeline
from .refresh import dataset_source
from .run_state import incomplete_run, mark_complete, mark_running
from .spark import get_spark, temporary_conf
from .stages.base import Stage
from .stages.exact_dedup import INDEX_TABLE as EXACT_INDEX

RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
TABLES_AT_ONCE = 4
DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")
_CONTENT_HASH = re.compile(r"[0-9a-f]{40}")


class ErasureError(RuntimeError):
    """A request or an output that an erasure cannot go through with."""


@dataclass
class ErasureReport:
    run_id: str
    requested_ids: int
    requested_hashes: int
    documents: int  # distinct ids found and erased
    not_found: list[str]  # requested ids and hashes no table holds: never there, or erased before
    rows_deleted: dict[str, int]  # table -> rows
    # Ids rejected as duplicates of an erased document: not erased, and their text is still there.
    duplicates_not_erased: list[str]
    new_version: int | None
    versions_holding: dict[int, int]  # old dataset version -> erased documents in it
    versions_unchecked: dict[int, str]  # old dataset version -> why it cannot be checked
    retired: list[int]


def read_request(path: str) -> tuple[list[str], list[str]]:
    """(ids, content hashes) of a request file; blank lines and '#' comments are skipped."""
    ids, hashes = set(), set()
    try:
        with fsspec.open(to_fsspec_url(path), "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                value = line.strip()
                if not value or value.startswith("#"):
                    continue
                if "/" in value:
                    ids.add(value)
                elif _CONTENT_HASH.fullmatch(value.lower()):
                    hashes.add(value.lower())
                else:
                    raise ErasureError(f"{path}:{number}: neither a document id (<source>/...) nor a content hash (40 hex digits)")
    except FileNotFoundError:
        raise ErasureError(f"request file not found: {path}") from None
    if not ids and not hashes:
        raise ErasureError(f"{path}: no document id or content hash in it")
    return sorted(ids), sorted(hashes)


def erase(config: PipelineConfig, stages: list[Stage], request: str, spark: SparkSession | None = None,
          retire_versions: bool = False, progress=print) -> ErasureReport:
    ids, hashes = read_request(request)
    refused = incomplete_run(config.output, "erase")
    if refused:
        raise ErasureError(refused)
    spark = spark or get_spark("kiln-erase", config.spark_conf)
    pipeline = Pipeline(replace(config, report=False), stages, spark)  # names the tables, in catalog mode
    run_id = new_run_id()
    tables = run_tables(config)
    if not tables:
        raise ErasureError(f"no Delta table under {config.output} or {config.state_root}: nothing to erase from")
    mark_running(config.output, run_id, "erase")
    # 1. the documents' rows in every table, and the dataset versions holding them
    exact_index = join_path(config.state_root, EXACT_INDEX)
    keys = dict(zip(tables, _each_table(tables, lambda path: _key_column(spark, path, exact_index), "reading tables")))
    keys = {path: key for path, key in keys.items() if key is not None}

    resolved, matched_hashes = _ids_of_hashes(spark, keys, hashes)
    targets = spark.createDataFrame([(i,) for i in sorted(set(ids) | resolved)], "id string").cache()
    counts = _each_table(list(keys), lambda path: _rows_of(spark, path, keys[path], targets), "finding rows")
    rows = {path: sum(c.values()) for path, c in zip(keys, counts) if c}
    found = set().union(*counts)
    not_found = [i for i in ids if i not in found] + [h for h in hashes if h not in matched_hashes]
    duplicates = _duplicates_of(spark, config, keys, targets) - found
    _, dataset = split_stages(stages)
    root = dataset.root(config.output) if dataset is not None else None
    complete = list_versions(root) if root else []
    holding, unchecked = _versions_holding(spark, root, complete, targets) if root else ({}, {})
    progress(f"erase {run_id}: {len(found)} documents found ({len(ids)} ids, {len(hashes)} content hashes "
             f"requested); {len(not_found)} not found (never there, or erased before)")

    # 2. delete, 3. publish a version without them, 4. vacuum
    _each_table(list(rows), lambda path: delete_rows(spark, path, keys[path], targets), "deleting rows")
    progress(f"deleted {sum(rows.values()):,} rows from {len(rows)} tables")
    new_version = None
    source = dataset_source(spark, config, stages)
    current = complete[-1] if complete else None  # nothing is published between the listing and here
    if dataset is not None and (source in rows or current in holding or current in unchecked):
        run = pipeline.new_run()
        new_version = publish(pipeline, run, dataset, progress, source=source)
        pipeline.finish(run, progress)
        if new_version == current:  # built without them, the same content: the current version lacks them
            new_version = None
            unchecked.pop(current, None)
    targets.unpersist()
    tables = run_tables(config)
    with _retention_check_off(spark):
        vacuumed = _each_table(tables, lambda path: _vacuum(spark, path, tables), "vacuuming")
    progress(f"vacuumed {sum(vacuumed)} tables (retention 0); {len(tables) - sum(vacuumed)} had never dropped a file")

    # 5. report, and retire the old versions if asked
    retired = []
    if retire_versions:
        for version in sorted(set(holding) | set(unchecked)):
            fs, path = storage.open_fs(version_path(root, version))
            fs.rm(path, recursive=True)
            retired.append(version)
    report = ErasureReport(run_id, len(ids), len(hashes), len(found), not_found, rows, sorted(duplicates),
                           new_version, holding, unchecked, retired)
    report_path = join_path(config.output, "report", f"erasure-{run_id}.json")
    storage.atomic_write_bytes(to_fsspec_url(report_path), (json.dumps(asdict(report), indent=2, sort_keys=True) + "\n").encode())
    mark_complete(config.output, run_id)
    _print_summary(report, progress)
    progress(f"report: {report_path}")
    return report


def _each_table(tables: list[str], work, what: str) -> list:
    """work(table) for every table, a few at once (a Delta operation on a small table is mostly
    waiting on its log), in order, with a progress bar."""
    with ThreadPoolExecutor(TABLES_AT_ONCE) as pool:
        return list(tqdm(pool.map(work, tables), total=len(tables), desc=what, unit="table", leave=False))


def _key_column(spark: SparkSession, path: str, exact_index: str) -> str | None:
    """The column naming the document each row belongs to, if the table has one."""
    if path == exact_index:
        return "kept_id"
    columns = read_table(spark, path).columns
    return next((c for c in ("id", "doc_id") if c in columns), None)


def _ids_of_hashes(spark: SparkSession, keys: dict[str, str], hashes: list[str]) -> tuple[set[str], set[str]]:
    """The ids of every document with one of these content hashes, in any table; and the hashes found."""
    ids, found = set(), set()
    for path, key in keys.items() if hashes else ():
        table = read_table(spark, path)
        if key == "id" and "content_hash" in table.columns:
            for row in table.where(F.col("content_hash").isin(hashes)).select("id", "content_hash").distinct().collect():
                ids.add(row["id"])
                found.add(row["content_hash"])
    return ids, found


def _rows_of(spark: SparkSession, path: str, key: str, targets: DataFrame) -> dict[str, int]:
    """Target document -> its rows in the table."""
    counts = read_table(spark, path).select(F.col(key).alias("id")).join(targets, "id", "left_semi").groupBy("id").count()
    return {r["id"]: r["count"] for r in counts.collect()}


def _duplicates_of(spark: SparkSession, config: PipelineConfig, keys: dict[str, str], targets: DataFrame) -> set[str]:
    """Documents rejected as duplicates of a target: copies the request did not name."""
    found = set()
    for name in ("rejected", "rejected_curated"):
        path = join_path(config.output, name)
        if path in keys:
            rows = (read_table(spark, path).where(F.col("reason").isin(*DUPLICATE_REASONS))
                    .join(targets.select(F.col("id").alias("detail")), "detail", "left_semi").select("id").collect())
            found.update(r["id"] for r in rows)
    return found


def _versions_holding(spark: SparkSession, root: str, complete: list[int],
                      targets: DataFrame) -> tuple[dict[int, int], dict[int, str]]:
    """Dataset versions -> how many target documents they hold (from the provenance table each was
    built from), and the versions that cannot be checked, with why. ``complete``: list_versions(root)."""
    holding, unchecked = {}, {}
    for version in list_versions(root, include_incomplete=True):
        if version not in complete:
            unchecked[version] = "incomplete: a build that did not finish (no manifest)"
            continue
        sources = [t for t in read_manifest(version_path(root, version)).source_tables if t["path"].endswith("/provenance")]
        if not sources:
            unchecked[version] = "its manifest names no provenance table"
            continue
        path, delta_version = sources[0]["path"], sources[0]["delta_version"]
        try:
            count = (read_table(spark, path, delta_version).select(F.col("doc_id").alias("id"))
                     .join(targets, "id", "left_semi").distinct().count())
        except SPARK_ERRORS:
            unchecked[version] = f"{path} at version {delta_version} cannot be read (vacuumed)"
            continue
        if count:
            holding[version] = count
    return holding, unchecked


def _retention_check_off(spark: SparkSession):
    """VACUUM refuses retention below 7 days unless this check is off: off for the erasure's vacuums
    only, then restored."""
    return temporary_conf(spark, {RETENTION_CHECK: "false"})


def _vacuum(spark: SparkSession, path: str, tables: list[str]) -> bool:
    """Delete now every file the table no longer references (retention 0); False when it has none.
    `tables`: the run's, among which those nested in this one."""
    try:
        return vacuum(spark, path, 0, tables)
    except VacuumError as err:
        raise ErasureError(str(err)) from None


def _print_summary(report: ErasureReport, progress) -> None:
    if report.duplicates_not_erased:
        progress(f"{len(report.duplicates_not_erased)} documents rejected as duplicates of erased ones were not "
                 "named in the request; their ids are in the report: add them to erase their text too")
    if report.new_version is not None:
        progress(f"dataset version {report.new_version} published without the erased documents")
    versions = [f"v={v} ({n} documents)" for v, n in sorted(report.versions_holding.items())]
    versions += [f"v={v} (cannot tell: {why})" for v, why in sorted(report.versions_unchecked.items())]
    if report.retired:
        progress(f"retired dataset versions: {', '.join(f'v={v}' for v in report.retired)}")
    elif versions:
        progress(f"dataset versions still holding them: {'; '.join(versions)}; delete them with --retire-versions")
