"""MDS v2 shards (the format of mosaicml-streaming 0.13): encode, write, index and read them.

A dataset folder holds ``index.json`` and shard files ``shard.NNNNN.mds[.zstd|.gz|.bz2]``. One
uncompressed shard file is::

    uint32 N | uint32 offsets[N + 1] | config JSON | sample 0 | ... | sample N-1

where the offsets are absolute byte positions (``offsets[N]`` is the file length) and each sample
is one uint32 length per variable-size column followed by every column's bytes, columns in sorted
name order. ``index.json`` is written last, so a dataset without it is unfinished.
"""
from __future__ import annotations

import bz2
import copy
import gzip
import hashlib
import json
import mmap
import os
import struct
import tempfile
import threading
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import xxhash
import zstandard

from shards import storage
from shards.encodings import EncodingError, get_encoding

INDEX_BASENAME = "index.json"
FORMAT = "mds"
FORMAT_VERSION = 2
DEFAULT_SIZE_LIMIT = 1 << 26
MAX_SHARD_BYTES = 1 << 32  # offsets are uint32

_ENTRY_KEYS = (
    "column_encodings", "column_names", "column_sizes", "compression", "format", "hashes",
    "raw_data", "samples", "size_limit", "version", "zip_data",
)


class ShardCorruptError(Exception):
    """A shard file whose bytes do not match its index entry (size, hash or structure)."""


# --------------------------------------------------------------------------- compression

@dataclass(frozen=True)
class Compression:
    """A parsed compression setting such as ``zstd:7``; ``name`` is what index.json records."""

    family: str
    level: int

    @property
    def name(self) -> str:
        return f"{self.family}:{self.level}"

    @property
    def extension(self) -> str:
        return self.family

    def compress(self, data: bytes) -> bytes:
        if self.family == "zstd":
            return zstandard.ZstdCompressor(level=self.level).compress(data)
        if self.family == "gz":
            return gzip.compress(data, compresslevel=self.level, mtime=0)  # mtime=0: same bytes every run
        return bz2.compress(data, self.level)

    def decompress(self, data: bytes) -> bytes:
        if self.family == "zstd":
            # A stream decompressor also accepts frames written without a content size.
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if self.family == "gz":
            return gzip.decompress(data)
        return bz2.decompress(data)


# family -> (default level, allowed levels); defaults are streaming's.
_COMPRESSIONS = {"zstd": (3, range(1, 23)), "gz": (9, range(0, 10)), "bz2": (9, range(1, 10))}


def parse_compression(text: str | None) -> Compression | None:
    """``None``, ``zstd``, ``zstd:LEVEL``, ``gz[:LEVEL]`` or ``bz2[:LEVEL]``."""
    if text is None:
        return None
    family, _, level_text = str(text).partition(":")
    if family not in _COMPRESSIONS:
        raise ValueError(
            f"compression {text!r} is not supported; use one of {', '.join(_COMPRESSIONS)} "
            "(optionally with :LEVEL), or None"
        )
    default, levels = _COMPRESSIONS[family]
    try:
        level = int(level_text) if level_text else default
    except ValueError:
        raise ValueError(f"compression {text!r}: the level must be an integer") from None
    if level not in levels:
        raise ValueError(f"compression {text!r}: {family} levels are {levels.start}..{levels.stop - 1}")
    return Compression(family, level)


# --------------------------------------------------------------------------- hashes

