"""pii: find personal data and secrets with presidio and redact, mask or hash them, or drop the document.

Runs presidio-analyzer inside Spark: each Python worker builds one AnalyzerEngine (pattern
recognisers, no model, no network; see `etl.text.pii_recognizers`) and one AnonymizerEngine, and reuses
them for every Arrow batch it gets. Per entity type the config picks an action:

    redact   the value becomes a placeholder, ``<EMAIL>``
    mask     every character of the value becomes ``*``
    hash     ``<EMAIL:1f0c9a...>``, an HMAC-SHA256 of the value under a secret salt: the same value
             gets the same token in every document and every run, so counts and joins survive
    drop     the document is rejected (reason ``pii``); its text is still redacted

and ``max_density`` rejects documents whose characters are mostly PII (contact lists, dumps).
Rejected documents leave this stage redacted too, so nothing after it, not even the rejected
table, holds a raw value. The column ``pii_entities`` (entity type -> count) stays on every
document; the report gets the counts per type and action. No log line, report or error message
carries a matched value: errors name the document id and the exception type only.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import traceback
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Literal

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, MapType, StringType

from shards.config import ConfigError

from ..text.pii_entities import NER_ENTITIES, PATTERN_ENTITIES, CustomRecognizer
from ..text.pii_prefilter import PiiPrefilter
from ..worker_cache import built_once
from .base import BatchVerdicts, DocumentStage, StageContext, StageResult

Action = Literal["redact", "mask", "hash", "drop"]
ENTITIES_COLUMN = "pii_entities"
MIN_SALT_LENGTH = 16


@dataclass
class PiiParams:
    # Entity types to look for: any of PATTERN_ENTITIES, and PERSON/LOCATION/ORGANIZATION with ner_model.
    entities: list[str] = field(default_factory=lambda: list(PATTERN_ENTITIES))
    # Action per entity type; types not listed get default_action.
    actions: dict[str, Action] = field(default_factory=dict)
    default_action: Action = "redact"  # redact (<TYPE>), mask (***), hash (salted, stable), drop (reject the document)
    # presidio confidence a match needs. Weak patterns (a bare 9-digit number as an SSN) only reach
    # it with a context word nearby ("SSN", "social security").
    score_threshold: float = 0.4
    # Reject a document when more than this share of its characters are PII; null: never.
    max_density: float | None = None
    # Regions whose national phone formats are recognised; numbers written with +CC are found whatever the region.
    phone_regions: list[str] = field(default_factory=lambda: ["US", "GB", "DE", "FR", "IN"])
    # An installed spaCy pipeline (package name or folder) for PERSON/LOCATION/ORGANIZATION. Never downloaded.
    ner_model: str | None = None
    # Extra recognisers: regular expressions plus context words.
    recognizers: list[CustomRecognizer] = field(default_factory=list)
    # Environment variable holding the salt of the `hash` action (at least 16 characters).
    hash_salt_env: str = "KILN_PII_SALT"
    # Skip presidio for documents no enabled pattern recogniser can match in (a cheap regex pass, same
    # output; etl/text/pii_prefilter.py). Off by itself when NER entities are enabled.
    prefilter: bool = True

    def __post_init__(self):
        custom = {r.entity for r in self.recognizers}
        known = set(PATTERN_ENTITIES) | set(NER_ENTITIES)
        for entity in self.entities:
            if entity not in known:
                raise ValueError(f"entities: unknown entity type {entity!r}; known: {', '.join(sorted(known))} "
                                 "(declare other types under recognizers)")
        ner = [e for e in self.entities if e in NER_ENTITIES]
        if ner and not self.ner_model:
            raise ValueError(f"entities {ner} need a spaCy NER model: set ner_model")
        for entity in self.actions:
            if entity not in self.entity_types:
                raise ValueError(f"actions: {entity!r} is not among the entities looked for ({', '.join(self.entity_types)})")
        if custom & known:
            raise ValueError(f"recognizers: {sorted(custom & known)} are built-in entity types; pick another name")
        if not 0.0 < self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in (0, 1], got {self.score_threshold}")
        if self.max_density is not None and not 0.0 < self.max_density <= 1.0:
            raise ValueError(f"max_density must be in (0, 1], got {self.max_density}")
        import phonenumbers

        unknown_regions = sorted(set(self.phone_regions) - phonenumbers.SUPPORTED_REGIONS)
        if unknown_regions:
            raise ValueError(f"phone_regions: unknown region codes {unknown_regions} (use ISO 3166 codes such as US, GB)")

    @property
    def entity_types(self) -> list[str]:
        return list(self.entities) + [r.entity for r in self.recognizers if r.entity not in self.entities]

    def action(self, entity: str) -> Action:
        return self.actions.get(entity, self.default_action)


class PiiRedactor:
    """presidio analysis plus the configured action per entity type, for one configuration."""

    def __init__(self, params: PiiParams, salt: bytes | None):
        # presidio and spaCy take seconds to import: only the workers that redact load them, and
        # pii_recognizers first, which imports presidio without torch (etl/text/torch_hidden.py).
        from ..text.pii_recognizers import build_analyzer
        from presidio_analyzer import BatchAnalyzerEngine  # pylint: disable=wrong-import-order
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        self.params = params
        analyzer = build_analyzer(
            params.entities, params.phone_regions, params.recognizers, params.ner_model, params.score_threshold
        )
        self.batch_analyzer = BatchAnalyzerEngine(analyzer)
        self.anonymizer = AnonymizerEngine()
        self.operators = {}
        for entity in params.entity_types:
            action = params.action(entity)
            if action == "mask":
                config = OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 1 << 30, "from_end": False})
            elif action == "hash":
                config = OperatorConfig("custom", {"lambda": _hasher(entity, salt)})
            else:  # redact, and drop (a dropped document's text is redacted on its way to the rejected table)
                config = OperatorConfig("replace", {"new_value": f"<{entity}>"})
            self.operators[entity] = config
        self.dropping = {e for e in params.entity_types if params.action(e) == "drop"}
        ner = any(e in NER_ENTITIES for e in params.entities)
        recognizers = analyzer.registry.recognizers
        self.prefilter = PiiPrefilter.for_recognizers(recognizers) if params.prefilter and not ner else None

    def find(self, texts: list[str]) -> list[list]:
        """presidio's matches per text, overlaps resolved: the spans the stage acts on. With the
        pre-filter, presidio looks in each text only for the entity types that can match there, and
        not at all in texts where none can (it would find nothing more)."""
        from ..text.pii_recognizers import resolve_overlaps  # presidio, loaded with the analyzer (see __init__)

        if self.prefilter is None:
            found = self.batch_analyzer.analyze_iterator(texts, language="en", batch_size=64, entities=self.params.entity_types)
            return [resolve_overlaps(results) for results in found]
        analyzer = self.batch_analyzer.analyzer_engine
        out = []
        for text in texts:
            possible = self.prefilter.possible_entities(text)
            out.append(resolve_overlaps(analyzer.analyze(text, language="en", entities=possible)) if possible else [])
        return out

    def process(self, texts: list[str]) -> list[tuple[str, dict[str, int], str | None, str | None]]:
        """(new text, entity counts, reason, detail) per text."""
        return [self._apply(text, found) for text, found in zip(texts, self.find(texts))]

    def _apply(self, text: str, found: list) -> tuple[str, dict[str, int], str | None, str | None]:
        if not found:
            return text, {}, None, None
        density = sum(r.end - r.start for r in found) / len(text)
        anonymized = self.anonymizer.anonymize(text=text, analyzer_results=found, operators=self.operators)
        counts: dict[str, int] = {}
        for result in found:
            counts[result.entity_type] = counts.get(result.entity_type, 0) + 1
        reason = detail = None
        dropped = sorted(self.dropping & counts.keys())
        if dropped:
            reason, detail = "pii", "contains " + ", ".join(dropped)
        elif self.params.max_density is not None and density > self.params.max_density:
            reason, detail = "pii_density", f"{density:.3f} of characters are PII > max_density {self.params.max_density}"
        return anonymized.text, counts, reason, detail


def _hasher(entity: str, salt: bytes):
    def token(value: str) -> str:
        digest = hmac.new(salt, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
        return f"<{entity}:{digest}>"

    return token


def _redactor(params: PiiParams, salt: bytes | None) -> PiiRedactor:
    """One analyzer and anonymizer per Python worker and configuration, reused across batches and tasks."""
    key = json.dumps(asdict(params), sort_keys=True) + hashlib.sha256(salt or b"").hexdigest()
    return built_once(("pii", key), lambda: PiiRedactor(params, salt))


def _safe_error(doc_ids: list[str], err: Exception) -> RuntimeError:
    """An error that names where it failed but carries no text: exception messages may quote the value."""
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return RuntimeError(
        f"pii: analysing a batch of {len(doc_ids)} documents (first id {doc_ids[0]!r}) failed with "
        f"{type(err).__name__} at {os.path.basename(frame.filename)}:{frame.lineno}; the message is withheld "
        "because it may quote personal data"
    )


def _redact_batch(params: PiiParams, salt: bytes | None, batch: pa.RecordBatch) -> BatchVerdicts:
    texts = [t or "" for t in batch.column("text").to_pylist()]
    try:
        processed = _redactor(params, salt).process(texts)
    except Exception as err:  # noqa: BLE001 - re-raised without the message, see _safe_error
        raise _safe_error(batch.column("id").to_pylist(), err) from None
    new_texts, counts, reasons, details = (list(x) for x in zip(*processed)) if processed else ([], [], [], [])
    return BatchVerdicts(reasons, details, {ENTITIES_COLUMN: [list(c.items()) for c in counts]}, texts=new_texts)


def hash_salt(params: PiiParams) -> bytes | None:
    """The salt for `hash` actions, from the environment; an error when one is needed and missing."""
    if "hash" not in {params.action(e) for e in params.entity_types}:
        return None
    salt = os.environ.get(params.hash_salt_env, "")
    if len(salt) < MIN_SALT_LENGTH:
        raise ValueError(
            f"pii: the 'hash' action needs a secret salt of at least {MIN_SALT_LENGTH} characters in the "
            f"environment variable {params.hash_salt_env} (set, it is {len(salt)} characters)"
            if salt else
            f"pii: the 'hash' action needs a secret salt in the environment variable {params.hash_salt_env}"
        )
    return salt.encode("utf-8")


class Pii(DocumentStage[PiiParams]):
    name = "pii"
    Params = PiiParams
    handles_pii = True
    columns = {ENTITIES_COLUMN: MapType(StringType(), IntegerType())}

    def check(self, where: str, config, stage_names: list[str]) -> None:
        """A `hash` action without its salt fails when the config is loaded, not after the stages before."""
        try:
            hash_salt(self.params)
        except ValueError as err:
            raise ConfigError(f"{where}.hash_salt_env: {err}") from None

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        redacted = self.annotate(docs, partial(_redact_batch, self.params, hash_salt(self.params)))
        return StageResult(redacted, metrics=partial(pii_metrics, params=self.params))


def pii_metrics(annotated: DataFrame, params: PiiParams) -> dict:
    """Entities found per type (with the action taken) and documents touched; counts only, never values."""
    by_type = {
        row["key"]: int(row["n"])
        for row in annotated.select(F.explode(ENTITIES_COLUMN)).groupBy("key").agg(F.sum("value").alias("n")).collect()
    }
    documents = annotated.filter(F.size(ENTITIES_COLUMN) > 0).count()
    by_action: dict[str, int] = {}
    for entity, n in by_type.items():
        by_action[params.action(entity)] = by_action.get(params.action(entity), 0) + n
    return {
        "entities": {e: {"action": params.action(e), "count": n} for e, n in sorted(by_type.items())},
        "by_action": dict(sorted(by_action.items())),
        "documents_with_pii": documents,
    }
