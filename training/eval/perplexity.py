"""Perplexity on validation shards: the MDS token datasets the ETL writes (`tokens` column).

Every sample is scored as one causal sequence: each token predicts the next, and the loss is the mean
over all predicted tokens of the split (not a mean of per-sample means), so samples of different lengths
count by their tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shards import MDSReader


@dataclass
class PerplexityTask:
    label: str
    path: str  # an MDS dataset folder (local path or fsspec URL) with a `tokens` column
    max_samples: int | None = None  # the first N samples only
    batch_size: int = 8


@torch.no_grad()
def evaluate_perplexity(model, task: PerplexityTask) -> dict[str, float]:
    """{"loss": mean next-token cross-entropy (nats), "perplexity": exp(loss), "tokens": tokens predicted}."""
    reader = MDSReader(task.path)
    if "tokens" not in reader.columns:
        raise ValueError(f"perplexity task {task.label!r}: {task.path} has no 'tokens' column "
                         f"(columns: {sorted(reader.columns)})")
    count = len(reader) if task.max_samples is None else min(task.max_samples, len(reader))
    if count == 0:
        raise ValueError(f"perplexity task {task.label!r}: {task.path} has no samples")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    try:
        for start in range(0, count, task.batch_size):
            samples = [np.asarray(reader[i]["tokens"]).astype(np.int64) for i in range(start, min(start + task.batch_size, count))]
            longest = max(len(s) for s in samples)
            if longest < 2:
                continue
            ids = torch.zeros(len(samples), longest, dtype=torch.long)
            labels = torch.full((len(samples), longest - 1), -100, dtype=torch.long)
            for row, sample in enumerate(samples):
                ids[row, :len(sample)] = torch.from_numpy(sample)
                labels[row, :len(sample) - 1] = torch.from_numpy(sample[1:])
            ids, labels = ids.to(device), labels.to(device)
            logits = model(ids[:, :-1])
            total_loss += float(F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                reduction="sum"))
            total_tokens += int((labels != -100).sum())
    finally:
        model.train(was_training)
        reader.close()
    loss = total_loss / max(total_tokens, 1)
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": float(total_tokens)}
