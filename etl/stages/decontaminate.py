"""decontaminate: remove (or flag) training documents that share long word n-grams with evaluation sets.

The evaluation sets are the JSONL task files the evaluations use (llm-foundry ICL formats, HumanEval,
anything with string fields). Each record's text is every string it holds, lists included (a question,
its choices, a code prompt and its tests), in file order; for HumanEval-style code, long n-grams of its
tokens find copied solutions and tests too. Text is lower-cased and split into words (runs of letters and
digits, any script), and every run of `ngram` consecutive words (13 by default, as in GPT-3's
decontamination) becomes a 64-bit hash. Records with fewer words than that add nothing and are counted.

The eval n-gram hashes are sorted once on the driver and broadcast; each training document's n-grams are
hashed in Arrow batches (words hashed with xxh3, n-grams combined with a vectorised polynomial rolling
hash) and looked up with a binary search. A document matching at least `min_matches` n-grams is rejected
as `contaminated` (or, with `mode: flag`, kept with its columns set); `detail` names the evaluation file
and line of its first match. Every document gets `contamination_ngrams` (matches) and
`contamination_source` (file:line or null); the report gets per-file counts.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import pyarrow as pa
import xxhash
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType

from shards.config import ConfigError

from ..spark import ship
from .base import BatchVerdicts, DocumentStage, StageContext, StageResult

NGRAMS_COLUMN = "contamination_ngrams"
SOURCE_COLUMN = "contamination_source"
_WORD_RE = re.compile(r"[^\W_]+")
_BASE = np.uint64(0x100000001B3)  # odd multiplier of the rolling hash (arithmetic wraps modulo 2**64)


@dataclass
class DecontaminateParams:
    eval_paths: list[str] = field(default_factory=list)  # JSONL evaluation files
    ngram: int = 13  # words per n-gram
    min_matches: int = 1  # shared n-grams that make a document contaminated
    mode: Literal["remove", "flag"] = "remove"  # reject contaminated documents, or only mark them

    def __post_init__(self):
        if not self.eval_paths:
            raise ValueError("eval_paths: give at least one evaluation JSONL file")
        if self.ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {self.ngram}")
        if self.min_matches < 1:
            raise ValueError(f"min_matches must be >= 1, got {self.min_matches}")


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def ngram_hashes(tokens: list[str], n: int) -> np.ndarray:
    """uint64 hashes of every run of n consecutive words (empty when there are fewer than n)."""
    if len(tokens) < n:
        return np.empty(0, np.uint64)
    word_hashes = np.fromiter((xxhash.xxh3_64_intdigest(w) for w in tokens), np.uint64, len(tokens))
    count = len(tokens) - n + 1
    combined = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(n):  # h = sum_j w[i + j] * BASE**(n - 1 - j), wrapping
            combined = combined * _BASE + word_hashes[offset:offset + count]
    return combined


def _record_text(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _record_text(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _record_text(item)]
    return []


@dataclass
class EvalNgrams:
    """Sorted eval n-gram hashes, with the file and line each came from first."""

    hashes: np.ndarray  # uint64, sorted, unique
    sources: np.ndarray  # int64 index into `labels`, parallel to hashes
    labels: list[str]  # "file:line"
    records: dict[str, int]  # file -> records read
    too_short: dict[str, int]  # file -> records with fewer than `ngram` words


def check_eval_paths(paths: list[str], where: str = "decontaminate.eval_paths") -> list[str]:
    """The eval files' names (reports key by them), or a ConfigError: a file missing, or two names alike."""
    names = [os.path.basename(path) for path in paths]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: file names must be unique (reports use them), got {names}")
    for i, path in enumerate(paths):
        if not os.path.isfile(path):
            raise ConfigError(f"{where}[{i}]: no evaluation file at {path}")
    return names


