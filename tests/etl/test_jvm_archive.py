"""The driver JVM's options: the first `python -m etl run` leaves a class-data archive in Kiln's cache
(etl/jvm_archive.py), the next one starts its JVM from it, and a dump that was never finished is
neither used nor left behind; a command on little local data compiles with C1 only (etl.spark.SHORT_JOB)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from etl import jvm_archive
from etl.jvm_archive import DriverArchive
from etl import spark as etl_spark
from etl.spark import (DELTA_PACKAGE, INTERPRETED_PLANS, QUICK_COMPILER, driver_java_options, resolved_jars, session_conf,
                       user_sets_driver_options)


def _run(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "etl", "run", "pipeline.yaml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_the_second_run_maps_the_classes_the_first_one_archived(tmp_path):
    jars = tmp_path / "jars"  # the suite's jars, so this fresh cache fetches nothing
    jars.mkdir()
    for jar in resolved_jars([DELTA_PACKAGE]):
        os.symlink(jar, jars / os.path.basename(jar))
    cache = tmp_path / "cache"
    env = {**os.environ, "KILN_SPARK_MASTER": "local[2]", "KILN_CACHE": str(cache), "KILN_SPARK_JARS": str(jars)}
    for key in ("AWS_ENDPOINT_URL", "KILN_SPARK_S3", "PYTHONPATH", "JAVA_TOOL_OPTIONS", "KILN_JVM_ARCHIVE"):
        env.pop(key, None)
    with open(tmp_path / "docs.jsonl", "w") as handle:
        for i in range(3):
            handle.write(json.dumps({"id": f"d{i}", "text": f"Note {i}: the tide comes in twice a day."}) + "\n")
    (tmp_path / "pipeline.yaml").write_text("output: out\ninputs: [{path: docs.jsonl, source: notes, id_field: id}]\n"
                                            "stages: [{name: fix_encoding}]\nreport: {enabled: false}\n")
    # Dumps nobody will adopt go: one of a process on this host that died mid-way (pid 2**22 + 1 is
    # above Linux's pid limit), one of another host over an hour old; another host's fresh one stays.
    (cache / "jvm").mkdir(parents=True)
    conf = {"spark.jars": ",".join(sorted(str(j) for j in jars.iterdir())), "spark.driver.memory": "4g"}
    writing = _writing(cache, conf)
    assert writing.options.startswith("-XX:ArchiveClassesAtExit="), writing.options
    archive = writing._archive
    (cache / "jvm" / f"{archive.name}.{jvm_archive._HOST}.{2**22 + 1}.dump").write_bytes(b"\0" * 4096)
    abandoned = cache / "jvm" / f"{archive.name}.elsewhere.1.dump"
    abandoned.write_bytes(b"\0")
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))
    (cache / "jvm" / f"{archive.name}.elsewhere.2.dump").write_bytes(b"\0")

    first = _run(tmp_path, env)
    assert "cds" not in first.stdout + first.stderr  # the JVM's archive messages stay out of the terminal
    assert sorted(p.name for p in (cache / "jvm").iterdir()) == [archive.name, f"{archive.name}.elsewhere.2.dump"]
    assert archive.stat().st_size > 10_000_000
    (cache / "jvm" / f"{archive.name}.elsewhere.2.dump").unlink()

    log = tmp_path / "class-load.txt"  # where each class came from, as the JVM itself reports it
    second = _run(tmp_path, {**env, "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={log} -XX:+PrintCommandLineFlags"})
    sources = [line for line in log.read_text().splitlines() if " org.apache.spark.sql.delta.DeltaLog " in line]
    assert sources and all("source: shared objects file (top)" in line for line in sources), sources
    flags = second.stdout.split()  # a few bytes of input: a short job's JVM, its code cache at the tiered default
    assert "-XX:TieredStopAtLevel=1" in flags and f"-XX:ReservedCodeCacheSize={240 << 20}" in flags, flags
    assert sorted(p.name for p in (cache / "jvm").iterdir()) == [archive.name]


def _writing(cache: Path, conf: dict[str, str]) -> DriverArchive:
    """The archive as `python -m etl run` sees it (it may write one)."""
    jvm_archive.WRITE_AT_EXIT = True
    try:
        return DriverArchive(cache, conf)
    finally:
        jvm_archive.WRITE_AT_EXIT = False


def test_only_etl_commands_write_one_and_none_when_asked(tmp_path, monkeypatch):
    conf = {"spark.jars": "a.jar"}
    assert DriverArchive(tmp_path, conf).options == ""  # a test session, a notebook: no dump
    assert _writing(tmp_path, conf).options.startswith("-XX:ArchiveClassesAtExit=")
    assert _writing(tmp_path, {**conf, "spark.driver.memory": "64g"})._archive != _writing(tmp_path, conf)._archive
    assert _writing(Path("/proc/kiln-cache"), conf).options == ""  # a cache nobody can write to
    monkeypatch.setenv("KILN_JVM_ARCHIVE", "off")
    assert _writing(tmp_path, conf).options == ""


def test_main_called_in_a_process_that_goes_on_writes_none(tmp_path):
    """Tests and scripts call etl.__main__.main() in a process that outlives the command."""
    from etl.__main__ import main

    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert jvm_archive.WRITE_AT_EXIT is False


def test_driver_options_of_the_user_are_found_where_the_launcher_reads_them(tmp_path, monkeypatch):
    for key in ("PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR"):
        monkeypatch.delenv(key, raising=False)
    assert not user_sets_driver_options()
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--driver-java-options -Dx=1 pyspark-shell")
    assert user_sets_driver_options()
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.extraJavaOptions  -Dx=1\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert user_sets_driver_options()


def test_the_quick_compiler_only_for_the_users_none_and_a_short_job(monkeypatch, tmp_path):
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("KILN_JVM_ARCHIVE", "off")
    monkeypatch.setattr(etl_spark, "SHORT_JOB", True)
    assert driver_java_options({}, given_options=False)[0] == QUICK_COMPILER
    assert driver_java_options({}, given_options=True) == ("", None)
    assert driver_java_options({"spark.driver.extraJavaOptions": "-Xss4m"}, given_options=False) == ("", None)
    monkeypatch.setattr(etl_spark, "SHORT_JOB", False)
    assert driver_java_options({}, given_options=False)[0] == ""


def test_a_short_job_runs_its_plans_interpreted_unless_the_config_says_otherwise(monkeypatch):
    monkeypatch.setattr(etl_spark, "SHORT_JOB", True)
    assert INTERPRETED_PLANS.items() <= session_conf(False, {}).items()
    mine = session_conf(False, {"spark.sql.codegen.wholeStage": "true"})
    assert mine["spark.sql.codegen.wholeStage"] == "true" and mine["spark.sql.codegen.factoryMode"] == "NO_CODEGEN"
    monkeypatch.setattr(etl_spark, "SHORT_JOB", False)
    assert not INTERPRETED_PLANS.keys() & session_conf(False, {}).keys()


def test_a_short_job_is_a_program_on_little_local_data(monkeypatch, tmp_path):
    from argparse import Namespace

    from etl.__main__ import _note_job_size
    from etl.config import InputSpec, PipelineConfig, local_data_bytes

    (tmp_path / "in" / "2026").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "in" / "2026" / f"part{i}.jsonl").write_bytes(b"x" * 1000)
    (tmp_path / "in" / "2026" / "part3.jsonl.gz").write_bytes(b"z" * 100)  # about 4x that in text
    (tmp_path / "out" / "table").mkdir(parents=True)
    (tmp_path / "out" / "table" / "part.parquet").write_bytes(b"y" * 500)  # a refresh's and an erasure's table
    (tmp_path / "out" / "_state").mkdir()
    (tmp_path / "out" / "_state" / "index.parquet").write_bytes(b"s" * 50)  # a dedup index: every command reads it
    config = PipelineConfig(output=str(tmp_path / "out"), stages=[],
                            inputs=[InputSpec(path=str(tmp_path / "in" / "**" / "*.jsonl*"), source="web")])
    assert local_data_bytes(config, stop_above=10_000, reads_output=False) == 3000 + 400 + 50
    assert local_data_bytes(config, stop_above=10_000, reads_output=True) == 3000 + 400 + 500 + 50
    assert 1200 < local_data_bytes(config, stop_above=1200, reads_output=False) < 3450  # it stops past the bound
    on_s3 = PipelineConfig(output="s3a://bucket/out", stages=[], inputs=config.inputs)
    a_table = PipelineConfig(output=config.output, stages=[], inputs=[InputSpec(table="db.docs", source="web", id_field="id")])
    assert local_data_bytes(on_s3, 10_000, False) is None and local_data_bytes(a_table, 10_000, False) is None

    monkeypatch.setattr(etl_spark, "SHORT_JOB_BYTES", 3450)
    _note_job_size(Namespace(as_program=True), [config])
    assert etl_spark.SHORT_JOB
    _note_job_size(Namespace(as_program=True), [config], reads_output=True)  # a refresh, an erasure
    assert not etl_spark.SHORT_JOB
    _note_job_size(Namespace(as_program=True), [config, config])  # several configs, one JVM: their sum
    assert not etl_spark.SHORT_JOB
    for program, configs in ((False, [config]), (True, [on_s3])):  # a process that goes on; a size unknown
        monkeypatch.setattr(etl_spark, "SHORT_JOB", True)
        _note_job_size(Namespace(as_program=program), configs)
        assert not etl_spark.SHORT_JOB
