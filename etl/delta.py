"""Writing and reading the pipeline's Delta tables, the same way everywhere."""
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
