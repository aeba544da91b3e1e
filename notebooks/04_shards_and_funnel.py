# Databricks notebook source
# MAGIC %md
# MAGIC # Shards and the funnel
# MAGIC The dataset versions `shuffle_and_write` published (their manifests), a few samples decoded back to text,
# MAGIC and the run's funnel: documents in, kept and rejected at every stage.

# COMMAND ----------

OUTPUT = globals().get("OUTPUT", "demo_out/etl")  # the pipeline's output root
TOKENIZER = globals().get("TOKENIZER", "demo_out/tokenizer")  # the tokenizer the dataset was made with
if "dbutils" in globals():  # Databricks: widgets, filled by a job's parameters or by hand
    dbutils.widgets.text("OUTPUT", OUTPUT)
    dbutils.widgets.text("TOKENIZER", TOKENIZER)
    OUTPUT, TOKENIZER = dbutils.widgets.get("OUTPUT"), dbutils.widgets.get("TOKENIZER")
SAMPLES = 3
FUNNEL_PLOT = "plot_0_stage.png"  # etl/report.py writes the funnel as its first plot

import io
import json

import matplotlib.pyplot as plt
import pandas as pd

from etl.paths import join_path
from etl.delta import read_table
from etl.paths import to_fsspec_url
from etl.spark import get_spark
from etl.dataset.shuffle_write import ShuffleWriteParams
from etl.dataset.tokenizer import load_tokenizer
from shards import MDSReader, dataset_fingerprint, list_versions, read_manifest, split_path, storage, version_path
from shards.config import from_dict

spark = get_spark("kiln-notebook")  # the active session when there is one (Databricks, a test)
report = json.loads(storage.read_bytes(to_fsspec_url(join_path(OUTPUT, "report", "funnel.json"))))
write_params = next(s["params"] for s in report["config"]["stages"] if s["name"] == "shuffle_and_write")
dataset_root = to_fsspec_url(from_dict(ShuffleWriteParams, write_params).dataset_root or join_path(OUTPUT, "dataset"))

# COMMAND ----------

# MAGIC %md ## Dataset versions

# COMMAND ----------

manifests = [read_manifest(version_path(dataset_root, v)) for v in list_versions(dataset_root)]
display(pd.DataFrame([{
    "version": m.version, "created_at": m.created_at, "seq_len": m.seq_len, "vocab_size": m.vocab_size,
    **{f"samples_{s}": n for s, n in m.num_samples.items()}, **{f"tokens_{s}": n for s, n in m.num_tokens.items()},
    "tokenizer_hash": m.tokenizer_hash[:12], "fingerprint": dataset_fingerprint(m)[:12],
} for m in manifests]))
manifest = manifests[-1]
print(f"newest: {version_path(dataset_root, manifest.version)}; made from these Delta table versions:")
display(pd.DataFrame(manifest.source_tables))

# COMMAND ----------

# MAGIC %md ## A few samples, decoded
# MAGIC Special tokens are kept, so document boundaries (EOS) show inside the packed samples.

# COMMAND ----------

tokenizer = load_tokenizer(TOKENIZER)
if tokenizer.sha256 != manifest.tokenizer_hash:
    print(f"warning: {tokenizer.url} is not the tokenizer of v={manifest.version} (hash differs): the text below is wrong")
for split in manifest.splits:
    reader = MDSReader(split_path(version_path(dataset_root, manifest.version), split))
    print(f"=== {split}: {len(reader):,} samples in {reader.num_shards} shard(s), columns {reader.columns}")
    for index in range(min(SAMPLES, len(reader))):
        sample = reader[index]
        text = tokenizer.tokenizer.decode(sample["tokens"].tolist(), skip_special_tokens=False)
        print(f"--- sample {index} (bucket {sample['bucket']}, index {sample['bucket_index']})\n{text[:500]}\n")

# COMMAND ----------

# MAGIC %md ## The funnel
# MAGIC From the report the pipeline wrote (`report/funnel` in Delta, `report/funnel.json`, `report/report.html`).

# COMMAND ----------

funnel = read_table(spark, join_path(OUTPUT, "report", "funnel")).orderBy("step").toPandas()
funnel["kept_%"] = (100 * funnel["docs_out"] / funnel["docs_in"].where(funnel["docs_in"] > 0)).round(1)
funnel["rejected"] = funnel["rejected"].map(lambda reasons: ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())))
display(funnel[["stage", "docs_in", "docs_out", "kept_%", "chars_out", "rejected"]])

png = storage.read_bytes(to_fsspec_url(join_path(OUTPUT, "report", FUNNEL_PLOT)))
fig, ax = plt.subplots(figsize=(9, 4.5))
ax.imshow(plt.imread(io.BytesIO(png)))
ax.axis("off")
