"""Writing and reading the pipeline's Delta tables through Spark, the same way everywhere. Small tables
read on the driver without a Spark job go through delta-rs (shards.provenance.open_delta_table).

``delta.tables`` is imported where it is used: under spark-submit's ``--packages``, Delta's Python
module may come from its jar, which is on Python's path only once the SparkContext has started.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from .paths import to_spark_path


def write_table(
    df: DataFrame,
    path: str,
    *,
    partition_by: list[str] | None = None,
    replace_where: str | None = None,
    properties: dict[str, str] | None = None,
) -> None:
    """Overwrite a Delta table (or the slice `replace_where` names): reruns replace, never append."""
    path = to_spark_path(path)
    writer = df.write.format("delta").mode("overwrite")
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    else:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)
    if properties:
        set_properties(df.sparkSession, path, properties)


def set_properties(spark: SparkSession, path: str, properties: dict[str, str]) -> None:
    assignments = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(properties.items()))
    spark.sql(f"ALTER TABLE delta.`{to_spark_path(path)}` SET TBLPROPERTIES ({assignments})")


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(to_spark_path(path))


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, to_spark_path(path))


def table_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, to_spark_path(path)).history(1).select("version").collect()
    return int(history[0]["version"])


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, to_spark_path(path)).detail().select("properties").collect()[0]["properties"]


def create_table_if_not_exists(spark: SparkSession, path: str, columns: list[tuple[str, str, bool]],
                               properties: dict[str, str]) -> None:
    """An empty table with ``columns`` (name, SQL type, nullable) and ``properties``, unless one is there."""
    from delta.tables import DeltaTable

    builder = DeltaTable.createIfNotExists(spark).location(to_spark_path(path))
    for name, sql_type, nullable in columns:
        builder = builder.addColumn(name, sql_type, nullable=nullable)
    for key, value in properties.items():
        builder = builder.property(key, value)
    builder.execute()


def append_rows(df: DataFrame, path: str) -> None:
    """Append to a Delta table (creating it): for logs of what happened, never for data a rerun rewrites."""
    df.write.format("delta").mode("append").save(to_spark_path(path))


def merge_into(spark: SparkSession, path: str, source: DataFrame, key: str):
    """A MERGE of ``source`` (aliased ``s``) into the table (aliased ``t``) on equal ``key``: the builder,
    for the caller to add its clauses and ``execute()``."""
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, to_spark_path(path)).alias("t").merge(source.alias("s"), f"t.`{key}` = s.`{key}`")


def insert_new_rows(spark: SparkSession, path: str, rows: DataFrame, key: str, evolve_schema: bool = False) -> None:
    """A MERGE that only inserts: the rows whose ``key`` the table lacks; rows it has stay as they are.
    ``evolve_schema``: columns the table lacks are added to it."""
    merge = merge_into(spark, path, rows, key)
    if evolve_schema:
        merge = merge.withSchemaEvolution()
    merge.whenNotMatchedInsertAll().execute()


def delete_rows(spark: SparkSession, path: str, key: str, targets: DataFrame) -> None:
    """Delete the rows whose ``key`` is one of ``targets.id``, and rewrite the files that held them."""
    from delta.tables import DeltaTable

    # A MERGE rather than DELETE ... IN (...): the ids never enter the table's log.
    DeltaTable.forPath(spark, to_spark_path(path)).alias("t").merge(
        targets.alias("e"), f"t.`{key}` = e.id").whenMatchedDelete().execute()
    # Deletion vectors (on by default on Databricks) only mark rows deleted: rewrite those files.
    spark.sql(f"REORG TABLE delta.`{to_spark_path(path)}` APPLY (PURGE)").collect()