_HASHLIB_NAMES = frozenset(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake_"))
_XXHASH_NAMES = frozenset(xxhash.algorithms_available)
HASH_NAMES = _HASHLIB_NAMES | _XXHASH_NAMES


def check_hash_names(names: Iterable[str]) -> list[str]:
    """Validate hash algorithm names and return them sorted (index.json keeps them sorted)."""
    if isinstance(names, str):
        raise ValueError(f"hashes must be a list of names, got the string {names!r}")
    names = list(names)
    for name in names:
        if name == "xxh3":
            raise ValueError("hash 'xxh3' is not a valid name: use 'xxh3_64' or 'xxh3_128'")
        if name not in HASH_NAMES:
            raise ValueError(f"unknown hash {name!r}; known: {', '.join(sorted(HASH_NAMES))}")
    if len(set(names)) != len(names):
        raise ValueError(f"hashes {names} list a name twice")
    return sorted(names)


def hash_hex(name: str, data: bytes | memoryview) -> str:
    if name in _XXHASH_NAMES:
        return getattr(xxhash, name)(data).hexdigest()
    return hashlib.new(name, data).hexdigest()


def _file_info(basename: str, data: bytes | memoryview, hashes: Sequence[str]) -> dict:
    return {"basename": basename, "bytes": len(data), "hashes": {h: hash_hex(h, data) for h in hashes}}


def _check_file_info(data: bytes | memoryview, info: dict, where: str) -> None:
    if len(data) != info["bytes"]:
        raise ShardCorruptError(f"{where}: {len(data)} bytes, but index.json lists {info['bytes']}")
    for name, expected in sorted(info.get("hashes", {}).items()):
        actual = hash_hex(name, data)
        if actual != expected:
            raise ShardCorruptError(f"{where}: {name} is {actual}, but index.json lists {expected}")


# --------------------------------------------------------------------------- columns

class ColumnLayout:
    """The columns of one shard, in sorted name order, with their coders."""

    def __init__(self, names: Sequence[str], encodings: Sequence[str]):
        self.names = list(names)
        self.encodings = list(encodings)
        self.coders = [get_encoding(e) for e in self.encodings]
        self.sizes = [c.size for c in self.coders]
        self.num_variable = sum(size is None for size in self.sizes)
        self._lengths_format = f"<{self.num_variable}I"  # struct caches the compiled format

    @classmethod
    def from_columns(cls, columns: dict[str, str]) -> "ColumnLayout":
        """Layout for writing; refuses encodings we never write."""
        if not isinstance(columns, dict) or not columns:
            raise ValueError(f"columns must be a non-empty dict of name -> encoding, got {columns!r}")
        for name, encoding in columns.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"column names must be non-empty strings, got {name!r}")
            if encoding == "pkl":
                raise EncodingError(f"column {name!r}: the pkl encoding is never written; use json, str or bytes")
            try:
                get_encoding(encoding)
            except EncodingError as err:
                raise EncodingError(f"column {name!r}: {err}") from None
        names = sorted(columns)
        return cls(names, [columns[n] for n in names])

    @property
    def columns(self) -> dict[str, str]:
        return dict(zip(self.names, self.encodings))

    def encode_sample(self, sample: dict[str, Any]) -> bytes:
        if not isinstance(sample, dict):
            raise TypeError(f"a sample must be a dict of column -> value, got {type(sample).__name__}")
        if len(sample) != len(self.names) or any(n not in sample for n in self.names):
            missing = [n for n in self.names if n not in sample]
            extra = sorted(set(sample) - set(self.names))
            raise KeyError(f"sample columns do not match the dataset: missing {missing}, unexpected {extra}")
        lengths, parts = [], []
        for name, encoding, coder in zip(self.names, self.encodings, self.coders):
            try:
                data = coder.encode(sample[name])
            except EncodingError as err:
                raise EncodingError(f"column {name!r} ({encoding}): {err}") from None
            if coder.size is None:
                lengths.append(len(data))
            elif len(data) != coder.size:
                raise EncodingError(f"column {name!r} ({encoding}): encoded to {len(data)} bytes, expected {coder.size}")
            parts.append(data)
        return struct.pack(self._lengths_format, *lengths) + b"".join(parts)

    def decode_sample(self, buf: memoryview, begin: int, end: int) -> dict[str, Any]:
        lengths = iter(struct.unpack_from(self._lengths_format, buf, begin))
        pos = begin + 4 * self.num_variable
        sample = {}
        for name, coder, size in zip(self.names, self.coders, self.sizes):
            stop = pos + (next(lengths) if size is None else size)
            sample[name] = coder.decode(buf, pos, stop)
            pos = stop
        if pos != end:
            raise ValueError(f"sample spans {end - begin} bytes but its columns use {pos - begin}")
        return sample


