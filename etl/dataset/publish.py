"""`publish`: a dataset version from documents, the one way `etl run`, `etl refresh` and `etl erase`
build one.

The YAML lists ``tokenize`` and ``shuffle_and_write`` among its stages; `split_stages` separates them
from the document stages. They still run as the pipeline's steps, so their funnel rows and tables
(``<output>/tokenize/...``, ``<output>/shuffle_and_write``) are written the same way as every stage's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..funnel import PipelineRun
from ..stages.base import Stage
from .shuffle_write import ShuffleAndWrite, ShuffleWriteParams
from .tokenize import Tokenize

# The stages that make the dataset, in their order.
DATASET_STAGES = (Tokenize.name, ShuffleAndWrite.name)


@dataclass(frozen=True)
class DatasetSpec:
    """The dataset part of a pipeline: tokenize, then shuffle and write (None: only the tokenize tables)."""

    tokenize: Tokenize
    write: Stage[ShuffleWriteParams] | None  # the stage after tokenize: shuffle_and_write

    @property
    def stages(self) -> list[Stage]:
        return [self.tokenize] + ([self.write] if self.write is not None else [])

    def root(self, output: str) -> str | None:
        """Where the dataset's versions go; None when it writes none."""
        return self.write.params.root(output) if self.write is not None else None


def split_stages(stages: list[Stage]) -> tuple[list[Stage], DatasetSpec | None]:
    """(the document stages: those before tokenize; the dataset part: tokenize and the stage after
    it, None when nothing is tokenized). Tokenize.check keeps any other stage from following it."""
    at = next((i for i, s in enumerate(stages) if isinstance(s, Tokenize)), len(stages))
    documents, dataset = stages[:at], stages[at:]
    if any(isinstance(s, ShuffleAndWrite) for s in documents) or len(dataset) > 2:
        raise ValueError(f"the dataset stages must come last, tokenize then shuffle_and_write; got {[s.name for s in stages]}")
    if not dataset:
        return documents, None
    tokenize, *write = dataset
    return documents, DatasetSpec(tokenize, write[0] if write else None)


class StepRunner(Protocol):
    """What publish needs of etl.pipeline.Pipeline (which calls it, so is not imported here)."""

    def run_stages(self, run: PipelineRun, stages: list[Stage], progress=print, source: str | None = None) -> None: ...


def publish(pipeline: StepRunner, run: PipelineRun, dataset: DatasetSpec, progress=print,
            source: str | None = None) -> int | None:
    """Tokenize the documents (the run's last step, or the Delta table ``source``), then shuffle and
    write them: the number of the dataset version that holds them (the newest one again when its
    content is unchanged), or None when the pipeline writes no dataset."""
    pipeline.run_stages(run, dataset.stages, progress, source=source)
    return run.steps[-1].metrics["version"] if dataset.write is not None else None
