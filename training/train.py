"""The training loop, top to bottom: FSDP2 over an MPT model, fed by the streaming loader.

One process per device; start them with ``python -m training.launch CONFIG`` (which validates the
config and runs torch.distributed.run), or under torchrun directly, or as a single plain process
(``python -m training.train CONFIG``) for debugging. On GPU: NCCL, bf16 mixed precision, parameters
initialised on the meta device and materialised shard by shard. On CPU: gloo and fp32, with the full
model initialised on every rank before sharding (small models only), which makes a run's numbers
independent of the number of ranks.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from shards.config import ConfigError

from .checkpoint import Checkpointer, describe_data
from .config import DataSection, ParallelSection, TrainConfig, accumulation_steps, check_world_size, load_config
from .data import (BatchLayout, CacheSettings, Source, StreamingLoader, TokenBatches, as_tensors, build_order,
                   check_sources, default_cache_root, resolve_source)
from .eval.in_training import TaskEvaluator
from .finetune_data import instruction_sources, prepare_instruction_data
from .init_from import load_weights
from .journal import Journal, RunObserver
from .metrics import MetricsLogger, memory_gb, peak_flops
from .model import MPT, MPTConfig
from .optim import build_optimizer, lr_multiplier, set_lr
from .watchdog import FaultPlan, PeersLost, Preemption, Watchdog, connect_store

IGNORE_INDEX = -100


# --------------------------------------------------------------------------- processes and devices

@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    mesh: DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: ParallelSection) -> Distributed:
    """Join the process group torchrun set up (or make a one-process group) and build the device mesh.

    Full sharding is a 1-D mesh over every rank; hybrid is 2-D: replicate across groups of
    ``shard_group_size`` ranks (default: one node), shard within each group.
    """
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("parallel.device is 'cuda' but no CUDA device is available")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
    if "RANK" in os.environ:
        dist.init_process_group(backend, device_id=device if use_cuda else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    world_size = dist.get_world_size()
    if cfg.sharding == "hybrid":
        group = cfg.shard_group_size or local_world_size
        mesh = init_device_mesh(device.type, (world_size // group, group), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("shard",))
    return Distributed(dist.get_rank(), world_size, local_rank, local_world_size, device, mesh)


def broadcast_from_main(value, dist_info: Distributed):
    """Rank 0's ``value`` on every rank; an exception on rank 0 is raised on every rank."""
    payload = [value]
    dist.broadcast_object_list(payload, src=0, device=dist_info.device)
    if isinstance(payload[0], Exception):
        raise payload[0]
    return payload[0]


# --------------------------------------------------------------------------- data

def resolve_data(cfg: TrainConfig, d: Distributed) -> tuple[list[Source], list[Source] | None]:
    """Rank 0 pins each dataset's version (newest complete one unless configured) for every rank,
    so a version published while the ranks start is never half-seen. Instruction data is packed by
    rank 0, then by the first rank of each other machine (a no-op where they share the cache folder)."""
    result: object = None
    if d.is_main:
        try:
            result = resolve_sources(cfg)
        except (ValueError, OSError, ConfigError) as err:
            result = ConfigError(f"data: {err}")
    sources = broadcast_from_main(result, d)
    if cfg.data.instruction is not None:
        if d.local_rank == 0 and not d.is_main:
            prepare_instruction_data(cfg.data.instruction, instruction_seq_len(cfg), cfg.data.seed)
        dist.barrier()
    return sources


def instruction_seq_len(cfg: TrainConfig) -> int:
    return cfg.data.instruction.seq_len or cfg.model.build().max_seq_len


def resolve_sources(cfg: TrainConfig, check_model: bool = True) -> tuple[list[Source], list[Source] | None]:
    """The train (and eval) sources of the config, checked against the eval batches and, unless
    ``check_model`` is false (pre-flight reports that check on its own), against the model."""
    data = cfg.data
    if data.instruction is not None:
        train, held_out = instruction_sources(data.instruction, instruction_seq_len(cfg), data.seed)
    else:
        train = [resolve_source(s.path, data.train_split, s.version, s.proportion) for s in data.datasets]
    seq_len = check_sources(train)
    if check_model:
        model = cfg.model.build()
        if seq_len > model.max_seq_len:
            raise ConfigError(f"samples hold {seq_len} tokens but the model's max_seq_len is {model.max_seq_len} "
                              "(model.overrides.max_seq_len)")
        for source in train:
            if source.vocab_size is not None and source.vocab_size > model.vocab_size:
                raise ConfigError(f"{source.path} has vocab_size {source.vocab_size} but the model's is "
                                  f"{model.vocab_size} (model.overrides.vocab_size)")
    evals = None
    if cfg.eval.every_steps and cfg.has_eval_loss:
        if data.instruction is not None:
            evals = held_out
        else:
            evals = [resolve_source(s.path, data.eval_split, s.version, s.proportion) for s in data.datasets]
        needed = cfg.eval.batches * cfg.eval_global_batch_size
        available = sum(s.num_samples for s in evals)
        if needed > available:
            raise ConfigError(
                f"eval reads eval.batches x global batch = {needed} samples but split {evals[0].split!r} "
                f"has {available}; lower eval.batches or eval.global_batch_size"
            )
        if check_sources(evals) != check_sources(train):
            raise ConfigError("the eval split's sample length differs from the train split's")
    return train, evals


