"""Versioned dataset folders: the manifest, completeness, version numbering, fingerprints."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from shards import (
    MANIFEST_FORMAT,
    DatasetManifest,
    MDSReader,
    MDSWriter,
    content_hash,
    dataset_fingerprint,
    latest_version,
    list_versions,
    next_version,
    read_manifest,
    resolve_version,
    split_path,
    storage,
    token_columns,
    version_path,
    write_manifest,
)

SEQ_LEN = 16
VOCAB = 50_257


def make_manifest(version: int, num_samples: dict[str, int], **overrides) -> DatasetManifest:
    fields = dict(
        version=version,
        created_at="2026-01-02T03:04:05+00:00",
        seq_len=SEQ_LEN,
        token_dtype="uint16",
        vocab_size=VOCAB,
        num_samples=num_samples,
        num_tokens={split: n * SEQ_LEN for split, n in num_samples.items()},
        splits=list(num_samples),
        source_tables=[{"path": "s3://lake/docs", "delta_version": 7}],
        config_hash="cfg-abc",
        tokenizer_hash="tok-def",
        seed=1234,
        dropped_tail_tokens=3,
        extra={"note": "test"},
    )
    fields.update(overrides)
    return DatasetManifest(**fields)


def write_split(version_dir: str, split: str, n: int) -> None:
    with MDSWriter(split_path(version_dir, split), token_columns(VOCAB), size_limit=400) as writer:
        for i in range(n):
            writer.write({"tokens": np.full(SEQ_LEN, i, np.uint16)})


def publish(root: str, counts: dict[str, int]) -> DatasetManifest:
    version = next_version(root)
    for split, n in counts.items():
        write_split(version_path(root, version), split, n)
    manifest = make_manifest(version, counts)
    write_manifest(root, manifest)
    return manifest


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "datasets")
        return
    url = f"memory://kiln-manifest-test-{os.getpid()}-{id(request)}"
    yield url
    fs, path = storage.open_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_publish_and_read_back(root):
    assert list_versions(root) == [] and latest_version(root) is None and next_version(root) == 1
    first = publish(root, {"train": 30, "val": 5})
    assert first.version == 1
    assert storage.exists(storage.join(root, "v=1", "manifest.json"))
    assert read_manifest(root) == first
    assert read_manifest(version_path(root, 1)) == first
    reader = MDSReader(split_path(resolve_version(root), "val"))
    assert len(reader) == 5 and reader[4]["tokens"].dtype == np.uint16
    second = publish(root, {"train": 12, "val": 2})
    assert list_versions(root) == [1, 2] and latest_version(root) == 2
    assert read_manifest(root) == second
    assert read_manifest(version_path(root, 1)) == first  # old versions stay readable


def test_incomplete_versions_are_not_listed(root):
    publish(root, {"train": 4})
    # A build that crashed before its manifest...
    write_split(version_path(root, 2), "train", 4)
    # ...and a version whose split index went missing after publication.
    third = publish(root, {"train": 4, "val": 4})
    fs, path = storage.open_fs(split_path(version_path(root, third.version), "val"))
    fs.rm(path + "/index.json")
    assert list_versions(root) == [1]
    assert list_versions(root, include_incomplete=True) == [1, 2, 3]
    assert latest_version(root) == 1
    assert next_version(root) == 4  # never reuse a folder a crashed build may have touched
    assert read_manifest(root).version == 1


def test_write_manifest_checks_the_splits(root):
    version_dir = version_path(root, 1)
    write_split(version_dir, "train", 10)
    with pytest.raises(FileNotFoundError, match="split 'val'"):
        write_manifest(root, make_manifest(1, {"train": 10, "val": 3}))
    with pytest.raises(ValueError, match="holds 10 samples but the manifest says 11"):
        write_manifest(root, make_manifest(1, {"train": 11}))
    assert list_versions(root, include_incomplete=True) == [1] and latest_version(root) is None
    write_manifest(root, make_manifest(1, {"train": 10}))
    with pytest.raises(FileExistsError, match="immutable"):
        write_manifest(root, make_manifest(1, {"train": 10}))


def test_manifest_file_is_plain_sorted_json(tmp_path):
    root = str(tmp_path)
    manifest = publish(root, {"train": 3})
    text = (tmp_path / "v=1" / "manifest.json").read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["source_tables"] == [{"path": "s3://lake/docs", "delta_version": 7}]
    assert DatasetManifest.from_dict(data) == manifest
    assert not [p for p in (tmp_path / "v=1").iterdir() if ".tmp-" in p.name]


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="complete v=N"):
        read_manifest(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(vocab_size=70_000), "does not fit token_dtype uint16"),
        (dict(token_dtype="float32"), "integer dtype"),
        (dict(num_tokens={"other": 1}), "num_tokens must have one count per split"),
        (dict(splits=["train", "train"]), "twice"),
        (dict(splits=["../x"]), "plain folder name"),
        (dict(seq_len=0), "seq_len"),
        (dict(seed="7"), "seed must be an int"),
        (dict(created_at="yesterday"), "ISO 8601"),
        (dict(source_tables=[{"path": "x"}]), "source_tables\\[0\\]"),
    ],
)
def test_manifest_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_manifest(1, {"train": 1}, **overrides)


def test_from_dict_names_unknown_and_missing_keys():
    data = make_manifest(1, {"train": 1}).to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        DatasetManifest.from_dict({**data, "colour": "blue"})
    del data["seed"]
    with pytest.raises(ValueError, match=r"lacks required keys \['seed'\]"):
        DatasetManifest.from_dict(data)


def test_fingerprint_is_stable_and_content_only():
    manifest = make_manifest(1, {"train": 10, "val": 2})
    fingerprint = dataset_fingerprint(manifest)
    # A golden value: changing how fingerprints are computed breaks every resumable run.
    assert fingerprint == "062804ca69ccb5f2d879a60107e588ac05071489bb0f5acecd8852e6d1780187"
    moved = dataclasses.replace(manifest, version=9, created_at="2030-01-01T00:00:00+00:00", extra={})
    assert dataset_fingerprint(moved) == fingerprint
    for change in (dict(seed=1), dict(config_hash="other"), dict(tokenizer_hash="t2"),
                   dict(source_tables=[{"path": "s3://lake/docs", "delta_version": 8}])):
        assert dataset_fingerprint(dataclasses.replace(manifest, **change)) != fingerprint


def test_s3_layout(s3_prefix):
    root = f"{s3_prefix}/datasets"
    publish(root, {"train": 6})
    publish(root, {"train": 8})
    assert list_versions(root) == [1, 2]
    assert read_manifest(root).num_samples == {"train": 8}
    assert len(MDSReader(split_path(resolve_version(root), "train"))) == 8



CONTENT = content_hash(token_columns(VOCAB), {"train": ["a" * 64, "b" * 64], "val": ["c" * 64]})


def test_format_1_manifests_are_written_read_and_fingerprinted_as_before(tmp_path):
    """A manifest from before formats has no `format` key: it loads as format 1, its file and its
    fingerprint stay what they were (the golden value above), so its checkpoints keep resuming."""
    manifest = make_manifest(1, {"train": 10, "val": 2})
    data = manifest.to_dict()
    assert manifest.format == 1 and "format" not in data and "content_hash" not in data
    assert DatasetManifest.from_dict(data) == manifest
    assert dataset_fingerprint(manifest) == "062804ca69ccb5f2d879a60107e588ac05071489bb0f5acecd8852e6d1780187"


def test_format_2_fingerprint_covers_the_content_hash_not_the_delta_versions():
    manifest = make_manifest(1, {"train": 10, "val": 2}, format=MANIFEST_FORMAT, content_hash=CONTENT)
    assert manifest.to_dict()["format"] == 2 and DatasetManifest.from_dict(manifest.to_dict()) == manifest
    fingerprint = dataset_fingerprint(manifest)
    assert fingerprint != dataset_fingerprint(make_manifest(1, {"train": 10, "val": 2}))
    # Rebuilt from tables whose Delta versions moved, under another version number: the same data.
    rebuilt = dataclasses.replace(manifest, version=2, created_at="2030-01-01T00:00:00+00:00", extra={},
                                  source_tables=[{"path": "s3://lake/docs", "delta_version": 8}])
    assert dataset_fingerprint(rebuilt) == fingerprint
    other_shards = content_hash(token_columns(VOCAB), {"train": ["b" * 64, "a" * 64], "val": ["c" * 64]})
    for change in (dict(content_hash=other_shards), dict(seed=1), dict(tokenizer_hash="t2")):
        assert dataset_fingerprint(dataclasses.replace(manifest, **change)) != fingerprint


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(format=3), r"format must be one of \[1, 2\], got 3"),
        (dict(format=True), "format must be an int"),
        (dict(format=2), "content_hash must be 64 lowercase hex digits"),
        (dict(format=2, content_hash="abc"), "content_hash must be 64 lowercase hex digits"),
        (dict(content_hash=CONTENT), "a format-1 manifest has no content_hash"),
    ],
)
def test_format_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_manifest(1, {"train": 1}, **overrides)
