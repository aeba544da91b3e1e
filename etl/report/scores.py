"""Score histograms for tuning a filter: the kept documents against the rejected ones, per scored rule,
with the rule's threshold drawn where it cuts.

Every scoring stage writes its score columns on all the rows it sees, rejected ones included, but the
rejected tables keep one schema for every stage (no score columns). So the pipeline samples the
scores from each stage's output while it is still cached (``sample_scores``, one small Spark job per
scored stage), and the report draws them. Reading the tables back instead, and measuring the
rejected texts again, took 4.3 s of the demo's 10.5 s report (docs/etl/report.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

BINS = 40


@dataclass(frozen=True)
class ScoredRule:
    """A score column a stage writes on every row it sees, the reasons it rejects for and the params that set its thresholds."""

    stage: str
    column: str
    label: str  # the axis label: what the number measures
    reasons: tuple[str, ...]  # the rejection reasons this score decides
    thresholds: tuple[str, ...]  # names of the stage's params holding its cut-offs (null: rule off)
    scale: str = "fraction"  # fraction: 0..1 linear; count: log; linear: 0..max


def _q(column: str, label: str, reasons: tuple[str, ...], thresholds: tuple[str, ...], scale: str = "fraction") -> ScoredRule:
    return ScoredRule("quality", column, label, tuple(f"quality:{r}" for r in reasons), thresholds, scale)


RULES = (
    _q("q_words", "words per document", ("gopher_short_doc", "gopher_long_doc"), ("min_words", "max_words"), "count"),
    _q("q_mean_word_len", "mean word length (characters)", ("gopher_short_words", "gopher_long_words"),
       ("min_mean_word_len", "max_mean_word_len"), "linear"),
    _q("q_symbol_ratio", "'#' or '...' per word", ("gopher_hash_ratio", "gopher_ellipsis_ratio"), ("max_symbol_word_ratio",)),
    _q("q_alpha_frac", "share of words with a letter", ("gopher_non_alpha_words",), ("min_alpha_words_frac",)),
    _q("q_dup_line_frac", "share of lines repeating an earlier one", ("gopher_dup_line_frac",), ("max_dup_line_frac",)),
    _q("q_dup_para_frac", "share of paragraphs repeating an earlier one", ("gopher_dup_para_frac",), ("max_dup_para_frac",)),
    _q("q_top_2gram_frac", "characters in the most frequent 2-gram", ("gopher_top_2gram_frac",), ("max_top_2gram_char_frac",)),
    _q("q_dup_5gram_frac", "characters in repeated 5-grams", ("gopher_dup_5gram_frac",), ("max_dup_5gram_char_frac",)),
    ScoredRule("language", "language_score", "language identifier's probability", ("language_undetermined",), ("min_confidence",)),
    ScoredRule("toxicity", "toxicity", "toxicity score", ("toxic", "below_min_toxicity"), ("max_score", "min_score")),
    ScoredRule("decontaminate", "contamination_ngrams", "n-grams shared with an evaluation set", ("contaminated",),
               ("min_matches",), "linear"),
    # classify's reasons name the classifier and threshold (classify:<name><<threshold>): its rejections count as "other".
    ScoredRule("classify", "classifier_score", "quality classifier's score", (), ("min_score",), "linear"),
)


def _edges(scale: str, values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if len(values) else 1.0
    if scale == "fraction":
        return np.linspace(0.0, 1.0, BINS + 1)
    if scale == "count":
        return np.unique(np.round(np.logspace(0, math.log10(max(top, 10.0) + 1), BINS + 1))) - 0.5
    return np.linspace(0.0, max(top, 1e-9), BINS + 1)


def sample_scores(annotated: DataFrame, stage: str, kept: int, rejected: int, limit: int) -> dict | None:
    """A stage's scores, about ``limit`` kept and ``limit`` rejected documents drawn evenly from its
    cached output: ``{"columns": [...], "rows": [(reason, *values)]}``; None for a stage without scores."""
    columns = [r.column for r in RULES if r.stage == stage and r.column in annotated.columns]
    if not columns or not kept + rejected or not limit:
        return None
    share = (F.when(F.col("reason").isNull(), F.lit(min(1.0, limit / max(kept, 1))))
             .otherwise(F.lit(min(1.0, limit / max(rejected, 1)))))
    rows = annotated.where(F.rand(seed=0) < share).select("reason", *columns).collect()
    return {"columns": columns, "rows": [tuple(row) for row in rows]}


def score_histograms(samples: dict[str, dict], stage_params: dict[str, Any]) -> dict[str, list[dict]]:
    """Per stage, one histogram per scored rule of its sample: bin edges, and counts of the kept
    documents, those this rule rejected and those another rule of the stage rejected."""
    histograms = {}
    for stage, sample in samples.items():
        position = {column: i + 1 for i, column in enumerate(sample["columns"])}
        histograms[stage] = [
            _histogram(rule, [(row[0], row[position[rule.column]]) for row in sample["rows"]], stage_params.get(stage))
            for rule in RULES if rule.stage == stage and rule.column in position
        ]
    return histograms


def _histogram(rule: ScoredRule, scored: list[tuple[str | None, float | None]], params: Any) -> dict:
    """``scored``: (reason, value) per sampled document, reason None for kept ones."""
    def values(keep) -> np.ndarray:
        return np.array([v for r, v in scored if v is not None and keep(r)], float)

    kept_values = values(lambda r: r is None)
    mine = values(lambda r: r in rule.reasons)
    other = values(lambda r: r is not None and r not in rule.reasons)
    edges = _edges(rule.scale, np.concatenate([kept_values, mine, other]))

    def counts(values: np.ndarray) -> list[int]:  # out-of-range values land in the end bins
        return np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0].tolist()

    return {
        "stage": rule.stage, "column": rule.column, "label": rule.label, "scale": rule.scale, "reasons": list(rule.reasons),
        "thresholds": {name: getattr(params, name) for name in rule.thresholds if getattr(params, name, None) is not None},
        "edges": [float(e) for e in edges], "kept": counts(kept_values), "rejected_by_rule": counts(mine),
        "rejected_other": counts(other),
    }
