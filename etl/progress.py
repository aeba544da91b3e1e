"""A live progress line while a pipeline step runs, so that a long step shows it is moving.

A daemon thread polls Spark's status tracker and describes the step's active Spark stages:
``[quality 3/10] Spark stage 14: 5/8 tasks (2 running)  12s``. On a terminal the line is rewritten in
place on stderr and cleared when the step ends; in a log (stderr not a terminal) one line is written
every ``KILN_PROGRESS_SECONDS`` (default 30) while the step runs, so short steps add nothing. Off when
Kiln logs at ERROR (``--log-level ERROR``) and where there is no SparkContext (Spark Connect).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager

from pyspark.sql import SparkSession

POLL_SECONDS = 0.5


@contextmanager
def step_progress(spark: SparkSession, step: str, position: int, steps: int):
    """Show the progress of ``step`` (number ``position`` of ``steps``) on stderr while the body runs."""
    label = f"{step} {position}/{steps}"
    tracker = _status_tracker(spark)
    if tracker is None or not logging.getLogger("etl").isEnabledFor(logging.WARNING):
        yield
        return
    watcher = _Watcher(tracker, label, sys.stderr, float(os.environ.get("KILN_PROGRESS_SECONDS", "30")))
    watcher.start()
    try:
        yield
    finally:
        watcher.finish()


def _status_tracker(spark: SparkSession):
    try:
        return spark.sparkContext.statusTracker()
    except Exception:  # Spark Connect sessions have no SparkContext
        return None


class _Watcher(threading.Thread):
    def __init__(self, tracker, label: str, stream, log_seconds: float):
        super().__init__(name=f"kiln-progress-{label}", daemon=True)
        self.tracker = tracker
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.log_seconds = log_seconds
        self.started = time.monotonic()
        self.stopped = threading.Event()

    def run(self) -> None:
        last_logged, shown = self.started, ""
        while not self.stopped.wait(POLL_SECONDS):
            now = time.monotonic()
            if not self.tty and now - last_logged < self.log_seconds:
                continue
            try:
                line = self.describe(now - self.started)
            except Exception:  # the JVM is going away (Ctrl-C, a failed step): no traceback from this thread
                return
            if self.tty:
                if line == shown:
                    continue
                self.stream.write("\r" + line + "\x1b[K")
                shown = line
            else:
                self.stream.write(line + "\n")
                last_logged = now
            self.stream.flush()

    def describe(self, elapsed: float) -> str:
        stages = [info for info in map(self.tracker.getStageInfo, self.tracker.getActiveStageIds()) if info]
        if not stages:
            return f"[{self.label}] {elapsed:.0f}s"
        ids = ",".join(str(info.stageId) for info in sorted(stages, key=lambda info: info.stageId))
        done, total = sum(i.numCompletedTasks for i in stages), sum(i.numTasks for i in stages)
        running = sum(i.numActiveTasks for i in stages)
        return f"[{self.label}] Spark stage {ids}: {done}/{total} tasks ({running} running)  {elapsed:.0f}s"

    def finish(self) -> None:
        self.stopped.set()
        self.join()
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
