"""quality: word splitting, every rule with its reason and detail, C4 line filtering, config
errors, and the stage inside a real Spark pipeline."""
from __future__ import annotations

import hashlib
import json
import random
import re

import pytest

from etl.delta import read_table
from etl.load_config import validate_pipeline_config
from etl.pipeline import run_pipeline
from etl.text.quality_rules import REASONS, SCORE_COLUMNS, QualityParams, assess
from etl.text.words import count_sentences, split_words
from shards.config import ConfigError

# English prose that passes every rule at datatrove's defaults: > 50 words, 5+ sentences, stop words.
GOOD = (
    "The river runs through the old town and past the mill. Children play on its banks in the summer.\n"
    "In the winter the water freezes, and people skate from one bridge to the next with their friends.\n"
    "The mill has stood there for two hundred years. It was built by a family of farmers from the valley.\n"
    "Today it is a museum that tells the story of the town and of the people who have lived there.\n"
    "Visitors can see the great wheel turning, and they learn how flour was made with water and stone."
)


@pytest.mark.parametrize("text, words", [
    ("They don't stop.", ["They", "do", "n't", "stop", "."]),
    ("I'm sure it's fine, isn't it?", ["I", "'m", "sure", "it", "'s", "fine", ",", "is", "n't", "it", "?"]),
    ("Mr. Smith met Dr. Jones in the U.S. at 5pm.", ["Mr.", "Smith", "met", "Dr.", "Jones", "in", "the", "U.S.",
                                                    "at", "5", "pm", "."]),
    ("It costs $5.00 (approx.) for 10km.", ["It", "costs", "$", "5.00", "(", "approx", ".", ")", "for", "10", "km",
                                            "."]),
    ("See https://example.org/a/b?x=1, e.g. os.path.", ["See", "https://example.org/a/b?x=1", ",", "e.g.",
                                                        "os.path", "."]),
    ("well-known e-mail... gonna cannot", ["well", "-", "known", "e", "-", "mail", "...", "gon", "na", "can", "not"]),
    ("He said “hi”:) and left):", ["He", "said", "“", "hi", "”", ":)", "and", "left", "):"]),
    ("café\u00a0naïve\tcoöperate\n#tag", ["café", "naïve", "coöperate", "#", "tag"]),
])
def test_split_words_matches_datatrove_english_tokenizer(text, words):
    # Expected lists are what datatrove 0.10.1's split_into_words (spaCy's English rules) returns.
    assert split_words(text) == words


@pytest.mark.parametrize("line, sentences", [
    ("One sentence here.", 1),
    ("This is one. This is two! And three? Mr. Smith went.", 4),
    ("Wait... what is this", 1),
    ("The value is 3.14 and e.g. pi.", 1),
    ("First one.  Second after two spaces.", 2),
])
def test_count_sentences_matches_datatrove(line, sentences):
    assert count_sentences(line) == sentences


def test_long_runs_of_punctuation_split_one_token_per_character():
    # Peeling prefixes and suffixes works on positions: this stays linear (spaCy gives the same tokens).
    assert split_words("(" * 20_000) == ["("] * 20_000
    assert split_words("(" * 5_000 + "word" + "!)" * 5_000) == ["("] * 5_000 + ["word"] + ["!", ")"] * 5_000


def test_good_prose_is_kept_with_scores():
    verdict = assess(GOOD, QualityParams())
    assert verdict.reason is None and verdict.detail is None
    assert verdict.text == GOOD
    scores = verdict.scores
    assert set(scores) == set(SCORE_COLUMNS)
    assert scores["q_words"] == 95 and 3 < scores["q_mean_word_len"] < 6
    assert scores["q_dup_line_frac"] == 0 and scores["q_c4_lines_dropped"] == 0 and scores["q_alpha_frac"] > 0.8


def _lines(*lines: str) -> str:
    return "\n".join(lines)


