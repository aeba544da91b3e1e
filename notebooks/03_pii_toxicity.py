# Databricks notebook source
# MAGIC %md
# MAGIC # PII and toxicity decisions
# MAGIC What the `pii` stage found and did (counts from the run report), redacted examples, the toxicity scores
# MAGIC around the threshold, and every row removed in the curated zone with its reason.
# MAGIC Only **curated** tables are read (`pii` onwards, `rejected_curated`): no raw personal data is shown here.

# COMMAND ----------

OUTPUT = globals().get("OUTPUT", "demo_out/etl")  # the pipeline's output root
if "dbutils" in globals():  # Databricks: a widget, filled by a job's parameters or by hand
    dbutils.widgets.text("OUTPUT", OUTPUT)
    OUTPUT = dbutils.widgets.get("OUTPUT")
EXAMPLES = 5

import json
import re

import matplotlib.pyplot as plt
import pandas as pd
from pyspark.sql import functions as F

from etl.paths import join_path
from etl.delta import read_table
from etl.paths import to_fsspec_url
from etl.spark import get_spark
from etl.stages.pii import ENTITIES_COLUMN
from etl.stages.toxicity import SCORE_COLUMN, ToxicityParams
from shards import storage
from shards.config import from_dict

spark = get_spark("kiln-notebook")  # the active session when there is one (Databricks, a test)
report = json.loads(storage.read_bytes(to_fsspec_url(join_path(OUTPUT, "report", "funnel.json"))))
steps = {step["stage"]: step for step in report["steps"]}
stage_params = {spec["name"]: spec["params"] for spec in report["config"]["stages"]}

# COMMAND ----------

# MAGIC %md ## Entities found, per type and action

# COMMAND ----------

pii = steps["pii"]["metrics"]
entities = pd.DataFrame([{"entity": name, **found} for name, found in pii["entities"].items()],
                        columns=["entity", "action", "count"])
print(f"{pii['documents_with_pii']:,} of {steps['pii']['docs_in']:,} documents hold PII; "
      f"entities per action: {pii['by_action']}; rejected: {steps['pii']['rejected'] or 'none'}")
display(entities)
if len(entities):
    fig, ax = plt.subplots(figsize=(7, 3))
    for action, group in entities.groupby("action"):
        ax.barh(group["entity"], group["count"], label=action)
    ax.set_xlabel("entities found")
    ax.legend(title="action")

# COMMAND ----------

# MAGIC %md ## Redacted examples
# MAGIC The lines of a few documents that held PII, as they leave the stage.

# COMMAND ----------

REPLACED = re.compile(r"<[A-Z_]+(:[0-9a-f]+)?>|\*{3,}")  # redact: <EMAIL>, hash: <EMAIL:1f0c...>, mask: *****
with_pii = read_table(spark, join_path(OUTPUT, "pii")).where(F.size(ENTITIES_COLUMN) > 0)
for row in with_pii.select("id", ENTITIES_COLUMN, "text").orderBy("id").limit(EXAMPLES).collect():
    lines = [line for line in row["text"].splitlines() if REPLACED.search(line)]
    print(f"--- {row['id']} {dict(row[ENTITIES_COLUMN])}")
    print("\n".join(line[:300] for line in lines) or row["text"][:300], end="\n\n")

# COMMAND ----------

# MAGIC %md ## Toxicity scores
# MAGIC Kept documents carry their score; rejected ones have it in their `detail`.

# COMMAND ----------

toxicity = from_dict(ToxicityParams, stage_params["toxicity"], "toxicity")
rejected = read_table(spark, join_path(OUTPUT, "rejected_curated"))
kept_scores = read_table(spark, join_path(OUTPUT, "toxicity")).select("id", SCORE_COLUMN, "text")
rejected_scores = rejected.where(F.col("stage") == "toxicity").select(
    "id", F.regexp_extract("detail", r"score ([0-9.]+)", 1).cast("float").alias(SCORE_COLUMN), "text")
scores = pd.concat([kept_scores.select(SCORE_COLUMN).toPandas().assign(decision="kept"),
                    rejected_scores.select(SCORE_COLUMN).toPandas().assign(decision="rejected")])
fig, ax = plt.subplots(figsize=(7, 3))
for decision, group in scores.groupby("decision"):
    ax.hist(group[SCORE_COLUMN], bins=40, range=(0, 1), alpha=0.7, label=decision, log=True)
for name, threshold in (("max_score", toxicity.max_score), ("min_score", toxicity.min_score)):
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--")
        ax.text(threshold, ax.get_ylim()[1], f" {name} {threshold}", va="top")
ax.set_xlabel("toxicity score")
ax.legend()

# COMMAND ----------

# MAGIC %md ## Documents nearest the threshold, on either side

# COMMAND ----------

if toxicity.max_score is not None:
    snippet = F.substring("text", 1, 160).alias("text_start")
    print(f"kept, highest scores (max_score {toxicity.max_score})")
    display(kept_scores.orderBy(F.desc(SCORE_COLUMN), "id").select("id", SCORE_COLUMN, snippet).limit(EXAMPLES))
    print("rejected as toxic, lowest scores")
    display(rejected_scores.orderBy(SCORE_COLUMN, "id").select("id", SCORE_COLUMN, snippet).limit(EXAMPLES))

# COMMAND ----------

# MAGIC %md ## Removed in the curated zone, with reasons

# COMMAND ----------

display(rejected.groupBy("stage", "reason").count().orderBy("stage", F.desc("count")))
display(rejected.select("id", "stage", "reason", "detail").orderBy("stage", "reason", "id"))
