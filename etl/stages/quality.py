"""The `quality` stage: Gopher and C4 heuristics, as datatrove 0.10.1 applies them.

Each document is scored in one pass by ``etl.text_stats.assess`` inside ``mapInArrow`` (Arrow
batches, no per-row UDF). A rejected document carries the rule that fired in ``reason`` (e.g.
``quality:gopher_short_doc``) and the measured value in ``detail``; every document gets the
``q_*`` score columns, which the report draws as histograms. With ``filter_lines`` on (the
default, as in datatrove), C4's line rules drop lines from the text of the documents it keeps,
and their ``content_hash`` is recomputed. Reasons and parameters: docs/etl/quality.md.
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from ..text_stats import SCORE_COLUMNS, QualityParams, assess
from .base import Stage, StageContext, StageResult

_SPARK_TYPES = {"int": LongType(), "float": DoubleType()}
_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64()}


def _annotate(params: QualityParams, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Runs on the Python workers: the batch's columns, text and hash updated, plus the verdicts."""
    for batch in batches:
        names = batch.schema.names
        text_at, hash_at = names.index("text"), names.index("content_hash")
        texts = batch.column(text_at).to_pylist()
        verdicts = [assess(text, params) for text in texts]
        new_texts = [v.text if text is not None else None for v, text in zip(verdicts, texts)]
        hashes = batch.column(hash_at).to_pylist()
        new_hashes = [
            hashlib.sha1(new.encode("utf-8")).hexdigest() if new != old else digest
            for new, old, digest in zip(new_texts, texts, hashes)
        ]
        string = batch.schema.field(text_at).type  # string or large_string, as Spark sent it
        columns = list(batch.columns)
        columns[text_at] = pa.array(new_texts, string)
        columns[hash_at] = pa.array(new_hashes, batch.schema.field(hash_at).type)
        columns.append(pa.array([v.reason for v in verdicts], string))
        columns.append(pa.array([v.detail for v in verdicts], string))
        for name, kind in SCORE_COLUMNS.items():
            columns.append(pa.array([v.scores[name] for v in verdicts], _ARROW_TYPES[kind]))
        yield pa.RecordBatch.from_arrays(columns, names=names + ["reason", "detail", *SCORE_COLUMNS])


def _metrics(annotated: DataFrame) -> dict:
    """How much C4's line filtering changed the documents that were kept."""
    row = (
        annotated.filter(F.col("reason").isNull())
        .agg(
            F.sum(F.when(F.col("q_c4_lines_dropped") > 0, 1).otherwise(0)).alias("docs"),
            F.sum("q_c4_lines_dropped").alias("lines"),
        )
        .collect()[0]
    )
    return {"kept_docs_with_lines_dropped": int(row["docs"] or 0), "lines_dropped_from_kept_docs": int(row["lines"] or 0)}


class Quality(Stage):
    name = "quality"
    Params = QualityParams

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        for column in ("reason", "detail", *SCORE_COLUMNS):
            if column in docs.columns:
                raise ValueError(f"quality: the input already has a column {column!r}; is the stage configured twice?")
        schema = StructType(
            docs.schema.fields
            + [StructField("reason", StringType()), StructField("detail", StringType())]
            + [StructField(name, _SPARK_TYPES[kind]) for name, kind in SCORE_COLUMNS.items()]
        )
        params = self.params
        annotated = docs.mapInArrow(lambda batches: _annotate(params, batches), schema)
        return StageResult(annotated, metrics=_metrics)
