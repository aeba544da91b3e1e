"""Which run last wrote an output's tables, and whether it finished: so no run builds on a mix.

Every Delta table a run writes carries the table property ``kiln.run_id``, and the run keeps
``<output>/_state/run.json`` (``run_id``, ``command``, ``status``, ``started_at``,
``finished_at``): ``running`` from its start, ``complete`` once its last table and report are
written. A run that stops midway (an error, Ctrl-C, a lost driver) leaves ``running``, and its
tables may be half this run's and half an earlier one's. ``etl run`` rewrites every table, so it
may always start; ``refresh`` and ``erase`` build on the tables there and refuse such an output,
unless they are themselves the command that stopped (both are made to be run again after a crash).
"""
from __future__ import annotations

import json

from shards import storage, utc_now

from .paths import to_fsspec_url

RUN_ID_PROPERTY = "kiln.run_id"
MARKER = ("_state", "run.json")
RUNNING, COMPLETE = "running", "complete"


def marker_path(output: str) -> str:
    return storage.join(to_fsspec_url(output), *MARKER)


def read_marker(output: str) -> dict | None:
    """The last run's record, or None when no run has written one (an output from before markers)."""
    url = marker_path(output)
    return json.loads(storage.read_bytes(url)) if storage.exists(url) else None


def _write(output: str, record: dict) -> None:
    storage.atomic_write_bytes(marker_path(output), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def mark_running(output: str, run_id: str, command: str) -> None:
    _write(output, {"run_id": run_id, "command": command, "status": RUNNING, "started_at": utc_now(), "finished_at": None})


def mark_complete(output: str, run_id: str) -> None:
    record = read_marker(output)
    if record is None or record["run_id"] != run_id:
        raise RuntimeError(f"{marker_path(output)} no longer records run {run_id}: another run wrote this output "
                           "at the same time, and its tables may mix the two; run `python -m etl run` again")
    _write(output, {**record, "status": COMPLETE, "finished_at": utc_now()})


def incomplete_run(output: str, command: str) -> str | None:
    """Why `command` must not build on `output` (its last run stopped midway), or None when it may."""
    record = read_marker(output)
    if record is None or record["status"] == COMPLETE or record["command"] == command:
        return None
    return (f"{output}: the last run there, {record['run_id']} (`python -m etl {record['command']}`, started "
            f"{record['started_at']}), stopped before it finished, so its tables may mix two runs; re-run "
            f"`python -m etl {record['command']}` with its config until it completes, then {command} again")