def _layout_for_entry(entry: dict, allow_pickle: bool) -> ColumnLayout:
    if "pkl" in entry["column_encodings"] and not allow_pickle:
        column = entry["column_names"][entry["column_encodings"].index("pkl")]
        raise EncodingError(
            f"column {column!r} uses the pkl encoding, which can run arbitrary code when read; "
            "pass allow_pickle=True only for data you trust"
        )
    layout = ColumnLayout(entry["column_names"], entry["column_encodings"])
    if layout.sizes != list(entry["column_sizes"]):
        raise ValueError(
            f"{entry['raw_data']['basename']}: column_sizes {entry['column_sizes']} do not match "
            f"encodings {entry['column_encodings']}"
        )
    return layout


# --------------------------------------------------------------------------- one shard

@dataclass(frozen=True)
class ShardBlob:
    """One encoded shard: ``data`` is the file's bytes (compressed when the entry says so)."""

    data: bytes
    entry: dict

    @property
    def basename(self) -> str:
        """The file name to store ``data`` under (relative to the dataset folder)."""
        info = self.entry["zip_data"] or self.entry["raw_data"]
        return info["basename"]


def _shard_config(layout: ColumnLayout, compression: Compression | None, hashes: list[str], size_limit: int) -> dict:
    return {
        "column_encodings": layout.encodings,
        "column_names": layout.names,
        "column_sizes": layout.sizes,
        "compression": compression.name if compression else None,
        "format": FORMAT,
        "hashes": hashes,
        "size_limit": size_limit,
        "version": FORMAT_VERSION,
    }


def _config_bytes(config: dict) -> bytes:
    return json.dumps(config, sort_keys=True).encode("utf-8")


def _assemble_shard(
    encoded_samples: list[bytes],
    config: dict,
    compression: Compression | None,
    raw_basename: str,
) -> ShardBlob:
    config_data = _config_bytes(config)
    count = len(encoded_samples)
    header_bytes = 4 + 4 * (count + 1) + len(config_data)
    offsets = np.empty(count + 1, np.int64)
    offsets[0] = header_bytes
    np.cumsum(np.fromiter(map(len, encoded_samples), np.int64, count), out=offsets[1:])
    offsets[1:] += header_bytes
    if offsets[-1] >= MAX_SHARD_BYTES:
        raise ValueError(f"{raw_basename} would be {offsets[-1]} bytes; MDS shards must stay below 2**32")
    raw = b"".join([struct.pack("<I", count), offsets.astype("<u4").tobytes(), config_data, *encoded_samples])
    hashes = config["hashes"]
    entry = dict(copy.deepcopy(config), samples=count, raw_data=_file_info(raw_basename, raw, hashes), zip_data=None)
    if compression is None:
        return ShardBlob(raw, entry)
    packed = compression.compress(raw)
    entry["zip_data"] = _file_info(f"{raw_basename}.{compression.extension}", packed, hashes)
    return ShardBlob(packed, entry)


def shard_basename(shard_index: int, prefix: str = "") -> str:
    """``shard.00007.mds``, or ``PREFIX/shard.00007.mds`` for a sub-writer."""
    name = f"shard.{shard_index:05d}.{FORMAT}"
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def encode_shard(
    samples: list[dict[str, Any]],
    columns: dict[str, str],
    compression: str | None = None,
    hashes: Sequence[str] = ("sha1",),
    size_limit: int = DEFAULT_SIZE_LIMIT,
    *,
    basename: str = "shard.00000.mds",
) -> ShardBlob:
    """Encode ``samples`` as one shard (no size rolling; ``size_limit`` is only recorded).

    ``basename`` is the uncompressed file name the index entry records; a compressed shard is
    named ``basename + '.zstd'`` (or ``.gz``/``.bz2``).
    """
    layout = ColumnLayout.from_columns(columns)
    parsed = parse_compression(compression)
    config = _shard_config(layout, parsed, check_hash_names(hashes), _check_size_limit(size_limit))
    return _assemble_shard([layout.encode_sample(s) for s in samples], config, parsed, basename)


