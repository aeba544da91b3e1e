"""One global order of samples that any number of ranks share.

The order is a pure function of (seed, position): position p of the global stream holds one sample
of one dataset, whatever the number of ranks or loader workers. Global batch b is positions
``[start + b*G, start + (b+1)*G)``; within it, micro-step a of rank r is the ``micro_batch``
positions starting at ``a*world*micro_batch + r*micro_batch``, and loader worker w of K serves this
rank's micro-batches w, w+K, ... (a torch DataLoader returns them round-robin, so in order). A
checkpoint therefore only needs the number of samples consumed, and resumes on any world size.

Within one dataset, each epoch shuffles the shard order and then the samples inside windows of a
few consecutive shards, so a rank reads from a handful of shards at a time (cache locality).
Several datasets are interleaved by proportion in fixed blocks of ``MIX_BLOCK`` positions; a "dataset" of the
mixture may be one source of a dataset the ETL packed by source (``data.datasets[].source``), which draws
from that source's samples only.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from shards.mds import MDSReader

from .sources import Source

MIX_BLOCK = 1000  # mixture proportions are exact over every block of this many positions


class DatasetOrder:
    """The order of one dataset's samples in each epoch (a pure function of seed, dataset, epoch).

    ``members``: only these sample indices (one source of a dataset packed by source), ascending; each shard
    then counts only its members, and the order is the same shard-then-window shuffle over them."""

    def __init__(self, shard_sizes: list[int], seed: int, dataset_index: int, shuffle: bool, window_shards: int,
                 members: np.ndarray | None = None):
        sizes = np.asarray(shard_sizes, np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        if members is None:
            self.shard_sizes, self.shard_starts = sizes, starts
        else:  # each shard's members, numbered in the members' own order (members are ascending)
            self.shard_starts = np.searchsorted(members, starts).astype(np.int64)
            self.shard_sizes = np.diff(np.append(self.shard_starts, len(members))).astype(np.int64)
        self.members = members
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
            if self.members is not None:
                samples = self.members[samples]
            self._windows[key] = self._rng(epoch, window).permutation(samples)
            while len(self._windows) > 4:
                self._windows.popitem(last=False)
        return self._windows[key]

    def samples(self, draw_start: int, draw_stop: int) -> np.ndarray:
        """Sample indices of draws ``[draw_start, draw_stop)``; draw d is epoch d // N, place d % N."""
        if not self.shuffle:
            places = np.arange(draw_start, draw_stop, dtype=np.int64) % self.num_samples
            return places if self.members is None else self.members[places]
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
    """Position in the global stream -> (dataset, sample index), for a mixture of datasets.

    ``phases`` (data.schedule) change the proportions along the stream: ``(end position, proportions)``
    each, the last one's end None (to the end). Each phase interleaves by its own proportions in blocks
    of ``MIX_BLOCK`` positions counted from its start, and each dataset's draws continue from where the
    earlier phases left them, so a dataset is never restarted at a phase. A dataset may have proportion 0
    in a phase. Without phases the first phase is the whole stream and the order is what it always was.
    """

    def __init__(self, shard_sizes: list[list[int]], proportions: list[float], seed: int, shuffle: bool,
                 window_shards: int, phases: list[tuple[int | None, list[float]]] | None = None,
                 members: list[np.ndarray | None] | None = None):
        members = members or [None] * len(shard_sizes)
        self.datasets = [DatasetOrder(sizes, seed, i, shuffle, window_shards, mine)
                         for i, (sizes, mine) in enumerate(zip(shard_sizes, members))]
        sizes = [int(np.sum(s)) for s in shard_sizes]  # sample ids number each dataset's whole split
        self.sample_id_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.seed = seed
        phases = phases or [(None, proportions)]
        self.phase_starts = [0] + [end for end, _ in phases[:-1]]
        self.block_counts = [self._counts(props) for _, props in phases]
        self._block_labels = [np.repeat(np.arange(len(c)), c) for c in self.block_counts]
        # Each dataset's draws before each phase: the earlier phases' draws of it, whole blocks and a part.
        self.draw_offsets = [np.zeros(len(self.datasets), np.int64)]
        for end, _ in phases[:-1]:
            self.draw_offsets.append(self.draws_before(end))

    def _counts(self, proportions: list[float]) -> np.ndarray:
        """Largest-remainder rounding of the proportions to counts per block."""
        if len(proportions) != len(self.datasets) or min(proportions) < 0 or sum(proportions) <= 0:
            raise ValueError(f"proportions {proportions} must be one per dataset, none negative, not all 0")
        weights = np.asarray(proportions, np.float64) / sum(proportions)
        ideal = weights * MIX_BLOCK
        counts = np.floor(ideal).astype(np.int64)
        counts[np.argsort(counts - ideal, kind="stable")[:MIX_BLOCK - counts.sum()]] += 1
        if len(self.datasets) > 1 and ((counts == 0) & (weights > 0)).any():
            raise ValueError(f"proportions {proportions} give some dataset no sample in {MIX_BLOCK}")
        return counts

    def _block(self, phase: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Dataset of each position in one block of a phase, and how many of that dataset's draws precede it."""
        if len(self.datasets) == 1:
            return np.zeros(MIX_BLOCK, np.int64), np.arange(MIX_BLOCK, dtype=np.int64)
        key = [self.seed, 1 << 20, block] + ([phase] if phase else [])  # the first phase: the order without phases
        labels = np.random.default_rng(key).permutation(self._block_labels[phase])
        seen = np.zeros(MIX_BLOCK, np.int64)
        for d in range(len(self.datasets)):
            mine = labels == d
            seen[mine] = np.arange(int(mine.sum()))
        return labels, seen

    def locate(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(dataset index, sample index)`` arrays for positions ``[start, stop)``."""
        datasets, draws = [], []
        ends = self.phase_starts[1:] + [None]
        for phase, (first, end) in enumerate(zip(self.phase_starts, ends)):
            lo, hi = max(start, first), stop if end is None else min(stop, end)
            if lo >= hi:
                continue
            lo, hi = lo - first, hi - first  # positions within the phase
            for block in range(lo // MIX_BLOCK, (hi - 1) // MIX_BLOCK + 1):
                labels, seen = self._block(phase, block)
                a, b = max(lo - block * MIX_BLOCK, 0), min(hi - block * MIX_BLOCK, MIX_BLOCK)
                datasets.append(labels[a:b])
                draws.append(seen[a:b] + block * self.block_counts[phase][labels[a:b]]
                             + self.draw_offsets[phase][labels[a:b]])
        datasets, draws = np.concatenate(datasets), np.concatenate(draws)
        samples = np.empty_like(draws)
        for d, order in enumerate(self.datasets):
            mine = np.flatnonzero(datasets == d)
            if len(mine):  # a dataset's draws in a contiguous range of positions are contiguous too
                samples[mine] = order.samples(int(draws[mine[0]]), int(draws[mine[-1]]) + 1)
        return datasets, samples

    def draws_before(self, position: int) -> np.ndarray:
        """How many samples each dataset has supplied to positions ``[0, position)``."""
        phase = max([0] + [k for k, first in enumerate(self.phase_starts) if first < position])  # holds position - 1
        blocks, rest = divmod(position - self.phase_starts[phase], MIX_BLOCK)
        partial = np.bincount(self._block(phase, blocks)[0][:rest], minlength=len(self.datasets))
        return self.draw_offsets[phase] + blocks * self.block_counts[phase] + partial

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


def build_order(sources: list[Source], seed: int, shuffle: bool, window_shards: int,
                phases: list[tuple[int | None, list[float]]] | None = None) -> GlobalOrder:
    """The global order over ``sources`` (reads each index.json for the shard sizes, and the source numbers of
    a source of a dataset packed by source), by ``phases`` when given."""
    sizes = [MDSReader(s.url).sample_counts for s in sources]
    return GlobalOrder(sizes, [s.proportion for s in sources], seed, shuffle, window_shards, phases,
                       [s.members() for s in sources])


def schedule_phases(schedule: list, global_batch: int, from_step: int = 0) -> list[tuple[int | None, list[float]]] | None:
    """``data.schedule`` (PhaseSections, or their dicts as run_info.json keeps them) as positions of the global
    stream; None without one. A phase ends at ``(until_step - from_step) x global_batch``, ``from_step`` being
    where this data starts (data.from_step): the spike policy's skipped positions count as consumed."""
    phases = [p if isinstance(p, dict) else {"until_step": p.until_step, "proportions": p.proportions} for p in schedule]
    return [(None if p["until_step"] is None else (p["until_step"] - from_step) * global_batch, list(p["proportions"]))
            for p in phases] or None
