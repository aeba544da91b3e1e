"""Versioned dataset folders and their manifest: what ETL publishes and training trusts.

Layout (local path or fsspec URL)::

    <root>/v=1/manifest.json          written last: its presence marks the version complete
    <root>/v=1/train/index.json       one MDS dataset per split
    <root>/v=1/train/shard.00000.mds
    <root>/v=1/val/...
    <root>/v=2/...

A version folder is immutable once its manifest exists; a build with new content writes
``v=N+1``, and a build with the same content as the newest version publishes nothing.

Manifest formats: 1 (no ``format`` key; written before content hashes) and 2 (``format: 2`` and
``content_hash``). Each keeps its own fingerprint rule, so checkpoints taken on a format-1 version
keep resuming on it.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shards import storage
from shards.encodings import NDARRAY_DTYPE_CODES
from shards.mds import INDEX_BASENAME, read_index

MANIFEST_BASENAME = "manifest.json"
_VERSION_FOLDER = re.compile(r"^v=(\d+)$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

MANIFEST_FORMAT = 2  # what new manifests are written as
# Fields that describe where and when a dataset was written rather than what it contains. Format 2
# also leaves out source_tables: their Delta versions move on every run, the content need not.
_NOT_FINGERPRINTED = {1: ("version", "created_at", "extra"), 2: ("version", "created_at", "extra", "source_tables")}
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string, the format of ``created_at``."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class DatasetManifest:
    """Everything training needs to know about one dataset version, stored as manifest.json."""

    version: int
    seq_len: int
    token_dtype: str
    vocab_size: int
    num_samples: dict[str, int]
    num_tokens: dict[str, int]
    splits: list[str]
    config_hash: str
    tokenizer_hash: str
    seed: int
    # Each {"path": str, "delta_version": int}: the Delta snapshots read (informational from format 2).
    source_tables: list[dict] = field(default_factory=list)
    dropped_tail_tokens: int = 0
    created_at: str = field(default_factory=utc_now)
    extra: dict = field(default_factory=dict)  # free-form; not part of the fingerprint
    # 1: a manifest written before content hashes, stored without this key and without content_hash.
    format: int = 1
    content_hash: str | None = None  # format 2: see `content_hash`; what the fingerprint pins the shards by

    def __post_init__(self) -> None:
        for name in ("version", "seq_len", "vocab_size", "seed", "dropped_tail_tokens", "format"):
            _require_int(name, getattr(self, name))
        _require(self.version >= 1, f"version must be >= 1, got {self.version}")
        _require(self.seq_len >= 1, f"seq_len must be >= 1, got {self.seq_len}")
        _require(self.dropped_tail_tokens >= 0, f"dropped_tail_tokens must be >= 0, got {self.dropped_tail_tokens}")
        _require(
            isinstance(self.token_dtype, str) and self.token_dtype in NDARRAY_DTYPE_CODES
            and np.dtype(self.token_dtype).kind in "iu",
            f"token_dtype must be an integer dtype name such as 'uint16', got {self.token_dtype!r}",
        )
        _require(self.vocab_size >= 1, f"vocab_size must be >= 1, got {self.vocab_size}")
        _require(
            self.vocab_size - 1 <= np.iinfo(self.token_dtype).max,
            f"vocab_size {self.vocab_size} does not fit token_dtype {self.token_dtype}",
        )
        _require(isinstance(self.created_at, str) and _is_iso_time(self.created_at),
                 f"created_at must be an ISO 8601 time string, got {self.created_at!r}")
        _require(isinstance(self.splits, list) and self.splits, f"splits must be a non-empty list, got {self.splits!r}")
        for split in self.splits:
            _require(isinstance(split, str) and _SPLIT_NAME.match(split) is not None,
                     f"split name {split!r} must be a plain folder name (letters, digits, _ . -)")
        _require(len(set(self.splits)) == len(self.splits), f"splits {self.splits} list a name twice")
        for name in ("num_samples", "num_tokens"):
            counts = getattr(self, name)
            _require(isinstance(counts, dict) and set(counts) == set(self.splits),
                     f"{name} must have one count per split {self.splits}, got {counts!r}")
            for split, count in counts.items():
                _require_int(f"{name}[{split!r}]", count)
                _require(count >= 0, f"{name}[{split!r}] must be >= 0, got {count}")
        _require(isinstance(self.source_tables, list), f"source_tables must be a list, got {self.source_tables!r}")
        for i, table in enumerate(self.source_tables):
            _require(isinstance(table, dict) and set(table) == {"path", "delta_version"},
                     f"source_tables[{i}] must be {{'path': str, 'delta_version': int}}, got {table!r}")
            _require(isinstance(table["path"], str), f"source_tables[{i}].path must be a string")
            _require_int(f"source_tables[{i}].delta_version", table["delta_version"])
        for name in ("config_hash", "tokenizer_hash"):
            _require(isinstance(getattr(self, name), str), f"{name} must be a string, got {getattr(self, name)!r}")
        _require(isinstance(self.extra, dict), f"extra must be a dict, got {self.extra!r}")
        _require(self.format in _NOT_FINGERPRINTED, f"format must be one of {sorted(_NOT_FINGERPRINTED)}, got {self.format!r}")
        if self.format == 1:
            _require(self.content_hash is None, "a format-1 manifest has no content_hash; write format 2")
        else:
            _require(isinstance(self.content_hash, str) and _SHA256_HEX.match(self.content_hash) is not None,
                     f"content_hash must be 64 lowercase hex digits (a sha256), got {self.content_hash!r}")

    def to_dict(self) -> dict[str, Any]:
        """Its JSON form; a format-1 manifest's is exactly what was written before formats existed."""
        data = dataclasses.asdict(self)
        if self.format == 1:
            del data["format"], data["content_hash"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DatasetManifest":
        if not isinstance(data, dict):
            raise ValueError(f"a manifest must be a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"manifest has unknown keys {unknown}; known: {', '.join(sorted(fields))}")
        missing = [name for name, f in fields.items() if name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"manifest lacks required keys {missing}")
        return cls(**data)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"DatasetManifest: {message}")


def _require_int(name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an int, got {value!r}")


def _is_iso_time(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- layout

def version_path(root: str, version: int) -> str:
    """``<root>/v=<version>``."""
    _require_int("version", version)
    return storage.join(root, f"v={version}")


def split_path(version_dir: str, split: str) -> str:
    """``<version_dir>/<split>``: the MDS dataset folder of one split (open it with MDSReader)."""
    return storage.join(version_dir, split)


def _is_complete(version_dir: str) -> bool:
    manifest_url = storage.join(version_dir, MANIFEST_BASENAME)
    if not storage.exists(manifest_url):
        return False
    manifest = _load_manifest(manifest_url)
    return all(storage.exists(storage.join(version_dir, split, INDEX_BASENAME)) for split in manifest.splits)


def list_versions(root: str, include_incomplete: bool = False) -> list[int]:
    """Version numbers under ``root``, ascending; complete ones only unless asked otherwise.

    A version is complete when its manifest.json exists and every split it lists has an
    index.json.
    """
    found = []
    for name in storage.list_names(root):
        match = _VERSION_FOLDER.match(name)
        if match and (include_incomplete or _is_complete(storage.join(root, name))):
            found.append(int(match.group(1)))
    return sorted(found)


def latest_version(root: str) -> int | None:
    """The newest complete version, or None when there is none."""
    versions = list_versions(root)
    return versions[-1] if versions else None


def next_version(root: str) -> int:
    """The number a new build should use: one past every folder present, complete or not,
    so a crashed build's leftovers are never written into again."""
    return max(list_versions(root, include_incomplete=True), default=0) + 1


def resolve_version(root_or_version_path: str) -> str:
    """A version folder itself, or the newest complete version under a dataset root."""
    if storage.exists(storage.join(root_or_version_path, MANIFEST_BASENAME)):
        return root_or_version_path.rstrip("/")
    latest = latest_version(root_or_version_path)
    if latest is None:
        raise FileNotFoundError(
            f"{root_or_version_path} is neither a dataset version (no {MANIFEST_BASENAME}) "
            "nor a dataset root with a complete v=N folder"
        )
    return version_path(root_or_version_path, latest)


# --------------------------------------------------------------------------- reading and writing

def _manifest_bytes(manifest: DatasetManifest) -> bytes:
    return (json.dumps(manifest.to_dict(), sort_keys=True, indent=2) + "\n").encode("utf-8")


def _load_manifest(url: str) -> DatasetManifest:
    try:
        data = json.loads(storage.read_bytes(url))
    except json.JSONDecodeError as err:
        raise ValueError(f"{url} is not valid JSON: {err}") from None
    try:
        return DatasetManifest.from_dict(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{url}: {err}") from None


def read_manifest(root_or_version_path: str) -> DatasetManifest:
    """The manifest of a version folder, or of the newest complete version under a root."""
    return _load_manifest(storage.join(resolve_version(root_or_version_path), MANIFEST_BASENAME))


def write_manifest(root: str, manifest: DatasetManifest) -> str:
    """Publish ``<root>/v=<manifest.version>/manifest.json`` (atomically); returns the version folder.

    Call it last, after every split's shards and index.json are written: it checks that each
    split's index exists and holds exactly ``num_samples[split]`` samples, and refuses to
    replace an existing manifest (versions are immutable).
    """
    version_dir = version_path(root, manifest.version)
    manifest_url = storage.join(version_dir, MANIFEST_BASENAME)
    if storage.exists(manifest_url):
        raise FileExistsError(f"{manifest_url} already exists; versions are immutable, use next_version(root)")
    for split in manifest.splits:
        try:
            index = read_index(split_path(version_dir, split))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"split {split!r}: {err}; write every split before the manifest") from None
        samples = sum(entry["samples"] for entry in index["shards"])
        if samples != manifest.num_samples[split]:
            raise ValueError(
                f"split {split!r}: index.json holds {samples} samples but the manifest says "
                f"{manifest.num_samples[split]}"
            )
    storage.atomic_write_bytes(manifest_url, _manifest_bytes(manifest))
    return version_dir


def content_hash(columns: dict[str, str], shard_sha256: dict[str, list[str]]) -> str:
    """What a format-2 manifest's ``content_hash`` is: a sha256 over the sample columns and, per
    split in order, the sha256 of each shard file in shard order. The shards hold every sample's
    bytes, so equal hashes mean equal samples in equal order."""
    canonical = json.dumps({"columns": columns, "shards": shard_sha256}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def dataset_fingerprint(manifest: DatasetManifest) -> str:
    """A stable hash of what the dataset contains, for refusing to resume on different data.

    Covers every field except ``version``, ``created_at`` and ``extra``, and from format 2 on also
    ``source_tables`` (it covers ``content_hash`` instead): the same content built again has the
    same fingerprint, whatever version number or Delta table versions it came with.
    """
    content = {k: v for k, v in manifest.to_dict().items() if k not in _NOT_FINGERPRINTED[manifest.format]}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
