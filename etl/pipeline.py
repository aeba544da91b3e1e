"""Runs a pipeline: ingest, then each configured stage in order, each written as a Delta table.

Layout under the output root:
    ingest/            every readable document, with id, source, text, content_hash, meta
    <stage>/           the documents a stage kept (plus any columns it added)
    <stage>/<table>/   extra tables a stage produced (e.g. exact_dedup/kept_ids)
    rejected/          every row removed in the raw zone (ingest and stages before `pii`), partitioned
                       by stage, with `reason` and `detail`: its text is raw, like the tables it came from
    rejected_curated/  the same for rows removed from the `pii` stage on (their text is redacted)
    report/            report.html (one self-contained page) and report.json, funnel.json, funnel (Delta),
                       the plots: etl/report/
    _checkpoints/      on a cluster only, while a run lasts: checkpoints that cut long lineages
                       (minhash_dedup), on storage that outlives an executor; removed when the run finishes

Every step overwrites its own tables, so running the same job twice leaves the same contents; the
rejected tables are emptied when a run or refresh starts, and each step appends its rows.
The funnel is checked at the end: documents read = documents kept + documents rejected, exactly.
A run is ingest plus `run_stages` over the configured stages; `run_stages` also runs a slice of them
from another table (etl/refresh.py builds the dataset from its cumulative table that way).
Tables are marked with the property kiln.zone = raw | curated; with raw_zone_retention_hours set,
raw-zone tables keep overwritten files only that long (VACUUM after each run: etl.delta.vacuum).
Every table a step writes also carries kiln.run_id, and ``<output>/_state/run.json`` says whether
the last run completed (etl/run_state.py).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import fsspec
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .config import PipelineConfig, is_local_master
from .dataset.publish import publish, split_stages
from .delta import (
    append_rows, count_rows, name_tables, read_table, run_tables, set_properties, sql_name, table_exists, vacuum,
    write_table,
)
from .funnel import PipelineRun, StepCounts, new_run_id
from .ingest import ingest, split_skipped
from .ingest_direct import ingest_directly, writes_directly
from .paths import join_path, to_fsspec_url
from .progress import step_progress
from .run_state import RUN_ID_PROPERTY, mark_complete, mark_running
from .spark import CACHE_LEVEL, get_spark, is_connect
from .stages.base import Stage, StageContext


TOKENS_COLUMN = "num_tokens"  # per-document tokens, written by the tokenize stage


def _counts(annotated: DataFrame) -> dict[tuple[str | None, str], tuple[int, int, int, int | None]]:
    """Per (reason, source), reason None = kept: documents, characters, UTF-8 bytes and tokens (None
    before tokenize); one pass over the step's cached output, so the report need not read it again."""
    tokens = F.sum(F.col(TOKENS_COLUMN).cast("long")) if TOKENS_COLUMN in annotated.columns else F.lit(None).cast("long")
    rows = (
        annotated.groupBy("reason", "source")
        .agg(F.count("*").alias("n"), F.sum(F.length("text")).alias("c"), F.sum(F.octet_length("text")).alias("b"),
             tokens.alias("t"))
        .collect()
    )
    return {(r["reason"], r["source"]): (r["n"], r["c"] or 0, r["b"] or 0, r["t"]) for r in rows}


def _totals(counts: dict, reason: str | None) -> tuple[int, int, int]:
    """Documents, characters and bytes of one reason (None = kept), over all sources."""
    mine = [v for (r, _), v in counts.items() if r == reason]
    return tuple(sum(v[i] for v in mine) for i in range(3))


def _step_counts(name: str, counts: dict, input_totals: tuple[int, int, int] | None, seconds: float) -> StepCounts:
    """The step's funnel entry from its `_counts`."""
    kept = _totals(counts, None)
    reasons = sorted({r for r, _ in counts if r is not None})
    if input_totals is None:  # ingest: what came in is everything it read
        input_totals = tuple(sum(v[i] for v in counts.values()) for i in range(3))
    by_source: dict[str, dict] = {}
    for (reason, source), (n, c, _, t) in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][0] or "")):
        entry = by_source.setdefault(source, {"docs": 0, "chars": 0, "tokens": None, "rejected": {}})
        if reason is None:
            entry.update(docs=n, chars=c, tokens=t)
        else:
            entry["rejected"][reason] = [n, c]
    return StepCounts(
        stage=name, docs_in=input_totals[0], docs_out=kept[0], chars_in=input_totals[1], chars_out=kept[1],
        bytes_in=input_totals[2], bytes_out=kept[2], rejected={r: _totals(counts, r)[0] for r in reasons},
        seconds=round(seconds, 2), by_source=by_source,
    )


