"""Gopher, C4 and FineWeb quality rules for one document, in plain Python (no Spark).

The rules and their defaults are those of datatrove 0.10.1's ``GopherRepetitionFilter``,
``GopherQualityFilter``, ``C4QualityFilter`` and ``FineWebQualityFilter`` (the last off unless
asked for), applied in that order (FineWeb's order), so a document gets the reason of the first
rule that fires; FineWeb's rules see the text C4's line filtering left, as in datatrove. What datatrove does in three filters, each
splitting the text again, happens here in one pass: the text is split into words once
(``etl.text.words``), and line, paragraph and n-gram statistics come from that one split.

``QualityParams`` lives here, not beside the stage: the rules read it, and the stage
(``etl.stages.quality``) imports the rules, so defining it in the stage's module would make a circle.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, fields

from .words import count_sentences, scan

DEFAULT_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_C4_LINE_ENDS = (".", "?", "!", '"', "'")
_POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")
# Sentence-ending marks of every script: datatrove's TERMINAL_PUNCTUATION (FineWeb's stop_chars default).
TERMINAL_PUNCTUATION = tuple(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965"
    "\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944"
    "\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c"
    "\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877"
    "\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e"
    "\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86"
    "\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1"
    "\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238"
    "\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9"
    "\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2"
    "\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d"
    "\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42"
    "\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38"
    "\U00016b44\U00016e98\U0001bc9f\U0001da88"
)


@dataclass
class QualityParams:
    """Thresholds of the quality rules; the defaults are datatrove 0.10.1's.

    A numeric threshold set to null disables its rule; an on/off rule is disabled by false (or null).
    """

    # Rule families, in the order they run (a document gets the first rule that fires).
    gopher_repetition: bool = True
    gopher_quality: bool = True
    c4: bool = True

    # Gopher repetition: fraction of duplicated paragraphs/lines (by count, and by characters of
    # the text), of characters in the most frequent n-gram, and in duplicated n-grams.
    max_dup_para_frac: float | None = 0.3
    max_dup_para_char_frac: float | None = 0.2
    max_dup_line_frac: float | None = 0.3
    max_dup_line_char_frac: float | None = 0.2
    max_top_2gram_char_frac: float | None = 0.20
    max_top_3gram_char_frac: float | None = 0.18
    max_top_4gram_char_frac: float | None = 0.16
    max_dup_5gram_char_frac: float | None = 0.15
    max_dup_6gram_char_frac: float | None = 0.14
    max_dup_7gram_char_frac: float | None = 0.13
    max_dup_8gram_char_frac: float | None = 0.12
    max_dup_9gram_char_frac: float | None = 0.11
    max_dup_10gram_char_frac: float | None = 0.10

    # Gopher quality.
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_len: float | None = 3
    max_mean_word_len: float | None = 10
    max_symbol_word_ratio: float | None = 0.1  # '#' per word, and '...' or '…' per word
    max_bullet_lines_frac: float | None = 0.9  # lines starting with '•' or '-'
    max_ellipsis_lines_frac: float | None = 0.3  # lines ending with '...' or '…'
    min_alpha_words_frac: float | None = 0.8  # words with at least one letter
    min_stop_words: int | None = 2  # distinct stop words present
    stop_words: list[str] = field(default_factory=lambda: list(DEFAULT_STOP_WORDS))

    # C4. Lines failing a line rule are dropped from the text when filter_lines is true (as
    # datatrove always does); the document rules (lorem ipsum, curly bracket, too few sentences)
    # only look at lines that passed the line rules before them.
    filter_lines: bool = True
    c4_remove_citations: bool | None = True  # remove "[1]", "[edit]", "[citation needed]"
    c4_terminal_punct: bool | None = True  # keep only lines ending in . ? ! " ' (but not ...)
    c4_min_words_per_line: int | None = 3
    c4_max_word_len: int | None = 1000  # drop lines with a longer word
    c4_lorem_ipsum: bool | None = True  # reject documents with "lorem ipsum"
    c4_javascript: bool | None = True  # drop lines mentioning javascript
    c4_curly_bracket: bool | None = True  # reject documents with '{'
    c4_policy: bool | None = True  # drop cookie / terms-of-use / privacy-policy lines
    c4_min_sentences: int | None = 5

    # FineWeb (datatrove's FineWebQualityFilter), on the text C4 left; off unless turned on.
    fineweb: bool = False
    fineweb_min_line_punct_frac: float | None = 0.12  # lines ending in a stop character / non-blank lines
    fineweb_line_punct_exclude_zero: bool = False  # true: a text with no such line passes that rule
    fineweb_stop_chars: list[str] | None = None  # the line endings that count; null: TERMINAL_PUNCTUATION
    fineweb_max_short_line_frac: float | None = 0.67  # lines of at most fineweb_short_line_len characters
    fineweb_short_line_len: int = 30  # characters
    fineweb_max_dup_line_char_frac: float | None = 0.01  # characters in repeated lines / characters but newlines
    fineweb_max_newline_word_ratio: float | None = 0.3  # newlines per word (punctuation included): list-like texts

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, (bool, list)):
                continue
            if value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value!r} (null disables the rule)")
            if f.name.endswith("_frac") and value > 1:
                raise ValueError(f"{f.name} is a fraction between 0 and 1, got {value!r}")
        for low, high in [("min_words", "max_words"), ("min_mean_word_len", "max_mean_word_len")]:
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} ({a}) is greater than {high} ({b})")
        if not all(isinstance(w, str) and w for w in self.stop_words):
            raise ValueError(f"stop_words must be non-empty strings, got {self.stop_words!r}")
        if self.fineweb_stop_chars is not None and not all(isinstance(c, str) and c for c in self.fineweb_stop_chars):
            raise ValueError(f"fineweb_stop_chars must be non-empty strings, got {self.fineweb_stop_chars!r}")

    def top_ngram_limits(self) -> list[tuple[int, float]]:
        return [(n, t) for n, t in ((n, getattr(self, f"max_top_{n}gram_char_frac")) for n in (2, 3, 4)) if t is not None]

    def dup_ngram_limits(self) -> list[tuple[int, float]]:
        return [(n, t) for n, t in ((n, getattr(self, f"max_dup_{n}gram_char_frac")) for n in range(5, 11)) if t is not None]


# Every reason the stage can give, with what it means (docs/etl/quality.md shows this table).
REASONS = {
    "quality:empty": "no text, or no token in it",
    "quality:gopher_dup_para_frac": "too many paragraphs (split at blank lines) repeat an earlier one",
    "quality:gopher_dup_para_char_frac": "repeated paragraphs hold too many of the text's characters",
    "quality:gopher_dup_line_frac": "too many lines repeat an earlier line",
    "quality:gopher_dup_line_char_frac": "repeated lines hold too many of the text's characters",
    **{f"quality:gopher_top_{n}gram_frac": f"the most frequent {n}-gram covers too many characters" for n in (2, 3, 4)},
    **{f"quality:gopher_dup_{n}gram_frac": f"duplicated {n}-grams cover too many characters" for n in range(5, 11)},
    "quality:gopher_short_doc": "fewer words than min_words",
    "quality:gopher_long_doc": "more words than max_words",
    "quality:gopher_short_words": "mean word length below min_mean_word_len",
    "quality:gopher_long_words": "mean word length above max_mean_word_len",
    "quality:gopher_hash_ratio": "too many '#' per word",
    "quality:gopher_ellipsis_ratio": "too many '...' or '…' per word",
    "quality:gopher_bullet_lines": "too many lines start with a bullet ('•' or '-')",
    "quality:gopher_ellipsis_lines": "too many lines end with an ellipsis",
    "quality:gopher_non_alpha_words": "too few words contain a letter",
    "quality:gopher_few_stop_words": "fewer distinct stop words than min_stop_words",
    "quality:c4_lorem_ipsum": "a kept line contains 'lorem ipsum'",
    "quality:c4_curly_bracket": "a kept line contains '{'",
    "quality:c4_few_sentences": "fewer sentences than c4_min_sentences in the kept lines",
    "quality:c4_no_lines_left": "line filtering left no text (only when c4_min_sentences is null or 0)",
    "quality:fineweb_line_punct": "too few lines end in terminal punctuation",
    "quality:fineweb_short_lines": "too many lines are short",
    "quality:fineweb_dup_line_chars": "repeated lines hold too many characters",
    "quality:fineweb_list_like": "too many newlines per word: a list, not prose",
}

# Per-document scores, kept as columns (the report draws their histograms).
SCORE_COLUMNS = {
    "q_words": "int",  # words that are not only punctuation
    "q_mean_word_len": "float",
    "q_symbol_ratio": "float",  # the larger of '#' per word and ellipses per word
    "q_alpha_frac": "float",  # words with a letter / all tokens
    "q_dup_line_frac": "float",
    "q_dup_para_frac": "float",
    "q_top_2gram_frac": "float",
    "q_dup_5gram_frac": "float",
    "q_c4_lines_dropped": "int",  # lines C4's line rules dropped (null where C4 did not run)
}


@dataclass
class Verdict:
    reason: str | None  # None: kept
    detail: str | None  # the measured value that made the rule fire
    text: str  # the text, with C4's dropped lines removed when filter_lines is on
    scores: dict[str, float | int | None]


@dataclass
class TextStats:
    """What the Gopher rules measure, all from one word split of the text."""

    text: str
    words: list[str]  # tokens, punctuation included
    n_words: int  # tokens that are not only punctuation
    mean_word_len: float  # NaN without words
    hash_ratio: float  # '#' per token
    ellipsis_ratio: float  # '...' or '…' per token
    alpha_frac: float  # tokens with a letter / all tokens
    n_paras: int
    dup_paras: int
    dup_para_chars: int
    n_lines: int
    dup_lines: int
    dup_line_chars: int
    top_2gram_frac: float
    dup_5gram_frac: float

    @classmethod
    def measure(cls, text: str) -> TextStats | None:
        """The statistics of ``text``; None when it has no token."""
        words, n_words, word_chars, alpha_tokens = scan(text)
        n_tokens = len(words)
        if not n_tokens:
            return None
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        dup_paras, dup_para_chars = _duplicates(paragraphs)
        lines = _LINE_BREAK.split(text)
        dup_lines, dup_line_chars = _duplicates(lines)
        return cls(
            text=text,
            words=words,
            n_words=n_words,
            mean_word_len=word_chars / n_words if n_words else math.nan,
            hash_ratio=text.count("#") / n_tokens,
            ellipsis_ratio=(text.count("...") + text.count("…")) / n_tokens,
            alpha_frac=alpha_tokens / n_tokens,
            n_paras=len(paragraphs),
            dup_paras=dup_paras,
            dup_para_chars=dup_para_chars,
            n_lines=len(lines),
            dup_lines=dup_lines,
            dup_line_chars=dup_line_chars,
            top_2gram_frac=_top_ngram_chars(words, 2) / len(text) if n_tokens >= 2 else 0.0,
            dup_5gram_frac=_dup_ngram_chars(words, 5) / len(text),
        )

    def scores(self, lines_dropped: int | None) -> dict[str, float | int | None]:
        """The SCORE_COLUMNS values."""
        return {
            "q_words": self.n_words,
            "q_mean_word_len": None if math.isnan(self.mean_word_len) else self.mean_word_len,
            "q_symbol_ratio": max(self.hash_ratio, self.ellipsis_ratio),
            "q_alpha_frac": self.alpha_frac,
            "q_dup_line_frac": self.dup_lines / self.n_lines,
            "q_dup_para_frac": self.dup_paras / self.n_paras,
            "q_top_2gram_frac": self.top_2gram_frac,
            "q_dup_5gram_frac": self.dup_5gram_frac,
            "q_c4_lines_dropped": lines_dropped,
        }


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters."""
    if len(set(items)) == len(items):
        return 0, 0
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (words joined by spaces) times its count."""
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]  # ties: the n-gram seen first, as datatrove
    return (sum(map(len, gram)) + n - 1) * count


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams (words concatenated) that repeat an earlier one, scanning greedily:
    after a repeat the scan jumps past it, and the n-grams it jumps over are not remembered
    (datatrove's ``find_all_duplicate``)."""
    grams = list(map("".join, zip(*(words[i:] for i in range(n)))))
    if len(set(grams)) == len(grams):
        return 0
    # An n-gram that occurs once can never be a repeat, so only repeated ones need walking.
    counts = Counter(grams)
    seen: set[str] = set()
    chars = next_position = 0
    for position in [i for i, gram in enumerate(grams) if counts[gram] > 1]:
        if position < next_position:
            continue
        gram = grams[position]
        if gram in seen:
            chars += len(gram)
            next_position = position + n
        else:
            seen.add(gram)
            next_position = position + 1
    return chars


