"""`tokenize`: encode documents, split them train/val by document, and pack them into fixed-length samples.

Every document is encoded (``[BOS] tokens EOS``) in Arrow batches. Then, so that packing never
depends on how Spark happened to partition the input:

* the split is drawn per document from a hash of (seed, id): no document feeds two splits;
* each document goes to one of ``num_buckets`` buckets, ``bucket = hash(seed, id) mod num_buckets``,
  and inside a bucket documents are concatenated in order of that hash (then id); with
  ``pack_by_source`` each source has buckets of its own, ``bucket = source number x num_buckets +
  hash(seed, id) mod num_buckets`` (sources numbered in sorted order of their names), so a sample
  holds one source's documents and training can mix sources by proportion;
* each bucket's token stream is cut into samples of exactly ``seq_len`` tokens, keyed
  ``(split, bucket, index)``; the last, partial sample of each bucket (at most one per bucket) is
  dropped or padded (``tail``) and recorded in the ``buckets`` table.

The stage keeps every document (``reason`` null) and adds ``split``, ``num_tokens`` (with EOS/BOS)
and ``tokens`` (binary, little-endian ``token_dtype``) to it. Extra tables, under ``<output>/tokenize/``:

    samples      split, bucket, index, tokens (binary, seq_len x token_dtype)
    provenance   which document tokens make up each sample: split, bucket, sample_index,
                 sample_offset, doc_id, source, doc_offset, length, doc_tokens, kept
    buckets      split, bucket, docs, tokens, samples (those written), tail_tokens (of the
                 partial last sample) and tail_action ('dropped', 'padded', or null: no tail)
    info         one row: tokenizer URL and hash, vocab size, token dtype and these params

`shuffle_and_write` reads them back as one typed `TokenizeInfo` (etl/dataset/info.py).
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, IntegerType, StructField, StructType

from shards import token_dtype_for_vocab
from shards.config import ConfigError

from ..executor_drill import drill
from ..stages.base import Stage, StageContext, StageResult
from ..worker_cache import built_once
from .info import INFO_SCHEMA
from .tokenizer import DEFAULT_EOS, DEFAULT_PAD, LoadedTokenizer, load_tokenizer

TRAIN, VAL = "train", "val"
# Text encoded per tokenizer call: bounds memory and keeps each output batch far below Arrow's 2 GiB.
ENCODE_CHUNK_BYTES = 32 << 20

SAMPLES_SCHEMA = "split string, bucket int, index long, tokens binary"
_SPLIT_SCALE = 1_000_000  # val_fraction resolution: one in a million


@dataclass
class TokenizeParams:
    # tokenizer.json (or a folder holding it), local or object store; executors read it too.
    tokenizer: str
    seq_len: int = 2048  # tokens per packed sample
    # Documents go to bucket hash(seed, id) mod num_buckets and are packed within it, so the samples
    # do not depend on Spark's partitioning; at most one partial tail per bucket.
    num_buckets: int = 64
    seed: int = 0  # seeds the bucket and split hashes
    # Share of documents (not tokens) that go to the `val` split; 0 writes no val split.
    val_fraction: float = 0.01
    # The partial last sample of each bucket: dropped, or padded with pad_token to seq_len.
    tail: Literal["drop", "pad"] = "drop"
    eos_token: str = DEFAULT_EOS  # joins documents; must be in the tokenizer's vocabulary
    pad_token: str = DEFAULT_PAD  # fills padded tails (tail: pad)
    bos_token: str | None = None  # when set, starts every document
    # One source per sample: each source gets num_buckets buckets of its own (training mixes sources by
    # data.datasets[].source, shuffle_and_write weights them by source_weights). Off: sources share buckets.
    pack_by_source: bool = False

    def __post_init__(self):
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {self.num_buckets}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def splits(self) -> list[str]:
        return [TRAIN, VAL] if self.val_fraction > 0 else [TRAIN]


@dataclass(frozen=True)
class TokenIds:
    eos: int
    pad: int | None
    bos: int | None


def load_checked_tokenizer(params: TokenizeParams, where: str = "tokenize") -> tuple[LoadedTokenizer, TokenIds]:
    """The tokenizer and its special tokens' ids, or a ConfigError naming the parameter under ``where``."""
    try:
        tok = load_tokenizer(params.tokenizer)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}.tokenizer: {err}") from None
    try:
        ids = TokenIds(
            eos=tok.token_id(params.eos_token, f"{where}.eos_token"),
            pad=tok.token_id(params.pad_token, f"{where}.pad_token") if params.tail == "pad" else None,
            bos=tok.token_id(params.bos_token, f"{where}.bos_token") if params.bos_token else None,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return tok, ids


def content_params(params: TokenizeParams, tok: LoadedTokenizer, sources: list[str] | None) -> dict:
    """What decides the samples' contents: hashed into the dataset's config_hash (paths are not).
    ``sources``: with pack_by_source, the source names in bucket order (source k has buckets
    ``[k x num_buckets, (k + 1) x num_buckets)``); None without it."""
    content = {
        "tokenizer_hash": tok.sha256, "seq_len": params.seq_len, "num_buckets": params.num_buckets,
        "seed": params.seed, "val_fraction": params.val_fraction, "tail": params.tail,
        "eos_token": params.eos_token, "bos_token": params.bos_token,
        "pad_token": params.pad_token if params.tail == "pad" else None,
    }
    if sources is not None:
        content["sources"] = sources
    return content


# --------------------------------------------------------------------------- Arrow helpers

def binary_tokens(column: pa.Array | pa.ChunkedArray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """A binary column of token arrays as (all values, row boundaries in tokens), without copying."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, offset_type)[column.offset: column.offset + len(column) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    values = data[offsets[0]: offsets[-1]].view(dtype)
    return values, (offsets - offsets[0]) // dtype.itemsize


def binary_array(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """One binary value per row from a flat token array and each row's length in tokens."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    offsets *= values.dtype.itemsize
    if offsets[-1] >= 1 << 31:
        raise ValueError(f"{offsets[-1]} bytes of tokens in one Arrow batch; binary columns hold < 2 GiB")
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(np.ascontiguousarray(values))]
    return pa.Array.from_buffers(pa.binary(), len(lengths), buffers)


# --------------------------------------------------------------------------- encoding (executors)

@dataclass(frozen=True)
class _EncodeSpec:
    tokenizer_url: str
    tokenizer_sha256: str
    token_dtype: str
    ids: TokenIds


def _worker_tokenizer(spec: _EncodeSpec):
    """The job's tokenizer, loaded once per Python worker and checked against the driver's hash."""

    def load():
        # One Spark task per core: the tokenizer's own thread pool would only oversubscribe the cores.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loaded = load_tokenizer(spec.tokenizer_url)
        if loaded.sha256 != spec.tokenizer_sha256:
            raise RuntimeError(f"{spec.tokenizer_url} changed while the job ran (sha256 {loaded.sha256})")
        return loaded.tokenizer

    return built_once(("tokenizer", spec.tokenizer_sha256), load)


def encode_texts(tokenizer, texts: list[str], ids: TokenIds, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``[BOS] tokens EOS`` of each text, as one flat array plus each document's length."""
    encoded = [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    body_lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    lengths = body_lengths + 1 + (ids.bos is not None)
    ends = np.cumsum(lengths)
    flat = np.empty(int(ends[-1]) if len(ends) else 0, dtype)
    is_body = np.ones(len(flat), bool)
    is_body[ends - 1] = False
    flat[ends - 1] = ids.eos
    if ids.bos is not None:
        is_body[ends - lengths] = False
        flat[ends - lengths] = ids.bos
    flat[is_body] = np.fromiter(itertools.chain.from_iterable(encoded), dtype, int(body_lengths.sum()))
    return flat, lengths


def _chunks(texts: pa.Array, limit: int) -> Iterator[tuple[int, int]]:
    """Row ranges of ``texts`` holding about ``limit`` bytes each (one long row may exceed it)."""
    sizes = pc.binary_length(texts).fill_null(0).to_numpy(zero_copy_only=False)
    start, total = 0, 0
    for row, size in enumerate(sizes):
        if total and total + size > limit:
            yield start, row
            start, total = row, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def _encode_batches(batches: Iterator[pa.RecordBatch], spec: _EncodeSpec) -> Iterator[pa.RecordBatch]:
    tokenizer = _worker_tokenizer(spec)
    dtype = np.dtype(spec.token_dtype).newbyteorder("<")
    for batch in batches:
        drill("tokenize")
        texts = batch.column(batch.schema.get_field_index("text"))
        for start, stop in _chunks(texts, ENCODE_CHUNK_BYTES):
            part = batch.slice(start, stop - start)
            flat, lengths = encode_texts(tokenizer, part.column("text").to_pylist(), spec.ids, dtype)
            yield pa.RecordBatch.from_arrays(
                [*part.columns, pa.array(lengths, pa.int32()), binary_array(flat, lengths)],
                names=[*part.schema.names, "num_tokens", "tokens"],
            )


# --------------------------------------------------------------------------- packing (executors)

class _BucketPacker:
    """Cuts one (split, bucket) token stream, fed in order, into seq_len samples."""

    def __init__(self, seq_len: int, dtype: np.dtype, pad_id: int | None):
        self.seq_len = seq_len
        self.dtype = dtype
        self.pad_id = pad_id
        self.key: tuple[str, int] | None = None
        self.carry = np.empty(0, dtype)
        self.next_index = 0
        self.out_keys: list[tuple[str, int, int]] = []
        self.out_tokens: list[np.ndarray] = []

    def start(self, key: tuple[str, int]) -> None:
        self.finish()
        self.key, self.carry, self.next_index = key, np.empty(0, self.dtype), 0

    def add(self, tokens: np.ndarray) -> None:
        stream = np.concatenate([self.carry, tokens]) if len(self.carry) else tokens
        full = len(stream) // self.seq_len
        if full:
            self._emit(stream[: full * self.seq_len].reshape(full, self.seq_len))
        self.carry = stream[full * self.seq_len:].copy()

    def finish(self) -> None:
        if self.key is not None and len(self.carry) and self.pad_id is not None:
            padded = np.full(self.seq_len, self.pad_id, self.dtype)
            padded[: len(self.carry)] = self.carry
            self._emit(padded.reshape(1, self.seq_len))
        self.key, self.carry = None, np.empty(0, self.dtype)

    def _emit(self, samples: np.ndarray) -> None:
        split, bucket = self.key
        self.out_keys.extend((split, bucket, self.next_index + i) for i in range(len(samples)))
        self.out_tokens.append(samples.ravel())
        self.next_index += len(samples)

    def take_batch(self) -> pa.RecordBatch | None:
        if not self.out_keys:
            return None
        splits, buckets, indices = zip(*self.out_keys)
        tokens = np.concatenate(self.out_tokens)
        batch = pa.RecordBatch.from_arrays(
            [pa.array(splits, pa.string()), pa.array(buckets, pa.int32()), pa.array(indices, pa.int64()),
             binary_array(tokens, np.full(len(splits), self.seq_len, np.int64))],
            names=["split", "bucket", "index", "tokens"],
        )
        self.out_keys, self.out_tokens = [], []
        return batch


def _pack_batches(
    batches: Iterator[pa.RecordBatch], seq_len: int, token_dtype: str, pad_id: int | None
) -> Iterator[pa.RecordBatch]:
    """Rows arrive sorted by (split, bucket, order): each bucket is one contiguous run."""
    dtype = np.dtype(token_dtype).newbyteorder("<")
    packer = _BucketPacker(seq_len, dtype, pad_id)
    for batch in batches:
        splits = batch.column("split").to_numpy(zero_copy_only=False)
        buckets = batch.column("bucket").to_numpy()
        values, bounds = binary_tokens(batch.column("tokens"), dtype)
        changes = np.flatnonzero((splits[1:] != splits[:-1]) | (buckets[1:] != buckets[:-1])) + 1
        run_starts = np.concatenate([[0], changes]).astype(np.int64)
        run_ends = np.concatenate([changes, [len(splits)]]).astype(np.int64)
        for start, stop in zip(run_starts, run_ends):
            key = (str(splits[start]), int(buckets[start]))
            if key != packer.key:
                packer.start(key)
            packer.add(values[bounds[start]: bounds[stop]])
        out = packer.take_batch()
        if out is not None:
            yield out
    packer.finish()
    out = packer.take_batch()
    if out is not None:
        yield out


# --------------------------------------------------------------------------- the stage

class Tokenize(Stage[TokenizeParams]):
    name = "tokenize"
    Params = TokenizeParams
    path_params = ("tokenizer",)

    def check(self, where: str, config, stage_names: list[str]) -> None:
        """The tokenizer loads and has the special tokens; only shuffle_and_write follows: the
        dataset is built from what every document stage kept (etl.dataset.publish runs it last)."""
        load_checked_tokenizer(self.params, where)
        later = stage_names[stage_names.index(self.name) + 1:]
        if later not in ([], ["shuffle_and_write"]):
            raise ConfigError(f"config.stages: only shuffle_and_write may follow tokenize, which tokenizes what "
                              f"every document stage kept; got {stage_names}")

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        p = self.params
        tok, ids = load_checked_tokenizer(p)
        token_dtype = token_dtype_for_vocab(tok.vocab_size)
        spec = _EncodeSpec(tok.url, tok.sha256, token_dtype, ids)

        split = F.when(
            F.pmod(F.xxhash64(F.lit(f"kiln-split-{p.seed}"), F.col("id")), F.lit(_SPLIT_SCALE))
            < F.lit(round(p.val_fraction * _SPLIT_SCALE)), F.lit(VAL)
        ).otherwise(F.lit(TRAIN))
        with_split = docs.withColumn("split", split)
        schema = StructType([*with_split.schema.fields, StructField("num_tokens", IntegerType(), False),
                             StructField("tokens", BinaryType(), False)])
        annotated = (
            with_split.mapInArrow(lambda batches: _encode_batches(batches, spec), schema)
            .withColumn("reason", F.lit(None).cast("string"))
        )
        sources = _source_names(docs) if p.pack_by_source else None
        # Tables derive from `annotated`, which the pipeline persists: documents are encoded once.
        placed = _with_bucket_order(annotated, p, sources)
        tables = {
            "samples": _samples(placed, p, token_dtype, ids.pad),
            "provenance": _provenance(placed, p),
            "buckets": _buckets(placed, p),
            "info": _info(ctx, p, tok, ids, token_dtype, sources),
        }
        return StageResult(annotated, tables=tables, metrics=lambda df: _metrics(df, p, token_dtype, tok, sources))


def _source_names(docs: DataFrame) -> list[str]:
    """The sources present, sorted: source k packs into buckets [k x num_buckets, (k + 1) x num_buckets)."""
    names = sorted(r["source"] for r in docs.select("source").distinct().collect())
    if None in names:
        raise ValueError("tokenize.pack_by_source: some documents have no source; every input names one")
    return names


def _with_bucket_order(df: DataFrame, p: TokenizeParams, sources: list[str] | None) -> DataFrame:
    order_key = F.xxhash64(F.lit(f"kiln-bucket-{p.seed}"), F.col("id"))
    bucket = F.pmod(F.col("order_key"), F.lit(p.num_buckets))
    if sources is not None:
        number = F.array_position(F.array(*[F.lit(s) for s in sources]), F.col("source")) - 1
        bucket = number * F.lit(p.num_buckets) + bucket
    return df.withColumn("order_key", order_key).withColumn("bucket", bucket.cast("int"))


def _samples(placed: DataFrame, p: TokenizeParams, token_dtype: str, pad_id: int | None) -> DataFrame:
    seq_len = p.seq_len
    return (
        placed.select("split", "bucket", "order_key", "id", "tokens")
        .repartition("split", "bucket")
        .sortWithinPartitions("split", "bucket", "order_key", "id")
        .select("split", "bucket", "tokens")
        .mapInArrow(lambda batches: _pack_batches(batches, seq_len, token_dtype, pad_id), SAMPLES_SCHEMA)
    )


def _provenance(placed: DataFrame, p: TokenizeParams) -> DataFrame:
    """Which tokens of which document fill each sample, computed from document lengths alone."""
    L = p.seq_len
    in_order = Window.partitionBy("split", "bucket").orderBy("order_key", "id").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    whole_bucket = Window.partitionBy("split", "bucket")
    docs = (
        placed.select("split", "bucket", "order_key", "id", "source", F.col("num_tokens").cast("long").alias("n"))
        .withColumn("end", F.sum("n").over(in_order))
        .withColumn("bucket_tokens", F.sum("n").over(whole_bucket))
        .withColumn("start", F.col("end") - F.col("n"))
    )
    segments = docs.withColumn(
        "sample_index",
        F.explode(F.sequence(F.floor(F.col("start") / L), F.floor((F.col("end") - 1) / L))),
    )
    seg_start = F.greatest(F.col("start"), F.col("sample_index") * L)
    seg_end = F.least(F.col("end"), (F.col("sample_index") + 1) * L)
    kept = F.col("sample_index") < F.floor(F.col("bucket_tokens") / L)
    if p.tail == "pad":
        kept = F.lit(True)
    return segments.select(
        "split", "bucket", F.col("sample_index").cast("long").alias("sample_index"),
        (seg_start - F.col("sample_index") * L).cast("int").alias("sample_offset"),
        F.col("id").alias("doc_id"), "source",
        (seg_start - F.col("start")).cast("int").alias("doc_offset"),
        (seg_end - seg_start).cast("int").alias("length"),
        F.col("n").cast("int").alias("doc_tokens"),
        kept.alias("kept"),
    )


def _buckets(placed: DataFrame, p: TokenizeParams) -> DataFrame:
    """Per bucket: documents, tokens, samples written, and the tail that did not fill a sample."""
    L = p.seq_len
    totals = placed.groupBy("split", "bucket").agg(
        F.count("*").alias("docs"), F.sum(F.col("num_tokens").cast("long")).alias("tokens"))
    tail = (F.col("tokens") % L).cast("int")
    samples = F.floor(F.col("tokens") / L) + (F.when(tail > 0, 1).otherwise(0) if p.tail == "pad" else F.lit(0))
    return totals.select(
        "split", "bucket", "docs", "tokens", samples.cast("long").alias("samples"), tail.alias("tail_tokens"),
        F.when(tail > 0, F.lit("padded" if p.tail == "pad" else "dropped")).alias("tail_action"),
    )


def _info(ctx: StageContext, p: TokenizeParams, tok: LoadedTokenizer, ids: TokenIds, token_dtype: str,
          sources: list[str] | None) -> DataFrame:
    content = json.dumps(content_params(p, tok, sources), sort_keys=True, separators=(",", ":"))
    row = (
        tok.url, tok.sha256, tok.vocab_size, token_dtype, p.seq_len, p.num_buckets, p.seed, p.splits, p.tail,
        ids.eos, ids.pad, ids.bos, content, ctx.run_id,
    )
    return ctx.spark.createDataFrame([row], INFO_SCHEMA)


def _metrics(annotated: DataFrame, p: TokenizeParams, token_dtype: str, tok: LoadedTokenizer,
             sources: list[str] | None) -> dict:
    """Documents, tokens, samples and tail tokens per split."""
    tail_name = "tail_tokens_padded" if p.tail == "pad" else "tail_tokens_dropped"
    totals = {name: dict.fromkeys(p.splits, 0) for name in ("docs", "tokens", "samples", tail_name)}
    for r in _buckets(_with_bucket_order(annotated, p, sources), p).collect():
        for name, column in (("docs", "docs"), ("tokens", "tokens"), ("samples", "samples"), (tail_name, "tail_tokens")):
            totals[name][r["split"]] += r[column]
    return {"vocab_size": tok.vocab_size, "token_dtype": token_dtype, **totals}
