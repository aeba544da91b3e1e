"""Scheduled refresh: an incremental run over the input files that no refresh has taken yet.

``python -m etl refresh CONFIG`` (or ``spark-submit jobs/refresh.py --config CONFIG``):

1. list the inputs' files and keep those not in ``<state_root>/refresh_files``; a file taken before
   whose size or modification time has changed is an error (see `TakenFiles.new`);
2. ingest just those files and run the document stages on them;
   exact_dedup and minhash_dedup must be incremental, so they match against everything kept before;
3. ``accumulate`` adds the documents they kept to ``<output>/cumulative`` (MERGE by id);
4. the dataset stages (``tokenize`` + ``shuffle_and_write``, etl/dataset) over the whole cumulative
   table publish a new dataset version;
5. record the files taken, only now that the version is published.

With no new file nothing is written ("nothing new"). A crash before step 5 takes the same files
again next time: the dedup indices replay their decisions and the MERGE adds no document twice.
An output that another command left incomplete (`etl run` or `etl erase` stopped midway; see
etl/run_state.py) is refused: its tables may mix two runs. A publish whose content equals the
newest dataset version's keeps that version (shuffle_and_write says "unchanged").
The stage tables and ``rejected`` hold the latest refresh's batch (its funnel adds up on its own);
earlier batches stay in their Delta history.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

import fsspec
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shards.config import ConfigError

from .config import PipelineConfig
from .dataset.publish import DATASET_STAGES, publish, split_stages
from .delta import append_rows, insert_new_rows, read_table, table_exists, table_version, write_table
from .funnel import PipelineRun
from .ingest import file_modified, list_input_files
from .paths import join_path, to_fsspec_url
from .pipeline import Pipeline
from .run_state import incomplete_run, mark_complete, mark_running
from .spark import CACHE_LEVEL, get_spark
from .stages.base import NoParams, Stage, StageContext, StageResult

CUMULATIVE_TABLE = "cumulative"
FILES_TABLE = "refresh_files"
INCREMENTAL_STAGES = ("exact_dedup", "minhash_dedup")
_FILES_SCHEMA = (
    "url string, source string, size long, modified string, run_id string, taken_at timestamp, "
    "cumulative_version long, dataset_version long"
)


class RefreshError(RuntimeError):
    """The inputs changed in a way a refresh must not guess about."""


@dataclass(frozen=True)
class InputFile:
    url: str
    rel: str  # relative to its input's glob: part of derived document ids
    source: str
    size: int
    modified: str  # ISO 8601, as the store reports it


def list_files(config: PipelineConfig) -> list[InputFile]:
    files = []
    for spec in config.inputs:
        fs, _ = fsspec.core.url_to_fs(to_fsspec_url(spec.path))
        for url, rel in list_input_files(spec):
            info = fs.info(url)
            files.append(InputFile(url, rel, spec.source, int(info["size"]), _modified(info)))
    return files


def _modified(info: dict) -> str:
    """A file's modification time as text (ISO 8601 when the store gives a time)."""
    value = file_modified(info)
    return value.isoformat() if isinstance(value, datetime.datetime) else str(value)


class TakenFiles:
    """``<state_root>/refresh_files``: one row per input file a refresh took, written after the
    dataset version it fed was published."""

    def __init__(self, spark: SparkSession, state_root: str):
        self.spark = spark
        self.path = join_path(state_root, FILES_TABLE)
        self.rows = {r["url"]: r for r in read_table(spark, self.path).collect()} if table_exists(spark, self.path) else {}

    def new(self, listed: list[InputFile]) -> list[InputFile]:
        """The files not taken yet. A path is taken once: if its size or modification time changed
        since, its documents may have changed under ids already published, and that is an error."""
        changed = [(f, self.rows[f.url]) for f in listed
                   if f.url in self.rows and (f.size, f.modified) != (self.rows[f.url]["size"], self.rows[f.url]["modified"])]
        if changed:
            lines = "\n".join(f"  {f.url}: size {row['size']} -> {f.size}, modified {row['modified']} -> {f.modified} "
                              f"(taken by refresh {row['run_id']})" for f, row in changed[:10])
            raise RefreshError(
                f"{len(changed)} input file(s) changed after a refresh took them:\n{lines}\n"
                "A refresh takes each path once: put new data in new files and restore these. To take a "
                f"file again, delete its row from the Delta table {self.path} (what it added stays published)."
            )
        return [f for f in listed if f.url not in self.rows]

    def published_version(self) -> int | None:
        """The version of the cumulative table that the latest published dataset was built from."""
        return max((r["cumulative_version"] for r in self.rows.values() if r["cumulative_version"] is not None), default=None)

    def record(self, files: list[InputFile], run_id: str, cumulative_version: int | None, dataset_version: int | None) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        rows = [(f.url, f.source, f.size, f.modified, run_id, now, cumulative_version, dataset_version) for f in files]
        append_rows(self.spark.createDataFrame(rows, _FILES_SCHEMA), self.path)


