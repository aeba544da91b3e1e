"""One global order of samples that any number of ranks share.

The order is a pure function of (seed, position): position p of the global stream holds one sample
of one dataset, whatever the number of ranks or loader workers. Global batch b is positions
``[start + b*G, start + (b+1)*G)``; within it, micro-step a of rank r is the ``micro_batch``
positions starting at ``a*world*micro_batch + r*micro_batch``, and loader worker w of K serves this
rank's micro-batches w, w+K, ... (a torch DataLoader returns them round-robin, so in order). A
checkpoint therefore only needs the number of samples consumed, and resumes on any world size.

Within one dataset, each epoch shuffles the shard order and then the samples inside windows of a
few consecutive shards, so a rank reads from a handful of shards at a time (cache locality).
Several datasets are interleaved by proportion in fixed blocks of ``MIX_BLOCK`` positions.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from shards.mds import MDSReader

from .sources import Source

MIX_BLOCK = 1000  # mixture proportions are exact over every block of this many positions


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


def build_order(sources: list[Source], seed: int, shuffle: bool, window_shards: int) -> GlobalOrder:
    """The global order over ``sources`` (reads each index.json for the shard sizes)."""
    sizes = [MDSReader(s.url).sample_counts for s in sources]
    return GlobalOrder(sizes, [s.proportion for s in sources], seed, shuffle, window_shards)
