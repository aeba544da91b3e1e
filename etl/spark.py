"""The one place a Spark session is made.

Locally we start ``local[*]`` with Delta Lake; under spark-submit or on a Databricks cluster the
session (or the conf given on the command line) already exists and we never override its master
or any setting that was given: we only fill in what is missing.

Delta's jars (and hadoop-aws's, for s3a://) come from Maven Central once: Spark's own resolver (Ivy)
runs in a child process whose output is kept out of the terminal, into ``<cache>/ivy``, and the list
of jars it resolved is recorded there, so later sessions pass the jars with ``spark.jars`` and
resolve (and print) nothing. The cache is ``$KILN_CACHE``, else ``$XDG_CACHE_HOME/kiln``, else
``~/.cache/kiln``. For an air-gapped machine, put the jars in a folder and point ``KILN_SPARK_JARS``
at it (``scripts/fetch_jars.sh`` fills such a folder with Maven). Under spark-submit the JVM is
already running when Kiln starts, so the jars must come on its command line (``--packages`` or
``--jars``); Kiln checks that Delta's classes arrived and says so in one line when they did not.

With ``SPARK_REMOTE=sc://host:port`` (Spark Connect: Databricks shared and serverless compute, or
``pyspark.sql.connect``'s own server) the session is a client of that server, which holds the jars,
the master and the executors; Kiln sets only its runtime SQL settings. A Connect session has no
SparkContext, so the few things Kiln takes from one go through ``default_parallelism``,
``checkpoint_dir`` and ``ship`` here.
"""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pyspark
from py4j.java_gateway import JavaClass
from pyspark import SparkConf, SparkContext, StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from .jvm_archive import DriverArchive, java_binary

SCALA_VERSION = "2.13"
DELTA_VERSION = "4.0.1"  # delta-spark's jar is built per Spark minor version: keep in step with pyspark
HADOOP_VERSION = "3.4.1"  # the Hadoop that pyspark 4.0 bundles; hadoop-aws must match it
DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_VERSION}:{DELTA_VERSION}"
HADOOP_AWS_PACKAGE = f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}"

if not pyspark.__version__.startswith("4.0."):
    raise ImportError(f"Kiln pins pyspark 4.0.x to match delta-spark {DELTA_VERSION}; found pyspark {pyspark.__version__}")


class SparkSetupError(RuntimeError):
    """Spark cannot start, or lacks what Kiln needs; the message names the fix and is shown as one line."""


def cache_dir() -> Path:
    """Kiln's cache (the jars): $KILN_CACHE, else the user's cache directory, never the working directory."""
    if os.environ.get("KILN_CACHE"):
        return Path(os.environ["KILN_CACHE"]).expanduser().absolute()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser().absolute() / "kiln"


def check_java() -> None:
    """Spark needs a JVM; without one PySpark fails with a long traceback, so say what to do first."""
    java, java_home = java_binary(), os.environ.get("JAVA_HOME")
    if java_home:
        if not os.access(java, os.X_OK):
            raise SparkSetupError(f"JAVA_HOME={java_home} holds no bin/java: point JAVA_HOME at a Java 17 installation")
    elif java is None:
        raise SparkSetupError("Java not found (no `java` on PATH and JAVA_HOME is not set): Spark needs Java 17; "
                              "install it (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")


