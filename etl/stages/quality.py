"""The `quality` stage: Gopher and C4 heuristics, as datatrove 0.10.1 applies them.

Each document is scored in one pass by ``etl.text.quality_rules.assess``, on Arrow batches (no
per-row UDF). A rejected document carries the rule that fired in ``reason`` (e.g.
``quality:gopher_short_doc``) and the measured value in ``detail``; every document gets the
``q_*`` score columns, which the report draws as histograms. With ``filter_lines`` on (the
default, as in datatrove), C4's line rules drop lines from the text of the documents it keeps,
and their ``content_hash`` is recomputed. Reasons and parameters: docs/etl/quality.md.
"""
from __future__ import annotations

from functools import partial

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType

from ..text.quality_rules import SCORE_COLUMNS, QualityParams, assess
from .base import BatchVerdicts, DocumentStage, StageContext, StageResult

_SPARK_TYPES = {"int": LongType(), "float": DoubleType()}


def _assess_batch(params: QualityParams, batch: pa.RecordBatch) -> BatchVerdicts:
    texts = batch.column("text").to_pylist()
    verdicts = [assess(text, params) for text in texts]
    return BatchVerdicts(
        reasons=[v.reason for v in verdicts],
        details=[v.detail for v in verdicts],
        columns={name: [v.scores[name] for v in verdicts] for name in SCORE_COLUMNS},
        texts=[v.text if text is not None else None for v, text in zip(verdicts, texts)],
    )


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


class Quality(DocumentStage[QualityParams]):
    name = "quality"
    Params = QualityParams
    columns = {name: _SPARK_TYPES[kind] for name, kind in SCORE_COLUMNS.items()}
    verdict_first = True

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        return StageResult(self.annotate(docs, partial(_assess_batch, self.params)), metrics=_metrics)
