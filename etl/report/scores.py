"""Score histograms for tuning a filter: the kept documents against the rejected ones, per scored rule,
with the rule's threshold drawn where it cuts.

Kept documents carry their scores as columns of the stage's table. Rejected rows keep only their
text and ``detail`` (the rejected tables have one schema for every stage), so their scores are
recovered the cheapest way there is: measured again from the text for `quality` (the same pure
function the stage ran), read back from ``detail`` where the stage writes the score there.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import reduce
from typing import Any, Callable

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..delta import read_table
from ..text.quality_rules import TextStats

BINS = 40


@dataclass(frozen=True)
class ScoredRule:
    """A score column of a stage's kept table, the reasons it rejects for and the params that set its thresholds."""

    stage: str
    column: str
    label: str  # the axis label: what the number measures
    reasons: tuple[str, ...]  # the rejection reasons this score decides
    thresholds: tuple[str, ...]  # names of the stage's params holding its cut-offs (null: rule off)
    scale: str = "fraction"  # fraction: 0..1 linear; count: log; linear: 0..max


def _quality_rejected(text: str, detail: str | None) -> dict[str, Any]:
    stats = TextStats.measure(text or "")
    return stats.scores(None) if stats is not None else {}


def _detail_number(pattern: str, column: str) -> Callable[[str, str | None], dict[str, Any]]:
    compiled = re.compile(pattern)

    def parse(text: str, detail: str | None) -> dict[str, Any]:
        match = compiled.search(detail or "")
        return {column: float(match.group(1))} if match else {}

    return parse


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

# How a rejected row's score is recovered, per stage (see the module's docstring); those in
# TEXT_SCORED need the row's text, the others only its detail.
REJECTED_SCORES: dict[str, Callable[[str, str | None], dict[str, Any]]] = {
    "quality": _quality_rejected,
    "language": _detail_number(r"\(([0-9.]+)\)", "language_score"),
    "toxicity": _detail_number(r"score ([0-9.]+)", "toxicity"),
    "decontaminate": _detail_number(r"^(\d+) shared", "contamination_ngrams"),
    "classify": _detail_number(r"^score (-?[0-9.]+)", "classifier_score"),
}
TEXT_SCORED = ("quality",)


def _sample(df: DataFrame, total: int, limit: int) -> DataFrame:
    """At most ``limit`` of the ``total`` rows (known from the funnel), drawn evenly: limit alone
    would take the first files."""
    return df.sample(fraction=min(1.0, 1.2 * limit / total), seed=0).limit(limit) if total > limit else df


def _edges(scale: str, values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if len(values) else 1.0
    if scale == "fraction":
        return np.linspace(0.0, 1.0, BINS + 1)
    if scale == "count":
        return np.unique(np.round(np.logspace(0, math.log10(max(top, 10.0) + 1), BINS + 1))) - 0.5
    return np.linspace(0.0, max(top, 1e-9), BINS + 1)


def _union(parts: list[DataFrame]) -> list:
    return reduce(DataFrame.unionByName, parts).collect() if parts else []


def score_histograms(spark: SparkSession, tables: dict[str, str], rejected: dict[str, DataFrame], steps: list[dict],
                     stage_params: dict[str, Any], sample: int) -> dict[str, list[dict]]:
    """Per stage, one histogram per scored rule whose column its kept table has: bin edges, and
    counts of the kept documents, those this rule rejected and those another rule of the stage
    rejected. Two Spark jobs in all: the kept scores (long format), the rejected rows."""
    rules = {}
    kept_parts, rejected_stages = [], {}
    for step in steps:
        table = read_table(spark, tables[step["stage"]])
        mine = [r for r in RULES if r.stage == step["stage"] and r.column in table.columns]
        if not mine or not step["docs_out"]:
            continue
        rules[step["stage"]] = mine
        pairs = F.explode(F.array(*[F.struct(F.lit(r.column).alias("column"), F.col(r.column).cast("double").alias("value"))
                                    for r in mine]))
        kept_parts.append(_sample(table, step["docs_out"], sample)
                          .select(F.lit(step["stage"]).alias("stage"), pairs.alias("p")).select("stage", "p.column", "p.value"))
        if step["rejected"] and step["stage"] in REJECTED_SCORES:
            rejected_stages[step["stage"]] = sum(step["rejected"].values())
    kept: dict[tuple[str, str], list[float]] = {}
    for row in _union(kept_parts):
        if row["value"] is not None:
            kept.setdefault((row["stage"], row["column"]), []).append(row["value"])
    needs_text = F.col("stage").isin([s for s in rejected_stages if s in TEXT_SCORED])
    parts = [_sample(table.where(F.col("stage") == stage), n, sample)
             .select("stage", "reason", "detail", F.when(needs_text, F.col("text")).alias("text"))
             for stage, n in rejected_stages.items() for table in rejected.values()]
    recovered: dict[str, list[tuple[str, dict]]] = {}
    for row in _union(parts):
        recovered.setdefault(row["stage"], []).append((row["reason"], REJECTED_SCORES[row["stage"]](row["text"], row["detail"])))
    return {stage: [_histogram(rule, kept.get((stage, rule.column), []), recovered.get(stage, []), stage_params.get(stage))
                    for rule in mine] for stage, mine in rules.items()}


def _histogram(rule: ScoredRule, kept: list[float], rejected: list[tuple[str, dict]], params: Any) -> dict:
    kept_values = np.array(kept, float)
    mine = np.array([s[rule.column] for r, s in rejected if r in rule.reasons and s.get(rule.column) is not None], float)
    other = np.array([s[rule.column] for r, s in rejected if r not in rule.reasons and s.get(rule.column) is not None], float)
    edges = _edges(rule.scale, np.concatenate([kept_values, mine, other]))

    def counts(values: np.ndarray) -> list[int]:  # out-of-range values land in the end bins
        return np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0].tolist()

    return {
        "stage": rule.stage, "column": rule.column, "label": rule.label, "scale": rule.scale, "reasons": list(rule.reasons),
        "thresholds": {name: getattr(params, name) for name in rule.thresholds if getattr(params, name, None) is not None},
        "edges": [float(e) for e in edges], "kept": counts(kept_values), "rejected_by_rule": counts(mine),
        "rejected_other": counts(other),
    }
