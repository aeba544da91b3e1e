"""How the tests start training runs: in a subprocess as a user types them, or one rank in the test's process."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.config import load_config
from training.train import train

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


def train_here(work: Path, *overrides: str, **env: str) -> Path:
    """One rank in this process, from ``work`` (cheaper than a launch), with ``env`` set while it runs; its folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for name, value in env.items():
            patch.setenv(name, value)
        cfg = load_config(work / "train.yaml", list(overrides))
        try:
            train(cfg)
        finally:
            gc.collect()  # the run's gloo group, in a reference cycle, must not be collected in a forked child
    return work / "runs" / cfg.name
