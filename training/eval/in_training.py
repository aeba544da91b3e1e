"""``eval.tasks`` at the trainer's evaluation points, on the live FSDP2-sharded model.

Rank 0 evaluates a full copy of the weights; the other ranks wait. Running the tasks on every rank
instead would need every rank to make exactly the same sequence of forwards (each forward of a
fully_shard model is a collective), but generation stops when its rows finish, which depends on the
tokens drawn, and padded generation calls the blocks without the root module's forward: one greedy tie
broken differently on one rank would hang the job. So at each evaluation point:

1. every rank takes part in one all-gather of the weights (``get_model_state_dict`` with
   ``full_state_dict`` and ``cpu_offload``: only rank 0 keeps them, in CPU memory);
2. rank 0 builds an unsharded MPT from them (attention "sdpa", in the training compute dtype, on its
   device) and runs ``training.eval.run_evals`` unchanged: metrics, vibe checks, sandboxed code;
3. the other ranks wait for rank 0's outcome in a gloo group of their own whose timeout is the
   watchdog's (``watchdog.timeout_s`` must cover an evaluation); an error on rank 0 is raised on every rank.

Rank 0 needs room for one more copy of the weights (CPU, then device) while it evaluates.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from shards.config import ConfigError
from training.config import TrainConfig
from training.eval import EvalConfig, Sandbox, check_eval_config, load_eval_config, run_evals
from training.eval.code_exec import SandboxUnavailable
from training.model import MPT, MPTConfig
from training.run.metrics import MetricsLogger
from training.tokenizer import TextTokenizer

NO_WATCHDOG_WAIT_S = 24 * 3600  # how long the other ranks wait for rank 0 when the watchdog is off


def load_tasks(cfg: TrainConfig, model: MPTConfig) -> tuple[EvalConfig, TextTokenizer | None, Sandbox | None]:
    """eval.tasks, its tokenizer and its sandbox, checked as far as possible without a model; ConfigError
    otherwise (the launcher calls this before any rank starts)."""
    try:
        tasks = load_eval_config(cfg.eval.tasks)
        tokenizer = TextTokenizer.from_file(cfg.eval_tokenizer) if cfg.eval_tokenizer else None
        if tokenizer is not None:
            model.check_tokenizer(tokenizer.vocab_size)
        sandbox = check_eval_config(tasks, tokenizer)
    except (ConfigError, ValueError, OSError, SandboxUnavailable) as err:
        raise ConfigError(f"eval.tasks {cfg.eval.tasks}: {err}") from None
    return tasks, tokenizer, sandbox


class TaskEvaluator:
    """Runs eval.tasks at an evaluation point (see the module docstring); every rank calls ``run``."""

    def __init__(self, cfg: TrainConfig, model_cfg: MPTConfig, rank: int, world_size: int, device: torch.device,
                 dtype: torch.dtype, run_dir: Path, metrics: MetricsLogger, broadcast):
        self.rank, self.device, self.dtype = rank, device, dtype
        self.model_cfg = dataclasses.replace(model_cfg, attn_impl="sdpa")  # generation needs sdpa
        self.vibe_dir, self.metrics = run_dir / "vibe", metrics
        loaded, error = (None, None, None), None
        if rank == 0:
            try:
                loaded = load_tasks(cfg, model_cfg)
            except ConfigError as err:
                error = err
        broadcast(error)  # rank 0's error, raised on every rank
        self.tasks, self.tokenizer, self.sandbox = loaded
        self.group = None
        if world_size > 1:
            wait = timedelta(seconds=cfg.watchdog.timeout_s or NO_WATCHDOG_WAIT_S)
            self.group = dist.new_group(backend="gloo", timeout=wait)

    def run(self, model: nn.Module, step: int) -> dict[str, float]:
        """The task metrics on rank 0 (an empty dict on the others), once every rank is through."""
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        outcome: object = {}
        if self.rank == 0:
            try:
                outcome = self._evaluate(full, step)
            except Exception as err:  # raised on every rank below, so none waits for the next step's collectives
                outcome = RuntimeError(f"eval.tasks at step {step}: {type(err).__name__}: {err}")
        del full
        if self.group is not None:
            payload = [outcome if isinstance(outcome, Exception) else None]
            dist.broadcast_object_list(payload, src=0, group=self.group)
            outcome = payload[0] or outcome
        if isinstance(outcome, Exception):
            raise outcome
        return outcome if self.rank == 0 else {}

    def _evaluate(self, full: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        with torch.device("meta"):
            copy = MPT(self.model_cfg)
        copy.load_state_dict(full, assign=True)
        copy = copy.to(device=self.device, dtype=self.dtype).eval()
        try:
            results = run_evals(copy, self.tokenizer, self.tasks, step=step, sandbox=self.sandbox)
        finally:
            del copy
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if results["vibe"]:
            self.vibe_dir.mkdir(parents=True, exist_ok=True)
            path = self.vibe_dir / f"step_{step:06d}.jsonl"
            path.write_text("".join(json.dumps({"step": step, **sample}) + "\n" for sample in results["vibe"]))
            self.metrics.log_artifact(path, "vibe")
        return results["metrics"]

    def release(self) -> None:
        """Destroy the waiting group (see Checkpointer.release for why it must not be left to the collector)."""
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None
