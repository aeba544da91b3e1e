# Databricks notebook source
# MAGIC %md
# MAGIC # Dedup clusters
# MAGIC How many documents `exact_dedup` and `minhash_dedup` grouped together, the largest groups, and a removed
# MAGIC document next to the one it matched (`etl.dedup_explain`, also `python -m etl dedup-explain OUTPUT ID`).
# MAGIC Both stages run before `pii`: their texts are **raw zone**.

# COMMAND ----------

OUTPUT = globals().get("OUTPUT", "demo_out/etl")  # the pipeline's output root
if "dbutils" in globals():  # Databricks: a widget, filled by a job's parameters or by hand
    dbutils.widgets.text("OUTPUT", OUTPUT)
    OUTPUT = dbutils.widgets.get("OUTPUT")
WIDTH = 140  # characters per line of the side-by-side views

import matplotlib.pyplot as plt
from pyspark.sql import functions as F

from etl.paths import join_path
from etl.dedup_explain import explain, side_by_side, stage_texts
from etl.delta import read_table
from etl.spark import get_spark

spark = get_spark("kiln-notebook")  # the active session when there is one (Databricks, a test)
# One row per document of a group: exact groups are keyed by the kept document, near ones by cluster.
groups = {
    "exact_dedup": read_table(spark, join_path(OUTPUT, "exact_dedup", "kept_ids")).withColumn("group", F.col("kept_id")),
    "minhash_dedup": read_table(spark, join_path(OUTPUT, "minhash_dedup", "clusters")).withColumn("group", F.col("cluster_id")),
}

# COMMAND ----------

# MAGIC %md ## Cluster sizes

# COMMAND ----------

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, (stage, members) in zip(axes, groups.items()):
    sizes = members.groupBy("group").count().groupBy(F.col("count").alias("size")).count().orderBy("size").toPandas()
    ax.bar(sizes["size"].astype(str), sizes["count"])
    ax.set_title(f"{stage}: {int(sizes['count'].sum())} clusters")
    ax.set_xlabel("documents in the cluster (kept one included)")
    ax.set_ylabel("clusters")

# COMMAND ----------

# MAGIC %md ## The largest clusters

# COMMAND ----------

for stage, members in groups.items():
    similarity = F.min("similarity") if "similarity" in members.columns else F.lit(1.0)
    print(stage)
    display(members.groupBy("group", "kept_id").agg(F.count("*").alias("documents"), similarity.alias("min_similarity"))
            .orderBy(F.desc("documents"), "group").limit(10))

# COMMAND ----------

# MAGIC %md ## An exact duplicate next to the document that was kept

# COMMAND ----------

duplicate = groups["exact_dedup"].where(F.col("id") != F.col("kept_id")).orderBy("id").first()
if duplicate is None:
    print("exact_dedup removed no document")
else:
    texts = stage_texts(spark, OUTPUT, [duplicate["id"], duplicate["kept_id"]], stage="exact_dedup")
    print(side_by_side(f"{duplicate['id']} (removed)", texts.get(duplicate["id"], "?"),
                       f"{duplicate['kept_id']} (kept)", texts.get(duplicate["kept_id"], "?"), WIDTH))

# COMMAND ----------

# MAGIC %md ## The least similar near duplicate next to the document it matched
# MAGIC The borderline case: if this pair is not a duplicate, raise the stage's `threshold`.

# COMMAND ----------

near = groups["minhash_dedup"].where(F.col("id") != F.col("kept_id")).orderBy("similarity", "id").first()
print("minhash_dedup removed no document" if near is None else explain(spark, OUTPUT, near["id"], width=WIDTH))
