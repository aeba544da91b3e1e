"""etl.worker_cache: one build per process and key; inside a Spark task the heap is frozen after it."""
from __future__ import annotations

import gc
import os
import time
import uuid
import zipfile
import zipimport

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


def test_a_spark_worker_reads_a_zip_again_only_when_it_changed(spark, tmp_path):
    """PySpark's worker invalidates the import caches before every task; a worker running Kiln's code
    re-reads an archive then only if it changed. The driver's importers are left as Python made them."""
    archive = str(tmp_path / "modules.zip")

    def write(*modules):
        with zipfile.ZipFile(archive, "w") as handle:
            for name in modules:
                handle.writestr(f"{name}.py", "value = 1\n")

    write("first", "one")
    assert not hasattr(zipimport.zipimporter.invalidate_caches, "reads_only_changed")

    def probe(batches):
        import etl  # noqa: F401  (what every task running Kiln's code does)

        for _ in batches:
            pass
        patched = getattr(zipimport.zipimporter.invalidate_caches, "reads_only_changed", False)
        os.utime(archive, ns=(0, 0))  # settled long ago
        importer = zipimport.zipimporter(archive)
        importer.invalidate_caches()
        directory = importer._files
        importer.invalidate_caches()
        unchanged_kept = importer._files is directory  # not read again
        time.sleep(0.05)  # a tick of the file system's clock
        write("first", "two")  # the same size, and the old modification time: only the change time moved
        os.utime(archive, ns=(0, 0))
        importer.invalidate_caches()
        yield pa.RecordBatch.from_pydict({"patched": [patched], "kept": [unchanged_kept],
                                          "names": [sorted(importer._files)]})

    rows = spark.range(1, numPartitions=1).mapInArrow(probe, "patched boolean, kept boolean, names array<string>").collect()
    assert [(r["patched"], r["kept"], r["names"]) for r in rows] == [(True, True, ["first.py", "two.py"])]
