"""Kiln's data side: a Spark + Delta Lake pipeline from raw files to MDS shards.

A Spark task's Python worker imports this package to run Kiln's code; that import also spares the
worker two costs it would pay every task (etl/worker_cache.py).
"""
from .worker_cache import lighten_spark_worker

lighten_spark_worker()
