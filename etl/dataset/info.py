"""What `tokenize` hands to `shuffle_and_write`: its tables, pinned to the Delta versions read, and
its one ``info`` row, typed.

The hand-off goes through the Delta tables, not memory: they are what the manifest names as the
dataset's source, and what `etl erase` reads back to find the versions holding a document.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from deltalake.exceptions import TableNotFoundError

from shards.config import ConfigError
from shards.provenance import arrow_dataset, open_delta_table

from ..run_state import RUN_ID_PROPERTY

# The tables tokenize writes under <output>/tokenize/ beside its documents, in the manifest's order.
TABLES = ("samples", "provenance", "buckets", "info")
# The `info` table's one row; TokenizeInfo has a field of each name.
INFO_SCHEMA = (
    "tokenizer string, tokenizer_hash string, vocab_size long, token_dtype string, seq_len int, "
    "num_buckets int, seed long, splits array<string>, tail string, eos_token_id long, pad_token_id long, "
    "bos_token_id long, content_params string, run_id string"
)


@dataclass(frozen=True)
class TokenizeInfo:
    tokenizer: str  # the tokenizer.json URL
    tokenizer_hash: str
    vocab_size: int
    token_dtype: str  # of every token array (little-endian)
    seq_len: int
    num_buckets: int
    seed: int
    splits: list[str]
    tail: str  # drop or pad
    eos_token_id: int
    pad_token_id: int | None
    bos_token_id: int | None
    content_params: str  # JSON: what decides the samples' contents (tokenize.content_params)
    run_id: str  # the run that tokenized
    paths: dict[str, str]  # each of TABLES -> its path
    versions: dict[str, int]  # each of TABLES -> the Delta version read
    table_run_ids: dict[str, str | None]  # each of TABLES -> the run that wrote it (its kiln.run_id property)
    buckets: list[dict]  # the `buckets` rows

    @classmethod
    def read(cls, samples_path: str) -> TokenizeInfo:
        """The tables beside ``samples_path``, through delta-rs on the driver (small tables and log
        versions: no Spark job)."""
        folder = samples_path.rstrip("/").rsplit("/", 1)[0]
        paths = {"samples": samples_path, **{n: f"{folder}/{n}" for n in TABLES[1:]}}
        tables = {}
        for name, path in paths.items():
            try:
                tables[name] = open_delta_table(path)
            except TableNotFoundError:
                raise ConfigError(
                    f"shuffle_and_write.samples_table: no Delta table {name!r} at {path}; run the tokenize "
                    "stage before shuffle_and_write, or point samples_table at its samples table"
                ) from None
        info_rows = arrow_dataset(tables["info"]).to_table().to_pylist()
        if len(info_rows) != 1:
            raise ValueError(f"{paths['info']} holds {len(info_rows)} rows; tokenize writes exactly one")
        return cls(
            **info_rows[0], paths=paths, versions={n: t.version() for n, t in tables.items()},
            table_run_ids={n: t.metadata().configuration.get(RUN_ID_PROPERTY) for n, t in tables.items()},
            buckets=arrow_dataset(tables["buckets"]).to_table().to_pylist(),
        )

    def check_written_by(self, run_id: str) -> None:
        """Refuse tables an earlier (or a failed) run left: a dataset from them would mix two runs."""
        others = {name: written for name, written in self.table_run_ids.items() if written != run_id}
        if others:
            name, written = next(iter(others.items()))
            raise ConfigError(
                f"shuffle_and_write: the tokenize table {self.paths[name]} was written by "
                f"{f'run {written}' if written else 'an earlier run (it records none)'}, not by this run {run_id}; "
                "a dataset is built only from tables this run's tokenize stage wrote: put tokenize before "
                "shuffle_and_write in the stages and re-run `python -m etl run`"
            )

    def source_tables(self) -> list[dict]:
        return [{"path": self.paths[n], "delta_version": self.versions[n]} for n in TABLES]

    def sample_counts(self) -> dict[tuple[str, int], int]:
        """(split, bucket) -> samples written."""
        return {(b["split"], b["bucket"]): b["samples"] for b in self.buckets}

    def tail_tokens(self, action: str) -> dict[str, int]:
        """Per split: the tail tokens ``action`` ('dropped' or 'padded') took."""
        return {s: sum(b["tail_tokens"] for b in self.buckets if b["split"] == s and b["tail_action"] == action)
                for s in self.splits}

    def content(self) -> dict:
        return json.loads(self.content_params)

    @property
    def sources(self) -> list[str] | None:
        """With tokenize.pack_by_source, the source names in bucket order (source k holds buckets
        ``[k x num_buckets, (k + 1) x num_buckets)``); None when sources share buckets."""
        return self.content().get("sources")

    @property
    def bucket_count(self) -> int:
        return self.num_buckets * len(self.sources or [None])