# One document per rule that fires first for it, with the rule's reason and a piece of its detail.
_STOP_WORDS_BUT_THE = re.compile(r"\b(be|to|of|and|that|have|with) ")
RULE_CASES = {
    "quality:empty": (" \n\t ", "no tokens"),
    "quality:gopher_dup_para_frac": ("\n\n".join([GOOD, "A short note.", "A short note."] * 2), "dup_para_frac=0.6667"),
    "quality:gopher_dup_para_char_frac": ("\n\n".join([GOOD, "One.", "Two.", "Three.", GOOD]), "dup_para_char_frac="),
    "quality:gopher_dup_line_frac": (_lines(GOOD, "Home", "Home", "Home", "Home", "Home"), "dup_line_frac=0.4 > 0.3"),
    "quality:gopher_dup_line_char_frac": (_lines(GOOD, GOOD.splitlines()[0] * 3, GOOD.splitlines()[0] * 3),
                                          "dup_line_char_frac="),
    "quality:gopher_top_2gram_frac": (GOOD + " " + "of the " * 60, "top_2gram_frac="),
    "quality:gopher_top_3gram_frac": (GOOD + " " + "oak elm ash " * 20, "top_3gram_frac="),
    "quality:gopher_dup_5gram_frac": (_lines(GOOD, " ".join(GOOD.splitlines()[:3])), "dup_5gram_frac="),
    "quality:gopher_short_doc": (" ".join(GOOD.split()[:30]), "words=30 < 50"),
    "quality:gopher_long_words": (re.sub(r"[a-z]{4,}", lambda m: m.group() * 4, GOOD), "mean_word_len="),
    "quality:gopher_short_words": (" ".join(random.Random(0).choices(["a", "to", "of", "it", "is", "be", "the", "and",
                                                                      "on", "we", "up", "go"], k=100)) + ".",
                                   "mean_word_len="),
    "quality:gopher_hash_ratio": (GOOD.replace(" the ", " ## the "), "hash_ratio="),
    "quality:gopher_ellipsis_ratio": (re.sub(r" (the|and|of|a) ", r" \1... ", GOOD), "ellipsis_ratio="),
    "quality:gopher_bullet_lines": ("\n".join("- " + line for line in GOOD.splitlines()), "bullet_lines_frac=1"),
    "quality:gopher_ellipsis_lines": ("\n".join(line[:-1] + "…" for line in GOOD.splitlines()),
                                      "ellipsis_lines_frac=1"),
    "quality:gopher_non_alpha_words": (GOOD + "\n" + " ".join(str(i) for i in range(100, 200)), "alpha_words_frac="),
    "quality:gopher_few_stop_words": (_STOP_WORDS_BUT_THE.sub("", GOOD), "stop_words=1 < 2"),
    "quality:c4_lorem_ipsum": (_lines(GOOD, "Lorem ipsum dolor sit amet."), "line 6: Lorem ipsum"),
    "quality:c4_curly_bracket": (_lines(GOOD, "The set {1, 2} is small."), "line 6: The set {1, 2}"),
    "quality:c4_few_sentences": (_lines(" ".join(GOOD.splitlines()[:2]), GOOD.splitlines()[2][:-1],
                                        GOOD.splitlines()[3][:-1]), "sentences=3 < 5"),
}


@pytest.mark.parametrize("reason", sorted(RULE_CASES))
def test_each_rule_tags_its_reason_and_measured_value(reason):
    text, detail = RULE_CASES[reason]
    verdict = assess(text, QualityParams())
    assert verdict.reason == reason, verdict.detail
    assert detail in verdict.detail
    assert verdict.reason in REASONS


def test_disabled_rules_let_the_document_through():
    text, _ = RULE_CASES["quality:gopher_short_doc"]
    relaxed = QualityParams(min_words=None, max_top_2gram_char_frac=None, max_top_3gram_char_frac=None,
                            max_top_4gram_char_frac=None, c4_min_sentences=None)
    assert assess(text + ".", relaxed).reason is None
    # Line filtering that leaves nothing is a rejection of its own (datatrove would keep an empty text).
    assert assess(text, relaxed).reason == "quality:c4_no_lines_left"
    text, _ = RULE_CASES["quality:c4_lorem_ipsum"]
    assert assess(text, QualityParams(c4_lorem_ipsum=None)).reason is None
    assert assess(text, QualityParams(c4=False)).reason is None
    text, _ = RULE_CASES["quality:gopher_hash_ratio"]
    assert assess(text, QualityParams(gopher_quality=False)).reason is None


