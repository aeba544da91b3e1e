"""Interop both ways with mosaicml-streaming 0.13.0, the reference MDS implementation.

streaming's pins clash with ours, so `scripts/side_install_streaming.sh` installs it into
.cache/side/streaming; one subprocess with that folder first on sys.path reads our datasets
with `streaming.StreamingDataset` and writes datasets with `streaming.MDSWriter`, keeping this
process free of it. Skipped only when that folder is missing and CI is unset.
"""
from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shards import MDSReader, MDSWriter, merge_index, read_index
from tests.shards.samples import ALL_COLUMNS, assert_same_samples, make_sample

REPO = Path(__file__).resolve().parents[2]
SIDE = REPO / ".cache" / "side" / "streaming"

# Runs in the subprocess: job file in, results file out.
PEER = r"""
import gc, pickle, sys
from streaming import MDSWriter, StreamingDataset
from streaming.base.util import clean_stale_shared_memory

with open(sys.argv[1], "rb") as f:
    job = pickle.load(f)
result = {}
for name, folder in job["read"].items():
    dataset = StreamingDataset(local=folder, remote=None, shuffle=False, batch_size=1)
    result[name] = {
        "len": len(dataset),
        "by_index": [dataset[i] for i in range(len(dataset))],
        "iterated": list(dataset),
    }
    del dataset
for name, spec in job["write"].items():
    with MDSWriter(out=spec["out"], columns=spec["columns"], compression=spec["compression"],
                   hashes=spec["hashes"], size_limit=spec["size_limit"]) as writer:
        for sample in spec["samples"]:
            writer.write(sample)
gc.collect()
clean_stale_shared_memory()
with open(sys.argv[2], "wb") as f:
    pickle.dump(result, f)
"""

STREAMING_SHM = re.compile(r"^\d{6}_")  # streaming names its shared memory 000000_<what>


def ci_is_set() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def token_samples(n: int) -> list[dict]:
    rng = np.random.default_rng(7)
    return [{"tokens": rng.integers(0, 50_000, 256, dtype=np.uint16)} for _ in range(n)]


def write_ours(out: Path, samples: list[dict], columns: dict, **kwargs) -> None:
    with MDSWriter(str(out), columns, **kwargs) as writer:
        for sample in samples:
            writer.write(sample)


