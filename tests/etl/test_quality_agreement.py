"""quality agrees with datatrove 0.10.1's GopherRepetitionFilter -> GopherQualityFilter ->
C4QualityFilter (-> FineWebQualityFilter) on a varied corpus: same decisions, same rules, same text
after C4's line filtering; c4_badwords agrees with its C4BadWordsFilter.

datatrove runs in its own venv (scripts/side_install_datatrove.sh, which `make test` runs first).
Under CI the venv must be there; locally the test is skipped when it is missing.
"""
from __future__ import annotations

import os

import pytest

from bench.quality_agreement import (DATATROVE_PYTHON, compare, make_badwords_corpus, make_corpus, make_fineweb_corpus,
                                     run_datatrove, run_ours, run_ours_badwords)
from etl.text.quality_rules import QualityParams


@pytest.fixture(scope="module")
def datatrove():
    if not DATATROVE_PYTHON.exists():
        message = f"{DATATROVE_PYTHON} is missing: run scripts/side_install_datatrove.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def corpus(datatrove):
    return make_corpus(2000, seed=0)


def _summary(agreement) -> str:
    lines = [f"{doc['id']}: ours {a.reason} / datatrove {b.reason}" for doc, a, b in agreement.disagreements[:20]]
    return "\n".join(lines)


def _check(corpus, params: QualityParams):
    ours, _ = run_ours(corpus, params)
    theirs, _ = run_datatrove(corpus, params)
    agreement = compare(corpus, ours, theirs)
    assert agreement.decision_rate >= 0.97, _summary(agreement)
    assert agreement.reason_rate >= 0.97, _summary(agreement)
    assert agreement.kept_text_rate >= 0.97, _summary(agreement)
    return ours, agreement


def test_agrees_with_datatrove_at_default_thresholds(corpus):
    ours, agreement = _check(corpus, QualityParams())
    # The corpus must exercise the rules, not only agree on easy cases.
    reasons = {outcome.reason for outcome in ours.values()}
    assert len(reasons - {None}) >= 20, sorted(r for r in reasons if r)
    kept = sum(outcome.reason is None for outcome in ours.values())
    assert 0.2 * len(corpus) < kept < 0.6 * len(corpus)
    assert agreement.both_kept > 0.2 * len(corpus)


def test_agrees_with_datatrove_at_other_thresholds(corpus):
    params = QualityParams(
        min_words=20, max_words=400, max_dup_line_frac=None, max_top_2gram_char_frac=None,
        max_dup_5gram_char_frac=0.3, min_alpha_words_frac=0.6, min_stop_words=1, max_bullet_lines_frac=0.5,
        c4_min_sentences=3, c4_terminal_punct=False, c4_policy=False, c4_remove_citations=False,
        c4_min_words_per_line=None,
    )
    _check(corpus[:400], params)


def _rates(agreement):
    assert agreement.decision_rate >= 0.97, _summary(agreement)
    assert agreement.reason_rate >= 0.97, _summary(agreement)


def test_fineweb_rules_agree_with_datatrove(datatrove):
    """FineWebQualityFilter at its defaults, alone (every rule fires) and after Gopher and C4."""
    docs = make_fineweb_corpus(1000, seed=0)
    alone = QualityParams(gopher_repetition=False, gopher_quality=False, c4=False, fineweb=True)
    ours, _ = run_ours(docs, alone)
    theirs, _ = run_datatrove(docs, alone)
    _rates(compare(docs, ours, theirs))
    reasons = {outcome.reason for outcome in ours.values()}
    assert {f"quality:fineweb_{r}" for r in ("line_punct", "short_lines", "dup_line_chars", "list_like")} <= reasons
    chain = QualityParams(fineweb=True, fineweb_max_short_line_frac=0.5, fineweb_line_punct_exclude_zero=True)
    ours, _ = run_ours(docs[:400], chain)
    theirs, _ = run_datatrove(docs[:400], chain)
    agreement = compare(docs[:400], ours, theirs)
    _rates(agreement)
    assert agreement.kept_text_rate >= 0.97


def test_c4_badwords_agrees_with_datatrove(datatrove):
    """C4BadWordsFilter with every list, on prose with planted words in each list's language."""
    docs = make_badwords_corpus(1000, seed=0)
    ours, _ = run_ours_badwords(docs)
    theirs, _ = run_datatrove(docs, None)
    _rates(compare(docs, ours, theirs))
    kept = sum(outcome.reason is None for outcome in ours.values())
    assert 0.2 * len(docs) < kept < 0.8 * len(docs)