def _check_size_limit(size_limit: int) -> int:
    if isinstance(size_limit, bool) or not isinstance(size_limit, int) or not 0 < size_limit < MAX_SHARD_BYTES:
        raise ValueError(f"size_limit must be an int in (0, 2**32), got {size_limit!r}")
    return size_limit


# --------------------------------------------------------------------------- index.json

def _check_basename(basename: str) -> str:
    parts = basename.split("/")
    if not basename or basename.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"shard basename {basename!r} must be a relative path without '.' or '..' parts")
    return basename


def _check_entry(entry: Any, where: str) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a shard entry must be a dict, got {type(entry).__name__}")
    missing = [k for k in _ENTRY_KEYS if k not in entry]
    if missing:
        raise ValueError(f"{where}: shard entry lacks {missing}")
    if entry["format"] != FORMAT or entry["version"] != FORMAT_VERSION:
        raise ValueError(
            f"{where}: shard entry is format {entry['format']!r} version {entry['version']!r}; "
            f"only {FORMAT!r} version {FORMAT_VERSION} is supported"
        )
    _check_basename(entry["raw_data"]["basename"])
    if entry["zip_data"]:
        _check_basename(entry["zip_data"]["basename"])
        if not entry["compression"]:
            raise ValueError(f"{where}: shard entry has zip_data but no compression")
    return entry


def stored_basename(entry: dict) -> str:
    """The name of the file that actually exists in the dataset folder for this entry."""
    return (entry["zip_data"] or entry["raw_data"])["basename"]


def read_index(path: str) -> dict:
    """Load and check ``<path>/index.json``."""
    url = storage.join(path, INDEX_BASENAME)
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {INDEX_BASENAME} at {url}: not an MDS dataset, or its writer did not finish") from None
    try:
        index = json.loads(data)
    except json.JSONDecodeError as err:
        raise ValueError(f"{url} is not valid JSON: {err}") from None
    if not isinstance(index, dict) or index.get("version") != FORMAT_VERSION or not isinstance(index.get("shards"), list):
        raise ValueError(f"{url}: expected {{'version': 2, 'shards': [...]}}")
    for i, entry in enumerate(index["shards"]):
        _check_entry(entry, f"{url} shard {i}")
    return index


def _index_bytes(entries: list[dict]) -> bytes:
    return json.dumps({"version": FORMAT_VERSION, "shards": entries}, sort_keys=True).encode("utf-8")


def merge_index(out: str, entries: Iterable[dict], check_files: bool = True) -> dict:
    """Write ``<out>/index.json`` listing ``entries`` in the given order; returns the index.

    Used by a driver after several prefixed sub-writers (``write_index=False``) finished: pass
    their ``shard_entries`` concatenated in dataset order. With ``check_files`` every listed
    shard file must exist under ``out`` (one listing call). Refuses to replace an existing index.
    """
    entries = list(entries)
    for i, entry in enumerate(entries):
        if isinstance(entry, (list, tuple)):
            raise ValueError(f"entries[{i}] is a list: concatenate the per-writer lists first (itertools.chain)")
        _check_entry(entry, f"entries[{i}]")
    names = [stored_basename(e) for e in entries]
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"shard files listed twice: {duplicates}")
    index_url = storage.join(out, INDEX_BASENAME)
    if storage.exists(index_url):
        raise FileExistsError(f"{index_url} already exists; datasets are immutable, write a new folder")
    if check_files:
        present = storage.list_files(out)
        missing = [n for n in names if n not in present]
        if missing:
            raise FileNotFoundError(f"{len(missing)} shard files are missing under {out}, e.g. {missing[:3]}")
    storage.atomic_write_bytes(index_url, _index_bytes(entries))
    return {"version": FORMAT_VERSION, "shards": entries}


# --------------------------------------------------------------------------- writer

