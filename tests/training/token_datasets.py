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


EOS = 0  # the EOS of traced datasets; no other token of theirs is 0


def write_traced_dataset(root: str, documents: dict[str, np.ndarray], seq_len: int = 16, num_buckets: int = 2,
                         seed: int = 0) -> str:
    """A dataset as the ETL's tokenize and shuffle_and_write stages build one, without Spark: each document
    (tokens, then EOS) goes to bucket ``number % num_buckets``, a bucket's stream is cut into samples of
    ``seq_len`` tokens (its partial last one dropped), samples are written in a shuffled order with their
    ``bucket`` and ``bucket_index``, and the provenance table ``<root>-etl/tokenize/provenance`` (Delta, written
    with deltalake), which the manifest names, maps each sample's tokens back to documents. Returns ``root``."""
    import deltalake
    import pyarrow as pa

    streams: list[list[int]] = [[] for _ in range(num_buckets)]
    provenance = []
    for number, (doc_id, tokens) in enumerate(documents.items()):
        assert EOS not in tokens, f"{doc_id} holds the EOS token"
        stream, doc = streams[number % num_buckets], [*map(int, tokens), EOS]
        start = len(stream)
        for offset in range(len(doc)):
            sample, at = divmod(start + offset, seq_len)
            if offset == 0 or at == 0:  # a new segment: the document's start, or the next sample
                provenance.append({"split": "train", "bucket": number % num_buckets, "sample_index": sample,
                                   "sample_offset": at, "doc_id": doc_id, "source": doc_id.split("/")[0],
                                   "doc_offset": offset, "length": 0, "doc_tokens": len(doc)})
            provenance[-1]["length"] += 1
        stream.extend(doc)
    samples = [(bucket, index, np.array(stream[index * seq_len:(index + 1) * seq_len], np.uint16))
               for bucket, stream in enumerate(streams) for index in range(len(stream) // seq_len)]
    for row in provenance:
        row["kept"] = row["sample_index"] < len(streams[row["bucket"]]) // seq_len
    table = f"{root.rstrip('/')}-etl/tokenize/provenance"
    deltalake.write_deltalake(table, pa.Table.from_pylist(provenance))
    columns = {**token_columns(VOCAB), "bucket": "uint32", "bucket_index": "uint32"}
    with MDSWriter(f"{root}/v=1/train", columns, hashes=["xxh3_64"], size_limit=1 << 11) as writer:
        for i in np.random.default_rng(seed).permutation(len(samples)):
            bucket, index, tokens = samples[i]
            writer.write({"tokens": tokens, "bucket": bucket, "bucket_index": index})
    write_manifest(root, DatasetManifest(
        version=1, seq_len=seq_len, token_dtype="uint16", vocab_size=VOCAB, num_samples={"train": len(samples)},
        num_tokens={"train": len(samples) * seq_len}, splits=["train"], config_hash="test", tokenizer_hash="test",
        seed=seed, source_tables=[{"path": table, "delta_version": 0}], extra={"eos_token_id": EOS},
    ))
    return root
