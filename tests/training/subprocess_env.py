"""The environment for training runs the tests start in a subprocess."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """One intra-op thread, Kiln importable from the checkout, and no test S3 endpoint, plus ``extra``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               **extra)
    env.pop("AWS_ENDPOINT_URL", None)
    return env
