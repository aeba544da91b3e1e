"""minhash_dedup: near-duplicate removal with MinHash LSH, deterministic, optionally incremental.

How a run goes (every step a Spark job; no document, and no pair beyond a small graph's, reaches the driver):

1. signatures and band hashes per document, vectorised over Arrow batches (``etl.text.minhash``);
2. candidate pairs: every document sharing a (band, band hash) bucket is linked to the bucket's
   smallest id (a star, so a bucket costs work linear in its size, however much boilerplate);
3. verification (optional): a pair stays only when its estimated (signature) or exact (shingle)
   Jaccard similarity reaches the threshold, which drops LSH false positives;
4. connected components by alternating large-star / small-star rounds on an edge DataFrame, with
   the lineage cut (checkpointed) after every round; each component is labelled by its smallest
   id, which no partitioning can change. A graph of up to ``driver_cc_max_pairs`` pairs (500,000 by
   default, about 100 MB of Python objects) goes to the driver instead, for a union-find with the
   same labels, since at that size the rounds' many small Spark jobs cost more than the work;
5. one document kept per component: the smallest key (priority column, rule, id), where the rule
   is smallest id, longest text or best quality score. The others get reason ``near_duplicate`` and
   the kept id as ``detail``; ``<output>/minhash_dedup/clusters`` lists (id, cluster_id, kept_id,
   similarity to the kept document) for every document in a component of two or more.

Incremental mode keeps every processed document's signature, band hashes, cluster and decision in
a Delta index under ``<state_root>/minhash_dedup/index``. A new batch is matched within itself and
against the index; a component that holds an indexed document keeps its earliest published
document (earliest batch, then the same key), so nothing once published is ever removed, and the
index grows by MERGE. Documents whose id is already indexed replay their recorded decision, so
re-running a batch changes nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from ..delta import merge_into, read_table, table_exists, table_properties, write_table
from ..executor_drill import drill
from ..spark import checkpoint_dir
from ..text import minhash
from .base import Stage, StageContext, StageResult

REASON = "near_duplicate"
_FINGERPRINT_PROPERTY = "kiln.minhash_dedup.settings"
_SIGNATURE_SCHEMA = "id string, signature binary, buckets array<bigint>, priority bigint, rank double"
_LAST = float("inf")


@dataclass
class MinHashDedupParams:
    # Documents whose shingle sets have Jaccard similarity >= threshold are near-duplicates.
    threshold: float = 0.8
    num_perm: int = 128  # hash functions per signature (bands x rows must not exceed it)
    seed: int = 1  # seeds the permutations: the same seed gives the same signatures everywhere
    # Word n-grams (default) or character n-grams of the normalised text.
    shingle: Literal["word", "char"] = "word"
    ngram: int = 5  # words (or characters) per shingle
    # LSH bands x rows; by default the pair minimising weighted false positive and negative areas
    # (datasketch's rule). Verification removes false positives, so the default weights favour recall.
    bands: int | None = None  # set both bands and rows to override the routine
    rows: int | None = None  # rows (signature values) per band
    false_positive_weight: float = 0.2  # weight of the false-positive area in the routine
    false_negative_weight: float = 0.8  # weight of the false-negative area in the routine
    # Check candidate pairs before linking them: exact Jaccard of the two shingle sets (the texts are
    # re-shingled), signature agreement (what incremental runs can do: the index keeps no text), or not.
    verify: Literal["exact", "estimated", "none"] = "exact"
    # Which document of a cluster is kept: smallest id, longest text, or highest `quality_column`.
    keep: Literal["smallest_id", "longest", "quality"] = "smallest_id"
    quality_column: str | None = None  # numeric column `keep: quality` ranks by, higher wins
    # Optional numeric column: lower values win before `keep` applies (e.g. crawl date); nulls last.
    priority_column: str | None = None
    # Match against (and grow) the index of every document processed before.
    incremental: bool = False
    max_cc_rounds: int = 60  # connected components must converge within this many star rounds
    # Up to this many pairs in the graph (the verified pairs, and in incremental runs the links to
    # indexed clusters), connected components are found on the driver (one collect and a union-find,
    # about 100 MB at 500,000) instead of in star rounds, each a few Spark jobs; 0: always the rounds.
    driver_cc_max_pairs: int = 500_000

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {self.num_perm}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be at least 1, got {self.ngram}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("bands and rows must be given together (or neither, to derive them from threshold)")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(f"bands x rows = {self.bands} x {self.rows} must be positive and at most num_perm {self.num_perm}")
        if self.keep == "quality" and not self.quality_column:
            raise ValueError("keep: 'quality' needs quality_column (the score column to maximise)")
        if not 0 <= self.driver_cc_max_pairs <= 50_000_000:
            raise ValueError(f"driver_cc_max_pairs must be between 0 (never on the driver) and 50,000,000, got {self.driver_cc_max_pairs}")
        if self.verify == "exact" and self.incremental:
            raise ValueError("verify: 'exact' needs both texts of a pair, and the incremental index keeps no text; use 'estimated'")

    def band_rows(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return _optimal_bands(self.threshold, self.num_perm, self.false_positive_weight, self.false_negative_weight)

    def signature_settings(self) -> dict:
        """What makes two runs' signatures and band hashes comparable (checked against the index)."""
        bands, rows = self.band_rows()
        return {"num_perm": self.num_perm, "seed": self.seed, "shingle": self.shingle, "ngram": self.ngram,
                "bands": bands, "rows": rows}


