"""The pii pre-filter changes no output: the Spark stage's batch function gives equal results with and
without it on the labelled PII set and on the demo corpus, and what it skips is provably skippable."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest
import regex

from etl.devtools.pii_eval import generate, lookalike_set, phone_recall_set
from etl.stages.pii import PiiParams, PiiRedactor, _redact_batch
from etl.text.pii_prefilter import _TO_ASCII, PiiPrefilter
from shards.config import from_dict


def _batch(texts: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": [f"d{i}" for i in range(len(texts))], "text": texts})


def _both_ways(texts: list[str], salt: bytes | None = None, **params) -> tuple[list, list]:
    """The Spark stage's mapInArrow function (etl.stages.pii._redact_batch) with and without the pre-filter."""
    outputs = []
    for prefilter in (True, False):
        verdicts = _redact_batch(from_dict(PiiParams, {**params, "prefilter": prefilter}, "pii"), salt, _batch(texts))
        outputs.append(list(zip(verdicts.texts, verdicts.reasons, verdicts.details, verdicts.columns["pii_entities"])))
    return outputs[0], outputs[1]


def _skipped(texts: list[str]) -> int:
    prefilter = PiiRedactor(PiiParams(), None).prefilter
    return sum(not prefilter.might_hold(t) for t in texts)


def _demo_texts(folder) -> list[str]:
    """The demo's raw corpus (jobs/demo.py) at a small size: the fixture's documents and the planted posts."""
    from jobs.demo import build_corpus

    raw, _, texts = build_corpus(folder, n_docs=300, planted=12)
    posts = [json.loads(line)["text"] for line in (raw / "forum" / "posts.jsonl").read_text().splitlines()]
    return texts + posts


def test_prefilter_changes_no_output_on_the_pii_set():
    texts = [d.text for d in generate(n_per_type=60, n_lookalike_docs=150, seed=7)]
    texts += [d.text for d in phone_recall_set(n_per_region=20)]
    texts += [d.text for docs in lookalike_set(n_per_kind=20).values() for d in docs]
    with_prefilter, without = _both_ways(texts)
    assert with_prefilter == without
    assert sum(1 for _, _, _, counts in without if counts) > 400  # the set is mostly PII: the test has teeth
    assert _skipped(texts) > 100


def test_prefilter_changes_no_output_on_the_demo_corpus(tmp_path):
    texts = _demo_texts(tmp_path)
    with_prefilter, without = _both_ways(texts, b"a-test-salt-of-32-characters-xyz", actions={"EMAIL": "hash", "IBAN": "drop"},
                                    max_density=0.2)
    assert with_prefilter == without
    assert sum(1 for _, _, _, counts in without if counts) >= 12  # the planted posts are found
    assert _skipped(texts) > len(texts) // 2  # most of the corpus skips presidio


def test_a_custom_recognizer_is_prefiltered_by_its_own_patterns():
    params = {"entities": ["EMAIL"], "recognizers": [
        {"entity": "EMPLOYEE_ID", "patterns": [r"\bE\d{6}\b"], "context": ["employee"], "score": 0.2}]}
    texts = ["Her employee number is E123456.", "Model e123456 ships in May.", "Nothing to see here."]
    with_prefilter, without = _both_ways(texts, **params)
    assert with_prefilter == without and without[0][0] == "Her employee number is <EMPLOYEE_ID>."
    prefilter = PiiRedactor(from_dict(PiiParams, params, "pii"), None).prefilter
    assert [prefilter.might_hold(t) for t in texts] == [True, True, False]  # IGNORECASE, as the recogniser


def test_prefilter_is_on_by_default_and_off_for_ner_or_when_configured():
    assert PiiRedactor(from_dict(PiiParams, {}, "pii"), None).prefilter is not None
    assert PiiRedactor(from_dict(PiiParams, {"prefilter": False}, "pii"), None).prefilter is None
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    with pytest.raises(ValueError, match="NER"):
        PiiPrefilter.for_recognizers([SpacyRecognizer(supported_entities=["PERSON"])])


def test_case_folding_table_covers_every_code_point():
    """Every non-ASCII character `regex` matches to an ASCII letter under IGNORECASE (what presidio's
    case-insensitive patterns do) maps to that letter before the pre-filter's lower-cased word test."""
    text = "".join(chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        for match in regex.finditer(letter, text, regex.IGNORECASE):
            assert letter in match.group().translate(_TO_ASCII).lower(), hex(ord(match.group()))