def make_batches(sources: list[Source], data: DataSection, global_batch: int, micro_batch: int, d: Distributed,
                 shuffle: bool, num_micro_batches: int | None = None) -> TokenBatches:
    order = build_order(sources, data.seed, shuffle, data.shuffle_window_shards)
    layout = BatchLayout(global_batch, micro_batch, d.rank, d.world_size)
    cache = CacheSettings(data.cache_dir or default_cache_root(), int(data.cache_limit_gb * 1e9),
                          data.download_retries, data.verify_hashes, data.prefetch_shards)
    return TokenBatches(sources, order, layout, cache, num_micro_batches=num_micro_batches)


def next_token_labels(input_ids: torch.Tensor, sequence_ids: torch.Tensor | None = None) -> torch.Tensor:
    """labels[b, t] = input_ids[b, t + 1]; ignored at the end of each row and across document boundaries."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = input_ids[:, 1:]
    if sequence_ids is not None:
        labels[:, :-1][sequence_ids[:, 1:] != sequence_ids[:, :-1]] = IGNORE_INDEX
    return labels


def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                                  torch.Tensor]:
    """(input_ids, sequence_ids or None, labels) of a micro-batch on ``device``. Labels come with the batch
    for instruction data (response tokens only, already shifted), else are the next tokens."""
    input_ids = batch["input_ids"].to(device, non_blocking=True)
    sequence_ids = batch.get("sequence_ids")
    if sequence_ids is not None:
        sequence_ids = sequence_ids.to(device, non_blocking=True)
    labels = batch.get("labels")
    labels = next_token_labels(input_ids, sequence_ids) if labels is None else labels.to(device, non_blocking=True)
    return input_ids, sequence_ids, labels


# --------------------------------------------------------------------------- model

def compute_dtype(par: ParallelSection, device: torch.device) -> torch.dtype:
    """bf16 when configured, or by default on GPU; else fp32."""
    bf16 = par.mixed_precision == "bf16" or (par.mixed_precision == "auto" and device.type == "cuda")
    return torch.bfloat16 if bf16 else torch.float32


def build_model(model_cfg: MPTConfig, par: ParallelSection, d: Distributed) -> nn.Module:
    """The MPT model, each block and then the root sharded with FSDP2 (fully_shard) over the mesh."""
    on_gpu = d.device.type == "cuda"
    with torch.device("meta" if on_gpu else "cpu"):
        model = MPT(model_cfg)
    if par.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(model.blocks):
            model.blocks[i] = checkpoint_wrapper(block)
    if par.compile:
        for i, block in enumerate(model.blocks):
            model.blocks[i] = torch.compile(block)
    # bf16: bf16 compute and all-gathers, fp32 gradient reduction and master weights
    if compute_dtype(par, d.device) == torch.bfloat16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mesh=d.mesh, mp_policy=policy)
    fully_shard(model, mesh=d.mesh, mp_policy=policy)
    if on_gpu:
        model.to_empty(device=d.device)
        with torch.no_grad():
            model.init_weights()
    return model


def grad_norm_and_clip(model: nn.Module, max_norm: float | None) -> float:
    """The total gradient norm (before clipping), clipping to ``max_norm`` when set."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm is not None else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm.item()


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model: nn.Module, batches: TokenBatches, d: Distributed) -> float:
    """Mean next-token loss over the eval batches (every token counts once, on any number of ranks)."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=d.device)
    for batch in map(as_tensors, batches):
        input_ids, sequence_ids, labels = model_inputs(batch, d.device)
        logits = model(input_ids, sequence_ids=sequence_ids)
        totals[0] += F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                     ignore_index=IGNORE_INDEX, reduction="sum")
        totals[1] += (labels != IGNORE_INDEX).sum()
    dist.all_reduce(totals)
    model.train()
    return (totals[0] / totals[1]).item()


# --------------------------------------------------------------------------- ledger

class SampleLedger:
    """Per rank, one JSON line per micro-batch: the global positions and sample ids it trained on.

    Lines carry the restart attempt: after a resume from step S, the lines of earlier attempts with
    steps after S are superseded."""

    def __init__(self, path: Path | None, attempt: int = 0):
        self._file = None
        self.attempt = attempt
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a")

    def record(self, step: int, batch: dict[str, torch.Tensor]) -> None:
        if self._file is not None:
            line = {"step": step, "attempt": self.attempt, "positions": batch["positions"].tolist(),
                    "sample_ids": batch["sample_ids"].tolist()}
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()  # a rank killed later must not lose lines of steps a checkpoint holds

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --------------------------------------------------------------------------- the run

def prepare_run_dir(cfg: TrainConfig, d: Distributed) -> Path:
    """``<output_dir>/<name>``; rank 0 picks the default name (a timestamp) for every rank."""
    name = cfg.name or (time.strftime("%Y%m%d-%H%M%S") if d.is_main else None)
    name = broadcast_from_main(name, d)
    run_dir = Path(cfg.output_dir) / name
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    return run_dir


def train(cfg: TrainConfig) -> dict:
    """Run the configured training; returns rank 0's final metrics (empty on other ranks)."""
    d = init_distributed(cfg.parallel)
    try:
        return _train(cfg, d)
    finally:
        dist.destroy_process_group()


