"""``data.exclude_docs``: known-bad documents kept out of the loss, without rewriting a shard.

The file lists document ids, one a line, as ``etl erase --ids`` takes them (blank lines and ``#`` comments
skipped), on local disk or an object store. At every start of the ranks, rank 0 reads it and traces the ids
through each train dataset's provenance table (shards.provenance, at the Delta version its manifest names,
the table ``explain_step`` reads) to the samples ``(bucket, bucket_index)`` that hold their tokens and
where. The loader marks those tokens in every batch it reads (``excluded``), and ``model_inputs`` ignores the
labels that read or predict one. Positions and the global order do not change, so checkpoints, resume and
N->M restarts never see the list, and ids added at a restart change only the steps after it.

The traced spans are kept in the run folder (``exclude_docs.json``) with the list's hash and the datasets
they were traced in: a restart with the same list reads them there instead of scanning the table again,
and still works after ``etl erase`` vacuumed the Delta versions the run's dataset was built from.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from shards import storage
from shards.config import ConfigError
from shards.manifest import read_manifest, version_path
from shards.mds import MDSReader
from shards.provenance import KEY_COLUMNS, ProvenanceError, document_segments, provenance_table

from .sources import Source

KEY = "data.exclude_docs"
TRACED_NAME = "exclude_docs.json"  # in the run folder
SHOWN_NOT_FOUND = 10  # ids not found that the journal names (it counts them all)

SampleSpans = dict[tuple[int, int], list[tuple[int, int]]]  # (bucket, bucket_index) -> [(offset, length)]


@dataclass(frozen=True)
class ExcludeList:
    url: str
    sha256: str  # of the file's bytes: which list was in force
    ids: tuple[str, ...]  # sorted, without repeats


def read_exclude_list(url: str) -> ExcludeList:
    """The ids of the file at ``url``; a missing file or one that is not one id a line is a ConfigError."""
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise ConfigError(f"{KEY}: {url} not found") from None
    except OSError as err:
        raise ConfigError(f"{KEY}: cannot read {url}: {err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{KEY}: {url} is not UTF-8 text (one document id a line)") from None
    ids = set()
    for number, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if "/" not in value or any(c.isspace() for c in value):
            raise ConfigError(f"{KEY}: {url}:{number}: {value[:80]!r} is not a document id: the file holds one id "
                              "(<source>/...) a line; blank lines and # comments are skipped")
        ids.add(value)
    if not ids:
        raise ConfigError(f"{KEY}: {url} lists no document id")
    return ExcludeList(url, hashlib.sha256(data).hexdigest(), tuple(sorted(ids)))


def check_traceable(sources: list[Source], key: str = KEY) -> None:
    """Every dataset must be ETL-built: a manifest naming its provenance table, samples carrying their key;
    else a ConfigError naming the config ``key`` that needs it."""
    for s in sources:
        if s.version is None:
            raise ConfigError(f"{key}: {s.path} is a plain MDS folder without a manifest, so its samples cannot be "
                              "traced to documents")
        try:
            provenance_table(read_manifest(version_path(s.path, s.version)))
        except ProvenanceError as err:
            raise ConfigError(f"{key}: {s.path}: {err}") from None
        missing = [c for c in KEY_COLUMNS if c not in MDSReader(s.url).columns]
        if missing:
            raise ConfigError(f"{key}: {s.path} v={s.version}: its samples have no {missing} columns (built before "
                              "samples carried their provenance key), so they cannot be traced to documents")


@dataclass(frozen=True)
class Exclusions:
    """Where the listed documents' tokens lie in the train sources."""

    listed: ExcludeList
    spans: list[SampleSpans]  # one per train source
    not_found: tuple[str, ...]  # listed ids the train split does not hold (erased, in another split, never there)
    from_copy: bool  # read from the run folder's copy rather than traced again

    def describe(self) -> dict:
        """What the journal's ``exclude_docs`` event records."""
        ids = len(self.listed.ids)
        return {"file": self.listed.url, "sha256": self.listed.sha256, "ids": ids, "found": ids - len(self.not_found),
                "not_found": len(self.not_found), "not_found_ids": list(self.not_found[:SHOWN_NOT_FOUND]),
                "samples": sum(len(s) for s in self.spans),
                "traced_from": "the run's copy" if self.from_copy else "provenance"}


def _datasets(sources: list[Source]) -> list[list]:
    return [[s.path, s.split, s.fingerprint] for s in sources]


def trace(listed: ExcludeList, sources: list[Source], run_dir: Path) -> Exclusions:
    """The listed documents' spans in ``sources``: from the run folder's copy when it was traced from this very
    list in these very datasets, else from the provenance tables (and the copy rewritten)."""
    copy = run_dir / TRACED_NAME
    if copy.exists():
        saved = json.loads(copy.read_text())
        if saved["sha256"] == listed.sha256 and saved["datasets"] == _datasets(sources):
            spans = [{(bucket, index): [tuple(span) for span in at] for bucket, index, at in per_source}
                     for per_source in saved["spans"]]
            return Exclusions(listed, spans, tuple(saved["not_found"]), from_copy=True)
    check_traceable(sources)
    spans, found = [], set()
    for s in sources:
        per_sample: SampleSpans = {}
        for seg in document_segments(read_manifest(version_path(s.path, s.version)), s.split, listed.ids):
            per_sample.setdefault((seg.bucket, seg.sample_index), []).append((seg.sample_offset, seg.length))
            found.add(seg.doc_id)
        spans.append(per_sample)
    not_found = tuple(i for i in listed.ids if i not in found)
    storage.atomic_write_bytes(str(copy), json.dumps({
        "file": listed.url, "sha256": listed.sha256, "datasets": _datasets(sources), "not_found": list(not_found),
        "spans": [[[b, i, [list(span) for span in at]] for (b, i), at in sorted(per_source.items())]
                  for per_source in spans],
    }).encode())
    return Exclusions(listed, spans, not_found, from_copy=False)
