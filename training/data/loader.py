"""Token batches streamed from versioned MDS datasets, in the global order of training.data.order.

Remote shards go through a ``ShardCache`` (training.data.cache) and are prefetched ahead of use.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shards import storage
from shards.config import ConfigError
from shards.mds import TOKENS_COLUMN, MDSReader

from .cache import CacheSettings, ShardCache
from .order import BatchLayout, GlobalOrder
from .sources import EXCLUDED, IGNORE_INDEX, LABELS_COLUMN, SEQUENCE_IDS_COLUMN, TOKEN_SOURCES, Source


class TokenBatches(IterableDataset):
    """This rank's micro-batches from ``start`` on, as dicts of numpy arrays (``as_tensors`` makes
    them LongTensors): ``input_ids`` [B, T] in the shards' token dtype; ``sequence_ids`` and
    ``labels`` [B, T] when the shards have those columns (``sequence_ids`` also when the sources ask for
    ``document_ids``: derived from the EOS tokens); ``positions`` and ``sample_ids`` [B]
    (places in the global order, and which samples those were); with ``excluded`` (one
    ``(bucket, bucket_index) -> [(offset, length)]`` dict per source, training.data.exclude) also
    ``excluded`` [B, T], true at the tokens of excluded documents; with ``token_sources`` (one
    ``(bucket, bucket_index) -> [(offset, length, source number)]`` dict per source, training.data.by_source)
    also ``token_sources`` [B, T], each token's source number (-1: unknown). ``num_micro_batches`` None
    streams forever (epochs wrap around).

    Numpy rather than tensors because loader workers hand batches over by value through a pipe:
    for token batches that is several times faster than torch's shared-memory tensor hand-over,
    and uint16 tokens are a quarter of the int64 bytes.
    """

    def __init__(self, sources: list[Source], order: GlobalOrder, layout: BatchLayout, cache: CacheSettings,
                 start: int = 0, num_micro_batches: int | None = None, excluded: list[dict] | None = None,
                 token_sources: list[dict] | None = None):
        self.sources, self.order, self.layout, self.cache = sources, order, layout, cache
        self.start, self.num_micro_batches, self.excluded = start, num_micro_batches, excluded
        self.token_sources = token_sources
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
        # model.attn_uses_sequence_id over shards without the column: the ids come from each dataset's EOS token.
        derive = SEQUENCE_IDS_COLUMN not in self._optional and any(s.document_ids for s in self.sources)
        self._eos = np.array([s.eos_token_id for s in self.sources], np.int64) if derive else None

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
        if self._eos is not None:
            batch[SEQUENCE_IDS_COLUMN] = document_ids(batch["input_ids"], self._eos[datasets])
        if self.excluded is not None:
            batch[EXCLUDED] = span_tokens(rows, datasets, batch["input_ids"].shape, self.excluded, np.bool_, False)
        if self.token_sources is not None:
            batch[TOKEN_SOURCES] = span_tokens(rows, datasets, batch["input_ids"].shape, self.token_sources, np.int16, -1)
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


def document_ids(tokens: np.ndarray, eos: np.ndarray) -> np.ndarray:
    """sequence_ids [B, T] of packed rows: 0 from each row's first token, one more after every EOS (an EOS
    ends its own document; ``eos[b]`` is row b's EOS id). The smallest unsigned dtype that holds T."""
    starts = np.zeros(tokens.shape, np.min_scalar_type(tokens.shape[1]))
    starts[:, 1:] = tokens[:, :-1] == eos[:, None]
    return np.cumsum(starts, axis=1, dtype=starts.dtype)