def test_c4_line_filtering_drops_lines_like_datatrove():
    text = _lines(
        "  " + GOOD.splitlines()[0] + "  ",
        "Navigation menu",                                   # no terminal punctuation
        GOOD.splitlines()[1] + "[2]",                       # citation removed, line kept
        GOOD.splitlines()[2] + " [3]",                      # citation removed, leaves a space: dropped
        "Please enable JavaScript to continue.",             # javascript
        "This site uses cookies to work.",                   # policy
        "Go!",                                               # fewer than 3 words
        "It was good...",                                    # ends with an ellipsis
        GOOD.splitlines()[3],
        GOOD.splitlines()[4],
    )
    verdict = assess(text, QualityParams())
    assert verdict.reason is None
    lines = GOOD.splitlines()
    assert verdict.text == "\n".join([lines[0], lines[1], lines[3], lines[4]])
    assert verdict.scores["q_c4_lines_dropped"] == 6
    unchanged = assess(text, QualityParams(filter_lines=False))
    assert unchanged.reason is None and unchanged.text == text and unchanged.scores["q_c4_lines_dropped"] == 6


def test_lorem_ipsum_only_counts_on_lines_that_survive_the_line_rules():
    # datatrove looks for "lorem ipsum" after the terminal-punctuation and min-words line rules.
    assert assess(_lines(GOOD, "lorem ipsum dolor sit amet"), QualityParams()).reason is None


def test_params_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params: max_dup_line_frac is a fraction"):
        _config("/tmp", {"max_dup_line_frac": 3})
    with pytest.raises(ConfigError, match=r"min_words \(500\) is greater than max_words \(100\)"):
        _config("/tmp", {"min_words": 500, "max_words": 100})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params\.min_words: expected int \| None, got 'ten'"):
        _config("/tmp", {"min_words": "ten"})
    with pytest.raises(ConfigError, match="unknown key 'min_word'"):
        _config("/tmp", {"min_word": 3})
    with pytest.raises(ConfigError, match="must not be negative"):
        _config("/tmp", {"c4_min_sentences": -1})


# --------------------------------------------------------------------------------------------
# Inside a pipeline
# --------------------------------------------------------------------------------------------

def _config(root, params: dict):
    data = {
        "output": f"{root}/out",
        "inputs": [{"path": f"{root}/in/*.jsonl", "source": "web", "id_field": "doc_id"}],
        "stages": [{"name": "quality", "params": params}],
        "report": False,
    }
    return validate_pipeline_config(data, check_inputs=False)


PIPELINE_DOCS = {
    "good": GOOD,
    "filtered": _lines(GOOD, "Share this page", "Please enable JavaScript to see comments."),
    **{reason.removeprefix("quality:"): text for reason, (text, _) in RULE_CASES.items() if reason != "quality:empty"},
}


@pytest.fixture(scope="module")
def quality_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    (root / "in").mkdir()
    with open(root / "in" / "docs.jsonl", "w") as f:
        for doc_id, text in PIPELINE_DOCS.items():
            f.write(json.dumps({"doc_id": doc_id, "text": text}) + "\n")
    config, stages = _config(root, {})
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    kept = {r["id"]: r.asDict() for r in read_table(spark, run.final_table).collect()}
    rejected = {r["id"]: r.asDict() for r in read_table(spark, str(root / "out" / "rejected"))
                .filter("stage = 'quality'").collect()}
    return run, kept, rejected


def test_pipeline_keeps_good_documents_and_tags_every_rejection(quality_run):
    run, kept, rejected = quality_run
    assert set(kept) == {"web/good", "web/filtered"}
    expected = {f"web/{name}": f"quality:{name}" for name in PIPELINE_DOCS if name not in ("good", "filtered")}
    assert {doc_id: row["reason"] for doc_id, row in rejected.items()} == expected
    for doc_id, row in rejected.items():
        assert row["detail"] and row["detail"] == assess(PIPELINE_DOCS[doc_id[4:]], QualityParams()).detail
    step = run.steps[-1]
    assert step.stage == "quality" and step.docs_in == len(PIPELINE_DOCS) and step.docs_out == 2
    assert step.rejected == {reason: 1 for reason in expected.values()}
    assert step.metrics == {"kept_docs_with_lines_dropped": 1, "lines_dropped_from_kept_docs": 2}


def test_pipeline_adds_scores_and_rewrites_filtered_text_and_hash(quality_run):
    _, kept, _ = quality_run
    good, filtered = kept["web/good"], kept["web/filtered"]
    for name, kind in SCORE_COLUMNS.items():
        assert isinstance(good[name], int if kind == "int" else float), name
    assert good["text"] == GOOD and good["q_words"] == 95
    assert filtered["text"] == GOOD and filtered["q_c4_lines_dropped"] == 2
    assert filtered["content_hash"] == hashlib.sha1(GOOD.encode()).hexdigest() == good["content_hash"]
