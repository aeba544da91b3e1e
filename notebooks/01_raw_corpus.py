# Databricks notebook source
# MAGIC %md
# MAGIC # Raw corpus
# MAGIC What came in: documents per source, their lengths, a sample of them, and what ingest rejected and why.
# MAGIC This notebook reads the **raw zone** (`ingest`, `rejected`): text as it arrived, personal data included.

# COMMAND ----------

OUTPUT = globals().get("OUTPUT", "demo_out/etl")  # the pipeline's output root
if "dbutils" in globals():  # Databricks: a widget, filled by a job's parameters or by hand
    dbutils.widgets.text("OUTPUT", OUTPUT)
    OUTPUT = dbutils.widgets.get("OUTPUT")
SAMPLE_DOCS = 5
HISTOGRAM_ROWS = 50_000  # lengths sampled to the driver for the histogram

import matplotlib.pyplot as plt
import numpy as np
from pyspark.sql import functions as F

from etl.paths import join_path
from etl.delta import read_table
from etl.spark import get_spark

spark = get_spark("kiln-notebook")  # the active session when there is one (Databricks, a test)
ingest = read_table(spark, join_path(OUTPUT, "ingest"))
rejected = read_table(spark, join_path(OUTPUT, "rejected")).where(F.col("stage") == "ingest")
documents = ingest.count()
print(f"{documents:,} documents read, {rejected.count():,} records rejected at ingest")

# COMMAND ----------

# MAGIC %md ## Documents per source

# COMMAND ----------

display(
    ingest.groupBy("source")
    .agg(F.count("*").alias("documents"), F.sum(F.length("text")).alias("characters"),
         F.percentile_approx(F.length("text"), 0.5).alias("median_chars"), F.max(F.length("text")).alias("max_chars"))
    .orderBy(F.desc("documents"))
)

# COMMAND ----------

# MAGIC %md ## Document lengths (characters, log scale)

# COMMAND ----------

lengths = (
    ingest.sample(fraction=min(1.0, HISTOGRAM_ROWS / max(documents, 1)), seed=0)
    .select("source", F.length("text").alias("chars")).toPandas()
)
bins = np.logspace(0, np.log10(max(lengths["chars"].max(), 10)), 50)
fig, ax = plt.subplots(figsize=(8, 3.5))
for source, group in lengths.groupby("source"):
    ax.hist(group["chars"].clip(lower=1), bins=bins, alpha=0.6, label=source)
ax.set_xscale("log")
ax.set_xlabel("characters")
ax.set_ylabel("documents")
ax.legend()

# COMMAND ----------

# MAGIC %md ## A sample of documents

# COMMAND ----------

sample = ingest.sample(fraction=min(1.0, 20 * SAMPLE_DOCS / max(documents, 1)), seed=1).limit(SAMPLE_DOCS)
for row in sample.select("id", "source", "text").collect():
    print(f"--- {row['id']} ({row['source']}, {len(row['text']):,} chars)\n{row['text'][:600]}\n")

# COMMAND ----------

# MAGIC %md ## Rejected at ingest, and why

# COMMAND ----------

display(rejected.groupBy("source", "reason").count().orderBy(F.desc("count")))
display(rejected.select("id", "reason", "detail", F.substring("text", 1, 80).alias("text_start")).orderBy("reason", "id"))
