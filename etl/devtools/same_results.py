"""What two runs of the same pipeline must share, read from their outputs: the cluster and Connect tests
compare their run with the suite's local[2] run (tests/conftest.py demo_etl), bench/cluster_bench.py
its three runs with one another."""
from __future__ import annotations

import hashlib
from pathlib import Path

from deltalake import DeltaTable


def table_rows(folder: Path, root: Path) -> dict[str, list[str]]:
    """Every Delta table under ``folder``: its rows, sorted, without run ids and timings, paths under ``root``
    written as ROOT."""
    tables = {}
    for log in sorted(folder.rglob("_delta_log")):
        table = DeltaTable(str(log.parent)).to_pyarrow_table()
        keep = [c for c in table.column_names if c != "run_id" and "seconds" not in c and "time" not in c
                and not c.endswith("_at")]
        rows = (repr({k: _unordered_maps(v) for k, v in row.items()}).replace(str(root), "ROOT")
                for row in table.select(keep).to_pylist())
        tables[log.parent.relative_to(folder).as_posix()] = sorted(rows)
    return tables


def _unordered_maps(value):
    """A map column's entries, which have no order (pyarrow gives (key, value) pairs in stored order:
    classic Spark stores a Python dict through a Java hash map, Spark Connect in insertion order), sorted."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return sorted(value)
    return value


def dataset_bytes(dataset: Path) -> dict[str, str]:
    """sha256 of every file of the newest version's splits (shards and index.json)."""
    version = max(dataset.glob("v=*"), key=lambda p: int(p.name[2:]))
    return {p.relative_to(version).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(version.rglob("*")) if p.is_file() and p.parent.name in ("train", "val")}
