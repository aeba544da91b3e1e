"""C4's bad-words rule in plain Python (no Spark): does a text hold a word of its language's list?

The lists are LDNOOBW's, shipped in ``etl/data/badwords/`` (CC-BY-4.0; its README names the
commits, the same datatrove 0.10.1 downloads). The match is datatrove's ``C4BadWordsFilter``'s: on
the lower-cased text, a listed word flanked by non-word characters (``\\W``) or the text's ends; in
Japanese, Thai and Chinese, written without spaces, anywhere. datatrove runs one regular expression
of all the words; here a word made only of word characters is looked up in the set of the text's
``\\w+`` runs (the same matches: such a word is flanked by ``\\W`` exactly when it is a whole run),
and only the few others (``a$$``, two-word phrases, words with combining marks) go through the
expression.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import fsspec

# Read through importlib.resources: executors import Kiln from a zip (spark-submit --py-files), not a folder.
BUILTIN_LISTS = resources.files("etl") / "data" / "badwords"
# Common subwords in languages without spaces; datatrove removes them from every list.
ALLOWED_SUBWORDS = frozenset({"sm", "グロ", "女の子", "性"})
UNSPACED_LANGUAGES = ("ja", "th", "zh")
_WORD_RUN = re.compile(r"\w+")


def builtin_languages() -> list[str]:
    return sorted(entry.name.removesuffix(".txt") for entry in BUILTIN_LISTS.iterdir() if entry.name.endswith(".txt"))


@dataclass
class BadWords:
    """One language's list, ready to match."""

    whole_words: frozenset[str]  # words of word characters only: looked up among the text's \\w+ runs
    pattern: re.Pattern | None  # the other words, as datatrove's expression

    @classmethod
    def from_words(cls, words: set[str], language: str) -> BadWords:
        words = set(words) - ALLOWED_SUBWORDS - {""}
        if language in UNSPACED_LANGUAGES:
            return cls(frozenset(), re.compile("|".join(map(re.escape, sorted(words)))) if words else None)
        whole = {w for w in words if _WORD_RUN.fullmatch(w)}
        rest = sorted(words - whole)
        pattern = re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(map(re.escape, rest)))) if rest else None
        return cls(frozenset(whole), pattern)

    @classmethod
    def load(cls, language: str, path: str | None = None) -> BadWords:
        """The built-in list of ``language``, or the file at ``path`` (local or fsspec), one word a line."""
        if path is None:
            text = (BUILTIN_LISTS / f"{language}.txt").read_text(encoding="utf-8")
        else:
            with fsspec.open(path, "rt", encoding="utf-8") as handle:
                text = handle.read()
        return cls.from_words({line.strip() for line in text.splitlines()}, language)

    def find(self, text: str) -> str | None:
        """The first bad word found in ``text`` (lower-cased first), or None."""
        lowered = text.lower()
        if self.whole_words:
            for run in _WORD_RUN.findall(lowered):
                if run in self.whole_words:
                    return run
        if self.pattern is not None:
            match = self.pattern.search(lowered)
            if match:
                return match.group(1) if match.groups() else match.group(0)
        return None


def load_lists(overrides: dict[str, str] | None = None) -> dict[str, BadWords]:
    """Every built-in list by language, with ``overrides`` (language -> file) replacing or adding lists."""
    lists = {language: BadWords.load(language) for language in builtin_languages()}
    lists.update({language: BadWords.load(language, path) for language, path in (overrides or {}).items()})
    return lists


def find_bad_word(lists: dict[str, BadWords], text: str, language: str) -> str | None:
    """The first word of ``language``'s list in ``text``; None when there is none, or no list for it."""
    words = lists.get(language)
    return words.find(text) if words is not None else None
