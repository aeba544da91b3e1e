"""Shuffle quality: does every shard, and every window of consecutive samples, look like the whole split?

For each sample we know (from the provenance table) how many of its tokens come from each source
and from documents of each length class. For a run of consecutive samples (a window of
``window`` samples, or a shard) the *mix* is the share of tokens per source (per length class);
its distance to the split's global mix is the total variation ``0.5 * sum(|p - q|)``: 0 is a
perfect copy, 1 is disjoint. We also measure how alike neighbouring samples are: the lag-1
correlation of each sample's source shares (weighted by source size) and of its mean log
document length. A good shuffle keeps both near what random sampling gives.

The written (shuffled) order is compared with two orders of the same samples:

* ``unshuffled``: samples in the order of their first document (source, then id), as a writer
  that kept the input order would write them;
* ``within_partition``: that order cut into as many contiguous parts as the stage had write
  tasks, each part shuffled on its own (what shuffling only inside Spark partitions gives).

Output: ``shuffle_quality.json`` and ``shuffle_quality.png`` in the dataset's report folder.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import LongType, StructField, StructType  # noqa: E402

from shards import storage  # noqa: E402

# Document length classes, in tokens: <64, 64-255, 256-1023, 1024-4095, 4096-16383, >=16384.
LENGTH_EDGES = (64, 256, 1024, 4096, 16384)
LENGTH_LABELS = ("<64", "64-255", "256-1023", "1024-4095", "4096-16383", ">=16384")
ORDERS = ("shuffled", "unshuffled", "within_partition")


@dataclass
class SampleMix:
    """Per sample, in written order: token counts per source and per length class."""

    sources: list[str]
    source_tokens: np.ndarray  # (n, sources)
    length_tokens: np.ndarray  # (n, length classes)
    mean_log_length: np.ndarray  # (n,) token-weighted mean of log2(document tokens)
    position: np.ndarray  # (n,) the written position
    natural_rank: np.ndarray  # (n,) rank in the unshuffled order

    def __len__(self) -> int:
        return len(self.position)


def collect_sample_mix(provenance: DataFrame, split: str, order, max_samples: int) -> tuple[SampleMix, int]:
    """Aggregate the kept provenance rows of ``split`` per sample; returns the mix and the split's size.

    ``order`` is the stage's ``SampleOrder``; samples at written positions >= ``max_samples`` are
    left out (positions are a random permutation, so the rest is a uniform subset). Under source weights
    each sample counts once, at its first copy, and samples its source's weight left out not at all. One Spark job:
    rows per (sample, source, length class) come to the driver, numpy does the rest.
    """
    length_class = sum(F.when(F.col("doc_tokens") >= edge, 1).otherwise(0) for edge in LENGTH_EDGES)
    grouped = (
        provenance.filter((F.col("split") == split) & F.col("kept"))
        .groupBy("bucket", "sample_index", "source", length_class.alias("length_class"))
        .agg(F.sum("length").alias("tokens"), F.sum(F.col("length") * F.log2("doc_tokens")).alias("log_tokens"),
             F.min("sample_offset").alias("first_offset"), F.min_by("doc_id", "sample_offset").alias("first_doc"))
        .withColumn("split", F.lit(split))
    )
    schema = StructType([*grouped.schema.fields, StructField("position", LongType())])

    def add_positions(batches):
        for batch in batches:
            yield batch.append_column("position", pa.array(order.positions_of_batch(batch, "sample_index"), pa.int64()))

    table = grouped.mapInArrow(add_positions, schema).filter(F.col("position").between(0, max_samples - 1)).toArrow()
    positions, sample = np.unique(table["position"].to_numpy(), return_inverse=True)  # rows of a sample share it
    sources, source = np.unique(np.array(table["source"].to_pylist(), dtype=object), return_inverse=True)
    tokens = table["tokens"].to_numpy().astype(np.float64)
    source_tokens = np.zeros((len(positions), len(sources)))
    np.add.at(source_tokens, (sample, source), tokens)
    length_tokens = np.zeros((len(positions), len(LENGTH_LABELS)))
    np.add.at(length_tokens, (sample, table["length_class"].to_numpy()), tokens)
    log_tokens = np.zeros(len(positions))
    np.add.at(log_tokens, sample, table["log_tokens"].to_numpy())

    # A sample's first document: the row holding its smallest sample offset.
    first_row = {}
    for row, (s, offset) in enumerate(zip(sample.tolist(), table["first_offset"].to_pylist())):
        if s not in first_row or offset < first_row[s][0]:
            first_row[s] = (offset, row)
    columns = {c: table[c].to_pylist() for c in ("source", "first_doc", "bucket", "sample_index")}
    keys = [tuple(columns[c][first_row[s][1]] for c in columns) for s in range(len(positions))]
    natural_rank = np.empty(len(positions), np.int64)
    natural_rank[sorted(range(len(keys)), key=keys.__getitem__)] = np.arange(len(keys))

    mix = SampleMix(
        sources=[str(s) for s in sources], source_tokens=source_tokens, length_tokens=length_tokens,
        mean_log_length=log_tokens / np.maximum(source_tokens.sum(axis=1), 1), position=positions,
        natural_rank=natural_rank,
    )
    return mix, order.num_samples(split)


def sample_orders(mix: SampleMix, partitions: int, seed: int) -> dict[str, np.ndarray]:
    """Row orders of ``mix`` for the written shuffle and the two baselines."""
    unshuffled = np.argsort(mix.natural_rank, kind="stable")
    rng = np.random.default_rng(seed)
    within = np.concatenate([rng.permutation(part) for part in np.array_split(unshuffled, max(1, partitions))])
    return {"shuffled": np.argsort(mix.position, kind="stable"), "unshuffled": unshuffled, "within_partition": within}


def chunk_tv(tokens: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """Total variation between the mix of each run of ``size`` consecutive samples and the global mix."""
    ordered = tokens[order]
    global_mix = ordered.sum(axis=0) / max(ordered.sum(), 1)
    sums = np.add.reduceat(ordered, np.arange(0, len(ordered), size), axis=0)
    mixes = sums / np.maximum(sums.sum(axis=1, keepdims=True), 1)
    return 0.5 * np.abs(mixes - global_mix).sum(axis=1)


def _lag1(values: np.ndarray) -> float | None:
    if len(values) < 3 or np.std(values[:-1]) == 0 or np.std(values[1:]) == 0:
        return None
    return float(np.corrcoef(values[:-1], values[1:])[0, 1])


def neighbour_correlation(tokens: np.ndarray, order: np.ndarray) -> float | None:
    """Lag-1 correlation of per-sample shares, averaged over columns weighted by their global share."""
    ordered = tokens[order]
    shares = ordered / np.maximum(ordered.sum(axis=1, keepdims=True), 1)
    weights = ordered.sum(axis=0) / max(ordered.sum(), 1)
    found = [(w, c) for w, c in ((weights[j], _lag1(shares[:, j])) for j in range(shares.shape[1])) if c is not None]
    if not found:
        return None
    return float(sum(w * c for w, c in found) / sum(w for w, _ in found))


def _stats(values: np.ndarray) -> dict:
    return {"mean": round(float(values.mean()), 5), "p95": round(float(np.quantile(values, 0.95)), 5),
            "max": round(float(values.max()), 5)}


def quality_report(mix: SampleMix, window: int, shard_size: int, partitions: int, seed: int) -> dict:
    orders = sample_orders(mix, partitions, seed)
    total = mix.source_tokens.sum()
    report = {
        "samples": len(mix), "window": window, "shard_size": shard_size, "partitions": partitions,
        "global_source_mix": {s: round(float(t / total), 5) for s, t in zip(mix.sources, mix.source_tokens.sum(axis=0))},
        "length_classes": list(LENGTH_LABELS),
        "global_length_mix": [round(float(t / total), 5) for t in mix.length_tokens.sum(axis=0)],
        "orders": {}, "windows": {}, "shards": {},
    }
    for name, order in orders.items():
        windows = {"source": chunk_tv(mix.source_tokens, order, window), "length": chunk_tv(mix.length_tokens, order, window)}
        shards = {"source": chunk_tv(mix.source_tokens, order, shard_size), "length": chunk_tv(mix.length_tokens, order, shard_size)}
        lag1_length = _lag1(mix.mean_log_length[order])
        report["orders"][name] = {
            "window_tv_source": _stats(windows["source"]), "window_tv_length": _stats(windows["length"]),
            "shard_tv_source": _stats(shards["source"]), "shard_tv_length": _stats(shards["length"]),
            "neighbour_corr_source": neighbour_correlation(mix.source_tokens, order),
            "neighbour_corr_length": None if lag1_length is None else round(lag1_length, 5),
        }
        report["windows"][name] = {k: np.round(v, 5).tolist() for k, v in windows.items()}
        report["shards"][name] = {k: np.round(v, 5).tolist() for k, v in shards.items()}
    return report


def plot_png(report: dict) -> bytes:
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for ax, key, title in ((axes[0], "source", "source mix"), (axes[1], "length", "document length mix")):
        for name in ORDERS:
            ax.plot(report["windows"][name][key], label=name, linewidth=1)
        ax.set_ylabel("total variation")
        ax.set_title(f"{title}: each window of {report['window']} samples vs the whole split", fontsize=10)
    axes[1].set_xlabel("window (in written order)")
    axes[0].legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_shuffle_report(
    provenance: DataFrame, split: str, order, folder: str, *,
    window: int, shard_size: int, partitions: int, max_samples: int, seed: int,
) -> dict:
    """Write shuffle_quality.json and .png under ``folder``; returns the per-order summary."""
    mix, split_samples = collect_sample_mix(provenance, split, order, max_samples)
    report = {"split": split, "split_samples": split_samples, **quality_report(mix, window, shard_size, partitions, seed)}
    storage.atomic_write_bytes(storage.join(folder, "shuffle_quality.json"),
                               (json.dumps(report, indent=1, sort_keys=True) + "\n").encode())
    storage.atomic_write_bytes(storage.join(folder, "shuffle_quality.png"), plot_png(report))
    return report["orders"]
