"""The spike policy (``spike:``), end to end on CPU with gloo through `python -m training.launch` (2 ranks).

A gradient-norm spike is planted on rank 1 at step SPIKE (KILN_FAULT_PLAN=grad_spike_at_step=SPIKE@1):
- ``rollback`` goes back to the newest checkpoint at least ``min_steps_back`` steps before it, skips the
  global positions from that checkpoint to the end of the spiking step, retires newer checkpoints,
  journals all of it, runs the notify hook and finishes;
- the same run SIGKILLed right after the rollback and launched again ends with bitwise the same weights,
  on 2 ranks as before and on 1;
- ``skip`` (one rank) leaves the weights equal, bitwise, to a run told ``train.skip_steps: [SPIKE]``.
The two launches start together; ``skip``, the detector, the failure after ``max_rollbacks`` and a run over a
poisoned region (random tokens planted in a pattern dataset, caught by the loss) run in this process, on one
rank.
"""
from __future__ import annotations

import gc
import http.server
import json
import re
import shutil
import subprocess
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from shards.config import ConfigError
from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from tests.training.subprocess_env import finish, start_launch, train_here
from tests.training.token_datasets import VOCAB, pattern_tokens, write_token_dataset
from training.config import ScheduleSection, SpikeSection, load_config
from training.optim import lr_multiplier
from training.run.checkpoint import finalize, latest_complete, step_name
from training.run.explain import step_start
from training.run.journal import Journal, read_events
from training.run.ledger import step_records
from training.run.spike import SpikeFailure, SpikePolicy
from training.train import train
from training.weights.checkpoint_reader import read_model_state

