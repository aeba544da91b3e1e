"""The environment for training runs the tests start in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """One intra-op thread, Kiln importable from the checkout, and no test S3 endpoint, plus ``extra``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               **extra)
    env.pop("AWS_ENDPOINT_URL", None)
    return env


def start_launch(work: Path, name: str, overrides: list[str], nproc: int = 2,
                 **env: str) -> tuple[subprocess.Popen, Path, Path]:
    """``python -m training.launch train.yaml`` in ``work``, as a user types it, run ``name``.

    Returns the process, the run's folder and its log (appended to, so a resumed run keeps one log).
    """
    log = work / f"{name}.log"
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "training.launch", "train.yaml", "--nproc-per-node", str(nproc),
                                 f"name={name}", *overrides], cwd=work, env=child_env(**env), stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, work / "runs" / name, log


def finish(launch: tuple[subprocess.Popen, Path, Path], succeeds: bool = True) -> str:
    """Waits for a :func:`start_launch` run and returns its log, failing the test on an unexpected outcome."""
    proc, _, log = launch
    proc.wait(timeout=300)
    output = log.read_text()
    assert (proc.returncode == 0) == succeeds, output[-6000:]
    return output