@lru_cache(maxsize=None)
def _optimal_bands(threshold: float, num_perm: int, fp_weight: float, fn_weight: float) -> tuple[int, int]:
    return minhash.optimal_bands(threshold, num_perm, fp_weight, fn_weight)


@lru_cache(maxsize=4)
def _hasher(num_perm: int, seed: int) -> minhash.MinHasher:
    """One per Python worker and setting: the permutations are drawn once, not per batch."""
    return minhash.MinHasher(num_perm, seed)


# ---------------------------------------------------------------- Arrow batch functions (workers)


def _sign_batches(settings: dict):
    spec = minhash.ShingleSpec(settings["shingle"], settings["ngram"])

    def sign(batches):
        hasher = _hasher(settings["num_perm"], settings["seed"])
        for batch in batches:
            drill("minhash_dedup")
            signatures, has_shingles = hasher.signatures_of_texts(batch.column("text"), spec)
            keep = np.flatnonzero(has_shingles)  # a document without shingles never matches anything
            signatures = signatures[keep]
            buckets = minhash.band_hashes(signatures, settings["bands"], settings["rows"])
            offsets = pa.array(np.arange(len(keep) + 1, dtype=np.int32) * settings["bands"])
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column("id").take(keep),
                    minhash.signatures_to_binary(signatures),
                    pa.ListArray.from_arrays(offsets, pa.array(buckets.ravel())),
                    batch.column("priority").take(keep),
                    batch.column("rank").take(keep),
                ],
                names=["id", "signature", "buckets", "priority", "rank"],
            )

    return sign


def _estimated_similarity_batches(num_perm: int):
    """(a, b, sig_a, sig_b) -> (a, b, similarity)."""

    def similarity(batches):
        for batch in batches:
            left = minhash.signatures_from_binary(batch.column("sig_a"), num_perm)
            right = minhash.signatures_from_binary(batch.column("sig_b"), num_perm)
            yield pa.RecordBatch.from_arrays(
                [batch.column("a"), batch.column("b"), pa.array(minhash.estimated_jaccard(left, right))],
                names=["a", "b", "similarity"],
            )

    return similarity


def _exact_similarity_batches(shingle: str, ngram: int):
    """(a, b, text_a, text_b) -> (a, b, similarity) on the exact shingle sets."""
    spec = minhash.ShingleSpec(shingle, ngram)

    def similarity(batches):
        for batch in batches:
            left = minhash.shingle_hashes(minhash.normalize(batch.column("text_a")), spec)
            right = minhash.shingle_hashes(minhash.normalize(batch.column("text_b")), spec)
            yield pa.RecordBatch.from_arrays(
                [batch.column("a"), batch.column("b"), pa.array(minhash.exact_jaccard(*left, *right))],
                names=["a", "b", "similarity"],
            )

    return similarity


# ---------------------------------------------------------------- Spark building blocks


