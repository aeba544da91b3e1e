"""Peak memory and CPU time of a process and everything it started, read from /proc, for the benchmarks.

Every thread's children are walked, not only the main thread's: Spark's JVM starts the Python worker
daemon from another thread, so a walk of the main thread's children misses every Python worker.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class TreeSampler(threading.Thread):
    """Peak RSS of a process tree (split into the root, Java and other processes) and its CPU seconds."""

    def __init__(self, root: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.interval, self.stopped = root, interval, False
        self.peak = {"driver": 0, "jvm": 0, "workers": 0, "total": 0}  # total: the largest sum at one sample
        # Each process's own CPU seconds when last seen, by (pid, start time): a process that ends keeps
        # what it had used (Spark ends idle Python workers mid-run; summing only the living processes
        # read as a drop, and the 1M scale run lost two stages' CPU that way).
        self.cpu_by_process: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()  # sample() runs in this thread and in the caller's

    def _tree(self) -> list[int]:
        out, stack = [], [self.root]
        while stack:
            pid = stack.pop()
            out.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):  # a JVM starts the Python daemon from another thread
                try:
                    stack.extend(int(c) for c in (task / "children").read_text().split())
                except OSError:
                    pass
        return out

    def sample(self) -> float:
        with self._lock:
            return self._sample()

    def _sample(self) -> float:
        rss = {"driver": 0, "jvm": 0, "workers": 0}
        for pid in self._tree():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            # utime and stime only: a reaped child's time also lands in its parent's cutime, counted twice
            self.cpu_by_process[pid, int(fields[19])] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            kind = "driver" if pid == self.root else "jvm" if comm == "java" else "workers"
            rss[kind] += pages * os.sysconf("SC_PAGE_SIZE")
        rss["total"] = sum(rss.values())
        for kind, value in rss.items():
            self.peak[kind] = max(self.peak[kind], value)
        return sum(self.cpu_by_process.values())

    @property
    def cpu(self) -> float:
        """CPU seconds of every process of the tree seen so far (up to a sampling interval short per process)."""
        with self._lock:
            return sum(self.cpu_by_process.values())

    def run(self) -> None:
        while not self.stopped:
            self.sample()
            time.sleep(self.interval)
