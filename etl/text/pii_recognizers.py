"""The presidio analyzer the `pii` stage runs: pattern recognisers that need no model and no network.

Everything here works offline. presidio's default NLP engine loads (and downloads) spaCy's
``en_core_web_lg``; we instead split words with a regular expression, which is all the
context-word enhancer needs. Only when a spaCy NER model is installed and named in the config
do PERSON / LOCATION / ORGANIZATION get detected too. E-mail validation uses tldextract's packaged
public-suffix snapshot, never the live list.
"""
from __future__ import annotations

import itertools
import logging
import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import phonenumbers
import regex
import tldextract

from .pii_entities import NER_ENTITIES, CustomRecognizer
from .pii_prefilter import SEVEN_DIGITS
from .torch_hidden import torch_hidden

with torch_hidden(unless_installed="spacy_transformers"):  # see torch_hidden: 5-13 s per Python worker
    import spacy
    from spacy.lang.en.stop_words import STOP_WORDS
    from presidio_analyzer import (AnalyzerEngine, EntityRecognizer, Pattern, PatternRecognizer, RecognizerRegistry,
                                   RecognizerResult)
    from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
        UsSsnRecognizer,
    )

LANGUAGE = "en"  # recognisers' context words are English; the patterns themselves are language-free
# Case matters for key formats (AKIA..., ghp_...): our own patterns do not use presidio's default IGNORECASE.
_CASE_SENSITIVE = regex.DOTALL | regex.MULTILINE

# presidio logs matched text and surrounding words at DEBUG; PII must never reach a log.
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)


@lru_cache(maxsize=1)
def offline_domain_extractor() -> tldextract.TLDExtract:
    """tldextract on the public-suffix snapshot inside the package: no fetch, no cache directory."""
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's e-mail recogniser, but the domain is checked against the packaged suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        return offline_domain_extractor()(pattern_text).fqdn != ""


def preceded_by(text: str, start: int, words: frozenset[str], window: int = 3) -> bool:
    """Whether one of the `window` words just before `start`, in the same sentence, is in `words` (lower case)."""
    before = _SENTENCE_END.split(text[max(0, start - 40):start])[-1]
    return any(w in words for w in re.findall(r"[a-z0-9]+", before.lower())[-window:])


_SENTENCE_END = re.compile(r"(?<=[a-z]{3})[.!?]\s|\n")


def part_of_longer_token(text: str, start: int, end: int) -> bool:
    """Whether a match is glued to more letters or digits (``ORD-2024-824861``, ``#153-3044789-7912801``):
    then it is a piece of some other identifier, not a number of its own."""
    return bool(
        (start > 0 and text[start - 1].isalnum())
        or (end < len(text) and text[end].isalnum())
        or _GLUE_AFTER.match(text, end)
        or _GLUE_BEFORE.search(text[max(0, start - 2):start])
    )


_GLUE_AFTER = re.compile(r"[-./_][A-Za-z0-9]")
_GLUE_BEFORE = re.compile(r"[A-Za-z0-9][-./_]$")