def materialize(df: DataFrame) -> DataFrame:
    """Compute now and cut the lineage: a reliable checkpoint when the session has a checkpoint
    directory (on a cluster the pipeline sets one: etl/pipeline.py), else a local one (executor
    storage, memory then disk)."""
    if checkpoint_dir(df.sparkSession):
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


def _large_star(edges: DataFrame) -> DataFrame:
    """Every node links its larger neighbours to the smallest node of its closed neighbourhood."""
    both = edges.select(F.col("node").alias("u"), F.col("parent").alias("v")).unionByName(
        edges.select(F.col("parent").alias("u"), F.col("node").alias("v"))
    )
    smallest = both.groupBy("u").agg(F.least(F.col("u"), F.min("v")).alias("m"))
    return both.join(smallest, "u").where(F.col("v") > F.col("u")).select(
        F.col("v").alias("node"), F.col("m").alias("parent")
    ).distinct()


def _small_star(edges: DataFrame) -> DataFrame:
    """Every node links itself and its smaller neighbours to the smallest of them."""
    smallest = edges.groupBy("node").agg(F.min("parent").alias("m"))
    return edges.join(smallest, "node").select(
        F.when(F.col("parent") == F.col("m"), F.col("node")).otherwise(F.col("parent")).alias("node"),
        F.col("m").alias("parent"),
    ).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """Done when every node has one parent and no parent has a parent: each component is then a
    star around its smallest node. One aggregation: per id, its number of parents and whether it
    is anyone's parent."""
    roles = edges.select(F.col("node").alias("x"), F.lit(1).alias("parents"), F.lit(False).alias("is_parent")).unionByName(
        edges.select(F.col("parent").alias("x"), F.lit(0).alias("parents"), F.lit(True).alias("is_parent"))
    )
    violations = roles.groupBy("x").agg(F.sum("parents").alias("parents"), F.max("is_parent").alias("is_parent")).where(
        (F.col("parents") > 1) | ((F.col("parents") == 1) & F.col("is_parent"))
    )
    return violations.limit(1).count() == 0


def connected_components(edges: DataFrame, max_rounds: int = 60, driver_max_pairs: int = 0) -> tuple[DataFrame, int]:
    """(id, component) for every node of an undirected edge list (columns a, b), the component
    being its smallest id; and the number of star rounds it took (0 when found on the driver).

    Alternating large-star / small-star (Kiveris et al., "Connected Components in MapReduce and
    Beyond", 2014): only group-by-min aggregations and joins, so no partition ever holds more than
    its share of edges, and the lineage is cut after each round. A graph of at most
    `driver_max_pairs` distinct edges is solved on the driver instead, with the same labels.
    """
    current = materialize(
        edges.where(F.col("a") != F.col("b"))
        .select(F.greatest("a", "b").alias("node"), F.least("a", "b").alias("parent"))
        .distinct()
    )
    if 0 < driver_max_pairs and current.count() <= driver_max_pairs:  # counting a checkpoint is cheap
        pairs = current.toArrow()
        found = _components_on_driver(pairs.column("node").to_pylist(), pairs.column("parent").to_pylist())
        id_type = current.schema["node"].dataType
        table = edges.sparkSession.createDataFrame(pa.table({"id": list(found), "component": list(found.values())}))
        return table.select(F.col("id").cast(id_type), F.col("component").cast(id_type)), 0
    rounds = 0
    while not _is_star_forest(current):
        rounds += 1
        if rounds > max_rounds:
            raise RuntimeError(f"connected components did not converge in max_cc_rounds={max_rounds} rounds")
        current = materialize(_small_star(_large_star(current)))
    roots = current.select(F.col("parent").alias("id")).distinct().withColumn("component", F.col("id"))
    members = current.select(F.col("node").alias("id"), F.col("parent").alias("component"))
    return members.unionByName(roots), rounds


def _components_on_driver(nodes: list[str], parents: list[str]) -> dict[str, str]:
    """Union-find over the pairs (node, parent): every id of a pair -> the smallest id of its component."""
    root: dict[str, str] = {}

    def find(x: str) -> str:
        top = x
        while root.setdefault(top, top) != top:
            top = root[top]
        while root[x] != top:  # path compression
            root[x], x = top, root[x]
        return top

    for a, b in zip(nodes, parents):
        ra, rb = find(a), find(b)
        if ra != rb:  # the smaller id stays the root, so a component's root is its smallest id
            root[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in root}


