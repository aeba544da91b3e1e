"""Fault tolerance end to end on CPU with gloo, through `python -m training.launch`.

Four 2-rank launches of one config start together (they share two cores, so they overlap):
  plain    uninterrupted, the reference
  faulty   SIGKILLed three times (KILN_FAULT_PLAN, one kill inside a checkpoint save) under --max-restarts
  preempt  a preemption notice (SIGTERM to launcher and ranks) at step 4, then resumed on 4 ranks
  hang     one rank hangs at step 3; the watchdog must fail the job with every rank's stacks
and one more resumes a 2-rank checkpoint on 1 rank, in this process. The preemption test comes
first so that its 4-rank relaunch overlaps the faulty run's restarts.
The learning rate is constant, so runs of different lengths follow the same trajectory.
"""
from __future__ import annotations

import gc
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.training.token_datasets import write_token_dataset
from tests.training.subprocess_env import child_env
from training.config import WatchdogSection, load_config
from training.run.checkpoint import latest_complete
from training.run.journal import Journal, read_events
from training.run.watchdog import FaultPlan, PeersLost, Preemption, Watchdog
from training.weights.checkpoint_reader import read_model_state

STEPS, EVERY, GLOBAL_BATCH = 12, 3, 8
KILLS = "kill_at_step=4@1,kill_during_save=6,kill_at_step=10@0"


