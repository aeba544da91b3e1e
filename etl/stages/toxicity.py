"""toxicity: score every document for toxicity, keep the score as a column, filter by threshold or band.

The scorer is built once per Python worker (see `etl.text.toxicity_scorers`):

    wordlist         (default) weighted per-language word and phrase lists shipped in etl/data/toxicity;
                     the list is chosen by the document's ``language`` column (from the `language`
                     stage), falling back to ``default_language``; lists are replaceable per language
    profanity_check  the model inside the alt-profanity-check package (English only)
    huggingface      a transformers sequence-classification model from ``model_path`` (a local folder
                     or s3://...); needs torch and transformers, imported only when this is configured

Documents scoring at or above ``max_score`` are rejected as ``toxic``; below ``min_score`` as
``below_min_toxicity`` (a band, e.g. to sample borderline documents). Either can be null.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Literal

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType

from shards.config import ConfigError

from ..text import toxicity_scorers as scorers
from ..worker_cache import built_once
from .base import BatchVerdicts, DocumentStage, StageContext, StageResult

SCORE_COLUMN = "toxicity"


@dataclass
class ToxicityParams:
    # wordlist: per-language word lists; profanity_check: the linear model inside alt-profanity-check;
    # huggingface: a sequence-classification model from model_path. All score in [0, 1].
    scorer: Literal["wordlist", "profanity_check", "huggingface"] = "wordlist"
    # Reject documents scoring at or above this; null: reject none (only score).
    max_score: float | None = 0.3
    # Reject documents scoring below this; with max_score it keeps a band. Null: no lower bound.
    min_score: float | None = None
    # Column naming each document's language (ISO 639-1), as the `language` stage writes it.
    language_column: str = "language"
    # Language assumed when that column is missing or null, and the list used for languages without one.
    default_language: str = "en"
    # Word lists replacing the built-in ones, language -> file path (local or s3://); see etl/data/toxicity/en.txt.
    wordlists: dict[str, str] = field(default_factory=dict)
    # huggingface scorer: the model folder, the label that means toxic (default: guessed), and batching.
    model_path: str | None = None  # a local or object-store folder with the model and its tokenizer
    model_label: str | None = None  # the label whose probability is the score
    batch_size: int = 32  # texts per forward pass
    max_length: int = 512  # tokens per text; longer texts are truncated

    def __post_init__(self):
        for name in ("max_score", "min_score"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.max_score is not None and self.min_score is not None and self.min_score >= self.max_score:
            raise ValueError(f"min_score {self.min_score} must be below max_score {self.max_score}")
        if self.scorer == "huggingface" and not self.model_path:
            raise ValueError("scorer 'huggingface' needs model_path (a local folder or s3://... written by save_pretrained)")
        if self.scorer != "huggingface" and (self.model_path or self.model_label):
            raise ValueError(f"model_path and model_label apply to scorer 'huggingface', not {self.scorer!r}")
        if self.wordlists and self.scorer != "wordlist":
            raise ValueError(f"wordlists apply to scorer 'wordlist', not {self.scorer!r}")
        if self.batch_size < 1 or self.max_length < 1:
            raise ValueError("batch_size and max_length must be positive")


def build_scorer(params: ToxicityParams) -> scorers.ToxicityScorer:
    if params.scorer == "wordlist":
        return scorers.WordListScorer.with_lists(params.wordlists, params.default_language)
    if params.scorer == "profanity_check":
        return scorers.ProfanityCheckScorer()
    return scorers.HuggingFaceScorer(params.model_path, params.model_label, params.max_length, params.batch_size)


def _scorer(params: ToxicityParams) -> scorers.ToxicityScorer:
    """One scorer per Python worker and configuration, reused across batches and tasks."""
    return built_once(("toxicity", repr(sorted(asdict(params).items()))), lambda: build_scorer(params))


def _score_batch(params: ToxicityParams, has_language: bool, batch: pa.RecordBatch) -> BatchVerdicts:
    texts = batch.column("text").to_pylist()
    if has_language:
        languages = [lang or params.default_language for lang in batch.column(params.language_column).to_pylist()]
    else:
        languages = [params.default_language] * len(texts)
    scores = _scorer(params).score(texts, languages)
    reasons, details = [], []
    for score in scores:
        if params.max_score is not None and score >= params.max_score:
            reasons.append("toxic")
            details.append(f"score {score:.3f} >= max_score {params.max_score}")
        elif params.min_score is not None and score < params.min_score:
            reasons.append("below_min_toxicity")
            details.append(f"score {score:.3f} < min_score {params.min_score}")
        else:
            reasons.append(None)
            details.append(None)
    return BatchVerdicts(reasons, details, {SCORE_COLUMN: scores})


class Toxicity(DocumentStage[ToxicityParams]):
    name = "toxicity"
    Params = ToxicityParams
    path_params = ("wordlists", "model_path")
    columns = {SCORE_COLUMN: FloatType()}
    replaces = (SCORE_COLUMN,)  # a rerun on already-scored documents replaces the score

    def check(self, where: str, config, stage_names: list[str]) -> None:
        """A missing or malformed word list fails here, when the config is loaded, with its path."""
        if self.params.scorer == "wordlist":
            try:
                build_scorer(self.params)
            except (OSError, ValueError) as err:
                raise ConfigError(f"{where}.wordlists: {err}") from None

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        has_language = self.params.language_column in docs.columns
        scored = self.annotate(docs, partial(_score_batch, self.params, has_language))
        return StageResult(scored, metrics=_metrics)


def _metrics(annotated: DataFrame) -> dict:
    quantiles = annotated.approxQuantile(SCORE_COLUMN, [0.5, 0.9, 0.99], 0.01)
    mean = annotated.agg(F.avg(SCORE_COLUMN)).collect()[0][0]
    return {
        "mean_score": round(float(mean or 0.0), 4),
        "score_quantiles": {q: round(v, 4) for q, v in zip(("p50", "p90", "p99"), quantiles)},
    }
