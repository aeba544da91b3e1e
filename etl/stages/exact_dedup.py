"""exact_dedup: one document per normalised text; the other copies are rejected as `exact_duplicate`.

The text is normalised with Spark's own functions (Unicode-aware lowercasing, collapsing of every
Unicode whitespace run, optional removal of Unicode punctuation, optional NFKC in a vectorised
pandas UDF) and hashed with SHA-1 into the column `exact_dedup_hash`. Within a hash group a
deterministic rule picks the copy to keep (`smallest_id`, or `longest` original text with the
smallest id breaking ties); the others get `detail` = the kept id. The extra table `kept_ids` lists
every document that belongs to a duplicate group, the kept one included (id = kept_id), with the
group's hash; it is derived from the annotated documents, so the pipeline's cache of them serves it.

Incremental mode (`incremental: true`) remembers each distinct hash and the id kept for it in the
Delta table ``<state_root>/exact_dedup_index``. A document whose hash is in the index is a duplicate
of the indexed id, unless it *is* that id: so rerunning a batch, or a run that failed after the index
was updated, keeps exactly the same documents. Hashes new in this batch follow the rule above and
are added with a Delta MERGE that only inserts, so the index never changes for hashes it knows
(earlier runs win over the `keep` rule). The batch reads the index at a pinned version, so
recomputing the batch after the MERGE gives the same answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ..delta import create_table_if_not_exists, insert_new_rows, read_table, table_properties, table_version
from ..spark import CACHE_LEVEL
from .base import Stage, StageContext, StageResult

INDEX_TABLE = "exact_dedup_index"
# The column of the normalised text's hash this stage adds to the documents (the index calls it text_hash).
HASH_COLUMN = "exact_dedup_hash"
NORMALIZATION_PROPERTY = "kiln.exact_dedup.normalization"


@dataclass
class ExactDedupParams:
    lowercase: bool = True  # compare case-insensitively
    # Every run of Unicode whitespace becomes one space; leading and trailing whitespace goes.
    collapse_whitespace: bool = True
    # Remove Unicode punctuation (\p{P}) before comparing.
    strip_punctuation: bool = False
    # Unicode compatibility normalisation (full-width forms, ligatures) before comparing; runs in Python.
    nfkc: bool = False
    # Which copy of a group is kept: the smallest id, or the longest original text (then the smallest id).
    keep: Literal["smallest_id", "longest"] = "smallest_id"
    # Deduplicate against every earlier run too, through the index under the pipeline's state root.
    incremental: bool = False

    def normalization(self) -> str:
        """The settings that give a hash its meaning (an index built with others cannot be reused)."""
        return (
            f"lowercase={self.lowercase},collapse_whitespace={self.collapse_whitespace},"
            f"strip_punctuation={self.strip_punctuation},nfkc={self.nfkc},hash=sha1"
        )


def _nfkc(texts: pd.Series) -> pd.Series:
    return texts.str.normalize("NFKC")


def normalized_text(text: Column, params: ExactDedupParams) -> Column:
    if params.nfkc:
        text = F.pandas_udf(_nfkc, "string")(text)
    if params.strip_punctuation:
        text = F.regexp_replace(text, r"\p{P}+", "")
    if params.lowercase:
        text = F.lower(text)
    if params.collapse_whitespace:
        # (?U): Java's \s then means every Unicode whitespace (no-break space, ideographic space...).
        text = F.trim(F.regexp_replace(text, r"(?U)\s+", " "))
    return text


def text_hash(text: Column, params: ExactDedupParams) -> Column:
    return F.sha1(F.encode(normalized_text(text, params), "UTF-8"))


class ExactDedup(Stage):
    name = "exact_dedup"
    Params = ExactDedupParams

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        params = self.params
        order = [F.col("id")] if params.keep == "smallest_id" else [F.length("text").desc(), F.col("id")]
        group = Window.partitionBy(HASH_COLUMN).orderBy(*order).rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
        docs = docs.withColumn(HASH_COLUMN, text_hash(F.col("text"), params))
        kept_id = F.first("id").over(group)
        index_path = ctx.state_root.rstrip("/") + "/" + INDEX_TABLE
        if params.incremental:
            docs = docs.join(_open_index(ctx, index_path, params), HASH_COLUMN, "left")
            kept_id = F.coalesce(F.col("_indexed_kept_id"), kept_id)
        docs = docs.withColumn("_kept_id", kept_id)
        is_duplicate = F.col("_kept_id") != F.col("id")
        annotated = (
            docs.withColumn("reason", F.when(is_duplicate, F.lit("exact_duplicate")))
            .withColumn("detail", F.when(is_duplicate, F.col("_kept_id")))
            .drop("_kept_id", "_indexed_kept_id")
        )
        if not params.incremental:
            return StageResult(annotated, tables={"kept_ids": _kept_ids(annotated)}, metrics=_metrics)

        # Cached before the MERGE; the pipeline reuses this very DataFrame (and unpersists it).
        annotated = annotated.persist(CACHE_LEVEL)
        kept = annotated.filter(F.col("reason").isNull()).select(
            F.col(HASH_COLUMN).alias("text_hash"), F.col("id").alias("kept_id"), F.lit(ctx.run_id).alias("run_id")
        )
        # Hashes the index already knows keep the id they were first kept under.
        insert_new_rows(ctx.spark, index_path, kept, "text_hash")
        index_hashes = read_table(ctx.spark, index_path).count()
        return StageResult(
            annotated, tables={"kept_ids": _kept_ids(annotated)},
            metrics=lambda df: {**_metrics(df), "index_hashes": index_hashes},
        )


def _kept_ids(annotated: DataFrame) -> DataFrame:
    """Every document of a duplicate group: the duplicates, and the kept documents they point to."""
    duplicates = annotated.filter(F.col("reason") == "exact_duplicate").select(
        "id", F.col("detail").alias("kept_id"), F.col(HASH_COLUMN).alias("text_hash")
    )
    pointed_to = duplicates.select(F.col("kept_id").alias("id")).distinct()
    kept = annotated.filter(F.col("reason").isNull()).join(pointed_to, "id", "left_semi").select(
        "id", F.col("id").alias("kept_id"), F.col(HASH_COLUMN).alias("text_hash")
    )
    return duplicates.unionByName(kept)


def _open_index(ctx: StageContext, path: str, params: ExactDedupParams) -> DataFrame:
    """The index as of now (pinned to its current version), created empty on the first run."""
    create_table_if_not_exists(
        ctx.spark, path, [("text_hash", "STRING", False), ("kept_id", "STRING", False), ("run_id", "STRING", True)],
        {NORMALIZATION_PROPERTY: params.normalization()},
    )
    built_with = table_properties(ctx.spark, path).get(NORMALIZATION_PROPERTY)
    if built_with != params.normalization():
        raise ValueError(
            f"exact_dedup: the index at {path} was built with normalisation {built_with!r}, but this run uses "
            f"{params.normalization()!r}; its hashes are not comparable. Use the same params or a new state_dir."
        )
    version = table_version(ctx.spark, path)
    return read_table(ctx.spark, path, version=version).select(
        F.col("text_hash").alias(HASH_COLUMN), F.col("kept_id").alias("_indexed_kept_id")
    )


def _metrics(annotated: DataFrame) -> dict:
    row = annotated.filter(F.col("reason") == "exact_duplicate").agg(
        F.count("*").alias("duplicates"), F.countDistinct("detail").alias("groups")
    ).collect()[0]
    return {"duplicates": int(row["duplicates"]), "duplicate_groups": int(row["groups"])}