def candidate_edges(rows: DataFrame) -> DataFrame:
    """Pairs (a < b) linking every member of a shared bucket to the bucket's smallest id, from rows
    (id, band, bucket, is_new); only pairs touching a new document (old pairs were decided before).

    A star per bucket rather than all its pairs: linear in the bucket's size, so a boilerplate band
    shared by a million documents costs a million edges, not 10^12. One shuffle (a window by bucket,
    which spills to disk if a bucket is large).
    """
    bucket = Window.partitionBy("band", "bucket")
    members = rows.select(
        "id", "is_new", F.count("*").over(bucket).alias("size"), F.min(F.struct("id", "is_new")).over(bucket).alias("smallest")
    )
    return members.where(
        (F.col("size") > 1) & (F.col("id") != F.col("smallest.id")) & (F.col("is_new") | F.col("smallest.is_new"))
    ).select(F.col("smallest.id").alias("a"), F.col("id").alias("b")).distinct()


def _with_similarity(pairs: DataFrame, signatures: DataFrame, num_perm: int) -> DataFrame:
    """(a, b) -> (a, b, similarity) estimated from the two signatures (id, signature)."""
    sig_a = signatures.select(F.col("id").alias("a"), F.col("signature").alias("sig_a"))
    sig_b = signatures.select(F.col("id").alias("b"), F.col("signature").alias("sig_b"))
    joined = pairs.join(sig_a, "a").join(sig_b, "b").select("a", "b", "sig_a", "sig_b")
    return joined.mapInArrow(_estimated_similarity_batches(num_perm), "a string, b string, similarity double")


def _with_exact_similarity(pairs: DataFrame, docs: DataFrame, params: MinHashDedupParams) -> DataFrame:
    text_a = docs.select(F.col("id").alias("a"), F.col("text").alias("text_a"))
    text_b = docs.select(F.col("id").alias("b"), F.col("text").alias("text_b"))
    joined = pairs.join(text_a, "a").join(text_b, "b").select("a", "b", "text_a", "text_b")
    return joined.mapInArrow(
        _exact_similarity_batches(params.shingle, params.ngram), "a string, b string, similarity double"
    )


def _key(*first: str) -> F.Column:
    """The ordering a cluster keeps by: smallest struct wins."""
    return F.struct(*[F.col(c) for c in first], F.col("priority"), F.col("rank"), F.col("id"))


# ---------------------------------------------------------------- the stage


@dataclass
class _Clustering:
    """Decisions for the documents of this run that were not indexed before."""

    decisions: DataFrame  # id, cluster_id, kept_id (the id itself when kept), similarity
    relabels: DataFrame | None  # old cluster_id -> cluster_id, for indexed clusters that merged
    counts: dict


