"""Inputs named as catalog tables, read through Spark's Hive-backed session catalog (an embedded Derby
metastore, which ships with pyspark), so that a table written by one job is there for the next, as on
Databricks. Every command is a separate process, run as a user types it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from tests.training.subprocess_env import child_env

DOCS = [{"id": f"d{i}", "text": f"Document number {i} talks about kilns, clay and glazes at some length. " * (1 + i % 3)}
        for i in range(20)]
DOCS.append({"id": "d20", "text": DOCS[19]["text"]})  # an exact duplicate


def hive_conf(work: Path) -> dict[str, str]:
    """A persistent session catalog under ``work``: Derby's metastore and the managed tables' warehouse."""
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(work / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={work / 'metastore_db'};create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work}",
    }


def run(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=work, env=child_env(KILN_SPARK_MASTER="local[2]"),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """A folder whose Hive catalog holds the Delta table kiln_src.docs, written by an earlier job."""
    work = tmp_path_factory.mktemp("catalog")
    with open(work / "docs.jsonl", "w") as handle:
        handle.writelines(json.dumps(doc) + "\n" for doc in DOCS)
    script = textwrap.dedent(f"""\
        from etl.spark import get_spark
        spark = get_spark("make-table", {hive_conf(work)!r})
        spark.sql("CREATE DATABASE kiln_src")
        spark.read.json("docs.jsonl").write.format("delta").saveAsTable("kiln_src.docs")
        """)
    done = run(work, "-c", script)
    assert done.returncode == 0, done.stderr[-4000:]
    return work


def write_config(work: Path, table: str) -> str:
    config = {"output": "out", "report": False, "spark_conf": hive_conf(work),
              "inputs": [{"table": table, "source": "web", "id_field": "id"}], "stages": [{"name": "fix_encoding"}]}
    (work / "pipeline.yaml").write_text(yaml.safe_dump(config))
    return "pipeline.yaml"


def test_an_input_names_a_table_in_the_catalog(catalog):
    done = run(catalog, "-m", "etl", "run", write_config(catalog, "kiln_src.docs"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    kept = DeltaTable(str(catalog / "out" / "fix_encoding")).to_pyarrow_table(columns=["id", "text"]).to_pylist()
    assert sorted((row["id"], row["text"]) for row in kept) == sorted((f"web/{d['id']}", d["text"]) for d in DOCS)


def test_a_missing_catalog_table_is_one_line_naming_it_and_the_fix(catalog):
    done = run(catalog, "-m", "etl", "run", write_config(catalog, "kiln_src.missing"))
    assert done.returncode == 2, (done.stdout + done.stderr)[-4000:]
    assert done.stderr.splitlines()[-1] == (
        "config error: input 'web': no table kiln_src.missing in Spark's catalog (the current schema is "
        "spark_catalog.default): create it or correct the name (db.name, or catalog.schema.table on Unity "
        "Catalog); a table that outlives the job needs a persistent catalog: Databricks' own, or "
        "spark.sql.catalogImplementation=hive on plain Spark"), done.stderr[-4000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("entry, message", [
    ({"source": "web"}, "input 'web': give a path (files or a Delta folder) or a table (a catalog name), one of the two"),
    ({"source": "web", "path": "in/*.jsonl", "table": "db.docs"}, "one of the two"),
    ({"source": "web", "table": "docs", "id_field": "id"}, "table 'docs' is not a catalog name: db.name or catalog.schema.table"),
    ({"source": "web", "table": "db.docs"}, "a catalog table needs id_field"),
    ({"source": "web", "table": "db.docs", "id_field": "id", "format": "parquet"}, "format 'parquet' does not apply to a catalog table"),
])
def test_table_inputs_are_checked_when_the_config_loads(entry, message):
    from etl.config import InputSpec

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InputSpec(**entry)

