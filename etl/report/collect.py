"""What the report reads from the run: the funnel per source (from the run's own counts), example rejected documents
(PII redacted, truncated) and the dedup clusters. Plain dicts and lists come out; the page, the plots,
the JSON twin and MLflow are all drawn from them."""
from __future__ import annotations

import threading
from dataclasses import replace
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ..delta import local_dataset, read_table, table_exists
from ..funnel import PipelineRun
from ..paths import join_path
from ..spark import CACHE_LEVEL
from ..stages.pii import PiiParams, PiiRedactor

REJECTED_TABLES = {"rejected": "raw", "rejected_curated": "curated"}  # under the output root: table -> zone
MINHASH = "minhash_dedup"


def rejected_tables(spark: SparkSession, output: str) -> dict[str, str]:
    """The paths of the run's rejected tables that exist, by zone."""
    return {zone: join_path(output, name) for name, zone in REJECTED_TABLES.items()
            if table_exists(spark, join_path(output, name))}


def source_funnel(run: PipelineRun) -> list[dict]:
    """Per step and source: documents, characters and tokens in and out, and documents rejected per reason,
    from the counts the pipeline took of each step's output (``StepCounts.by_source``): no table is read again.

    Tokens are counted at tokenize; before it they are estimated from each source's characters per
    token there (``tokens_exact`` says which). Documents in = out + rejected for every source; the
    characters in are the previous step's out (stages rewrite text: line filtering, redaction)."""
    kept, dropped, tokenized = {}, {}, set()
    for step in run.steps:
        for source, entry in step.by_source.items():
            if entry["tokens"] is not None:
                tokenized.add(step.stage)
            if entry["docs"]:
                kept[(step.stage, source)] = {"n": entry["docs"], "c": entry["chars"], "t": entry["tokens"], "source": source}
            if entry["rejected"]:
                dropped[(step.stage, source)] = {reason: tuple(nc) for reason, nc in entry["rejected"].items()}
    sources = sorted({s for _, s in kept} | {s for _, s in dropped})
    ratio = _tokens_per_char(kept, sources)
    names = [s.stage for s in run.steps]
    chain_end = names.index(run.funnel_end) if run.funnel_end in names else -1
    rows, previous = [], {}
    for i, stage in enumerate(names):
        for source in sources:
            out = kept.get((stage, source))
            exact = stage in tokenized
            n_out, c_out, t_out = (out["n"], out["c"], out["t"]) if out else (0, 0, 0 if exact else None)
            reasons = dropped.get((stage, source), {})
            n_in = n_out + sum(n for n, _ in reasons.values())
            chained = 0 < i <= chain_end
            c_in = previous[source]["chars_out"] if chained else c_out + sum(c for _, c in reasons.values())
            row = {
                "stage": stage, "source": source, "docs_in": n_in, "docs_out": n_out, "chars_in": c_in, "chars_out": c_out,
                "tokens_in": previous[source]["tokens_out"] if chained else _estimate(c_in, ratio.get(source)),
                "tokens_out": t_out if exact else _estimate(c_out, ratio.get(source)),
                "tokens_exact": exact, "rejected": {reason: n for reason, (n, _) in sorted(reasons.items())},
            }
            rows.append(row)
            previous[source] = row
    return rows


def _tokens_per_char(kept: dict, sources: list[str]) -> dict[str, float]:
    """Each source's tokens per character where it was tokenized; the overall ratio for the others."""
    counted = [r for r in kept.values() if r["t"] is not None and r["c"]]
    if not counted:
        return {}
    last = {r["source"]: r["t"] / r["c"] for r in counted}  # every tokenized table holds the same documents
    overall = sum(r["t"] for r in counted) / sum(r["c"] for r in counted)
    return {s: last.get(s, overall) for s in sources}


def _estimate(chars: int, ratio: float | None) -> int | None:
    return None if ratio is None else round(chars * ratio)


