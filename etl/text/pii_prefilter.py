"""Which documents can hold a match of the `pii` stage's pattern recognisers, decided before presidio.

Most documents hold no personal data, yet presidio's analysis (every recogniser's regexes, the
phone region passes, the context words) costs milliseconds per document whatever it finds. A
recogniser can only report a span its own pattern matched: context words raise the score of a
match, they never create one. So each recogniser has a *necessary* condition, read off its own
patterns, that every one of its matches contains; a document in which no enabled recogniser's
condition holds is one presidio would leave unchanged, and it skips presidio.

Each condition is a part of the recogniser's pattern, or looser: regexes run by the same `regex`
engine with the same case handling (so the same characters count as digits, letters and word
characters on both sides), plain substrings for case-sensitive literals, and for case-insensitive
words a substring test on the lower-cased text after mapping the few non-ASCII characters that
`regex` matches to ASCII letters under IGNORECASE (tests/etl/test_pii_prefilter.py checks that table
against every code point). Custom recognisers' condition is their own patterns. spaCy NER finds
names anywhere, so with NER entities enabled there is no pre-filter (see `etl.stages.pii`).
"""
from __future__ import annotations

from dataclasses import dataclass

import regex

from .pii_entities import NER_ENTITIES, CustomRecognizer

# A phone number has at least seven digits, split by at most two separators each. The phone recogniser
# (FastPhoneRecognizer) returns nothing for a text without such a run; card numbers (13+ digits, one
# `[- ]` at most between two) and SSNs (9 digits, one `[- .]` at most between two) hold one too.
SEVEN_DIGITS = regex.compile(r"\d(?:[\s().\-/]{0,2}\d){6}")

# Non-ASCII characters `regex` matches to an ASCII letter under IGNORECASE (Kelvin sign, long s,
# dotted and dotless i), plus sharp s, which full case folding reads as "ss".
_TO_ASCII = str.maketrans({"\u212a": "k", "\u017f": "s", "\u0130": "i", "\u0131": "i", "\u00df": "ss"})


@dataclass(frozen=True)
class Need:
    """What every match of a recogniser contains: a regex match, a substring, or a substring of the
    lower-cased text (for patterns matched case-insensitively)."""

    regexes: tuple[str, ...] = ()
    substrings: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # lower-case ASCII


def _spell(*parts: str | tuple[str, ...]) -> tuple[str, ...]:
    """Every string made of one choice per part: ("gh", ("p", "o"), "_") -> ("ghp_", "gho_")."""
    out = [""]
    for part in parts:
        out = [o + p for o in out for p in ((part,) if isinstance(part, str) else part)]
    return tuple(out)


# The built-in recognisers' needs (their patterns: etl.text.pii_recognizers and presidio's predefined ones).
NEEDS = {
    # presidio's pattern: a local part ending in one of [!#$%&'*+\-/=?^_`{|}~\w], `@`, then \w+.
    "EMAIL": Need(regexes=(r"\S@\w",)),
    "PHONE": Need(regexes=(SEVEN_DIGITS.pattern,)),
    "CREDIT_CARD": Need(regexes=(SEVEN_DIGITS.pattern,)),
    "US_SSN": Need(regexes=(SEVEN_DIGITS.pattern,)),
    # presidio's IBAN pattern starts [A-Z]{2}[0-9]{2}, matched case-sensitively.
    "IBAN": Need(regexes=(r"[A-Z]{2}[0-9]{2}",)),
    # IPv4, alone or inside presidio's IPv6 forms: four dotted groups of 1-3 digits. Every other IPv6
    # form holds `::` or is the full eight groups (`h:h:`): either way a colon, then a colon or 1-4 hex digits and a colon.
    "IP_ADDRESS": Need(regexes=(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", r"(?i):(?::|[0-9a-f]{1,4}:)")),
    "CREDENTIAL_URL": Need(regexes=(r"://[^\s:/@]+:[^\s@/]+@",)),
    # KnownSecretRecognizer's case-sensitive prefixes, and the names AssignedSecretRecognizer's
    # case-insensitive look-behind requires (auth_token and access_token hold `token`, passw(or)d `passw`).
    "SECRET": Need(
        substrings=("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "github_pat_", "glpat-", "AIza", "sk-", "eyJ", "-----BEGIN ")
        + _spell("gh", tuple("pousr"), "_") + _spell("xox", tuple("abposr"), "-")
        + _spell(("r", "s"), "k_", ("live", "test"), "_"),
        words=_spell("api", ("", "_", "-"), "key") + _spell("access", ("", "_", "-"), "key")
        + ("apikey", "secret", "token", "bearer", "passw", "pwd"),
    ),
}


class PiiPrefilter:
    """One cheap pass over a text: can any enabled recogniser match in it?"""

    def __init__(self, entities: list[str], custom: list[CustomRecognizer] = ()):
        ner = [e for e in entities if e in NER_ENTITIES]
        if ner:
            raise ValueError(f"no pre-filter for NER entities {ner}: a name can be anywhere")
        needs = [NEEDS[e] for e in entities]
        self.substrings = tuple(sorted({s for n in needs for s in n.substrings}))
        self.words = tuple(sorted({w for n in needs for w in n.words}))
        self.regexes = [regex.compile(r) for r in sorted({r for n in needs for r in n.regexes})]
        # The custom recognisers' own patterns, compiled as etl.text.pii_recognizers compiles them.
        self.regexes += [
            regex.compile(p, regex.DOTALL | regex.MULTILINE | (0 if spec.case_sensitive else regex.IGNORECASE))
            for spec in custom for p in spec.patterns
        ]

    def might_hold(self, text: str) -> bool:
        if any(s in text for s in self.substrings):
            return True
        if self.words:
            folded = (text if text.isascii() else text.translate(_TO_ASCII)).lower()
            if any(w in folded for w in self.words):
                return True
        return any(pattern.search(text) for pattern in self.regexes)
