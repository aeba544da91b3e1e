"""Token batches streamed from versioned MDS datasets, in one global order that any number of ranks share.

The order is a pure function of (seed, position): position p of the global stream holds one sample
of one dataset, whatever the number of ranks or loader workers. Global batch b is positions
``[start + b*G, start + (b+1)*G)``; within it, micro-step a of rank r is the ``micro_batch``
positions starting at ``a*world*micro_batch + r*micro_batch``, and loader worker w of K serves this
rank's micro-batches w, w+K, ... (a torch DataLoader returns them round-robin, so in order). A
checkpoint therefore only needs the number of samples consumed, and resumes on any world size.

Within one dataset, each epoch shuffles the shard order and then the samples inside windows of a
few consecutive shards, so a rank reads from a handful of shards at a time (cache locality).
Several datasets are interleaved by proportion in fixed blocks of ``MIX_BLOCK`` positions.

Remote shards (s3://, gs://, ...) go through a ``ShardCache``: downloaded with retries and backoff,
verified against the index's hashes, written atomically, evicted least-recently-used past a size
limit, and prefetched ahead of use. Nothing is put in shared memory; the only files besides shards
are empty flock(2) lock files, which a crashed process releases by dying.
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
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shards import storage
from shards.config import ConfigError
from shards.manifest import (MANIFEST_BASENAME, dataset_fingerprint, read_manifest, resolve_version, split_path,
                             version_path)
from shards.mds import INDEX_BASENAME, TOKENS_COLUMN, MDSReader, ShardCorruptError, hash_hex, parse_compression

log = logging.getLogger(__name__)

SEQUENCE_IDS_COLUMN = "sequence_ids"  # optional: one document id per token, for packed samples
LABELS_COLUMN = "labels"  # optional: the target of each position (-100: no loss), for instruction data
MIX_BLOCK = 1000  # mixture proportions are exact over every block of this many positions


# --------------------------------------------------------------------------- sources

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
                  manifest.num_samples[split], manifest.seq_len, manifest.vocab_size, proportion)


def check_sources(sources: list[Source]) -> int:
    """All datasets of a mixture must have one sample length (they are stacked); returns it."""
    lengths = {s.seq_len for s in sources}
    if len(lengths) != 1:
        raise ValueError(f"datasets have different sample lengths: {[(s.path, s.seq_len) for s in sources]}")
    return lengths.pop()


# --------------------------------------------------------------------------- global order

class DatasetOrder:
    """The order of one dataset's samples in each epoch (a pure function of seed, dataset, epoch)."""

    def __init__(self, shard_sizes: list[int], seed: int, dataset_index: int, shuffle: bool, window_shards: int):
        self.shard_sizes = np.asarray(shard_sizes, np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(self.shard_sizes)[:-1]]).astype(np.int64)
        self.num_samples = int(self.shard_sizes.sum())
        self.seed, self.dataset_index = seed, dataset_index
        self.shuffle, self.window_shards = shuffle, window_shards
        self._epoch_layout: tuple[int, np.ndarray, np.ndarray] | None = None
        self._windows: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.dataset_index, *key])

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's shard order and where each window starts (in samples)."""
        if self._epoch_layout is None or self._epoch_layout[0] != epoch:
            shard_order = self._rng(epoch).permutation(len(self.shard_sizes))
            window_firsts = np.arange(0, len(shard_order), self.window_shards)
            window_sizes = np.add.reduceat(self.shard_sizes[shard_order], window_firsts)
            window_starts = np.concatenate([[0], np.cumsum(window_sizes)]).astype(np.int64)
            self._epoch_layout = (epoch, shard_order, window_starts)
        return self._epoch_layout[1], self._epoch_layout[2]

    def _window(self, epoch: int, window: int) -> np.ndarray:
        key = (epoch, window)
        if key not in self._windows:
            shard_order, _ = self._layout(epoch)
            shards = shard_order[window * self.window_shards:(window + 1) * self.window_shards]
            samples = np.concatenate([np.arange(self.shard_starts[s], self.shard_starts[s] + self.shard_sizes[s])
                                      for s in shards])
            self._windows[key] = self._rng(epoch, window).permutation(samples)
            while len(self._windows) > 4:
                self._windows.popitem(last=False)
        return self._windows[key]

    def samples(self, draw_start: int, draw_stop: int) -> np.ndarray:
        """Sample indices of draws ``[draw_start, draw_stop)``; draw d is epoch d // N, place d % N."""
        if not self.shuffle:
            return np.arange(draw_start, draw_stop, dtype=np.int64) % self.num_samples
        out, draw = [], draw_start
        while draw < draw_stop:
            epoch, place = divmod(draw, self.num_samples)
            _, window_starts = self._layout(epoch)
            window = int(np.searchsorted(window_starts, place, side="right")) - 1
            begin = place - window_starts[window]
            take = min(draw_stop - draw, int(window_starts[window + 1] - place))
            out.append(self._window(epoch, window)[begin:begin + take])
            draw += take
        return np.concatenate(out) if out else np.empty(0, np.int64)


