"""The Spark session as `python -m etl run` starts it, in a subprocess from a fresh working directory:
a missing Java is one line naming the fix, Delta's jars are fetched once into the user's cache
directory (Ivy's report never reaches the terminal) and every step shows a live progress line."""
from __future__ import annotations

import json
import logging
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IVY_LINES = (":: resolving dependencies", "Ivy Default Cache", ":: retrieving ::", "confs: [default]")


def _tiny_pipeline(folder: Path) -> None:
    """A two-step pipeline (ingest, fix_encoding) over 40 short documents, with relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w") as handle:
        for i in range(40):
            handle.write(json.dumps({"id": f"d{i}", "text": f"Document {i} is about the sea and the weather. " * 8}) + "\n")
    (folder / "pipeline.yaml").write_text(
        "output: out\ninputs:\n  - {path: docs.jsonl, source: web, id_field: id}\nstages:\n  - name: fix_encoding\n")


def _etl_env(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "KILN_SPARK_MASTER": "local[2]", "OMP_NUM_THREADS": "1"}
    for key in ("AWS_ENDPOINT_URL", "KILN_SPARK_S3", "PYTHONPATH"):  # a local run: no s3a jars
        env.pop(key, None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def test_missing_java_or_jars_is_one_line_naming_the_fix(tmp_path):
    _tiny_pipeline(tmp_path)
    no_java = tmp_path / "bin"
    no_java.mkdir()
    cmd = [sys.executable, "-m", "etl", "run", "pipeline.yaml"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_etl_env(PATH=str(no_java), JAVA_HOME=None))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: Java not found (no `java` on PATH and JAVA_HOME is not set): Spark needs Java 17; "
        "install it (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_etl_env(JAVA_HOME=str(no_java)))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: JAVA_HOME={no_java} holds no bin/java: point JAVA_HOME at a Java 17 installation")
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_etl_env(KILN_SPARK_JARS=str(no_java)))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: KILN_SPARK_JARS={no_java} holds no .jar files"
    assert not (tmp_path / "out").exists()


def _run_on_a_terminal(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal, as in a shell; returns (exit status, stdout, stderr)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    stdout = proc.stdout.read().decode()
    return proc.wait(timeout=60), stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.timeout(1200)
def test_jars_fetched_once_into_the_user_cache_quietly_with_a_progress_line(tmp_path):
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    _tiny_pipeline(work)
    ivy = xdg / "kiln" / "ivy"
    shared = ROOT / ".cache" / "ivy" / "cache"
    if shared.is_dir():  # Ivy's download cache from earlier runs: resolved offline, same output
        ivy.mkdir(parents=True)
        (ivy / "cache").symlink_to(shared)
    # The class archive a first run in a fresh cache writes (tests/etl/test_jvm_archive.py) would add its
    # recording and dump, about 10 s, to a test of the jars.
    env = _etl_env(KILN_CACHE=None, XDG_CACHE_HOME=str(xdg), KILN_PROGRESS_SECONDS="1", KILN_JVM_ARCHIVE="off")
    cmd = [sys.executable, "-m", "etl", "run", "pipeline.yaml"]

    first = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stderr
    assert f"fetching Delta Lake jars from Maven Central (once) into {ivy}\n" in first.stderr
    assert not [line for line in first.stderr.splitlines() if line.startswith(IVY_LINES)], first.stderr
    assert not (work / ".cache").exists()  # nothing cached in the working directory
    # stderr is not a terminal here: a plain line per KILN_PROGRESS_SECONDS while a step runs.
    assert "[ingest 1/2] " in first.stderr and "[fix_encoding 2/2] " in first.stderr, first.stderr

    status, stdout, stderr = _run_on_a_terminal(cmd, work, env)
    assert status == 0, stderr
    assert "fetching" not in stderr and not any(marker in stderr for marker in IVY_LINES), stderr
    # On a terminal one line is rewritten in place: carriage return, text, erase to the end of line.
    assert "\r[fix_encoding 2/2] " in stderr and "\x1b[K" in stderr, stderr
    assert "Spark stage " in stderr and " tasks (" in stderr, stderr
    assert "done: 40 documents kept" in stdout



@pytest.mark.spark
def test_progress_is_off_at_log_level_error(spark, capsys, monkeypatch):
    from etl.progress import step_progress

    monkeypatch.setenv("KILN_PROGRESS_SECONDS", "0")
    etl_logger = logging.getLogger("etl")
    monkeypatch.setattr(etl_logger, "level", logging.WARNING)
    with step_progress(spark, "count", 1, 1):
        spark.range(1000).count()
        time.sleep(1.2)
    assert "[count 1/1] " in capsys.readouterr().err
    etl_logger.setLevel(logging.ERROR)
    with step_progress(spark, "count", 1, 1):
        spark.range(1000).count()
        time.sleep(1.2)
    assert capsys.readouterr().err == ""


def test_log_level_sets_python_logging_and_spark(monkeypatch):
    from etl.__main__ import build_parser, configure_logging

    monkeypatch.delenv("KILN_SPARK_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    args = build_parser().parse_args(["run", "pipeline.yaml", "--log-level", "WARNING"])
    configure_logging(args.log_level)
    assert root.level == logging.WARNING and os.environ["KILN_SPARK_LOG_LEVEL"] == "WARN"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "pipeline.yaml", "--log-level", "LOUD"])