def load_eval_ngrams(paths: list[str], n: int) -> EvalNgrams:
    hashes, sources, labels = [], [], []
    records: dict[str, int] = {}
    too_short: dict[str, int] = {}
    names = check_eval_paths(paths)
    for path, name in zip(paths, names):
        records[name] = too_short[name] = 0
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_number}: not valid JSON: {err}") from None
                records[name] += 1
                record_hashes = ngram_hashes(words("\n".join(_record_text(record))), n)
                if not len(record_hashes):
                    too_short[name] += 1
                    continue
                labels.append(f"{name}:{line_number}")
                hashes.append(record_hashes)
                sources.append(np.full(len(record_hashes), len(labels) - 1, np.int64))
    if not hashes:
        return EvalNgrams(np.empty(0, np.uint64), np.empty(0, np.int64), labels, records, too_short)
    all_hashes, all_sources = np.concatenate(hashes), np.concatenate(sources)
    unique, first = np.unique(all_hashes, return_index=True)  # keeps the first record an n-gram came from
    return EvalNgrams(unique, all_sources[first], labels, records, too_short)


def match_counts(text: str | None, eval_ngrams: EvalNgrams, n: int) -> tuple[int, int | None]:
    """(n-grams of `text` found in the eval sets, index into labels of the first match or None)."""
    if not text or not len(eval_ngrams.hashes):
        return 0, None
    doc = ngram_hashes(words(text), n)
    if not len(doc):
        return 0, None
    slots = np.searchsorted(eval_ngrams.hashes, doc).clip(max=len(eval_ngrams.hashes) - 1)
    found = eval_ngrams.hashes[slots] == doc
    hits = int(found.sum())
    return hits, (int(eval_ngrams.sources[slots[found.argmax()]]) if hits else None)


def _match_batch(params: DecontaminateParams, shipped, batch: pa.RecordBatch) -> BatchVerdicts:
    eval_ngrams: EvalNgrams = shipped.value
    counts, sources, reasons, details = [], [], [], []
    for text in batch.column("text").to_pylist():
        hits, source = match_counts(text, eval_ngrams, params.ngram)
        label = None if source is None else eval_ngrams.labels[source]
        contaminated = hits >= params.min_matches
        counts.append(hits)
        sources.append(label)
        reasons.append("contaminated" if contaminated and params.mode == "remove" else None)
        details.append(f"{hits} shared {params.ngram}-grams, first with {label}" if contaminated else None)
    return BatchVerdicts(reasons, details, {NGRAMS_COLUMN: counts, SOURCE_COLUMN: sources})


def _metrics(params: DecontaminateParams, eval_ngrams: EvalNgrams, annotated: DataFrame) -> dict:
    flagged = annotated.filter(F.col(NGRAMS_COLUMN) >= params.min_matches)
    per_file = {row["file"]: row["n"] for row in flagged.groupBy(
        F.substring_index(SOURCE_COLUMN, ":", 1).alias("file")).agg(F.count("*").alias("n")).collect()}
    return {
        "mode": params.mode,
        "ngram": params.ngram,
        "eval_ngrams": int(len(eval_ngrams.hashes)),
        "eval_records": eval_ngrams.records,
        "eval_records_too_short": eval_ngrams.too_short,
        "docs_contaminated": int(sum(per_file.values())),
        "docs_contaminated_by_eval_file": {name: int(per_file.get(name, 0)) for name in eval_ngrams.records},
    }


class Decontaminate(DocumentStage[DecontaminateParams]):
    name = "decontaminate"
    Params = DecontaminateParams
    path_params = ("eval_paths",)
    columns = {NGRAMS_COLUMN: IntegerType(), SOURCE_COLUMN: StringType()}
    replaces = ("reason", "detail")  # an annotated table's verdicts give way to this stage's

    def check(self, where: str, config, stage_names: list[str]) -> None:
        check_eval_paths(self.params.eval_paths, f"{where}.eval_paths")

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        eval_ngrams = load_eval_ngrams(self.params.eval_paths, self.params.ngram)
        shipped = ship(ctx.spark, eval_ngrams)
        annotated = self.annotate(docs, partial(_match_batch, self.params, shipped))
        return StageResult(annotated, metrics=partial(_metrics, self.params, eval_ngrams))
