"""A run's funnel: what each step took in, kept and rejected, the numbers the report and the
dataset's provenance are written from."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from shards.config import to_dict

from .config import PipelineConfig


@dataclass
class StepCounts:
    """One row of the funnel."""

    stage: str
    docs_in: int
    docs_out: int
    chars_in: int
    chars_out: int
    bytes_in: int
    bytes_out: int
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    # Per source: {"docs", "chars", "tokens" (None before tokenize), "rejected": {reason: [docs, chars]}},
    # counted with the rest (the report's funnel per source).
    by_source: dict[str, dict] = field(default_factory=dict)


@dataclass
class PipelineRun:
    config: PipelineConfig
    run_id: str
    steps: list[StepCounts] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)
    # The last step of the chain that starts at ingest: its table and the rejected tables together
    # hold every document read. Steps run from another table come after it (None: no ingest).
    funnel_end: str | None = None
    # Per scored stage, its scores sampled from the stage's cached output for the report's histograms
    # (etl/report/scores.py, sample_scores), and the seconds that took: the report counts them as its own.
    score_samples: dict[str, dict] = field(default_factory=dict)
    score_sample_seconds: float = 0.0

    @property
    def final_table(self) -> str:
        return self.tables[self.steps[-1].stage]


def new_run_id() -> str:
    """A run's id: its start time, then a random suffix so that runs started together differ."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def funnel_json(run: PipelineRun) -> str:
    return json.dumps(
        {"run_id": run.run_id, "output": run.config.output, "config": to_dict(run.config),
         "steps": [to_dict(s) for s in run.steps], "tables": run.tables},
        indent=2, sort_keys=True,
    )
