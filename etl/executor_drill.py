"""Executor-loss drills: a task that kills its own executor, at a chosen place, once.

A cluster loses executors (a node preempted, a container out of memory) in the middle of stages, and a
pipeline must then finish with the same tables and dataset as an undisturbed run. To test that without
guessing at timings, ``KILN_EXECUTOR_DRILL=STAGE[:PARTITION],...`` in the executors' environment (a
worker's, or ``--conf spark.executorEnv.KILN_EXECUTOR_DRILL=...``) makes the first task of STAGE (that
runs PARTITION, when given) SIGKILL the executor JVM it runs in, at the point the stage calls ``drill``.
"First" is across the whole application: each drill fires once, recorded by creating a marker file in
``KILN_EXECUTOR_DRILL_DIR`` (a folder every worker sees), since Spark re-runs a lost partition in new
stage and task attempts. Unset, ``drill`` costs one environment lookup.
"""
from __future__ import annotations

import os
import signal

DRILL_ENV, DRILL_DIR_ENV = "KILN_EXECUTOR_DRILL", "KILN_EXECUTOR_DRILL_DIR"


def drill(stage: str) -> None:
    """Kill this task's executor when a drill names ``stage`` and this task's partition, the first time."""
    spec = os.environ.get(DRILL_ENV)
    if not spec:
        return
    from pyspark import TaskContext

    task = TaskContext.get()
    if task is None:
        return
    for item in spec.split(","):
        name, _, partition = item.strip().partition(":")
        if name == stage and (not partition or task.partitionId() == int(partition)) and _first_time(item.strip()):
            os.kill(_executor_pid(), signal.SIGKILL)


def _first_time(key: str) -> bool:
    folder = os.environ.get(DRILL_DIR_ENV)
    if not folder:
        raise RuntimeError(f"{DRILL_ENV} needs {DRILL_DIR_ENV}: a folder every worker sees, where each drill "
                           "records that it fired")
    try:
        os.close(os.open(os.path.join(folder, key), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _executor_pid() -> int:
    """The executor JVM: the nearest ancestor of this Python worker that is a java process."""
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"CoarseGrainedExecutorBackend" in cmdline.read():
                return pid
        pid = int(fields[1])  # the parent's pid
    raise RuntimeError("executor drill: no executor JVM among this Python worker's ancestors")