class GlobalOrder:
    """Position in the global stream -> (dataset, sample index), for a mixture of datasets."""

    def __init__(self, shard_sizes: list[list[int]], proportions: list[float], seed: int, shuffle: bool,
                 window_shards: int):
        self.datasets = [DatasetOrder(sizes, seed, i, shuffle, window_shards) for i, sizes in enumerate(shard_sizes)]
        sizes = [d.num_samples for d in self.datasets]
        self.sample_id_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.seed = seed
        weights = np.asarray(proportions, np.float64) / sum(proportions)
        # Largest-remainder rounding of the proportions to counts per block.
        ideal = weights * MIX_BLOCK
        counts = np.floor(ideal).astype(np.int64)
        counts[np.argsort(counts - ideal, kind="stable")[:MIX_BLOCK - counts.sum()]] += 1
        if len(self.datasets) > 1 and (counts == 0).any():
            raise ValueError(f"proportions {proportions} give some dataset no sample in {MIX_BLOCK}")
        self.block_counts = counts
        self._block_labels = np.repeat(np.arange(len(counts)), counts)

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Dataset of each position in one block, and how many of that dataset's draws precede it."""
        if len(self.datasets) == 1:
            return np.zeros(MIX_BLOCK, np.int64), np.arange(MIX_BLOCK, dtype=np.int64)
        labels = np.random.default_rng([self.seed, 1 << 20, block]).permutation(self._block_labels)
        seen = np.zeros(MIX_BLOCK, np.int64)
        for d in range(len(self.datasets)):
            mine = labels == d
            seen[mine] = np.arange(int(mine.sum()))
        return labels, seen

    def locate(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(dataset index, sample index)`` arrays for positions ``[start, stop)``."""
        datasets, draws = [], []
        for block in range(start // MIX_BLOCK, (stop - 1) // MIX_BLOCK + 1):
            labels, seen = self._block(block)
            lo, hi = max(start - block * MIX_BLOCK, 0), min(stop - block * MIX_BLOCK, MIX_BLOCK)
            datasets.append(labels[lo:hi])
            draws.append(seen[lo:hi] + block * self.block_counts[labels[lo:hi]])
        datasets, draws = np.concatenate(datasets), np.concatenate(draws)
        samples = np.empty_like(draws)
        for d, order in enumerate(self.datasets):
            mine = np.flatnonzero(datasets == d)
            if len(mine):  # a dataset's draws in a contiguous range of positions are contiguous too
                samples[mine] = order.samples(int(draws[mine[0]]), int(draws[mine[-1]]) + 1)
        return datasets, samples

    def sample_ids(self, datasets: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """One integer per sample of the whole mixture (dataset offsets in config order)."""
        return self.sample_id_offsets[datasets] + samples


@dataclass(frozen=True)
class BatchLayout:
    """Which positions of the global stream one rank reads, micro-batch by micro-batch."""

    global_batch: int
    micro_batch: int
    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if self.global_batch % (self.micro_batch * self.world_size):
            raise ValueError(f"global batch {self.global_batch} does not split into micro-batches of "
                             f"{self.micro_batch} on {self.world_size} ranks")

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    def micro_positions(self, start: int, micro_index: int) -> tuple[int, int]:
        """Positions ``[begin, end)`` of this rank's ``micro_index``-th micro-batch after ``start``."""
        step, micro = divmod(micro_index, self.accumulation)
        begin = start + step * self.global_batch + (micro * self.world_size + self.rank) * self.micro_batch
        return begin, begin + self.micro_batch


# --------------------------------------------------------------------------- shard cache

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


# --------------------------------------------------------------------------- the dataset

@dataclass(frozen=True)
class CacheSettings:
    root: str
    limit_bytes: int
    retries: int = 5
    verify_hashes: bool = True
    prefetch_shards: int = 4


class TokenBatches(IterableDataset):
    """This rank's micro-batches from ``start`` on, as dicts of numpy arrays (``as_tensors`` makes
    them LongTensors): ``input_ids`` [B, T] in the shards' token dtype; ``sequence_ids`` and
    ``labels`` [B, T] when the shards have those columns; ``positions`` and ``sample_ids`` [B]
    (places in the global order, and which samples those were). ``num_micro_batches`` None streams
    forever (epochs wrap around).

    Numpy rather than tensors because loader workers hand batches over by value through a pipe:
    for token batches that is several times faster than torch's shared-memory tensor hand-over,
    and uint16 tokens are a quarter of the int64 bytes.
    """

    def __init__(self, sources: list[Source], order: GlobalOrder, layout: BatchLayout, cache: CacheSettings,
                 start: int = 0, num_micro_batches: int | None = None):
        self.sources, self.order, self.layout, self.cache = sources, order, layout, cache
        self.start, self.num_micro_batches = start, num_micro_batches
        self._readers: list[MDSReader] | None = None
        remote = [s.url for s in sources if not storage.is_local(s.url)]
        if remote:
            largest = max(e["raw_data"]["bytes"] for url in remote for e in MDSReader(url).entries)
            needed = (cache.prefetch_shards + 2) * largest
            if cache.limit_bytes < needed:
                raise ConfigError(
                    f"data.cache_limit_gb ({cache.limit_bytes / 1e9:.3g} GB) must hold data.prefetch_shards + 2 "
                    f"shards of up to {largest / 1e6:.1f} MB: at least {needed / 1e9:.3g} GB"
                )

    # ---- reading

    def _open(self) -> None:
        """Readers and the download machinery, made in the process that reads (they do not pickle)."""
        self._remote = [not storage.is_local(s.url) for s in self.sources]
        self._cache = None
        if any(self._remote):
            c = self.cache
            self._cache = ShardCache(c.root, c.limit_bytes, c.retries, c.verify_hashes)
        self._readers = []
        self._shard_ends = []
        for s, remote in zip(self.sources, self._remote):
            cache_dir = self._cache.folder_for(s.url) if remote else None
            # Downloads were verified on the way into the cache; local folders are read in place.
            reader = MDSReader(s.url, cache_dir=cache_dir, verify_hashes=False)
            if len(reader) != s.num_samples:
                raise ValueError(f"{s.url} holds {len(reader)} samples but its manifest says {s.num_samples}")
            self._readers.append(reader)
            self._shard_ends.append(np.cumsum(reader.sample_counts))
        self._optional = []
        for column in (SEQUENCE_IDS_COLUMN, LABELS_COLUMN):
            present = {column in r.columns for r in self._readers}
            if len(present) > 1:
                raise ValueError(f"some datasets have a {column!r} column and others not: they cannot mix")
            if present.pop():
                self._optional.append(column)

    def remote_shards(self, micro: int) -> list[tuple[int, int]]:
        """The remote ``(dataset, shard)`` pairs that micro-batch ``micro`` reads."""
        datasets, samples = self.order.locate(*self.layout.micro_positions(self.start, micro))
        keys = []
        for d in np.unique(datasets).tolist():
            if self._remote[d]:
                shards = np.searchsorted(self._shard_ends[d], samples[datasets == d], side="right")
                keys += [(d, shard) for shard in np.unique(shards).tolist()]
        return keys

    def ensure_local(self, key: tuple[int, int]) -> str:
        d, shard = key
        return self._cache.ensure(self.sources[d].url, self._readers[d].entries[shard])

    def _batch(self, begin: int, end: int) -> dict[str, np.ndarray]:
        datasets, samples = self.order.locate(begin, end)
        rows = [self._readers[d][int(s)] for d, s in zip(datasets.tolist(), samples.tolist())]
        batch = {"input_ids": np.stack([r[TOKENS_COLUMN] for r in rows])}
        for column in self._optional:
            batch[column] = np.stack([r[column] for r in rows])
        batch["positions"] = np.arange(begin, end, dtype=np.int64)
        batch["sample_ids"] = self.order.sample_ids(datasets, samples)
        return batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self._open()
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        prefetcher = _Prefetcher(self, worker_id, num_workers) if self._cache is not None else None
        micro = worker_id
        try:
            while self.num_micro_batches is None or micro < self.num_micro_batches:
                if prefetcher is not None:
                    prefetcher.ready(micro)
                yield self._batch(*self.layout.micro_positions(self.start, micro))
                micro += num_workers
        finally:
            if prefetcher is not None:
                prefetcher.close()


class _Prefetcher:
    """Keeps the remote shards of one loader process's next micro-batches downloading.

    A cursor walks the micro-batches this process will read (each looked at once) and submits
    their shards to a thread pool while fewer than ``prefetch_shards`` downloads are outstanding,
    up to ``MAX_LOOKAHEAD`` micro-batches ahead.
    """

    MAX_LOOKAHEAD = 64

    def __init__(self, batches: TokenBatches, first_micro: int, stride: int):
        self.batches, self.stride = batches, stride
        self.ahead = batches.cache.prefetch_shards
        self.pool = ThreadPoolExecutor(max_workers=self.ahead, thread_name_prefix="shard-prefetch")
        self.pending: dict[tuple[int, int], Future] = {}
        self.planned: dict[int, list[tuple[int, int]]] = {}
        self.cursor = first_micro

    def ready(self, micro: int) -> None:
        """Return once every shard of micro-batch ``micro`` is on local disk; schedule later ones."""
        needed = self.planned.pop(micro, None)
        if needed is None:
            needed = self.batches.remote_shards(micro)
            self._submit(needed)
        self.cursor = max(self.cursor, micro + self.stride)
        end = self.batches.num_micro_batches
        while (len(self.pending) < self.ahead and self.cursor <= micro + self.MAX_LOOKAHEAD * self.stride
               and (end is None or self.cursor < end)):
            self.planned[self.cursor] = self.batches.remote_shards(self.cursor)
            self._submit(self.planned[self.cursor])
            self.cursor += self.stride
        for key in needed:
            future = self.pending.pop(key, None)
            if future is not None:
                future.result()
            else:
                self.batches.ensure_local(key)  # finished earlier: check it was not evicted since

    def _submit(self, keys: list[tuple[int, int]]) -> None:
        for key in keys:
            if key not in self.pending:
                self.pending[key] = self.pool.submit(self.batches.ensure_local, key)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def as_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A TokenBatches batch as int64 tensors."""
    return {key: torch.from_numpy(value.astype(np.int64, copy=False)) for key, value in batch.items()}


def _as_is(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return batch  # the DataLoader would otherwise turn arrays into shared-memory tensors in the worker


class StreamingLoader:
    """What the trainer iterates: this rank's micro-batches in global order, with resumable state.

    The state is the number of global samples consumed in whole steps, so it means the same on any
    number of ranks and workers; ``load_state_dict`` refuses state from different datasets or seed.
    """

    def __init__(self, dataset: TokenBatches, num_workers: int = 1, prefetch_batches: int = 4):
        self.dataset = dataset
        self.num_workers, self.prefetch_batches = num_workers, prefetch_batches
        self.position = dataset.start
        self._micro_consumed = 0

    @property
    def accumulation(self) -> int:
        return self.dataset.layout.accumulation

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.dataset.start = self.position
        self._micro_consumed = 0
        # Reading a remote manifest started fsspec's event-loop thread in this process, and a worker
        # forked from a process with threads can deadlock (seen: a forked worker stuck for good in
        # botocore's first call). Workers over remote data start from a clean fork server instead.
        remote = self.num_workers and any(not storage.is_local(s.url) for s in self.dataset.sources)
        loader = DataLoader(
            self.dataset, batch_size=None, num_workers=self.num_workers,
            prefetch_factor=self.prefetch_batches if self.num_workers else None, collate_fn=_as_is,
            multiprocessing_context="forkserver" if remote else None,
        )
        start = self.position
        for batch in loader:
            self._micro_consumed += 1
            steps = self._micro_consumed // self.accumulation
            self.position = start + steps * self.dataset.layout.global_batch
            yield as_tensors(batch)

    def _identity(self) -> dict:
        return {"seed": self.dataset.order.seed,
                "datasets": [(s.path, s.split, s.fingerprint or s.url) for s in self.dataset.sources]}

    def state_dict(self) -> dict:
        return {"position": self.position, **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        mine = self._identity()
        for key in ("seed", "datasets"):
            theirs = state[key] if key == "seed" else [tuple(x) for x in state[key]]
            if theirs != mine[key]:
                raise ValueError(f"loader state is for {key}={theirs!r}, this run has {mine[key]!r}")
        self.position = int(state["position"])


def build_order(sources: list[Source], seed: int, shuffle: bool, window_shards: int) -> GlobalOrder:
    """The global order over ``sources`` (reads each index.json for the shard sizes)."""
    sizes = [MDSReader(s.url).sample_counts for s in sources]
    return GlobalOrder(sizes, [s.proportion for s in sources], seed, shuffle, window_shards)