class Redactor:
    """What the report shows of a raw-zone document: its text through the pii stage's engine
    (``PiiRedactor``: the configured recognisers and thresholds) with every action set to redact
    (``<EMAIL>``), so no salt is needed and nothing is left half masked. Built on the driver, once,
    in a thread started with the report: loading presidio takes seconds, which pass while the
    driver waits on Spark for the other sections."""

    def __init__(self, params: PiiParams | None):
        self.params = replace(params or PiiParams(), actions={}, default_action="redact")
        self._built: dict = {}
        self._one_at_a_time = threading.Lock()  # the report's sections call it from two threads
        self._loading = threading.Thread(target=self._build, name="kiln-report-presidio", daemon=True)
        self._loading.start()

    def _build(self) -> None:
        try:
            self._built["engine"] = PiiRedactor(self.params, None)
        except Exception as err:  # noqa: BLE001 - raised again where the engine is used
            self._built["error"] = err

    def __call__(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        self._loading.join()
        if "error" in self._built:
            raise self._built["error"]
        with self._one_at_a_time:
            return [text for text, *_ in self._built["engine"].process(texts)]


def _clip(text: str | None, chars: int) -> str:
    text = text or ""
    return text if len(text) <= chars else text[:chars].rstrip() + " …"


# Each section picks a few rows of its tables: on a local run's output of up to LOCAL_ROWS rows, with pyarrow
# on the driver (etl.delta.local_dataset), in 0.02-0.1 s where a few small Spark jobs took 0.4-1.1 s warm
# (3-5 s cold) at 10,000 documents; with Spark elsewhere (a cluster, an object store, catalog mode, Spark
# Connect) and above it, where the driver would hold every id (at a million rejected rows the pick took
# 1.1-2.7 s here, Spark's window 2.6-4.6 s on 2 cores). Both pick the same rows.
LOCAL_ROWS = 2_000_000


def _local_datasets(spark: SparkSession, paths: dict[str, str]) -> dict | None:
    """The tables as pyarrow datasets when every one is local and they hold LOCAL_ROWS rows at most, else None."""
    datasets = {key: local_dataset(spark, path) for key, path in paths.items()}
    if any(dataset is None for dataset in datasets.values()):
        return None
    return datasets if sum(dataset.count_rows() for dataset in datasets.values()) <= LOCAL_ROWS else None


def rejected_examples(spark: SparkSession, rejected: dict[str, str], stages: list[str], per_reason: int, chars: int,
                      redact: Redactor) -> list[dict]:
    """``per_reason`` documents for every (stage, reason), chosen by a hash of the id (stable across
    runs, spread across sources), in the order of ``stages``; raw-zone texts redacted, then every
    text truncated to ``chars``."""
    if per_reason == 0 or not rejected:
        return []
    datasets = _local_datasets(spark, rejected)
    if datasets is not None:
        rows = [row for zone, dataset in datasets.items() for row in _picked_locally(dataset, zone, per_reason)]
    else:
        rows = _picked_by_spark(spark, rejected, per_reason)
    texts = [r["text"] or "" for r in rows]
    raw = [i for i, r in enumerate(rows) if r["zone"] == "raw"]
    for i, text in zip(raw, redact([texts[i] for i in raw])):  # the whole text, before it is cut
        texts[i] = text
    order = {name: i for i, name in enumerate(stages)}
    examples = [{"stage": r["stage"], "reason": r["reason"], "id": r["id"], "source": r["source"], "detail": r["detail"],
                 "zone": r["zone"], "chars": len(r["text"] or ""), "text": _clip(text, chars)} for r, text in zip(rows, texts)]
    return sorted(examples, key=lambda e: (order.get(e["stage"], len(order)), e["reason"], e["id"] or ""))


_EXAMPLE_COLUMNS = ["stage", "reason", "id", "source", "detail", "text"]


def _picked_by_spark(spark: SparkSession, rejected: dict[str, str], per_reason: int) -> list[dict]:
    pick = Window.partitionBy("stage", "reason").orderBy(F.xxhash64("id"), "id")
    parts = [read_table(spark, path).withColumn("_n", F.row_number().over(pick)).where(F.col("_n") <= per_reason)
             .select(*_EXAMPLE_COLUMNS, F.lit(zone).alias("zone")) for zone, path in rejected.items()]
    return [row.asDict() for row in reduce(DataFrame.unionByName, parts).collect()]


def _picked_locally(dataset, zone: str, per_reason: int) -> list[dict]:
    """_picked_by_spark's rows of one table, on the driver: the same hash of the id, in the same order (a null
    id first among its hash's)."""
    keys = dataset.to_table(columns=["stage", "reason", "id"])
    stage, reason = (pc.dictionary_encode(keys[column].combine_chunks()) for column in ("stage", "reason"))
    group = stage.indices.to_numpy().astype(np.int64) * len(reason.dictionary) + reason.indices.to_numpy()
    ids = keys["id"].combine_chunks()
    order = pa.table({"group": group, "hash": [spark_xxhash64(i) for i in ids.to_pylist()], "id": ids,
                      "row": np.arange(len(ids))}).sort_by(
        [("group", "ascending"), ("hash", "ascending"), ("id", "ascending")], null_placement="at_start")
    group = order["group"].to_numpy()
    starts = np.flatnonzero(np.diff(group, prepend=-1))  # where each (stage, reason) begins
    rank = np.arange(len(group)) - np.repeat(starts, np.diff(np.append(starts, len(group))))
    picked = np.sort(order["row"].to_numpy()[rank < per_reason])
    return [{**row, "zone": zone} for row in dataset.take(pa.array(picked), columns=_EXAMPLE_COLUMNS).to_pylist()]


def spark_xxhash64(value: str | None) -> int:
    """Spark's ``xxhash64`` of one string column: XXH64 of its UTF-8 bytes with seed 42, as a signed long;
    a null leaves the seed."""
    if value is None:
        return 42
    digest = xxhash.xxh64_intdigest(value.encode("utf-8"), seed=42)
    return digest - (1 << 64) if digest >= 1 << 63 else digest


def dedup_clusters(spark: SparkSession, output: str, kept_table: str | None, rejected: dict[str, str], clusters: int,
                   pairs: int, chars: int, redact: Redactor) -> dict | None:
    """The largest near-duplicate clusters and the least similar removed documents beside the kept
    one they matched (the borderline cases for the threshold), redacted; None when minhash_dedup did not run
    (`kept_table`: its output table, or None)."""
    path = join_path(output, MINHASH, "clusters")
    if kept_table is None or not table_exists(spark, path):
        return None
    datasets = _local_datasets(spark, {"clusters": path, "kept": kept_table, **rejected})
    if datasets is not None:
        sizes, largest, rows = _clusters_locally(datasets.pop("clusters"), clusters, pairs)
        found = _pair_texts_locally(datasets.pop("kept"), list(datasets.values()), rows)
    else:
        sizes, largest, rows = _clusters_by_spark(read_table(spark, path), clusters, pairs)
        found = _pair_texts_by_spark(spark, rejected, kept_table, rows)
    missing = "(text not in this output: it came in an earlier incremental batch)"
    texts = redact([found.get(key) or missing for r in rows for key in ((True, r["id"]), (False, r["kept_id"]))])
    return {
        "cluster_sizes": sizes, "largest": largest,
        "pairs": [{"removed_id": r["id"], "kept_id": r["kept_id"], "similarity": r["similarity"],
                   "removed_text": _clip(texts[2 * i], chars), "kept_text": _clip(texts[2 * i + 1], chars)}
                  for i, r in enumerate(rows)],
    }


def _clusters_by_spark(members: DataFrame, clusters: int, pairs: int) -> tuple[dict, list[dict], list[dict]]:
    """(documents per cluster -> clusters of that size, the `clusters` largest clusters, the `pairs` least similar
    removed documents with the kept one they matched)."""
    per_cluster = members.groupBy("cluster_id", "kept_id").agg(F.count("*").alias("documents"),
                                                               F.min("similarity").alias("min_similarity"))
    per_cluster = per_cluster.persist(CACHE_LEVEL)  # read twice: the largest clusters and the size histogram
    try:
        largest = per_cluster.orderBy(F.desc("documents"), "cluster_id", "kept_id").limit(clusters).collect()
        sizes = per_cluster.groupBy("documents").count().orderBy("documents").collect()
    finally:
        per_cluster.unpersist()
    rows = members.where(F.col("id") != F.col("kept_id")).orderBy("similarity", "id").limit(pairs) \
        .select("id", "kept_id", "similarity").collect()
    return ({int(r["documents"]): int(r["count"]) for r in sizes}, [r.asDict() for r in largest],
            [r.asDict() for r in rows])


def _clusters_locally(members, clusters: int, pairs: int) -> tuple[dict, list[dict], list[dict]]:
    """_clusters_by_spark on the driver, in the same order."""
    table = members.to_table(columns=["cluster_id", "kept_id", "id", "similarity"])
    per_cluster = table.group_by(["cluster_id", "kept_id"], use_threads=False).aggregate(
        [([], "count_all"), ("similarity", "min")])
    per_cluster = per_cluster.rename_columns({"count_all": "documents", "similarity_min": "min_similarity"})
    largest = per_cluster.sort_by([("documents", "descending"), ("cluster_id", "ascending"), ("kept_id", "ascending")],
                                  null_placement="at_start").slice(0, clusters)
    sizes = per_cluster.group_by("documents", use_threads=False).aggregate([([], "count_all")])
    removed = table.filter(pc.not_equal(table["id"], table["kept_id"]))
    rows = removed.sort_by([("similarity", "ascending"), ("id", "ascending")], null_placement="at_start").slice(0, pairs)
    return ({r["documents"]: r["count_all"] for r in sorted(sizes.to_pylist(), key=lambda r: r["documents"])},
            largest.select(["cluster_id", "kept_id", "documents", "min_similarity"]).to_pylist(),
            rows.select(["id", "kept_id", "similarity"]).to_pylist())


def _pair_texts_by_spark(spark: SparkSession, rejected: dict[str, str], kept_table: str, rows: list[dict]) -> dict:
    """(removed, id) -> text for both documents of every pair, in one job, picked by id (a filter while the
    tables are read, not a join that sorts or shuffles them): removed ones from the rejected tables, kept ones
    from the stage's own."""
    if not rows:
        return {}
    removed_ids, kept_ids = [r["id"] for r in rows], [r["kept_id"] for r in rows]
    parts = [read_table(spark, path).where((F.col("stage") == MINHASH) & F.col("id").isin(removed_ids))
             .select("id", "text", F.lit(True).alias("removed")) for path in rejected.values()]
    parts.append(read_table(spark, kept_table).where(F.col("id").isin(kept_ids))
                 .select("id", "text", F.lit(False).alias("removed")))
    return {(r["removed"], r["id"]): r["text"] for r in reduce(DataFrame.unionByName, parts).collect()}


def _pair_texts_locally(kept, rejected: list, rows: list[dict]) -> dict:
    """_pair_texts_by_spark from pyarrow datasets (`kept`, and the rejected tables')."""
    def texts(dataset, chosen) -> list[dict]:
        return dataset.to_table(columns=["id", "text"], filter=chosen).to_pylist()

    removed = (pc.field("stage") == MINHASH) & pc.field("id").isin([r["id"] for r in rows])
    found = {(True, r["id"]): r["text"] for dataset in rejected for r in texts(dataset, removed)}
    found.update({(False, r["id"]): r["text"] for r in texts(kept, pc.field("id").isin([r["kept_id"] for r in rows]))})
    return found
