"""A Spark standalone cluster, and a Spark Connect server, on 127.0.0.1, started from the installed
pyspark, for the cluster tests and bench/cluster_bench.py.

The pip pyspark has no sbin scripts, so the master and each worker are started with ``spark-class`` and
their class names, each in its own JVM; a worker starts its executors as JVMs of their own, each with its
own Python workers, in the worker's work folder (not the caller's working directory). The cluster is
ready when the master's status page lists every worker alive; ``stop`` kills the whole process groups.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pyspark

from ..spark import DELTA_PACKAGE, INTERPRETED_PLANS, QUICK_COMPILER, resolved_jars
from shards.local_ports import free_ports

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"


def python_without_kiln(folder: Path) -> Path:
    """A Python with this environment's packages on its path but not Kiln, like a cluster's executors:
    a virtualenv whose only .pth file adds our site-packages, so Kiln's editable-install hook never runs."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True)
    (Path(site.strip()) / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def submit_env(python: Path, conf_dir: Path | None = None) -> dict[str, str]:
    """The environment of a spark-submit as from a cluster's edge node: this machine's Kiln, Spark, PySpark
    and S3 settings and PYTHONPATH left out (so only --py-files brings Kiln), ``python`` (from
    :func:`python_without_kiln`) for the driver and the executors' Python workers, one intra-op thread
    each, ``conf_dir`` as SPARK_CONF_DIR when given, and spark-submit itself from this virtualenv."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AWS_", "KILN_", "PYSPARK_", "SPARK_")) and key != "PYTHONPATH"}
    env.update(PYSPARK_PYTHON=str(python), PYSPARK_DRIVER_PYTHON=str(python), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PATH=f"{python.parent}:{Path(sys.executable).parent}:{env['PATH']}")
    if conf_dir is not None:
        env["SPARK_CONF_DIR"] = str(conf_dir)
    return env


def _listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class StandaloneCluster:
    """A master and ``workers`` workers of ``cores`` cores each; ``url`` is what spark-submit's --master takes."""

    def __init__(self, folder: Path, workers: int = 2, cores: int = 1, memory: str = "2g", env: dict | None = None):
        self.folder, self.workers, self.cores, self.memory = folder, workers, cores, memory
        self.env = {**(env or os.environ), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        # The master and workers only schedule: the JVM's quick compiler suffices for them.
        self.env["SPARK_DAEMON_JAVA_OPTS"] = f"{self.env.get('SPARK_DAEMON_JAVA_OPTS', '')} {QUICK_COMPILER}".strip()
        self.port, self.ui_port, *self.worker_ui_ports = free_ports(2 + workers)
        self.url = f"spark://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        process = subprocess.Popen([str(SPARK_CLASS), *args], cwd=self.folder, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start(self, timeout: float = 120) -> "StandaloneCluster":
        self.folder.mkdir(parents=True, exist_ok=True)
        master = self._start("master", [MASTER, "--host", "127.0.0.1", "--port", str(self.port),
                                        "--webui-port", str(self.ui_port)])
        # Workers start once the master listens: a worker that finds no master retries only after about
        # 12 s, and the cluster then took 13-17 s to come up instead of 3.
        deadline = time.time() + timeout
        while time.time() < deadline and master.poll() is None and not _listening(self.port):
            time.sleep(0.2)
        for i in range(self.workers):
            work = self.folder / f"worker-{i}"
            work.mkdir(exist_ok=True)
            self._start(f"worker-{i}", [WORKER, "--host", "127.0.0.1", "--cores", str(self.cores), "--memory",
                                        self.memory, "--work-dir", str(work), "--webui-port", str(self.worker_ui_ports[i]),
                                        self.url])
        while time.time() < deadline:
            if len(self.alive_workers()) == self.workers:
                return self
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.5)
        self.stop()
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.folder.glob("*.log")))
        raise RuntimeError(f"the standalone cluster did not come up with {self.workers} workers:\n{logs}")

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as page:
            return json.load(page)

    def alive_workers(self) -> list[dict]:
        try:
            return [w for w in self.status()["workers"] if w["state"] == "ALIVE"]
        except OSError:
            return []

    def executor_pids(self) -> list[int]:
        """The executor JVMs the workers run now."""
        found = subprocess.run(["pgrep", "-f", "org.apache.spark.executor.CoarseGrainedExecutorBackend"],
                               capture_output=True, text=True).stdout.split()
        mine = str(self.folder)
        return [int(pid) for pid in found if mine in Path(f"/proc/{pid}/cwd").resolve().as_posix()]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes = []


CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"


class ConnectServer:
    """A Spark Connect server on 127.0.0.1 (its jar ships in pyspark) running ``local[cores]``, with Delta's
    SQL extension and catalog; ``url`` is what ``SPARK_REMOTE`` takes. Its Python workers run ``python``.
    It serves a test's few small jobs, so its JVM has the quick compiler only (etl.spark.QUICK_COMPILER) and
    the serial collector, and its plans run interpreted (etl.spark.INTERPRETED_PLANS), as a short job's do."""

    def __init__(self, folder: Path, python: str = sys.executable, cores: int = 2, env: dict | None = None):
        self.folder, self.python, self.cores = folder, python, cores
        self.jars = resolved_jars([DELTA_PACKAGE])
        # The server's driver and block manager get ports of their own: left to the system, the driver once
        # took the port chosen here for Spark Connect, whose service then failed to bind and the server exited.
        self.port, self.driver_port, self.block_manager_port = free_ports(3)
        self.url = f"sc://127.0.0.1:{self.port}"
        self.env = {**(env or os.environ), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": python}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "ConnectServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "spark.connect.grpc.binding.port": str(self.port),
            "spark.driver.port": str(self.driver_port), "spark.blockManager.port": str(self.block_manager_port),
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.sql.shuffle.partitions": "8", "spark.databricks.delta.snapshotPartitions": "2",
            **INTERPRETED_PLANS,
        }
        submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
        command = [str(submit), "--class", CONNECT_SERVER, "--master", f"local[{self.cores}]", "--driver-memory", "3g",
                   "--driver-java-options", f"{QUICK_COMPILER} -XX:+UseSerialGC", "--jars", ",".join(self.jars)]
        for key, value in settings.items():
            command += ["--conf", f"{key}={value}"]
        log = open(self.folder / "server.log", "w")
        self.process = subprocess.Popen(command, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline and self.process.poll() is None:
            if _listening(self.port):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Spark Connect server did not start:\n{(self.folder / 'server.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
