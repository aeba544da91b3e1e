"""python -m training.eval CHECKPOINT TASKS.yaml [--unsafe] [--output results.json]

Evaluates a training checkpoint or a consolidated checkpoint folder (see training.weights.inference) on the tasks
of TASKS.yaml (see training.eval), prints the metrics and vibe completions, and writes everything as JSON
with --output.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

from shards.config import ConfigError
from training.eval import load_eval_config, run_evals
from training.eval.code_exec import SandboxUnavailable
from training.weights.inference import load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a training checkpoint (step-N folder, or a checkpoint root: its newest "
                                           "complete step) or a consolidated folder")
    parser.add_argument("tasks", help="evaluation tasks YAML")
    parser.add_argument("--unsafe", action="store_true",
                        help="run generated code even where the sandbox gets no OS isolation (limits only)")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--step", type=int, help="training step to record with the results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = parser.parse_args(argv)
    try:
        config = load_eval_config(args.tasks)
        if args.unsafe:
            config = dataclasses.replace(config, sandbox=dataclasses.replace(config.sandbox, unsafe=True))
        model, _, tokenizer = load_model(args.checkpoint, device=args.device, dtype=getattr(torch, args.dtype))
        results = run_evals(model, tokenizer, config, step=args.step)
    except (ConfigError, ValueError, FileNotFoundError, SandboxUnavailable) as err:
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


if __name__ == "__main__":
    sys.exit(main())
