"""shuffle_and_write: the permutation and shard sizing (the stage end to end: test_mds_roundtrip.py)."""
from __future__ import annotations

import numpy as np
import pytest

from etl.stages.base import StageContext
from etl.dataset.shuffle_report import chunk_tv, neighbour_correlation
from etl.dataset.shuffle_write import KEY_COLUMNS, ShuffleAndWrite, ShuffleWriteParams, permute, samples_per_shard
from shards import MDSWriter, token_columns
from shards.config import ConfigError
from tests.etl.corpus import docs_frame, fixture_docs


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4099])
def test_permute_is_a_seeded_bijection_of_each_id_alone(n):
    ids = np.arange(n)
    positions = permute(ids, n, seed=5, name="train")
    assert sorted(positions.tolist()) == list(range(n))
    assert permute(ids[1::3], n, seed=5, name="train").tolist() == positions[1::3].tolist()
    if n >= 64:
        assert permute(ids, n, seed=6, name="train").tolist() != positions.tolist()
        assert permute(ids, n, seed=5, name="val").tolist() != positions.tolist()
        # Neighbours in the input land far apart: no runs survive.
        assert np.mean(np.abs(np.diff(positions)) == 1) < 0.05


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_samples_per_shard_is_how_a_single_writer_rolls(tmp_path, compression):
    columns = {**token_columns(50_000), **KEY_COLUMNS}
    sample = {"tokens": np.arange(100, dtype=np.uint16), "bucket": 3, "bucket_index": 9}
    per_shard = samples_per_shard(columns, sample, compression, ["sha1"], 2_000)
    with MDSWriter(str(tmp_path), columns, compression=compression, size_limit=2_000) as writer:
        for _ in range(3 * per_shard + 2):
            writer.write(sample)
    assert [e["samples"] for e in writer.shard_entries] == [per_shard] * 3 + [2]


def test_missing_samples_table_is_a_config_error(spark, tmp_path):
    stage = ShuffleAndWrite(ShuffleWriteParams())
    with pytest.raises(ConfigError, match="run the tokenize stage before shuffle_and_write"):
        stage.run(docs_frame(spark, fixture_docs(1)), StageContext(spark, str(tmp_path), str(tmp_path), "r"))


def test_window_distance_and_neighbour_correlation():
    tokens = np.array([[10, 0], [10, 0], [0, 10], [0, 10]], float)
    blocks, alternating = np.array([0, 1, 2, 3]), np.array([0, 2, 1, 3])
    assert chunk_tv(tokens, blocks, 2).tolist() == [0.5, 0.5]  # each window holds one source
    assert chunk_tv(tokens, alternating, 2).tolist() == [0.0, 0.0]
    assert chunk_tv(tokens, blocks, 3).tolist() == pytest.approx([1 / 6, 0.5])  # the last window is partial
    assert neighbour_correlation(tokens, alternating) == pytest.approx(-1.0)
    assert neighbour_correlation(tokens, blocks) > 0