class MinHashDedup(Stage):
    name = "minhash_dedup"
    Params = MinHashDedupParams

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        params: MinHashDedupParams = self.params
        self._check_columns(docs)
        settings = params.signature_settings()
        index_path = ctx.state_root.rstrip("/") + f"/{self.name}/index"
        index = self._read_index(ctx.spark, index_path, settings) if params.incremental else None
        signatures = materialize(self._signatures(docs, settings))
        # Numbers for the report; DataFrames among them are counted only when the report asks.
        counts: dict = {"bands": settings["bands"], "rows": settings["rows"], "num_perm": params.num_perm}

        if index is None:
            new_signatures = signatures
        else:
            new_signatures = materialize(signatures.join(index.select("id"), "id", "left_anti"))
        clustering = self._cluster(new_signatures, index, docs)
        counts.update(clustering.counts)

        if not params.incremental:
            decisions = clustering.decisions
        else:
            self._update_index(ctx, index_path, index, new_signatures, clustering, settings)
            decisions = self._decisions_from_index(ctx.spark, index_path, docs)

        annotated = (
            docs.join(decisions.select("id", "kept_id"), "id", "left")
            .withColumn("reason", F.when(F.col("kept_id").isNotNull() & (F.col("kept_id") != F.col("id")), F.lit(REASON)))
            .withColumn("detail", F.when(F.col("reason").isNotNull(), F.col("kept_id")))
            .drop("kept_id")
        )

        def metrics(annotated_df: DataFrame) -> dict:
            values = {k: v.count() if isinstance(v, DataFrame) else v for k, v in counts.items()}
            values["docs_without_shingles"] = annotated_df.count() - signatures.count()
            return values

        return StageResult(docs=annotated, tables={"clusters": decisions}, metrics=metrics)

    # -------------------------------------------------------------- steps

    def _check_columns(self, docs: DataFrame) -> None:
        fields = {f.name: f.dataType for f in docs.schema.fields}
        for key in ("quality_column", "priority_column"):
            column = getattr(self.params, key)
            if column is None:
                continue
            if column not in fields:
                raise ValueError(f"minhash_dedup.{key}: no column {column!r}; columns are {sorted(fields)}")
            if not isinstance(fields[column], NumericType):
                raise ValueError(f"minhash_dedup.{key}: column {column!r} is {fields[column].simpleString()}, not numeric")

    def _signatures(self, docs: DataFrame, settings: dict) -> DataFrame:
        params = self.params
        priority = F.col(params.priority_column).cast("bigint") if params.priority_column else F.lit(None).cast("bigint")
        if params.keep == "longest":
            rank = -F.length("text").cast("double")
        elif params.keep == "quality":
            rank = F.coalesce(-F.col(params.quality_column).cast("double"), F.lit(_LAST))
        else:
            rank = F.lit(0.0)
        # A null priority sorts after every value (struct ordering puts nulls first, so map it).
        priority = F.coalesce(priority, F.lit((1 << 63) - 1))
        prepared = docs.select("id", "text", priority.alias("priority"), rank.cast("double").alias("rank"))
        return prepared.mapInArrow(_sign_batches(settings), _SIGNATURE_SCHEMA)

    def _cluster(self, new: DataFrame, index: DataFrame | None, docs: DataFrame) -> _Clustering:
        params = self.params
        rows = new.select("id", F.posexplode("buckets").alias("band", "bucket"), F.lit(True).alias("is_new"))
        if index is not None:
            old_rows = index.select("id", F.posexplode("buckets").alias("band", "bucket"), F.lit(False).alias("is_new"))
            old_rows = old_rows.join(rows.select("band", "bucket").distinct(), ["band", "bucket"], "left_semi")
            rows = rows.unionByName(old_rows)
        candidates = candidate_edges(rows)
        all_signatures = new.select("id", "signature")
        if index is not None:
            all_signatures = all_signatures.unionByName(index.select("id", "signature"))
        if params.verify == "none":
            scored = materialize(candidates.withColumn("similarity", F.lit(None).cast("double")))
            edges = scored.select("a", "b")
        else:
            scored = materialize(
                _with_exact_similarity(candidates, docs, params) if params.verify == "exact"
                else _with_similarity(candidates, all_signatures, params.num_perm)
            )
            edges = scored.where(F.col("similarity") >= params.threshold).select("a", "b")
        counts = {"candidate_pairs": scored, "verified_pairs": edges}  # counted when the report asks

        graph = edges
        old_members = None
        if index is not None:
            # Indexed documents a new one links to bring their whole (earlier) cluster along.
            touched = edges.select(F.col("a").alias("id")).unionByName(edges.select(F.col("b").alias("id"))).distinct()
            old_members = touched.join(index.select("id", "cluster_id"), "id")
            graph = graph.unionByName(old_members.select(F.col("id").alias("a"), F.col("cluster_id").alias("b")))
        components, rounds = connected_components(graph, params.max_cc_rounds, params.driver_cc_max_pairs)
        counts["cc_rounds"] = rounds

        new_members = components.join(new.select("id", "priority", "rank"), "id")
        kept_new = new_members.groupBy("component").agg(F.min(_key()).alias("k")).select(
            "component", F.col("k.id").alias("kept_id")
        )
        relabels = None
        if index is None:
            kept = kept_new
        else:
            # Components holding indexed documents keep the earliest published one of their clusters.
            roots = old_members.join(components, "id").select(F.col("cluster_id").alias("root"), "component").distinct()
            published = index.where(F.col("id") == F.col("kept_id")).join(roots, F.col("cluster_id") == F.col("root"))
            kept_old = published.groupBy("component").agg(F.min(_key("batch")).alias("k")).select(
                "component", F.col("k.id").alias("kept_id")
            )
            kept = kept_old.unionByName(kept_new.join(kept_old.select("component"), "component", "left_anti"))
            relabels = roots.where(F.col("root") != F.col("component"))

        in_clusters = new_members.select("id", "component").join(kept, "component").select(
            "id", F.col("component").alias("cluster_id"), "kept_id"
        )
        to_score = in_clusters.where(F.col("id") != F.col("kept_id")).select(F.col("id").alias("a"), F.col("kept_id").alias("b"))
        to_kept = _with_similarity(to_score, all_signatures, params.num_perm).select(
            F.col("a").alias("id"), "similarity"
        )
        decisions = materialize(
            in_clusters.join(to_kept, "id", "left").withColumn("similarity", F.coalesce("similarity", F.lit(1.0)))
        )
        counts["clusters"] = decisions.select("cluster_id").distinct()
        return _Clustering(decisions, relabels, counts)

    # -------------------------------------------------------------- incremental index

    def _read_index(self, spark: SparkSession, path: str, settings: dict) -> DataFrame | None:
        if not table_exists(spark, path):
            return None

        stored = table_properties(spark, path)
        recorded = json.loads(stored.get(_FINGERPRINT_PROPERTY, "{}"))
        if recorded != settings:
            changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
            raise ValueError(
                f"minhash_dedup: the index at {path} was built with {recorded}, this run uses {settings} "
                f"(differs in {', '.join(changed)}); signatures would not be comparable. Use the same "
                "settings or a new state_dir."
            )
        return materialize(read_table(spark, path))

    def _update_index(self, ctx: StageContext, path: str, index: DataFrame | None, new: DataFrame,
                      clustering: _Clustering, settings: dict) -> None:
        batch = 0 if index is None else (index.agg(F.max("batch")).collect()[0][0] or 0) + 1
        rows = (
            new.join(clustering.decisions, "id", "left")
            .select(
                "id", F.lit(batch).alias("batch"), F.lit(ctx.run_id).alias("run_id"), "priority", "rank",
                "signature", "buckets",
                F.coalesce("cluster_id", "id").alias("cluster_id"), F.coalesce("kept_id", "id").alias("kept_id"),
                F.coalesce("similarity", F.lit(1.0)).alias("similarity"),
            )
        )
        if index is None:
            write_table(rows, path, properties={_FINGERPRINT_PROPERTY: json.dumps(settings, sort_keys=True)})
            return
        new_rows = materialize(rows)
        relabeled = materialize(
            index.join(clustering.relabels.select(F.col("root").alias("cluster_id"), F.col("component").alias("new_cluster")),
                       "cluster_id")
            .select("id", F.col("new_cluster").alias("cluster_id"))
        )
        if new_rows.limit(1).count() == 0 and relabeled.limit(1).count() == 0:
            return  # a replayed batch: nothing to add, so not even an empty commit
        source = new_rows.withColumn("_relabel", F.lit(False)).unionByName(
            relabeled.withColumn("_relabel", F.lit(True)), allowMissingColumns=True
        )
        columns = ", ".join(f"`{c}`" for c in new_rows.columns)
        values = ", ".join(f"s.`{c}`" for c in new_rows.columns)
        merge_into(ctx.spark, path, source, "id",
                   "WHEN MATCHED AND s._relabel THEN UPDATE SET cluster_id = s.cluster_id "
                   f"WHEN NOT MATCHED AND NOT s._relabel THEN INSERT ({columns}) VALUES ({values})")

    def _decisions_from_index(self, spark: SparkSession, path: str, docs: DataFrame) -> DataFrame:
        """(id, cluster_id, kept_id, similarity) of this run's documents in clusters of two or more."""
        index = read_table(spark, path)
        sizes = index.groupBy("cluster_id").count().where(F.col("count") > 1).select("cluster_id")
        mine = index.join(docs.select("id"), "id", "left_semi").join(sizes, "cluster_id", "left_semi")
        return materialize(mine.select("id", "cluster_id", "kept_id", "similarity"))