def _over(name: str, value: float, limit: float) -> str:
    return f"{name}={value:.4g} > {limit:g}"


def _under(name: str, value: float, limit: float) -> str:
    return f"{name}={value:.4g} < {limit:g}"


def _clip(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[:width] + "…"


def assess(text: str | None, params: QualityParams) -> Verdict:
    """Scores ``text`` and names the first rule (if any) that rejects it."""
    text = text or ""
    stats = TextStats.measure(text)
    if stats is None:
        return Verdict("quality:empty", "no tokens", text, {name: None for name in SCORE_COLUMNS})
    reason, detail = None, None
    if params.gopher_repetition:
        reason, detail = _repetition_rule(params, stats)
    if reason is None and params.gopher_quality:
        reason, detail = _quality_rule(params, stats)
    lines_dropped = None  # C4 did not look at the document
    if reason is None and params.c4:
        reason, detail, new_text, lines_dropped = _c4_rule(params, text)
        if params.filter_lines:
            text = new_text
            if reason is None and not text:
                reason, detail = "quality:c4_no_lines_left", f"lines_dropped={lines_dropped}"
    if reason is None and params.fineweb:
        reason, detail = _fineweb_rule(params, text)
    return Verdict(reason, detail, text, stats.scores(lines_dropped))


def _repetition_rule(p: QualityParams, s: TextStats) -> tuple[str | None, str | None]:
    text_len = len(s.text)
    checks = [
        ("gopher_dup_para_frac", s.dup_paras / s.n_paras, p.max_dup_para_frac),
        ("gopher_dup_para_char_frac", s.dup_para_chars / text_len, p.max_dup_para_char_frac),
        ("gopher_dup_line_frac", s.dup_lines / s.n_lines, p.max_dup_line_frac),
        ("gopher_dup_line_char_frac", s.dup_line_chars / text_len, p.max_dup_line_char_frac),
    ]
    for name, value, limit in checks:
        if limit is not None and value > limit:
            return f"quality:{name}", _over(name.removeprefix("gopher_"), value, limit)
    for n, limit in p.top_ngram_limits():
        if len(s.words) < n:
            continue
        value = s.top_2gram_frac if n == 2 else _top_ngram_chars(s.words, n) / text_len
        if value > limit:
            return f"quality:gopher_top_{n}gram_frac", _over(f"top_{n}gram_frac", value, limit)
    for n, limit in p.dup_ngram_limits():
        value = s.dup_5gram_frac if n == 5 else _dup_ngram_chars(s.words, n) / text_len
        if value > limit:
            return f"quality:gopher_dup_{n}gram_frac", _over(f"dup_{n}gram_frac", value, limit)
    return None, None


def _quality_rule(p: QualityParams, s: TextStats) -> tuple[str | None, str | None]:
    if p.min_words is not None and s.n_words < p.min_words:
        return "quality:gopher_short_doc", _under("words", s.n_words, p.min_words)
    if p.max_words is not None and s.n_words > p.max_words:
        return "quality:gopher_long_doc", _over("words", s.n_words, p.max_words)
    # With no words the mean is undefined and neither bound applies (as in datatrove).
    if p.min_mean_word_len is not None and s.mean_word_len < p.min_mean_word_len:
        return "quality:gopher_short_words", _under("mean_word_len", s.mean_word_len, p.min_mean_word_len)
    if p.max_mean_word_len is not None and s.mean_word_len > p.max_mean_word_len:
        return "quality:gopher_long_words", _over("mean_word_len", s.mean_word_len, p.max_mean_word_len)
    if p.max_symbol_word_ratio is not None:
        if s.hash_ratio > p.max_symbol_word_ratio:
            return "quality:gopher_hash_ratio", _over("hash_ratio", s.hash_ratio, p.max_symbol_word_ratio)
        if s.ellipsis_ratio > p.max_symbol_word_ratio:
            return "quality:gopher_ellipsis_ratio", _over("ellipsis_ratio", s.ellipsis_ratio, p.max_symbol_word_ratio)
    if p.max_bullet_lines_frac is not None or p.max_ellipsis_lines_frac is not None:
        lines = s.text.splitlines()
        if p.max_bullet_lines_frac is not None:
            bullets = sum(1 for line in lines if line.lstrip().startswith(("•", "-"))) / len(lines)
            if bullets > p.max_bullet_lines_frac:
                return "quality:gopher_bullet_lines", _over("bullet_lines_frac", bullets, p.max_bullet_lines_frac)
        if p.max_ellipsis_lines_frac is not None:
            ellipses = sum(1 for line in lines if line.rstrip().endswith(("...", "…"))) / len(lines)
            if ellipses > p.max_ellipsis_lines_frac:
                return "quality:gopher_ellipsis_lines", _over("ellipsis_lines_frac", ellipses, p.max_ellipsis_lines_frac)
    if p.min_alpha_words_frac is not None and s.alpha_frac < p.min_alpha_words_frac:
        return "quality:gopher_non_alpha_words", _under("alpha_words_frac", s.alpha_frac, p.min_alpha_words_frac)
    if p.min_stop_words is not None:
        present = len(set(p.stop_words).intersection(s.words))
        if present < p.min_stop_words:
            return "quality:gopher_few_stop_words", _under("stop_words", present, p.min_stop_words)
    return None, None


def _c4_rule(p: QualityParams, text: str) -> tuple[str | None, str | None, str, int]:
    """C4's line rules and document rules; returns (reason, detail, text with kept lines, lines dropped)."""
    kept: list[str] = []
    sentences = 0
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        words = line.split()
        if p.c4_max_word_len is not None and any(len(w) > p.c4_max_word_len for w in words):
            continue
        if p.c4_remove_citations:
            line = _CITATION.sub("", line)
        if p.c4_terminal_punct and (not line.endswith(_C4_LINE_ENDS) or line.endswith("...")):
            continue
        if p.c4_min_words_per_line is not None and len(words) < p.c4_min_words_per_line:
            continue
        lowered = line.lower()
        if p.c4_lorem_ipsum and "lorem ipsum" in lowered:
            return "quality:c4_lorem_ipsum", f"line {number}: {_clip(line)}", text, 0
        if p.c4_javascript and "javascript" in lowered:
            continue
        if p.c4_curly_bracket and "{" in line:
            return "quality:c4_curly_bracket", f"line {number}: {_clip(line)}", text, 0
        if p.c4_policy and any(phrase in lowered for phrase in _POLICY_PHRASES):
            continue
        # Only whether the minimum is reached matters, so counting stops there.
        if p.c4_min_sentences is not None and sentences < p.c4_min_sentences:
            sentences += count_sentences(line)
        kept.append(line)
    dropped = len(lines) - len(kept)
    if p.c4_min_sentences is not None and sentences < p.c4_min_sentences:
        return "quality:c4_few_sentences", _under("sentences", sentences, p.c4_min_sentences), text, dropped
    return None, None, "\n".join(kept).strip(), dropped


def _fineweb_rule(p: QualityParams, text: str) -> tuple[str | None, str | None]:
    """FineWeb's four rules, on non-blank lines split at "\n" (unstripped, as datatrove leaves them)."""
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return "quality:empty", "no non-blank line"
    if p.fineweb_min_line_punct_frac is not None:
        ends = tuple(p.fineweb_stop_chars) if p.fineweb_stop_chars is not None else TERMINAL_PUNCTUATION
        frac = sum(1 for line in lines if line.endswith(ends)) / len(lines)
        if frac < p.fineweb_min_line_punct_frac and not (frac == 0 and p.fineweb_line_punct_exclude_zero):
            return "quality:fineweb_line_punct", _under("line_punct_frac", frac, p.fineweb_min_line_punct_frac)
    if p.fineweb_max_short_line_frac is not None:
        frac = sum(1 for line in lines if len(line) <= p.fineweb_short_line_len) / len(lines)
        if frac > p.fineweb_max_short_line_frac:
            return "quality:fineweb_short_lines", _over("short_line_frac", frac, p.fineweb_max_short_line_frac)
    if p.fineweb_max_dup_line_char_frac is not None:
        frac = _duplicates(lines)[1] / (len(text) - text.count("\n"))
        if frac > p.fineweb_max_dup_line_char_frac:
            return "quality:fineweb_dup_line_chars", _over("dup_line_char_frac", frac, p.fineweb_max_dup_line_char_frac)
    if p.fineweb_max_newline_word_ratio is not None:
        ratio = text.count("\n") / len(scan(text)[0])
        if ratio > p.fineweb_max_newline_word_ratio:
            return "quality:fineweb_list_like", _over("newlines_per_word", ratio, p.fineweb_max_newline_word_ratio)
    return None, None
