"""What a Spark Python worker keeps for the rest of its life: the engines and models it builds once,
and two per-task costs it no longer pays.

PySpark's daemon reuses each Python worker across tasks and runs a full ``gc.collect()`` after
every task. A full collection walks every container object in the heap, and an engine with its
imports is large: presidio's analyzer with spaCy, phonenumbers' metadata and the public-suffix
list is about half a million objects, which made each of those collections cost ~0.27 s of CPU,
per task, about as much as analysing 70 documents. So once a worker has built something here, its
heap is frozen (``gc.freeze``): objects that exist then are left out of every later collection
(reference counting still frees them when they are dropped; only cycles among them would stay).

Before every task PySpark 4.0's worker also calls ``importlib.invalidate_caches()``, and on Python
3.11 that makes every zip importer re-read its archive's whole directory: pyspark.zip (1,220
entries) and spark-core's jar (5,261, and no Python in it) sit on the workers' path, each under
several package prefixes. That cost about 80 ms of CPU a task: 64 tasks of an identity
``mapInArrow`` took 6.9 s of CPU, 1.6 s once the archives were read again only when they change, and
0.9 s with the heap as Kiln's import leaves it frozen too (`lighten_spark_worker`, run when a task
imports ``etl``). Spark after 4.0 invalidates only when the path changed (SPARK-54744).
"""
from __future__ import annotations

import gc
import os
import sys
import time
import zipimport
from typing import Callable, TypeVar

T = TypeVar("T")

_BUILT: dict[tuple, object] = {}


def built_once(key: tuple, build: Callable[[], T]) -> T:
    """``build()`` on first use of ``key`` in this process, the same object afterwards.

    Inside a Spark task the heap is then frozen (see the module docstring); on the driver it is not,
    where a session lives long and builds come and go.
    """
    if key not in _BUILT:
        _BUILT[key] = build()
        if _in_spark_task():
            gc.collect()  # what is garbage now must not be frozen
            gc.freeze()
    return _BUILT[key]  # type: ignore[return-value]


def _in_spark_task() -> bool:
    from pyspark import TaskContext

    return TaskContext.get() is not None


def lighten_spark_worker() -> None:
    """In a Spark task's Python worker (the daemon's fork): archives re-read only when they change,
    and the heap as it stands frozen. Elsewhere, nothing. Idempotent."""
    if "pyspark.worker" not in sys.modules or not _in_spark_task():
        return
    if not getattr(zipimport.zipimporter.invalidate_caches, "reads_only_changed", False):
        zipimport.zipimporter.invalidate_caches = _invalidate_if_changed(zipimport.zipimporter.invalidate_caches)
        gc.collect()
        gc.freeze()


def _invalidate_if_changed(reread: Callable[[zipimport.zipimporter], None]):
    def invalidate_caches(importer: zipimport.zipimporter) -> None:
        """The archive's directory read again unless this importer read it since the file last changed:
        same file, size, modification and change times (a copy that keeps the modification time still
        changes the change time), not modified in the last 2 s (a write in progress), read whole."""
        try:
            stat = os.stat(importer.archive)
            stamp = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        except OSError:  # gone: the original call drops it
            stamp = None
        if stamp is not None and getattr(importer, "_kiln_read_at", None) == stamp:
            return
        reread(importer)
        settled = stamp is not None and time.time_ns() - stamp[3] > 2_000_000_000
        read_whole = importer.archive in zipimport._zip_directory_cache
        importer._kiln_read_at = stamp if settled and read_whole else None

    invalidate_caches.reads_only_changed = True
    return invalidate_caches
