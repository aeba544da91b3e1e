"""Agreement and speed of the `quality` stage's heuristics, and of `c4_badwords`, against datatrove 0.10.1.

Builds a corpus of varied documents (prose from the Python standard library's docstrings plus
planted junk: short documents, symbol spam, bullet lists, ellipsis lines, repeated lines and
paragraphs, lorem ipsum, javascript, curly brackets, cookie notices, number tables, ...), runs our
``etl.text.quality_rules.assess`` here and datatrove's GopherRepetitionFilter -> GopherQualityFilter ->
C4QualityFilter (FineWeb's order) in datatrove's own venv (scripts/side_install_datatrove.sh), at
the same thresholds, and compares the decisions, the rules that fired and the texts C4 left; then
FineWebQualityFilter (alone, and after the other three) and C4BadWordsFilter (on a corpus of prose
with planted words of LDNOOBW's lists, in many languages) the same way.

    .venv/bin/python bench/quality_agreement.py [--docs 2400] [--seed 0] [--show 20]

tests/etl/test_quality_agreement.py uses the same functions and asserts the agreement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from etl.text.badwords import BUILTIN_LISTS, builtin_languages, find_bad_word, load_lists  # noqa: E402
from etl.text.quality_rules import QualityParams, assess  # noqa: E402

DATATROVE_PYTHON = ROOT / ".cache" / "venv-datatrove" / "bin" / "python"

# datatrove's rejection names -> ours (docs/etl/quality.md has the same table).
DATATROVE_REASONS = {
    "empty": "quality:empty",
    "dup_para_frac": "quality:gopher_dup_para_frac",
    "dup_para_char_frac": "quality:gopher_dup_para_char_frac",
    "dup_line_frac": "quality:gopher_dup_line_frac",
    "dup_line_char_frac": "quality:gopher_dup_line_char_frac",
    **{f"top_{n}_gram": f"quality:gopher_top_{n}gram_frac" for n in (2, 3, 4)},
    **{f"duplicated_{n}_n_grams": f"quality:gopher_dup_{n}gram_frac" for n in range(5, 11)},
    "gopher_short_doc": "quality:gopher_short_doc",
    "gopher_long_doc": "quality:gopher_long_doc",
    "gopher_below_avg_threshold": "quality:gopher_short_words",
    "gopher_above_avg_threshold": "quality:gopher_long_words",
    "gopher_too_many_hashes": "quality:gopher_hash_ratio",
    "gopher_too_many_ellipsis": "quality:gopher_ellipsis_ratio",
    "gopher_too_many_bullets": "quality:gopher_bullet_lines",
    "gopher_too_many_end_ellipsis": "quality:gopher_ellipsis_lines",
    "gopher_below_alpha_threshold": "quality:gopher_non_alpha_words",
    "gopher_enough_stop_words": "quality:gopher_few_stop_words",
    "lorem_ipsum": "quality:c4_lorem_ipsum",
    "curly_bracket": "quality:c4_curly_bracket",
    "too_few_sentences": "quality:c4_few_sentences",
    "line_punct_ratio": "quality:fineweb_line_punct",
    "short_line_ratio": "quality:fineweb_short_lines",
    "char_dup_ratio": "quality:fineweb_dup_line_chars",
    "list_ratio": "quality:fineweb_list_like",
    "document_removed_with_badwords": "c4_badwords",
}

# Runs in datatrove's venv: JSON lines in, one JSON line per document out, then the CPU seconds
# spent filtering (start-up and JSON excluded) on the last line.
_DATATROVE_RUNNER = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters import C4BadWordsFilter, FineWebQualityFilter
from datatrove.pipeline.filters import c4_filters
kwargs = json.loads(sys.argv[1])
# The bad-words lists: Kiln's copies (the same commits datatrove downloads), as nothing is downloaded here.
c4_filters.cached_asset_path_or_download = lambda url, **_: f"{kwargs['badwords_dir']}/{url.rsplit('/', 1)[1]}.txt"
filters = []
if kwargs["gopher_repetition"] is not None:
    filters.append(GopherRepetitionFilter(**kwargs["gopher_repetition"]))
if kwargs["gopher_quality"] is not None:
    filters.append(GopherQualityFilter(**kwargs["gopher_quality"]))
if kwargs["c4"] is not None:
    filters.append(C4QualityFilter(**kwargs["c4"]))
if kwargs["fineweb"] is not None:
    filters.append(FineWebQualityFilter(**kwargs["fineweb"]))
if kwargs["badwords"] is not None:
    filters.append(C4BadWordsFilter(**kwargs["badwords"]))
docs = [Document(text=d["text"], id=d["id"], metadata=d.get("metadata", {})) for d in map(json.loads, sys.stdin)]
reasons = []
start = time.process_time()
for doc in docs:
    reason = None
    try:
        for f in filters:
            verdict = f.filter(doc)
            if verdict is not True:
                reason = verdict[1] if isinstance(verdict, tuple) else "rejected"
                break
    except Exception as err:  # e.g. ZeroDivisionError on a text without words
        reason = f"crashed: {type(err).__name__}"
    reasons.append(reason)
seconds = time.process_time() - start
for doc, reason in zip(docs, reasons):
    print(json.dumps({"id": doc.id, "reason": reason, "text": doc.text}))
print(json.dumps({"seconds": seconds}))
"""


