"""Why was this document removed (or kept)? Its near-duplicate cluster, and the two texts side by side.

``python -m etl dedup-explain OUTPUT ID`` reads ``<OUTPUT>/minhash_dedup/clusters`` and prints the
document's cluster (every member with its estimated similarity to the kept document) and then the
document's text next to the text of the document it matched: the kept one for a removed document,
the most similar removed member for a kept one.
"""
from __future__ import annotations

import shutil
import textwrap

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from .paths import join_path
from .delta import read_table, table_exists

STAGE = "minhash_dedup"
MAX_MEMBERS_SHOWN = 20


class NotFound(LookupError):
    """The output has no dedup clusters, or the id is in none of them."""


def stage_texts(spark: SparkSession, output: str, ids: list[str], stage: str = STAGE) -> dict[str, str]:
    """Texts as a raw-zone stage saw them: its kept table, its rejected rows, else the ingest table."""
    found: dict[str, str] = {}
    sources = [
        (join_path(output, stage), None),
        (join_path(output, "rejected"), F.col("stage") == stage),
        (join_path(output, "ingest"), None),
    ]
    for path, condition in sources:
        missing = [i for i in ids if i not in found]
        if not missing or not table_exists(spark, path):
            continue
        table = read_table(spark, path)
        if condition is not None:
            table = table.where(condition)
        for row in table.where(F.col("id").isin(missing)).select("id", "text").collect():
            found.setdefault(row["id"], row["text"])
    return found


def side_by_side(left_title: str, left: str, right_title: str, right: str, width: int) -> str:
    """Two texts in two wrapped columns, paragraph breaks kept."""
    column = max(20, (width - 3) // 2)

    def lines(title: str, text: str) -> list[str]:
        out = [title[:column], "-" * min(column, len(title))]
        for paragraph in text.split("\n"):
            out.extend(textwrap.wrap(paragraph, column) or [""])
        return out

    a, b = lines(left_title, left), lines(right_title, right)
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    return "\n".join(f"{x:<{column}} | {y}".rstrip() for x, y in zip(a, b))


def explain(spark: SparkSession, output: str, doc_id: str, width: int | None = None) -> str:
    clusters_path = join_path(output, STAGE, "clusters")
    if not table_exists(spark, clusters_path):
        raise NotFound(f"{clusters_path} is not a Delta table: was the {STAGE} stage run with output {output!r}?")
    clusters = read_table(spark, clusters_path)
    rows = clusters.where(F.col("id") == doc_id).collect()
    if not rows:
        raise NotFound(f"{doc_id!r} is in no near-duplicate cluster of {output} (kept as unique, or not in this output)")
    row = rows[0]
    members = clusters.where(F.col("cluster_id") == row["cluster_id"]).orderBy(F.desc("similarity"), "id").collect()
    kept = row["kept_id"] == doc_id
    if kept:
        others = [m for m in members if m["id"] != doc_id]
        match_id, match_role = (others[0]["id"], "most similar removed member") if others else (None, None)
    else:
        match_id, match_role = row["kept_id"], "kept document it matched"

    lines = [
        f"document:    {doc_id} ({'kept' if kept else 'removed as near-duplicate'})",
        f"cluster:     {row['cluster_id']} ({len(members)} documents)",
        f"kept:        {row['kept_id']}",
        f"similarity:  {row['similarity']:.3f} (estimated Jaccard to the kept document)",
        "members:",
    ]
    for member in members[:MAX_MEMBERS_SHOWN]:
        status = "kept" if member["id"] == member["kept_id"] else "removed"
        lines.append(f"  {member['id']:<40} {member['similarity']:.3f}  {status}")
    if len(members) > MAX_MEMBERS_SHOWN:
        lines.append(f"  ... and {len(members) - MAX_MEMBERS_SHOWN} more")
    if match_id is None:
        return "\n".join(lines)
    texts = stage_texts(spark, output, [doc_id, match_id])
    missing = "(text not in this output; it was published by an earlier incremental batch)"
    width = width or shutil.get_terminal_size((160, 40)).columns
    lines.append("")
    lines.append(side_by_side(f"{doc_id} (this document)", texts.get(doc_id, missing),
                              f"{match_id} ({match_role})", texts.get(match_id, missing), width))
    return "\n".join(lines)
