"""Remote shards (s3://, gs://, ...) on local disk: downloaded with retries and backoff, verified against
the index's hashes, written atomically, evicted least-recently-used past a size limit.

Nothing is put in shared memory; the only files besides shards are empty flock(2) lock files, which a
crashed process releases by dying.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass

from shards import storage
from shards.mds import INDEX_BASENAME, ShardCorruptError, hash_hex, parse_compression

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheSettings:
    """How a rank's loader caches remote shards (the data.cache_* and prefetch settings)."""

    root: str
    limit_bytes: int
    retries: int = 5
    verify_hashes: bool = True
    prefetch_shards: int = 4


class ShardCache:
    """Remote shards on local disk, shared by every process of the machine.

    A shard is downloaded (retrying with exponential backoff), checked against its index entry
    (size and hashes), decompressed, and renamed into place: readers see the whole file or none.
    One process downloads a given shard while others wait on its flock. Past ``limit_bytes`` the
    least recently used shards are deleted (a process that still maps one keeps reading it).
    """

    def __init__(self, root: str, limit_bytes: int, retries: int = 5, verify_hashes: bool = True,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        self.root = root
        self.limit_bytes = int(limit_bytes)
        self.retries, self.verify_hashes = retries, verify_hashes
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        os.makedirs(root, exist_ok=True)
        self.remove_stale_partials()

    def folder_for(self, url: str) -> str:
        """The cache folder of one remote MDS folder (what MDSReader gets as cache_dir)."""
        return os.path.join(self.root, hashlib.sha1(url.rstrip("/").encode()).hexdigest()[:16])

    def ensure(self, url: str, entry: dict) -> str:
        """The local path of the shard ``entry`` of the MDS folder ``url``, downloading it if needed."""
        folder = self.folder_for(url)
        basename = entry["raw_data"]["basename"]
        local = os.path.join(folder, basename)
        if self._present(local, entry):
            return local
        lock_path = os.path.join(folder, ".locks", basename.replace("/", "__") + ".lock")
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
            if not self._present(local, entry):
                raw = self._download(storage.join(url, (entry["zip_data"] or entry["raw_data"])["basename"]), entry)
                storage.atomic_write_bytes(local, raw)
                self.evict(keep={local})
        return local

    @staticmethod
    def _present(local: str, entry: dict) -> bool:
        try:
            if os.path.getsize(local) != entry["raw_data"]["bytes"]:
                return False
            os.utime(local)  # mark as recently used
            return True
        except FileNotFoundError:
            return False

    def _download(self, url: str, entry: dict) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                return self._unpack(storage.read_bytes(url), entry, url)
            except FileNotFoundError:
                raise FileNotFoundError(f"shard {url} is listed in {INDEX_BASENAME} but missing") from None
            except Exception as err:  # network errors, throttling, a torn or corrupt download
                if attempt == self.retries:
                    raise RuntimeError(f"could not download {url} after {attempt + 1} attempts: {err}") from err
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random())
                log.warning("download of %s failed (%s); retrying in %.1fs", url, err, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _unpack(self, stored: bytes, entry: dict, url: str) -> bytes:
        if entry["zip_data"] is not None:
            self._check(stored, entry["zip_data"], url)
            stored = parse_compression(entry["compression"]).decompress(stored)
        self._check(stored, entry["raw_data"], url)
        return stored

    def _check(self, data: bytes, info: dict, url: str) -> None:
        if len(data) != info["bytes"]:
            raise ShardCorruptError(f"{url}: got {len(data)} bytes, index.json lists {info['bytes']}")
        if self.verify_hashes:
            for name, expected in sorted(info.get("hashes", {}).items()):
                if hash_hex(name, data) != expected:
                    raise ShardCorruptError(f"{url}: {name} does not match index.json")

    def _shard_files(self) -> list[tuple[float, int, str]]:
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != ".locks"]
            for name in files:
                if name.startswith("."):
                    continue  # partial downloads
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue
                found.append((info.st_mtime, info.st_size, path))
        return found

    def evict(self, keep: set[str] = frozenset()) -> None:
        """Delete least recently used shards until the cache fits its limit."""
        files = sorted(self._shard_files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= self.limit_bytes:
                break
            if path in keep:
                continue
            try:
                os.remove(path)
                total -= size
            except FileNotFoundError:
                pass

    def remove_stale_partials(self) -> None:
        """Delete partial downloads left by processes that died (storage.atomic_write_bytes names them
        ``.<name>.tmp-<pid>-<random>``)."""
        for folder, dirs, files in os.walk(self.root):
            for name in files:
                if ".tmp-" not in name or not name.startswith("."):
                    continue
                pid = name.rsplit(".tmp-", 1)[1].split("-")[0]
                if pid.isdigit() and not _process_alive(int(pid)):
                    try:
                        os.remove(os.path.join(folder, name))
                    except FileNotFoundError:
                        pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def default_cache_root() -> str:
    return os.path.join(tempfile.gettempdir(), "kiln-shard-cache")

