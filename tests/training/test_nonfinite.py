"""The non-finite guard, end to end on CPU with gloo through `python -m training.launch` (2 ranks).

A NaN put into rank 1's gradient at step S (KILN_FAULT_PLAN=nan_grad_at_step=S@1) must keep step S off
every rank: the final weights equal, bitwise, a run told to skip step S (train.skip_steps). Skipped steps
in a row up to train.max_skipped_steps fail the run with a message saying so. The two launches start
together.
"""
from __future__ import annotations

import gc
import textwrap
from pathlib import Path

import pytest
import torch

from tests.training.subprocess_env import finish, start_launch
from tests.training.token_datasets import write_token_dataset
from training.config import load_config
from training.optim import AdamW, Lion
from training.run.guard import TooManySkippedSteps
from training.run.journal import read_events
from training.train import train
from training.weights.checkpoint_reader import read_model_state

STEPS, SKIPPED = 5, 3


@pytest.fixture(scope="module")
def launches(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("nonfinite")
    write_token_dataset(str(work / "data"), {"train": 64}, seq_len=16, size_limit=1 << 11)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 16, n_heads: 2, n_layers: 1, max_seq_len: 16}}}}
        data: {{datasets: [{{path: {work / 'data'}}}], num_workers: 0, shuffle_window_shards: 2, eval_split: null}}
        train: {{max_steps: {STEPS}, global_batch_size: 4, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2, weight_decay: 1.0e-2}}
        schedule: {{warmup_steps: 2, decay: cosine}}
        checkpoint: {{every_steps: 100}}  # on; saves only after the last step
        logging: {{every_steps: 2, progress_bar: false, mlflow: false, plot: false}}
        """))
    runs = {
        "nan": ({"KILN_FAULT_PLAN": f"nan_grad_at_step={SKIPPED}@1"}, []),
        "told": ({}, [f"train.skip_steps=[{SKIPPED}]"]),
    }
    started = {name: start_launch(work, name, overrides, **env) for name, (env, overrides) in runs.items()}
    yield {"work": work, **started}
    for proc, _, _ in started.values():  # after a failed test
        if proc.poll() is None:
            proc.kill()


def test_a_nan_on_one_rank_is_applied_on_no_rank(launches):
    finish(launches["nan"])
    finish(launches["told"])
    nan_run, told_run = launches["nan"][1], launches["told"][1]
    _, expected = read_model_state(str(told_run / "checkpoints"))
    _, got = read_model_state(str(nan_run / "checkpoints"))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert all(torch.isfinite(tensor).all() for tensor in got.values())

    [skipped] = [e for e in read_events(nan_run / "journal.jsonl") if e["event"] == "skipped"]
    assert (skipped["nonfinite"], skipped["requested"], skipped["total"]) == ([SKIPPED], [], 1)
    [told] = [e for e in read_events(told_run / "journal.jsonl") if e["event"] == "skipped"]
    assert (told["nonfinite"], told["requested"]) == ([], [SKIPPED])
    assert "steps skipped: 1" in (nan_run / "training_log.md").read_text()


def test_max_skipped_steps_in_a_row_fail_the_run_with_a_message(launches, monkeypatch):
    """One rank, in this process (every rank reaches the same verdicts from the same shared numbers)."""
    work = launches["work"]
    monkeypatch.chdir(work)
    cfg = load_config(work / "train.yaml", ["name=stuck", "train.skip_steps=[2,3,4]", "train.max_skipped_steps=3"])
    try:
        with pytest.raises(TooManySkippedSteps, match=r"3 steps in a row skipped, up to step 4 \(train.max_skip"):
            train(cfg)
    finally:
        gc.collect()  # the run's gloo group, in a reference cycle, must not be collected in a forked child
    events = read_events(work / "runs" / "stuck" / "journal.jsonl")
    [failure] = [e for e in events if e["event"] == "failure"]
    assert failure["step"] == 4 and failure["cause"].startswith("TooManySkippedSteps: 3 steps in a row")
    assert [e["requested"] for e in events if e["event"] == "skipped"] == [[2], [3, 4]]


@pytest.mark.parametrize("optimizer", [AdamW, Lion])
def test_a_skipped_step_leaves_weights_moments_and_step_counter_as_they_were(optimizer):
    """Zeroed gradients would not do: momentum and weight decay still move the weights."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = optimizer(params, lr=1e-2, weight_decay=1e-2)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step(skip=torch.tensor(False))
    before = [p.detach().clone() for p in params]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    opt.step(skip=torch.tensor(True))
    assert all(torch.equal(b, p) for b, p in zip(before, params))
    assert all(torch.equal(s[k], opt.state[p][k]) for s, p in zip(state, params) for k in s)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step(skip=torch.tensor(False))
    assert not torch.equal(before[0], params[0])  # a zero gradient is not a skip
