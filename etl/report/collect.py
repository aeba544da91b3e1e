"""What the report reads from the run: the funnel per source (from the run's own counts), example rejected documents
(PII redacted, truncated) and the dedup clusters. Plain dicts and lists come out; the page, the plots,
the JSON twin and MLflow are all drawn from them."""
from __future__ import annotations

import threading
from dataclasses import replace
from functools import reduce

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ..delta import read_table, table_exists
from ..funnel import PipelineRun
from ..paths import join_path
from ..spark import CACHE_LEVEL
from ..stages.pii import PiiParams, PiiRedactor

REJECTED_TABLES = {"rejected": "raw", "rejected_curated": "curated"}  # under the output root: table -> zone
MINHASH = "minhash_dedup"


def rejected_tables(spark: SparkSession, output: str) -> dict[str, DataFrame]:
    """The run's rejected tables that exist, by zone."""
    return {zone: read_table(spark, join_path(output, name))
            for name, zone in REJECTED_TABLES.items() if table_exists(spark, join_path(output, name))}


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


def rejected_examples(rejected: dict[str, DataFrame], stages: list[str], per_reason: int, chars: int, redact: Redactor) -> list[dict]:
    """``per_reason`` documents for every (stage, reason), chosen by a hash of the id (stable across
    runs, spread across sources), in the order of ``stages``; raw-zone texts redacted, then every
    text truncated to ``chars``."""
    if per_reason == 0 or not rejected:
        return []
    pick = Window.partitionBy("stage", "reason").orderBy(F.xxhash64("id"), "id")
    parts = [table.withColumn("_n", F.row_number().over(pick)).where(F.col("_n") <= per_reason)
             .select("stage", "reason", "id", "source", "detail", "text", F.lit(zone).alias("zone"))
             for zone, table in rejected.items()]
    rows = reduce(DataFrame.unionByName, parts).collect()
    texts = [r["text"] or "" for r in rows]
    raw = [i for i, r in enumerate(rows) if r["zone"] == "raw"]
    for i, text in zip(raw, redact([texts[i] for i in raw])):  # the whole text, before it is cut
        texts[i] = text
    order = {name: i for i, name in enumerate(stages)}
    examples = [{"stage": r["stage"], "reason": r["reason"], "id": r["id"], "source": r["source"], "detail": r["detail"],
                 "zone": r["zone"], "chars": len(r["text"] or ""), "text": _clip(text, chars)} for r, text in zip(rows, texts)]
    return sorted(examples, key=lambda e: (order.get(e["stage"], len(order)), e["reason"], e["id"]))


def dedup_clusters(spark: SparkSession, run: PipelineRun, rejected: dict[str, DataFrame], clusters: int, pairs: int,
                   chars: int, redact: Redactor) -> dict | None:
    """The largest near-duplicate clusters and the least similar removed documents beside the kept
    one they matched (the borderline cases for the threshold), redacted; None when minhash_dedup did not run."""
    path = join_path(run.config.output, MINHASH, "clusters")
    if MINHASH not in run.tables or not table_exists(spark, path):
        return None
    members = read_table(spark, path)
    per_cluster = members.groupBy("cluster_id", "kept_id").agg(F.count("*").alias("documents"),
                                                               F.min("similarity").alias("min_similarity"))
    per_cluster = per_cluster.persist(CACHE_LEVEL)  # read twice: the largest clusters and the size histogram
    try:
        largest = per_cluster.orderBy(F.desc("documents"), "cluster_id").limit(clusters).collect()
        sizes = per_cluster.groupBy("documents").count().orderBy("documents").collect()
    finally:
        per_cluster.unpersist()
    rows = members.where(F.col("id") != F.col("kept_id")).orderBy("similarity", "id").limit(pairs) \
        .select("id", "kept_id", "similarity").collect()
    # Both texts of every pair in one job, picked by id (a filter while the tables are read, not a join
    # that sorts or shuffles them): removed ones from the rejected tables, kept ones from the stage's own.
    removed_ids, kept_ids = [r["id"] for r in rows], [r["kept_id"] for r in rows]
    parts = [t.where((F.col("stage") == MINHASH) & F.col("id").isin(removed_ids)).select("id", "text", F.lit(True).alias("removed"))
             for t in rejected.values()]
    parts.append(read_table(spark, run.tables[MINHASH]).where(F.col("id").isin(kept_ids))
                 .select("id", "text", F.lit(False).alias("removed")))
    found = {(r["removed"], r["id"]): r["text"] for r in reduce(DataFrame.unionByName, parts).collect()} if rows else {}
    missing = "(text not in this output: it came in an earlier incremental batch)"
    texts = redact([found.get(key) or missing for r in rows for key in ((True, r["id"]), (False, r["kept_id"]))])
    return {
        "cluster_sizes": {int(r["documents"]): int(r["count"]) for r in sizes},
        "largest": [{"cluster_id": r["cluster_id"], "kept_id": r["kept_id"], "documents": r["documents"],
                     "min_similarity": r["min_similarity"]} for r in largest],
        "pairs": [{"removed_id": r["id"], "kept_id": r["kept_id"], "similarity": r["similarity"],
                   "removed_text": _clip(texts[2 * i], chars), "kept_text": _clip(texts[2 * i + 1], chars)}
                  for i, r in enumerate(rows)],
    }