def datatrove_kwargs(p: QualityParams) -> dict:
    """Our parameters as datatrove's constructor arguments (datatrove disables with 0/None/-1/False)."""
    def off(value, disabled):
        return disabled if value is None else value

    repetition = {
        "dup_line_frac": p.max_dup_line_frac, "dup_para_frac": p.max_dup_para_frac,
        "dup_line_char_frac": p.max_dup_line_char_frac, "dup_para_char_frac": p.max_dup_para_char_frac,
        "top_n_grams": p.top_ngram_limits(), "dup_n_grams": p.dup_ngram_limits(),
    }
    quality = {
        "min_doc_words": p.min_words, "max_doc_words": p.max_words,
        "min_avg_word_length": p.min_mean_word_len, "max_avg_word_length": p.max_mean_word_len,
        "max_symbol_word_ratio": p.max_symbol_word_ratio, "max_bullet_lines_ratio": p.max_bullet_lines_frac,
        "max_ellipsis_lines_ratio": p.max_ellipsis_lines_frac, "max_non_alpha_words_ratio": p.min_alpha_words_frac,
        "min_stop_words": p.min_stop_words, "stop_words": p.stop_words,
    }
    c4 = {
        "remove_citations": bool(p.c4_remove_citations), "filter_no_terminal_punct": bool(p.c4_terminal_punct),
        "min_num_sentences": off(p.c4_min_sentences, -1), "min_words_per_line": off(p.c4_min_words_per_line, -1),
        "max_word_length": off(p.c4_max_word_len, -1), "filter_lorem_ipsum": bool(p.c4_lorem_ipsum),
        "filter_javascript": bool(p.c4_javascript), "filter_curly_bracket": bool(p.c4_curly_bracket),
        "filter_policy": bool(p.c4_policy),
    }
    fineweb = {
        # datatrove cannot switch one rule off: a disabled one gets a limit no text reaches.
        "line_punct_thr": off(p.fineweb_min_line_punct_frac, -1.0),
        "line_punct_exclude_zero": p.fineweb_line_punct_exclude_zero, "stop_chars": p.fineweb_stop_chars,
        "short_line_thr": off(p.fineweb_max_short_line_frac, 2.0), "short_line_length": p.fineweb_short_line_len,
        "char_duplicates_ratio": off(p.fineweb_max_dup_line_char_frac, 2.0),
        "new_line_ratio": off(p.fineweb_max_newline_word_ratio, 1e18),
    }
    return {
        "gopher_repetition": repetition if p.gopher_repetition else None,
        "gopher_quality": quality if p.gopher_quality else None,
        "c4": c4 if p.c4 else None,
        "fineweb": fineweb if p.fineweb else None,
        "badwords": None,
        "badwords_dir": str(BUILTIN_LISTS),
    }


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

@dataclass
class Sources:
    prose: list[str]  # clean English paragraphs, each unwrapped to one line
    wrapped: list[str]  # paragraphs as written, hard-wrapped at ~72 columns
    code: list[str]  # doctest and code blocks, and paragraphs full of markup


_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)
_PLAIN_WORD = re.compile(r"[A-Za-z]+[,.;:]?")


