"""Scheduled refresh on a real local Spark + Delta: only new files are taken, dedup runs against what
was kept before, the cumulative table grows by MERGE, each refresh publishes a new dataset version. The
two nights are the suite's (tests/conftest.py refresh_nights), which the cluster's refresh test shares."""
from __future__ import annotations

import json
import os

import pytest

from etl.__main__ import main
from etl.delta import read_table, table_version
from etl.refresh import check_refreshable
from etl.load_config import validate_pipeline_config
from shards import MDSReader, list_versions, read_manifest, version_path
from shards.config import ConfigError
from tests.etl.corpus import dataset_ids, ids_of, write_config, write_jsonl


def test_refresh_takes_only_new_files_and_publishes_a_version_each_time(spark, refresh_nights, capsys):
    corpus, (first, second) = refresh_nights["corpus"], refresh_nights["runs"]
    config_path, night1 = refresh_nights["config"], str(refresh_nights["night1"])
    out, dataset = str(refresh_nights["out"]), str(refresh_nights["out"] / "dataset")
    batch1 = {f"web/{d['id']}" for d in corpus.batch1}

    # The first night: batch 1's two files, published as version 1 (its output as the night left it).
    assert ids_of(spark, f"{night1}/cumulative") == batch1
    assert list_versions(f"{night1}/dataset") == [1]
    assert first.steps[0].docs_in == 100 and first.funnel_end == "accumulate"

    # The second night, batch2.jsonl: new documents, and exact and near duplicates of batch-1 documents.
    # An id published before comes back: the same document (a replay) or other content.
    new = {f"web/{d['id']}" for d in corpus.new}
    replayed, republished = f"web/{corpus.replayed[0]['id']}", f"web/{corpus.republished[0]['id']}"
    assert ids_of(spark, f"{out}/accumulate") == new | {replayed}
    cumulative = {r["id"]: r["text"] for r in read_table(spark, f"{out}/cumulative").collect()}
    assert set(cumulative) == batch1 | new and cumulative[republished] == corpus.batch1[-2]["text"]
    rejected = {r["id"]: (r["reason"], r["detail"]) for r in read_table(spark, f"{out}/rejected").collect()}
    assert rejected == {
        **{f"web/{d['id']}": ("exact_duplicate", f"web/a{i}") for i, d in enumerate(corpus.exact)},
        **{f"web/{d['id']}": ("near_duplicate", f"web/{d['of']}") for d in corpus.near},
        republished: ("id_already_published", "other content than the published document with this id"),
    }
    funnel = {s.stage: (s.docs_in, s.docs_out) for s in second.steps}
    assert funnel["ingest"] == (62, 62) and funnel["accumulate"] == (42, 41) and funnel["tokenize"] == (140, 140)
    assert second.steps[-3].metrics == {"inserted": 40}

    assert list_versions(dataset) == [1, 2]
    v1, v2 = read_manifest(version_path(dataset, 1)), read_manifest(version_path(dataset, 2))
    assert dataset_ids(spark, version_path(dataset, 2)) == batch1 | new
    assert dataset_ids(spark, version_path(dataset, 1)) == batch1  # Delta time travel keeps v=1's tables
    assert sum(v2.num_tokens.values()) > sum(v1.num_tokens.values()) and sum(v2.num_samples.values()) > sum(v1.num_samples.values())
    for split in v1.splits:  # the old version's shards are untouched
        assert len(list(MDSReader(f"{version_path(dataset, 1)}/{split}"))) == v1.num_samples[split]

    # Again over the same files: nothing is written, not even an empty commit.
    versions = {t: table_version(spark, f"{out}/{t}") for t in ("cumulative", "tokenize", "_state/refresh_files")}
    assert main(["refresh", config_path]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert {t: table_version(spark, f"{out}/{t}") for t in versions} == versions
    assert list_versions(dataset) == [1, 2]

    # A file taken before whose contents changed is an error, not silently taken or skipped. (The file
    # is put back as it was, modification time too: the cluster's refresh test reads it.)
    changed = refresh_nights["inputs"] / "batch1_a.jsonl"
    before, stat = changed.read_bytes(), changed.stat()
    try:
        with open(changed, "a") as f:
            f.write(json.dumps({"id": "late", "text": "a late addition."}) + "\n")
        assert main(["refresh", config_path]) == 1
    finally:
        changed.write_bytes(before)
        os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    err = capsys.readouterr().err
    assert "1 input file(s) changed after a refresh took them" in err and "batch1_a.jsonl" in err
    assert list_versions(dataset) == [1, 2]


@pytest.mark.parametrize("stage", ["exact_dedup", "minhash_dedup"])
def test_refresh_requires_incremental_dedup(tmp_path, capsys, stage):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "one two three."}])
    config_path = write_config(tmp_path, ["one two three four five six"])
    assert main(["refresh", config_path, "--set", f"{stage}.incremental=false"]) == 2
    assert f"refresh needs {stage} with `incremental: true`" in capsys.readouterr().err


def test_refresh_requires_the_dataset_stages(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "one two three."}])
    config, stages = validate_pipeline_config({
        "output": str(tmp_path / "out"), "inputs": [{"path": str(tmp_path / "in" / "*.jsonl"), "source": "web"}],
        "stages": [{"name": "exact_dedup", "params": {"incremental": True}}],
    })
    with pytest.raises(ConfigError, match="must end with tokenize, shuffle_and_write"):
        check_refreshable(config, stages)
