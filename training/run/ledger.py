"""The sample ledger: which samples each rank trained on, step by step (``logging.sample_ledger``), and
with ``logging.ledger_document_losses`` the loss of every document span in them.

A packed sample holds several documents, each ending with the dataset's EOS token. Its mean loss can
hide one bad document among good ones, so the ledger splits each sample's per-token losses at the EOS
tokens: one ``[start, length, mean loss]`` per document span. ``python -m training.explain_step``
reads these lines back (``step_records``) and maps each span to its source document. With
``data.exclude_docs`` a line also lists, per sample, the token runs of excluded documents (``excluded``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shards.config import ConfigError

from ..data.sources import EXCLUDED, IGNORE_INDEX, Source

if TYPE_CHECKING:  # the ledger is also read by tools that need no torch (training.explain_step)
    import torch

LEDGER_FOLDER = "ledger"  # <run>/ledger/rank-NNNNN.jsonl


def ledger_path(run_dir: Path, rank: int) -> Path:
    return run_dir / LEDGER_FOLDER / f"rank-{rank:05d}.jsonl"


def document_spans(token_losses: np.ndarray, input_ids: np.ndarray, labels: np.ndarray,
                   eos_ids: int | np.ndarray) -> list[list[tuple[int, int, float | None]]]:
    """Per row of a packed batch, its document spans as ``(start, length, mean loss)``.

    ``token_losses[b, t]`` is the loss of predicting ``labels[b, t]`` from position t ([B, T], any
    value where the label is ``IGNORE_INDEX``); ``eos_ids`` is the EOS id of every row (or one for
    all). A span runs up to and including an EOS, or to the row's end. Its loss is the mean over its
    positions that predict a token of the same document: not the EOS (whose next token starts the next
    document), not ignored labels. A span with no such position (a lone EOS) has loss None.
    """
    token_losses, input_ids, labels = np.asarray(token_losses), np.asarray(input_ids), np.asarray(labels)
    rows, length = input_ids.shape
    eos = np.broadcast_to(np.asarray(eos_ids, np.int64).reshape(-1, 1), (rows, 1))
    is_eos = input_ids == eos
    # Span number of each position: one more after every EOS.
    span_of = np.zeros(input_ids.shape, np.int64)
    span_of[:, 1:] = np.cumsum(is_eos[:, :-1], axis=1)
    counted = (labels != IGNORE_INDEX) & ~is_eos
    # Number the spans of all rows one after another, then sum per span in one pass.
    per_row = span_of[:, -1] + 1
    first = np.concatenate([[0], np.cumsum(per_row)])
    ids = (span_of + first[:-1, None]).ravel()
    lengths = np.bincount(ids, minlength=first[-1])
    counts = np.bincount(ids, weights=counted.ravel(), minlength=first[-1])
    sums = np.bincount(ids, weights=np.where(counted, token_losses, 0.0).ravel(), minlength=first[-1])
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).round(4).tolist()
    starts = (np.cumsum(lengths) - lengths - np.repeat(np.arange(rows) * length, per_row)).tolist()
    lengths, has_loss = lengths.tolist(), (counts > 0).tolist()
    out = []
    for b in range(rows):
        row = range(first[b], first[b + 1])
        out.append([(starts[i], lengths[i], means[i] if has_loss[i] else None) for i in row])
    return out


def token_runs(mask: np.ndarray) -> list[list[list[int]]]:
    """Per row of a [B, T] boolean mask, its runs of true as ``[start, length]``."""
    edges = np.diff(np.pad(np.asarray(mask, np.int8), ((0, 0), (1, 1))), axis=1)
    out = []
    for row in edges:
        starts, ends = np.flatnonzero(row == 1), np.flatnonzero(row == -1)
        out.append([[int(a), int(b - a)] for a, b in zip(starts, ends)])
    return out


class SampleLedger:
    """Per rank, one JSON line per micro-batch: the global positions and sample ids it trained on and, when
    document losses are on (``sources`` given), ``document_losses``: each sample's ``[start, length, loss]``
    spans (``document_spans``). A micro-batch holding tokens of excluded documents (data.exclude_docs) also gets
    ``excluded``: each sample's ``[start, length]`` runs of them, whose labels carried no loss.

    Lines carry the restart attempt: after a resume from step S, the lines of earlier attempts with
    steps after S are superseded. After the spike policy's rollbacks (training.run.spike) they also carry
    ``rollbacks``, the number so far, and the steps trained again supersede the abandoned branch's. With document losses the line is written once the micro-batch's loss is
    known (``record_losses``); a micro-batch whose forward fails is still written, without losses, on
    ``close``."""

    def __init__(self, path: Path | None, attempt: int = 0, sources: list[Source] | None = None):
        self._file = None
        self.attempt = attempt
        self.rollbacks = 0  # the spike policy's rollbacks so far in the run (set by the trainer)
        self._pending: tuple[dict, np.ndarray, np.ndarray] | None = None
        self._eos = self._offsets = None
        if sources is not None:
            missing = [s.path for s in sources if s.eos_token_id is None]
            if missing:
                raise ConfigError(
                    f"logging.ledger_document_losses: {missing[0]} records no EOS token id (a dataset manifest's "
                    "extra.eos_token_id, written by the ETL), so its samples cannot be split into documents")
            self._eos = np.array([s.eos_token_id for s in sources], np.int64)
            self._offsets = np.cumsum([s.num_samples for s in sources])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a")

    @property
    def document_losses(self) -> bool:
        return self._file is not None and self._eos is not None

    def record(self, step: int, batch: dict[str, torch.Tensor]) -> None:
        """The micro-batch's samples, before its forward."""
        if self._file is None:
            return
        line = {"step": step, "attempt": self.attempt, "positions": batch["positions"].tolist(),
                "sample_ids": batch["sample_ids"].tolist()}
        if self.rollbacks:
            line["rollbacks"] = self.rollbacks
        if EXCLUDED in batch and bool(batch[EXCLUDED].any()):
            line["excluded"] = token_runs(batch[EXCLUDED].numpy())
        if not self.document_losses:
            self._write(line)
            return
        self._flush_pending()
        datasets = np.searchsorted(self._offsets, np.asarray(line["sample_ids"]), side="right")
        self._pending = (line, batch["input_ids"].numpy(), self._eos[datasets])

    def record_losses(self, token_losses: torch.Tensor, labels: torch.Tensor) -> None:
        """The recorded micro-batch's per-token losses [B, T] and labels, after its forward (of a prefix of T
        during sequence-length warmup: the rest counts as ignored); a no-op unless document losses are on."""
        if self._pending is None:
            return
        line, input_ids, eos = self._pending
        self._pending = None
        losses, labels = token_losses.detach().float().cpu().numpy(), labels.cpu().numpy()
        dropped = np.shape(input_ids)[1] - losses.shape[1]  # sequence-length warmup trained a prefix
        if dropped:
            losses = np.pad(losses, ((0, 0), (0, dropped)))
            labels = np.pad(labels, ((0, 0), (0, dropped)), constant_values=IGNORE_INDEX)
        spans = document_spans(losses, input_ids, labels, eos)
        self._write({**line, "document_losses": [[list(span) for span in row] for row in spans]})

    def _flush_pending(self) -> None:
        if self._pending is not None:
            self._write(self._pending[0])
            self._pending = None

    def _write(self, line: dict) -> None:
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()  # a rank killed later must not lose lines of steps a checkpoint holds

    def close(self) -> None:
        if self._file is not None:
            self._flush_pending()
            self._file.close()
            self._file = None


