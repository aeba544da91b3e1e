"""The sample ledger's document losses: each packed sample's token losses split at EOS into document
spans (training.run.ledger.document_spans), written in the ledger's lines and read back per step."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shards.config import ConfigError
from training.data.loader import next_token_labels
from training.data.sources import IGNORE_INDEX, Source
from training.run.ledger import SampleLedger, document_spans, ledger_path, step_records

EOS = 0


def source(num_samples: int, eos: int | None = EOS) -> Source:
    return Source("ds", "train", "ds/v=1/train", 1, "f", num_samples, 8, 16, eos_token_id=eos)


def test_spans_end_at_each_eos_and_leave_out_the_prediction_across_documents():
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, 4]])
    labels = next_token_labels(ids)
    losses = torch.arange(8, dtype=torch.float32).reshape(1, 8)
    # span 0: positions 0, 1 predict 6 and the EOS; position 2 (the EOS) predicts the next document's 7
    # span 1: positions 3, 4, 5; span 2: position 7 is the row's last, which predicts nothing
    assert document_spans(losses, ids, labels, EOS) == [[(0, 3, 0.5), (3, 4, 4.0), (7, 1, None)]]


def test_spans_per_row_eos_and_document_aware_labels():
    ids = torch.tensor([[3, 3, 9, 3], [EOS, 3, 3, 3]])
    sequence_ids = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]])
    labels = next_token_labels(ids, sequence_ids)  # the EOS positions are ignored already
    losses = torch.tensor([[1.0, 2.0, 50.0, 7.0], [50.0, 1.0, 3.0, 9.0]])
    spans = document_spans(losses, ids, labels, np.array([9, EOS]))
    assert spans == [[(0, 3, 1.5), (3, 1, None)], [(0, 1, None), (1, 3, 2.0)]]
    # ignored labels (instruction prompts) do not count
    labels[1, 2] = IGNORE_INDEX
    assert document_spans(losses, ids, labels, np.array([9, EOS]))[1][1] == (1, 3, 1.0)


def test_ledger_lines_with_document_losses_and_their_reading(tmp_path):
    sources = [source(10, eos=EOS), source(5, eos=1)]
    ledger = SampleLedger(ledger_path(tmp_path, 0), attempt=0, sources=sources)
    assert ledger.document_losses
    ids = torch.tensor([[4, EOS, 4, 4], [4, 1, 4, 4]])
    batch = {"positions": torch.tensor([0, 1]), "sample_ids": torch.tensor([3, 12]), "input_ids": ids}
    ledger.record(1, batch)
    ledger.record_losses(torch.ones(2, 4) * torch.tensor([[1.0], [2.0]]), next_token_labels(ids))
    ledger.record(2, {**batch, "positions": torch.tensor([2, 3])})  # its forward failed: no losses
    ledger.close()
    lines = [json.loads(line) for line in ledger_path(tmp_path, 0).read_text().splitlines()]
    assert lines[0]["document_losses"] == [[[0, 2, 1.0], [2, 2, 1.0]], [[0, 2, 2.0], [2, 2, 2.0]]]
    assert lines[0]["sample_ids"] == [3, 12] and "document_losses" not in lines[1]

    # a restart trained step 2 again: its attempt wins; a line cut off by a kill is skipped
    again = SampleLedger(ledger_path(tmp_path, 0), attempt=1, sources=sources)
    again.record(2, {**batch, "positions": torch.tensor([2, 3])})
    again.record_losses(torch.full((2, 4), 3.0), next_token_labels(ids))
    again.close()
    with ledger_path(tmp_path, 0).open("a") as f:
        f.write('{"step": 2, "attem')
    records, attempt = step_records(tmp_path, 2)
    assert attempt == 1 and [r["position"] for r in records] == [2, 3]
    assert records[0]["spans"] == [[0, 2, 3.0], [2, 2, 3.0]]
    assert step_records(tmp_path, 7) == ([], None)


def test_ledger_without_document_losses_is_unchanged(tmp_path):
    ledger = SampleLedger(ledger_path(tmp_path, 1), attempt=0)
    batch = {"positions": torch.tensor([4]), "sample_ids": torch.tensor([9]), "input_ids": torch.zeros(1, 4)}
    ledger.record(3, batch)
    ledger.record_losses(torch.zeros(1, 4), torch.zeros(1, 4))  # a no-op
    ledger.close()
    assert [json.loads(line) for line in ledger_path(tmp_path, 1).read_text().splitlines()] == [
        {"step": 3, "attempt": 0, "positions": [4], "sample_ids": [9]}]
    assert step_records(tmp_path, 3)[0] == [{"position": 4, "sample_id": 9, "spans": None}]


def test_document_losses_need_an_eos_token(tmp_path):
    with pytest.raises(ConfigError, match="ledger_document_losses: ds records no EOS"):
        SampleLedger(ledger_path(tmp_path, 0), sources=[source(4, eos=None)])
