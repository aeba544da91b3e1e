# Databricks notebook source
# MAGIC %md
# MAGIC # Quality classifier: scores and the documents around the threshold
# MAGIC Scores the documents a `classify` stage reads (or, when the run has none, the last stage's kept
# MAGIC documents) with the classifier, draws the score histogram with the threshold, and prints the
# MAGIC documents just above it (kept) and just below it (removed): read them before choosing a threshold.
# MAGIC Without a `classify` stage and without `MODEL`, a demonstration classifier is trained first
# MAGIC (docstring prose against generated web-like text: `etl/devtools/quality_corpus.py`).

# COMMAND ----------

OUTPUT = globals().get("OUTPUT", "demo_out/etl")  # the pipeline's output root
MODEL = globals().get("MODEL", "")  # a model for a run without a classify stage; "": the run's, or the demo's
MODEL_TYPE = globals().get("MODEL_TYPE", "kiln")  # fasttext, huggingface or kiln
THRESHOLD = globals().get("THRESHOLD", "")  # a threshold to try; "": the run's, or the median score
if "dbutils" in globals():  # Databricks: widgets, filled by a job's parameters or by hand
    for name, value in (("OUTPUT", OUTPUT), ("MODEL", MODEL), ("MODEL_TYPE", MODEL_TYPE), ("THRESHOLD", THRESHOLD)):
        dbutils.widgets.text(name, value)
    OUTPUT, MODEL = dbutils.widgets.get("OUTPUT"), dbutils.widgets.get("MODEL")
    MODEL_TYPE, THRESHOLD = dbutils.widgets.get("MODEL_TYPE"), dbutils.widgets.get("THRESHOLD")
SAMPLE = 20_000  # documents scored here, at most
EXAMPLES = 5

import json
import os
import tempfile

import matplotlib.pyplot as plt
from pyspark.sql import functions as F

from etl.delta import read_table
from etl.paths import join_path, to_fsspec_url
from etl.spark import get_spark
from etl.stages.base import StageContext
from etl.stages.classify import SCORE_COLUMN, Classify, ClassifyParams
from shards import storage
from shards.config import from_dict

spark = get_spark("kiln-notebook")  # the active session when there is one (Databricks, a test)
report = json.loads(storage.read_bytes(to_fsspec_url(join_path(OUTPUT, "report", "funnel.json"))))
steps = [step["stage"] for step in report["steps"]]
stage_params = {spec["name"]: spec["params"] for spec in report["config"]["stages"]}

# COMMAND ----------

# MAGIC %md ## The documents and the classifier

# COMMAND ----------

if "classify" in stage_params:  # the run's own classifier, on the documents its classify stage read
    params = from_dict(ClassifyParams, stage_params["classify"], "classify")
    table = steps[steps.index("classify") - 1]
    run_threshold = params.min_score
    if run_threshold is None:
        run_threshold = next(s for s in report["steps"] if s["stage"] == "classify")["metrics"].get("threshold")
else:
    if not MODEL:
        from etl.classifier_train import TrainSettings, train_classifier
        from etl.devtools import quality_corpus

        folder = tempfile.mkdtemp(prefix="kiln-demo-classifier-")
        files = quality_corpus.write_files(folder, docs_per_source=20)
        MODEL, MODEL_TYPE = os.path.join(folder, "demo.npz"), "kiln"
        train_classifier([files["reference"]], [files["web"]], MODEL, TrainSettings(features=2 ** 18))
    params = ClassifyParams(model_path=MODEL, model_type=MODEL_TYPE)
    table = next(s for s in reversed(steps) if s not in ("tokenize", "shuffle_and_write"))
    run_threshold = None
score_only = ClassifyParams(**{**params.__dict__, "min_score": None, "keep_top_fraction": None})
docs = read_table(spark, join_path(OUTPUT, table))
docs = docs.sample(fraction=min(1.0, SAMPLE / max(docs.count(), 1)), seed=0).limit(SAMPLE)
scored = Classify(score_only).run(docs, StageContext(spark, OUTPUT, "", "notebook")).docs
scores = scored.select("id", SCORE_COLUMN, F.substring("text", 1, 200).alias("text_start")).toPandas()
threshold = float(THRESHOLD) if THRESHOLD else run_threshold if run_threshold is not None else float(scores[SCORE_COLUMN].median())
print(f"{len(scores):,} documents of `{table}` scored by {params.model_type} model {params.model_path}; "
      f"threshold {threshold:.4g} keeps {(scores[SCORE_COLUMN] >= threshold).mean():.1%} of them")

# COMMAND ----------

# MAGIC %md ## Score histogram, and the share kept at a few thresholds

# COMMAND ----------

fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(scores[SCORE_COLUMN], bins=50, color="#55a868")
ax.axvline(threshold, color="black", linestyle="--")
ax.text(threshold, ax.get_ylim()[1], f" threshold {threshold:.3g}", va="top")
ax.set_xlabel(f"{SCORE_COLUMN} ({params.classifier_name})")
ax.set_ylabel("documents")
for q in (0.1, 0.25, 0.5, 0.75, 0.9):
    value = scores[SCORE_COLUMN].quantile(q)
    print(f"threshold {value:.4g} (the {q:.0%} quantile) keeps {(scores[SCORE_COLUMN] >= value).mean():.1%}")

# COMMAND ----------

# MAGIC %md ## The documents nearest the threshold, on either side

# COMMAND ----------

kept = scores[scores[SCORE_COLUMN] >= threshold].sort_values(SCORE_COLUMN).head(EXAMPLES)
removed = scores[scores[SCORE_COLUMN] < threshold].sort_values(SCORE_COLUMN, ascending=False).head(EXAMPLES)
for title, rows in ((f"kept, lowest scores (>= {threshold:.4g})", kept), (f"removed, highest scores (< {threshold:.4g})", removed)):
    print(f"--- {title}")
    for row in rows.itertuples():
        print(f"{getattr(row, SCORE_COLUMN):.4f}  {row.id}  {' '.join(row.text_start.split())[:160]}")