def step_records(run_dir: Path, step: int, rollbacks: int | None = None) -> tuple[list[dict], int | None]:
    """The ledger's samples of ``step`` over every rank, by position: ``{"position", "sample_id", "spans"}``
    (``spans``: ``[start, length, loss]`` lists, or None when not recorded), and the attempt they come from.

    A step trained again after a restart keeps the lines of its last attempt (the samples are the same,
    the losses may differ). Of a step trained again after a rollback, the lines after the most rollbacks
    (other samples), or with ``rollbacks`` those trained after that many: the abandoned branch that spiked.
    Empty (and None) when no rank recorded the step."""
    lines = []
    prefix = f'{{"step": {step}, '  # how SampleLedger starts a line: most lines are skipped unparsed
    for path in sorted((run_dir / LEDGER_FOLDER).glob("rank-*.jsonl")):
        texts = path.read_text().splitlines()
        for number, text in enumerate(texts, 1):
            if not text.startswith(prefix):
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                if number == len(texts):
                    continue  # the last line of a rank killed while writing it
                raise ValueError(f"{path}:{number} is not a JSON line") from None
            lines.append(line)
    if rollbacks is not None:
        lines = [line for line in lines if line.get("rollbacks", 0) == rollbacks]
    if not lines:
        return [], None
    attempt, branch = max((line["attempt"], line.get("rollbacks", 0)) for line in lines)
    records = {}
    for line in lines:
        if (line["attempt"], line.get("rollbacks", 0)) != (attempt, branch):
            continue
        spans = line.get("document_losses") or [None] * len(line["positions"])
        for position, sample_id, sample_spans in zip(line["positions"], line["sample_ids"], spans):
            records[position] = {"position": position, "sample_id": sample_id, "spans": sample_spans}
    return [records[p] for p in sorted(records)], attempt