class MDSWriter:
    """Write samples into size-limited MDS shards under ``out`` (local path or fsspec URL).

    Shards roll exactly as streaming's writer rolls them: a new shard starts when
    ``size_limit < current_shard_bytes + len(encoded_sample) + 4`` (except that an empty shard is
    never written; a single sample larger than the limit gets a shard of its own).
    ``index.json`` is written last and atomically, and only when the ``with`` block ends without
    an exception, so a crashed writer leaves no index.

    ``prefix`` puts shards at ``out/prefix/shard.NNNNN.mds`` so several writers (Spark tasks) can
    fill one dataset; give them ``write_index=False`` and pass their ``shard_entries`` to
    ``merge_index``. Existing shard files at the same names are overwritten (a retried task),
    but an existing ``index.json`` is never replaced.
    """

    def __init__(
        self,
        out: str,
        columns: dict[str, str],
        compression: str | None = None,
        hashes: Sequence[str] = ("sha1",),
        size_limit: int = DEFAULT_SIZE_LIMIT,
        prefix: str = "",
        write_index: bool = True,
    ):
        self.out = out
        self.prefix = _check_basename(prefix.strip("/")) if prefix.strip("/") else ""
        self.write_index = write_index
        self._layout = ColumnLayout.from_columns(columns)
        self._compression = parse_compression(compression)
        self._config = _shard_config(
            self._layout, self._compression, check_hash_names(hashes), _check_size_limit(size_limit)
        )
        self.size_limit = size_limit
        self._shard_overhead = 4 + 4 + len(_config_bytes(self._config))
        if write_index and storage.exists(storage.join(out, INDEX_BASENAME)):
            raise FileExistsError(f"{storage.join(out, INDEX_BASENAME)} already exists; datasets are immutable")
        self._entries: list[dict] = []
        self._pending: list[bytes] = []
        self._pending_bytes = self._shard_overhead
        self._num_samples = 0
        self._finished = False

    @property
    def columns(self) -> dict[str, str]:
        return self._layout.columns

    @property
    def shard_entries(self) -> list[dict]:
        """Index entries of the shards written so far (basenames include ``prefix``)."""
        return list(self._entries)

    @property
    def num_samples(self) -> int:
        """Samples accepted so far, flushed or not."""
        return self._num_samples

    def write(self, sample: dict[str, Any]) -> None:
        if self._finished:
            raise RuntimeError("this MDSWriter is finished; open a new one")
        encoded = self._layout.encode_sample(sample)
        sample_bytes = len(encoded) + 4  # its offset entry
        if self._pending and self.size_limit < self._pending_bytes + sample_bytes:
            self._flush()
        self._pending.append(encoded)
        self._pending_bytes += sample_bytes
        self._num_samples += 1

    def _flush(self) -> None:
        basename = shard_basename(len(self._entries), self.prefix)
        blob = _assemble_shard(self._pending, self._config, self._compression, basename)
        storage.atomic_write_bytes(storage.join(self.out, blob.basename), blob.data)
        self._entries.append(blob.entry)
        self._pending = []
        self._pending_bytes = self._shard_overhead

    def finish(self) -> list[dict]:
        """Flush the last shard and (unless ``write_index=False``) write index.json."""
        if self._finished:
            return self.shard_entries
        if self._pending:
            self._flush()
        self._finished = True
        if self.write_index:
            merge_index(self.out, self._entries, check_files=False)
        return self.shard_entries

    def __enter__(self) -> "MDSWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self._finished = True  # leave the shards written so far, but no index


# --------------------------------------------------------------------------- reader