class Accumulate(Stage):
    """Adds the documents a refresh kept to the cumulative table, MERGE by id, so nothing is added twice.

    An id the table holds with the same content_hash is a replay (a refresh that crashed before it
    recorded its files): kept, and the MERGE skips it. With other content it is rejected as
    ``id_already_published``: the first version stays, as the dedup indices' decisions do.
    """

    name = "accumulate"

    def __init__(self, path: str, zone: str):
        super().__init__(NoParams())
        self.path = path
        self.zone = zone

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        spark = ctx.spark
        exists = table_exists(spark, self.path)
        published = (
            read_table(spark, self.path, table_version(spark, self.path)).select("id", F.col("content_hash").alias("_published"))
            if exists else spark.createDataFrame([], "id string, _published string")
        )
        differs = F.col("_published").isNotNull() & (F.col("_published") != F.col("content_hash"))
        # Cached before the MERGE; the pipeline reuses this very DataFrame (and unpersists it).
        annotated = (
            docs.join(published, "id", "left")
            .withColumn("reason", F.when(differs, F.lit("id_already_published")))
            .withColumn("detail", F.when(differs, F.lit("other content than the published document with this id")))
            .drop("_published")
            .persist(CACHE_LEVEL)
        )
        new = annotated.where(F.col("reason").isNull()).drop("reason", "detail").join(published, "id", "left_anti")
        inserted = new.count()
        if inserted and not exists:
            write_table(new, self.path, properties={"kiln.zone": self.zone, "kiln.stage": CUMULATIVE_TABLE})
        elif inserted:
            insert_new_rows(spark, self.path, new, "id", evolve_schema=True)
        return StageResult(annotated, metrics=lambda df: {"inserted": inserted})


def dataset_source(spark: SparkSession, config: PipelineConfig, stages: list[Stage]) -> str:
    """The table the dataset is built from: the refreshes' cumulative table, else the last document
    stage's table (a pipeline only ever `run`)."""
    cumulative = join_path(config.output, CUMULATIVE_TABLE)
    if table_exists(spark, cumulative):
        return cumulative
    documents, _ = split_stages(stages)
    return join_path(config.output, documents[-1].name if documents else "ingest")


def check_refreshable(config: PipelineConfig, stages: list[Stage]) -> None:
    for i, spec in enumerate(config.inputs):
        if spec.format == "delta":
            raise ConfigError(f"config.inputs[{i}]: refresh takes new input files, and {spec.where!r} is a Delta "
                              "table; use jsonl, text or parquet files")
    for stage in stages:
        if stage.name in INCREMENTAL_STAGES and not stage.params.incremental:
            raise ConfigError(f"config.stages: refresh needs {stage.name} with `incremental: true`, to de-duplicate "
                              f"against every earlier refresh (set it in params, or --set {stage.name}.incremental=true)")
    _, dataset = split_stages(stages)
    if dataset is None or dataset.write is None:
        raise ConfigError(f"config.stages: refresh publishes a dataset version, so the stages must end with "
                          f"{', '.join(DATASET_STAGES)} (and have no other stage after tokenize); "
                          f"got {[s.name for s in stages]}")


def refresh(config: PipelineConfig, stages: list[Stage], spark: SparkSession | None = None,
            progress=print) -> PipelineRun | None:
    """One refresh; None when no input file is new (then nothing is written)."""
    check_refreshable(config, stages)
    refused = incomplete_run(config.output, "refresh")
    if refused:
        raise RefreshError(refused)
    spark = spark or get_spark("kiln-refresh", config.spark_conf)
    documents, dataset = split_stages(stages)
    cumulative = join_path(config.output, CUMULATIVE_TABLE)
    accumulate = Accumulate(cumulative, "curated" if any(s.handles_pii for s in documents) else "raw")
    pipeline = Pipeline(config, [*documents, accumulate, *dataset.stages], spark)
    taken = TakenFiles(spark, config.state_root)
    listed = list_files(config)
    new = taken.new(listed)
    if not new:
        progress(f"nothing new: refreshes took all {len(listed)} input files before")
        return None

    run = pipeline.new_run()
    mark_running(config.output, run.run_id, "refresh")
    progress(f"refresh {run.run_id}: {len(new)} new input files (of {len(listed)})")
    pipeline.ingest(run, [(f.url, f.rel, f.source) for f in new], progress)
    pipeline.run_stages(run, [*documents, accumulate], progress)
    inserted = run.steps[-1].metrics["inserted"]
    version = table_version(spark, cumulative) if table_exists(spark, cumulative) else None
    dataset_version = None
    if version is not None and version != taken.published_version():
        dataset_version = publish(pipeline, run, dataset, progress, source=cumulative)
    pipeline.finish(run, progress)
    taken.record(new, run.run_id, version, dataset_version)
    mark_complete(config.output, run.run_id)
    if dataset_version is None:
        progress(f"nothing new: {len(new)} new files added no document; the dataset stays as it is")
    else:
        progress(f"done: {inserted:,} new documents; dataset version {dataset_version} holds all "
                 f"{run.steps[-1].docs_out:,} in {cumulative}")
    return run
