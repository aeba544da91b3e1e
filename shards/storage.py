"""Small fsspec helpers shared by the ETL (writer) and training (reader) sides.

Every location is a URL string: a local path, ``file://...``, ``s3://...``, ``memory://...`` or
anything else fsspec knows. Credentials and endpoints come from the standard environment
variables that s3fs/botocore read (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ...); s3fs 2025.9 honours ``AWS_ENDPOINT_URL``
through botocore, so a local S3-compatible server needs no code here.
"""
from __future__ import annotations

import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

_TMP_MARK = ".tmp-"  # in the name of atomic_write_bytes's temporary files


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it (fsspec caches the instances)."""
    return fsspec.core.url_to_fs(url)


def is_local(url: str) -> bool:
    fs, _ = open_fs(url)
    return isinstance(fs, LocalFileSystem)


def join(url: str, *parts: str) -> str:
    """Join path parts with ``/`` (valid for local POSIX paths and for object-store URLs)."""
    pieces = [url.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
    return "/".join(pieces)


def exists(url: str) -> bool:
    fs, path = open_fs(url)
    fs.invalidate_cache(path)  # s3fs caches listings; another process may have written since
    return fs.exists(path)


def read_bytes(url: str) -> bytes:
    fs, path = open_fs(url)
    return fs.cat_file(path)


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` so that readers see either no file or the whole file.

    Locally: write a temporary file in the same folder, fsync it, then rename over the target.
    On object stores a single PUT of the final key is already atomic.
    """
    fs, path = open_fs(url)
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_partial_writes(url: str) -> list[str]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, a lost executor) left in folder
    ``url`` (local only: object-store writes leave none); returns their names."""
    if not is_local(url):
        return []
    fs, path = open_fs(url)
    left = [name for name in list_names(url) if name.startswith(".") and _TMP_MARK in name]
    for name in left:
        fs.rm(f"{path.rstrip('/')}/{name}")
    return left


def list_names(url: str) -> list[str]:
    """Names of the direct children of folder ``url`` (empty when it does not exist)."""
    fs, path = open_fs(url)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def list_files(url: str) -> set[str]:
    """Paths of every file under folder ``url``, relative to it, with ``/`` separators."""
    fs, path = open_fs(url)
    root = path.rstrip("/")
    fs.invalidate_cache(root)
    found = set()
    for p in fs.find(root):
        rel = p[len(root):].lstrip("/") if p.startswith(root) else p
        found.add(rel)
    return found
