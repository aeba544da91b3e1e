"""The one place a Spark session is made.

Locally we start ``local[*]`` with Delta Lake; under spark-submit or on a Databricks cluster the
session (or the conf given on the command line) already exists and we never override its master
or any setting that was given: we only fill in what is missing.

Delta's jars come from Maven Central through Spark's own resolver into an Ivy cache
(``$KILN_CACHE/ivy``, default ``.cache/ivy`` in the working directory). For an air-gapped cluster,
put the jars in a folder and point ``KILN_SPARK_JARS`` at it (``scripts/fetch_jars.sh`` fills such a
folder with Maven); they are then passed with ``spark.jars`` and nothing is resolved.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import pyspark
from pyspark import SparkConf
from pyspark.sql import SparkSession

SCALA_VERSION = "2.13"
DELTA_VERSION = "4.0.1"  # delta-spark's jar is built per Spark minor version: keep in step with pyspark
HADOOP_VERSION = "3.4.1"  # the Hadoop that pyspark 4.0 bundles; hadoop-aws must match it
DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_VERSION}:{DELTA_VERSION}"
HADOOP_AWS_PACKAGE = f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}"

if not pyspark.__version__.startswith("4.0."):
    raise ImportError(f"Kiln pins pyspark 4.0.x to match delta-spark {DELTA_VERSION}; found pyspark {pyspark.__version__}")


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CACHE", ".cache")).absolute()


def _defaults(with_s3: bool) -> dict[str, str]:
    """Settings Kiln needs; each is applied only when the launcher did not set it."""
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        # Never keep min/max statistics of document text in _delta_log (PII must not leak there).
        "spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols": "0",
    }
    jar_dir = os.environ.get("KILN_SPARK_JARS")
    if jar_dir:
        jars = sorted(glob.glob(os.path.join(jar_dir, "*.jar")))
        if not jars:
            raise RuntimeError(f"KILN_SPARK_JARS={jar_dir} holds no .jar files")
        conf["spark.jars"] = ",".join(jars)
    else:
        packages = [DELTA_PACKAGE] + ([HADOOP_AWS_PACKAGE] if with_s3 else [])
        conf["spark.jars.packages"] = ",".join(packages)
        conf["spark.jars.ivy"] = str(cache_dir() / "ivy")
    if with_s3:
        conf.update(_s3a_conf())
    return conf


def _s3a_conf() -> dict[str, str]:
    """s3a settings from the standard AWS environment variables (a local S3 server in tests)."""
    conf = {"spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https")).lower()
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        conf["spark.hadoop.fs.s3a.access.key"] = os.environ["AWS_ACCESS_KEY_ID"]
        conf["spark.hadoop.fs.s3a.secret.key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        )
    if os.environ.get("AWS_DEFAULT_REGION"):
        conf["spark.hadoop.fs.s3a.endpoint.region"] = os.environ["AWS_DEFAULT_REGION"]
    return conf


def get_spark(app_name: str = "kiln", extra_conf: dict[str, str] | None = None, with_s3: bool | None = None) -> SparkSession:
    """The active session if there is one, else a new one configured for Kiln.

    ``with_s3`` adds hadoop-aws for s3a:// paths; by default it is on when AWS_ENDPOINT_URL or
    KILN_SPARK_S3 is set, so purely local runs do not fetch the (large) AWS SDK jar.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if with_s3 is None:
        with_s3 = bool(os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("KILN_SPARK_S3"))
    given = SparkConf()  # under spark-submit this already holds the command line's --conf values
    builder = SparkSession.builder.appName(app_name)
    if not given.contains("spark.master"):
        builder = builder.master(os.environ.get("KILN_SPARK_MASTER", "local[*]"))
        # Local runs: few shuffle partitions suit a laptop-sized machine.
        builder = builder.config("spark.sql.shuffle.partitions", os.environ.get("KILN_SHUFFLE_PARTITIONS", "8"))
        builder = builder.config("spark.driver.memory", os.environ.get("KILN_DRIVER_MEMORY", "4g"))
        # Delta reads its log with 50 tasks by default; on one machine that is pure overhead.
        builder = builder.config("spark.databricks.delta.snapshotPartitions", "2")
        # VACUUM FULL lists files in this many tasks (default 10000): half a minute of overhead locally.
        builder = builder.config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "8")
        # Python workers run the interpreter that runs us (the project's virtualenv), not the system one.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**_defaults(with_s3), **(extra_conf or {})}.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("KILN_SPARK_LOG_LEVEL", "ERROR"))
    return spark
