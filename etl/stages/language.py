"""language: identify each document's language with py3langid; keep only the allowed ones.

py3langid (a maintained fork of langid.py) ships its naive-Bayes model (over a hundred languages) inside
the package, so nothing is downloaded. Every document gets two columns, ``language`` (ISO 639-1 code,
or ``und`` when the best guess is below ``min_confidence``) and ``language_score`` (the model's
probability for it); later stages read them (``toxicity`` picks its word list by ``language``).
The identifier is built once per Python worker and reads at most ``max_chars`` characters of a
document: the opening of a page says as much about its language as the whole of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, partial

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, StringType

from ..worker_cache import built_once
from .base import BatchVerdicts, DocumentStage, StageContext, StageResult

LANGUAGE_COLUMN = "language"
SCORE_COLUMN = "language_score"
UNDETERMINED = "und"


@dataclass
class LanguageParams:
    # Keep documents in these languages (ISO 639-1, e.g. [en, de]); empty: keep every language.
    allowed: list[str] = field(default_factory=list)
    # Below this probability the language is `und` (undetermined), which is rejected when `allowed` is set.
    min_confidence: float = 0.5
    # Only consider these languages when identifying (fewer confusions between close ones); empty: all it knows.
    candidates: list[str] = field(default_factory=list)
    # Characters of each document the identifier reads.
    max_chars: int = 3000

    def __post_init__(self):
        for name in ("allowed", "candidates"):
            codes = set(getattr(self, name)) - {UNDETERMINED}
            unknown = sorted(codes - set(supported_languages())) if codes else []
            if unknown:
                raise ValueError(f"{name}: unknown language codes {unknown}; py3langid knows {', '.join(sorted(supported_languages()))}")
        if self.candidates and self.allowed and not set(self.allowed) & set(self.candidates):
            raise ValueError(f"allowed {self.allowed} and candidates {self.candidates} have no language in common")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, got {self.min_confidence}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")


@cache
def supported_languages() -> tuple[str, ...]:
    return tuple(_identifier(()).labels)


def _identifier(candidates: tuple[str, ...]):
    """One py3langid identifier (with probabilities) per Python worker and candidate set."""

    def build():
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if candidates:
            identifier.set_languages(list(candidates))
        return identifier

    return built_once(("language", candidates), build)


def identify(texts: list[str], params: LanguageParams) -> list[tuple[str, float]]:
    """(language, probability) per text; `und` below min_confidence or for texts without letters."""
    identifier = _identifier(tuple(params.candidates))
    out = []
    for text in texts:
        sample = (text or "")[: params.max_chars]
        if not any(c.isalpha() for c in sample):
            out.append((UNDETERMINED, 0.0))
            continue
        language, probability = identifier.classify(sample)
        out.append((language if probability >= params.min_confidence else UNDETERMINED, probability))
    return out


def _identify_batch(params: LanguageParams, batch: pa.RecordBatch) -> BatchVerdicts:
    found = identify(batch.column("text").to_pylist(), params)
    allowed = set(params.allowed)
    reasons, details = [], []
    for language, probability in found:
        rejected = bool(allowed) and language not in allowed
        reasons.append(None if not rejected else "language_undetermined" if language == UNDETERMINED else "language")
        details.append(f"{language} ({probability:.2f})" if rejected else None)
    columns = {LANGUAGE_COLUMN: [lang for lang, _ in found], SCORE_COLUMN: [p for _, p in found]}
    return BatchVerdicts(reasons, details, columns)


class Language(DocumentStage[LanguageParams]):
    name = "language"
    Params = LanguageParams
    columns = {LANGUAGE_COLUMN: StringType(), SCORE_COLUMN: FloatType()}
    replaces = (LANGUAGE_COLUMN, SCORE_COLUMN)  # a rerun on already-identified documents replaces them

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        return StageResult(self.annotate(docs, partial(_identify_batch, self.params)), metrics=_metrics)


def _metrics(annotated: DataFrame) -> dict:
    rows = annotated.groupBy(LANGUAGE_COLUMN).count().orderBy(F.desc("count")).limit(30).collect()
    return {"documents_per_language": {r[LANGUAGE_COLUMN]: int(r["count"]) for r in rows}}