class _OpenShard:
    """A shard's uncompressed bytes plus its decoded offset table."""

    def __init__(self, buf: memoryview, entry: dict, layout: ColumnLayout, where: str):
        self.buf = buf
        self.layout = layout
        count = entry["samples"]
        if len(buf) < 4 + 4 * (count + 1) or struct.unpack_from("<I", buf, 0)[0] != count:
            raise ShardCorruptError(f"{where}: header does not hold the {count} samples listed in index.json")
        self.offsets = np.frombuffer(buf, "<u4", count + 1, 4)
        if self.offsets[-1] != len(buf) or self.offsets[0] < 4 + 4 * (count + 1) or np.any(np.diff(self.offsets.astype(np.int64)) < 0):
            raise ShardCorruptError(f"{where}: offset table is inconsistent with the file size {len(buf)}")

    def sample(self, i: int) -> dict[str, Any]:
        return self.layout.decode_sample(self.buf, int(self.offsets[i]), int(self.offsets[i + 1]))

    def all_samples(self) -> list[dict[str, Any]]:
        offsets = self.offsets.tolist()
        decode, buf = self.layout.decode_sample, self.buf
        return [decode(buf, offsets[i], offsets[i + 1]) for i in range(len(offsets) - 1)]


def default_cache_dir(path: str) -> str:
    """Where remote shards of ``path`` are kept when no cache_dir is given (shared by processes)."""
    digest = hashlib.sha1(path.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "kiln-shards", digest)


