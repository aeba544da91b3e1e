"""The MDS codec on its own: encodings, shard layout, rolling, compression, hashes, integrity."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash

from shards import (
    EncodingError,
    MDSReader,
    MDSWriter,
    ShardCorruptError,
    encode_shard,
    get_encoding,
    merge_index,
    read_index,
    storage,
    token_columns,
    token_dtype_for_vocab,
)

from tests.shards.samples import ALL_COLUMNS, assert_same_samples, assert_same_value, make_sample

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- encodings

@pytest.mark.parametrize("column", sorted(ALL_COLUMNS))
def test_every_encoding_round_trips(column):
    coder = get_encoding(ALL_COLUMNS[column])
    for i in range(6):
        value = make_sample(i)[column]
        data = coder.encode(value)
        if coder.size is not None:
            assert len(data) == coder.size
        buf = memoryview(b"xx" + data + b"yy")  # decoders work on a range of a larger buffer
        assert_same_value(coder.decode(buf, 2, 2 + len(data)), value, column)


def test_scalars_decode_to_numpy_types_like_streaming():
    assert type(get_encoding("uint16").decode(memoryview(b"\x01\x00"), 0, 2)) is np.uint16
    assert type(get_encoding("int").decode(memoryview(struct.pack("<q", 5)), 0, 8)) is int


def test_ndarray_header_bytes():
    assert get_encoding("ndarray").encode(np.zeros(3, np.uint8)) == bytes([8, (1 << 2) | 0, 3, 0, 0, 0])
    data = get_encoding("ndarray:int32").encode(np.zeros((2, 70000), np.int32))
    assert data[:1] == bytes([(2 << 2) | 2]) and struct.unpack_from("<2I", data, 1) == (2, 70000)
    assert get_encoding("ndarray:uint16:2048").size == 4096


@pytest.mark.parametrize(
    ("encoding", "value", "message"),
    [
        ("ndarray:uint16", np.arange(3, dtype=np.int64), "astype"),
        ("ndarray:uint16:4", np.arange(5, dtype=np.uint16), "shape"),
        ("ndarray", np.zeros(0, np.int32), "at least one element"),
        ("ndarray", np.bool_([True]), "not storable"),
        ("ndarray", [1, 2], "numpy array"),
        ("uint8", 256, "does not fit"),
        ("int8", 1.5, "integer"),
        ("int", True, "expected int"),
        ("str", b"x", "expected str"),
        ("json", {1, 2}, "JSON"),
        ("pkl", {"a": 1}, "never written"),
    ],
)
def test_bad_values_are_refused_clearly(encoding, value, message):
    with pytest.raises(EncodingError, match=message):
        get_encoding(encoding).encode(value)


@pytest.mark.parametrize(
    ("name", "message"),
    [("ndarray:bool", "dtype"), ("ndarray:int32:0", "at least 1"), ("ndarray:int32:x", "comma"),
     ("jpeg", "Pillow"), ("text", "unknown encoding")],
)
def test_bad_encoding_names(name, message):
    with pytest.raises(EncodingError, match=message):
        get_encoding(name)


def test_token_layout():
    assert token_dtype_for_vocab(50257) == "uint16"
    assert token_dtype_for_vocab(65536) == "uint16"
    assert token_dtype_for_vocab(65537) == "uint32"
    assert token_columns(128_256) == {"tokens": "ndarray:uint32"}
    with pytest.raises(ValueError, match="vocab_size"):
        token_dtype_for_vocab(0)


# --------------------------------------------------------------------------- shard layout

def test_golden_int32_token_sample():
    """The reference's example: 2048 int32 tokens as ``ndarray:int32`` start 05 00 08."""
    tokens = np.arange(2048, dtype=np.int32)
    blob = encode_shard([{"tokens": tokens}], {"tokens": "ndarray:int32"}, None, [], 1 << 26)
    raw = blob.data
    count, begin, end = struct.unpack_from("<3I", raw, 0)
    assert count == 1 and end == len(raw)
    config = raw[12:begin]
    assert json.loads(config) == {
        "column_encodings": ["ndarray:int32"], "column_names": ["tokens"], "column_sizes": [None],
        "compression": None, "format": "mds", "hashes": [], "size_limit": 1 << 26, "version": 2,
    }
    assert config == json.dumps(json.loads(config), sort_keys=True).encode()
    sample = raw[begin:end]
    assert struct.unpack_from("<I", sample)[0] == 3 + 8192  # the variable column's length
    assert sample[4:7] == bytes([0x05, 0x00, 0x08])
    assert sample[7:] == tokens.tobytes()