STEPS, SPIKE, GLOBAL_BATCH = 10, 7, 4
SPIKE_KEYS = ["spike.window=3", "spike.min_steps_back=2", "spike.lr_scale=0.5", "spike.lr_scale_steps=2"]


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    work = tmp_path_factory.mktemp("spike")
    write_token_dataset(str(work / "data"), {"train": 64}, seq_len=16, size_limit=1 << 11)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 16, n_heads: 2, n_layers: 1, max_seq_len: 16}}}}
        data: {{datasets: [{{path: data}}], num_workers: 0, shuffle_window_shards: 2, eval_split: null}}
        train: {{max_steps: {STEPS}, global_batch_size: {GLOBAL_BATCH}, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2, weight_decay: 1.0e-2}}
        schedule: {{warmup_steps: 2, decay: cosine}}
        checkpoint: {{every_steps: 2}}
        logging: {{every_steps: 2, progress_bar: false, mlflow: false, plot: false}}
        """))
    spike = f"grad_spike_at_step={SPIKE}@1"
    runs = {
        "rollback": (spike, ["spike.action=rollback", *SPIKE_KEYS, "spike.notify_command='cat > notified.json'",
                             "logging.sample_ledger=true"]),
        "killed": (f"{spike},kill_after_rollback=1", ["spike.action=rollback", *SPIKE_KEYS]),
    }

    def launch(name: str) -> tuple[subprocess.Popen, Path, Path]:
        faults, overrides = runs[name]
        return start_launch(work, name, overrides, KILN_FAULT_PLAN=faults)

    started = {name: launch(name) for name in runs}
    yield {"work": work, "launch": launch, **started}
    for proc, _, _ in started.values():  # after a failed test
        if proc.poll() is None:
            proc.kill()


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return read_model_state(str(run / "checkpoints"))[1]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_rollback_restores_an_earlier_checkpoint_skips_the_data_after_it_and_finishes(launches):
    finish(launches["rollback"])
    run = launches["rollback"][1]
    events = read_events(run / "journal.jsonl")
    [spike] = [e for e in events if e["event"] == "spike"]
    assert (spike["step"], spike["trigger"], spike["action"]) == (SPIKE, "grad_norm", "rollback")
    assert spike["grad_norm"] > 100 * spike["baseline_grad_norm"]
    [rollback] = [e for e in events if e["event"] == "rollback"]
    # the newest checkpoint at least 2 steps back is step 4; positions from its end to step 7's end are skipped
    assert rollback["target"] == "step-00000004" and rollback["target_step"] == 4
    assert rollback["skipped_positions"] == [4 * GLOBAL_BATCH, SPIKE * GLOBAL_BATCH]
    assert rollback["retired"] == ["step-00000006"] and rollback["lr_scale_until"] == 6
    assert events[-1]["event"] == "finish" and events[-1]["step"] == STEPS
    saved = [e["step"] for e in events if e["event"] == "checkpoint"]
    assert saved == [2, 4, 6, 6, 8, 10]  # step 6 again on the new branch
    # the final checkpoint's loader went past the skipped window; its state lists the rollback
    manifest = json.loads((run / "checkpoints" / "step-00000010" / "manifest.json").read_text())
    assert manifest["loader"]["position"] == (STEPS + SPIKE - 4) * GLOBAL_BATCH
    assert [r["skipped_positions"] for r in manifest["spike"]["rollbacks"]] == [[16, 28]]
    log = (run / "training_log.md").read_text()
    assert "rollbacks: 1" in log and "**rollback** 1 of 3 to step-00000004" in log and "[16, 28) skipped" in log
    # the ledger keeps the new branch's samples of a step trained again; explain_step's order agrees
    for step in (3, 5, SPIKE, STEPS):
        start = step_start(run, step, GLOBAL_BATCH)
        assert [r["position"] for r in step_records(run, step)[0]] == list(range(start, start + GLOBAL_BATCH))
    assert (step_start(run, 3, GLOBAL_BATCH), step_start(run, 5, GLOBAL_BATCH)) == (8, 28)
    # the branch that spiked (before the rollback): its ledger lines, and the order without the rollback
    spiked = range((SPIKE - 1) * GLOBAL_BATCH, SPIKE * GLOBAL_BATCH)
    assert [r["position"] for r in step_records(run, SPIKE, rollbacks=0)[0]] == list(spiked)
    assert step_start(run, SPIKE, GLOBAL_BATCH, rollbacks=0) == spiked[0]
    notified = json.loads((launches["work"] / "notified.json").read_text())
    assert notified["event"] == "rollback" and notified["target"] == "step-00000004"
    # the learning rate after the rollback is halved for steps 5 and 6
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if "lr" in r}
    schedule = ScheduleSection(warmup_steps=2, decay="cosine")
    assert lrs[6] == pytest.approx(0.5 * 1e-2 * lr_multiplier(6, schedule, STEPS))
    assert lrs[8] == pytest.approx(1e-2 * lr_multiplier(8, schedule, STEPS))


def test_a_kill_right_after_the_rollback_resumes_to_the_same_weights(launches):
    finish(launches["killed"], succeeds=False)
    run = launches["killed"][1]
    events = [e["event"] for e in read_events(run / "journal.jsonl")]
    assert set(events[events.index("rollback") + 1:]) == {"failure"}  # the kill, and the other rank losing it
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000004"]  # 2: retention
    shutil.copytree(run, run.with_name("one-rank"))  # the same kill, resumed on 1 rank instead of 2
    # A launch, as a user resumes, not a run in this process: after the whole suite (in CI and here, though
    # in no subset of it) the in-process run's weights differed from the launched ones in the last bits.
    resumed_on_one = start_launch(launches["work"], "one-rank", ["spike.action=rollback", *SPIKE_KEYS], nproc=1,
                                  KILN_FAULT_PLAN="")
    finish(launches["launch"]("killed"))
    finish(launches["rollback"])
    assert same(final_weights(run), final_weights(launches["rollback"][1]))
    finish(resumed_on_one)
    one_rank = resumed_on_one[1]
    manifests = [json.loads((r / "checkpoints" / "step-00000010" / "manifest.json").read_text())
                 for r in (run, one_rank)]
    assert manifests[0]["loader"] == manifests[1]["loader"]
    assert manifests[0]["spike"]["rollbacks"] == manifests[1]["spike"]["rollbacks"]
    assert same(final_weights(one_rank), final_weights(run))  # CPU, fp32: the full model initialised on every rank
    events = read_events(run / "journal.jsonl")
    [resume] = [e for e in events if e["event"] == "resume"]
    assert resume["step"] == 4 and resume["tokens"] == SPIKE * GLOBAL_BATCH * 16
    assert sum(e["event"] == "rollback" for e in events) == 1 and events[-1]["event"] == "finish"


def test_skip_drops_the_spiking_step_as_skip_steps_does(launches):
    work = launches["work"]
    skip = train_here(work, "name=skip", "spike.action=skip", "spike.window=3", KILN_FAULT_PLAN=f"grad_spike_at_step={SPIKE}")
    told = train_here(work, "name=told", f"train.skip_steps=[{SPIKE}]", KILN_FAULT_PLAN="")
    assert same(final_weights(skip), final_weights(told))
    events = read_events(skip / "journal.jsonl")
    assert [(e["step"], e["action"]) for e in events if e["event"] == "spike"] == [(SPIKE, "skip")]
    assert [e["spikes"] for e in events if e["event"] == "skipped"] == [[SPIKE]]


def test_the_detector_judges_loss_and_gradient_norm_against_a_baseline_without_spikes(tmp_path):
    policy = SpikePolicy(SpikeSection(action="skip", window=3, loss_factor=2.0, grad_norm_factor=10.0),
                         Journal(tmp_path), is_main=True)
    assert [policy.judge(s, 4.0, 1.0) for s in (1, 2, 3)] == [None] * 3  # the window fills first
    assert policy.judge(4, 8.5, 1.0).trigger == "loss"
    assert policy.judge(5, 4.0, 10.5).trigger == "grad_norm"
    assert policy.judge(6, float("nan"), 1.0) is None  # the non-finite guard's case, kept out of the baseline
    assert list(policy.losses) == [4.0] * 3 and policy.judge(7, 7.9, 9.9) is None
    assert [e["trigger"] for e in read_events(tmp_path / "journal.jsonl")] == ["loss", "grad_norm"]


class _Hook(http.server.BaseHTTPRequestHandler):
    posted: list[dict] = []

    def do_POST(self):  # noqa: N802 (the handler's name)
        self.posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_spike_after_max_rollbacks_fails_the_run_and_notifies(launches, monkeypatch):
    """One rank, in this process: with spike.max_rollbacks=0 the first spike is a failure with a message,
    sent to the notify command and POSTed to the notify URL."""
    work = launches["work"]
    monkeypatch.chdir(work)
    monkeypatch.setenv("KILN_FAULT_PLAN", f"grad_spike_at_step={SPIKE}")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = load_config(work / "train.yaml", ["name=failing", "spike.action=rollback", "spike.window=3",
                                            "spike.max_rollbacks=0", "spike.notify_command='cat > failed.json'",
                                            f"spike.notify_url=http://127.0.0.1:{server.server_port}/kiln"])
    try:
        with pytest.raises(SpikeFailure, match=rf"spike at step {SPIKE} \(grad_norm\) after 0 rollbacks"):
            train(cfg)
    finally:
        server.shutdown()
        gc.collect()  # the run's gloo group, in a reference cycle, must not be collected in a forked child
    assert [e["event"] for e in _Hook.posted] == ["failure"] and "spike.max_rollbacks=0" in _Hook.posted[0]["cause"]
    [failure] = [e for e in read_events(work / "runs" / "failing" / "journal.jsonl") if e["event"] == "failure"]
    assert failure["step"] == SPIKE - 1 and "spike.max_rollbacks=0" in failure["cause"]
    assert json.loads((work / "failed.json").read_text())["cause"].startswith("SpikeFailure: spike at step")


def test_a_kill_before_the_rollback_retired_newer_checkpoints_still_resumes_the_rollback(tmp_path):
    """The target's manifest is rewritten first; until the newer checkpoints are deleted, it outranks them."""
    root = tmp_path / "checkpoints"
    for step, rolled in ((6, 0), (4, 1)):  # step 6 saved before the spike, then step 4 rewritten by the rollback
        (root / step_name(step)).mkdir(parents=True)
        finalize(str(root / step_name(step)), {"step": step, "spike": {"rollbacks": [{"step": 7}] * rolled}})
    assert latest_complete(str(root))[1]["step"] == 4


