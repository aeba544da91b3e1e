# Databricks notebook source
# MAGIC %md
# MAGIC # A training run
# MAGIC Loss, learning rate and throughput from `metrics.jsonl`, the loss curve the trainer drew, the run's journal
# MAGIC (`training_log.md`) and the dataset version it trained on. Plain pandas and JSON: no Spark, no torch.

# COMMAND ----------

RUN_DIR = globals().get("RUN_DIR", "demo_out/runs/demo")  # <output_dir>/<name> of the run
if "dbutils" in globals():  # Databricks: a widget, filled by a job's parameters or by hand
    dbutils.widgets.text("RUN_DIR", RUN_DIR)
    RUN_DIR = dbutils.widgets.get("RUN_DIR")

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from shards import dataset_fingerprint, read_manifest, version_path

run = Path(RUN_DIR)
metrics = pd.read_json(run / "metrics.jsonl", lines=True)
steps = metrics.dropna(subset=["loss"]).dropna(axis=1, how="all").set_index("step")
evals = metrics.dropna(subset=["eval_loss"]).set_index("step") if "eval_loss" in metrics else pd.DataFrame()
print(f"{run.name}: {len(steps)} logged steps, last step {steps.index.max()}, "
      f"loss {steps['loss'].iloc[0]:.3f} -> {steps['loss'].iloc[-1]:.3f}")
display(steps.tail(5))

# COMMAND ----------

# MAGIC %md ## Curves

# COMMAND ----------

fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
axes[0].plot(steps.index, steps["loss"], label="train")
if len(evals):
    axes[0].plot(evals.index, evals["eval_loss"], "o-", label="eval")
axes[0].set_title("loss (nats/token)")
axes[0].legend()
axes[1].plot(steps.index, steps["lr"])
axes[1].set_title("learning rate")
axes[2].plot(steps.index, steps["tokens_per_s"])
axes[2].set_title("tokens/s")
for ax in axes:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)

# COMMAND ----------

# MAGIC %md ## The trainer's loss curve (`loss.png`)

# COMMAND ----------

if (run / "loss.png").exists():
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.imshow(plt.imread(run / "loss.png"))
    ax.axis("off")
else:
    print("no loss.png: the run had logging.plot off, or has not finished")

# COMMAND ----------

# MAGIC %md ## Journal: starts, checkpoints, restarts, failures

# COMMAND ----------

print((run / "training_log.md").read_text())

# COMMAND ----------

# MAGIC %md ## The data it trained on
# MAGIC Each dataset's pinned version; the fingerprint check says whether that version still holds the same data.

# COMMAND ----------

info = json.loads((run / "run_info.json").read_text())
display(pd.DataFrame(info["data"]["train"]))
for source in info["data"]["train"]:
    if source["version"] is None:
        print(f"{source['path']}: a plain MDS folder, no manifest")
        continue
    manifest = read_manifest(version_path(source["path"], source["version"]))
    same = dataset_fingerprint(manifest) == source["fingerprint"]
    print(f"{source['path']} v={manifest.version}: created {manifest.created_at}, {sum(manifest.num_tokens.values()):,} tokens, "
          f"tokenizer {manifest.tokenizer_hash[:12]}, fingerprint {'matches' if same else 'DIFFERS: the version was rewritten'}")