def test_index_entry_shape_and_sorted_columns():
    blob = encode_shard([make_sample(0)], ALL_COLUMNS, "zstd", ["xxh64", "md5"], 1000, basename="shard.00003.mds")
    entry = blob.entry
    assert sorted(entry) == sorted([
        "column_encodings", "column_names", "column_sizes", "compression", "format", "hashes",
        "raw_data", "samples", "size_limit", "version", "zip_data",
    ])
    assert entry["column_names"] == sorted(ALL_COLUMNS)
    assert entry["column_encodings"] == [ALL_COLUMNS[c] for c in sorted(ALL_COLUMNS)]
    assert entry["column_sizes"][entry["column_names"].index("arr_fixed")] == 16
    assert entry["column_sizes"][entry["column_names"].index("i")] == 8
    assert entry["column_sizes"][entry["column_names"].index("s")] is None
    assert entry["compression"] == "zstd:3"  # plain "zstd" means level 3, recorded explicitly
    assert entry["hashes"] == ["md5", "xxh64"]
    assert entry["zip_data"]["basename"] == "shard.00003.mds.zstd" == blob.basename
    assert entry["zip_data"]["hashes"]["md5"] == hashlib.md5(blob.data).hexdigest()


def simulate_streaming_rolls(sample_sizes: list[int], config_len: int, size_limit: int) -> list[int]:
    """Shard sample counts from the rule in the format reference (streaming's writer)."""
    counts, current, size = [], 0, 4 + 4 + config_len
    for n in sample_sizes:
        if current and size_limit < size + n + 4:
            counts.append(current)
            current, size = 0, 4 + 4 + config_len
        current += 1
        size += n + 4
    return counts + ([current] if current else [])


@pytest.mark.parametrize("size_limit", [600, 2_000, 7_777, 1 << 26])
def test_size_limit_rolls_like_streaming(tmp_path, size_limit):
    columns = {"b": "bytes", "n": "int"}
    sizes = [int(x) for x in np.random.default_rng(1).integers(0, 900, 300)]
    sizes[10] = 5_000  # bigger than some limits: gets a shard of its own, never an empty one
    samples = [{"b": b"z" * n, "n": i} for i, n in enumerate(sizes)]
    with MDSWriter(str(tmp_path), columns, hashes=[], size_limit=size_limit) as writer:
        for sample in samples:
            writer.write(sample)
    entries = read_index(str(tmp_path))["shards"]
    config_len = len(json.dumps({**{k: v for k, v in entries[0].items() if k not in ("raw_data", "samples", "zip_data")}}, sort_keys=True))
    encoded_sizes = [4 + n + 8 for n in sizes]  # one length + bytes + int64
    assert [e["samples"] for e in entries] == simulate_streaming_rolls(encoded_sizes, config_len, size_limit)
    assert all(e["samples"] > 0 for e in entries)
    for entry in entries:
        size = os.path.getsize(tmp_path / entry["raw_data"]["basename"])
        assert size == entry["raw_data"]["bytes"]
        assert size <= size_limit or entry["samples"] == 1
    assert [e["raw_data"]["basename"] for e in entries] == [f"shard.{i:05d}.mds" for i in range(len(entries))]
    assert_same_samples(list(MDSReader(str(tmp_path))), samples)


# --------------------------------------------------------------------------- writer + reader