def stdlib_sources(max_files: int = 400) -> Sources:
    """Paragraphs of the standard library's docstrings (the same on every machine with this Python)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    prose, wrapped, code = [], [], []
    for path in sorted(stdlib.glob("*.py"))[:max_files]:
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for doc in _DOCSTRING.findall(source):
            for para in re.split(r"\n\s*\n", doc):
                lines = [line.strip() for line in para.splitlines() if line.strip()]
                words = " ".join(lines).split()
                if len(words) < 8:
                    continue
                plain = sum(1 for w in words if _PLAIN_WORD.fullmatch(w)) / len(words)
                if plain >= 0.9 and words[-1].endswith("."):
                    prose.append(" ".join(lines))
                    if len(lines) > 1:
                        wrapped.append("\n".join(lines))
                else:
                    code.append("\n".join(lines))
    return Sources(prose, wrapped, code)


_JUNK_WORDS = ["home", "login", "menu", "search", "cart", "share", "next", "previous", "top", "contact", "news",
               "sale", "price", "offer", "shop", "free", "click", "here", "blog", "tags"]
_NOUNS = ["apple", "river", "engine", "window", "planet", "garden", "silver", "button", "camera", "forest",
          "pencil", "rocket", "bridge", "coffee", "market", "signal", "ticket", "valley", "winter", "yellow"]
_TOKENIZER_STRESS = ["don't", "can't", "won't", "it's", "I'm", "they're", "we'll", "U.S.", "e.g.", "i.e.",
                     "Mr.", "Dr.", "10km", "5pm", "3.14", "$20", "(see above)", "well-known", "e-mail", "a.m.",
                     "gonna", "cannot", "“quoted”", "it’s", "rock'n'roll", "O'Neil", "co-operate", "50%",
                     "#1", "C++", ":)", "...", "—", "etc.", "vs.", "Inc.", "x/y", "and/or", "user@example.com",
                     "https://example.org/path?q=1", "file.txt", "3:30", "1990s", "'90s", "N.Y.", "St."]
_LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt."
_JS_LINES = ["Please enable JavaScript to view the comments.", "This page requires javascript to work properly.",
             "JavaScript is disabled in your browser"]
_POLICY_LINES = ["This website uses cookies to improve your experience.", "Please read our privacy policy.",
                 "By using this site you agree to the terms of use.", "We use cookies.",
                 "Learn more about our use of cookies and the cookie policy here."]
_CODE_LINES = ["int main() { return 0; }", "function f(x) { return x * 2; }", "config = {\"a\": 1, \"b\": 2}.",
               "if (ready) { start(); }", "The set {1, 2, 3} has three elements."]


def _prose(rng: random.Random, src: Sources, paragraphs: int) -> list[str]:
    return [rng.choice(src.prose) for _ in range(paragraphs)]


def _join(rng: random.Random, parts: list[str]) -> str:
    return rng.choice(["\n\n", "\n", "\n\n", "\n", "\n \n"]).join(parts)


def _sprinkle(rng: random.Random, text: str, items: list[str], rate: float) -> str:
    """Insert an item after a fraction ``rate`` of the words."""
    out = []
    for word in text.split(" "):
        out.append(word)
        if rng.random() < rate:
            out.append(rng.choice(items))
    return " ".join(out)


def _make_doc(kind: str, rng: random.Random, src: Sources) -> str:
    if kind == "prose":
        return _join(rng, _prose(rng, src, rng.randint(1, 12)))
    if kind == "wrapped":
        return "\n\n".join(rng.choice(src.wrapped) for _ in range(rng.randint(1, 8)))
    if kind == "short":
        words = " ".join(rng.choice(src.prose) for _ in range(2)).split()
        return " ".join(words[: rng.randint(3, 80)]) + rng.choice([".", "", "!"])
    if kind == "hashes":
        return _sprinkle(rng, _join(rng, _prose(rng, src, rng.randint(2, 6))), ["#tag", "#", "##", "#news"],
                         rng.uniform(0.0, 0.25))
    if kind == "ellipsis_words":
        return _sprinkle(rng, _join(rng, _prose(rng, src, rng.randint(2, 6))), ["...", "…", "etc..."],
                         rng.uniform(0.0, 0.25))
    if kind == "ellipsis_lines":
        frac = rng.uniform(0.0, 0.7)
        lines = [p.rsplit(" ", rng.randint(1, 5))[0] + rng.choice(["...", "…", " ..."]) if rng.random() < frac else p
                 for p in _prose(rng, src, rng.randint(3, 12))]
        return "\n".join(lines)
    if kind == "bullets":
        frac = rng.uniform(0.6, 1.0)
        lines = [(rng.choice(["- ", "• ", "  - ", "-"]) + p if rng.random() < frac else p)
                 for p in _prose(rng, src, rng.randint(3, 15))]
        return "\n".join(lines)
    if kind == "dup_lines":
        base = _prose(rng, src, rng.randint(3, 12))
        lines = base + [rng.choice(base) for _ in range(rng.randint(0, len(base)))]
        rng.shuffle(lines)
        return "\n".join(lines)
    if kind == "dup_paragraphs":
        base = _prose(rng, src, rng.randint(2, 8))
        paras = base + [rng.choice(base) for _ in range(rng.randint(0, len(base)))]
        rng.shuffle(paras)
        return "\n\n".join(paras)
    if kind == "short_dup_lines":
        lines = _prose(rng, src, rng.randint(4, 10)) + [rng.choice(_JUNK_WORDS) for _ in range(rng.randint(0, 12))]
        rng.shuffle(lines)
        return "\n".join(lines)
    if kind == "ngram_repeat":
        phrase = " ".join(rng.choice(src.prose).split()[: rng.randint(2, 10)])
        parts = _prose(rng, src, rng.randint(1, 5)) + [phrase] * rng.randint(1, 12)
        rng.shuffle(parts)
        return " ".join(parts)
    if kind == "lorem":
        parts = _prose(rng, src, rng.randint(3, 8))
        lorem = _LOREM if rng.random() < 0.6 else _LOREM.rstrip(".")
        parts.insert(rng.randint(0, len(parts)), lorem if rng.random() < 0.7 else lorem.lower())
        return "\n".join(parts)
    if kind == "javascript":
        parts = _prose(rng, src, rng.randint(2, 8)) + rng.sample(_JS_LINES, rng.randint(1, 3))
        rng.shuffle(parts)
        return "\n".join(parts)
    if kind == "curly":
        parts = _prose(rng, src, rng.randint(2, 8)) + [rng.choice(_CODE_LINES)]
        rng.shuffle(parts)
        return "\n".join(parts)
    if kind == "policy":
        parts = _prose(rng, src, rng.randint(1, 7)) + rng.sample(_POLICY_LINES, rng.randint(1, 4))
        rng.shuffle(parts)
        return "\n".join(parts)
    if kind == "table":
        rows = [" | ".join(f"{rng.uniform(0, 1000):.{rng.randint(0, 3)}f}" for _ in range(rng.randint(2, 6)))
                for _ in range(rng.randint(5, 40))]
        parts = _prose(rng, src, rng.randint(0, 3)) + rows
        return "\n".join(parts)
    if kind == "citations":
        sentences = [s + rng.choice(["[1]", "[12]", "[edit]", "[citation needed]", " [3]", "", "[]"])
                     for p in _prose(rng, src, rng.randint(2, 8)) for s in re.split(r"(?<=\.) ", p)]
        return "\n".join(sentences)
    if kind == "no_stop_words":
        words = [rng.choice(_NOUNS + _JUNK_WORDS) for _ in range(rng.randint(40, 200))]
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(["the", "of", "and", "to", "with", "The"]))
        return " ".join(words) + "."
    if kind == "long_words":
        text = _join(rng, _prose(rng, src, rng.randint(1, 4)))
        longs = [f"{rng.getrandbits(128):032x}", "https://example.com/" + "a" * rng.randint(5, 60),
                 "supercalifragilisticexpialidocious", "x" * rng.randint(11, 40)]
        return _sprinkle(rng, text, longs, rng.uniform(0.0, 0.9))
    if kind == "huge_word":
        parts = _prose(rng, src, rng.randint(4, 10))
        parts.insert(rng.randint(0, len(parts)), "data: " + "A" * rng.randint(990, 1010) + " end.")
        return "\n".join(parts)
    if kind == "short_words":
        words = [rng.choice(["a", "I", "an", "to", "of", "x", "is", "be", "the", "and", "ok", "it"])
                 for _ in range(rng.randint(40, 200))]
        return " ".join(words) + "."
    if kind == "tokenizer_stress":
        return _sprinkle(rng, _join(rng, _prose(rng, src, rng.randint(2, 8))), _TOKENIZER_STRESS,
                         rng.uniform(0.05, 0.4))
    if kind == "code":
        parts = [rng.choice(src.code) for _ in range(rng.randint(1, 6))] + _prose(rng, src, rng.randint(0, 3))
        rng.shuffle(parts)
        return "\n\n".join(parts)
    if kind == "few_sentences":
        sentences = [s for p in _prose(rng, src, 6) for s in re.split(r"(?<=[.!?]) ", p)]
        return " ".join(sentences[: rng.randint(1, 8)])
    if kind == "line_endings":
        parts = _prose(rng, src, rng.randint(2, 10))
        text = rng.choice(["\r\n", "\r\n\r\n", "\r", "\n\n\n", "\u2028", "\x0c"]).join(parts)
        return text + rng.choice(["", "\n", "\r\n", "  "])
    if kind == "unicode":
        text = _join(rng, _prose(rng, src, rng.randint(2, 8)))
        swaps = {"'": "’", '"': "”", "e": "é", "a": "á", " ": "\u00a0"}
        return "".join(swaps[c] if c in swaps and rng.random() < 0.1 else c for c in text)
    if kind == "menu":
        lines = [" ".join(rng.choice(_JUNK_WORDS).title() for _ in range(rng.randint(1, 4)))
                 for _ in range(rng.randint(5, 30))]
        return "\n".join(lines + _prose(rng, src, rng.randint(0, 4)))
    raise ValueError(f"unknown document kind {kind!r}")


KINDS = ["prose", "prose", "prose", "wrapped", "short", "hashes", "ellipsis_words", "ellipsis_lines", "bullets",
         "dup_lines", "dup_paragraphs", "short_dup_lines", "ngram_repeat", "lorem", "javascript", "curly", "policy",
         "table", "citations", "no_stop_words", "long_words", "huge_word", "short_words", "tokenizer_stress",
         "tokenizer_stress", "code", "few_sentences", "line_endings", "unicode", "menu"]


def _list_like(rng: random.Random, src: Sources) -> str:
    """Lists as web pages hold them: items of a few words, spaced by blank lines, some with links."""
    items = []
    for _ in range(rng.randint(4, 30)):
        words = rng.choice(src.prose).split()[: rng.randint(2, 9)]
        item = " ".join(words).rstrip(".,;:")
        if rng.random() < 0.3:
            item += f" https://example.org/{rng.choice(_NOUNS)}/{rng.choice(_NOUNS)}-{rng.randint(1, 999)}.html"
        items.append(rng.choice(["", "- ", "• ", f"{len(items) + 1}. "]) + item + rng.choice([".", "", "!", ":"]))
    parts = items + _prose(rng, src, rng.randint(0, 2))
    return rng.choice(["\n", "\n\n", "\n\n\n", "\n \n"]).join(parts)


def make_fineweb_corpus(n_docs: int = 2400, seed: int = 0, sources: Sources | None = None) -> list[dict]:
    """``make_corpus`` with one document in ten replaced by a list-like one (FineWeb's list rule)."""
    src = sources or stdlib_sources()
    rng = random.Random(seed + 1)
    docs = make_corpus(n_docs, seed, src)
    for i in range(0, n_docs, 10):
        docs[i] = {"id": f"list_like-{i}", "kind": "list_like", "text": _list_like(rng, src)}
    return docs


def make_corpus(n_docs: int = 2400, seed: int = 0, sources: Sources | None = None) -> list[dict]:
    """``n_docs`` documents of every kind in turn: [{"id", "kind", "text"}]."""
    src = sources or stdlib_sources()
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        kind = KINDS[i % len(KINDS)]
        docs.append({"id": f"{kind}-{i}", "kind": kind, "text": _make_doc(kind, rng, src)})
    return docs


# --------------------------------------------------------------------------------------------
# Running both sides and comparing
# --------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    reason: str | None
    text: str


def run_ours(docs: list[dict], params: QualityParams) -> tuple[dict[str, Outcome], float]:
    """Our verdicts, and the CPU seconds they took (CPU time, as the machine may be shared)."""
    start = time.process_time()
    verdicts = [assess(d["text"], params) for d in docs]
    seconds = time.process_time() - start
    return {d["id"]: Outcome(v.reason, v.text) for d, v in zip(docs, verdicts)}, seconds


def run_datatrove(docs: list[dict], params: QualityParams | None, python: Path = DATATROVE_PYTHON,
                  timeout: float = 600) -> tuple[dict[str, Outcome], float]:
    """datatrove's filters on ``docs`` in its own venv; reasons translated to ours. ``params`` None:
    C4BadWordsFilter alone (each document's ``language``, if any, in its metadata)."""
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing: run scripts/side_install_datatrove.sh")
    if params is None:
        kwargs = {**{k: None for k in ("gopher_repetition", "gopher_quality", "c4", "fineweb")},
                  "badwords": {"fail_on_missing_language": False, "default_language": "en"},
                  "badwords_dir": str(BUILTIN_LISTS)}
    else:
        kwargs = datatrove_kwargs(params)
    stdin = "".join(json.dumps({"id": d["id"], "text": d["text"], "metadata": _metadata(d)}) + "\n" for d in docs)
    proc = subprocess.run(
        [str(python), "-c", _DATATROVE_RUNNER, json.dumps(kwargs)],
        input=stdin, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": "", "LOGURU_LEVEL": "ERROR"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"datatrove runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    *rows, last = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    results = {}
    for row in rows:
        reason = row["reason"]
        results[row["id"]] = Outcome(None if reason is None else DATATROVE_REASONS.get(reason, reason), row["text"])
    return results, last["seconds"]


def _metadata(doc: dict) -> dict:
    """datatrove reads the language from the metadata; a document without one has no key."""
    return {"language": doc["language"]} if doc.get("language") else {}


# --------------------------------------------------------------------------------------------
# C4's bad words: prose with planted words of the lists, in many languages
# --------------------------------------------------------------------------------------------

def make_badwords_corpus(n_docs: int = 1000, seed: int = 0, sources: Sources | None = None) -> list[dict]:
    """Documents in every list's language (plus ``und`` and none): clean prose, or prose with a listed
    word planted as a whole word, inside a longer word, upper-cased, between punctuation, or a
    word of another language's list. [{"id", "kind", "language", "text"}]"""
    src = sources or stdlib_sources()
    rng = random.Random(seed)
    languages = builtin_languages() + ["und", None]
    words = {lang: sorted({line.strip() for line in (BUILTIN_LISTS / f"{lang}.txt").read_text("utf-8").splitlines()}
                          - {""}) for lang in builtin_languages()}
    kinds = ["clean", "whole", "whole", "inside", "upper", "punct", "other_language", "start_end"]
    docs = []
    for i in range(n_docs):
        language = languages[i % len(languages)]
        kind = kinds[(i // len(languages)) % len(kinds)]
        text = _join(rng, _prose(rng, src, rng.randint(1, 4)))
        pool = words.get(language or "en") or words["en"]
        word = rng.choice(pool)
        if kind == "other_language":
            word = rng.choice(words[rng.choice(builtin_languages())])
        plant = {"clean": None, "whole": f" {word} ", "inside": f" x{word}y ", "upper": f" {word.upper()} ",
                 "punct": f"({word}),", "other_language": f" {word} ", "start_end": None}[kind]
        if plant is not None:
            cut = rng.randint(0, len(text))
            text = text[:cut] + plant + text[cut:]
        elif kind == "start_end":
            text = word + " " + text + " " + word
        docs.append({"id": f"badwords-{kind}-{i}", "kind": kind, "language": language, "text": text})
    return docs


def run_ours_badwords(docs: list[dict], default_language: str = "en") -> tuple[dict[str, Outcome], float]:
    """The c4_badwords stage's judgement of each document (its `_judge_batch`, without Spark)."""
    lists = load_lists()
    start = time.process_time()
    found = [find_bad_word(lists, d["text"], d.get("language") or default_language) for d in docs]
    seconds = time.process_time() - start
    return {d["id"]: Outcome("c4_badwords" if f else None, d["text"]) for d, f in zip(docs, found)}, seconds


@dataclass
class Agreement:
    n_docs: int
    same_decision: int
    same_reason: int
    both_kept: int
    same_kept_text: int
    disagreements: list[tuple[dict, Outcome, Outcome]] = field(default_factory=list)

    @property
    def decision_rate(self) -> float:
        return self.same_decision / self.n_docs

    @property
    def reason_rate(self) -> float:
        return self.same_reason / self.n_docs

    @property
    def kept_text_rate(self) -> float:
        return self.same_kept_text / self.both_kept if self.both_kept else 1.0


def compare(docs: list[dict], ours: dict[str, Outcome], theirs: dict[str, Outcome]) -> Agreement:
    result = Agreement(len(docs), 0, 0, 0, 0)
    for doc in docs:
        a, b = ours[doc["id"]], theirs[doc["id"]]
        same = (a.reason is None) == (b.reason is None)
        result.same_decision += same
        result.same_reason += a.reason == b.reason
        if a.reason is None and b.reason is None:
            result.both_kept += 1
            result.same_kept_text += a.text == b.text
        if a.reason != b.reason or (a.reason is None and a.text != b.text):
            result.disagreements.append((doc, a, b))
    return result


def _counts(results: dict[str, Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in results.values():
        key = outcome.reason or "kept"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=20, help="disagreements to print")
    parser.add_argument("--repeat", type=int, default=1, help="corpus copies for timing (warm caches count)")
    args = parser.parse_args()

    for title, (ours, theirs) in _new_rule_agreements(args.docs, args.seed).items():
        print(f"{title}: same decision {ours.same_decision}/{ours.n_docs} = {ours.decision_rate:.2%}, "
              f"same reason {ours.same_reason}/{ours.n_docs} = {ours.reason_rate:.2%}, kept {theirs}")
        for doc, a, b in ours.disagreements[: args.show]:
            print(f"  --- {doc['id']}: ours {a.reason} / datatrove {b.reason}: {doc['text'][:200]!r}")
    docs = make_corpus(args.docs, args.seed)
    params = QualityParams()
    timed = docs * args.repeat
    theirs, their_seconds = run_datatrove(timed, params)
    ours, our_seconds = run_ours(timed, params)
    agreement = compare(docs, ours, theirs)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"machine: {os.cpu_count()} cores, {cpu}; one process each side")
    print(f"documents: {len(docs)} ({len(set(KINDS))} kinds, seed {args.seed}); "
          f"{sum(len(d['text']) for d in docs):,} characters")
    print(f"same decision (kept/rejected): {agreement.same_decision}/{agreement.n_docs} = {agreement.decision_rate:.2%}")
    print(f"same reason:                   {agreement.same_reason}/{agreement.n_docs} = {agreement.reason_rate:.2%}")
    print(f"same text after C4 (both kept): {agreement.same_kept_text}/{agreement.both_kept} = "
          f"{agreement.kept_text_rate:.2%}")
    print(f"filtering CPU time over {len(timed)} docs: datatrove {their_seconds:.2f}s, ours {our_seconds:.2f}s, "
          f"ratio {their_seconds / our_seconds:.2f}x")
    ours_counts, theirs_counts = _counts(ours), _counts(theirs)
    print(f"\n{'reason':40} {'ours':>6} {'datatrove':>9}")
    for key in sorted(set(ours_counts) | set(theirs_counts)):
        print(f"{key:40} {ours_counts.get(key, 0):>6} {theirs_counts.get(key, 0):>9}")
    for doc, a, b in agreement.disagreements[: args.show]:
        print(f"\n--- {doc['id']}: ours {a.reason} / datatrove {b.reason}"
              + (" (kept texts differ)" if a.reason is None and b.reason is None else ""))
        print(repr(doc["text"][:400]))


def _new_rule_agreements(n_docs: int, seed: int) -> dict[str, tuple[Agreement, int]]:
    """FineWeb's rules (alone, and after Gopher and C4) and C4's bad words against datatrove."""
    docs = make_fineweb_corpus(n_docs, seed)
    out = {}
    for title, params in [("FineWeb alone", QualityParams(gopher_repetition=False, gopher_quality=False, c4=False,
                                                           fineweb=True)),
                          ("Gopher + C4 + FineWeb", QualityParams(fineweb=True))]:
        ours, _ = run_ours(docs, params)
        theirs, _ = run_datatrove(docs, params)
        out[title] = (compare(docs, ours, theirs), sum(o.reason is None for o in ours.values()))
    badwords = make_badwords_corpus(n_docs, seed)
    ours, _ = run_ours_badwords(badwords)
    theirs, _ = run_datatrove(badwords, None)
    out["C4 bad words"] = (compare(badwords, ours, theirs), sum(o.reason is None for o in ours.values()))
    return out


if __name__ == "__main__":
    main()