def _under_spark_submit() -> bool:
    """True when spark-submit started the JVM before Python: its jars can no longer change."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


# Run in a child process: starts Spark's launcher with the packages, which makes Ivy resolve them
# (printing its report to the child's captured output), then prints the jars the launcher resolved.
_RESOLVE_JARS = """
import sys
from pyspark import SparkConf
from pyspark.java_gateway import launch_gateway
gateway = launch_gateway(SparkConf().set("spark.jars.packages", sys.argv[1]).set("spark.jars.ivy", sys.argv[2]))
print("resolved jars:", gateway.jvm.System.getProperty("spark.jars"))
gateway.shutdown()
"""


def resolved_jars(packages: list[str]) -> list[str]:
    """Local paths of the Maven ``packages`` and their dependencies, fetched into the cache once."""
    ivy = cache_dir() / "ivy"
    record = ivy / f"kiln-jars-{hashlib.sha256(','.join(packages).encode()).hexdigest()[:16]}.txt"
    if record.exists():
        jars = record.read_text().split()
        if jars and all(os.path.exists(jar) for jar in jars):
            return jars
    print(f"fetching Delta Lake jars from Maven Central (once) into {ivy}", file=sys.stderr, flush=True)
    env = {key: value for key, value in os.environ.items() if key != "PYSPARK_GATEWAY_PORT"}
    done = subprocess.run([sys.executable, "-c", _RESOLVE_JARS, ",".join(packages), str(ivy)],
                          capture_output=True, text=True, env=env)
    found = [line for line in done.stdout.splitlines() if line.startswith("resolved jars: ")]
    if done.returncode != 0 or not found:
        output = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = next((line for line in output if "unresolved dependency" in line or "Exception" in line),
                      output[-1] if output else f"exit status {done.returncode}")
        raise SparkSetupError(f"could not fetch {', '.join(packages)} from Maven Central ({reason}); without "
                              "internet access fetch the jars elsewhere and set KILN_SPARK_JARS (docs/cluster.md)")
    jars = [jar.removeprefix("file://") for jar in found[-1].removeprefix("resolved jars: ").split(",")]
    partial = record.with_name(record.name + f".{os.getpid()}")
    partial.write_text("\n".join(jars) + "\n")
    partial.replace(record)  # atomic: a concurrent run sees the whole list or none
    return jars


def _jars_in(folder: str) -> list[str]:
    jars = sorted(glob.glob(os.path.join(folder, "*.jar")))
    if not jars:
        raise SparkSetupError(f"KILN_SPARK_JARS={folder} holds no .jar files")
    return jars


# How a stage's documents are cached while its tables are written from them: on local disk, not in the
# JVM's heap. The default, MEMORY_AND_DISK, builds each cached partition in the heap before any of it can
# spill; at 1M demo documents (local[2], 4 GB driver) the tokenize stage then ran out of heap, and once
# smaller cached batches cured that, its samples' sort could no longer get execution memory. DISK_ONLY
# passed there (tokenize 311 s), and at 100k documents it took the same time as MEMORY_AND_DISK
# (39.8 s against 39.6 s) and still passed with a 550 MB driver, where MEMORY_AND_DISK failed at 700 MB
# (both with 1,000-row cached batches; with the default 10,000, DISK_ONLY passed at 700 MB too).
CACHE_LEVEL = StorageLevel.DISK_ONLY

# Settings a running session takes (and so a Spark Connect client may set).
SESSION_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # Never keep min/max statistics of document text in _delta_log (PII must not leak there).
    "spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols": "0",
}


def _defaults(with_s3: bool) -> dict[str, str]:
    """Settings Kiln needs; each is applied only when the launcher did not set it."""
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.ui.showConsoleProgress": "false",
        **SESSION_CONF,
    }
    if not _under_spark_submit():  # there the JVM's class path is fixed by spark-submit's own arguments
        jar_dir = os.environ.get("KILN_SPARK_JARS")
        packages = [DELTA_PACKAGE] + ([HADOOP_AWS_PACKAGE] if with_s3 else [])
        conf["spark.jars"] = ",".join(_jars_in(jar_dir) if jar_dir else resolved_jars(packages))
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
    if os.environ.get("SPARK_REMOTE"):
        return _connect(app_name, extra_conf or {})
    if with_s3 is None:
        with_s3 = bool(os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("KILN_SPARK_S3"))
    if _under_spark_submit():
        # Connect to spark-submit's JVM first: only then does SparkConf() hold its --master and --conf values.
        SparkContext._ensure_initialized()
        _check_delta(SparkContext._jvm)  # before the session, whose Delta extension would fail with a long trace
    else:
        check_java()
    given = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    driver_memory = os.environ.get("KILN_DRIVER_MEMORY", "4g")  # for a local session
    if not given.contains("spark.master"):
        builder = builder.master(os.environ.get("KILN_SPARK_MASTER", "local[*]"))
        # Local runs: few shuffle partitions suit a laptop-sized machine.
        builder = builder.config("spark.sql.shuffle.partitions", os.environ.get("KILN_SHUFFLE_PARTITIONS", "8"))
        builder = builder.config("spark.driver.memory", driver_memory)
        # Delta reads its log with 50 tasks by default; on one machine that is pure overhead.
        builder = builder.config("spark.databricks.delta.snapshotPartitions", "2")
        # VACUUM FULL lists files in this many tasks (default 10000): half a minute of overhead locally.
        builder = builder.config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "8")
        # Python workers run the interpreter that runs us (the project's virtualenv), not the system one.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = session_conf(with_s3, extra_conf or {})
    archive = None
    if SparkContext._gateway is None and not _under_spark_submit():  # this session launches its JVM
        memory = conf.get("spark.driver.memory", driver_memory)
        given_options = given.contains("spark.driver.extraJavaOptions")
        options, archive = driver_java_options({**conf, "spark.driver.memory": memory}, given_options)
        if options:
            conf["spark.driver.extraJavaOptions"] = options
    for key, value in conf.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if archive is not None and not is_connect(spark):  # spark.api.mode may have made it a Connect client
        archive.adopt_at_exit(getattr(SparkContext._gateway, "proc", None))
    spark.sparkContext.setLogLevel(os.environ.get("KILN_SPARK_LOG_LEVEL", "ERROR"))
    _quiet_hive_schema_fallback(spark)
    _check_delta(spark._jvm)
    if not spark.sparkContext.master.startswith("local"):
        _check_executors_import_kiln(spark)
    return spark


# A JVM compiles hot code twice: quickly (C1), then, for code that stays hot, optimized (C2), whose
# compiler threads take a 2-core machine's CPU from the job for its first minute or more. A job that
# ends in a minute never earns that back. Measured on the 2-core VM, `python -m etl run`, best of two:
# minhash_dedup alone on 10,000 web documents (28 MB) 32.1 s with both compilers, 24.8 s with C1 only;
# a four-stage config on 200 short documents 26.0 s and 21.1 s; fix_encoding, quality, exact_dedup and
# minhash_dedup on 50,000 web documents (138 MB) 95-96 s and 88-92 s, on 100,000 (275 MB) 153 s and
# 156 s. The suite's long-lived session ran three of its files 14% slower on C1 only.
# So C1 only is for a process that ends with one job on little data: SHORT_JOB, which `python -m etl`
# sets when run as a program that reads at most SHORT_JOB_BYTES, all of it local (etl/__main__.py).
# With C1 only, the JVM reserves 48 MB for compiled code (the default without tiers) instead of 240 MB.
# Spark, Delta and the stages' plans filled it 30-40 s into a job: "CodeCache is full. Compiler has
# been disabled", and from then on new code ran interpreted. In `make demo` minhash_dedup's step took
# 10.8 s against 6.3 s; the Spark Connect server of tests/system (the demo through Connect) filled it at
# 40 s, and that test took 76.9 s against 64.9 s with the 240 MB of the JVM's tiered default.
QUICK_COMPILER = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"
SHORT_JOB_BYTES = 128 << 20
# A short job's queries also run on Spark's interpreter instead of compiled code. Spark otherwise writes
# Java source for every new plan (its whole-stage code, each projection) and compiles it with Janino,
# tens to hundreds of milliseconds a plan, which a job whose steps last seconds never earns back.
# Measured on the 2-core VM: `make demo`'s eleven steps took 35 s against 46 s; a refresh of the
# nightly config 27.6-28.0 s against 34.4-36.5 s (with only whole-stage code off, 31.7-34.1 s). The
# rows are the same: the demo's Delta tables and dataset bytes were compared. factoryMode is an internal
# setting, the interpreter Spark falls back to when compiling fails and its own tests run every
# expression through. A config's spark_conf overrides either.
INTERPRETED_PLANS = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
SHORT_JOB = False


def session_conf(with_s3: bool, extra_conf: dict[str, str]) -> dict[str, str]:
    """Kiln's settings for a session it makes: its defaults, a short job's interpreted plans, then the
    config's own ``spark_conf`` (``extra_conf``), which wins."""
    return {**_defaults(with_s3), **(INTERPRETED_PLANS if SHORT_JOB else {}), **extra_conf}


