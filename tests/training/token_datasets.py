"""A tiny versioned token dataset whose next token is always easy to predict, for the training tests."""
from __future__ import annotations

import numpy as np

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns

VOCAB = 256


def pattern_tokens(sample: int, seq_len: int) -> np.ndarray:
    """Counting up from a per-sample start: the next token is always this one + 1 (easy to learn)."""
    start = (sample * 37) % VOCAB
    return ((start + np.arange(seq_len)) % VOCAB).astype(np.uint16)


def write_token_dataset(root: str, splits: dict[str, int], seq_len: int = 32, size_limit: int = 1 << 12,
                        version: int = 1, compression: str | None = None, sample_offset: int = 0) -> str:
    """A versioned dataset ``root/v=<version>`` with one MDS folder per split; returns ``root``."""
    version_dir = f"{root.rstrip('/')}/v={version}"
    for split, count in splits.items():
        with MDSWriter(f"{version_dir}/{split}", token_columns(VOCAB), compression=compression,
                       hashes=["xxh3_64"], size_limit=size_limit) as writer:
            for i in range(count):
                writer.write({"tokens": pattern_tokens(sample_offset + i, seq_len)})
    write_manifest(root, DatasetManifest(
        version=version, seq_len=seq_len, token_dtype="uint16", vocab_size=VOCAB,
        num_samples=dict(splits), num_tokens={s: n * seq_len for s, n in splits.items()}, splits=list(splits),
        config_hash="test", tokenizer_hash="test", seed=0,
    ))
    return root
