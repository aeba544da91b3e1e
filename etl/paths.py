"""Path helpers every part of the ETL shares; a leaf module (it imports nothing of Kiln), so any
module may use it without tying an import circle.

Spark and fsspec name the same object store differently (``s3a://`` and ``s3://``); the pipeline
keeps the config's spelling and converts at the boundary with these two functions.
"""
from __future__ import annotations

import re

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")

# The compressed files Kiln reads, by suffix (etl.ingest.decompressed opens them).
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")


def to_fsspec_url(path: str) -> str:
    """Spark says s3a://, fsspec says s3://: the same object store."""
    return "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path


def to_spark_path(path: str) -> str:
    """The inverse of ``to_fsspec_url``: what Spark's Hadoop filesystems read."""
    return "s3a://" + path[len("s3://"):] if path.startswith("s3://") else path


def join_path(root: str, *parts: str) -> str:
    """``root/part/...`` for local paths and URLs alike (os.path.join would mangle ``s3://``)."""
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


def is_url(path: str) -> bool:
    """A URL (s3a://, dbfs:/, file:/...) rather than a path on this machine."""
    return bool(_URL_SCHEME.match(path))


def local_fs_path(path: str) -> str | None:
    """The path on this machine that ``path`` names (a plain path or a file: URL), else None."""
    if path.startswith("file:"):
        return "/" + path.removeprefix("file:").lstrip("/")
    return None if is_url(path) else path