def driver_java_options(conf: dict[str, str], given_options: bool) -> tuple[str, DriverArchive | None]:
    """The options of a driver JVM that Kiln launches: its class archive (etl/jvm_archive.py), and the
    quick compiler for a short job. None when the user gives driver options (``given_options``, the
    conf's, or where spark-submit's launcher reads them): Kiln leaves those alone."""
    if given_options or "spark.driver.extraJavaOptions" in conf or user_sets_driver_options():
        return "", None
    archive = DriverArchive(cache_dir(), conf)
    return " ".join(filter(None, [archive.options, QUICK_COMPILER if SHORT_JOB else ""])), archive


def user_sets_driver_options() -> bool:
    """Whether driver JVM options come from where spark-submit's launcher reads them and Kiln's conf
    would override them: PYSPARK_SUBMIT_ARGS or a spark-defaults.conf."""
    if any(flag in os.environ.get("PYSPARK_SUBMIT_ARGS", "") for flag in ("extraJavaOptions", "--driver-java-options")):
        return True
    folders = [os.environ.get("SPARK_CONF_DIR"), os.path.join(os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__), "conf")]
    for folder in filter(None, folders):
        defaults = Path(folder) / "spark-defaults.conf"
        if defaults.exists() and any(line.strip().startswith("spark.driver.extraJavaOptions")
                                     for line in defaults.read_text(errors="replace").splitlines()):
            return True
    return False