@pytest.mark.parametrize("compression", [None, "zstd", "zstd:19", "gz:1", "bz2"])
def test_round_trip_with_compression_and_hashes(tmp_path, compression):
    samples = [make_sample(i) for i in range(40)]
    hashes = ["sha1", "md5", "sha256", "xxh32", "xxh64", "xxh3_64", "xxh3_128"]
    with MDSWriter(str(tmp_path), ALL_COLUMNS, compression=compression, hashes=hashes, size_limit=4_000) as writer:
        for sample in samples:
            writer.write(sample)
    entries = read_index(str(tmp_path))["shards"]
    assert len(entries) > 1
    for entry in entries:
        stored = entry["zip_data"] or entry["raw_data"]
        data = (tmp_path / stored["basename"]).read_bytes()
        assert stored["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert stored["hashes"]["xxh3_128"] == xxhash.xxh3_128(data).hexdigest()
        assert entry["hashes"] == sorted(hashes)
        if compression:
            assert stored["basename"].endswith("." + compression.split(":")[0])
    reader = MDSReader(str(tmp_path), verify_hashes=True)
    assert_same_samples(list(reader), samples)
    for shard_idx in range(reader.num_shards):
        reader.verify(shard_idx)


def test_hash_and_compression_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="xxh3_64' or 'xxh3_128"):
        MDSWriter(str(tmp_path), {"s": "str"}, hashes=["xxh3"])
    with pytest.raises(ValueError, match="unknown hash 'crc32'"):
        MDSWriter(str(tmp_path), {"s": "str"}, hashes=["crc32"])
    with pytest.raises(ValueError, match="not supported"):
        MDSWriter(str(tmp_path), {"s": "str"}, compression="lz4")
    with pytest.raises(ValueError, match="levels are 1..22"):
        MDSWriter(str(tmp_path), {"s": "str"}, compression="zstd:23")
    with pytest.raises(EncodingError, match="column 'x'.*pkl"):
        MDSWriter(str(tmp_path), {"x": "pkl"})
    with pytest.raises(ValueError, match="size_limit"):
        MDSWriter(str(tmp_path), {"s": "str"}, size_limit=1 << 32)


def test_sample_errors_name_the_column(tmp_path):
    writer = MDSWriter(str(tmp_path), {"tokens": "ndarray:uint16", "id": "int"})
    with pytest.raises(KeyError, match=r"missing \['id'\], unexpected \['extra'\]"):
        writer.write({"tokens": np.zeros(2, np.uint16), "extra": 1})
    with pytest.raises(EncodingError, match="column 'tokens' \\(ndarray:uint16\\).*int64"):
        writer.write({"tokens": np.zeros(2, np.int64), "id": 1})


def test_reader_api(tmp_path):
    samples = [{"tokens": np.arange(i, i + 64, dtype=np.uint16), "id": i} for i in range(100)]
    with MDSWriter(str(tmp_path), {"tokens": "ndarray:uint16", "id": "int"}, size_limit=1_500) as writer:
        for sample in samples:
            writer.write(sample)
    reader = MDSReader(str(tmp_path), max_open_shards=2)
    assert len(reader) == 100 and reader.num_shards == len(reader.sample_counts) > 3
    assert sum(reader.sample_counts) == 100
    assert reader.columns == {"id": "int", "tokens": "ndarray:uint16"}
    first = reader.sample_counts[0]
    assert reader.shard_for(0) == (0, 0)
    assert reader.shard_for(first) == (1, 0)
    assert reader.shard_for(99) == (reader.num_shards - 1, reader.sample_counts[-1] - 1)
    assert reader[-1]["id"] == 99
    with pytest.raises(IndexError, match="out of range"):
        reader[100]
    for i in range(0, 100, 7):  # jumps between shards through the small LRU
        assert_same_value(reader[i]["tokens"], samples[i]["tokens"], "tokens")
    whole = reader.read_shard(1)
    assert [s["id"] for s in whole] == list(range(first, first + reader.sample_counts[1]))
    tokens = reader[5]["tokens"]
    assert not tokens.flags.writeable and not tokens.flags.owndata  # a view of the mapped shard
    clone = pickle.loads(pickle.dumps(reader))  # DataLoader workers get a copy
    assert clone[42]["id"] == 42


def test_reading_samples_parses_no_json(tmp_path, monkeypatch):
    with MDSWriter(str(tmp_path), {"tokens": "ndarray:uint16"}, size_limit=10_000) as writer:
        for i in range(50):
            writer.write({"tokens": np.full(500, i, np.uint16)})
    reader = MDSReader(str(tmp_path))

    def no_json(*args, **kwargs):
        raise AssertionError("json parsed on the sample path")

    monkeypatch.setattr(json, "loads", no_json)
    assert [int(reader[i]["tokens"][0]) for i in range(50)] == list(range(50))


