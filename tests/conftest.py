"""Shared fixtures: one real local Spark session with Delta for the whole test run."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ivy's jar cache lives in the repo's .cache whatever directory pytest runs from.
os.environ.setdefault("KILN_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("KILN_SHUFFLE_PARTITIONS", "4")


@pytest.fixture(scope="session")
def spark():
    """The run's only Spark session (local[2]); tests must not stop it."""
    pytest.importorskip("pyspark")
    os.environ.setdefault("KILN_SPARK_MASTER", "local[2]")
    from etl.spark import get_spark

    session = get_spark("kiln-tests")
    yield session
    session.stop()
