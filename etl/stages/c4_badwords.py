"""The `c4_badwords` stage: C4's bad-words filter, in each document's own language.

It runs after the `language` stage and reads its ``language`` column: a document is rejected as
``c4_badwords`` when its text holds a word of its language's LDNOOBW list (``etl.text.badwords``;
the lists ship in ``etl/data/badwords/``, CC-BY-4.0), ``detail`` naming the language and the word.
A document whose language has no list (``und`` included) passes, as datatrove's filter does with
``fail_on_missing_language=False``; a null language reads as ``default_language``. Reference:
docs/etl/quality.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import pyarrow as pa
from pyspark.sql import DataFrame

from shards.config import ConfigError

from ..text.badwords import BadWords, find_bad_word, load_lists
from ..worker_cache import built_once
from .base import BatchVerdicts, DocumentStage, StageContext, StageResult


@dataclass
class C4BadWordsParams:
    # Column naming each document's language (ISO 639-1), as the `language` stage writes it.
    language_column: str = "language"
    # Language assumed where that column is null.
    default_language: str = "en"
    # Lists replacing or adding to the built-in ones, language -> file (local or s3://), one word a line.
    wordlists: dict[str, str] = field(default_factory=dict)


def _lists(params: C4BadWordsParams) -> dict[str, BadWords]:
    """Every language's list, built once per worker."""
    return built_once(("c4_badwords", tuple(sorted(params.wordlists.items()))), lambda: load_lists(params.wordlists))


def _judge_batch(params: C4BadWordsParams, batch: pa.RecordBatch) -> BatchVerdicts:
    lists = _lists(params)
    languages = batch.column(params.language_column).to_pylist()
    reasons, details = [], []
    for text, language in zip(batch.column("text").to_pylist(), languages):
        language = language or params.default_language
        found = find_bad_word(lists, text or "", language)
        reasons.append("c4_badwords" if found else None)
        details.append(f"{language}: {found!r}" if found else None)
    return BatchVerdicts(reasons, details)


class C4BadWords(DocumentStage[C4BadWordsParams]):
    name = "c4_badwords"
    Params = C4BadWordsParams
    path_params = ("wordlists",)

    def check(self, where: str, config, stage_names: list[str]) -> None:
        """It needs the language column, so `language` must run before it; a list must load."""
        before = stage_names[: stage_names.index(self.name)]
        if self.params.language_column == "language" and "language" not in before:
            raise ConfigError(f"{where}: c4_badwords reads each document's language: put the `language` stage before it")
        try:
            _lists(self.params)
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{where}.wordlists: {err}") from None

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        if self.params.language_column not in docs.columns:
            raise ValueError(f"c4_badwords: no column {self.params.language_column!r}; run the `language` stage first")
        return StageResult(self.annotate(docs, partial(_judge_batch, self.params)))
