"""The entity types the PII recognisers know, and the spec of a recogniser declared in the YAML.

Apart from ``etl.text.pii_recognizers`` because that module imports presidio and spaCy (seconds to
load): the `pii` stage's params need these names whenever a config is loaded, the analyzer only
on the workers that run it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PATTERN_ENTITIES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "US_SSN", "CREDENTIAL_URL", "SECRET")
NER_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION")  # need a spaCy NER model


@dataclass
class CustomRecognizer:
    """An extra recogniser declared in the YAML: regular expressions plus optional context words.

    A match scores ``score``; a context word among the five words before it adds 0.35. With a score
    below the stage's ``score_threshold`` only matches that have a context word nearby are flagged.
    Patterns use the `regex` module's syntax (as presidio does) and ignore case unless ``case_sensitive``.
    """

    entity: str  # the type name it reports, e.g. EMPLOYEE_ID (actions are keyed by it)
    patterns: list[str]  # regular expressions, any of which matches
    context: list[str] = field(default_factory=list)  # words that raise a nearby match's score
    score: float = 0.6  # a bare match's score
    case_sensitive: bool = False  # patterns ignore case unless true

    def __post_init__(self):
        import regex

        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", self.entity):
            raise ValueError(f"entity must be UPPER_SNAKE_CASE (it becomes the placeholder <{self.entity}>), got {self.entity!r}")
        if not self.patterns:
            raise ValueError(f"recognizer {self.entity}: give at least one pattern")
        for pattern in self.patterns:
            try:
                regex.compile(pattern)
            except regex.error as err:
                raise ValueError(f"recognizer {self.entity}: invalid regular expression {pattern!r}: {err}") from None
        if not 0.0 < self.score <= 1.0:
            raise ValueError(f"recognizer {self.entity}: score must be in (0, 1], got {self.score}")
