"""classify: score every document with a quality classifier, keep the score, keep the best documents.

The model (`etl.text.classifiers`) is built once per Python worker: a fastText ``.bin`` (DCLM,
FineWeb-Edu), a Hugging Face sequence-classification folder, or Kiln's own hashed n-gram model from
``python -m etl train-classifier``. Every document gets the score column ``classifier_score``; the
stage keeps documents scoring at least ``min_score``, or the ``keep_top_fraction`` best of them.

The top fraction needs the score every document would need across the whole input: the scored
documents are cached, Spark's ``approxQuantile`` gives the threshold (rank error at most
``quantile_error`` x documents; 0 computes it exactly), and the verdicts are set from it, so the model
runs once per document. A rejected document's reason names the classifier and the threshold
(``classify:dclm<0.0183``), its detail the score. Workflow and numbers: docs/etl/classify.md.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType

from shards.config import ConfigError

from ..paths import local_fs_path
from ..spark import CACHE_LEVEL
from ..text import classifiers
from ..worker_cache import built_once
from .base import DocumentStage, StageContext, StageResult

SCORE_COLUMN = "classifier_score"


@dataclass
class ClassifyParams:
    # The model: a fastText .bin file, a Hugging Face folder (save_pretrained) or a Kiln .npz from
    # `python -m etl train-classifier`; local (relative: to the working directory) or s3://...
    model_path: str
    # fasttext, huggingface or kiln: how to read model_path.
    model_type: Literal["fasttext", "huggingface", "kiln"]
    # The classifier's name in rejection reasons; default: the model's file or folder name, without extension.
    name: str | None = None
    # The label whose probability is the score: fastText default `hq` (DCLM's), Hugging Face default
    # label 1 of a two-label model (a one-output regression model scores its output); kiln: unused.
    label: str | None = None
    # Keep documents scoring at least this (reject the others); null: see keep_top_fraction.
    min_score: float | None = None
    # Keep this fraction of the documents, the best-scoring ones (ties at the threshold are kept);
    # null with min_score null: score only, reject nothing.
    keep_top_fraction: float | None = None
    # keep_top_fraction's threshold is Spark's approxQuantile with this relative error (rank error at
    # most this x documents); 0: exact (it holds every score in memory on the driver at once).
    quantile_error: float = 0.001
    batch_size: int = 32  # huggingface: texts per forward pass
    max_length: int = 512  # huggingface: tokens per text; longer texts are truncated

    def __post_init__(self):
        if not self.model_path:
            raise ValueError("model_path must name a model")
        if self.min_score is not None and self.keep_top_fraction is not None:
            raise ValueError("give min_score or keep_top_fraction, not both")
        if self.keep_top_fraction is not None and not 0.0 < self.keep_top_fraction <= 1.0:
            raise ValueError(f"keep_top_fraction must be in (0, 1], got {self.keep_top_fraction}")
        if not 0.0 <= self.quantile_error <= 0.1:
            raise ValueError(f"quantile_error must be between 0 and 0.1, got {self.quantile_error}")
        if self.batch_size < 1 or self.max_length < 1:
            raise ValueError("batch_size and max_length must be positive")
        if self.model_type == "kiln" and self.label is not None:
            raise ValueError("label does not apply to a kiln model (its score is the probability of the kept class)")

    @property
    def classifier_name(self) -> str:
        base = os.path.basename(self.model_path.rstrip("/"))
        return self.name or os.path.splitext(base)[0]


def build_classifier(params: ClassifyParams) -> classifiers.Classifier:
    if params.model_type == "fasttext":
        return classifiers.FastTextClassifier(params.model_path, params.label)
    if params.model_type == "huggingface":
        return classifiers.HuggingFaceClassifier(params.model_path, params.label, params.max_length, params.batch_size)
    return classifiers.HashedLinearClassifier(params.model_path)


def _classifier(params: ClassifyParams) -> classifiers.Classifier:
    """One model per Python worker and configuration, reused across batches and tasks."""
    return built_once(("classify", repr(sorted(asdict(params).items()))), lambda: build_classifier(params))


def _score_udf(params: ClassifyParams):
    """The scores as a scalar pandas UDF: only the text crosses to Python and only a number comes back.
    Through ``annotate``'s mapInArrow every column crossed both ways: on 200,000 documents (1.4 kB each)
    Spark's JVM spent 12-13 us of CPU a document on it against 4-5 here (docs/etl/classify.md)."""
    def scores(texts: pd.Series) -> pd.Series:
        return pd.Series(_classifier(params).score(texts.tolist()), dtype="float64")

    # Nondeterministic for the optimizer: a filter on the verdicts is not pushed below the scoring,
    # which would run the model once for the filter and again for the columns.
    return F.pandas_udf(scores, DoubleType()).asNondeterministic()