def span_tokens(rows: list[dict], datasets: np.ndarray, shape: tuple[int, int], spans: list[dict], dtype,
                empty) -> np.ndarray:
    """[B, T] of ``empty``, with each span's value at its tokens: row b is sample ``rows[b]`` of source
    ``datasets[b]``, looked up by its ``(bucket, bucket_index)`` key in that source's spans, ``(offset,
    length)`` (value True: excluded documents) or ``(offset, length, value)``."""
    marks = np.full(shape, empty, dtype)
    for b, (row, d) in enumerate(zip(rows, datasets.tolist())):
        for offset, length, *value in spans[d].get((int(row["bucket"]), int(row["bucket_index"])), ()):
            marks[b, offset:offset + length] = value[0] if value else True
    return marks


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

    A data phase that starts later in a run (``data.from_step``, e.g. a long-context stage on a dataset packed
    at another seq_len) counts its position from 0 in its own order, and its state also keeps the step it
    starts at and the tokens the earlier phases consumed (``tokens_consumed``).
    """

    def __init__(self, dataset: TokenBatches, num_workers: int = 1, prefetch_batches: int = 4, from_step: int = 0):
        self.dataset = dataset
        self.num_workers, self.prefetch_batches = num_workers, prefetch_batches
        self.position = dataset.start
        self.from_step, self.tokens_before = from_step, 0
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
                "datasets": [(s.path, s.split, s.fingerprint or s.url, *([s.source] if s.source else []))
                             for s in self.dataset.sources]}

    def state_dict(self) -> dict:
        phase = {"from_step": self.from_step, "tokens_before": self.tokens_before} if self.from_step else {}
        return {"position": self.position, **self._identity(), **phase}

    def load_state_dict(self, state: dict) -> None:
        mine = self._identity()
        for key in ("seed", "datasets"):
            theirs = state[key] if key == "seed" else [tuple(x) for x in state[key]]
            if theirs != mine[key]:
                raise ValueError(f"loader state is for {key}={theirs!r}, this run has {mine[key]!r}")
        if state.get("from_step", 0) != self.from_step:
            raise ValueError(f"loader state is for data from step {state.get('from_step', 0)}, this run's data.from_step "
                             f"is {self.from_step}")
        self.position = int(state["position"])
        self.tokens_before = int(state.get("tokens_before", 0))

    def start_phase(self, tokens_before: int) -> None:
        """This data's first step (data.from_step): its order from position 0, after ``tokens_before`` tokens."""
        self.position, self.tokens_before = 0, tokens_before


def tokens_consumed(loader_state: dict, seq_len: int) -> int:
    """Tokens a run has consumed from its data: the earlier data phases' (data.from_step) and this one's."""
    return loader_state.get("tokens_before", 0) + loader_state["position"] * seq_len



def next_token_labels(input_ids: torch.Tensor, sequence_ids: torch.Tensor | None = None) -> torch.Tensor:
    """labels[b, t] = input_ids[b, t + 1]; ignored at the end of each row and across document boundaries."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = input_ids[:, 1:]
    if sequence_ids is not None:
        labels[:, :-1][sequence_ids[:, 1:] != sequence_ids[:, :-1]] = IGNORE_INDEX
    return labels


def exclude_labels(labels: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """``labels`` ignored at every position that reads or predicts an excluded token (``excluded`` [B, T])."""
    reads = excluded.bool()
    predicts = torch.zeros_like(reads)
    predicts[:, :-1] = reads[:, 1:]
    return labels.masked_fill(reads | predicts, IGNORE_INDEX)


def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                                  torch.Tensor]:
    """(input_ids, sequence_ids or None, labels) of a micro-batch on ``device``. Labels come with the batch
    for instruction data (response tokens only, already shifted), else are the next tokens; those of
    excluded documents' tokens (data.exclude_docs) are ignored."""
    input_ids = batch["input_ids"].to(device, non_blocking=True)
    sequence_ids = batch.get("sequence_ids")
    if sequence_ids is not None:
        sequence_ids = sequence_ids.to(device, non_blocking=True)
    labels = batch.get("labels")
    labels = next_token_labels(input_ids, sequence_ids) if labels is None else labels.to(device, non_blocking=True)
    if EXCLUDED in batch:
        labels = exclude_labels(labels, batch[EXCLUDED].to(device, non_blocking=True))
    return input_ids, sequence_ids, labels
