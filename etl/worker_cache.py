"""Engines and models a Spark Python worker builds once and keeps for the rest of its life.

PySpark's daemon reuses each Python worker across tasks and runs a full ``gc.collect()`` after
every task. A full collection walks every container object in the heap, and an engine with its
imports is large: presidio's analyzer with spaCy, phonenumbers' metadata and the public-suffix
list is about half a million objects, which made each of those collections cost ~0.27 s of CPU,
per task, about as much as analysing 70 documents. So once a worker has built something here, its
heap is frozen (``gc.freeze``): objects that exist then are left out of every later collection
(reference counting still frees them when they are dropped; only cycles among them would stay).
"""
from __future__ import annotations

import gc
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