def rejection_reason(name: str, threshold: float) -> str:
    return f"classify:{name}<{threshold:.4g}"


class Classify(DocumentStage[ClassifyParams]):
    name = "classify"
    Params = ClassifyParams
    path_params = ("model_path",)
    columns = {SCORE_COLUMN: DoubleType()}
    replaces = (SCORE_COLUMN,)  # a rerun on already-scored documents replaces the score

    def check(self, where: str, config, stage_names: list[str]) -> None:
        """A local model that is missing, or a file where a folder is expected, fails when the config
        is loaded; the model itself is read on the workers (a large one is not loaded twice)."""
        local = local_fs_path(self.params.model_path)
        if local is None:
            return
        if not os.path.exists(local):
            raise ConfigError(f"{where}.model_path: {self.params.model_path!r} does not exist")
        if os.path.isdir(local) != (self.params.model_type == "huggingface"):
            expected = "a folder" if self.params.model_type == "huggingface" else "a file"
            raise ConfigError(f"{where}.model_path: a {self.params.model_type} model is {expected}: "
                              f"{self.params.model_path!r}")

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        score = _score_udf(self.params)(F.col("text"))
        scored = self.without_own_columns(docs).withColumn(SCORE_COLUMN, score)
        fraction, cached = self.params.keep_top_fraction, None
        if fraction is not None:
            # Cached: the threshold is computed from it, and the verdicts then read it; the model runs once.
            scored = cached = scored.persist(CACHE_LEVEL)
            threshold = _top_fraction_threshold(scored, fraction, self.params.quantile_error)
            detail = (f"score %.4f < {threshold:.6g} (the best {fraction:g}, by approxQuantile with relative "
                      f"error {self.params.quantile_error:g})")
        else:
            threshold, detail = self.params.min_score, f"score %.4f < min_score {self.params.min_score}"
        if threshold is None:  # score only
            nothing = F.lit(None).cast(StringType())
            return StageResult(scored.withColumn("reason", nothing).withColumn("detail", nothing),
                               metrics=partial(_metrics, None, None))
        below = F.col(SCORE_COLUMN) < F.lit(threshold)
        annotated = scored.withColumn(
            "reason", F.when(below, F.lit(rejection_reason(self.params.classifier_name, threshold)))
        ).withColumn("detail", F.when(below, F.format_string(detail, F.col(SCORE_COLUMN))))
        return StageResult(annotated, metrics=partial(_metrics, cached, threshold))


def _top_fraction_threshold(scored: DataFrame, fraction: float, error: float) -> float:
    """The score at the (1 - fraction) quantile: documents at or above it are kept."""
    if fraction >= 1.0:
        return float("-inf")
    quantiles = scored.approxQuantile(SCORE_COLUMN, [1.0 - fraction], error)
    return quantiles[0] if quantiles else float("-inf")  # no documents: nothing to reject


def _metrics(cached: DataFrame | None, threshold: float | None, annotated: DataFrame) -> dict:
    """The score's distribution and the threshold used; releases the cached scores (the pipeline has
    cached the annotated documents, which everything after reads, when it asks for its metrics)."""
    quantiles = annotated.approxQuantile(SCORE_COLUMN, [0.1, 0.5, 0.9], 0.01)
    mean = annotated.agg(F.avg(SCORE_COLUMN)).collect()[0][0]
    if cached is not None:
        cached.unpersist()
    result = {"mean_score": round(float(mean or 0.0), 4),
              "score_quantiles": {q: round(v, 4) for q, v in zip(("p10", "p50", "p90"), quantiles)}}
    if threshold is not None and threshold != float("-inf"):
        result["threshold"] = threshold  # unrounded: the notebook and tools compare scores against it
    return result
