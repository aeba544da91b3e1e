"""The streaming loader: global order, rank slicing, resume, mixing, the shard cache, config checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from shards.config import ConfigError
from shards.mds import MDSReader, MDSWriter
from tests.training.token_datasets import pattern_tokens, write_token_dataset
from training.config import check_world_size, load_config
from training.data.cache import CacheSettings, ShardCache
from training.data.loader import StreamingLoader, TokenBatches, as_tensors
from training.data.order import BatchLayout, GlobalOrder, build_order
from training.data.sources import resolve_source


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_token_dataset(str(tmp_path_factory.mktemp("data") / "ds"), {"train": 300, "val": 40})


def make_batches(sources, global_batch, micro_batch, rank, world, cache_root="/tmp/unused", start=0, shuffle=True,
                 num_micro_batches=None, window=2) -> TokenBatches:
    order = build_order(sources, seed=7, shuffle=shuffle, window_shards=window)
    cache = CacheSettings(cache_root, 1 << 30, retries=2, verify_hashes=True, prefetch_shards=2)
    return TokenBatches(sources, order, BatchLayout(global_batch, micro_batch, rank, world), cache, start,
                        num_micro_batches)


def consumed(sources, world, micro_batch, global_batch, steps, workers=0, start=0) -> dict[int, int]:
    """position -> sample id over ``steps`` global batches, read by ``world`` ranks."""
    seen = {}
    for rank in range(world):
        batches = make_batches(sources, global_batch, micro_batch, rank, world, start=start)
        loader = StreamingLoader(batches, num_workers=workers, prefetch_batches=2)
        accumulation = global_batch // (micro_batch * world)
        for i, batch in enumerate(loader):
            if i == steps * accumulation:
                break
            for p, s in zip(batch["positions"].tolist(), batch["sample_ids"].tolist()):
                assert p not in seen, f"position {p} read twice"
                seen[p] = s
    return seen


def test_order_is_a_permutation_per_epoch_and_depends_only_on_seed_and_epoch(dataset):
    source = resolve_source(dataset, "train")
    order = build_order([source], seed=7, shuffle=True, window_shards=2)
    _, epoch0 = order.locate(0, 300)
    _, epoch1 = order.locate(300, 600)
    assert sorted(epoch0.tolist()) == list(range(300)) == sorted(epoch1.tolist())
    assert epoch0.tolist() != list(range(300)) and epoch0.tolist() != epoch1.tolist()
    # Random access agrees with sequential reads, and a fresh order object gives the same answer.
    again = build_order([source], seed=7, shuffle=True, window_shards=2)
    assert again.locate(137, 451)[1].tolist() == np.concatenate([epoch0, epoch1])[137:451].tolist()
    assert build_order([source], seed=8, shuffle=True, window_shards=2).locate(0, 300)[1].tolist() != epoch0.tolist()


def test_shuffle_stays_within_windows_of_shards(dataset):
    source = resolve_source(dataset, "train")
    reader_sizes = build_order([source], 7, False, 1).datasets[0].shard_sizes
    assert len(reader_sizes) >= 4, "the fixture should span several shards"
    order = build_order([source], seed=7, shuffle=True, window_shards=2)
    ends = np.cumsum(reader_sizes)
    _, samples = order.locate(0, int(reader_sizes[:2].min()))
    shards = set(np.searchsorted(ends, samples, side="right").tolist())
    assert len(shards) <= 2


def test_global_sequence_is_independent_of_ranks_and_workers(dataset):
    source = resolve_source(dataset, "train")
    one = consumed([source], world=1, micro_batch=4, global_batch=16, steps=25)
    two = consumed([source], world=2, micro_batch=4, global_batch=16, steps=25)
    four_workers = consumed([source], world=2, micro_batch=2, global_batch=16, steps=25, workers=2)
    assert sorted(one) == list(range(400))  # crosses an epoch boundary at 300
    assert one == two == four_workers


def test_resume_mid_epoch_continues_the_same_sequence(dataset):
    source = resolve_source(dataset, "train")
    full = consumed([source], world=1, micro_batch=4, global_batch=8, steps=10)
    batches = make_batches([source], 8, 4, 0, 1)
    loader = StreamingLoader(batches, num_workers=0)
    for i, _ in enumerate(loader):
        if i == 2 * 3 - 1:  # three whole steps
            break
    state = loader.state_dict()
    assert state["position"] == 24
    resumed_batches = make_batches([source], 8, 2, 1, 2)  # resume on 2 ranks with another micro batch
    resumed = StreamingLoader(resumed_batches, num_workers=0)
    resumed.load_state_dict(state)
    batch = next(iter(resumed))
    assert batch["positions"].tolist() == [26, 27]
    assert batch["sample_ids"].tolist() == [full[26], full[27]]
    other = StreamingLoader(make_batches([resolve_source(dataset, "val")], 8, 4, 0, 1), num_workers=0)
    with pytest.raises(ValueError, match="datasets"):
        other.load_state_dict(state)


def test_batches_hold_the_samples_tokens(dataset):
    source = resolve_source(dataset, "train")
    batch = as_tensors(next(iter(make_batches([source], 4, 4, 0, 1))))
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (4, 32)
    for row, sample in zip(batch["input_ids"], batch["sample_ids"].tolist()):
        assert row.tolist() == pattern_tokens(sample, 32).tolist()
    assert "sequence_ids" not in batch


def test_mixture_follows_proportions(tmp_path):
    a = resolve_source(write_token_dataset(str(tmp_path / "a"), {"train": 50}), "train", proportion=3)
    b = resolve_source(write_token_dataset(str(tmp_path / "b"), {"train": 500}, sample_offset=1000), "train",
                       proportion=1)
    order = build_order([a, b], seed=3, shuffle=True, window_shards=2)
    datasets, samples = order.locate(0, 4000)
    assert (datasets == 0).sum() == 3000 and (datasets == 1).sum() == 1000
    # dataset a (50 samples) went through 60 epochs, each a full permutation
    a_samples = samples[datasets == 0]
    assert all(sorted(a_samples[i:i + 50].tolist()) == list(range(50)) for i in range(0, 3000, 50))
    ids = order.sample_ids(datasets, samples)
    assert ids[datasets == 1].min() >= 50  # b's ids come after a's
    with pytest.raises(ValueError, match="no sample"):
        GlobalOrder([[5], [5]], [1.0, 1e-6], 0, True, 1)


def test_plain_mds_folder_and_missing_split(dataset, tmp_path):
    plain = resolve_source(f"{dataset}/v=1/train", "ignored")
    assert plain.version is None and plain.num_samples == 300 and plain.seq_len == 32
    with pytest.raises(ValueError, match="no split 'test'"):
        resolve_source(dataset, "test")
    with pytest.raises(FileNotFoundError):
        resolve_source(str(tmp_path / "nothing"), "train")


def test_remote_dataset_through_cache_with_prefetch_eviction_and_hash_check(s3_prefix, tmp_path):
    root = write_token_dataset(s3_prefix, {"train": 120}, compression="zstd")
    source = resolve_source(root, "train")
    assert source.url.startswith("s3://") and source.version == 1
    cache_root = str(tmp_path / "cache")
    local = consumed([resolve_source(write_token_dataset(str(tmp_path / "local"), {"train": 120}), "train")],
                     world=1, micro_batch=4, global_batch=8, steps=20)
    batches = make_batches([source], 8, 4, 0, 1, cache_root=cache_root)
    remote = {}
    for i, batch in enumerate(StreamingLoader(batches, num_workers=1)):
        if i == 40:
            break
        remote.update(zip(batch["positions"].tolist(), batch["sample_ids"].tolist()))
        assert batch["input_ids"][0].tolist() == pattern_tokens(batch["sample_ids"][0].item(), 32).tolist()
    assert remote == local
    cache = ShardCache(cache_root, limit_bytes=1)  # every shard is over the limit: all but `keep` go
    files = [p for _, _, p in cache._shard_files()]
    assert files, "shards were cached"
    cache.evict(keep={files[0]})
    assert [p for _, _, p in cache._shard_files()] == [files[0]]
    # A corrupt download is retried and then reported, naming the shard.
    with pytest.raises(ConfigError, match="data.cache_limit_gb"):
        TokenBatches([source], build_order([source], 7, True, 2), BatchLayout(8, 4, 0, 1),
                     CacheSettings(cache_root, 1000, prefetch_shards=2))
    entry = MDSReader(source.url).entries[0]
    bad = dict(entry, zip_data=dict(entry["zip_data"], hashes={"xxh3_64": "0" * 16}))
    strict = ShardCache(str(tmp_path / "strict"), 1 << 30, retries=1, backoff_s=0.01)
    with pytest.raises(RuntimeError, match="after 2 attempts"):
        strict.ensure(source.url, bad)


def test_stale_partial_downloads_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "cache" / "abc"
    folder.mkdir(parents=True)
    stale = folder / f".shard.00000.mds.tmp-{dead.pid}-deadbeef"
    live = folder / f".shard.00001.mds.tmp-{os.getpid()}-cafebabe"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    ShardCache(str(tmp_path / "cache"), 1 << 20)
    assert not stale.exists() and live.exists()


def write_config(tmp_path: Path, dataset: str, extra: str = "") -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(textwrap.dedent(f"""\
        model: {{preset: tiny, overrides: {{d_model: 32, max_seq_len: 64}}}}
        data: {{datasets: [{{path: {dataset}}}]}}
        train: {{max_steps: 2, global_batch_size: 8, micro_batch_size: 2}}
        """) + extra)
    return path


def test_config_errors_name_the_key(tmp_path, dataset):
    path = write_config(tmp_path, dataset)
    cfg = load_config(path, ["optimizer.lr=0.01", "train.max_steps=5"])
    assert cfg.optimizer.lr == 0.01 and cfg.train.max_steps == 5
    with pytest.raises(ConfigError, match=r"config\.train\.max_steps: expected int"):
        load_config(path, ["train.max_steps=ten"])
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        load_config(path, ["optimizer.lrr=1"])
    with pytest.raises(ConfigError, match="unknown MPT preset"):
        load_config(path, ["model.preset=huge"])
    with pytest.raises(ConfigError, match="not a multiple of train.micro_batch_size"):
        check_world_size(cfg, world_size=3, local_world_size=3)
    with pytest.raises(ConfigError, match="shard_group_size 3 does not divide"):
        check_world_size(load_config(path, ["parallel.sharding=hybrid", "parallel.shard_group_size=3"]), 4, 4)


def test_sequence_ids_column_reaches_batches_and_masks_labels(tmp_path):
    from training.data.loader import next_token_labels
    from training.data.sources import IGNORE_INDEX

    folder = str(tmp_path / "packed")
    with MDSWriter(folder, {"tokens": "ndarray:uint16", "sequence_ids": "ndarray:uint8"}) as writer:
        for i in range(8):
            writer.write({"tokens": pattern_tokens(i, 6), "sequence_ids": np.array([0, 0, 0, 1, 1, 2], np.uint8)})
    batch = as_tensors(next(iter(make_batches([resolve_source(folder, "train")], 2, 2, 0, 1))))
    assert batch["sequence_ids"].tolist() == [[0, 0, 0, 1, 1, 2]] * 2
    labels = next_token_labels(batch["input_ids"], batch["sequence_ids"])
    row, tokens = labels[0].tolist(), batch["input_ids"][0].tolist()
    x = IGNORE_INDEX
    assert row == [tokens[1], tokens[2], x, tokens[4], x, x]  # no label across a document boundary or at the end


def test_document_ids_come_from_each_datasets_eos(tmp_path):
    """model.attn_uses_sequence_id over shards without the column: a token after an EOS starts a new document,
    with each dataset's own EOS id; a dataset with neither an EOS id nor the column is refused."""
    from training.data.loader import document_ids
    from training.data.sources import with_document_ids

    tokens = np.array([[5, 0, 0, 7, 8, 0], [0, 3, 9, 9, 9, 9]], np.uint16)
    assert document_ids(tokens, np.array([0, 9])).tolist() == [[0, 0, 1, 2, 2, 2], [0, 0, 0, 1, 2, 3]]
    assert document_ids(tokens, np.array([0, 9])).dtype == np.uint8

    sources = []
    for name, eos in (("a", 0), ("b", 9)):
        root = tmp_path / name
        write_token_dataset(str(root), {"train": 8}, seq_len=6)
        manifest = root / "v=1" / "manifest.json"
        data = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**data, "extra": {"eos_token_id": eos}}))
        sources.append(resolve_source(str(root), "train", proportion=0.5))
    assert [s.eos_token_id for s in sources] == [0, 9] and not sources[0].document_ids
    assert "sequence_ids" not in next(iter(make_batches(sources, 8, 8, 0, 1)))
    batch = next(iter(make_batches(with_document_ids(sources), 8, 8, 0, 1)))
    eos = np.where(batch["sample_ids"] < 8, 0, 9)  # sample ids number dataset a's samples first
    assert np.array_equal(batch["sequence_ids"], document_ids(batch["input_ids"], eos))
    assert batch["sequence_ids"].max() > 0

    plain = str(tmp_path / "plain")
    with MDSWriter(plain, {"tokens": "ndarray:uint16"}) as writer:
        writer.write({"tokens": pattern_tokens(0, 6)})
    with pytest.raises(ValueError, match="no 'sequence_ids' column and no EOS token id"):
        with_document_ids([resolve_source(plain, "train")])