class FastPhoneRecognizer(PhoneRecognizer):
    """presidio's phone recogniser (python-phonenumbers, one pass per region), toward recall and faster.

    A candidate phonenumbers finds (any number of a possible length for the region, assigned or not)
    is a phone number when it is written like one:

    - a valid number whose digit groups are those phonenumbers formats it with, some perhaps run
      together (phonenumbers' STRICT_GROUPING, less its one-block case): ``650 2530000``;
    - any possible number (an area code not assigned today, a new mobile range) written exactly in
      the groups phonenumbers formats it with, or in a usual grouping of its country (Indian mobiles
      5-5): ``(338) 782-2033``, ``338.782.2033``, ``+91 73945 84898``;
    - any possible number written with its country code: ``+1 955 285 3279``, ``+19552853279``;
    - any possible number right after a phone word ("call", "tel", "mobile", ...): ``Call 3387822033``.

    Dates, dotted versions, order numbers and ISBNs are not grouped as any country writes phone
    numbers, and a bare block of digits (``20150901``, ``9638189150``) is a phone number only after
    a phone word or a ``+``. A number right after a word that names another kind of number ("ISBN 0306406152",
    "SSN 497032148") or glued to other characters is not taken either. Texts without a run of seven
    digits are skipped: most prose has none, and the region passes dominate the cost.
    """

    NOT_A_PHONE = frozenset({"isbn", "issn", "order", "invoice", "tracking", "serial", "sku", "part", "model",
                             "patent", "ticket", "case", "doi", "version", "build", "ssn", "security", "passport"})
    PHONE_WORDS = frozenset({"phone", "telephone", "tel", "call", "mobile", "cell", "cellphone", "fax", "ring",
                             "dial", "whatsapp", "hotline", "mob", "ph", "handy", "telefon", "portable", "téléphone"})
    # Groupings people use beyond phonenumbers' own formats, by region: national significant
    # numbers' digit-group lengths.
    USUAL_GROUPS = {"IN": {(5, 5)}}
    MIN_DIGITS = 7  # digits written; shorter numbers are extensions, codes, counts and page ranges

    def analyze(self, text, entities, nlp_artifacts=None):
        if not SEVEN_DIGITS.search(text):
            return []
        results = []
        for region in self.supported_regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
                if self._written_as_phone(text, match):
                    results.append(self._get_recognizer_result(match, text, region, nlp_artifacts))
        return EntityRecognizer.remove_duplicates(results)

    def _written_as_phone(self, text: str, match) -> bool:
        if preceded_by(text, match.start, self.NOT_A_PHONE) or part_of_longer_token(text, match.start, match.end):
            return False
        number = match.number
        nsn = phonenumbers.national_significant_number(number)
        written = _digit_groups(match.raw_string, nsn)
        if written is None or sum(c.isdigit() for c in match.raw_string) < self.MIN_DIGITS:
            return False
        if match.raw_string.lstrip("(").startswith("+") or preceded_by(text, match.start, self.PHONE_WORDS):
            return True
        # Without a country code or a phone word, a number needs its area code (a US 7-digit local
        # number reads like a coordinate, ``138.7189``) and a grouping.
        if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE or len(written) < 2:
            return False
        region = phonenumbers.region_code_for_country_code(number.country_code)
        if written in self.USUAL_GROUPS.get(region, ()) and phonenumbers.is_valid_number(number):
            return True
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        if _digits(national) != nsn and _digits(match.raw_string) != _digits(national):
            return False  # the country writes a national prefix (0 in GB, DE, FR): ``138.7189`` is no German number
        formats = {_digit_groups(national, nsn),
                   _digit_groups(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL), nsn)}
        return written in formats or (phonenumbers.is_valid_number(number) and any(_coarser(written, f) for f in formats if f))


def _digits(written: str) -> str:
    return "".join(re.findall(r"[0-9]", phonenumbers.normalize_digits_only(written, keep_non_digits=True)))


def _digit_groups(written: str, nsn: str) -> tuple[int, ...] | None:
    """Lengths of the digit groups of the national significant number `nsn` as `written` spells it
    (country code and national prefix left out); None when `written` does not end in its digits."""
    groups = [len(g) for g in re.findall(r"[0-9]+", phonenumbers.normalize_digits_only(written, keep_non_digits=True))]
    digits = _digits(written)
    if not digits.endswith(nsn):
        return None
    skip = len(digits) - len(nsn)
    while skip:
        cut = min(skip, groups[0])
        groups[0] -= cut
        skip -= cut
        if not groups[0]:
            groups.pop(0)
    return tuple(groups)


def _coarser(written: tuple[int, ...], formatted: tuple[int, ...]) -> bool:
    """Whether `written` is `formatted` with some neighbouring groups run together."""
    ends = set(itertools.accumulate(formatted))
    return all(end in ends for end in itertools.accumulate(written))


class VersionAwareIpRecognizer(IpRecognizer):
    """presidio's IPv4/IPv6 recogniser, minus dotted numbers introduced as versions or builds or
    glued into a longer dotted number."""

    NOT_AN_IP = frozenset({"version", "versions", "v", "ver", "build", "release", "firmware"})

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        return [
            r for r in results
            if ":" in text[r.start:r.end]
            or not (preceded_by(text, r.start, self.NOT_AN_IP) or part_of_longer_token(text, r.start, r.end))
        ]


class CardRecognizer(CreditCardRecognizer):
    """presidio's Luhn-checked card recogniser plus Amex/Diners 4-6-5 and 4-6-4 groupings and 2-series Mastercard."""

    PATTERNS = CreditCardRecognizer.PATTERNS + [
        Pattern("Amex / Diners grouping", r"\b3[0-9]{3}[- ][0-9]{6}[- ][0-9]{4,5}\b", 0.3),
        Pattern("Mastercard 2-series", r"\b2[2-7][0-9]{2}[- ]?[0-9]{4}[- ]?[0-9]{4}[- ]?[0-9]{4}\b", 0.3),
    ]

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        return [r for r in results if not part_of_longer_token(text, r.start, r.end)]


class SsnRecognizer(UsSsnRecognizer):
    """presidio's US SSN recogniser, minus matches glued into a longer number."""

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        return [r for r in results if not part_of_longer_token(text, r.start, r.end)]


