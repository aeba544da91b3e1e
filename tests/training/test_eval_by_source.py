"""``eval.loss_by_source`` on the demo's ETL-built dataset: the eval loss of each source's tokens beside the
overall one. The oracle counts each source's tokens in the evaluated samples straight from the provenance table
and the shards' keys; the sources' losses, weighted by those counts, give the overall eval loss."""
from __future__ import annotations

import json
import textwrap

import deltalake
import pytest

from shards import MDSReader
from shards.provenance import arrow_dataset
from tests.training.subprocess_env import train_here

EVAL_BATCHES, BATCH = 2, 8


@pytest.fixture(scope="module")
def run(demo_etl, tmp_path_factory):
    work = tmp_path_factory.mktemp("by_source")
    (work / "dataset").symlink_to(demo_etl["etl"] / "dataset")
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 32, n_heads: 2, n_layers: 1, max_seq_len: 128, vocab_size: 512}}}}
        data: {{datasets: [{{path: dataset}}], num_workers: 0}}
        train: {{max_steps: 4, global_batch_size: {BATCH}, micro_batch_size: 4}}
        eval: {{every_steps: 4, batches: {EVAL_BATCHES}, loss_by_source: true}}
        logging: {{every_steps: 4, progress_bar: false, mlflow: false, plot: false}}
        """))
    return work, demo_etl["etl"], train_here(work, "name=by-source")


def tokens_by_source(etl) -> dict[str, int]:
    """Counted positions (all but each row's last, whose label is ignored) of the evaluated val samples (the
    first EVAL_BATCHES x BATCH, in order: one dataset, not shuffled), per source, from the provenance table."""
    reader = MDSReader(str(etl / "dataset" / "v=1" / "val"))
    keys = [(int(reader[i]["bucket"]), int(reader[i]["bucket_index"])) for i in range(EVAL_BATCHES * BATCH)]
    rows = arrow_dataset(deltalake.DeltaTable(str(etl / "tokenize" / "provenance"))).to_table().to_pylist()
    counts: dict[str, int] = {}
    for key in keys:
        for row in rows:
            if row["split"] == "val" and (row["bucket"], row["sample_index"]) == key:
                counted = min(row["sample_offset"] + row["length"], 127) - row["sample_offset"]
                counts[row["source"]] = counts.get(row["source"], 0) + max(counted, 0)
    return counts


def test_each_sources_loss_is_logged_and_they_add_up_to_the_eval_loss(run):
    _, etl, trained = run
    record = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()][-1]
    expected = tokens_by_source(etl)
    assert {k.split("/", 1)[1]: v for k, v in record.items() if k.startswith("eval_tokens/")} == expected
    losses = {k.split("/", 1)[1]: v for k, v in record.items() if k.startswith("eval_loss/")}
    assert losses.keys() == expected.keys() and len(losses) >= 2
    weighted = sum(losses[s] * expected[s] for s in losses) / sum(expected.values())
    assert weighted == pytest.approx(record["eval_loss"], rel=1e-9)


def test_a_dataset_without_provenance_is_a_config_error(run, tmp_path):
    from shards.config import ConfigError

    from tests.training.token_datasets import write_token_dataset

    work, _, _ = run
    write_token_dataset(str(work / "plain"), {"train": 16, "val": 16}, seq_len=128)
    with pytest.raises(ConfigError, match="eval.loss_by_source: .*plain"):
        train_here(work, "name=plain", "data.datasets=[{path: plain}]", "model.overrides.vocab_size=256")
