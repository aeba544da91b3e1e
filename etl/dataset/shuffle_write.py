"""`shuffle_and_write`: a seeded global shuffle of the packed samples, written as a versioned MDS dataset.

Reads the samples `tokenize` wrote (param ``samples_table``, default ``<output>/tokenize/samples``;
its sibling tables ``buckets``, ``info`` and ``provenance`` in the same folder) and publishes
``<dataset_root>/v=N/<split>/`` MDS shards that mosaicml-streaming's ``StreamingDataset`` reads,
then ``manifest.json``. How:

1. Number each split's samples densely from their keys: bucket by bucket, index within bucket.
2. Map each number to its position with a seeded permutation of ``[0, N)`` (``permute``), so
   every position is computed on its own and nothing depends on Spark's partitioning.
3. Shard ``s`` holds positions ``[s * k, (s + 1) * k)``, where ``k`` is how many samples fit
   ``size_limit`` by streaming's own rolling rule (every sample has the same size), so the shards
   are byte-identical to what one ``MDSWriter`` fed in position order would write.
4. Executors encode and write whole shards straight to the store (local path or URL), each with
   its sha256; the driver then writes each split's ``index.json`` (atomically, last of the split),
   the shuffle quality report, and finally ``manifest.json``. A crashed run leaves a version
   folder without a manifest, which readers never list and the next run skips (it writes ``v=N+1``).
5. Publishing is idempotent: the manifest's fingerprint covers a content hash over the shards'
   sha256s, not the Delta versions read. When it equals the newest complete version's, the folder
   just written is removed and that version stays the dataset ("unchanged: dataset v=N"), so a
   re-run on the same documents and params leaves training jobs resuming on the same version.

With ``tokenize.pack_by_source`` every sample holds one source, and ``source_weights`` repeats or subsamples
each source's samples (``SampleOrder``); the version then holds ``sources/<split>.npy``, the source number of
the sample at each position, which training reads to mix sources (``data.datasets[].source``), and the
manifest's ``extra.sources`` names the sources with their samples and tokens before and after weighting.

As a step of the pipeline its input is tokenize's documents; it returns them without their tokens, so
its table ``<output>/shuffle_and_write`` lists the documents the dataset holds, with split and token count.

The tokenize tables must come from this very run (table property ``kiln.run_id``): a dataset is
never built from tables an earlier or a failed run left behind.

Every sample has the columns ``tokens`` (``ndarray:<token_dtype>``, seq_len values), ``bucket`` and
``bucket_index`` (``uint32``): the key that ``<output>/tokenize/provenance`` traces to documents.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shards import (
    MANIFEST_FORMAT,
    DatasetManifest,
    content_hash,
    dataset_fingerprint,
    encode_shard,
    latest_version,
    merge_index,
    next_version,
    read_manifest,
    shard_basename,
    split_path,
    storage,
    token_columns,
    version_path,
    write_manifest,
)
from shards.config import ConfigError
from shards.mds import check_hash_names, parse_compression

from ..delta import read_table
from ..executor_drill import drill
from ..paths import to_fsspec_url
from ..spark import default_parallelism
from ..stages.base import Stage, StageContext, StageResult
from .info import TokenizeInfo
from .tokenize import binary_tokens

log = logging.getLogger(__name__)

KEY_COLUMNS = {"bucket": "uint32", "bucket_index": "uint32"}
REPORT_FOLDER = "report"


@dataclass
class ShuffleWriteParams:
    # Where versioned datasets go (local path or s3://...); default <output>/dataset.
    dataset_root: str | None = None
    # The samples table of `tokenize`, relative to the pipeline output unless absolute or a URL;
    # its `buckets`, `info` and `provenance` tables are read from the same folder.
    samples_table: str = "tokenize/samples"
    seed: int = 0  # the global permutation of the samples depends on this alone
    size_limit: int = 1 << 26  # uncompressed bytes per shard, as streaming's writer counts them
    compression: str | None = None  # e.g. "zstd" or "zstd:7"
    hashes: list[str] = field(default_factory=lambda: ["sha1"])  # "sha1", "xxh3_64", ...
    # Spark tasks writing shards; default the cluster's default parallelism.
    write_tasks: int | None = None
    quality_report: bool = True  # write the shuffle quality report (sources per window, plots)
    report_window: int = 256  # samples per window in the shuffle quality report
    # Larger splits are reported on the samples at shuffled positions below this (a uniform subset).
    report_max_samples: int = 1_000_000
    # Source name -> weight: its samples written round(weight x samples) times over, e.g. 2.0 two epochs of
    # it, 0.5 a deterministic half (SampleOrder); sources not named weigh 1. Needs tokenize.pack_by_source.
    source_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        parse_compression(self.compression)
        self.hashes = check_hash_names(self.hashes)
        if not 0 < self.size_limit < 1 << 32:
            raise ValueError(f"size_limit must be in (0, 2**32), got {self.size_limit}")
        if self.write_tasks is not None and self.write_tasks < 1:
            raise ValueError(f"write_tasks must be >= 1, got {self.write_tasks}")
        if self.report_window < 1 or self.report_max_samples < 1:
            raise ValueError("report_window and report_max_samples must be >= 1")
        bad = {name: w for name, w in self.source_weights.items() if not (isinstance(w, (int, float)) and w > 0)}
        if bad:
            raise ValueError(f"source_weights must be numbers > 0, got {bad}")

    def root(self, output: str) -> str:
        """Where the versions go: dataset_root, or <output>/dataset (as an fsspec URL)."""
        return to_fsspec_url(self.dataset_root or storage.join(output, "dataset"))


# --------------------------------------------------------------------------- the permutation

def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fast, well-mixed 64-bit hash of each value (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


FEISTEL_ROUNDS = 6


def _round_keys(seed: int, name: str) -> list[np.uint64]:
    keys = []
    for r in range(FEISTEL_ROUNDS):
        digest = hashlib.sha256(f"kiln-shuffle:{seed}:{name}:{r}".encode()).digest()
        keys.append(np.uint64(int.from_bytes(digest[:8], "little")))
    return keys


def permute(ids: np.ndarray, n: int, seed: int, name: str = "") -> np.ndarray:
    """The positions of ``ids`` under a seeded pseudo-random permutation of ``[0, n)``.

    A balanced Feistel network on the smallest even number of bits covering ``n`` is a bijection
    of ``[0, 2**bits)``; re-applying it to values that land at or beyond ``n`` (cycle walking)
    makes it a bijection of ``[0, n)``. Each id is mapped independently, so any partition of the
    ids gives the same positions. ``name`` makes independent permutations from one seed.
    """
    ids = np.asarray(ids, np.uint64)
    if n <= 1:
        return ids.astype(np.int64)
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    keys = _round_keys(seed, name)

    def network(x: np.ndarray) -> np.ndarray:
        left, right = x >> shift, x & mask
        for key in keys:
            left, right = right, left ^ (_mix64(right ^ key) & mask)
        return (left << shift) | right

    out = network(ids)
    outside = out >= np.uint64(n)
    while outside.any():
        out[outside] = network(out[outside])
        outside = out >= np.uint64(n)
    return out.astype(np.int64)


@dataclass(frozen=True)
class SampleOrder:
    """Where each sample of each split lands: dense number from its key, then ``permute``.

    With source weights (``source_weights``) a bucket of ``n`` samples is written ``w = round(weight x n)``
    times over: the bucket's written sample ``j`` is its sample ``j mod n``. So a weight of 2.5 writes every
    sample twice and the first half once more, and 0.3 the first 30%: a bucket's samples are in the hash
    order of its documents, so taking the first ones is a deterministic subsample. Keys stay the samples'
    own (bucket, index), so a repeated sample traces to the same documents.
    """

    seed: int
    # split -> offset of each bucket's first written sample in the dense numbering (buckets + 1 values)
    bucket_offsets: dict[str, np.ndarray]
    # split -> the samples tokenize wrote in each bucket (what the written ones repeat or subsample)
    bucket_samples: dict[str, np.ndarray]

    @classmethod
    def from_counts(cls, seed: int, num_buckets: int, counts: dict[tuple[str, int], int], splits: list[str],
                    bucket_weights: np.ndarray | None = None) -> "SampleOrder":
        offsets, inputs = {}, {}
        for split in splits:
            per_bucket = np.zeros(num_buckets, np.int64)
            for (s, bucket), count in counts.items():
                if s == split:
                    per_bucket[bucket] = count
            written = per_bucket if bucket_weights is None else np.rint(per_bucket * bucket_weights).astype(np.int64)
            offsets[split] = np.concatenate([[0], np.cumsum(written)])
            inputs[split] = per_bucket
        return cls(seed, offsets, inputs)

    def num_samples(self, split: str) -> int:
        return int(self.bucket_offsets[split][-1])

    def written(self, split: str) -> np.ndarray:
        """Samples written per bucket."""
        return np.diff(self.bucket_offsets[split])

    def copies(self, split: str, buckets: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """How often each (bucket, index) sample of tokenize is written: 1 each without weights."""
        wrote = self.bucket_samples[split][buckets]
        if ((indices < 0) | (indices >= wrote)).any():
            raise ValueError(f"split {split!r}: a sample index lies beyond its bucket's sample count; "
                             "the samples and buckets tables of tokenize disagree (written by different runs?)")
        return np.maximum(0, -(-(self.written(split)[buckets] - indices) // np.maximum(wrote, 1)))

    def positions(self, split: str, buckets: np.ndarray, written_indices: np.ndarray) -> np.ndarray:
        """Positions of written samples ``(bucket, j)``; ``j`` is ``index`` for the first copy of a sample."""
        offsets = self.bucket_offsets[split]
        buckets, written_indices = np.asarray(buckets, np.int64), np.asarray(written_indices, np.int64)
        if ((written_indices < 0) | (written_indices >= offsets[buckets + 1] - offsets[buckets])).any():
            raise ValueError(f"split {split!r}: a sample index lies beyond its bucket's sample count; "
                             "the samples and buckets tables of tokenize disagree (written by different runs?)")
        return permute(offsets[buckets] + written_indices, self.num_samples(split), self.seed, split)

    def _columns(self, batch: pa.RecordBatch, index_column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (batch.column("split").to_numpy(zero_copy_only=False), batch.column("bucket").to_numpy().astype(np.int64),
                batch.column(index_column).to_numpy().astype(np.int64))

    def positions_of_batch(self, batch: pa.RecordBatch, index_column: str) -> np.ndarray:
        """Position of the first copy of each of a batch's samples (columns split, bucket and ``index_column``),
        splits mixed; -1 for a sample its source's weight left out."""
        splits, buckets, indices = self._columns(batch, index_column)
        out = np.full(len(splits), -1, np.int64)
        for split in np.unique(splits):
            rows = np.flatnonzero(splits == split)
            rows = rows[self.copies(str(split), buckets[rows], indices[rows]) > 0]
            out[rows] = self.positions(str(split), buckets[rows], indices[rows])
        return out

    def writes_of_batch(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Every write of a batch's samples (columns split, bucket, index): (its row, its position), a
        row once per copy."""
        splits, buckets, indices = self._columns(batch, "index")
        all_rows, all_positions = [], []
        for split in np.unique(splits):
            rows = np.flatnonzero(splits == split)
            copies = self.copies(str(split), buckets[rows], indices[rows])
            rows = np.repeat(rows, copies)
            copy = np.arange(len(rows)) - np.repeat(np.cumsum(copies) - copies, copies)  # 0, 1, .. per sample
            written_index = indices[rows] + copy * self.bucket_samples[str(split)][buckets[rows]]
            all_rows.append(rows)
            all_positions.append(self.positions(str(split), buckets[rows], written_index))
        if not all_rows:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(all_rows), np.concatenate(all_positions)

    def source_of_positions(self, split: str, buckets_per_source: int, chunk: int = 1 << 22) -> np.ndarray:
        """The source number of the sample at each position of ``split`` (tokenize.pack_by_source)."""
        n, offsets = self.num_samples(split), self.bucket_offsets[split]
        out = np.empty(n, np.uint16)
        for start in range(0, n, chunk):
            dense = np.arange(start, min(n, start + chunk), dtype=np.int64)
            bucket = np.searchsorted(offsets, dense, side="right") - 1
            out[permute(dense, n, self.seed, split)] = bucket // buckets_per_source
        return out


def samples_per_shard(columns: dict[str, str], example: dict, compression: str | None, hashes: list[str], size_limit: int) -> int:
    """How many equal-size samples one shard takes under streaming's rolling rule.

    A writer starts a new shard when ``size_limit < shard_bytes + sample_bytes + 4``: with every
    sample the same size that is ``(size_limit - overhead) // (sample_bytes + 4)`` per shard.
    Sizes are measured by encoding one and two samples.
    """
    one, two = (encode_shard([example] * k, columns, compression, hashes, size_limit).entry["raw_data"]["bytes"]
                for k in (1, 2))
    per_sample = two - one
    return max(1, (size_limit - (one - per_sample)) // per_sample)


# --------------------------------------------------------------------------- executors

@dataclass(frozen=True)
class _WriteSpec:
    split_dirs: dict[str, str]
    columns: dict[str, str]
    token_dtype: str
    compression: str | None
    hashes: list[str]
    size_limit: int


def _position_batches(batches: Iterator[pa.RecordBatch], order: SampleOrder, per_shard: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        rows, positions = order.writes_of_batch(batch)
        if len(rows) != batch.num_rows or (rows != np.arange(len(rows))).any():  # weighted, or splits mixed
            batch = batch.take(pa.array(rows))
        yield batch.append_column("position", pa.array(positions, pa.int64())).append_column(
            "shard", pa.array(positions // per_shard, pa.int32()))


def _write_shard(spec: _WriteSpec, split: str, shard: int, samples: list[dict]) -> tuple:
    blob = encode_shard(samples, spec.columns, spec.compression, spec.hashes, spec.size_limit,
                        basename=shard_basename(shard))
    storage.atomic_write_bytes(storage.join(spec.split_dirs[split], blob.basename), blob.data)
    drill("shuffle_and_write")  # a shard written, its index entry not yet returned: the retry rewrites it
    return split, shard, len(samples), json.dumps(blob.entry, sort_keys=True), hashlib.sha256(blob.data).hexdigest()


def _write_batches(batches: Iterator[pa.RecordBatch], spec: _WriteSpec) -> Iterator[pa.RecordBatch]:
    """Rows arrive sorted by (split, shard, position): encode and store each shard once complete."""
    dtype = np.dtype(spec.token_dtype).newbyteorder("<")
    key, samples, written = None, [], []
    for batch in batches:
        splits = batch.column("split").to_pylist()
        shards = batch.column("shard").to_pylist()
        buckets = batch.column("bucket").to_pylist()
        indices = batch.column("index").to_pylist()
        values, bounds = binary_tokens(batch.column("tokens"), dtype)
        for row, row_key in enumerate(zip(splits, shards)):
            if row_key != key:
                if samples:
                    written.append(_write_shard(spec, *key, samples))
                key, samples = row_key, []
            samples.append({"tokens": values[bounds[row]: bounds[row + 1]], "bucket": buckets[row],
                            "bucket_index": indices[row]})
    if samples:
        written.append(_write_shard(spec, *key, samples))
    if written:
        types = [pa.string(), pa.int32(), pa.int64(), pa.string(), pa.string()]
        yield pa.RecordBatch.from_arrays([pa.array(col, t) for col, t in zip(zip(*written), types)],
                                         names=["split", "shard", "samples", "entry", "sha256"])


# --------------------------------------------------------------------------- the stage

def _table_path(output: str, path: str) -> str:
    return path if path.startswith("/") or "://" in path else storage.join(output, path)


class ShuffleAndWrite(Stage[ShuffleWriteParams]):
    name = "shuffle_and_write"
    Params = ShuffleWriteParams
    path_params = ("dataset_root",)

    def check(self, where: str, config, stage_names: list[str]) -> None:
        """When the config is loaded: the tables read are the ones this run's tokenize writes, so
        tokenize must run first (else an earlier run's tables would be published as this run's)."""
        samples = _table_path(config.output, self.params.samples_table).rstrip("/")
        own = storage.join(config.output, "tokenize/samples")
        if samples != own:
            raise ConfigError(
                f"{where}.samples_table: {samples} is not this run's tokenize output ({own}); a dataset is "
                "built only from tables this run's tokenize stage wrote: leave samples_table at its default")
        if "tokenize" not in stage_names[:stage_names.index(self.name)]:
            raise ConfigError(
                f"{where}.samples_table: {samples} is this run's tokenize output, but tokenize does not run "
                "before shuffle_and_write, so an earlier run's tables would be published: put tokenize "
                "before it in stages")
        tokenize = next(s for s in config.stages if s.name == "tokenize")
        if self.params.source_weights and not tokenize.params.get("pack_by_source"):
            raise ConfigError(f"{where}.source_weights: weighting sources needs samples of one source each; set "
                              "pack_by_source: true in the tokenize stage's params")

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        p = self.params
        info = TokenizeInfo.read(_table_path(ctx.output, p.samples_table))
        info.check_written_by(ctx.run_id)
        splits = list(info.splits)
        order = SampleOrder.from_counts(p.seed, info.bucket_count, info.sample_counts(), splits,
                                        _bucket_weights(p.source_weights, info))
        columns = {**token_columns(info.vocab_size), **KEY_COLUMNS}
        example = {"tokens": np.zeros(info.seq_len, np.dtype(info.token_dtype)), "bucket": 0, "bucket_index": 0}
        per_shard = samples_per_shard(columns, example, p.compression, p.hashes, p.size_limit)

        root = p.root(ctx.output)
        version = next_version(root)
        version_dir = version_path(root, version)
        spec = _WriteSpec({s: split_path(version_dir, s) for s in splits}, columns, info.token_dtype,
                          p.compression, p.hashes, p.size_limit)
        total_shards = sum(-(-order.num_samples(s) // per_shard) for s in splits)
        tasks = p.write_tasks or max(1, min(total_shards, default_parallelism(ctx.spark)))
        log.info("writing %s: %d shards of up to %d samples in %d tasks", version_dir, total_shards, per_shard, tasks)

        samples = read_table(ctx.spark, info.paths["samples"], info.versions["samples"])
        written = (
            samples.mapInArrow(lambda batches: _position_batches(batches, order, per_shard),
                               "split string, bucket int, index long, tokens binary, position long, shard int")
            .repartition(tasks, "split", "shard")
            .sortWithinPartitions("split", "shard", "position")
            .mapInArrow(lambda batches: _write_batches(batches, spec),
                        "split string, shard int, samples long, entry string, sha256 string")
            .collect()
        )
        shard_sha256 = {}
        for split in splits:
            entries = sorted((r["shard"], r["samples"], r["entry"], r["sha256"]) for r in written if r["split"] == split)
            _check_shards(split, entries, order.num_samples(split), per_shard)
            left = storage.remove_partial_writes(spec.split_dirs[split])  # the retries wrote those shards
            if left:
                log.warning("split %s: removed %d partial shard writes of killed tasks: %s", split, len(left), left)
            merge_index(spec.split_dirs[split], [json.loads(e[2]) for e in entries])
            shard_sha256[split] = [e[3] for e in entries]
        sources = None if info.sources is None else _write_sources(p, info, order, version_dir)

        manifest = _manifest(p, info, order, version, columns, per_shard, ctx.run_id,
                             content_hash(columns, shard_sha256), sources)
        fingerprint = dataset_fingerprint(manifest)
        newest = latest_version(root)
        unchanged = newest is not None and dataset_fingerprint(read_manifest(version_path(root, newest))) == fingerprint
        quality = None
        if unchanged:  # the newest version holds this very content: it stays the dataset
            fs, path = storage.open_fs(version_dir)
            fs.rm(path, recursive=True)
            version, version_dir = newest, version_path(root, newest)
            message = f"unchanged: dataset v={version} ({version_dir}) has the same content; nothing published"
        else:
            if p.quality_report and order.num_samples(splits[0]) > 1:
                # here, not at the top: it sets matplotlib's Agg backend on import
                from .shuffle_report import write_shuffle_report

                provenance = read_table(ctx.spark, info.paths["provenance"], info.versions["provenance"])
                quality = write_shuffle_report(
                    provenance, splits[0], order, storage.join(version_dir, REPORT_FOLDER), window=p.report_window,
                    shard_size=per_shard, partitions=tasks, max_samples=p.report_max_samples, seed=p.seed,
                )
            write_manifest(root, manifest)  # last: from here on the version is complete and immutable
            message = f"published: dataset v={version} ({version_dir})"
        log.info("%s (fingerprint %s)", message, fingerprint)

        summary = {
            "dataset": version_dir, "version": version, "unchanged": unchanged, "message": message,
            "fingerprint": fingerprint, "num_samples": manifest.num_samples, "num_tokens": manifest.num_tokens,
            "shards": total_shards, "samples_per_shard": per_shard, "dropped_tail_tokens": manifest.dropped_tail_tokens,
        }
        if sources is not None:
            summary["sources"] = _source_summary(sources)
        if quality is not None:
            summary["shuffle_quality"] = quality
        # The per-document tokens stay in the tokenize table; no need to copy them once more.
        annotated = (docs.drop("tokens") if "tokens" in docs.columns else docs).withColumn("reason", F.lit(None).cast("string"))
        return StageResult(annotated, metrics=lambda df: summary)


def _bucket_weights(weights: dict[str, float], info: TokenizeInfo) -> np.ndarray | None:
    """Each bucket's source weight, or None without source_weights."""
    if not weights:
        return None
    if info.sources is None:
        raise ConfigError("shuffle_and_write.source_weights: the tokenize tables pack several sources into a "
                          "sample; set pack_by_source: true in the tokenize stage's params")
    unknown = sorted(set(weights) - set(info.sources))
    if unknown:
        raise ConfigError(f"shuffle_and_write.source_weights: no documents of source(s) {unknown} reached tokenize; "
                          f"its sources are {info.sources}")
    return np.repeat([float(weights.get(name, 1.0)) for name in info.sources], info.num_buckets)


def _bucket_tokens(info: TokenizeInfo, order: SampleOrder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Tokens per bucket (padding left out) that tokenize packed, and that the dataset holds after weights."""
    L, buckets = info.seq_len, np.arange(info.bucket_count)
    pad = np.zeros(info.bucket_count, np.int64)  # pad tokens of a bucket's padded last sample
    for b in info.buckets:
        if b["split"] == split and b["tail_action"] == "padded":
            pad[b["bucket"]] = L - b["tail_tokens"]
    wrote = order.bucket_samples[split]
    last_copies = np.zeros(info.bucket_count, np.int64)
    filled = buckets[wrote > 0]
    last_copies[filled] = order.copies(split, filled, wrote[filled] - 1)
    return wrote * L - pad * (wrote > 0), order.written(split) * L - pad * last_copies


def _write_sources(p: ShuffleWriteParams, info: TokenizeInfo, order: SampleOrder, version_dir: str) -> dict:
    """With tokenize.pack_by_source: ``sources/<split>.npy`` (the source number of every position, uint16) and
    the manifest's ``extra.sources``: names, weights, and samples and tokens per source before and after weighting."""
    names, nb = info.sources, info.num_buckets
    out = {"names": names, "weights": {n: float(p.source_weights.get(n, 1.0)) for n in names}, "files": {},
           "sha256": {}, "samples": {}, "tokens": {}}
    for split in info.splits:
        data = io.BytesIO()
        np.save(data, order.source_of_positions(split, nb))
        relative = f"sources/{split}.npy"
        storage.atomic_write_bytes(storage.join(version_dir, relative), data.getvalue())
        out["files"][split], out["sha256"][split] = relative, hashlib.sha256(data.getvalue()).hexdigest()
        before, after = (counts.reshape(len(names), nb).sum(axis=1) for counts in (order.bucket_samples[split], order.written(split)))
        out["samples"][split] = {n: {"before": int(b), "after": int(a)} for n, b, a in zip(names, before, after)}
        before, after = (t.reshape(len(names), nb).sum(axis=1) for t in _bucket_tokens(info, order, split))
        out["tokens"][split] = {n: {"before": int(b), "after": int(a)} for n, b, a in zip(names, before, after)}
    return out


def _source_summary(sources: dict) -> dict:
    """Per source, over all splits: its weight and tokens before and after weighting (the run report shows it)."""
    return {name: {"weight": sources["weights"][name],
                   **{k: sum(t[name][k] for t in sources["tokens"].values()) for k in ("before", "after")}}
            for name in sources["names"]}


def _manifest(p: ShuffleWriteParams, info: TokenizeInfo, order: SampleOrder, version: int,
              columns: dict, per_shard: int, run_id: str, shards_hash: str, sources: dict | None) -> DatasetManifest:
    splits = list(info.splits)
    num_samples = {s: order.num_samples(s) for s in splits}
    padded = info.tail_tokens("padded")
    content = {"tokenize": info.content(), "shuffle_and_write": {"seed": p.seed, "columns": columns}}
    if p.source_weights:
        content["shuffle_and_write"]["source_weights"] = dict(sorted(p.source_weights.items()))
    extra_sources = {} if sources is None else {"sources": sources}
    return DatasetManifest(
        format=MANIFEST_FORMAT, content_hash=shards_hash,
        version=version, seq_len=info.seq_len, token_dtype=info.token_dtype, vocab_size=info.vocab_size,
        num_samples=num_samples, num_tokens={s: int(_bucket_tokens(info, order, s)[1].sum()) for s in splits},
        splits=splits, seed=p.seed, tokenizer_hash=info.tokenizer_hash,
        config_hash=hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest(),
        source_tables=info.source_tables(),
        dropped_tail_tokens=sum(info.tail_tokens("dropped").values()),
        extra={
            "columns": columns, "samples_per_shard": per_shard, "size_limit": p.size_limit,
            "compression": p.compression, "hashes": p.hashes, "tail": info.tail, "padded_tail_tokens": padded,
            "eos_token_id": info.eos_token_id, "pad_token_id": info.pad_token_id, "bos_token_id": info.bos_token_id,
            "tokenizer": info.tokenizer, "tokenize_run_id": info.run_id, "run_id": run_id,
            "permutation": f"etl.dataset.shuffle_write.permute (Feistel, {FEISTEL_ROUNDS} rounds)",
            **extra_sources,
        },
    )


def _check_shards(split: str, entries: list[tuple], expected_samples: int, per_shard: int) -> None:
    """Every shard present once, full except the last: a lost or doubled task must not publish.
    ``entries``: (shard, samples, ...) sorted by shard."""
    shard_ids = [e[0] for e in entries]
    expected_shards = -(-expected_samples // per_shard)
    if shard_ids != list(range(expected_shards)):
        raise RuntimeError(f"split {split!r}: wrote shards {shard_ids[:10]}..., expected 0..{expected_shards - 1}")
    sizes = [e[1] for e in entries]
    if sum(sizes) != expected_samples or any(n != per_shard for n in sizes[:-1]):
        raise RuntimeError(f"split {split!r}: shards hold {sum(sizes)} samples, expected {expected_samples}")