def test_pickle_column_needs_opt_in(tmp_path):
    with MDSWriter(str(tmp_path), {"obj": "bytes"}, hashes=[]) as writer:
        writer.write({"obj": pickle.dumps({"a": (1, 2)})})
    index_path = tmp_path / "index.json"
    index = json.loads(index_path.read_text())
    index["shards"][0]["column_encodings"] = ["pkl"]  # as a foreign writer would record it
    index_path.write_text(json.dumps(index))
    with pytest.raises(EncodingError, match="allow_pickle=True"):
        MDSReader(str(tmp_path))
    assert MDSReader(str(tmp_path), allow_pickle=True)[0] == {"obj": {"a": (1, 2)}}


# --------------------------------------------------------------------------- integrity

def write_dataset(out: str, n: int = 60, **kwargs) -> list[dict]:
    samples = [{"tokens": np.arange(i, i + 100, dtype=np.uint32), "text": f"doc {i}"} for i in range(n)]
    with MDSWriter(out, {"tokens": "ndarray:uint32", "text": "str"}, size_limit=5_000, **kwargs) as writer:
        for sample in samples:
            writer.write(sample)
    return samples


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_corrupt_shard_is_detected(tmp_path, compression):
    write_dataset(str(tmp_path), compression=compression, hashes=["xxh64"])
    entry = read_index(str(tmp_path))["shards"][1]
    name = (entry["zip_data"] or entry["raw_data"])["basename"]
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = MDSReader(str(tmp_path))
    reader.verify(0)
    with pytest.raises(ShardCorruptError, match=rf"{name}.*xxh64"):
        reader.verify(1)
    with pytest.raises(ShardCorruptError, match=name):
        MDSReader(str(tmp_path), verify_hashes=True)[reader.sample_counts[0]]


def test_truncated_shard_is_detected_without_hashes(tmp_path):
    write_dataset(str(tmp_path), hashes=[])
    path = tmp_path / "shard.00000.mds"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardCorruptError, match="shard.00000.mds"):
        MDSReader(str(tmp_path))[0]


