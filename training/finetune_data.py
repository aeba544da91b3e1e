"""Instruction fine-tuning data: prompt/response JSONL -> packed token rows with masked labels.

Each JSONL line is one example, `{"prompt": "...", "response": "..."}` (key names configurable). The
prompt carries its own template (as in llm-foundry's finetuning data); the example's tokens are
`prompt + response + EOS`. Only response tokens (and the EOS that ends the response) carry loss.

Examples are packed into rows of `seq_len` tokens, several to a row, in file order (first fit: an
example goes into the current row when it fits, else it starts a new one). Each row comes with

    input_ids    [seq_len]  tokens; the tail after the last example is padding (pad_id)
    labels       [seq_len]  labels[t] = input_ids[t + 1] where that token is a response token of the
                            same example, else -100 (already shifted: `MPT.loss(logits, labels)`)
    sequence_ids [seq_len]  0, 1, 2, ... per example, padding gets one more id: passed to
                            `MPT.forward(sequence_ids=...)` so packed examples never attend to each
                            other and positions restart at every example

An example longer than `seq_len` is truncated (its end is cut) or dropped, as `overflow` says; both
are counted in `PackingStats`, never silent.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .jsonl import read_jsonl_objects

IGNORE_INDEX = -100


@dataclass
class InstructionExample:
    prompt: str
    response: str


@dataclass
class PackingStats:
    seq_len: int
    examples: int = 0
    rows: int = 0
    truncated: int = 0  # examples cut to seq_len
    dropped: int = 0  # examples longer than seq_len left out (overflow="drop")
    dropped_no_response: int = 0  # examples whose response tokens were all cut away
    tokens: int = 0  # real (non-pad) tokens in the rows
    loss_tokens: int = 0  # tokens that carry a label

    @property
    def fill(self) -> float:
        """Share of row positions holding real tokens."""
        return self.tokens / max(self.rows * self.seq_len, 1)


def read_instruction_jsonl(path: str | Path, prompt_key: str = "prompt",
                           response_key: str = "response") -> list[InstructionExample]:
    """Read prompt/response pairs; a bad line is reported with its file and line number."""
    examples = []
    for where, record in read_jsonl_objects(path):
        for key in (prompt_key, response_key):
            if not isinstance(record.get(key), str):
                raise ValueError(f"{where}: key {key!r} must hold a string, got {record.get(key)!r}")
        if not record[response_key]:
            raise ValueError(f"{where}: empty {response_key!r}; an example without a response has no loss")
        examples.append(InstructionExample(record[prompt_key], record[response_key]))
    return examples


def tokenize_example(tokenizer, example: InstructionExample, eos_id: int | None) -> tuple[list[int], list[bool]]:
    """(tokens, is_response) for one example: prompt, response, then EOS (counted as response)."""
    prompt = tokenizer.encode(example.prompt)
    response = tokenizer.encode(example.response) + ([] if eos_id is None else [eos_id])
    return prompt + response, [False] * len(prompt) + [True] * len(response)


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    sequence_ids: list[int]


def pack_examples(tokenized: list[tuple[list[int], list[bool]]], seq_len: int, pad_id: int = 0,
                  overflow: Literal["truncate", "drop"] = "truncate") -> tuple[list[PackedRow], PackingStats]:
    """Pack (tokens, is_response) examples into rows of seq_len; see the module docstring."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if overflow not in ("truncate", "drop"):
        raise ValueError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
    stats = PackingStats(seq_len=seq_len)
    rows: list[PackedRow] = []
    current: list[tuple[list[int], list[bool]]] = []
    used = 0
    for tokens, is_response in tokenized:
        stats.examples += 1
        if len(tokens) > seq_len:
            if overflow == "drop":
                stats.dropped += 1
                continue
            tokens, is_response = tokens[:seq_len], is_response[:seq_len]
            stats.truncated += 1
        if not any(is_response[1:]):  # a label exists only for response tokens after the first position
            stats.dropped_no_response += 1
            continue
        if used + len(tokens) > seq_len:
            rows.append(_build_row(current, seq_len, pad_id, stats))
            current, used = [], 0
        current.append((tokens, is_response))
        used += len(tokens)
    if current:
        rows.append(_build_row(current, seq_len, pad_id, stats))
    stats.rows = len(rows)
    return rows, stats


def _build_row(examples: list[tuple[list[int], list[bool]]], seq_len: int, pad_id: int,
               stats: PackingStats) -> PackedRow:
    input_ids, labels, sequence_ids = [], [], []
    for index, (tokens, is_response) in enumerate(examples):
        input_ids += tokens
        # Position t predicts token t + 1 of the same example, and only response tokens are learned.
        labels += [tokens[t + 1] if is_response[t + 1] else IGNORE_INDEX for t in range(len(tokens) - 1)]
        labels.append(IGNORE_INDEX)  # the next token belongs to another example (or is padding)
        sequence_ids += [index] * len(tokens)
    stats.tokens += len(input_ids)
    stats.loss_tokens += sum(label != IGNORE_INDEX for label in labels)
    padding = seq_len - len(input_ids)
    return PackedRow(input_ids + [pad_id] * padding, labels + [IGNORE_INDEX] * padding,
                     sequence_ids + [len(examples)] * padding)


class PackedInstructionDataset(torch.utils.data.Dataset):
    """Packed rows as tensors: {"input_ids", "labels", "sequence_ids"}, each [seq_len] int64."""

    def __init__(self, rows: list[PackedRow]):
        self.rows = rows

    @classmethod
    def from_jsonl(cls, path: str | Path, tokenizer, seq_len: int, prompt_key: str = "prompt",
                   response_key: str = "response", overflow: Literal["truncate", "drop"] = "truncate",
                   ) -> tuple[PackedInstructionDataset, PackingStats]:
        """Read, tokenize (with the tokenizer's EOS after each response) and pack a JSONL file."""
        examples = read_instruction_jsonl(path, prompt_key, response_key)
        tokenized = [tokenize_example(tokenizer, example, tokenizer.eos_id) for example in examples]
        pad_id = tokenizer.eos_id if tokenizer.eos_id is not None else 0
        rows, stats = pack_examples(tokenized, seq_len, pad_id, overflow)
        return cls(rows), stats

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        return {
            "input_ids": torch.tensor(row.input_ids, dtype=torch.long),
            "labels": torch.tensor(row.labels, dtype=torch.long),
            "sequence_ids": torch.tensor(row.sequence_ids, dtype=torch.long),
        }
