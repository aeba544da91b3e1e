"""The `url_filter` stage: drop documents by their URL, from domain and URL block lists, banned
words in the URL, and an allow list that wins.

The lists are files (local or any fsspec store: ``s3://``, ...), read once on the driver when the
stage runs and shipped to the workers with the function; the matching is ``etl.text.url_rules``.
A rejected document's ``reason`` says which kind of list (``url_filter:domain``, ``url_filter:url``,
``url_filter:banned_word``) and its ``detail`` which list and entry matched, e.g.
``blocked_domains.txt: casino.example``. A document without a URL in ``meta`` passes: there is
nothing to judge. Reference: docs/etl/url_filter.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial

import fsspec
import pyarrow as pa
from pyspark.sql import DataFrame

from shards.config import ConfigError

from ..text.url_rules import UrlLists, parse_entries
from .base import BatchVerdicts, DocumentStage, StageContext, StageResult


@dataclass
class UrlFilterParams:
    # Files of domains to block, one a line; a domain blocks its subdomains too.
    domain_lists: list[str] = field(default_factory=list)
    # Files of exact URLs to block, one a line.
    url_lists: list[str] = field(default_factory=list)
    # Files of words that block a URL holding one (split at non-alphanumerics, lower-cased).
    banned_word_lists: list[str] = field(default_factory=list)
    # Banned words given here rather than in a file (reported as the list `banned_words`).
    banned_words: list[str] = field(default_factory=list)
    # Files of domains (and URLs, when an entry holds ://) that pass whatever the block lists say.
    allow_lists: list[str] = field(default_factory=list)
    # The key of `meta` that holds a document's URL (WARC and WET ingest write `url`).
    url_field: str = "url"

    def __post_init__(self):
        if not (self.domain_lists or self.url_lists or self.banned_word_lists or self.banned_words):
            raise ValueError("give at least one of domain_lists, url_lists, banned_word_lists, banned_words")


def load_lists(params: UrlFilterParams) -> UrlLists:
    """Every list file read (through fsspec) into one ``UrlLists``; an unreadable file raises OSError."""
    lists = UrlLists()
    files = [(path, lists.add_domains) for path in params.domain_lists]
    files += [(path, lists.add_urls) for path in params.url_lists]
    files += [(path, lists.add_words) for path in params.banned_word_lists]
    files += [(path, lists.add_allowed) for path in params.allow_lists]
    for path, add in files:
        with fsspec.open(path, "rt", encoding="utf-8") as handle:
            add(parse_entries(handle.read()), os.path.basename(path.rstrip("/")))
    lists.add_words(params.banned_words, "banned_words")
    return lists


def _judge_batch(lists: UrlLists, url_field: str, batch: pa.RecordBatch) -> BatchVerdicts:
    metas = batch.column("meta").to_pylist() if "meta" in batch.schema.names else [None] * batch.num_rows
    verdicts = [lists.judge(dict(meta or ()).get(url_field)) for meta in metas]
    return BatchVerdicts(reasons=[v[0] for v in verdicts], details=[v[1] for v in verdicts])


class UrlFilter(DocumentStage[UrlFilterParams]):
    name = "url_filter"
    Params = UrlFilterParams
    path_params = ("domain_lists", "url_lists", "banned_word_lists", "allow_lists")

    def check(self, where: str, config, stage_names: list[str]) -> None:
        """A missing or unreadable list fails when the config is loaded, naming the file."""
        try:
            load_lists(self.params)
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{where}: cannot read a list: {err}") from None

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        judge = partial(_judge_batch, load_lists(self.params), self.params.url_field)
        return StageResult(self.annotate(docs, judge))
