"""Sequence-length warmup (``train.seq_len_warmup``): the lengths each step trains on, as configured, seen in the
metrics and in the sample ledger (tokens past a step's length carry no loss), with the data order unchanged."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from shards.config import ConfigError
from tests.training.subprocess_env import train_here
from tests.training.token_datasets import VOCAB, write_traced_dataset
from training.config import SeqLenWarmupSection

SEQ_LEN = 32
LENGTHS = [8, 8, 16, 24, 32, 32]  # steps 1-6 of a 4-step warmup from 8 tokens, in multiples of 8


def test_lengths_grow_linearly_in_multiples_from_start_to_the_full_length():
    warmup = SeqLenWarmupSection(steps=4, start=8, multiple=8)
    assert [warmup.length(step, SEQ_LEN) for step in range(1, 7)] == LENGTHS
    assert SeqLenWarmupSection(steps=0).length(1, SEQ_LEN) == SEQ_LEN  # off
    with pytest.raises(ValueError, match="at least 2 tokens"):
        SeqLenWarmupSection(steps=4, start=1)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("warmup")
    lengths = np.random.default_rng(0).integers(5, 20, 40)
    write_traced_dataset(str(work / "data"), {f"web/{i}": 1 + (np.arange(n) + 7 * i) % (VOCAB - 1)
                                              for i, n in enumerate(lengths)}, seq_len=SEQ_LEN)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 16, n_heads: 2, n_layers: 1, max_seq_len: {SEQ_LEN}}}}}
        data: {{datasets: [{{path: data}}], num_workers: 0, eval_split: null}}
        train: {{max_steps: 6, global_batch_size: 4, micro_batch_size: 2,
                 seq_len_warmup: {{steps: 4, start: 8, multiple: 8}}}}
        logging: {{every_steps: 1, ledger_document_losses: true, progress_bar: false, mlflow: false, plot: false}}
        """))
    return work


def ledger(run) -> dict[int, list]:
    """Step -> every sample's document spans ``[start, length, loss]`` (one rank)."""
    steps: dict[int, list] = {}
    for line in map(json.loads, (run / "ledger" / "rank-00000.jsonl").read_text().splitlines()):
        steps.setdefault(line["step"], []).extend(line["document_losses"])
    return steps


def test_each_step_trains_on_the_configured_length_and_the_order_is_unchanged(work):
    warm = train_here(work, "name=warm")
    rows = [json.loads(line) for line in (warm / "metrics.jsonl").read_text().splitlines()]
    assert [r["seq_len"] for r in rows if "loss" in r] == LENGTHS
    assert rows[-1]["tokens"] == 6 * 4 * SEQ_LEN  # tokens consumed from the data: whole samples
    spans = ledger(warm)
    for step, length in enumerate(LENGTHS, 1):
        for sample in spans[step]:
            for start, _, loss in sample:
                if start >= length:  # wholly past the trained prefix
                    assert loss is None, (step, sample)
    assert any(loss is not None and start >= 8 for sample in spans[6] for start, _, loss in sample)
    cold = train_here(work, "name=cold", "train.seq_len_warmup.steps=0")
    positions = [[line["positions"] for line in map(json.loads, (run / "ledger" / "rank-00000.jsonl").read_text()
                                                     .splitlines())] for run in (warm, cold)]
    assert positions[0] == positions[1]
    assert all("seq_len" not in json.loads(line) for line in (cold / "metrics.jsonl").read_text().splitlines())


def test_a_start_at_the_datas_length_is_a_config_error(work):
    with pytest.raises(ConfigError, match=r"seq_len_warmup.start \(32\) must be below the data's seq_len \(32\)"):
        train_here(work, "name=bad", "train.seq_len_warmup.start=32")


def test_warmup_on_instruction_data_is_a_config_error(tmp_path):
    from training.config import load_config

    (tmp_path / "ft.yaml").write_text(textwrap.dedent("""\
        model: {preset: tiny}
        data: {instruction: {path: chat.jsonl, tokenizer: tokenizer.json}}
        train: {max_steps: 4, global_batch_size: 4, micro_batch_size: 2, seq_len_warmup: {steps: 2, start: 8}}
        """))
    with pytest.raises(ConfigError, match="seq_len_warmup truncates samples .* instruction data"):
        load_config(tmp_path / "ft.yaml")
