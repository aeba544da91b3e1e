"""The one interface every ETL stage implements, and the base of the stages that judge one document at a time.

A stage gets the documents as a DataFrame and returns them annotated: rows it removes carry a
``reason`` (and optionally a ``detail``, such as the id a duplicate matched); rows it keeps have
``reason`` null. The pipeline, not the stage, splits kept from rejected, writes the Delta tables and
counts the funnel, so every stage is accounted for the same way and none knows about another.

Most stages judge each document on its own (its quality, language, PII, toxicity...).
``DocumentStage`` is their base, datatrove's ``BaseFilter.filter(doc) -> bool | (bool, reason)`` in
Kiln's terms: the stage declares its own columns and writes one function from an Arrow batch to the
batch's verdicts; the base builds the output schema, runs it inside ``mapInArrow`` and refuses an input
that already has one of the stage's columns.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterator, TypeVar

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import to_arrow_type
from pyspark.sql.types import DataType, StringType, StructField, StructType

if TYPE_CHECKING:
    from ..config import PipelineConfig

# What a stage's verdict adds to every document: why it is removed (null: kept), and a detail.
VERDICT_COLUMNS = ("reason", "detail")

P = TypeVar("P")


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
    # annotated documents once they are cached, in a thread beside the writes of the step's tables
    # (so it must not read those tables); returns plain JSON values.
    metrics: Callable[[DataFrame], dict[str, Any]] | None = None


@dataclass
class NoParams:
    pass


class Stage(Generic[P]):
    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    # Stages whose output still holds raw, un-redacted text (before `pii`) mark their tables as raw zone.
    handles_pii: ClassVar[bool] = False
    # Params holding local paths or URLs (a string, or a list or mapping of them): the config loader
    # makes the local ones absolute against the working directory.
    path_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: P):
        self.params: P = params

    def check(self, where: str, config: PipelineConfig, stage_names: list[str]) -> None:
        """Pre-flight, when the config is loaded, before Spark starts: raise ConfigError (its message
        starting with ``where``, the params' key path) for what would otherwise fail mid-run."""

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        raise NotImplementedError


@dataclass
class BatchVerdicts:
    """What a document stage says about one Arrow batch: one entry per document in every list."""

    reasons: list[str | None]  # None: kept
    details: list[str | None]
    columns: dict[str, list] = field(default_factory=dict)  # the stage's own columns, by name
    texts: list[str | None] | None = None  # the rewritten texts, for a stage that rewrites them


# Runs on the Python workers, once per Arrow batch of documents.
BatchFunction = Callable[[pa.RecordBatch], BatchVerdicts]


class DocumentStage(Stage[P]):
    """A stage that judges each document by itself, on Arrow batches inside ``mapInArrow``.

    A subclass declares ``columns`` (name -> Spark type; the Arrow type is derived from it) and builds
    its run from ``annotate(docs, batch_function)`` (classify, which needs only the text in Python,
    from ``without_own_columns`` and a scalar UDF). Output columns: the input's (``text`` and
    ``content_hash`` updated where the stage rewrote a text), then the stage's own columns and
    ``reason``, ``detail``, in the order ``verdict_first`` says.
    """

    # The stage's own columns, in order, with their Spark types.
    columns: ClassVar[dict[str, DataType]] = {}
    # Input columns the stage drops before it runs (a rerun replaces its own columns); any other
    # input column with the name of an output column is an error.
    replaces: ClassVar[tuple[str, ...]] = ()
    # reason and detail before the stage's own columns, rather than after them.
    verdict_first: ClassVar[bool] = False

    def output_columns(self) -> dict[str, DataType]:
        verdict = {name: StringType() for name in VERDICT_COLUMNS}
        return {**verdict, **self.columns} if self.verdict_first else {**self.columns, **verdict}

    def without_own_columns(self, docs: DataFrame) -> DataFrame:
        """``docs`` less the columns the stage replaces; any other column the stage adds is an error."""
        docs = docs.drop(*[name for name in self.replaces if name in docs.columns])
        for name in self.output_columns():
            if name in docs.columns:
                raise ValueError(f"{self.name}: the input already has a column {name!r}; is the stage configured twice?")
        return docs

    def annotate(self, docs: DataFrame, batch_function: BatchFunction) -> DataFrame:
        """``docs`` with the stage's columns and verdicts, ``batch_function`` run on every Arrow batch."""
        docs = self.without_own_columns(docs)
        added = self.output_columns()
        schema = StructType(docs.schema.fields + [StructField(name, kind) for name, kind in added.items()])
        arrow_types = {name: to_arrow_type(kind) for name, kind in added.items()}
        return docs.mapInArrow(lambda batches: _annotated_batches(batches, batch_function, arrow_types), schema)


def _annotated_batches(batches: Iterator[pa.RecordBatch], batch_function: BatchFunction,
                       arrow_types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    """The mapInArrow loop: each batch, its texts replaced where rewritten, with the added columns."""
    for batch in batches:
        verdicts = batch_function(batch)
        columns = list(batch.columns)
        if verdicts.texts is not None:
            _replace_texts(batch, columns, verdicts.texts)
        values = {**verdicts.columns, "reason": verdicts.reasons, "detail": verdicts.details}
        columns += [pa.array(values[name], arrow_types[name]) for name in arrow_types]
        yield pa.RecordBatch.from_arrays(columns, names=batch.schema.names + list(arrow_types))


def _replace_texts(batch: pa.RecordBatch, columns: list[pa.Array], texts: list[str | None]) -> None:
    """Put the rewritten texts in ``columns``; ``content_hash`` stays the sha1 of the text beside it,
    recomputed only where a text the stage was given changed."""
    text_at, hash_at = batch.schema.get_field_index("text"), batch.schema.get_field_index("content_hash")
    old_texts = batch.column(text_at).to_pylist()
    hashes = [
        hashlib.sha1(new.encode("utf-8")).hexdigest() if old is not None and new != old else digest
        for new, old, digest in zip(texts, old_texts, batch.column(hash_at).to_pylist())
    ]
    columns[text_at] = pa.array(texts, batch.schema.field(text_at).type)  # string or large_string, as Spark sent it
    columns[hash_at] = pa.array(hashes, batch.schema.field(hash_at).type)
