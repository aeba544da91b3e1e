"""Catalog tables through Spark's Hive-backed session catalog (an embedded Derby metastore, which ships with
pyspark), so that a table written by one job is there for the next, as on Databricks: inputs named as
tables, and catalog mode (``catalog: {schema: ...}``), the run's own tables registered there and every
statement naming them so. Every command is a separate process, run as a user types it, or a notebook's
script calling Kiln as docs/cluster.md says."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from etl.spark import INTERPRETED_PLANS, QUICK_COMPILER
from tests.training.subprocess_env import child_env

DOCS = [{"id": f"d{i}", "text": f"Document number {i} talks about kilns, clay and glazes at some length. " * (1 + i % 3)}
        for i in range(20)]
DOCS.append({"id": "d20", "text": DOCS[19]["text"]})  # an exact duplicate


def hive_conf(work: Path) -> dict[str, str]:
    """A persistent session catalog under ``work``: Derby's metastore and the managed tables' warehouse.
    With a short job's interpreted plans and quick compiler, which Kiln leaves to the config when an input
    is a catalog table (its size is not known before Spark starts): the test's jobs are a few rows each.
    The compiler's option is the driver's own, so its JVM starts without Kiln's class archive: named_run's
    four JVMs (the erasure's still its own then) used 105 CPU-seconds against 157 with both compilers and
    the archive."""
    return {
        **INTERPRETED_PLANS, "spark.driver.extraJavaOptions": QUICK_COMPILER,
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(work / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={work / 'metastore_db'};create=true",
    }


def run(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=work, env=child_env(KILN_SPARK_MASTER="local[2]"),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """A folder for a persistent Hive catalog, and the input documents."""
    work = tmp_path_factory.mktemp("catalog")
    with open(work / "docs.jsonl", "w") as handle:
        handle.writelines(json.dumps(doc) + "\n" for doc in DOCS)
    return work


def write_config(work: Path, table: str, **more) -> str:
    config = {"output": "out", "report": False, "spark_conf": hive_conf(work),
              "inputs": [{"table": table, "source": "web", "id_field": "id"}], "stages": [{"name": "fix_encoding"}],
              **more}
    (work / "pipeline.yaml").write_text(yaml.safe_dump(config))
    return "pipeline.yaml"


NAMED = {"output": "named", "catalog": {"schema": "kiln_run1"},
         "stages": [{"name": "exact_dedup", "params": {"incremental": True}}]}


@pytest.fixture(scope="module")
def named_run(catalog) -> dict:
    """An input named as a catalog table, read by two runs in catalog mode, the second in a later job that
    then erases two documents, finds the run's tables by name and switches catalog mode on for other
    outputs. Each job is a notebook's, as on Databricks: the first writes the input table, kiln_src.docs,
    and calls etl.pipeline.run_pipeline in the same session; the later one finds the input table and the
    run's tables in the catalog the first left, calls run_pipeline again, then etl.erase.erase, and does
    the rest in the same JVM, since each start of one with the Hive catalog costs 8-10 s (`python -m etl
    run` on a catalog table: the missing table's test). Returns both jobs and what the later one printed."""
    config = write_config(catalog, "kiln_src.docs", **NAMED)
    notebook = textwrap.dedent(f"""\
        from etl.load_config import load_pipeline_config
        from etl.pipeline import run_pipeline
        from etl.spark import get_spark
        spark = get_spark("notebook", {hive_conf(catalog)!r})
        spark.sql("CREATE DATABASE kiln_src")
        spark.read.json("docs.jsonl").write.format("delta").saveAsTable("kiln_src.docs")
        run_pipeline(*load_pipeline_config({config!r}))
        """)
    first = run(catalog, "-c", notebook)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    (catalog / "erase.txt").write_text("web/d3\nweb/d20\n")  # a kept document and a rejected one
    agree = catalog / "agree"
    script = textwrap.dedent(f"""\
        import json, shutil
        from etl.config import CatalogConfig, InputSpec, PipelineConfig
        from etl.delta import name_tables
        from etl.erase import erase
        from etl.load_config import load_pipeline_config
        from etl.pipeline import run_pipeline
        from etl.spark import get_spark
        from shards.config import ConfigError
        spark = get_spark("run-erase-and-read-by-name", {hive_conf(catalog)!r})
        run_pipeline(*load_pipeline_config({config!r}), spark)  # the second run: overwrites the registered tables
        erase(*load_pipeline_config({config!r}, check_inputs=False), "erase.txt", spark)
        tables = sorted(r.tableName for r in spark.sql("SHOW TABLES IN kiln_run1").collect())
        kept = sorted(r.id for r in spark.table("kiln_run1.exact_dedup").collect())
        rejected = [tuple(r) for r in spark.sql("SELECT stage, reason, count(*) FROM kiln_run1.rejected GROUP BY 1, 2").collect()]
        history = {{t: [r.operation for r in spark.sql(f"DESCRIBE HISTORY kiln_run1.{{t}}").orderBy("version").collect()]
                   for t in tables}}
        location = spark.sql("DESCRIBE DETAIL kiln_run1.exact_dedup__kept_ids").collect()[0].location
        def catalog_mode(output, schema):
            config = PipelineConfig(output=output, inputs=[InputSpec(path="in.jsonl", source="web")], stages=[],
                                    catalog=CatalogConfig(schema=schema))
            try:
                name_tables(spark, config)
            except ConfigError as error:
                return str(error)
        # Another output in the schema that names this output's tables.
        refused = catalog_mode("{catalog}/other", "kiln_run1")
        # Catalog mode switched on for an output that has tables, one of whose registered folders was deleted.
        spark.sql("CREATE SCHEMA kiln_agree")
        spark.range(3).write.format("delta").option("path", "{agree}/out/gone").saveAsTable("kiln_agree.gone")
        spark.range(3).write.format("delta").save("{agree}/out/_state/exact_dedup_index")
        shutil.rmtree("{agree}/out/gone")
        catalog_mode("{agree}/out", "kiln_agree")
        agreed = sorted(r.tableName for r in spark.sql("SHOW TABLES IN kiln_agree").collect())
        print(json.dumps({{"tables": tables, "kept": kept, "rejected": rejected, "history": history, "location": location,
                          "refused": refused, "agreed": agreed}}))
        """)
    found = run(catalog, "-c", script)
    assert found.returncode == 0, found.stderr[-4000:]
    return {"runs": [first, found], "found": json.loads(found.stdout.splitlines()[-1])}


def test_an_input_table_in_catalog_mode_two_runs_and_an_erasure_all_by_name(catalog, named_run):
    """A later job finds the run's tables by name. The writes went through the catalog (their history says
    CREATE OR REPLACE TABLE AS SELECT, not a path WRITE); the second run's DELETE of the rejected rows and
    the erasure's MERGE and VACUUM ran on names."""
    for done in named_run["runs"]:
        # Hive's refusal of a Delta table's columns, which Spark then stores its own way, is not an error.
        assert " ERROR " not in done.stderr, done.stderr[-4000:]
    # The input table's rows, in the table's own folder (external), read there without Spark
    kept = DeltaTable(str(catalog / "named" / "ingest")).to_pyarrow_table(columns=["id", "text"]).to_pylist()
    assert sorted((row["id"], row["text"]) for row in kept) == sorted(
        (f"web/{d['id']}", d["text"]) for d in DOCS if d["id"] not in ("d3", "d20"))  # both erased
    found = named_run["found"]
    assert found["tables"] == ["exact_dedup", "exact_dedup__kept_ids", "ingest", "rejected", "state__exact_dedup_index"], \
        found["tables"]
    assert found["kept"] == sorted(f"web/d{i}" for i in range(20) if i != 3)  # d3 erased
    assert found["rejected"] == []  # d20, d19's duplicate, erased
    assert found["location"].endswith("named/exact_dedup/kept_ids")  # external: the data stays in its folder
    history = found["history"]
    # Each table was created through the catalog (a write to a path would have made version 0 a WRITE) ...
    assert all(operations[0].startswith("CREATE") for operations in history.values()), history
    # ... and the second run's overwrite and its DELETE of the rejected rows, and the erasure's MERGE and
    # VACUUM, on its name.
    assert history["ingest"].count("CREATE OR REPLACE TABLE AS SELECT") == 2, history
    assert history["rejected"][:history["rejected"].index("MERGE")].count("DELETE") == 1, history
    assert all("MERGE" in history[t] and history[t][-1] == "VACUUM END" for t in ("ingest", "exact_dedup", "rejected")), history


def test_catalog_mode_refuses_a_schema_that_names_another_outputs_tables(named_run):
    """The schema names named_run's tables: another output there would send every statement to them (checked
    in named_run's later job; `python -m etl run` prints the message after `config error: `)."""
    assert re.fullmatch(r"catalog: kiln_run1\.`\w+` is the table at \S+/named/[\w/]+, not one of this run's "
                        r"\(under \S+/other\): give each output a schema of its own, or DROP TABLE kiln_run1\.`\w+`",
                        named_run["found"]["refused"]), named_run["found"]["refused"]


def test_catalog_mode_registers_tables_on_disk_and_drops_names_whose_folder_is_gone(named_run):
    """An output with a table on disk its schema lacked (registered) and a registered name whose folder is gone
    (dropped), in named_run's later job."""
    assert named_run["found"]["agreed"] == ["state__exact_dedup_index"]


def test_no_statement_names_a_table_by_its_path_outside_etl_delta():
    """Catalog mode holds only while every statement gets its table's name from etl.delta.sql_name."""
    root = Path(__file__).resolve().parents[2]
    offenders = [str(path.relative_to(root)) for path in (root / "etl").rglob("*.py")
                 if path.name != "delta.py" and "delta.`{" in path.read_text()]
    assert not offenders, offenders


def test_a_missing_catalog_table_is_one_line_naming_it_and_the_fix(catalog):
    """Plain Spark's in-memory catalog, where a table of an earlier job is missing most often (and no Hive
    client starts)."""
    in_memory = {**INTERPRETED_PLANS, "spark.driver.extraJavaOptions": QUICK_COMPILER}
    done = run(catalog, "-m", "etl", "run", write_config(catalog, "kiln_src.missing", spark_conf=in_memory))
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



def test_catalog_mode_refuses_a_catalog_that_ends_with_the_job(spark, tmp_path):
    """The suite's shared session has Spark's default in-memory catalog: its names would be gone next run."""
    from etl.config import CatalogConfig, InputSpec, PipelineConfig
    from etl.delta import name_tables
    from shards.config import ConfigError

    config = PipelineConfig(output=str(tmp_path / "out"), inputs=[InputSpec(path="in.jsonl", source="web")], stages=[],
                            catalog=CatalogConfig(schema="kiln_memory"))
    with pytest.raises(ConfigError, match="catalog: Spark's catalog here is in-memory, gone when the job ends"):
        name_tables(spark, config)