def _rejected_rows(annotated: DataFrame, stage: str) -> DataFrame:
    cols = annotated.columns
    return annotated.filter(F.col("reason").isNotNull()).select(
        "id", "source", F.lit(stage).alias("stage"), "reason",
        (F.col("detail") if "detail" in cols else F.lit(None)).cast("string").alias("detail"),
        "text", "content_hash",
    )


def _kept_rows(annotated: DataFrame) -> DataFrame:
    return annotated.filter(F.col("reason").isNull()).drop("reason", "detail")


CHECKPOINTS = "_checkpoints"  # under the output root, see _checkpoint_where_executors_are_lost


class Pipeline:
    def __init__(self, config: PipelineConfig, stages: list[Stage], spark: SparkSession):
        self.config = config
        self.stages = stages
        self.spark = spark
        # Zones whose rejected table holds this run's rows only (emptied when it started, or not there
        # then), each with whether the table exists now: see _reset_rejected.
        self._rejected_this_run: dict[str, bool] = {}
        name_tables(spark, config)

    def table_path(self, name: str) -> str:
        return join_path(self.config.output, name)

    def _zone(self, step_index: int) -> str:
        """Tables before the PII stage still hold raw personal data: they are marked raw. The PII
        stage's own output (kept and rejected rows alike) is redacted, so it is curated."""
        pii_at = next((i for i, s in enumerate(self.stages) if s.handles_pii), None)
        return "curated" if pii_at is not None and step_index >= pii_at else "raw"

    def _rejected_table(self, zone: str) -> str:
        return self.table_path("rejected" if zone == "raw" else "rejected_curated")

    def _write_step(self, run: PipelineRun, name: str, annotated: DataFrame, zone: str, rejected: int,
                    tables: dict[str, DataFrame] | None = None,
                    metrics: Callable[[DataFrame], dict] | None = None) -> dict | None:
        """Write the step's kept rows, its `rejected` rows and its extra `tables`, side by side, and
        compute the stage's `metrics` beside them; returns the metrics. `annotated` must already be
        cached (its first job computes it): writes that start together on uncached rows wait on each
        other's blocks. Each write is a small Spark job plus seconds of driver-side Delta work (the
        snapshot, the commit), which overlap: at 10,000 documents the minhash_dedup step's three
        writes took 2.8 s one after the other."""
        work = [
            lambda: write_table(_kept_rows(annotated), self.table_path(name),
                                properties={"kiln.zone": zone, "kiln.stage": name, RUN_ID_PROPERTY: run.run_id}),
            *[partial(write_table, table, join_path(self.table_path(name), table_name),
                      properties={RUN_ID_PROPERTY: run.run_id}) for table_name, table in (tables or {}).items()],
        ]
        rejected_table = self._rejected_table(zone)
        if zone not in self._rejected_this_run:  # a dataset republished from an erasure: replace this stage's rows
            work.append(lambda: write_table(_rejected_rows(annotated, name), rejected_table, partition_by=["stage"],
                                            replace_where=f"stage = '{name}'"))
        elif rejected or not self._rejected_this_run[zone]:  # (an empty write creates the table)
            work.append(lambda: append_rows(_rejected_rows(annotated, name), rejected_table, partition_by=["stage"]))
            self._rejected_this_run[zone] = True
        if metrics is not None:
            work.append(lambda: metrics(annotated))
        with ThreadPoolExecutor(len(work), thread_name_prefix="kiln-write") as pool:
            futures = [pool.submit(w) for w in work]
        failed = [error for error in (future.exception() for future in futures) if error is not None]
        for other in failed[1:]:  # every failure is said, the first raised
            failed[0].add_note(f"step {name}: another of its writes failed too: {type(other).__name__}: {str(other)[:500]}")
        if failed:
            raise failed[0]
        return futures[-1].result() if metrics is not None else None

    def run(self, progress=print) -> PipelineRun:
        """The whole pipeline; the output is marked incomplete until it is done."""
        run = self.new_run()
        mark_running(self.config.output, run.run_id, "run")
        self.ingest(run, progress=progress)
        documents, dataset = split_stages(self.stages)
        self.run_stages(run, documents, progress)
        if dataset is not None:
            publish(self, run, dataset, progress)
        self.finish(run, progress)
        mark_complete(self.config.output, run.run_id)
        return run

    def new_run(self) -> PipelineRun:
        self._checkpoint_where_executors_are_lost()
        return PipelineRun(self.config, new_run_id())

    def _checkpoint_where_executors_are_lost(self) -> None:
        """On a cluster, checkpoints go to <output>/_checkpoints. A local checkpoint (the default) lives in
        the executor that computed it: when that executor is lost, every later task that reads it fails
        (CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND, four times, and the job with it; seen in an incremental
        minhash_dedup on the test cluster). In local mode there is no executor to lose apart from the job."""
        if is_connect(self.spark):  # the server's own spark.checkpoint.dir decides (etl.spark.checkpoint_dir)
            return
        context = self.spark.sparkContext
        if not is_local_master(context.master) and not context.getCheckpointDir():
            context.setCheckpointDir(self.table_path(CHECKPOINTS))

    def _remove_checkpoints(self) -> None:
        """Checkpoints hold documents' text and ids; none outlives the run that wrote it."""
        folder = self.table_path(CHECKPOINTS)
        fs, path = fsspec.core.url_to_fs(to_fsspec_url(folder))
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def ingest(self, run: PipelineRun, files: list[tuple[str, str, str]] | None = None, progress=print) -> None:
        """The funnel's first step: every input, or only `files` (url, relative path, source)."""
        self._reset_rejected()
        with step_progress(self.spark, "ingest", 1, len(self.stages) + 1):
            start = time.time()
            zone, kept_path = self._zone(-1), self.table_path("ingest")
            rejected_path = self._rejected_table(zone)
            if writes_directly(self.spark, self.config, kept_path, rejected_path):
                properties = {"kiln.zone": zone, "kiln.stage": "ingest", RUN_ID_PROPERTY: run.run_id}
                counts, skipped = ingest_directly(self.spark, self.config, files, kept_path, rejected_path, properties,
                                                  {"kiln.zone": zone})
                run.steps.append(_step_counts("ingest", counts, None, 0.0))
                self._rejected_this_run[zone] = True
            else:
                annotated = ingest(self.spark, self.config, files).persist(CACHE_LEVEL)
                docs, skipped = split_skipped(annotated, self.config)  # web-archive records that are not documents
                run.steps.append(_step_counts("ingest", _counts(docs), None, 0.0))
                self._write_step(run, "ingest", docs, zone, sum(run.steps[-1].rejected.values()))
                annotated.unpersist()
            run.steps[-1].metrics.update(skipped)
            run.steps[-1].seconds = round(time.time() - start, 2)
            run.tables["ingest"] = kept_path
            run.funnel_end = "ingest"
        progress(_progress_line(run.steps[-1]))

    def run_stages(self, run: PipelineRun, stages: list[Stage], progress=print, source: str | None = None) -> None:
        """Run `stages` (some of this pipeline's, in order), each writing its tables. The first reads
        the run's last step, or the Delta table `source`, which breaks the funnel chain there."""
        ctx = StageContext(self.spark, self.config.output, self.config.state_root, run.run_id)
        continues_funnel = source is None and run.funnel_end == run.steps[-1].stage
        if source is None:
            prev = run.steps[-1]
            source, totals = run.tables[prev.stage], (prev.docs_out, prev.chars_out, prev.bytes_out)
        else:
            all_kept = read_table(self.spark, source).withColumn("reason", F.lit(None).cast("string"))
            totals = _totals(_counts(all_kept), None)
        for stage in stages:
            with step_progress(self.spark, stage.name, self.stages.index(stage) + 2, len(self.stages) + 1):
                start = time.time()
                result = stage.run(read_table(self.spark, source), ctx)
                annotated = result.docs.persist(CACHE_LEVEL)
                if "reason" not in annotated.columns:
                    raise RuntimeError(f"stage {stage.name!r} returned documents without a 'reason' column")
                counts = _step_counts(stage.name, _counts(annotated), totals, 0.0)  # the first job: computes the cache
                metrics = self._write_step(run, stage.name, annotated, self._zone(self.stages.index(stage)),
                                           sum(counts.rejected.values()), result.tables, result.metrics)
                if metrics is not None:
                    counts.metrics = metrics
                counts.seconds = round(time.time() - start, 2)
                if self.config.report.enabled:
                    self._sample_scores(run, stage.name, annotated, counts)
                annotated.unpersist()
                run.steps.append(counts)
                source = run.tables[stage.name] = self.table_path(stage.name)
                totals = (counts.docs_out, counts.chars_out, counts.bytes_out)
                if continues_funnel:
                    run.funnel_end = stage.name
            progress(_progress_line(counts))
            if "message" in counts.metrics:  # a stage's one line for the user (shuffle_and_write: the version)
                progress(f"[{stage.name:>14}] {counts.metrics['message']}")

    def _sample_scores(self, run: PipelineRun, stage: str, annotated: DataFrame, counts: StepCounts) -> None:
        """The report's score sample, drawn while the stage's output is still cached."""
        from .report.scores import sample_scores  # here, not at the top: see finish

        start = time.time()
        sample = sample_scores(annotated, stage, counts.docs_out, sum(counts.rejected.values()),
                               self.config.report.histogram_sample)
        if sample is not None:
            run.score_samples[stage] = sample
        run.score_sample_seconds += time.time() - start

    def finish(self, run: PipelineRun, progress=print) -> PipelineRun:
        """Check the funnel, mark and vacuum tables, write the report."""
        self._check_accounting(run)
        self._mark_rejected_zones()
        if self.config.raw_zone_retention_hours is not None:
            self._vacuum_raw_zone(self.config.raw_zone_retention_hours)
        if self.config.report.enabled:
            from .report import write_report  # here, not at the top: it sets matplotlib's Agg backend on import

            write_report(self.spark, run, {s.name: s.params for s in self.stages}, progress)
        self._remove_checkpoints()
        return run

    def _steps_by_zone(self) -> dict[str, list[str]]:
        steps = {"raw": [], "curated": []}
        for index, name in enumerate(["ingest"] + [s.name for s in self.stages]):
            steps[self._zone(index - 1)].append(name)
        return steps

    def _reset_rejected(self) -> None:
        """Empty the rejected tables when a run or refresh starts: every step of it writes its rows again,
        appending them, and a step that rejected none writes nothing. Each step overwriting its own slice
        (replaceWhere) cost a Delta write per step, whose commit reads the table's files: the demo pipeline's
        eleven steps on its 150 documents, four of which reject none, took 22-25 s against 24.5-26.5 s
        (runs alternated, fresh and again). Rows of stages no longer configured, or now in the other
        zone, go too, so a changed pipeline's funnel stays exact and raw rows never linger in the
        curated table."""
        for zone in ("raw", "curated"):
            path = self._rejected_table(zone)
            exists = table_exists(self.spark, path)
            if exists:
                self.spark.sql(f"DELETE FROM {sql_name(path)}")
            self._rejected_this_run[zone] = exists

    def _rejected_exists(self, zone: str) -> bool:
        """Whether the zone's rejected table exists: a run knows (see _reset_rejected); a republished
        dataset asks (on Spark Connect a DESCRIBE DETAIL, 0.5 s)."""
        known = self._rejected_this_run.get(zone)
        return table_exists(self.spark, self._rejected_table(zone)) if known is None else known

    def _mark_rejected_zones(self) -> None:
        for zone in ("raw", "curated"):
            if self._rejected_exists(zone):
                set_properties(self.spark, self._rejected_table(zone), {"kiln.zone": zone})

    def _vacuum_raw_zone(self, hours: int) -> None:
        """Keep overwritten raw-zone files (earlier runs' raw text) only `hours` (etl.delta.vacuum: never
        the files of the extra tables nested inside a table)."""
        steps = self._steps_by_zone()["raw"]
        paths = [self.table_path(name) for name in steps] + [self._rejected_table("raw")]
        retention = {"delta.deletedFileRetentionDuration": f"interval {hours} hours",
                     "delta.logRetentionDuration": f"interval {max(hours, 1)} hours"}
        tables = run_tables(self.config)

        def vacuum_raw(path: str) -> None:
            if table_exists(self.spark, path):
                set_properties(self.spark, path, retention)
                vacuum(self.spark, path, hours, tables)

        # Side by side: a VACUUM LITE of a small table is 1.4-2.5 s of driver-side log work and commits.
        with ThreadPoolExecutor(len(paths), thread_name_prefix="kiln-vacuum") as pool:
            list(pool.map(vacuum_raw, paths))

    def _check_accounting(self, run: PipelineRun) -> None:
        if run.funnel_end is not None:
            read = run.steps[0].docs_in
            tables = [self._rejected_table(z) for z in ("raw", "curated") if self._rejected_exists(z)]
            with ThreadPoolExecutor(len(tables) + 1, thread_name_prefix="kiln-count") as pool:  # each mostly its Delta log
                kept, *rejected_per_table = pool.map(partial(count_rows, self.spark), [run.tables[run.funnel_end], *tables])
            rejected = sum(rejected_per_table)
            if read != kept + rejected:
                raise RuntimeError(f"funnel does not add up: read {read} != kept {kept} + rejected {rejected}")
        for step in run.steps:
            if step.docs_in != step.docs_out + sum(step.rejected.values()):
                raise RuntimeError(f"stage {step.stage}: {step.docs_in} in != {step.docs_out} out + rejected {step.rejected}")


def _progress_line(step: StepCounts) -> str:
    rejected = ", ".join(f"{k}={v}" for k, v in step.rejected.items()) or "none"
    return f"[{step.stage:>14}] {step.docs_in:>9,} in -> {step.docs_out:>9,} kept  ({step.seconds:.1f}s)  rejected: {rejected}"


def run_pipeline(config: PipelineConfig, stages: list[Stage], spark: SparkSession | None = None, progress=print) -> PipelineRun:
    spark = spark or get_spark("kiln-etl", config.spark_conf)
    return Pipeline(config, stages, spark).run(progress)
