"""The datasets a run reads: one split of one dataset, pinned to a version, and the columns its samples hold.

A dataset path is either a versioned dataset root (``<root>/v=N/<split>/`` with a manifest, see
shards.manifest), whose newest complete version is taken unless one is configured, or a plain MDS
folder without versions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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

    def describe(self) -> dict:
        return {"path": self.path, "split": self.split, "version": self.version, "fingerprint": self.fingerprint,
                "num_samples": self.num_samples, "seq_len": self.seq_len, "proportion": self.proportion}


def resolve_source(path: str, split: str, version: int | None = None, proportion: float = 1.0) -> Source:
    """Find the MDS folder for ``split`` of the dataset at ``path`` and pin its version."""
    path = path.rstrip("/")
    if storage.exists(storage.join(path, INDEX_BASENAME)):
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
    return Source(path, split, split_path(version_dir, split), manifest.version, dataset_fingerprint(manifest),
                  manifest.num_samples[split], manifest.seq_len, manifest.vocab_size, proportion,
                  manifest.extra.get("eos_token_id"))


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