class Launch:
    """One `python -m training.launch` in the background, output to a file (a full pipe would block it)."""

    def __init__(self, work: Path, name: str, *args: str, faults: str | None = None):
        self.log = work / f"{name}.log"
        self.run_dir = work / "runs" / name
        env = child_env(**({"KILN_FAULT_PLAN": faults} if faults else {}))
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "training.launch", str(work / "train.yaml"),
                                          f"name={name}", *args], cwd=work, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait(self, expected_rc: int = 0, timeout: float = 400) -> str:
        self.proc.wait(timeout=timeout)
        output = self.log.read_text()
        assert self.proc.returncode == expected_rc, f"{self.proc.args} exited {self.proc.returncode}:\n{output[-6000:]}"
        return output

    @property
    def journal(self) -> list[dict]:
        return read_events(self.run_dir / "journal.jsonl")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("faults")
    write_token_dataset(str(work / "data"), {"train": 400}, seq_len=32, size_limit=1 << 11)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: {work / 'runs'}
        model: {{preset: tiny, overrides: {{d_model: 32, n_heads: 2, max_seq_len: 32}}}}
        data: {{datasets: [{{path: {work / 'data'}}}], num_workers: 0, shuffle_window_shards: 2, eval_split: null}}
        train: {{max_steps: {STEPS}, global_batch_size: {GLOBAL_BATCH}, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        schedule: {{warmup_steps: 0, decay: constant}}
        checkpoint: {{every_steps: {EVERY}, keep_last: 2, keep_every: 6}}
        watchdog: {{timeout_s: 120}}
        logging: {{every_steps: 1, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))
    return work


@pytest.fixture(scope="module")
def launches(work) -> dict[str, Launch]:
    started = {
        "plain": Launch(work, "plain", "--nproc-per-node", "2"),
        "faulty": Launch(work, "faulty", "--nproc-per-node", "2", "--max-restarts", "3", faults=KILLS),
        "preempt": Launch(work, "preempt", "--nproc-per-node", "2", faults="preempt_at_step=4@1"),
        "hang": Launch(work, "hang", "--nproc-per-node", "2", "watchdog.timeout_s=3", faults="hang_at_step=3@1"),
    }
    yield started
    for launch in started.values():
        if launch.proc.poll() is None:
            launch.proc.kill()


def read_ledger(run_dir: Path) -> dict[int, tuple[int, int]]:
    """position -> (step, sample id) over every rank's ledger, each resume superseding the lines of
    earlier attempts after its step; a position seen twice after that is a repeat."""
    resumes = {e["attempt"]: e["step"] for e in read_events(run_dir / "journal.jsonl") if e["event"] == "resume"}
    seen = {}
    for path in sorted((run_dir / "ledger").glob("rank-*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            superseded = any(attempt > record["attempt"] and record["step"] > step for attempt, step in resumes.items())
            if superseded:
                continue
            for position, sample in zip(record["positions"], record["sample_ids"]):
                assert position not in seen, f"{path}: position {position} consumed twice"
                seen[position] = (record["step"], sample)
    return seen


def losses(run_dir: Path) -> dict[int, float]:
    """step -> loss; a later attempt's value for a step replaces an earlier one."""
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def steps_between(ledger: dict, first: int, last: int) -> dict:
    return {p: v for p, v in ledger.items() if first <= v[0] <= last}


def test_preemption_saves_and_exits_cleanly_then_resumes_on_four_ranks(launches, work):
    output = launches["preempt"].wait(expected_rc=128 + signal.SIGTERM)
    assert "Traceback" not in output and "stopped by SIGTERM" in output
    run_dir = launches["preempt"].run_dir
    [preempted] = [e for e in launches["preempt"].journal if e["event"] == "preempted"]
    assert preempted["saved_step"] == 4 and preempted["detail"] == "clean exit"
    url, manifest = latest_complete(str(run_dir / "checkpoints"))
    assert url.endswith("step-00000004") and manifest["reason"] == "preemption"
    assert (run_dir / "checkpoints" / "latest").read_text() == "step-00000004"

    resumed = Launch(work, "preempt", "--nproc-per-node", "4", "train.max_steps=8")
    resumed.wait()
    launches["plain"].wait()
    plain = launches["plain"].run_dir
    assert steps_between(read_ledger(run_dir), 5, 8) == steps_between(read_ledger(plain), 5, 8)
    reference, got = losses(plain), losses(run_dir)
    assert [got[s] for s in range(5, 9)] == pytest.approx([reference[s] for s in range(5, 9)], rel=1e-4)
    [resume] = [e for e in resumed.journal if e["event"] == "resume"]
    assert (resume["step"], resume["saved_world_size"], resume["world_size"]) == (4, 2, 4)


def test_three_kills_end_bitwise_equal_to_an_uninterrupted_run(launches):
    launches["plain"].wait()
    output = launches["faulty"].wait()
    plain, faulty = launches["plain"].run_dir, launches["faulty"].run_dir

    _, expected = read_model_state(str(plain / "checkpoints"))
    _, got = read_model_state(str(faulty / "checkpoints"))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)

    ledger = read_ledger(faulty)
    assert sorted(ledger) == list(range(STEPS * GLOBAL_BATCH))  # no gaps, and read_ledger found no repeats
    assert ledger == read_ledger(plain)

    events = launches["faulty"].journal
    resumes = {e["attempt"]: e["step"] for e in events if e["event"] == "resume"}
    assert resumes == {1: 3, 2: 3, 3: 9}  # the kill inside step 6's save left step 3 as the newest complete one
    assert "skipping checkpoint" in output and "step-00000006: no manifest.json" in output
    # Work lost to each failure: the last step the failed attempt completed (each rank journals it with
    # its failure) minus the step the next attempt resumed from.
    for attempt, resumed_at in resumes.items():
        completed = max(e["step"] for e in events if e["event"] == "failure" and e["attempt"] == attempt - 1)
        assert 0 < completed - resumed_at <= EVERY, (attempt, completed, resumed_at)

    restarts = [e for e in events if e["event"] == "restart"]
    assert [r["attempt"] for r in restarts] == [1, 2, 3]
    assert "injected kill_during_save" in restarts[1]["cause"]
    log = (faulty / "training_log.md").read_text()
    assert "restarts by the launcher: 3" in log and "resumptions: 3" in log and "finished: FINISHED" in log


def test_one_rank_resumes_a_two_rank_checkpoint(launches, work, tmp_path):
    launches["plain"].wait()
    plain = launches["plain"].run_dir
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(plain / "checkpoints" / "step-00000006", checkpoints / "step-00000006")
    from training.train import train

    try:
        train(load_config(work / "train.yaml", ["name=one", f"output_dir={tmp_path}", f"checkpoint.dir={checkpoints}",
                                                "train.max_steps=9"]))
    finally:
        gc.collect()  # the run's gloo group, in a reference cycle, must not be collected in a forked child
    one = tmp_path / "one"
    assert steps_between(read_ledger(one), 7, 9) == steps_between(read_ledger(plain), 7, 9)
    reference, got = losses(plain), losses(one)
    assert [got[s] for s in (7, 8, 9)] == pytest.approx([reference[s] for s in (7, 8, 9)], rel=1e-4)
    assert got[7] < 0.8 * reference[1]  # it carried on learning rather than starting again


def test_watchdog_fails_a_hung_job_with_every_ranks_stacks(launches):
    output = launches["hang"].wait(expected_rc=1)
    events = launches["hang"].journal
    injected = next(e for e in events if e.get("cause", "").startswith("injected hang_at_step"))
    failures = [e for e in events if "stacks" in e]  # the watchdogs' reports (a rank may also see its peer go)
    assert {e["rank"] for e in failures} == {0, 1}
    assert any(e["cause"].startswith("hang: no step completed within 3s after step 2") for e in failures)
    hung_at = datetime.fromisoformat(injected["time"])
    for failure in failures:  # the deadline ran from step 2's end, before the hang began
        assert datetime.fromisoformat(failure["time"]) - hung_at < timedelta(seconds=3 + 2)
    stacks = {e["rank"]: Path(e["stacks"]).read_text() for e in failures}
    assert "in _fire" in stacks[1]  # where rank 1 sleeps
    assert "in all_reduce" in stacks[0] or "in should_stop" in stacks[0]  # rank 0 waits for rank 1
    assert "(most recent call first)" in output


def test_liveness_check_finds_a_dead_rank_without_a_collective(tmp_path):
    """Two ranks' watchdogs on one real TCPStore: a stopped heartbeat is found within the bound, and
    a stop signal then raises PeersLost instead of entering the all-reduce."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    stores = [dist.PrefixStore("kiln/attempt_0", dist.TCPStore("127.0.0.1", server.port, is_master=False))
              for _ in range(2)]
    cfg = WatchdogSection(timeout_s=0)
    dogs = [Watchdog(cfg, rank, 2, tmp_path, Journal(tmp_path, rank), stores[rank]) for rank in range(2)]
    for dog in dogs:
        dog.start()
    try:
        assert dogs[0].dead_ranks(5.0) == []
        dogs[1].stop()
        started = time.monotonic()
        assert dogs[0].dead_ranks(2.0) == [1]
        assert time.monotonic() - started < 3.0
        preemption = Preemption(dogs[0], alive_check_s=2.0, world_size=2)
        preemption.received = "SIGTERM"
        with pytest.raises(PeersLost, match=r"SIGTERM received while rank\(s\) \[1\] are not alive"):
            preemption.should_stop()
    finally:
        dogs[0].stop()


def test_fault_plan_reads_its_env_format_and_names_a_bad_item(tmp_path):
    faults = FaultPlan.parse("kill_at_step=5@1, kill_during_save=12,hang_at_step=3")
    assert [(f.kind, f.step, f.rank) for f in faults] == [("kill_at_step", 5, 1), ("kill_during_save", 12, 0),
                                                          ("hang_at_step", 3, 0)]
    with pytest.raises(ValueError, match="cannot read 'explode=3'"):
        FaultPlan.parse("kill_at_step=5,explode=3")
    plan = FaultPlan(faults, tmp_path, rank=0, journal=Journal(tmp_path))
    assert plan._claim(1, faults[1]) and not plan._claim(1, faults[1])  # fires once across restarts
