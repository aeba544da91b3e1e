"""Compare two ETL output roots written from the same input and config: did a code change alter the data?

    python scripts/compare_etl_outputs.py OLD_OUTPUT NEW_OUTPUT

Used to check that a restructuring changed no output (e.g. two `make demo` runs, OLD and NEW being their
`etl/` folders). Every Delta table under either root is read at its newest version with delta-rs and
compared as a set of rows (sorted; the schema, column order included, must match); run ids, timestamps and
the output root's own path are left out, since they differ between any two runs. Every other file is
compared byte for byte (the MDS shards and their index.json), except the manifest.json of each dataset
version, compared as JSON without its creation time and run ids. Exits 1 and lists the differences, if any.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

# Columns and JSON keys that differ between any two runs of the same input.
VOLATILE = {"run_id", "tokenize_run_id", "created_at", "started_at", "finished_at", "seconds"}
# Files written per run (timings, rendered plots whose text holds timings or paths).
SKIPPED_FILES = {"funnel.json", "report.html", "run.json"}


def delta_tables(root: Path) -> set[str]:
    return {str(log.parent.relative_to(root)) for log in root.rglob("_delta_log")}


def normalized(table: pa.Table, root: str) -> pa.Table:
    """The table without volatile columns, the output root's path replaced, rows sorted."""
    table = table.select([name for name in table.column_names if name not in VOLATILE])
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.replace_substring(column, root, "<OUTPUT>")
        columns.append(column)
    table = pa.table(columns, names=table.column_names)
    sortable = [name for name, kind in zip(table.column_names, table.schema.types)
                if not (pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind))]
    return table.sort_by([(name, "ascending") for name in sortable]) if sortable else table


def compare_table(old_root: Path, new_root: Path, name: str) -> list[str]:
    old = DeltaTable(str(old_root / name)).to_pyarrow_table()
    new = DeltaTable(str(new_root / name)).to_pyarrow_table()
    if old.schema != new.schema:
        return [f"{name}: schema differs:\n  old {old.schema}\n  new {new.schema}"]
    if old.num_rows != new.num_rows:
        return [f"{name}: {old.num_rows} rows before, {new.num_rows} after"]
    a, b = normalized(old, str(old_root.parent)), normalized(new, str(new_root.parent))
    if not a.equals(b):
        for column in a.column_names:
            if not a[column].equals(b[column]):
                return [f"{name}: the sorted rows differ (first in column {column!r})"]
        return [f"{name}: the sorted rows differ"]
    return []


def manifest(path: Path, root: Path) -> dict:
    text = path.read_text().replace(str(root.parent), "<OUTPUT>")

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(text))


def differences(old, new, at: str = "") -> list[str]:
    """The key paths at which two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [path for key in sorted(old.keys() | new.keys())
                for path in differences(old.get(key), new.get(key), f"{at}.{key}" if at else key)]
    return [] if old == new else [at or "(the whole value)"]


def plain_files(root: Path, tables: set[str]) -> set[str]:
    inside_table = [root / name for name in tables]
    return {str(path.relative_to(root)) for path in root.rglob("*")
            if path.is_file() and path.name not in SKIPPED_FILES and path.suffix != ".png"
            and not any(table in path.parents for table in inside_table)}


def compare(old_root: Path, new_root: Path) -> list[str]:
    problems = []
    old_tables, new_tables = delta_tables(old_root), delta_tables(new_root)
    for name in sorted(old_tables ^ new_tables):
        problems.append(f"{name}: a Delta table only {'before' if name in old_tables else 'after'}")
    for name in sorted(old_tables & new_tables):
        problems += compare_table(old_root, new_root, name)
    old_files, new_files = plain_files(old_root, old_tables), plain_files(new_root, new_tables)
    for name in sorted(old_files ^ new_files):
        problems.append(f"{name}: a file only {'before' if name in old_files else 'after'}")
    for name in sorted(old_files & new_files):
        old, new = old_root / name, new_root / name
        if old.name == "manifest.json":
            differing = differences(manifest(old, old_root), manifest(new, new_root))
            if differing:
                problems.append(f"{name}: the manifests differ at {', '.join(differing)}")
        elif old.read_bytes() != new.read_bytes():
            problems.append(f"{name}: the bytes differ")
    print(f"{len(old_tables & new_tables)} Delta tables and {len(old_files & new_files)} files compared")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    problems = compare(Path(argv[0]).resolve(), Path(argv[1]).resolve())
    for problem in problems:
        print(problem)
    print("the same data" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
