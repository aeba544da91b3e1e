"""The datasets a run reads: one split of one dataset, pinned to a version, and the columns its samples hold.

A dataset path is either a versioned dataset root (``<root>/v=N/<split>/`` with a manifest, see
shards.manifest), whose newest complete version is taken unless one is configured, or a plain MDS
folder without versions.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass

import numpy as np

from shards import storage
from shards.manifest import (MANIFEST_BASENAME, dataset_fingerprint, read_manifest, resolve_version, split_path,
                             version_path)
from shards.mds import INDEX_BASENAME, TOKENS_COLUMN, MDSReader

SEQUENCE_IDS_COLUMN = "sequence_ids"  # optional: one document id per token, for packed samples
LABELS_COLUMN = "labels"  # optional: the target of each position (IGNORE_INDEX: no loss), for instruction data
IGNORE_INDEX = -100  # the label of a position that carries no loss
EXCLUDED = "excluded"  # the batch key of data.exclude_docs' mask: true at excluded documents' tokens
TOKEN_SOURCES = "token_sources"  # the batch key of eval.loss_by_source: each token's source number


@dataclass(frozen=True)
class Source:
    """One split of one dataset, pinned to a version: what a run records about its data."""

    path: str  # as configured
    split: str
    url: str  # the split's MDS folder
    version: int | None  # None for a plain MDS folder without a manifest
    fingerprint: str | None
    num_samples: int
    seq_len: int
    vocab_size: int | None
    proportion: float = 1.0
    eos_token_id: int | None = None  # the token that ends each document (the manifest's extra.eos_token_id)
    # Derive sequence_ids from eos_token_id when the shards have none (model.attn_uses_sequence_id).
    document_ids: bool = False
    # One source of a dataset the ETL packed by source: its name, its number in the file of each sample's source
    # number (sources/<split>.npy, named by the manifest's extra.sources) and its sample count. Sample indices
    # stay the whole split's.
    source: str | None = None
    source_number: int | None = None
    source_samples: int | None = None
    source_file: str | None = None
    source_file_sha256: str | None = None

    @property
    def drawable(self) -> int:
        """Samples the order draws from: the source's, or the whole split's."""
        return self.num_samples if self.source is None else self.source_samples

    def members(self) -> np.ndarray | None:
        """Indices of the source's samples in the split, ascending; None for the whole split."""
        if self.source is None:
            return None
        data = storage.read_bytes(self.source_file)
        if hashlib.sha256(data).hexdigest() != self.source_file_sha256:
            raise ValueError(f"{self.source_file} is not the file the dataset's manifest names (its sha256 differs)")
        numbers = np.load(io.BytesIO(data))
        if len(numbers) != self.num_samples:
            raise ValueError(f"{self.source_file} lists {len(numbers)} samples; the split holds {self.num_samples}")
        return np.flatnonzero(numbers == self.source_number)

    def describe(self) -> dict:
        described = {"path": self.path, "split": self.split, "version": self.version, "fingerprint": self.fingerprint,
                     "num_samples": self.num_samples, "seq_len": self.seq_len, "proportion": self.proportion}
        return described if self.source is None else {**described, "source": self.source}


def resolve_source(path: str, split: str, version: int | None = None, proportion: float = 1.0,
                   source: str | None = None) -> Source:
    """Find the MDS folder for ``split`` of the dataset at ``path`` and pin its version; with ``source``, only
    that source's samples (a dataset packed by source)."""
    path = path.rstrip("/")
    if storage.exists(storage.join(path, INDEX_BASENAME)):
        if source is not None:
            raise ValueError(f"{path} is a plain MDS folder (no {MANIFEST_BASENAME}); it has no sources to pick "
                             f"{source!r} from")
        if version is not None:
            raise ValueError(f"{path} is a plain MDS folder (no {MANIFEST_BASENAME}); it has no version {version}")
        reader = MDSReader(path)
        if len(reader) == 0:
            raise ValueError(f"{path} holds no samples")
        seq_len = len(reader[0][TOKENS_COLUMN])
        return Source(path, split, path, None, None, len(reader), seq_len, None, proportion)
    version_dir = version_path(path, version) if version is not None else resolve_version(path)
    manifest = read_manifest(version_dir)
    if split not in manifest.splits:
        raise ValueError(f"{version_dir} has no split {split!r}; its splits are {manifest.splits}")
    if manifest.num_samples[split] == 0:
        raise ValueError(f"{version_dir}: split {split!r} holds no samples")
    found = Source(path, split, split_path(version_dir, split), manifest.version, dataset_fingerprint(manifest),
                   manifest.num_samples[split], manifest.seq_len, manifest.vocab_size, proportion,
                   manifest.extra.get("eos_token_id"))
    return found if source is None else _one_source(found, manifest.extra.get("sources"), source, version_dir)


def _one_source(whole: Source, packed: dict | None, source: str, version_dir: str) -> Source:
    """``whole`` narrowed to ``source``, from the manifest's extra.sources (etl shuffle_and_write)."""
    if packed is None:
        raise ValueError(f"{version_dir} packs several sources into each sample, so it cannot be mixed by source "
                         f"({source!r}); build it with pack_by_source: true in the ETL's tokenize stage")
    if source not in packed["names"]:
        raise ValueError(f"{version_dir} has no source {source!r}; its sources are {packed['names']}")
    samples = packed["samples"][whole.split][source]["after"]
    if samples == 0:
        raise ValueError(f"{version_dir}: source {source!r} has no samples in split {whole.split!r}")
    return dataclasses.replace(whole, source=source, source_number=packed["names"].index(source),
                               source_samples=samples,
                               source_file=storage.join(version_dir, packed["files"][whole.split]),
                               source_file_sha256=packed["sha256"][whole.split])


def with_document_ids(sources: list[Source]) -> list[Source]:
    """The sources, read with one sequence id per document (model.attn_uses_sequence_id): a ``sequence_ids``
    column where the shards have one, else derived from the EOS token the ETL ended each document with."""
    for s in sources:
        if s.eos_token_id is None and SEQUENCE_IDS_COLUMN not in MDSReader(s.url).columns:
            raise ValueError(
                f"model.attn_uses_sequence_id: {s.path} has no {SEQUENCE_IDS_COLUMN!r} column and no EOS token id "
                "(its manifest's extra.eos_token_id, written by the ETL), so its documents cannot be told apart"
            )
    return [dataclasses.replace(s, document_ids=True) for s in sources]


def check_sources(sources: list[Source]) -> int:
    """All datasets of a mixture must have one sample length (they are stacked); returns it."""
    lengths = {s.seq_len for s in sources}
    if len(lengths) != 1:
        raise ValueError(f"datasets have different sample lengths: {[(s.path, s.seq_len) for s in sources]}")
    return lengths.pop()