class MDSReader:
    """Random access to an MDS dataset folder (local path or fsspec URL).

    Local shards are memory-mapped in place (compressed ones are decompressed into memory);
    remote shards are downloaded once into ``cache_dir`` (atomically) and memory-mapped from there.
    ``ndarray`` values are read-only zero-copy views; copy them if you need to write.
    Up to ``max_open_shards`` decoded shards are kept open (least recently used first out).
    """

    def __init__(
        self,
        path: str,
        cache_dir: str | None = None,
        verify_hashes: bool = False,
        allow_pickle: bool = False,
        max_open_shards: int = 16,
    ):
        self.path = path.rstrip("/")
        self.verify_hashes = verify_hashes
        self.allow_pickle = allow_pickle
        self.max_open_shards = max(1, max_open_shards)
        self.entries: list[dict] = read_index(self.path)["shards"]
        layouts: dict[tuple, ColumnLayout] = {}
        self._layouts = []
        for entry in self.entries:
            key = (tuple(entry["column_names"]), tuple(entry["column_encodings"]))
            if key not in layouts:
                layouts[key] = _layout_for_entry(entry, allow_pickle)
            self._layouts.append(layouts[key])
        self.sample_counts: list[int] = [int(e["samples"]) for e in self.entries]
        self._ends = np.cumsum(np.array(self.sample_counts, np.int64))
        for entry in self.entries:
            parse_compression(entry["compression"])  # an unsupported one fails here, not mid-epoch
        self._local_root = storage.open_fs(self.path)[1] if storage.is_local(self.path) else None
        self.cache_dir = None if self._local_root else (cache_dir or default_cache_dir(self.path))
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()
        self._lock = threading.Lock()  # prefetch threads may share one reader

    @property
    def num_shards(self) -> int:
        return len(self.entries)

    @property
    def columns(self) -> dict[str, str]:
        """Column name -> encoding (of the first shard; empty for an empty dataset)."""
        return self._layouts[0].columns if self._layouts else {}

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def shard_for(self, index: int) -> tuple[int, int]:
        """``(shard_idx, offset_in_shard)`` of global sample ``index`` (negative counts from the end)."""
        total = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"sample index must be an int, got {type(index).__name__}")
        if index < 0:
            index += total
        if not 0 <= index < total:
            raise IndexError(f"sample index {index} out of range for {total} samples")
        shard = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[shard - 1]) if shard else 0
        return shard, int(index) - start

    def __getitem__(self, index: int) -> dict[str, Any]:
        shard, offset = self.shard_for(index)
        return self._shard(shard).sample(offset)

    def read_shard(self, shard_idx: int) -> list[dict[str, Any]]:
        """Every sample of one shard, decoded in one pass."""
        return self._shard(self._check_shard_idx(shard_idx)).all_samples()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for shard_idx in range(self.num_shards):
            yield from self.read_shard(shard_idx)

    def verify(self, shard_idx: int) -> None:
        """Check a shard's stored file (and, if compressed, its contents) against index.json.

        Raises ShardCorruptError naming the file on a size, hash or structure mismatch.
        """
        entry = self.entries[self._check_shard_idx(shard_idx)]
        url = self._url(stored_basename(entry))
        stored = self._fetch(url)
        raw = self._unpack(stored, entry, url, check=True)
        _OpenShard(memoryview(raw), entry, self._layouts[shard_idx], url)

    def close(self) -> None:
        with self._lock:
            self._open.clear()

    def __enter__(self) -> "MDSReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Memory maps do not pickle; a copy sent to a worker process reopens shards lazily.
        state = self.__dict__.copy()
        del state["_open"], state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open = OrderedDict()
        self._lock = threading.Lock()

    # ---- internals

    def _check_shard_idx(self, shard_idx: int) -> int:
        if not 0 <= shard_idx < self.num_shards:
            raise IndexError(f"shard index {shard_idx} out of range for {self.num_shards} shards")
        return shard_idx

    def _url(self, basename: str) -> str:
        return storage.join(self.path, basename)

    def _shard(self, shard_idx: int) -> _OpenShard:
        with self._lock:
            shard = self._open.get(shard_idx)
            if shard is not None:
                self._open.move_to_end(shard_idx)
                return shard
        entry = self.entries[shard_idx]
        buf, where = self._load(entry)  # outside the lock: downloads may be slow
        shard = _OpenShard(buf, entry, self._layouts[shard_idx], where)
        with self._lock:
            self._open[shard_idx] = shard
            while len(self._open) > self.max_open_shards:
                self._open.popitem(last=False)
        return shard

    def _load(self, entry: dict) -> tuple[memoryview, str]:
        """The shard's uncompressed bytes, and the name to blame if they are bad."""
        raw_info = entry["raw_data"]
        if self._local_root is not None:
            url = self._url(stored_basename(entry))
            if entry["zip_data"] is None:
                buf = _map_file(os.path.join(self._local_root, raw_info["basename"]))
                if self.verify_hashes:
                    _check_file_info(buf, raw_info, url)
                return buf, url
            raw = self._unpack(self._fetch(url), entry, url, check=self.verify_hashes)
            return memoryview(raw), url
        cached = os.path.join(self.cache_dir, raw_info["basename"])
        if not (os.path.exists(cached) and os.path.getsize(cached) == raw_info["bytes"]):
            url = self._url(stored_basename(entry))
            raw = self._unpack(self._fetch(url), entry, url, check=self.verify_hashes)
            storage.atomic_write_bytes(cached, raw)
        buf = _map_file(cached)
        if self.verify_hashes:
            _check_file_info(buf, raw_info, cached)
        return buf, cached

    def _fetch(self, url: str) -> bytes:
        try:
            return storage.read_bytes(url)
        except FileNotFoundError:
            raise FileNotFoundError(f"shard file {url} is listed in {INDEX_BASENAME} but missing") from None

    @staticmethod
    def _unpack(stored: bytes, entry: dict, url: str, check: bool) -> bytes:
        """Decompress (when needed) and, with ``check``, verify sizes and hashes on the way."""
        if entry["zip_data"] is None:
            if check:
                _check_file_info(stored, entry["raw_data"], url)
            return stored
        if check:
            _check_file_info(stored, entry["zip_data"], url)
        try:
            raw = parse_compression(entry["compression"]).decompress(stored)
        except (zstandard.ZstdError, zlib.error, OSError, EOFError) as err:
            raise ShardCorruptError(f"{url}: cannot decompress ({entry['compression']}): {err}") from None
        if check:
            _check_file_info(raw, entry["raw_data"], f"{url} (decompressed)")
        return raw


def _map_file(path: str) -> memoryview:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ShardCorruptError(f"{path} is empty")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def token_dtype_for_vocab(vocab_size: int) -> str:
    """The smallest unsigned dtype that holds every token id below ``vocab_size``."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 32:
        return "uint32"
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token ids")


TOKENS_COLUMN = "tokens"


def token_columns(vocab_size: int) -> dict[str, str]:
    """The column layout of a token dataset, as llm-foundry lays it out: one ``tokens`` array."""
    return {TOKENS_COLUMN: f"ndarray:{token_dtype_for_vocab(vocab_size)}"}
