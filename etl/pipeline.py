"""Runs a pipeline: ingest, then each configured stage in order, each written as a Delta table.

Layout under the output root:
    ingest/            every readable document, with id, source, text, content_hash, meta
    <stage>/           the documents a stage kept (plus any columns it added)
    <stage>/<table>/   extra tables a stage produced (e.g. exact_dedup/kept_ids)
    rejected/          every removed row, partitioned by stage, with `reason` and `detail`
    report/            funnel.json, funnel (Delta), report.html and its plots

Every step overwrites its own tables, so running the same job twice leaves the same contents.
The funnel is checked at the end: documents read = documents kept + documents rejected, exactly.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shards.config import to_dict

from .config import PipelineConfig, join_path
from .delta import read_table, write_table
from .ingest import ingest
from .stages.base import Stage, StageContext


@dataclass
class StepCounts:
    """One row of the funnel."""

    stage: str
    docs_in: int
    docs_out: int
    chars_in: int
    chars_out: int
    bytes_in: int
    bytes_out: int
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)


@dataclass
class PipelineRun:
    config: PipelineConfig
    run_id: str
    steps: list[StepCounts]
    tables: dict[str, str]

    @property
    def final_table(self) -> str:
        return self.tables[self.steps[-1].stage]


def _counts(annotated: DataFrame) -> tuple[dict[str | None, tuple[int, int, int]], dict]:
    """Per reason (None = kept): documents, characters, UTF-8 bytes; one pass."""
    rows = (
        annotated.groupBy("reason")
        .agg(F.count("*").alias("n"), F.sum(F.length("text")).alias("c"), F.sum(F.octet_length("text")).alias("b"))
        .collect()
    )
    return {r["reason"]: (r["n"], r["c"] or 0, r["b"] or 0) for r in rows}


def _step_counts(name: str, annotated: DataFrame, input_totals: tuple[int, int, int] | None, seconds: float) -> StepCounts:
    by_reason = _counts(annotated)
    kept = by_reason.pop(None, (0, 0, 0))
    if input_totals is None:  # ingest: what came in is everything it read
        input_totals = tuple(sum(v[i] for v in [kept, *by_reason.values()]) for i in range(3))
    return StepCounts(
        stage=name, docs_in=input_totals[0], docs_out=kept[0], chars_in=input_totals[1], chars_out=kept[1],
        bytes_in=input_totals[2], bytes_out=kept[2], rejected={k: v[0] for k, v in sorted(by_reason.items())},
        seconds=round(seconds, 2),
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


class Pipeline:
    def __init__(self, config: PipelineConfig, stages: list[Stage], spark: SparkSession):
        self.config = config
        self.stages = stages
        self.spark = spark

    def table_path(self, name: str) -> str:
        return join_path(self.config.output, name)

    def _zone(self, step_index: int) -> str:
        """Tables before the PII stage still hold raw personal data: they are marked raw."""
        pii_at = next((i for i, s in enumerate(self.stages) if s.handles_pii), None)
        return "curated" if pii_at is not None and step_index > pii_at else "raw"

    def _write_step(self, name: str, annotated: DataFrame, zone: str) -> None:
        properties = {"kiln.zone": zone, "kiln.stage": name}
        write_table(_kept_rows(annotated), self.table_path(name), properties=properties)
        write_table(
            _rejected_rows(annotated, name), self.table_path("rejected"),
            partition_by=["stage"], replace_where=f"stage = '{name}'",
        )

    def run(self, progress=print) -> PipelineRun:
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        ctx = StageContext(self.spark, self.config.output, self.config.state_root, run_id)
        steps: list[StepCounts] = []
        tables: dict[str, str] = {}
        self._reset_rejected()

        start = time.time()
        annotated = ingest(self.spark, self.config).persist(StorageLevel.MEMORY_AND_DISK)
        self._write_step("ingest", annotated, self._zone(-1))
        steps.append(_step_counts("ingest", annotated, None, time.time() - start))
        annotated.unpersist()
        tables["ingest"] = self.table_path("ingest")
        progress(_progress_line(steps[-1]))

        for index, stage in enumerate(self.stages):
            start = time.time()
            docs = read_table(self.spark, tables[steps[-1].stage])
            result = stage.run(docs, ctx)
            annotated = result.docs.persist(StorageLevel.MEMORY_AND_DISK)
            if "reason" not in annotated.columns:
                raise RuntimeError(f"stage {stage.name!r} returned documents without a 'reason' column")
            self._write_step(stage.name, annotated, self._zone(index))
            for table_name, table in result.tables.items():
                write_table(table, join_path(self.table_path(stage.name), table_name))
            prev = steps[-1]
            counts = _step_counts(stage.name, annotated, (prev.docs_out, prev.chars_out, prev.bytes_out), 0.0)
            if result.metrics is not None:
                counts.metrics = result.metrics(annotated)
            counts.seconds = round(time.time() - start, 2)
            annotated.unpersist()
            steps.append(counts)
            tables[stage.name] = self.table_path(stage.name)
            progress(_progress_line(counts))

        run = PipelineRun(self.config, run_id, steps, tables)
        self._check_accounting(run)
        if self.config.report:
            from .report import write_report

            path = write_report(self.spark, run)
            progress(f"report: {path}")
        return run

    def _reset_rejected(self) -> None:
        """Drop rejected rows of stages no longer configured, so a changed pipeline's funnel stays exact."""
        from .delta import table_exists

        path = self.table_path("rejected")
        if table_exists(self.spark, path):
            names = ["ingest"] + [s.name for s in self.stages]
            listed = ", ".join(f"'{n}'" for n in names)
            self.spark.sql(f"DELETE FROM delta.`{path}` WHERE stage NOT IN ({listed})")

    def _check_accounting(self, run: PipelineRun) -> None:
        read = run.steps[0].docs_in
        rejected = self.spark.read.format("delta").load(self.table_path("rejected")).count()
        kept = read_table(self.spark, run.final_table).count()
        if read != kept + rejected:
            raise RuntimeError(f"funnel does not add up: read {read} != kept {kept} + rejected {rejected}")
        for step in run.steps:
            if step.docs_in != step.docs_out + sum(step.rejected.values()):
                raise RuntimeError(f"stage {step.stage}: {step.docs_in} in != {step.docs_out} out + rejected {step.rejected}")


def _progress_line(step: StepCounts) -> str:
    rejected = ", ".join(f"{k}={v}" for k, v in step.rejected.items()) or "none"
    return f"[{step.stage:>14}] {step.docs_in:>9,} in -> {step.docs_out:>9,} kept  ({step.seconds:.1f}s)  rejected: {rejected}"


def run_pipeline(config: PipelineConfig, stages: list[Stage], spark: SparkSession | None = None, progress=print) -> PipelineRun:
    from .spark import get_spark

    spark = spark or get_spark("kiln-etl", config.spark_conf)
    return Pipeline(config, stages, spark).run(progress)


def funnel_json(run: PipelineRun) -> str:
    return json.dumps(
        {"run_id": run.run_id, "output": run.config.output, "config": to_dict(run.config),
         "steps": [to_dict(s) for s in run.steps], "tables": run.tables},
        indent=2, sort_keys=True,
    )

