"""A class-data archive for the driver JVM that Kiln starts, so a short job does not load Spark twice.

Every ``python -m etl`` command, notebook and test that starts Spark itself starts a new JVM, which
then loads and verifies some 20,000 classes of Spark, Delta and their libraries from jar files.
Java 17 can write the classes a run loaded to an archive when it exits (``-XX:ArchiveClassesAtExit``)
and map that archive at the next start (``-XX:SharedArchiveFile``). Measured on the 2-core
development VM: a session's start fell from 5.1 s to 3.1 s, and the first Delta write, read,
replaceWhere and ALTER TABLE after it from 9.6 s to 7.8 s (best of two each).

The archive lives in Kiln's cache (``etl.spark.cache_dir``), one per Java, pyspark, jar list and
driver memory, about 190 MB. The first ``python -m etl run`` or ``refresh`` without one writes it
when it ends, if it succeeded (see WRITE_AT_EXIT): that end waits for the JVM's dump, ten seconds or
so, once. A JVM given a truncated or altered archive crashes (SIGBUS) instead of ignoring it, so a
dump becomes the archive only after its JVM exited cleanly and another JVM mapped it with its
checksum verified, and then by a hard link that fails if another command got there first; every
JVM that maps it verifies the checksum again (0.1 s). Set ``KILN_JVM_ARCHIVE=off`` to start without.
"""
from __future__ import annotations

import atexit
import glob
import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

# Whether this process may write the archive. A JVM recording its classes runs slower (at 10,000
# documents the minhash-only run's ingest took 14.1 s against 12.1 s, its minhash step 18.9 s against
# 16.9 s), which a notebook or a test session would pay for as long as it lives; so only `python -m
# etl run|refresh`, whose process ends with its job, sets this, and clears it again when the command
# fails (its classes would be a poor archive). Every other process maps an archive that exists.
WRITE_AT_EXIT = False

# The JVM's own messages about the archive (one it cannot use, classes it skips while dumping) are
# not the user's concern: without the archive the JVM simply loads classes from the jars.
_QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off")
_STALE_SECONDS = 3600  # a dump of another host's process, or this old, is an abandoned one
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def java_binary() -> Path | None:
    """The java Spark's launcher runs: JAVA_HOME's bin/java (which may be missing), else the one on PATH;
    None when JAVA_HOME is unset and no java is on PATH."""
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


def _archive_path(cache: Path, java: Path, conf: dict[str, str]) -> Path:
    """One archive per everything that decides whether a JVM can map it: the Java, the class path
    (pyspark's jars, spark.jars, extra class paths) and the heap size (above 32 GB the JVM's base
    archive differs)."""
    import pyspark

    key = "\n".join([
        str(java), str(java.stat().st_mtime_ns), os.path.dirname(pyspark.__file__), pyspark.__version__,
        conf.get("spark.jars", ""), conf.get("spark.driver.extraClassPath", ""), conf.get("spark.driver.memory", ""),
        os.environ.get("SPARK_DIST_CLASSPATH", ""),
    ])
    return cache / "jvm" / f"spark-classes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


class DriverArchive:
    """The JVM options for a driver this process starts, and what to do when that JVM exits."""

    def __init__(self, cache: Path, conf: dict[str, str]):
        """`conf`: the session's settings (etl.spark.driver_java_options makes none when the user
        gives driver JVM options)."""
        self.options = ""
        self._dump: Path | None = None
        java = java_binary()
        if os.environ.get("KILN_JVM_ARCHIVE", "on").lower() in ("off", "0", "false", "no") or java is None:
            return
        if (_java_major(java) or 0) < 17:
            return
        self._java = java
        self._archive = archive = _archive_path(cache, java, conf)
        try:
            archive.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # a cache Kiln cannot write to: start without an archive
        _remove_stale_dumps(archive.parent)
        if archive.exists():
            self.options = " ".join(_mapping(archive))
        elif WRITE_AT_EXIT:
            self._dump = archive.with_name(f"{archive.name}.{_HOST}.{os.getpid()}.dump")
            self.options = " ".join([f"-XX:ArchiveClassesAtExit={self._dump}", *_QUIET])

    def adopt_at_exit(self, proc) -> None:
        """When this process ends, stop Spark and keep the dump of its JVM (`proc`, the gateway's
        process, started by this session with self.options) if it is sound."""
        if self._dump is not None and proc is not None and proc.stdin is not None:
            atexit.register(self._finish, proc)

    def _finish(self, proc) -> None:
        from pyspark.sql import SparkSession

        try:
            active = SparkSession.getActiveSession()
            if active is not None:
                active.stop()
            if not WRITE_AT_EXIT or self._archive.exists():
                return  # the JVM dumps as it exits after us; a later session removes that dump
            proc.stdin.close()  # the gateway exits when its stdin closes, and then writes the dump
            proc.wait(timeout=300)
            if proc.returncode == 0 and self._dump.exists() and self._maps(self._dump):
                _adopt(self._dump, self._archive)
        except Exception:  # noqa: BLE001 - at exit, with Spark half gone, nothing may fail the process
            pass  # no archive this time; the next command tries again
        if proc.poll() is not None:
            self._dump.unlink(missing_ok=True)

    def _maps(self, archive: Path) -> bool:
        """Whether a JVM maps `archive` and its checksum holds. A crash's report stays in the cache."""
        folder = archive.parent
        done = subprocess.run(
            [str(self._java), *_mapping(archive), f"-XX:ErrorFile={folder / 'hs_err_%p.log'}",
             "-XX:-CreateCoredumpOnCrash", "-version"],
            cwd=folder, capture_output=True, timeout=60)
        return done.returncode == 0


def _mapping(archive: Path) -> list[str]:
    """JVM options that map `archive`, its checksum verified (a damaged one would crash the JVM)."""
    return [f"-XX:SharedArchiveFile={archive}", "-XX:+VerifySharedSpaces", *_QUIET]


def _adopt(dump: Path, archive: Path) -> None:
    """The dump becomes the archive, never replacing one another command kept first (a JVM may have
    it mapped); a file system without hard links gets a rename instead."""
    try:
        os.link(dump, archive)
    except FileExistsError:
        pass
    except OSError:
        if not archive.exists():
            dump.replace(archive)


def _remove_stale_dumps(folder: Path) -> None:
    """Dumps nobody will adopt: of a process on this host that is gone (killed, failed, or one that
    found an archive already there), or over an hour old (another host's, or abandoned)."""
    now = time.time()
    for path in glob.glob(os.path.join(glob.escape(str(folder)), "*.dump")):
        host, pid = (Path(path).name.rsplit(".", 3) + ["", ""])[1:3]
        try:
            stale = (host == _HOST and pid.isdigit() and not _alive(int(pid))) or now - os.path.getmtime(path) > _STALE_SECONDS
            if stale:
                os.unlink(path)
        except OSError:
            pass  # removed meanwhile by another process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
