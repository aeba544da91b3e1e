"""In-context-learning tasks in llm-foundry's JSONL formats, scored by continuation log-likelihoods.

Task types (`icl_task_type`) and their JSONL fields, as llm-foundry's in_context_learning_evaluation.py:
  * language_modeling (LAMBADA style): {"context", "continuation"}. Correct when greedy decoding of the
    context reproduces every continuation token. Metric: acc.
  * multiple_choice (HellaSwag, PIQA, ARC): {"query", "choices", "gold"}. Each choice is scored as a
    continuation of the query. Metrics: acc (highest mean log-likelihood per token, llm-foundry's rule),
    acc_sum (highest total log-likelihood, lm-eval's `acc`), acc_norm (total over the choice's length in
    characters, lm-eval's `acc_norm`).
  * schema (Winograd, WinoGrande): {"context_options", "continuation", "gold"}. The continuation is scored
    after each context option (partial scoring). Same metrics as multiple_choice.

Prompts follow llm-foundry: strings are stripped; a context is `prelimiter + context + continuation_delimiter`,
right-stripped; `num_fewshot` other examples (drawn with `fewshot_random_seed`, never the example itself)
come first, each with its answer, after `prompt_string` and separated by `example_delimiter`. When the
tokenizer encodes " a" as one token (GPT-style BPE) the answer gets a leading space. Contexts that do not
fit `max_seq_len` lose tokens from the left. One difference: for schema tasks the (right-stripped)
continuation_delimiter follows every context option, zero-shot too.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from training.data.jsonl import read_jsonl_objects

TASK_TYPES = ("language_modeling", "multiple_choice", "schema")
REQUIRED_FIELDS = {
    "language_modeling": {"context": str, "continuation": str},
    "multiple_choice": {"query": str, "choices": list, "gold": int},
    "schema": {"context_options": list, "continuation": str, "gold": int},
}


@dataclass
class ICLTask:
    label: str
    dataset_uri: str  # a local JSONL file
    icl_task_type: Literal["language_modeling", "multiple_choice", "schema"]
    num_fewshot: list[int] | int = field(default_factory=lambda: [0])
    prompt_string: str = ""
    example_delimiter: str = "\n"
    continuation_delimiter: str = " "
    prelimiter: str = ""
    fewshot_random_seed: int = 1234
    max_examples: int | None = None  # evaluate only the first N examples
    batch_size: int = 8

    def __post_init__(self):
        if isinstance(self.num_fewshot, int):
            self.num_fewshot = [self.num_fewshot]
        if any(shots < 0 for shots in self.num_fewshot):
            raise ValueError(f"icl task {self.label!r}: num_fewshot must be >= 0, got {self.num_fewshot}")


@dataclass
class Request:
    """One scored continuation: the model reads context + continuation and we sum log p(continuation)."""

    context: list[int]
    continuation: list[int]
    continuation_text: str


@dataclass
class Score:
    logprob: float  # total log-likelihood of the continuation
    tokens: int
    greedy: bool  # the model's argmax reproduces every continuation token


def read_examples(path: str | Path, task_type: str) -> list[dict]:
    """The JSONL examples, stripped, each checked for the fields its task type needs."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown icl_task_type {task_type!r}; choose one of {TASK_TYPES}")
    examples = []
    for where, record in read_jsonl_objects(path):
        for key, kind in REQUIRED_FIELDS[task_type].items():
            if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
                raise ValueError(f"{where}: {task_type} needs {key!r} of type {kind.__name__}, "
                                 f"got {record.get(key)!r}")
        options = record.get("choices", record.get("context_options"))
        if options is not None and not 0 <= record["gold"] < len(options):
            raise ValueError(f"{where}: gold={record['gold']} is not an index into {len(options)} options")
        examples.append(_strip(record))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def _strip(value):
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    return value


def needs_prefix_space(tokenizer) -> bool:
    """Whether answers need a leading space: yes for GPT-style BPE, where the space belongs to the word's token.

    llm-foundry's test is that " a" encodes to one token; a small BPE vocabulary may lack that token yet
    still keep spaces with words, which shows as " a" encoding differently from "a" and decoding back to " a".
    """
    spaced = tokenizer.encode(" a")
    return len(spaced) == 1 or (spaced != tokenizer.encode("a") and tokenizer.decode(spaced) == " a")


def fewshot_indices(size: int, shots: int, current: int, rng: random.Random) -> list[int]:
    """`shots` distinct example indices other than `current` (fewer when the set is that small)."""
    others = [i for i in range(size) if i != current]
    return sorted(rng.sample(others, min(shots, len(others))))


