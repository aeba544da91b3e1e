"""Reading the JSONL files that evaluation and fine-tuning take, with errors that name file and line."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator


def read_jsonl_objects(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield ``("<path>:<line>", object)`` for each non-blank line; a bad line raises ValueError naming it.
    A path ending in .gz is read through gzip (HumanEval ships its problems so)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON: {err}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record
