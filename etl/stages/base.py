"""The one interface every ETL stage implements.

A stage gets the documents as a DataFrame and returns them annotated: rows it removes carry a
``reason`` (and optionally a ``detail``, such as the id a duplicate matched); rows it keeps have
``reason`` null. The pipeline, not the stage, splits kept from rejected, writes the Delta tables and
counts the funnel, so every stage is accounted for the same way and none knows about another.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pyspark.sql import DataFrame, SparkSession

if TYPE_CHECKING:
    from ..config import PipelineConfig

# Columns every document has from ingest on; stages may add columns of their own.
DOC_COLUMNS = ("id", "source", "text", "content_hash", "meta")


@dataclass
class StageContext:
    spark: SparkSession
    output: str  # the pipeline's output root
    state_root: str  # where incremental state (indices, processed files) lives
    run_id: str


@dataclass
class StageResult:
    # The input documents with a nullable string column `reason` (and optionally `detail`).
    docs: DataFrame
    # Extra tables written to <output>/<stage>/<name> (e.g. dedup clusters).
    tables: dict[str, DataFrame] = field(default_factory=dict)
    # Counters for the report (e.g. PII entities per type), computed by the pipeline on the
    # annotated documents once they are materialised; returns plain JSON values.
    metrics: Callable[[DataFrame], dict[str, Any]] | None = None


@dataclass
class NoParams:
    pass


class Stage:
    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    # Stages whose output still holds raw, un-redacted text (before `pii`) mark their tables as raw zone.
    handles_pii: ClassVar[bool] = False
    # Params holding local paths or URLs (a string, or a list or mapping of them): the config loader
    # makes the local ones absolute against the working directory.
    path_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any):
        self.params = params

    def check(self, where: str, config: PipelineConfig, stage_names: list[str]) -> None:
        """Pre-flight, when the config is loaded, before Spark starts: raise ConfigError (its message
        starting with ``where``, the params' key path) for what would otherwise fail mid-run."""

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        raise NotImplementedError
