"""Attempts across external kills, the way an operator meets them: the process group of
`python -m training.launch` on 2 ranks is SIGKILLed in the middle of the run, then the same command is
typed again. The ranks (torchrun puts them in sessions of their own) stop by themselves; the relaunch is
a new attempt in the journal and the ledger, the log shows the failure, the ledger's reader counts every
position once, and the checkpoint whose journal line the kill took away is journaled by the relaunch.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.training.subprocess_env import child_env
from tests.training.token_datasets import write_token_dataset
from training.run.checkpoint import latest_complete
from training.run.journal import read_events
from training.run.ledger import step_records

STEPS, GLOBAL_BATCH = 60, 8


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts each rank in a session of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie (a rank's parent is gone, so nothing may reap it at once)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def launch(work: Path) -> subprocess.Popen:
    with open(work / "launch.log", "a") as out:
        return subprocess.Popen([sys.executable, "-m", "training.launch", "train.yaml", "--nproc-per-node", "2"],
                                cwd=work, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_a_relaunch_after_a_sigkill_of_the_whole_job_is_a_new_attempt(tmp_path):
    work = tmp_path
    write_token_dataset(str(work / "data"), {"train": 600}, seq_len=32, size_limit=1 << 12)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        name: killed
        output_dir: runs
        model: {{preset: tiny, overrides: {{max_seq_len: 32}}}}
        data: {{datasets: [{{path: {work / 'data'}}}], num_workers: 0, shuffle_window_shards: 2, eval_split: null}}
        train: {{max_steps: {STEPS}, global_batch_size: {GLOBAL_BATCH}, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-3}}
        checkpoint: {{every_steps: 3}}
        logging: {{every_steps: 1, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))
    run_dir = work / "runs" / "killed"
    first = launch(work)
    try:
        deadline = time.monotonic() + 240
        while not any(e["event"] == "checkpoint" and e["step"] >= 6 for e in read_events(run_dir / "journal.jsonl")):
            assert first.poll() is None and time.monotonic() < deadline, (work / "launch.log").read_text()[-4000:]
            time.sleep(0.05)
        ranks = descendants(first.pid)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in ranks), "ranks outlived their launcher"
    finally:
        for pid in [first.pid, *descendants(first.pid)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    killed = read_events(run_dir / "journal.jsonl")
    assert not any(e["event"] == "finish" for e in killed), "the run ended before the kill; the test proves nothing"

    # The kill lands between the newest checkpoint's manifest and its journal line.
    url, manifest = latest_complete(str(run_dir / "checkpoints"))
    lines = (run_dir / "journal.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "journal.jsonl").write_text("".join(
        line for line in lines if f'"name": "step-{manifest["step"]:08d}"' not in line))

    second = launch(work)
    assert second.wait(timeout=300) == 0, (work / "launch.log").read_text()[-6000:]

    events = read_events(run_dir / "journal.jsonl")
    assert {e["attempt"] for e in events} == {0, 1}
    assert [(e["event"], e["attempt"]) for e in events if e["event"] in ("start", "finish")] == \
        [("start", 0), ("start", 1), ("finish", 1)]
    failures = [e for e in events if e["event"] == "failure"]
    assert {e["attempt"] for e in failures} == {0} and {e["rank"] for e in failures} == {0, 1}
    # A rank may first see its peer go (a gloo error); the launcher's end stops each one.
    assert any(e["cause"].startswith("the launcher (pid ") and e["cause"].endswith("is gone; stopping this rank")
               for e in failures)
    [restart] = [e for e in events if e["event"] == "restart"]
    assert restart["attempt"] == 1 and restart["relaunch"] and "is gone" in restart["cause"]
    [found] = [e for e in events if e["event"] == "checkpoint" and e.get("reconciled")]
    assert (found["attempt"], found["step"]) == (1, manifest["step"]) and url.endswith(found["url"])
    [resume] = [e for e in events if e["event"] == "resume"]
    assert (resume["attempt"], resume["step"]) == (1, manifest["step"])
    log = (run_dir / "training_log.md").read_text()
    assert f"- failures: {len(failures)}, restarts by the launcher: 0, resumptions: 1, preemptions: 0, " \
           "relaunches: 1" in log
    assert "| 0 | " in log and "**failure** on rank" in log and "is gone; stopping this rank |" in log

    ledger = [json.loads(line) for path in sorted((run_dir / "ledger").glob("rank-*.jsonl"))
              for line in path.read_text().splitlines()]
    assert {line["attempt"] for line in ledger} == {0, 1}
    assert any(line["attempt"] == 0 and line["step"] > resume["step"] for line in ledger)  # redone after the resume
    positions = []
    for step in range(1, STEPS + 1):
        records, attempt = step_records(run_dir, step)
        assert attempt == (0 if step <= resume["step"] else 1), step
        positions += [r["position"] for r in records]
    assert sorted(positions) == list(range(STEPS * GLOBAL_BATCH))  # each position once
