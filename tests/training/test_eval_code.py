"""The HumanEval-format harness and its sandbox: canonical solutions pass, wrong ones fail, and hostile
completions (fork bomb, endless loop, huge allocation, network, deleting files) are contained, scored as
failures, and leave the host as it was. Runs at every isolation level this machine allows."""
from __future__ import annotations

import fcntl
import itertools
import os
import socket
import subprocess
import sys
from math import comb
from pathlib import Path

import pytest

from training.eval.code_exec import UID_LEASE_DIR, UID_SPAN, Sandbox, SandboxConfig, SandboxUnavailable
from training.eval.humaneval import build_program, pass_at_k, read_problems, score_completions

DATA = Path(__file__).resolve().parents[1] / "data" / "humaneval_mini.jsonl"
# The CPU limit sits above the wall clock, so an endless loop is always stopped by the timeout: with both
# at 4 s, SIGXCPU won the race once (a full suite run, 2026-12-05).
LIMITS = dict(timeout_s=4.0, cpu_s=8, memory_mb=512, max_processes=16, workers=4)


def available_levels() -> list[str]:
    levels = ["none"]
    try:
        if Sandbox(SandboxConfig(isolation="bwrap", **LIMITS)).isolation == "bwrap":
            levels.insert(0, "bwrap")
    except SandboxUnavailable:
        pass
    return levels


LEVELS = available_levels()


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    """The best isolation this machine gives (limits only, explicitly allowed, where it gives none)."""
    box = Sandbox(SandboxConfig(unsafe=True, **LIMITS))
    print(f"sandbox isolation on this machine: {box.isolation} ({box.isolation_note})")
    return box


def test_canonical_solutions_score_one_and_wrong_ones_zero(sandbox):
    problems = read_problems(DATA)
    assert len(problems) == 6
    canonical = {p.task_id: [p.canonical_solution] for p in problems}
    metrics, details = score_completions(problems, canonical, sandbox, [1])
    assert metrics == {"pass@1": 1.0}, details
    empty = {p.task_id: [""] for p in problems}
    wrong = {p.task_id: ["    return None\n"] for p in problems}
    assert score_completions(problems, empty, sandbox, [1])[0] == {"pass@1": 0.0}
    assert score_completions(problems, wrong, sandbox, [1])[0] == {"pass@1": 0.0}


def test_pass_at_k_is_the_unbiased_estimator(sandbox):
    for n, c, k in itertools.product(range(1, 7), range(0, 7), range(1, 7)):
        if c > n or k > n:
            continue
        # The probability that k samples drawn without replacement from n include a correct one.
        expected = 1 - comb(n - c, k) / comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    problems = read_problems(DATA)[:2]
    mixed = {problems[0].task_id: [problems[0].canonical_solution, ""], problems[1].task_id: ["", ""]}
    metrics, details = score_completions(problems, mixed, sandbox, [1, 2])
    assert metrics == {"pass@1": 0.25, "pass@2": 0.5}
    assert [d["passed"] for d in details] == [1, 0]


def test_refuses_to_run_without_isolation_unless_unsafe():
    with pytest.raises(SandboxUnavailable, match="--unsafe"):
        Sandbox(SandboxConfig(isolation="none"))


def _leased_elsewhere(uid: int) -> bool:
    """Whether another evaluation on this machine holds the uid now (its processes are its own)."""
    try:
        lease = os.open(os.path.join(UID_LEASE_DIR, str(uid)), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(lease)


def _host_processes_of_sandbox_uids(base: int) -> list[str]:
    """Live processes of sandbox uids that no run holds: what a run left behind."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                continue
            if base <= uid < base + UID_SPAN and state != "Z" and not _leased_elsewhere(uid):
                found.append(entry)
    return found


@pytest.mark.parametrize("level", LEVELS)
def test_hostile_completions_are_contained(level, tmp_path):
    box = Sandbox(SandboxConfig(isolation=level, unsafe=level == "none", **LIMITS))
    assert box.isolation == level
    contained_by_permissions = box.as_root  # without namespaces, only a separate uid protects files
    keep_dir = tmp_path / "keep"
    keep_dir.mkdir()
    sentinel = keep_dir / "sentinel.txt"
    sentinel.write_text("still here")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    hostile = {
        "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "endless_loop": "while True:\n    pass\n",
        "huge_allocation": "block = bytearray(8 << 30)\n",
        "delete_outside": f"import os, shutil\nos.remove({str(sentinel)!r})\nshutil.rmtree({str(keep_dir)!r})\n",
        "write_outside": "open('/etc/kiln_sandbox_was_here', 'w').write('x')\n",
    }
    if level == "bwrap":
        hostile["network"] = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n"
    if not contained_by_permissions:
        hostile = {k: v for k, v in hostile.items() if k not in ("delete_outside", "write_outside")}
    results = dict(zip(hostile, box.run_many(list(hostile.values()))))
    for name, result in results.items():
        assert not result.passed, f"{name} was not contained at isolation {level}: {result}"
    assert results["endless_loop"].timed_out
    assert results["huge_allocation"].returncode != 0 and "MemoryError" in results["huge_allocation"].stderr
    if contained_by_permissions:
        assert sentinel.read_text() == "still here"
        assert not Path("/etc/kiln_sandbox_was_here").exists()
    if level == "bwrap":
        with pytest.raises(TimeoutError):
            listener.accept()
    listener.close()
    if box.as_root:
        assert _host_processes_of_sandbox_uids(box.config.sandbox_uid_base) == []
    # The host can still start processes and run code after the fork bomb.
    assert box.run(build_program(read_problems(DATA)[0], read_problems(DATA)[0].canonical_solution)).passed


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox uids are leased only when the evaluator is root")
def test_a_run_never_takes_a_uid_another_process_holds(tmp_path):
    """Another process holds the lease of every sandbox uid but one: every run here gets that one."""
    base = SandboxConfig().sandbox_uid_base
    free = base + 123
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys
leases = []
for uid in range({base}, {base + UID_SPAN}):
    if uid != {free}:
        leases.append(os.open(os.path.join({UID_LEASE_DIR!r}, str(uid)), os.O_RDWR | os.O_CREAT, 0o600))
        fcntl.flock(leases[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
print("holding", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        box = Sandbox(SandboxConfig(unsafe=True, **LIMITS))
        runs = box.run_many(["import os\nprint(os.stat('program.py').st_uid)\n"] * 3)
        assert [r.stdout.strip() for r in runs] == [str(free)] * 3, runs
    finally:
        holder.communicate("")
