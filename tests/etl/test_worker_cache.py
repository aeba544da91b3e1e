"""etl.worker_cache: one build per process and key; inside a Spark task the heap is frozen after it."""
from __future__ import annotations

import gc
import uuid

import pyarrow as pa

from etl.worker_cache import built_once


def test_built_once_on_the_driver_leaves_the_heap_alone():
    key = ("test", uuid.uuid4().hex)
    frozen = gc.get_freeze_count()
    first = built_once(key, lambda: [object()])
    assert built_once(key, list) is first
    assert gc.get_freeze_count() == frozen


def test_a_spark_task_freezes_the_heap_after_building(spark):
    key = ("test", uuid.uuid4().hex)  # new to every worker, so the build happens in this task

    def probe(batches):
        for _ in batches:
            pass
        frozen = gc.get_freeze_count()
        first = built_once(key, lambda: [object()])
        same = built_once(key, list) is first
        yield pa.RecordBatch.from_pydict({"before": [frozen], "after": [gc.get_freeze_count()], "same": [same]})

    rows = spark.range(1, numPartitions=1).mapInArrow(probe, "before long, after long, same boolean").collect()
    assert [(r["after"] > r["before"], r["same"]) for r in rows] == [(True, True)]
