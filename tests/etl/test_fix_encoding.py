"""fix_encoding: same output as ftfy on everything, mojibake repaired, undecodable text rejected."""
from __future__ import annotations

import random
import re

import pytest
from ftfy.badness import BADNESS_RE, MOJIBAKE_CATEGORIES, is_bad

from etl.devtools.fixtures import make_fixture, read_fixture_texts
from etl.load_config import validate_pipeline_config
from etl.stages.base import StageContext
from etl.stages.fix_encoding import (
    CHANGED_COLUMN,
    MOJIBAKE_REACH,
    FixEncoding,
    FixEncodingParams,
    TextRepair,
    _may_have_mojibake,
    undecodable_detail,
)
from shards.config import ConfigError

# Pieces that exercise every fixer and the shortcuts around them.
_PIECES = list("abc XYZ.,\n\t&<;#") + [
    "\r", "\r\n", "\x0c", "\x00", "\x1b[31m", "\x85", "\x81", "\x9d", "\u2028", "\ufeff", "\u206a", "\ufb01",
    "\uff21", "\u201c", "\u2019", "\u00e9", "e\u0301", "\u00c3 ", "\u00c2", "\u00e2\u20ac\u2122", "\u00c3\u00a9",
    "\u00d0\u00b0", "\ufffd", "\u6771", "\U0001f600", "&amp;", "&#8217;", "\ue000", "\u00d7\u00b2", "\u0413\u045e",
]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 14))) for _ in range(n)]


@pytest.fixture(scope="module")
def fixture_truth(tmp_path_factory):
    return make_fixture(600, seed=3, out_dir=str(tmp_path_factory.mktemp("fixture")))


def test_shortcut_output_equals_ftfy_on_everything():
    repair = TextRepair()
    for text in _random_texts(10_000, seed=1):
        assert repair.fix(text) == repair.reference_fix(text), repr(text)


def test_shortcut_output_equals_ftfy_on_the_fixture(fixture_truth):
    repair = TextRepair()
    texts = dict(read_fixture_texts(fixture_truth))
    skipped = 0
    for doc_id, text in texts.items():
        assert repair.fix(text) == repair.reference_fix(text), doc_id
        skipped += not repair.needs_ftfy(text)
    assert skipped > 0.8 * len(texts)  # the point of the shortcut: most documents never reach ftfy


def test_mojibake_window_check_finds_whatever_is_bad_finds():
    for text in _random_texts(10_000, seed=2):
        if is_bad(text):
            assert _may_have_mojibake(text), repr(text)


def test_installed_ftfy_matches_the_window_assumptions():
    """The window check relies on ftfy's badness patterns being short and needing a non-ASCII character."""
    assert re._parser.parse(BADNESS_RE.pattern, re.VERBOSE).getwidth()[1] <= MOJIBAKE_REACH
    for name, chars in MOJIBAKE_CATEGORIES.items():
        assert not re.search("[" + chars + "]", "".join(map(chr, range(128)))), name


def test_planted_mojibake_is_repaired_to_the_original(fixture_truth):
    repair = TextRepair()
    texts = dict(read_fixture_texts(fixture_truth))
    for doc_id, original in fixture_truth.mojibake.items():
        assert texts[doc_id] != original
        assert repair.fix(texts[doc_id]) == original
    for doc_id in fixture_truth.clean:
        assert repair.fix(texts[doc_id]) == texts[doc_id]


def test_fixes_controls_line_breaks_and_normal_form():
    repair = TextRepair()
    assert repair.fix("a\x00b\x0cc\x81d\te\nf") == "abcd\te\nf"
    assert repair.fix("one\r\ntwo\rthree") == "one\ntwo\nthree"
    assert repair.fix("cafe\u0301") == "caf\u00e9"
    assert repair.fix("The caf\u00c3\u00a9 isn\u00e2\u20ac\u2122t open.") == "The caf\u00e9 isn\u2019t open."
    assert repair.fix("AT&amp;T") == "AT&T"
    assert TextRepair(unescape_html=False).fix("AT&amp;T") == "AT&amp;T"
    assert repair.fix("\ufb01ne \u201cquotes\u201d stay") == "\ufb01ne \u201cquotes\u201d stay"


def test_undecodable_shares():
    assert undecodable_detail("plain ascii text", 0.01, 0.01) is None
    assert undecodable_detail("caf\u00e9 " * 50 + "\ufffd", 0.01, 0.01) is None
    assert undecodable_detail("\ufffd\ufffd ab", 0.01, 0.01).startswith("replacement_char_share=0.4000")
    private = undecodable_detail("\ue000\ue001 text", 0.01, 0.01)
    assert private.startswith("unassigned_or_private_use_share=0.2857")
    assert undecodable_detail("\ue000\ue001 text", 0.01, 0.5) is None


def test_params_are_checked_in_the_config(tmp_path):
    data = {"output": str(tmp_path), "inputs": [{"path": str(tmp_path), "source": "s"}],
            "stages": [{"name": "fix_encoding", "params": {"max_replacement_share": 2}}]}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params: max_replacement_share must be between 0 and 1"):
        validate_pipeline_config(data)


def test_stage_in_spark_repairs_rejects_and_rehashes(spark, tmp_path):
    rows = [
        ("s/ok", "s", "Nothing to fix here.", "h1", None),
        ("s/moji", "s", "The caf\u00c3\u00a9 isn\u00e2\u20ac\u2122t open.", "h2", None),
        ("s/bad", "s", "\ufffd\ufffd\ufffd\ufffd \ufffd\ufffd\ufffd", "h3", {"k": "v"}),
        ("s/ctl", "s", "\x00\x01 \x02", "h4", None),
    ]
    docs = spark.createDataFrame(rows, "id string, source string, text string, content_hash string, meta map<string,string>")
    ctx = StageContext(spark, str(tmp_path), str(tmp_path / "_state"), "test-run")
    result = FixEncoding(FixEncodingParams()).run(docs, ctx)
    out = {r["id"]: r for r in result.docs.collect()}
    assert out["s/ok"]["text"] == "Nothing to fix here." and out["s/ok"]["content_hash"] == "h1"
    assert not out["s/ok"][CHANGED_COLUMN] and out["s/ok"]["reason"] is None
    assert out["s/moji"]["text"] == "The caf\u00e9 isn\u2019t open." and out["s/moji"][CHANGED_COLUMN]
    assert out["s/moji"]["content_hash"] == __import__("hashlib").sha1(out["s/moji"]["text"].encode()).hexdigest()
    assert out["s/bad"]["reason"] == "undecodable" and out["s/bad"]["detail"].startswith("replacement_char_share=")
    assert out["s/bad"]["text"] == rows[2][2] and out["s/bad"]["meta"] == {"k": "v"}
    assert out["s/ctl"]["reason"] == "empty_after_repair" and out["s/ctl"]["text"] == rows[3][2]
    assert result.metrics(result.docs) == {"documents_changed": 1}
