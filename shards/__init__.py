"""The data contract between ETL (Spark) and training (torch): MDS shards and dataset manifests.

Imports neither torch nor Spark; needs only numpy, xxhash, zstandard and fsspec.
"""
from shards import storage
from shards.encodings import EncodingError, get_encoding
from shards.manifest import (
    MANIFEST_BASENAME,
    DatasetManifest,
    dataset_fingerprint,
    latest_version,
    list_versions,
    next_version,
    read_manifest,
    resolve_version,
    split_path,
    utc_now,
    version_path,
    write_manifest,
)
from shards.mds import (
    DEFAULT_SIZE_LIMIT,
    INDEX_BASENAME,
    TOKENS_COLUMN,
    MDSReader,
    MDSWriter,
    ShardBlob,
    ShardCorruptError,
    encode_shard,
    merge_index,
    read_index,
    shard_basename,
    token_columns,
    token_dtype_for_vocab,
)

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "INDEX_BASENAME",
    "MANIFEST_BASENAME",
    "TOKENS_COLUMN",
    "DatasetManifest",
    "EncodingError",
    "MDSReader",
    "MDSWriter",
    "ShardBlob",
    "ShardCorruptError",
    "dataset_fingerprint",
    "encode_shard",
    "get_encoding",
    "latest_version",
    "list_versions",
    "merge_index",
    "next_version",
    "read_index",
    "read_manifest",
    "resolve_version",
    "shard_basename",
    "split_path",
    "storage",
    "token_columns",
    "token_dtype_for_vocab",
    "utc_now",
    "version_path",
    "write_manifest",
]