@pytest.mark.parametrize("overrides, message", [
    (["spike.action=rollback", "checkpoint.every_steps=0"], "spike.action=rollback needs checkpoints"),
    (["spike.action=rollback", "spike.min_steps_back=4", "checkpoint.keep_last=1"], "raise checkpoint.keep_last"),
    (["spike.action=panic"], "spike.action"),
    (["spike.notify_url=hooks.example/kiln"], "must be an http:// or https:// URL"),
    (["spike.loss_factor=1.0"], "must be > 1"),
])
def test_a_spike_policy_that_cannot_work_is_a_config_error(launches, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(launches["work"] / "train.yaml", ["name=bad", *overrides])


POISON = range(640, 672)  # global positions (no shuffle) of steps 41 and 42 at 16 samples a step


def write_poisoned_dataset(root: Path, poisoned: range) -> None:
    """A pattern dataset whose samples in ``poisoned`` are random tokens (nothing a model that learned the
    pattern predicts), and a clean validation split."""
    rng = np.random.default_rng(0)
    splits = {"train": 1200, "val": 32}
    for split, count in splits.items():
        with MDSWriter(f"{root}/v=1/{split}", token_columns(VOCAB), size_limit=1 << 12) as writer:
            for i in range(count):
                tokens = pattern_tokens(i + 2000 * (split == "val"), 16)
                if split == "train" and i in poisoned:
                    tokens = rng.integers(0, VOCAB, 16).astype(np.uint16)
                writer.write({"tokens": tokens})
    write_manifest(str(root), DatasetManifest(
        version=1, seq_len=16, token_dtype="uint16", vocab_size=VOCAB, num_samples=splits,
        num_tokens={s: n * 16 for s, n in splits.items()}, splits=list(splits), config_hash="test",
        tokenizer_hash="test", seed=0))


def test_a_poisoned_region_is_rolled_back_over_and_the_run_ends_near_a_clean_one(tmp_path):
    """One rank, in this process: after the model has learned the pattern, two steps of random tokens. With
    ``rollback`` (by loss) the run skips them and its eval loss is within 2% of a run on clean data (1.1% above
    it when written); without, it is clearly worse (17% above)."""
    for name, poisoned in (("clean", range(0)), ("poisoned", POISON)):
        write_poisoned_dataset(tmp_path / name, poisoned)
    (tmp_path / "train.yaml").write_text(textwrap.dedent("""\
        output_dir: runs
        model: {preset: tiny, overrides: {d_model: 64, n_heads: 2, n_layers: 1, max_seq_len: 16}}
        data: {datasets: [{path: clean}], num_workers: 0, shuffle: false}
        train: {max_steps: 60, global_batch_size: 16, micro_batch_size: 16}
        optimizer: {lr: 1.0e-2}
        schedule: {warmup_steps: 2, decay: cosine}
        checkpoint: {every_steps: 5, keep_last: 3}
        eval: {every_steps: 60, batches: 2}
        spike: {window: 10, loss_factor: 3.0}
        logging: {every_steps: 10, progress_bar: false, mlflow: false, plot: false}
        """))
    poisoned = "data.datasets=[{path: poisoned}]"
    eval_loss = {}
    for name, overrides in (("clean", []), ("defended", [poisoned, "spike.action=rollback"]),
                            ("undefended", [poisoned])):
        run = train_here(tmp_path, f"name={name}", *overrides, KILN_FAULT_PLAN="")
        eval_loss[name] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    eval_loss = {name: record["eval_loss"] for name, record in eval_loss.items()}
    assert abs(eval_loss["defended"] / eval_loss["clean"] - 1) < 0.02, eval_loss
    assert eval_loss["undefended"] > 1.05 * eval_loss["clean"], eval_loss
    events = read_events(tmp_path / "runs" / "defended" / "journal.jsonl")
    assert [(e["step"], e["trigger"]) for e in events if e["event"] == "spike"] == [(41, "loss"), (41, "loss")]
    assert [(e["target"], e["skipped_positions"]) for e in events if e["event"] == "rollback"] == [
        ("step-00000040", [640, 656]), ("step-00000040", [656, 672])]
