"""A class-data archive for the driver JVM that Kiln starts, so a short job does not load Spark twice.

Every ``python -m etl`` command, notebook and test that starts Spark itself starts a new JVM, which
then loads and verifies some 20,000 classes of Spark, Delta and their libraries from jar files.
Java 17 can write the classes a run loaded to an archive when it exits (``-XX:ArchiveClassesAtExit``)
and map that archive at the next start (``-XX:SharedArchiveFile``). Measured on the 2-core
development VM: a session's start fell from 5.1 s to 3.1 s, and the first Delta write, read,
replaceWhere and ALTER TABLE after it from 9.6 s to 7.8 s (best of two each).

The archive lives in Kiln's cache (``etl.spark.cache_dir``), one per Java, pyspark and jar list,
about 190 MB. The first ``python -m etl`` command without one writes it at exit (see WRITE_AT_EXIT):
its end waits for the JVM's dump (ten seconds or so, once; a command that starts while none exists
writes its own, and one that ends after another's was kept skips its dump). A JVM given a truncated archive crashes (SIGBUS) instead of ignoring it, so a
dump becomes the archive only after its JVM exited cleanly and a ``java -version`` maps it without
harm, and then by an atomic rename. Set ``KILN_JVM_ARCHIVE=off`` to start without one.
"""
from __future__ import annotations

import atexit
import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

# Whether this process may write the archive. A JVM recording its classes runs slower (at 10,000
# documents the minhash-only run's ingest took 14.1 s against 12.1 s, its minhash step 18.9 s against
# 16.9 s), which a notebook or a test session would pay for as long as it lives; so only `python -m
# etl`, whose process ends with its job, sets this. Every other process maps an archive that exists.
WRITE_AT_EXIT = False

# The JVM's own messages about the archive (one it cannot use, classes it skips while dumping) are
# not the user's concern: without the archive the JVM simply loads classes from the jars.
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def _java() -> Path | None:
    java_home = os.environ.get("JAVA_HOME")
    found = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    return Path(found).resolve() if found else None


def _java_major(java: Path) -> int | None:
    """The major version from the JDK's `release` file (no JVM started to ask); None when unknown."""
    release = java.parent.parent / "release"
    if not release.exists():
        return None
    for line in release.read_text(errors="replace").splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip().strip('"')
            head = version.split(".")[0]
            return int(head) if head.isdigit() else None
    return None


def _archive_path(cache: Path, java: Path, jars: str) -> Path:
    import pyspark

    key = "\n".join([str(java), str(java.stat().st_mtime_ns), os.path.dirname(pyspark.__file__), pyspark.__version__, jars])
    return cache / "jvm" / f"spark-classes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


class DriverArchive:
    """The JVM options for a driver this process starts, and what to do when that JVM exits."""

    def __init__(self, cache: Path, jars: str, given_options: bool = False):
        """`given_options`: the session's conf sets driver JVM options, which Kiln leaves alone."""
        self.options = ""
        self._dump: Path | None = None
        self._archive: Path | None = None
        if given_options or user_sets_driver_options():
            return
        java = _java()
        if os.environ.get("KILN_JVM_ARCHIVE", "on").lower() in ("off", "0", "false", "no") or java is None:
            return
        if (_java_major(java) or 0) < 17:
            return
        archive = _archive_path(cache, java, jars)
        if archive.exists():
            self.options = f"-XX:SharedArchiveFile={archive} {_QUIET}"
            return
        if not WRITE_AT_EXIT:
            return
        _remove_stale_dumps(archive)
        archive.parent.mkdir(parents=True, exist_ok=True)
        self._archive, self._java = archive, java
        self._dump = archive.with_name(f"{archive.name}.{os.getpid()}.dump")
        self.options = f"-XX:ArchiveClassesAtExit={self._dump} {_QUIET}"

    def adopt_at_exit(self, spark) -> None:
        """When this process ends: stop Spark, let its JVM exit and dump, then keep a sound dump."""
        if self._dump is None:
            return
        atexit.register(self._finish, spark)

    def _finish(self, spark) -> None:
        proc = getattr(spark.sparkContext._gateway, "proc", None)
        try:
            spark.stop()
            if proc is None or proc.stdin is None:
                return
            if self._archive.exists():  # another process finished one meanwhile: skip this dump
                proc.kill()
                proc.wait(timeout=60)
                return
            proc.stdin.close()  # the gateway exits when its stdin closes, and then writes the dump
            proc.wait(timeout=300)
            sound = proc.returncode == 0 and self._dump.exists() and subprocess.run(
                [str(self._java), f"-XX:SharedArchiveFile={self._dump}", *_QUIET.split(), "-version"],
                capture_output=True, timeout=60).returncode == 0
            if sound:
                self._dump.replace(self._archive)
        except Exception:  # noqa: BLE001 - at exit, with Spark half gone, nothing may fail the process
            pass  # no archive this time; the next command tries again
        finally:
            self._dump.unlink(missing_ok=True)


def user_sets_driver_options() -> bool:
    """Whether driver JVM options come from where spark-submit's launcher reads them and Kiln's conf
    would override them: PYSPARK_SUBMIT_ARGS or a spark-defaults.conf."""
    if any(flag in os.environ.get("PYSPARK_SUBMIT_ARGS", "") for flag in ("extraJavaOptions", "--driver-java-options")):
        return True
    import pyspark

    folders = [os.environ.get("SPARK_CONF_DIR"), os.path.join(os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__), "conf")]
    for folder in filter(None, folders):
        defaults = Path(folder) / "spark-defaults.conf"
        if defaults.exists() and any(line.strip().startswith("spark.driver.extraJavaOptions")
                                     for line in defaults.read_text(errors="replace").splitlines()):
            return True
    return False


def _alive(dump: str) -> bool:
    """Whether the process named in a dump's file name (<archive>.<pid>.dump) still runs."""
    pid = dump.rsplit(".", 2)[-2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _remove_stale_dumps(archive: Path) -> None:
    """Dumps of processes that died before finishing them (killed, or a JVM that crashed)."""
    for path in glob.glob(f"{archive}.*.dump"):
        if not _alive(path):
            Path(path).unlink(missing_ok=True)
