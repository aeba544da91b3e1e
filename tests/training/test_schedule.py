"""``data.schedule``: mixture proportions that change by phase (training.data.order).

Through the order function over 30 mixing blocks a phase, each dataset's share of every phase is the
configured one, and each dataset's samples continue across a phase boundary instead of starting again.
Schedules that cannot work are config errors. A short run on 2 ranks, and one SIGKILLed in phase 2 and
launched again, are in test_source_mixture.py: its schedule is over two sources of one dataset, which
reach the order function as two datasets do.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from tests.training.token_datasets import write_token_dataset
from training.config import load_config
from training.data.order import MIX_BLOCK, GlobalOrder

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
