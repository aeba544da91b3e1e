"""The sample ledger: which samples each rank trained on, step by step (``logging.sample_ledger``)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


class SampleLedger:
    """Per rank, one JSON line per micro-batch: the global positions and sample ids it trained on.

    Lines carry the restart attempt: after a resume from step S, the lines of earlier attempts with
    steps after S are superseded."""

    def __init__(self, path: Path | None, attempt: int = 0):
        self._file = None
        self.attempt = attempt
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a")

    def record(self, step: int, batch: dict[str, torch.Tensor]) -> None:
        if self._file is not None:
            line = {"step": step, "attempt": self.attempt, "positions": batch["positions"].tolist(),
                    "sample_ids": batch["sample_ids"].tolist()}
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()  # a rank killed later must not lose lines of steps a checkpoint holds

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
