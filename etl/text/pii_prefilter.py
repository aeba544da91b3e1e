"""Which documents can hold a match of the `pii` stage's pattern recognisers, decided before presidio.

Most documents hold no personal data, yet presidio's analysis (every recogniser's regexes, the
phone region passes, the context words) costs milliseconds per document whatever it finds. A
recogniser can only report a span its own pattern matched: context words raise the score of a
match, they never create one. So a document in which no enabled recogniser's pattern matches is
one presidio would leave unchanged, and it skips presidio. Where some can, presidio runs only the
recognisers of the entity types that can match (the others would return nothing).

Two steps per recogniser. First a cheap *necessary* condition (`NEEDS`), read off its patterns:
every match contains it. Only where it holds, the recogniser's own compiled patterns (taken from the
recogniser objects, with their flags) confirm that one of them matches somewhere. Both use the
`regex` engine presidio uses, with the same case handling, so the same characters count as digits,
letters and word characters; case-insensitive words are a substring of the lower-cased text after mapping the few non-ASCII characters that `regex`
matches to ASCII letters under IGNORECASE (tests/etl/test_pii_prefilter.py checks that table against
every code point). The phone recogniser is not a pattern recogniser: its own gate (`SEVEN_DIGITS`,
which it applies itself) is its condition. Custom recognisers have no cheap condition: their own
patterns decide. spaCy NER finds names anywhere, so with NER entities enabled there is no
pre-filter (see `etl.stages.pii`).
"""
from __future__ import annotations

from dataclasses import dataclass

import regex

from .pii_entities import NER_ENTITIES

# A phone number has at least seven digits, split by at most two separators each. The phone recogniser
# (FastPhoneRecognizer) returns nothing for a text without such a run; card numbers (13+ digits, one
# `[- ]` at most between two) and SSNs (9 digits, one `[- .]` at most between two) hold one too.
SEVEN_DIGITS = regex.compile(r"\d(?:[\s().\-/]{0,2}\d){6}")

# Non-ASCII characters `regex` matches to an ASCII letter under IGNORECASE (Kelvin sign, long s,
# dotted and dotless i), plus sharp s, which full case folding reads as "ss".
_TO_ASCII = str.maketrans({"\u212a": "k", "\u017f": "s", "\u0130": "i", "\u0131": "i", "\u00df": "ss"})


@dataclass(frozen=True)
class Need:
    """What every match of a recogniser contains: a match of one of `regexes`, or one of `words` in the
    lower-cased text (for patterns matched case-insensitively)."""

    regexes: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # lower-case ASCII


def _spell(*parts: str | tuple[str, ...]) -> tuple[str, ...]:
    """Every string made of one choice per part: ("api", ("", "_"), "key") -> ("apikey", "api_key")."""
    out = [""]
    for part in parts:
        out = [o + p for o in out for p in ((part,) if isinstance(part, str) else part)]
    return tuple(out)


# The cheap conditions of the built-in recognisers (etl.text.pii_recognizers, on presidio's predefined
# ones), by class. A recogniser not listed (KnownSecretRecognizer, whose prefixed patterns are as quick
# as any condition; custom ones) is decided by its own patterns alone.
NEEDS = {
    # presidio's pattern: a local part ending in one of [!#$%&'*+\-/=?^_`{|}~\w], `@`, then \w+.
    "OfflineEmailRecognizer": Need(regexes=(r"\S@\w",)),
    "FastPhoneRecognizer": Need(regexes=(SEVEN_DIGITS.pattern,)),  # its own gate
    "CardRecognizer": Need(regexes=(SEVEN_DIGITS.pattern,)),
    "SsnRecognizer": Need(regexes=(SEVEN_DIGITS.pattern,)),
    # presidio's IBAN pattern starts [A-Z]{2}[0-9]{2}, matched case-sensitively.
    "IbanRecognizer": Need(regexes=(r"[A-Z]{2}[0-9]{2}",)),
    # IPv4, alone or inside presidio's IPv6 forms: four dotted groups of 1-3 digits, so `.` 1-3 digits `.`
    # and a digit. Every other IPv6 form holds `::` or is the full eight groups (`h:h:`): either way a
    # colon, then a colon or 1-4 hex digits and a colon.
    "VersionAwareIpRecognizer": Need(regexes=(r"\.\d{1,3}\.\d", r"(?i):(?::|[0-9a-f]{1,4}:)")),
    "CredentialUrlRecognizer": Need(regexes=(r"://[^\s:/@]+:[^\s@/]+@",)),
    # The names its case-insensitive look-behind requires (auth_token and access_token hold `token`,
    # passw(or)d `passw`).
    "AssignedSecretRecognizer": Need(words=_spell("api", ("", "_", "-"), "key") + _spell("access", ("", "_", "-"), "key")
                                     + ("apikey", "secret", "token", "bearer", "passw", "pwd")),
}


class PiiPrefilter:
    """One cheap pass over a text: which enabled recognisers' entities can match in it?

    ``checks``: per recogniser, its entity, its cheap condition (None: none) and its own compiled
    patterns (None: the condition is the recogniser's own gate, as for phones).
    """

    def __init__(self, checks: list[tuple[str, Need | None, list[regex.Pattern] | None]]):
        if any(need is None and patterns is None for _, need, patterns in checks):
            raise ValueError("a recogniser with neither a condition nor patterns cannot be pre-filtered")
        # Recognisers sharing a condition (phone, card and SSN) test it once.
        by_need: dict[Need | None, list] = {}
        for entity, need, patterns in checks:
            by_need.setdefault(need, []).append((entity, patterns))
        self.groups = [(need, _compiled(need), members) for need, members in by_need.items()]

    @classmethod
    def for_recognizers(cls, recognizers: list) -> PiiPrefilter:
        """The pre-filter of presidio recognisers (``etl.text.pii_recognizers.build_analyzer``'s registry)."""
        checks = []
        for recognizer in recognizers:
            entities = recognizer.supported_entities
            if len(entities) != 1 or entities[0] in NER_ENTITIES:
                raise ValueError(f"no pre-filter for NER entities {entities}: a name can be anywhere")
            patterns = getattr(recognizer, "patterns", None)
            compiled = None if patterns is None else [regex.compile(p.regex, flags=recognizer.global_regex_flags)
                                                     for p in patterns]
            checks.append((entities[0], NEEDS.get(type(recognizer).__name__), compiled))
        return cls(checks)

    def possible_entities(self, text: str) -> list[str]:
        """The entity types some recogniser of which can match in `text`; presidio need look for no other."""
        possible: set[str] = set()
        folded = None
        for need, need_regexes, members in self.groups:
            if need is not None:
                held = False
                if need.words:
                    if folded is None:
                        folded = (text if text.isascii() else text.translate(_TO_ASCII)).lower()
                    held = any(w in folded for w in need.words)
                if not held:
                    held = any(r.search(text) for r in need_regexes)
                if not held:
                    continue
            for entity, patterns in members:
                if entity not in possible and (patterns is None or any(p.search(text) for p in patterns)):
                    possible.add(entity)
        return sorted(possible)

    def might_hold(self, text: str) -> bool:
        return bool(self.possible_entities(text))


def _compiled(need: Need | None) -> list[regex.Pattern]:
    return [] if need is None else [regex.compile(r) for r in need.regexes]
