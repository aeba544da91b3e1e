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

In the trainer (`data.instruction`, see training.config.InstructionSpec) the rows are written once as
MDS (`tokens`, `labels`, `sequence_ids` columns) to `<cache_dir>/<digest>/{train,held_out}/`, the digest
covering the files' contents, the tokenizer and every packing setting, with a `packing.json` of the
counts written last; from there the streaming loader serves them like any dataset (global order,
resume on any number of ranks), and the trainer takes the labels from the batch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from shards.mds import TOKENS_COLUMN, MDSWriter, token_columns

from ..config import InstructionSpec
from ..tokenizer import TextTokenizer
from .jsonl import read_jsonl_objects
from .sources import IGNORE_INDEX, LABELS_COLUMN, SEQUENCE_IDS_COLUMN, Source

log = logging.getLogger(__name__)


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


def pack_instruction_examples(examples: list[InstructionExample], tokenizer, seq_len: int,
                              overflow: Literal["truncate", "drop"] = "truncate",
                              ) -> tuple[list[PackedRow], PackingStats]:
    """Tokenize (the tokenizer's EOS after each response, EOS also pads) and pack examples, with a progress bar."""
    tokenized = [tokenize_example(tokenizer, example, tokenizer.eos_id)
                 for example in tqdm(examples, desc="tokenizing instruction data", unit="example", leave=False,
                                     disable=len(examples) < 10_000)]
    pad_id = tokenizer.eos_id if tokenizer.eos_id is not None else 0
    return pack_examples(tokenized, seq_len, pad_id, overflow)


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
        rows, stats = pack_instruction_examples(examples, tokenizer, seq_len, overflow)
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


# --------------------------------------------------------------------------- the trainer's data source

TRAIN_SPLIT, HELD_OUT_SPLIT = "train", "held_out"
PACKING_NAME = "packing.json"  # written last: a cache folder without it is unfinished
PACKING_FORMAT = 1  # bump when the packed layout changes, so old cache folders are not reused


def default_instruction_cache() -> str:
    return os.path.join(tempfile.gettempdir(), "kiln-instruction-cache")


def split_held_out(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held out): ``fraction`` of the examples (at least one when positive) picked with ``seed``,
    both in file order."""
    count = min(max(round(len(examples) * fraction), 1 if fraction > 0 else 0), len(examples))
    picked = set(np.random.default_rng(seed).permutation(len(examples))[:count].tolist())
    return ([e for i, e in enumerate(examples) if i not in picked], [e for i, e in enumerate(examples) if i in picked])


def _file_digest(path: str, digest) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def packing_key(spec: InstructionSpec, seq_len: int, seed: int) -> str:
    """A digest of everything the packed rows depend on: file contents, tokenizer and settings."""
    digest = hashlib.sha256()
    for path in (spec.path, spec.tokenizer, spec.eval_path):
        if path is not None:
            _file_digest(path, digest)
    settings = [PACKING_FORMAT, seq_len, spec.prompt_key, spec.response_key, spec.overflow]
    if spec.eval_path is None:
        settings += [spec.eval_fraction, seed]
    digest.update(json.dumps(settings).encode())
    return digest.hexdigest()[:20]


def write_packed_mds(rows: list[PackedRow], out: str, vocab_size: int) -> None:
    """Packed rows as an MDS folder: ``tokens``, ``labels`` (int32, -100 where no loss) and ``sequence_ids``."""
    columns = {**token_columns(vocab_size), LABELS_COLUMN: "ndarray:int32", SEQUENCE_IDS_COLUMN: "ndarray:int32"}
    dtype = np.dtype(columns[TOKENS_COLUMN].split(":")[1])
    with MDSWriter(out, columns, hashes=["xxh3_64"]) as writer:
        for row in rows:
            writer.write({TOKENS_COLUMN: np.asarray(row.input_ids, dtype),
                          LABELS_COLUMN: np.asarray(row.labels, np.int32),
                          SEQUENCE_IDS_COLUMN: np.asarray(row.sequence_ids, np.int32)})


def _build(spec: InstructionSpec, tokenizer: TextTokenizer, seq_len: int, seed: int, folder: str) -> None:
    """Read, split, pack and write both splits into ``folder``, then its packing.json."""
    examples = read_instruction_jsonl(spec.path, spec.prompt_key, spec.response_key)
    if spec.eval_path is not None:
        train, held_out = examples, read_instruction_jsonl(spec.eval_path, spec.prompt_key, spec.response_key)
    else:
        train, held_out = split_held_out(examples, spec.eval_fraction, seed)
    info = {"format": PACKING_FORMAT, "seq_len": seq_len, "splits": {}}
    for split, chosen in ((TRAIN_SPLIT, train), (HELD_OUT_SPLIT, held_out)):
        if not chosen:
            continue
        rows, stats = pack_instruction_examples(chosen, tokenizer, seq_len, spec.overflow)
        if not rows:
            raise ValueError(f"{spec.path}: no {split} example keeps a response token within seq_len={seq_len} "
                             f"({stats.dropped} dropped as too long, {stats.dropped_no_response} without a response)")
        write_packed_mds(rows, os.path.join(folder, split), tokenizer.vocab_size)
        info["splits"][split] = {**dataclasses.asdict(stats), "fill": round(stats.fill, 4)}
    if TRAIN_SPLIT not in info["splits"]:
        raise ValueError(f"{spec.path}: every example is held out; lower data.instruction.eval_fraction")
    with open(os.path.join(folder, PACKING_NAME), "w") as out:
        json.dump(info, out, indent=1)


def prepare_instruction_data(spec: InstructionSpec, seq_len: int, seed: int) -> tuple[str, dict]:
    """The packed MDS folder of ``spec`` (built on first use, atomically) and its packing.json.

    Any number of processes may call this at once: each builds into a temporary folder and renames it
    into place; a loser of that race drops its copy."""
    root = spec.cache_dir or default_instruction_cache()
    key = packing_key(spec, seq_len, seed)
    folder = os.path.join(root, key)
    if not os.path.exists(os.path.join(folder, PACKING_NAME)):
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root)
        try:
            _build(spec, TextTokenizer.from_file(spec.tokenizer), seq_len, seed, tmp)
            try:
                os.rename(tmp, folder)
            except OSError:
                if not os.path.exists(os.path.join(folder, PACKING_NAME)):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(folder, PACKING_NAME)) as handle:
        return folder, json.load(handle)


def instruction_sources(spec: InstructionSpec, seq_len: int, seed: int) -> tuple[list[Source], list[Source] | None]:
    """The trainer's sources for instruction data: the packed train split and the held-out one (or None).

    Truncated and dropped examples are reported as a warning every time."""
    folder, info = prepare_instruction_data(spec, seq_len, seed)
    vocab_size = TextTokenizer.from_file(spec.tokenizer).vocab_size
    sources = {}
    for split, stats in info["splits"].items():
        if stats["truncated"] or stats["dropped"] or stats["dropped_no_response"]:
            log.warning("%s (%s): of %d examples, %d were cut to seq_len=%d, %d dropped as longer, %d dropped with "
                        "no response token left", spec.path, split, stats["examples"], stats["truncated"], seq_len,
                        stats["dropped"], stats["dropped_no_response"])
        path = spec.eval_path if split == HELD_OUT_SPLIT and spec.eval_path else spec.path
        sources[split] = [Source(path, split, os.path.join(folder, split), None, os.path.basename(folder),
                                 stats["rows"], seq_len, vocab_size)]
    return sources[TRAIN_SPLIT], sources.get(HELD_OUT_SPLIT)