class CredentialUrlRecognizer(PatternRecognizer):
    """URLs that carry a user name and password (``scheme://user:password@host``)."""

    PATTERNS = [Pattern("url with credentials", r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]+:[^\s@/]+@[^\s/?#\"'<>]+[^\s\"'<>]*", 0.9)]

    def __init__(self):
        super().__init__(supported_entity="CREDENTIAL_URL", patterns=self.PATTERNS, supported_language=LANGUAGE,
                         global_regex_flags=_CASE_SENSITIVE)


class KnownSecretRecognizer(PatternRecognizer):
    """API keys and tokens with a recognisable format (the prefixes vendors put on them for scanners)."""

    PATTERNS = [
        Pattern("AWS access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b", 0.9),
        Pattern("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{40,255})\b", 0.95),
        Pattern("GitLab token", r"\bglpat-[A-Za-z0-9_\-]{20,}", 0.95),
        Pattern("Slack token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}", 0.95),
        Pattern("Stripe key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b", 0.95),
        Pattern("Google API key", r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])", 0.9),
        Pattern("OpenAI-style key", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{32,}", 0.9),
        Pattern("JSON web token", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", 0.9),
        Pattern("private key block", r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", 1.0),
    ]

    def __init__(self):
        super().__init__(supported_entity="SECRET", patterns=self.PATTERNS, supported_language=LANGUAGE,
                         global_regex_flags=_CASE_SENSITIVE, name="KnownSecretRecognizer")


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


class AssignedSecretRecognizer(PatternRecognizer):
    """A random-looking value assigned to a name like ``api_key``, ``GITHUB_TOKEN`` or ``db_password``.

    Only the value is flagged (the name stays readable), and only when it looks random: at least
    16 characters, two of lower case, upper case and digits, high character entropy. That keeps
    ``password: see the wiki`` and ``token = None`` out.
    """

    PATTERNS = [
        Pattern(
            "assigned secret",
            r"(?i)(?<=\b[a-z0-9_\-]*?(?:api[_\-]?key|apikey|secret(?:[_\-]?key)?|access[_\-]?key(?:[_\-]?id)?|auth[_\-]?token|"
            r"access[_\-]?token|bearer|token|passw(?:or)?d|pwd)[\"']?\s*(?:[:=]|=>|\s)\s*[\"']?)"
            r"[A-Za-z0-9_\-+/=.]{16,}",
            0.8,
        ),
    ]

    def __init__(self):
        super().__init__(supported_entity="SECRET", patterns=self.PATTERNS, supported_language=LANGUAGE,
                         global_regex_flags=_CASE_SENSITIVE, name="AssignedSecretRecognizer")

    def validate_result(self, pattern_text: str) -> bool:
        classes = sum(any(test(c) for c in pattern_text) for test in (str.islower, str.isupper, str.isdigit))
        return classes >= 2 and shannon_entropy(pattern_text) >= 3.5


class WordNlpEngine(NlpEngine):
    """The minimal NLP engine: words by a regular expression, lower-cased words as lemmas.

    It loads nothing and is all presidio's context-word enhancer needs. (Tokenising with a blank
    spaCy pipeline gives the same words but costs about as much as all the recognisers together,
    because every spaCy Token is a Python object built on access.)
    """

    _WORD = re.compile(r"\w+|[^\w\s]+")

    def __init__(self):
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def is_loaded(self) -> bool:
        return self.loaded

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        matches = list(self._WORD.finditer(text))
        words = [m.group() for m in matches]
        return NlpArtifacts(
            entities=[], tokens=words, tokens_indices=[m.start() for m in matches],
            lemmas=[w.lower() for w in words], nlp_engine=self, language=language, scores=[],
        )

    def process_batch(self, texts, language, batch_size=1, n_process=1, as_tuples=False, **kwargs):
        for item in texts:
            text, context = item if as_tuples else (item, None)
            artifacts = self.process_text(str(text), language)
            yield (text, artifacts, context) if as_tuples else (text, artifacts)

    def is_stopword(self, word: str, language: str) -> bool:
        return _is_stopword(word)

    def is_punct(self, word: str, language: str) -> bool:
        return _is_punct(word)

    def get_supported_entities(self) -> list[str]:
        return []

    def get_supported_languages(self) -> list[str]:
        return [LANGUAGE]


# presidio asks both of every word of every analysed text; words repeat, so the answers are cached.
@lru_cache(maxsize=1 << 16)
def _is_stopword(word: str) -> bool:
    return word.lower() in STOP_WORDS


@lru_cache(maxsize=1 << 16)
def _is_punct(word: str) -> bool:
    return not any(c.isalnum() for c in word)


class InstalledSpacyNlpEngine(SpacyNlpEngine):
    """presidio's spaCy engine for an installed NER model; refuses to download one.

    Lemmas fall back to the lower-cased word when the pipeline has no lemmatiser, so context
    words still match.
    """

    def __init__(self, ner_model: str):
        if not (spacy.util.is_package(ner_model) or Path(ner_model).exists()):
            raise ValueError(
                f"pii ner_model {ner_model!r} is neither an installed spaCy package nor a model folder; "
                "install the model or give its path: the stage never downloads models"
            )
        super().__init__(models=[{"lang_code": LANGUAGE, "model_name": ner_model}])

    def _doc_to_nlp_artifact(self, doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(self._get_entities(doc), self._get_scores_for_entities(doc))
        return NlpArtifacts(
            entities=entities, tokens=doc, tokens_indices=[token.idx for token in doc],
            lemmas=[token.lemma_ or token.lower_ for token in doc], nlp_engine=self, language=language, scores=scores,
        )


def _pattern_recognizers(phone_regions: list[str]) -> dict[str, list]:
    return {
        "EMAIL": [OfflineEmailRecognizer(supported_entity="EMAIL", supported_language=LANGUAGE)],
        "PHONE": [FastPhoneRecognizer(supported_entity="PHONE", supported_language=LANGUAGE,
                                      supported_regions=tuple(phone_regions))],
        "CREDIT_CARD": [CardRecognizer(supported_entity="CREDIT_CARD", supported_language=LANGUAGE)],
        "IBAN": [IbanRecognizer(supported_entity="IBAN", supported_language=LANGUAGE)],
        "IP_ADDRESS": [VersionAwareIpRecognizer(supported_entity="IP_ADDRESS", supported_language=LANGUAGE)],
        "US_SSN": [SsnRecognizer(supported_entity="US_SSN", supported_language=LANGUAGE)],
        "CREDENTIAL_URL": [CredentialUrlRecognizer()],
        "SECRET": [KnownSecretRecognizer(), AssignedSecretRecognizer()],
    }


def _custom_recognizer(spec: CustomRecognizer, index: int) -> PatternRecognizer:
    flags = _CASE_SENSITIVE if spec.case_sensitive else _CASE_SENSITIVE | regex.IGNORECASE
    return PatternRecognizer(
        supported_entity=spec.entity,
        name=f"custom_{index}_{spec.entity}",
        patterns=[Pattern(f"{spec.entity} pattern {i}", p, spec.score) for i, p in enumerate(spec.patterns)],
        context=spec.context or None,
        supported_language=LANGUAGE,
        global_regex_flags=flags,
    )


def build_analyzer(
    entities: list[str],
    phone_regions: list[str],
    custom: list[CustomRecognizer] = (),
    ner_model: str | None = None,
    score_threshold: float = 0.4,
) -> AnalyzerEngine:
    """An AnalyzerEngine with only the recognisers for ``entities`` (plus the custom ones)."""
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    builtin = _pattern_recognizers(phone_regions)
    for entity in entities:
        if entity in builtin:
            for recognizer in builtin[entity]:
                registry.add_recognizer(recognizer)
    ner_wanted = [e for e in entities if e in NER_ENTITIES]
    if ner_wanted:
        if ner_model is None:
            raise ValueError(f"entities {ner_wanted} need a spaCy NER model: set ner_model")
        registry.add_recognizer(SpacyRecognizer(supported_language=LANGUAGE, supported_entities=ner_wanted))
    for index, spec in enumerate(custom):
        registry.add_recognizer(_custom_recognizer(spec, index))
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=InstalledSpacyNlpEngine(ner_model) if ner_wanted else WordNlpEngine(),
        supported_languages=[LANGUAGE],
        default_score_threshold=score_threshold,
    )


def resolve_overlaps(results: list) -> list:
    """Non-overlapping results: overlapping matches become one span covering them all, typed by the
    longest match (then the highest score). A URL with credentials that contains an IP address stays
    one CREDENTIAL_URL; an SSN also read as a phone number stays the better-scored US_SSN; and no
    part of any matched value is left outside a replaced span."""
    merged = []
    cluster: list = []
    end = 0
    for result in sorted(results, key=lambda r: (r.start, -r.end)):
        if cluster and result.start >= end:
            merged.append(_merge(cluster))
            cluster = []
        end = max(end, result.end) if cluster else result.end
        cluster.append(result)
    if cluster:
        merged.append(_merge(cluster))
    return merged


def _merge(cluster: list):
    best = max(cluster, key=lambda r: (r.end - r.start, r.score))
    return RecognizerResult(best.entity_type, min(r.start for r in cluster), max(r.end for r in cluster), best.score)