class PromptBuilder:
    """Turns examples into scoring requests, with the task's delimiters and few-shot examples."""

    def __init__(self, task: ICLTask, tokenizer, examples: list[dict], max_seq_len: int):
        self.task, self.tokenizer, self.examples, self.max_seq_len = task, tokenizer, examples, max_seq_len
        self.prefix_space = needs_prefix_space(tokenizer)

    def answer(self, text: str) -> str:
        return f" {text}" if self.prefix_space and not text.startswith(" ") else text

    def solved(self, example: dict, preceding: str) -> str:
        """A few-shot example with its answer, as it appears in the prompt."""
        task = self.task
        delimiter = task.example_delimiter if preceding else ""
        if task.icl_task_type == "schema":
            context = example["context_options"][example["gold"]]
            return f"{task.prelimiter}{delimiter}{context}{task.continuation_delimiter}{example['continuation']}"
        context = example["context"] if task.icl_task_type == "language_modeling" else example["query"]
        answer = example["continuation"] if task.icl_task_type == "language_modeling" else \
            example["choices"][example["gold"]]
        return f"{delimiter}{task.prelimiter}{context}{task.continuation_delimiter}{answer}"

    def preamble(self, index: int, shots: int, rng: random.Random) -> str:
        text = self.task.prompt_string
        if shots:
            for other in fewshot_indices(len(self.examples), shots, index, rng):
                text += self.solved(self.examples[other], text)
        return text

    def requests(self, index: int, shots: int, rng: random.Random) -> list[Request]:
        """The example's requests: one for language modelling, one per option otherwise."""
        task, example = self.task, self.examples[index]
        preamble = self.preamble(index, shots, rng)
        delimiter = task.example_delimiter if preamble else ""
        if task.icl_task_type == "schema":
            contexts = [f"{task.prelimiter}{delimiter}{option}{task.continuation_delimiter}".rstrip()
                        for option in example["context_options"]]
            continuations = [example["continuation"]] * len(contexts)
        else:
            query = example["context"] if task.icl_task_type == "language_modeling" else example["query"]
            contexts = [f"{delimiter}{task.prelimiter}{query}{task.continuation_delimiter}".rstrip()]
            continuations = [example["continuation"]] if task.icl_task_type == "language_modeling" else \
                example["choices"]
            contexts = contexts * len(continuations)
        preamble_ids = self.tokenizer.encode(preamble) if preamble else []
        requests = []
        for context, continuation in zip(contexts, continuations):
            continuation_ids = self.tokenizer.encode(self.answer(continuation))
            if not continuation_ids or len(continuation_ids) >= self.max_seq_len:
                raise ValueError(f"task {task.label!r} example {index}: continuation {continuation!r} has "
                                 f"{len(continuation_ids)} tokens; it needs 1 to {self.max_seq_len - 1}")
            context_ids = preamble_ids + self.tokenizer.encode(context)
            if not context_ids:
                raise ValueError(f"task {task.label!r} example {index}: the context is empty")
            keep = self.max_seq_len - len(continuation_ids)  # trim the context from the left
            requests.append(Request(context_ids[-keep:] if len(context_ids) > keep else context_ids,
                                    continuation_ids, continuation))
        return requests


@torch.no_grad()
def score_requests(model, requests: list[Request], batch_size: int) -> list[Score]:
    """Log-likelihood of each continuation given its context, in right-padded batches.

    Right padding needs no mask in a causal model: real tokens never see the pads after them.
    """
    device = next(model.parameters()).device
    scores: list[Score | None] = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i].context) + len(requests[i].continuation)))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        sequences = [requests[i].context + requests[i].continuation for i in chunk]
        longest = max(len(s) for s in sequences)
        ids = torch.tensor([s + [0] * (longest - len(s)) for s in sequences], device=device)
        logits = model(ids)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(chunk):
            request = requests[i]
            begin = len(request.context) - 1  # the position that predicts the first continuation token
            positions = torch.arange(begin, begin + len(request.continuation), device=device)
            targets = torch.tensor(request.continuation, device=device)
            token_logprobs = logprobs[row, positions, targets]
            greedy = bool((logits[row, positions].argmax(dim=-1) == targets).all())
            scores[i] = Score(float(token_logprobs.sum()), len(request.continuation), greedy)
    return scores


def evaluate_icl_task(model, tokenizer, task: ICLTask, max_seq_len: int | None = None) -> dict[str, float]:
    """Metrics of one task, keyed "{shots}-shot/{metric}" (e.g. "0-shot/acc")."""
    examples = read_examples(task.dataset_uri, task.icl_task_type)
    if task.max_examples is not None:
        examples = examples[:task.max_examples]
    builder = PromptBuilder(task, tokenizer, examples, max_seq_len or model.cfg.max_seq_len)
    was_training = model.training
    model.eval()
    results: dict[str, float] = {}
    try:
        for shots in task.num_fewshot:
            rng = random.Random(task.fewshot_random_seed)
            per_example = [builder.requests(index, shots, rng) for index in range(len(examples))]
            flat = [request for requests in per_example for request in requests]
            scores = score_requests(model, flat, task.batch_size)
            metrics = _metrics(task.icl_task_type, examples, per_example, scores)
            results.update({f"{shots}-shot/{name}": value for name, value in metrics.items()})
    finally:
        model.train(was_training)
    return results


def _metrics(task_type: str, examples: list[dict], per_example: list[list[Request]],
             scores: list[Score]) -> dict[str, float]:
    if task_type == "language_modeling":
        return {"acc": sum(score.greedy for score in scores) / len(scores)}
    correct = {"acc": 0, "acc_sum": 0, "acc_norm": 0}
    cursor = 0
    for example, requests in zip(examples, per_example):
        options = scores[cursor:cursor + len(requests)]
        cursor += len(requests)
        rules = {
            "acc": [s.logprob / s.tokens for s in options],
            "acc_sum": [s.logprob for s in options],
            "acc_norm": [s.logprob / max(len(r.continuation_text), 1) for s, r in zip(options, requests)],
        }
        for name, values in rules.items():
            correct[name] += _first_argmax(values) == example["gold"]
    return {name: count / len(examples) for name, count in correct.items()}


def _first_argmax(values: list[float]) -> int:
    """Index of the largest value, the first one on ties (as llm-foundry and lm-eval break them)."""
    return max(range(len(values)), key=values.__getitem__)
