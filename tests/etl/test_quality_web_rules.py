"""FineWeb's quality rules and C4's bad words, rule by rule, in plain Python; their config checks."""
from __future__ import annotations

import pytest

from etl.load_config import validate_pipeline_config
from etl.text.badwords import BadWords, builtin_languages, find_bad_word, load_lists
from etl.text.quality_rules import REASONS, QualityParams, assess
from shards.config import ConfigError

ONLY_FINEWEB = dict(gopher_repetition=False, gopher_quality=False, c4=False, fineweb=True)
SENTENCE = "The mill by the river has ground flour for the town for two hundred years."

FINEWEB_CASES = {
    # (text, a piece of the detail)
    "quality:fineweb_line_punct": ("\n".join([SENTENCE] + [f"{SENTENCE[:-1]}, said number {i}" for i in range(9)]),
                                   "line_punct_frac=0.1 < 0.12"),
    "quality:fineweb_short_lines": ("\n".join([SENTENCE, "Home page", "Contact us", "Our shop.", "Log in."]),
                                    "short_line_frac=0.8 > 0.67"),
    "quality:fineweb_dup_line_chars": ("\n".join([SENTENCE, SENTENCE.upper(), SENTENCE]), "dup_line_char_frac="),
    "quality:fineweb_list_like": ("\n".join(f"https://example.org/articles/page-{i}.html." for i in range(6)),
                                  "newlines_per_word="),
}


@pytest.mark.parametrize("reason", sorted(FINEWEB_CASES))
def test_each_fineweb_rule_tags_its_reason(reason):
    text, detail = FINEWEB_CASES[reason]
    verdict = assess(text, QualityParams(**ONLY_FINEWEB))
    assert verdict.reason == reason and detail in verdict.detail
    assert reason in REASONS


def test_fineweb_is_off_by_default_and_each_rule_can_be_disabled():
    text, _ = FINEWEB_CASES["quality:fineweb_line_punct"]
    assert assess(text, QualityParams(gopher_repetition=False, gopher_quality=False, c4=False)).reason is None
    assert assess(text, QualityParams(**ONLY_FINEWEB, fineweb_min_line_punct_frac=None)).reason is None
    # A text with no line ending in punctuation passes that rule when exclude_zero is set.
    no_punct = "\n".join(f"{SENTENCE[:-1]} and line {i} has no end mark" for i in range(4))
    assert assess(no_punct, QualityParams(**ONLY_FINEWEB, fineweb_line_punct_exclude_zero=True)).reason is None
    # Custom stop characters.
    assert assess(no_punct.replace("mark", "mark;"), QualityParams(**ONLY_FINEWEB, fineweb_stop_chars=[";"])).reason \
        is None


def test_fineweb_sees_the_text_c4_left():
    """C4 drops the short menu lines first, so FineWeb's short-line rule does not fire afterwards."""
    good = " ".join([SENTENCE] * 2)
    text = "\n".join(["Home", "Shop", "Login", "News", "Blog", "Cart", "Help", "Jobs", good, good.replace("mill", "barn"), good.replace("town", "city"),
                      good.replace("river", "lake"), "About"])
    assert assess(text, QualityParams(**ONLY_FINEWEB)).reason == "quality:fineweb_short_lines"
    chain = QualityParams(gopher_repetition=False, gopher_quality=False, c4=True, c4_min_sentences=1, fineweb=True)
    verdict = assess(text, chain)
    assert verdict.reason is None and "Home" not in verdict.text


def test_fineweb_params_are_checked():
    with pytest.raises(ValueError, match="fineweb_max_short_line_frac is a fraction"):
        QualityParams(fineweb_max_short_line_frac=1.5)
    with pytest.raises(ValueError, match="fineweb_stop_chars"):
        QualityParams(fineweb_stop_chars=[""])


def test_bad_words_match_whole_words_in_the_document_language():
    lists = load_lists()
    assert {"en", "de", "fr", "ja", "zh", "ru"} <= set(builtin_languages())
    assert find_bad_word(lists, "A perfectly clean sentence about classes and assets.", "en") is None
    assert find_bad_word(lists, "What the FUCK was that?", "en") == "fuck"
    assert find_bad_word(lists, "(fuck)", "en") == "fuck"
    assert find_bad_word(lists, "xfucky", "en") is None  # inside a longer word: no match
    assert find_bad_word(lists, "they watched 2 girls 1 cup online", "en") == "2 girls 1 cup"  # a phrase
    assert find_bad_word(lists, "Das ist scheiße.", "de") == "scheiße"
    assert find_bad_word(lists, "Das ist scheiße.", "en") is None  # another language's list does not apply
    assert find_bad_word(lists, "any text", "und") is None  # no list for the language: passes
    # Languages written without spaces match anywhere, minus the common subwords datatrove allows.
    assert find_bad_word(lists, "这是一个性能测试", "zh") is None
    word = sorted(BadWords.load("zh").pattern.pattern.split("|"))[5]
    assert find_bad_word(lists, f"前面{word}后面", "zh") is not None


def _config(stages):
    return {"output": "out", "inputs": [{"path": "x", "source": "s"}], "stages": stages, "report": False}


def test_c4_badwords_needs_the_language_stage_before_it(tmp_path):
    with pytest.raises(ConfigError, match="put the `language` stage before it"):
        validate_pipeline_config(_config([{"name": "c4_badwords"}]), check_inputs=False)
    with pytest.raises(ConfigError, match="put the `language` stage before it"):
        validate_pipeline_config(_config([{"name": "c4_badwords"}, {"name": "language"}]), check_inputs=False)
    validate_pipeline_config(_config([{"name": "language"}, {"name": "c4_badwords"}]), check_inputs=False)
    with pytest.raises(ConfigError, match=r"stages\[1\]\.params\.wordlists"):
        validate_pipeline_config(_config([{"name": "language"}, {"name": "c4_badwords", "params": {
            "wordlists": {"en": str(tmp_path / "missing.txt")}}}]), check_inputs=False)