def _train(cfg: TrainConfig, d: Distributed) -> dict:
    check_world_size(cfg, d.world_size, d.local_world_size)
    torch.manual_seed(cfg.train.seed)
    run_dir = prepare_run_dir(cfg, d)

    # Data: versions pinned once, the same global order on every rank.
    train_sources, eval_sources = resolve_data(cfg, d)
    seq_len = check_sources(train_sources)
    micro_batch = cfg.train.micro_batch_size
    accumulation = accumulation_steps(cfg.train.global_batch_size, micro_batch, d.world_size)
    train_loader = StreamingLoader(
        make_batches(train_sources, cfg.data, cfg.train.global_batch_size, micro_batch, d, cfg.data.shuffle),
        cfg.data.num_workers, cfg.data.prefetch_batches,
    )
    eval_batches = None
    if eval_sources is not None:
        eval_accumulation = accumulation_steps(cfg.eval_global_batch_size, micro_batch, d.world_size, "eval")
        eval_micro = cfg.eval.batches * eval_accumulation
        eval_batches = make_batches(eval_sources, cfg.data, cfg.eval_global_batch_size, micro_batch, d,
                                    shuffle=False, num_micro_batches=eval_micro)

    # Model and optimizer.
    model_cfg = cfg.model.build()
    model = build_model(model_cfg, cfg.parallel, d)
    optimizer = build_optimizer(model, cfg.optimizer)

    # Fault tolerance: journal, hang watchdog and heartbeats, then resume from the newest complete checkpoint.
    journal = Journal(run_dir, d.rank)
    faults = FaultPlan.from_env(run_dir / "faults", d.rank, journal)
    checkpointer = Checkpointer(cfg, d.rank, d.world_size, journal, faults, train_sources, seq_len)
    if d.is_main:
        if journal.attempt > 0:
            journal.record("restart", cause=journal.restart_cause())
        journal.record("start", world_size=d.world_size, max_steps=cfg.train.max_steps,
                       data=describe_data(train_sources), checkpoints=checkpointer.enabled and checkpointer.root)
    watchdog = Watchdog(cfg.watchdog, d.rank, d.world_size, run_dir, journal, connect_store(journal.attempt))
    watchdog.start()
    task_evals = None
    from_main = functools.partial(broadcast_from_main, dist_info=d)
    try:  # the watchdog thread and its faulthandler timer must not outlive a failed start
        state = checkpointer.resume(model, optimizer, train_loader)
        if state.step == 0 and cfg.init_from is not None:  # a checkpoint of this run wins over init_from
            source = load_weights(model, cfg.init_from, model_cfg, d.is_main, from_main)
            if d.is_main:
                journal.record("init_from", source=source.describe())

        # Logging: rank 0 only; every rank writes its own sample ledger when asked.
        metrics = MetricsLogger(cfg.logging, run_dir, Path(cfg.output_dir), run_dir.name, cfg.train.max_steps,
                                state.step, enabled=d.is_main)
        ledger_path = run_dir / "ledger" / f"rank-{d.rank:05d}.jsonl" if cfg.logging.sample_ledger else None
        ledger = SampleLedger(ledger_path, journal.attempt)
        run_info = {
            "name": run_dir.name, "world_size": d.world_size, "device": str(d.device),
            "mesh": dict(zip(d.mesh.mesh_dim_names, d.mesh.shape)), "torch": torch.__version__,
            "num_params": model_cfg.num_params(), "seq_len": seq_len,
            "data": {"train": [s.describe() for s in train_sources],
                     "eval": [s.describe() for s in eval_sources] if eval_sources else None},
            "config": cfg.to_dict(),
        }
        if d.is_main:
            (run_dir / "run_info.json").write_text(json.dumps(run_info, indent=2) + "\n")
        metrics.log_params({"config": cfg.to_dict(), "data": run_info["data"], "world_size": d.world_size,
                            "num_params": run_info["num_params"]})
        if cfg.eval.tasks is not None:
            task_evals = TaskEvaluator(cfg, model_cfg, d.rank, d.world_size, d.device,
                                       compute_dtype(cfg.parallel, d.device), run_dir, metrics, from_main)
    except BaseException:
        watchdog.stop()
        checkpointer.release()
        if task_evals is not None:
            task_evals.release()
        raise

    flops_per_token = model_cfg.flops_per_token(seq_len)
    peak = peak_flops(d.device, cfg.logging.peak_flops_per_device)
    tokens_per_step = cfg.train.global_batch_size * seq_len
    last: dict = {}
    status = "FAILED"
    observer = RunObserver(cfg.journal, journal)
    preemption = Preemption(watchdog, cfg.checkpoint.alive_check_s, d.world_size)
    preemption.install()
    stopped = False
    try:
        batches = iter(train_loader)
        interval_start, interval_steps = time.perf_counter(), 0
        for step in range(state.step + 1, cfg.train.max_steps + 1):
            lr = set_lr(optimizer, lr_multiplier(step, cfg.schedule, cfg.train.max_steps))
            loss_sum = torch.zeros((), device=d.device)
            for _ in range(accumulation):
                batch = next(batches)
                ledger.record(step, batch)
                input_ids, sequence_ids, labels = model_inputs(batch, d.device)
                logits = model(input_ids, sequence_ids=sequence_ids)
                loss = MPT.loss(logits, labels, ignore_index=IGNORE_INDEX)
                (loss / accumulation).backward()
                loss_sum += loss.detach()
            grad_norm = grad_norm_and_clip(model, cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step, state.loader = step, train_loader.state_dict()
            interval_steps += 1
            faults.at_step(step)

            is_last = step == cfg.train.max_steps
            if step % cfg.logging.every_steps == 0 or is_last:
                dist.all_reduce(loss_sum)
                elapsed = time.perf_counter() - interval_start
                tokens_per_s = interval_steps * tokens_per_step / elapsed
                last = {
                    "loss": loss_sum.item() / (accumulation * d.world_size),
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens_per_s": tokens_per_s,
                    "mfu": flops_per_token * tokens_per_s / (peak * d.world_size) if peak else None,
                    "memory_gb": memory_gb(d.device),
                    "samples": state.loader["position"],
                    "tokens": state.loader["position"] * seq_len,
                }
                metrics.log(step, last)
                metrics.advance(step, last["loss"], lr, tokens_per_s)
                if d.is_main:
                    observer.observe(step, last["loss"], tokens_per_s)
                interval_start, interval_steps = time.perf_counter(), 0
            if cfg.eval.every_steps and (step % cfg.eval.every_steps == 0 or is_last):
                evaluated = {}
                if eval_batches is not None:
                    evaluated["eval_loss"] = evaluate(model, eval_batches, d)
                if task_evals is not None:
                    evaluated.update(task_evals.run(model, step))
                last.update(evaluated)
                metrics.log(step, evaluated, echo=True)
                interval_start = time.perf_counter()  # evaluation time is not training throughput
            stop = preemption.should_stop()
            if stop or is_last or checkpointer.due(step):
                checkpointer.save(state, model, optimizer, "preemption" if stop else "final" if is_last else "periodic")
            checkpointer.poll()
            watchdog.step_done(step)
            if stop:
                stopped = True
                if d.is_main:
                    journal.record("preempted", step=step, signal=preemption.received or "a peer's signal",
                                   saved_step=step if checkpointer.enabled else None, detail="clean exit")
                break
        checkpointer.close()
        status = "KILLED" if stopped else "FINISHED"
    except PeersLost as err:
        journal.record("preempted", step=state.step, signal=err.signal_name, saved_step=None,
                       detail=f"{err}: exiting without a checkpoint; a restart resumes from the last complete one")
        raise
    except Exception as err:
        journal.record("failure", step=state.step, cause=f"{type(err).__name__}: {err}")
        raise
    finally:
        preemption.restore()
        watchdog.stop()
        checkpointer.release()
        if task_evals is not None:
            task_evals.release()
        ledger.close()
        metrics.finish(status)
        if d.is_main and status != "FAILED":
            journal.record("finish", step=state.step, status=status)
    if d.is_main:
        print(f"run {run_dir.name}: step {state.step}, loss {last.get('loss', float('nan')):.4f}; outputs in {run_dir}",
              file=sys.stderr)
    return last if d.is_main else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description="One training rank.")
    parser.add_argument("config", help="training YAML")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        train(cfg)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except PeersLost as err:
        print(f"stopping without a checkpoint: {err}", file=sys.stderr)
        return 128 + signal.Signals[err.signal_name]
    return 0


if __name__ == "__main__":
    sys.exit(main())
