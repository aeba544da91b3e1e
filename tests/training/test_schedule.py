"""``data.schedule``: mixture proportions that change by phase (training.data.order).

Through the order function over 30 mixing blocks a phase, each dataset's share of every phase is the
configured one, and each dataset's samples continue across a phase boundary instead of starting again. On
a short run the ledger holds exactly the order's samples, and a run SIGKILLed in the middle of phase 2 and
launched again ends with the same ledger and bitwise the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from tests.training.subprocess_env import finish, start_launch
from tests.training.token_datasets import write_token_dataset
from training.config import load_config
from training.data.order import MIX_BLOCK, GlobalOrder, build_order, schedule_phases
from training.data.sources import resolve_source
from training.weights.checkpoint_reader import read_model_state

SIZES = [[400] * 5, [300] * 5]  # two datasets' shards
PHASES = [(30 * MIX_BLOCK, [0.7, 0.3]), (None, [0.2, 0.8])]


def test_each_phase_has_its_proportions_and_datasets_continue_across_phases():
    order = GlobalOrder(SIZES, [1.0, 1.0], seed=5, shuffle=True, window_shards=2, phases=PHASES)
    datasets, samples = order.locate(0, 60 * MIX_BLOCK)
    for phase, (start, (_, proportions)) in enumerate(zip((0, 30 * MIX_BLOCK), PHASES)):
        counts = np.bincount(datasets[start:start + 30 * MIX_BLOCK], minlength=2)
        shares = counts / counts.sum()
        assert np.allclose(shares, proportions, rtol=0.01), (phase, shares)
    for d, dataset in enumerate(order.datasets):  # one stream of draws per dataset, whatever the phase
        mine = samples[datasets == d]
        assert mine.tolist() == dataset.samples(0, len(mine)).tolist()
    # The first phase is the order without a schedule; a dataset may sit a phase out.
    plain = GlobalOrder(SIZES, [0.7, 0.3], seed=5, shuffle=True, window_shards=2)
    assert [a.tolist() for a in plain.locate(0, 30 * MIX_BLOCK)] == [datasets[:30 * MIX_BLOCK].tolist(),
                                                                     samples[:30 * MIX_BLOCK].tolist()]
    only_first = GlobalOrder(SIZES, [1.0, 1.0], 5, True, 2, phases=[(2500, [1.0, 0.0]), (None, [1.0, 1.0])])
    datasets, samples = only_first.locate(0, 5000)
    assert set(datasets[:2500].tolist()) == {0} and set(datasets[2500:].tolist()) == {0, 1}
    mine = samples[datasets == 0]  # continued across a boundary inside a block
    assert mine.tolist() == only_first.datasets[0].samples(0, len(mine)).tolist()
    assert only_first.draws_before(5000).tolist() == np.bincount(datasets, minlength=2).tolist()


STEPS, BATCH = 8, 8


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("schedule")
    write_token_dataset(str(work / "web"), {"train": 200}, seq_len=16, size_limit=1 << 11)
    write_token_dataset(str(work / "books"), {"train": 200}, seq_len=16, size_limit=1 << 11, sample_offset=1000)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 16, n_heads: 2, n_layers: 1, max_seq_len: 16}}}}
        data: {{datasets: [{{path: web}}, {{path: books}}], num_workers: 0, eval_split: null,
                schedule: [{{until_step: 4, proportions: [3, 1]}}, {{until_step: null, proportions: [1, 3]}}]}}
        train: {{max_steps: {STEPS}, global_batch_size: {BATCH}, micro_batch_size: 4}}
        optimizer: {{lr: 1.0e-2}}
        checkpoint: {{every_steps: 2}}
        logging: {{every_steps: 1, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))
    return work


def ledger(run) -> list[tuple[int, int]]:
    """(position, sample id) of every sample the run trained on, the last attempt's where steps were redone."""
    lines = [json.loads(line) for path in sorted((run / "ledger").glob("rank-*.jsonl"))
             for line in path.read_text().splitlines()]
    latest = {}
    for line in sorted(lines, key=lambda line: line["attempt"]):
        for position, sample in zip(line["positions"], line["sample_ids"]):
            latest[position] = sample
    return sorted(latest.items())


def test_a_run_trains_on_the_orders_samples_and_a_kill_in_phase_two_resumes_to_the_same_weights(work):
    """Two launches on 2 ranks side by side: one uninterrupted, one SIGKILLed after step 6 (phase 2) and
    launched again."""
    whole = start_launch(work, "whole", [], nproc=2, KILN_FAULT_PLAN="")
    killed = start_launch(work, "killed", [], nproc=2, KILN_FAULT_PLAN="kill_at_step=6@1")
    cfg = load_config(work / "train.yaml", ["name=check"])
    sources = [resolve_source(str(work / name), "train") for name in ("web", "books")]
    order = build_order(sources, cfg.data.seed, True, cfg.data.shuffle_window_shards,
                        schedule_phases(cfg.data.schedule, BATCH))
    expected = order.sample_ids(*order.locate(0, STEPS * BATCH))
    first, second = expected[:4 * BATCH] < 200, expected[4 * BATCH:] < 200  # web holds sample ids 0-199
    assert first.sum() > second.sum()  # web's phase, then books'
    finish(whole)
    assert [sample for _, sample in ledger(whole[1])] == expected.tolist()
    finish(killed, succeeds=False)
    finish(start_launch(work, "killed", [], nproc=2, KILN_FAULT_PLAN=""))
    assert ledger(killed[1]) == ledger(whole[1])
    mine, theirs = (read_model_state(str(run / "checkpoints"))[1] for run in (killed[1], whole[1]))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("schedule, message", [
    ("[{until_step: 4, proportions: [1]}]", "one proportion per dataset"),
    ("[{until_step: 4, proportions: [1, 1]}, {until_step: 2, proportions: [1, 1]}]", "until_step must rise"),
    ("[{until_step: 4, proportions: [1, 1]}]", "last phase ends at step 4, before train.max_steps"),
    ("[{until_step: null, proportions: [0, 0]}]", "not all 0"),
])
def test_a_schedule_that_cannot_work_is_a_config_error(work, schedule, message):
    from shards.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(work / "train.yaml", ["name=check", f"data.schedule={schedule}"])


def test_a_sweep_run_ends_each_phase_at_the_same_fraction_of_its_training():
    from shards.config import from_dict
    from training.config import TrainConfig
    from training.planning.sweep import _scaled_schedule

    base = from_dict(TrainConfig, {
        "data": {"datasets": [{"path": "a"}, {"path": "b"}],
                 "schedule": [{"until_step": 900, "proportions": [0.7, 0.3]}, {"until_step": None, "proportions": [0.2, 0.8]}]},
        "train": {"max_steps": 1000, "global_batch_size": 8, "micro_batch_size": 8,
                  "seq_len_warmup": {"steps": 100, "start": 8}}}, "config")
    overrides = _scaled_schedule(base, 100)
    assert "train.seq_len_warmup.steps=10" in overrides
    scaled = load_config_dict(base, overrides)
    assert [(p.until_step, p.proportions) for p in scaled.data.schedule] == [(90, [0.7, 0.3]), (None, [0.2, 0.8])]


def load_config_dict(base, overrides):
    """``base`` with the ``key.path=value`` overrides applied, read back as a config."""
    from shards.config import from_dict, parse_override, set_path, to_dict
    from training.config import TrainConfig

    data = to_dict(base)
    for override in overrides:
        set_path(data, *parse_override(override))
    return from_dict(TrainConfig, data, "config")