def shm_names() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if STREAMING_SHM.match(n)} if os.path.isdir("/dev/shm") else set()


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """Write our datasets, run streaming once over them (and have it write its own), return all."""
    if not SIDE.is_dir():
        if not ci_is_set():
            pytest.skip(f"mosaicml-streaming not installed in {SIDE}; run scripts/side_install_streaming.sh")
        pytest.fail(f"CI is set but {SIDE} is missing: the Makefile must run scripts/side_install_streaming.sh")
    root = tmp_path_factory.mktemp("interop")
    mixed = [make_sample(i) for i in range(120)]
    tokens = token_samples(300)

    ours = {
        "mixed": (mixed, dict(columns=ALL_COLUMNS, hashes=["sha1", "xxh64"], size_limit=6_000)),
        "tokens_zstd": (tokens, dict(columns={"tokens": "ndarray:uint16"}, compression="zstd:3",
                                     hashes=["xxh3_64"], size_limit=40_000)),
    }
    for name, (samples, kwargs) in ours.items():
        write_ours(root / "ours" / name, samples, **kwargs)
    # Several prefixed writers merged into one index, as the Spark stage writes datasets.
    prefixed = root / "ours" / "prefixed"
    entries = []
    for part in range(3):
        with MDSWriter(str(prefixed), {"tokens": "ndarray:uint16"}, size_limit=20_000, prefix=f"part-{part:05d}",
                       write_index=False) as writer:
            for sample in tokens[part * 100:(part + 1) * 100]:
                writer.write(sample)
        entries.append(writer.shard_entries)
    merge_index(str(prefixed), itertools.chain.from_iterable(entries))
    ours["prefixed"] = (tokens, {})

    # streaming decompresses into the folder it reads, so it reads copies.
    read_job = {}
    for name in ours:
        shutil.copytree(root / "ours" / name, root / "read" / name)
        read_job[name] = str(root / "read" / name)

    theirs = {
        "mixed": dict(samples=mixed, columns=ALL_COLUMNS, compression=None, hashes=["sha1", "xxh64"], size_limit=6_000),
        "tokens_zstd": dict(samples=tokens, columns={"tokens": "ndarray:uint16"}, compression="zstd:3",
                            hashes=["xxh3_64"], size_limit=40_000),
        "pickle": dict(samples=[{"obj": {"pkl": f"p{i}", "n": i}, "id": i} for i in range(5)],
                       columns={"obj": "pkl", "id": "int"}, compression=None, hashes=[], size_limit=1 << 26),
    }
    write_job = {name: dict(spec, out=str(root / "theirs" / name)) for name, spec in theirs.items()}

    job_file, result_file = root / "job.pkl", root / "result.pkl"
    job_file.write_bytes(pickle.dumps({"read": read_job, "write": write_job}))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")}
    env["PYTHONPATH"] = str(SIDE)
    shm_before = shm_names()
    proc = subprocess.run([sys.executable, "-c", PEER, str(job_file), str(result_file)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"streaming subprocess failed:\n{proc.stderr[-4000:]}"
    return {
        "root": root,
        "ours": ours,
        "theirs": theirs,
        "read": pickle.loads(result_file.read_bytes()),
        "shm_leaked": shm_names() - shm_before,
    }


@pytest.mark.parametrize("name", ["mixed", "tokens_zstd", "prefixed"])
def test_streaming_reads_our_shards(peer, name):
    expected = peer["ours"][name][0]
    result = peer["read"][name]
    assert result["len"] == len(expected)
    assert_same_samples(result["by_index"], expected)
    assert_same_samples(result["iterated"], expected)
    # Our reader returns exactly what streaming returns, value types included.
    ours = list(MDSReader(str(peer["root"] / "ours" / name)))
    for mine, theirs in zip(ours, result["by_index"]):
        assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in theirs.items()}


@pytest.mark.parametrize("name", ["mixed", "tokens_zstd"])
def test_we_read_streaming_shards(peer, name):
    folder = str(peer["root"] / "theirs" / name)
    reader = MDSReader(folder, verify_hashes=True)
    assert_same_samples(list(reader), peer["theirs"][name]["samples"])
    assert_same_samples([reader[i] for i in range(len(reader))], peer["theirs"][name]["samples"])
    for shard_idx in range(reader.num_shards):
        reader.verify(shard_idx)


def test_we_read_streaming_pickle_only_when_allowed(peer):
    folder = str(peer["root"] / "theirs" / "pickle")
    with pytest.raises(ValueError, match="allow_pickle"):
        MDSReader(folder)
    assert list(MDSReader(folder, allow_pickle=True)) == peer["theirs"]["pickle"]["samples"]


def test_uncompressed_shards_are_byte_identical_to_streaming(peer):
    """Same samples and settings: same rolling, same shard bytes, same index.json."""
    ours = peer["root"] / "ours" / "mixed"
    theirs = peer["root"] / "theirs" / "mixed"
    assert json.loads((ours / "index.json").read_bytes()) == json.loads((theirs / "index.json").read_bytes())
    names = [e["raw_data"]["basename"] for e in read_index(str(ours))["shards"]]
    assert len(names) > 1
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name


def test_compressed_shards_roll_and_hash_like_streaming(peer):
    ours = read_index(str(peer["root"] / "ours" / "tokens_zstd"))["shards"]
    theirs = read_index(str(peer["root"] / "theirs" / "tokens_zstd"))["shards"]
    assert [e["samples"] for e in ours] == [e["samples"] for e in theirs]
    assert [e["raw_data"] for e in ours] == [e["raw_data"] for e in theirs]  # zstd bytes may differ by library


def test_streaming_left_no_shared_memory(peer):
    assert not peer["shm_leaked"]