def test_crashed_writer_leaves_no_index(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with MDSWriter(str(tmp_path), {"s": "str"}, size_limit=200) as writer:
            for i in range(100):
                writer.write({"s": f"sample number {i}"})
            raise RuntimeError("boom")
    assert any(p.name.startswith("shard.") for p in tmp_path.iterdir())  # shards were flushed...
    assert not (tmp_path / "index.json").exists()  # ...but the dataset is not published
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    with pytest.raises(FileNotFoundError, match="did not finish"):
        MDSReader(str(tmp_path))


def test_finished_dataset_is_not_overwritten(tmp_path):
    write_dataset(str(tmp_path), n=3)
    with pytest.raises(FileExistsError, match="immutable"):
        MDSWriter(str(tmp_path), {"s": "str"})


# --------------------------------------------------------------------------- prefixed writers, fsspec

def write_prefixed(out: str, parts: int = 3, per_part: int = 25, compression: str | None = None) -> tuple[list, list]:
    all_samples, entries_per_part = [], []
    for part in range(parts):
        samples = [{"tokens": np.full(50, part * 1000 + i, np.uint16), "id": part * 1000 + i} for i in range(per_part)]
        with MDSWriter(out, {"tokens": "ndarray:uint16", "id": "int"}, compression=compression,
                       size_limit=1_000, prefix=f"part-{part:05d}", write_index=False) as writer:
            for sample in samples:
                writer.write(sample)
        entries_per_part.append(writer.shard_entries)
        all_samples += samples
    return all_samples, entries_per_part


def test_merged_index_from_prefixed_writers(tmp_path):
    out = str(tmp_path)
    samples, entries_per_part = write_prefixed(out)
    assert not (tmp_path / "index.json").exists()
    assert entries_per_part[1][0]["raw_data"]["basename"] == "part-00001/shard.00000.mds"
    assert (tmp_path / "part-00001" / "shard.00000.mds").exists()
    with pytest.raises(ValueError, match="concatenate"):
        merge_index(out, entries_per_part)
    with pytest.raises(ValueError, match="listed twice"):
        merge_index(out, entries_per_part[0] + entries_per_part[0])
    merge_index(out, itertools.chain.from_iterable(entries_per_part))
    with pytest.raises(FileExistsError):
        merge_index(out, entries_per_part[0])
    reader = MDSReader(out, verify_hashes=True)
    assert [s["id"] for s in reader] == [s["id"] for s in samples]
    assert reader.num_shards == sum(map(len, entries_per_part))


def test_merge_index_checks_files_exist(tmp_path):
    _, entries_per_part = write_prefixed(str(tmp_path), parts=2)
    (tmp_path / entries_per_part[1][0]["raw_data"]["basename"]).unlink()
    with pytest.raises(FileNotFoundError, match="part-00001/shard.00000.mds"):
        merge_index(str(tmp_path), entries_per_part[0] + entries_per_part[1])
    assert not (tmp_path / "index.json").exists()


@pytest.fixture
def memory_url():
    """A fresh folder on fsspec's process-wide in-memory filesystem, removed afterwards."""
    url = f"memory://kiln-shards-test-{os.getpid()}-{id(object())}"
    yield url
    fs, path = storage.open_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.mark.parametrize("compression", [None, "zstd:1"])
def test_fsspec_url_round_trip_with_cache(tmp_path, memory_url, compression):
    url = f"{memory_url}/dataset"
    samples, entries_per_part = write_prefixed(url, parts=2, compression=compression)
    merge_index(url, entries_per_part[0] + entries_per_part[1])
    cache = tmp_path / "cache"
    reader = MDSReader(url, cache_dir=str(cache), verify_hashes=True)
    assert [s["id"] for s in reader] == [s["id"] for s in samples]
    assert (cache / "part-00000" / "shard.00000.mds").exists()  # downloaded, decompressed, mapped
    reader.verify(0)
    again = MDSReader(url, cache_dir=str(cache))
    assert again[len(again) - 1]["id"] == samples[-1]["id"]


def test_file_url_round_trip(tmp_path):
    samples = write_dataset(f"file://{tmp_path}")
    reader = MDSReader(f"file://{tmp_path}")
    assert [s["text"] for s in reader] == [s["text"] for s in samples]


def test_import_pulls_neither_torch_nor_spark():
    code = "import sys, shards; print(sorted(m for m in ('torch', 'pyspark') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_s3_round_trip(s3_prefix, tmp_path):
    """Against the real local S3 server (AWS_ENDPOINT_URL set by the fixture, honoured by s3fs)."""
    url = f"{s3_prefix}/dataset"
    samples, entries_per_part = write_prefixed(url, parts=2, compression="zstd")
    merge_index(url, entries_per_part[0] + entries_per_part[1])
    reader = MDSReader(url, cache_dir=str(tmp_path / "cache"), verify_hashes=True)
    assert [s["id"] for s in reader] == [s["id"] for s in samples]
    for shard_idx in range(reader.num_shards):
        reader.verify(shard_idx)


def test_partial_writes_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    """A writer SIGKILLed inside atomic_write_bytes leaves its temporary file; shuffle_and_write deletes it."""
    import multiprocessing
    import os
    import signal

    from shards import storage

    storage.atomic_write_bytes(str(tmp_path / "shard.00000.mds"), b"whole")

    def killed_mid_write():
        real_fsync = os.fsync
        os.fsync = lambda fd: (real_fsync(fd), os.kill(os.getpid(), signal.SIGKILL))
        storage.atomic_write_bytes(str(tmp_path / "shard.00001.mds"), b"partial")

    writer = multiprocessing.get_context("fork").Process(target=killed_mid_write)
    writer.start()
    writer.join()
    assert writer.exitcode == -signal.SIGKILL
    left = storage.remove_partial_writes(str(tmp_path))
    assert len(left) == 1 and left[0].startswith(".shard.00001.mds.tmp-")
    assert storage.list_names(str(tmp_path)) == ["shard.00000.mds"]