def _connect(app_name: str, extra_conf: dict[str, str]) -> SparkSession:
    """A Spark Connect session to ``SPARK_REMOTE``, with Kiln's session settings unless the config sets them."""
    url = os.environ["SPARK_REMOTE"]
    try:
        spark = SparkSession.builder.remote(url).appName(app_name).getOrCreate()
    except ImportError as missing:
        raise SparkSetupError(f"Spark Connect needs pyspark's connect client ({missing}): "
                              "pip install 'pyspark[connect]==4.0.1'") from None
    for key, value in {**SESSION_CONF, **extra_conf}.items():
        try:
            spark.conf.set(key, value)
        except AnalysisException as err:  # a static setting (spark.driver.memory, ...) belongs to the server
            raise SparkSetupError(f"spark_conf {key}: a Spark Connect client cannot set it ({err.getCondition()}); "
                                  "set it where the server starts") from None
    _check_executors_import_kiln(spark)
    return spark


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect client session (no SparkContext, no JVM on this side)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark: SparkSession) -> int:
    """Cores Spark schedules on; on Spark Connect, spark.default.parallelism, else the shuffle partitions."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    return int(spark.conf.get("spark.default.parallelism", None) or spark.conf.get("spark.sql.shuffle.partitions"))


def checkpoint_dir(spark: SparkSession) -> str | None:
    """Where reliable checkpoints go, if anywhere (None: only local checkpoints)."""
    if not is_connect(spark):
        return spark.sparkContext.getCheckpointDir()
    return spark.conf.get("spark.checkpoint.dir", None)


class _Inline:
    """What ``ship`` gives on Spark Connect: the value itself, read the way a broadcast is read."""

    def __init__(self, value):
        self.value = value


@contextmanager
def temporary_conf(spark: SparkSession, settings: dict[str, str | None]):
    """The session's ``settings`` within the block (None: the key unset, so Spark's default holds), each
    key set back as it was before the block when it ends."""
    before = {key: spark.conf.get(key, None) for key in settings}

    def apply(values: dict[str, str | None]) -> None:
        for key, value in values.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)

    apply(settings)
    try:
        yield
    finally:
        apply(before)


def ship(spark: SparkSession, value):
    """``value`` for the executors, read there as ``.value``: a broadcast (sent once per executor), or on
    Spark Connect, which has no broadcast variables, inside each task's closure."""
    if is_connect(spark):
        return _Inline(value)
    return spark.sparkContext.broadcast(value)


def _imports_kiln(batches):
    """Runs on an executor: importing this very module there is the test."""
    for batch in batches:
        yield batch


def _check_executors_import_kiln(spark: SparkSession) -> None:
    """On a cluster the driver may have Kiln while the executors do not (no --py-files, a library installed on
    the driver alone): every stage would then fail with a Python worker's traceback. One tiny job says so first."""
    try:
        spark.range(1, numPartitions=1).mapInArrow(_imports_kiln, "id long").collect()
    except Exception as err:  # a Py4J or PythonException carrying the executor's ImportError
        if "No module named 'etl'" not in str(err):
            raise
        if is_connect(spark):
            raise SparkSetupError("the Spark Connect server's Python workers cannot import Kiln (No module named "
                                  "'etl'): install dist/kiln-0.1.0-py3-none-any.whl in the server's Python") from None
        raise SparkSetupError(
            "the executors cannot import Kiln (No module named 'etl'): pass --py-files dist/kiln-0.1.0.zip to "
            "spark-submit (`make wheel` builds it), or install dist/kiln-0.1.0-py3-none-any.whl on the cluster"
        ) from None


def _quiet_hive_schema_fallback(spark: SparkSession) -> None:
    """With a Hive metastore, every overwrite of a catalog table printed `ERROR HiveAlterHandler: Failed
    to alter table`. Delta hands the table's new columns to the metastore; Hive refuses them because
    they differ from the placeholder column that Spark stores for a Delta table (Hive's
    disallow.incompatible.col.type.changes), and Spark then stores the schema its own way, as it did at
    CREATE (a WARN of HiveExternalCatalog says so, with Hive's reason). Hive's line gives no reason and
    nothing failed; a failure that matters raises."""
    if spark.conf.get("spark.sql.catalogImplementation", "in-memory") != "hive":
        return
    log4j = spark._jvm.org.apache.logging.log4j
    log4j.core.config.Configurator.setLevel("org.apache.hadoop.hive.metastore.HiveAlterHandler", log4j.Level.OFF)


def _check_delta(jvm) -> None:
    """Without Delta's jars every table read fails later with "'JavaPackage' object is not callable"."""
    if jvm is None or isinstance(jvm.io.delta.tables.DeltaTable, JavaClass):
        return
    if _under_spark_submit():
        fix = f"pass --packages {DELTA_PACKAGE} to spark-submit (or --jars with the jars of scripts/fetch_jars.sh)"
    elif os.environ.get("KILN_SPARK_JARS"):
        fix = f"KILN_SPARK_JARS={os.environ['KILN_SPARK_JARS']} lacks delta-spark: fill it with scripts/fetch_jars.sh"
    else:
        fix = f"delete {cache_dir() / 'ivy'} so that the jars are fetched again"
    raise SparkSetupError(f"Delta Lake's classes are not in Spark's JVM: {fix}")
