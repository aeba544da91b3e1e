"""The training loop, top to bottom: FSDP2 over an MPT model, fed by the streaming loader.

One process per device; start them with ``python -m training.launch CONFIG`` (which validates the
config and runs torch.distributed.run), or under torchrun directly, or as a single plain process
(``python -m training.train CONFIG``) for debugging. Process groups, devices and the sharded model
are set up by training.distributed; the data by training.data; checkpoints, the watchdog, the journal
and metrics are in training.run.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from shards.config import ConfigError

from .config import TrainConfig, accumulation_steps, check_world_size, load_config
from .data.by_source import SourceTags, metric_name, mixture_names, per_source
from .data.loader import StreamingLoader, TokenBatches, as_tensors, model_inputs, tokens_consumed
from .data.resolve import make_batches, resolve_data, resolve_exclusions, resolve_source_tags
from .data.sources import IGNORE_INDEX, TOKEN_SOURCES, Source, check_sources
from .distributed import (Distributed, broadcast_from_main, build_model, compute_dtype, grad_norm_and_clip,
                          init_distributed)
from .eval.in_training import TaskEvaluator
from .model import MPT
from .optim import build_optimizer, lr_multiplier, set_lr
from .run.checkpoint import Checkpointer, describe_data
from .run.gate import BehindBand, LossGate, exit_status
from .run.guard import NonFiniteGuard
from .run.journal import Journal, RunObserver, next_attempt, restart_attempt
from .run.ledger import SampleLedger
from .run.spike import SpikePolicy
from .run.metrics import MetricsLogger, memory_gb, peak_flops
from .run.watchdog import FaultPlan, PeersLost, Preemption, Watchdog, connect_store
from .weights.init_from import load_weights


@torch.no_grad()
def evaluate(model: nn.Module, batches: TokenBatches, d: Distributed,
             tags: SourceTags | None = None) -> tuple[float, dict[str, dict] | None]:
    """Mean next-token loss over the eval batches (every token counts once, on any number of ranks) and, with
    ``tags`` (eval.loss_by_source), ``{source: {"loss", "tokens"}}`` of each source's tokens."""
    model.eval()
    sources = 0 if tags is None else len(tags.names)
    totals = torch.zeros(2 + 2 * sources, dtype=torch.float64, device=d.device)  # loss, tokens, then per source
    for batch in map(as_tensors, batches):
        input_ids, sequence_ids, labels = model_inputs(batch, d.device)
        logits = model(input_ids, sequence_ids=sequence_ids)
        losses = MPT.token_losses(logits, labels, ignore_index=IGNORE_INDEX).double()
        counted = labels != IGNORE_INDEX
        totals[0] += losses.sum()
        totals[1] += counted.sum()
        if sources:
            number = batch[TOKEN_SOURCES].to(d.device)
            known = counted & (number >= 0)
            totals[2:2 + sources] += torch.bincount(number[known], losses[known], minlength=sources)
            totals[2 + sources:] += torch.bincount(number[known], minlength=sources)
    dist.all_reduce(totals)
    model.train()
    values = totals.tolist()
    by_source = None if tags is None else per_source(values[2:2 + sources], values[2 + sources:], tags.names)
    return (values[0] / values[1] if values[1] else math.nan), by_source


def prepare_run_dir(cfg: TrainConfig, d: Distributed) -> Path:
    """``<output_dir>/<name>``; rank 0 picks the default name (a timestamp) for every rank."""
    name = cfg.name or (time.strftime("%Y%m%d-%H%M%S") if d.is_main else None)
    name = broadcast_from_main(name, d)
    run_dir = Path(cfg.output_dir) / name
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    return run_dir


def run_info(cfg: TrainConfig, d: Distributed, run_dir: Path, num_params: int, seq_len: int,
             train_sources: list[Source], eval_sources: list[Source] | None) -> dict:
    """What ``run_info.json`` records: where the run ran, on what data, with which config."""
    return {
        "name": run_dir.name, "world_size": d.world_size, "device": str(d.device),
        "mesh": dict(zip(d.mesh.mesh_dim_names, d.mesh.shape)), "torch": torch.__version__,
        "num_params": num_params, "seq_len": seq_len,
        "data": {"train": [s.describe() for s in train_sources],
                 "eval": [s.describe() for s in eval_sources] if eval_sources else None},
        "config": cfg.to_dict(),
    }


def train(cfg: TrainConfig) -> dict:
    """Run the configured training; returns rank 0's final metrics (empty on other ranks).

    Whatever is started is stopped by ``cleanup``, in reverse order, however the run ends."""
    with contextlib.ExitStack() as cleanup:
        d = init_distributed(cfg.parallel)
        cleanup.callback(dist.destroy_process_group)
        # The run's logs close after the watchdog stops: finishing them (uploads) is not a step to time.
        logs = cleanup.enter_context(contextlib.ExitStack())
        check_world_size(cfg, d.world_size, d.local_world_size)
        torch.manual_seed(cfg.train.seed)
        run_dir = prepare_run_dir(cfg, d)

        # Data: versions pinned once, the same global order on every rank, data.exclude_docs traced once.
        train_sources, eval_sources = resolve_data(cfg, d)
        exclusions = resolve_exclusions(cfg.data, train_sources, run_dir, d)
        seq_len = check_sources(train_sources)
        mixture = mixture_names(train_sources)
        warmup = cfg.train.seq_len_warmup
        if warmup.steps and warmup.start >= seq_len:
            raise ConfigError(f"train.seq_len_warmup.start ({warmup.start}) must be below the data's seq_len ({seq_len})")
        micro_batch = cfg.train.micro_batch_size
        accumulation = accumulation_steps(cfg.train.global_batch_size, micro_batch, d.world_size)
        train_loader = StreamingLoader(
            make_batches(train_sources, cfg.data, cfg.train.global_batch_size, micro_batch, d, cfg.data.shuffle,
                         exclusions=exclusions, scheduled=True),
            cfg.data.num_workers, cfg.data.prefetch_batches, from_step=cfg.data.from_step,
        )
        eval_batches, tags = None, None
        if eval_sources is not None:
            eval_accumulation = accumulation_steps(cfg.eval_global_batch_size, micro_batch, d.world_size, "eval")
            eval_micro = cfg.eval.batches * eval_accumulation
            tags = resolve_source_tags(cfg, eval_sources, d)
            eval_batches = make_batches(eval_sources, cfg.data, cfg.eval_global_batch_size, micro_batch, d,
                                        shuffle=False, num_micro_batches=eval_micro, tags=tags)

        # Model and optimizer.
        model_cfg = cfg.model.build()
        model = build_model(model_cfg, cfg.parallel, d)
        optimizer = build_optimizer(model, cfg.optimizer)

        # Fault tolerance: journal, hang watchdog and heartbeats, then resume from the newest complete checkpoint.
        # A new attempt number for every start of the ranks (a torchrun restart or the same command again).
        journal = Journal(run_dir, d.rank, broadcast_from_main(next_attempt(run_dir) if d.is_main else None, d))
        faults = FaultPlan.from_env(run_dir / "faults", d.rank, journal)
        checkpointer = Checkpointer(cfg, d.rank, d.world_size, journal, faults, train_sources, seq_len)
        cleanup.callback(checkpointer.release)
        if d.is_main:
            if journal.attempt > 0:
                journal.record_restart(relaunch=restart_attempt() == 0)
            journal.record("start", world_size=d.world_size, max_steps=cfg.train.max_steps,
                           data=describe_data(train_sources), checkpoints=checkpointer.enabled and checkpointer.root)
        watchdog = Watchdog(cfg.watchdog, d.rank, d.world_size, run_dir, journal, connect_store(journal.attempt))
        watchdog.start()
        cleanup.callback(watchdog.stop)
        from_main = functools.partial(broadcast_from_main, dist_info=d)
        state = checkpointer.resume(model, optimizer, train_loader)
        if state.step < cfg.data.from_step:  # launch checks this first; training.train may be started directly
            raise ConfigError(f"data.from_step={cfg.data.from_step} goes on from the run's checkpoint of that step; "
                              f"the newest is of step {state.step}: train the earlier data phase first")
        if state.step == 0 and cfg.init_from is not None:  # a checkpoint of this run wins over init_from
            source = load_weights(model, cfg.init_from, model_cfg, d.is_main, from_main)
            if d.is_main:
                journal.record("init_from", source=source.describe())
        if d.is_main and exclusions is not None:  # the list in force from the next step on
            journal.record("exclude_docs", step=state.step, document_attention=model_cfg.attn_uses_sequence_id,
                           **exclusions.describe())

        spikes = SpikePolicy(cfg.spike, journal, d.is_main)  # its baseline and rollbacks continue from the checkpoint
        spikes.load_state_dict(state.spike)

        # Logging: rank 0 only; every rank writes its own sample ledger when asked.
        status = "FAILED"  # until the loop ends; read when the logs close
        metrics = MetricsLogger(cfg.logging, run_dir, Path(cfg.output_dir), run_dir.name, cfg.train.max_steps,
                                state.step, enabled=d.is_main)

        @logs.callback
        def finish() -> None:
            metrics.finish(status)
            if d.is_main and status != "FAILED":
                journal.record("finish", step=state.step, status=status)

        ledger_path = run_dir / "ledger" / f"rank-{d.rank:05d}.jsonl" if cfg.logging.sample_ledger else None
        ledger = SampleLedger(ledger_path, journal.attempt,
                              train_sources if cfg.logging.ledger_document_losses else None)
        logs.callback(ledger.close)
        ledger.rollbacks = len(spikes.rollbacks)
        info = run_info(cfg, d, run_dir, model_cfg.num_params(), seq_len, train_sources, eval_sources)
        if d.is_main:
            (run_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
        metrics.log_params({"config": cfg.to_dict(), "data": info["data"], "world_size": d.world_size,
                            "num_params": info["num_params"]})
        task_evals = None
        if cfg.eval.tasks is not None:
            task_evals = TaskEvaluator(cfg, model_cfg, d.rank, d.world_size, d.device,
                                       compute_dtype(cfg.parallel, d.device), run_dir, metrics, from_main)
            logs.callback(task_evals.release)

        flops_per_token = model_cfg.flops_per_token(seq_len)
        peak = peak_flops(d.device, cfg.logging.peak_flops_per_device)
        last: dict = {}
        observer = RunObserver(cfg.journal, journal, judge_loss=not spikes.active)
        guard = NonFiniteGuard(cfg.train.max_skipped_steps, cfg.train.skip_steps, journal, d.is_main)
        gate = LossGate(cfg.gate, cfg.train.max_steps, cfg.logging.every_steps, journal) if cfg.gate.band else None
        behind = None  # the gate's reason to stop, once it has one
        preemption = Preemption(watchdog, cfg.checkpoint.alive_check_s, d.world_size)
        preemption.install()
        cleanup.callback(preemption.restore)
        stopped = False
        try:
            batches = iter(train_loader)
            interval_start, interval_tokens = time.perf_counter(), 0
            step = state.step
            while step < cfg.train.max_steps:
                step += 1
                lr = set_lr(optimizer, lr_multiplier(step, cfg.schedule, cfg.train.max_steps) * spikes.lr_scale(step))
                loss_sum = torch.zeros((), device=d.device)
                length = warmup.length(step, seq_len)  # seq_len, but shorter during sequence-length warmup
                for _ in range(accumulation):
                    batch = next(batches)
                    ledger.record(step, batch)
                    input_ids, sequence_ids, labels = model_inputs(batch, d.device)
                    if length < seq_len:  # each sample's first `length` tokens; the rest is dropped
                        input_ids, labels = input_ids[:, :length], labels[:, :length]
                        sequence_ids = None if sequence_ids is None else sequence_ids[:, :length]
                    logits = model(input_ids, sequence_ids=sequence_ids)
                    if ledger.document_losses or exclusions is not None:
                        # The same mean, from per-token losses the ledger splits by document; a micro-batch whose
                        # every label is ignored (excluded documents only) adds 0 rather than NaN.
                        token_losses = MPT.token_losses(logits, labels, ignore_index=IGNORE_INDEX)
                        loss = token_losses.sum() / (labels != IGNORE_INDEX).sum().clamp(min=1)
                        ledger.record_losses(token_losses, labels)
                    else:
                        loss = MPT.loss(logits, labels, ignore_index=IGNORE_INDEX)
                    (loss / accumulation).backward()
                    loss_sum += loss.detach()
                faults.after_backward(step, model.parameters())
                grad_norm = grad_norm_and_clip(model, cfg.train.grad_clip)
                dist.all_reduce(loss_sum)  # the guard needs every rank's loss; the logged loss is this one
                spike = spikes.observe(step, loss_sum, accumulation * d.world_size, grad_norm)  # a sync unless log
                if spike is not None and cfg.spike.action == "rollback":
                    optimizer.zero_grad(set_to_none=True)
                    guard.settle()
                    batches.close()  # its loader workers stop; the next one starts after the skipped samples
                    state = spikes.roll_back(spike, checkpointer, model, optimizer, train_loader, faults)
                    step, batches = state.step, iter(train_loader)
                    ledger.rollbacks = len(spikes.rollbacks)
                    watchdog.step_done(step)
                    interval_start, interval_tokens = time.perf_counter(), 0
                    continue
                optimizer.step(skip=guard.verdict(step, loss_sum, grad_norm, spike=spike is not None))  # on the device
                optimizer.zero_grad(set_to_none=True)
                state.step, state.loader, state.spike = step, train_loader.state_dict(), spikes.state_dict()
                interval_tokens += cfg.train.global_batch_size * length
                faults.at_step(step)

                is_last = step == cfg.train.max_steps
                if step % cfg.logging.every_steps == 0 or is_last:
                    guard.settle()  # the host reads the loss here anyway
                    elapsed = time.perf_counter() - interval_start
                    tokens_per_s = interval_tokens / elapsed  # tokens trained on
                    last = {
                        "loss": loss_sum.item() / (accumulation * d.world_size),
                        "lr": lr,
                        "grad_norm": grad_norm.item(),
                        "skipped_steps": guard.total,
                        "tokens_per_s": tokens_per_s,
                        "mfu": flops_per_token * tokens_per_s / (peak * d.world_size) if peak else None,
                        "memory_gb": memory_gb(d.device),
                        "samples": state.loader["position"],
                        "tokens": tokens_consumed(state.loader, seq_len),  # consumed from the data, all phases
                        **({"seq_len": length} if warmup.steps else {}),
                    }
                    if len(train_sources) > 1:  # what each dataset or source of the mixture has supplied so far
                        drawn = train_loader.dataset.order.draws_before(state.loader["position"])
                        last.update({f"tokens/{name}": int(n) * seq_len for name, n in zip(mixture, drawn.tolist())})
                    metrics.log(step, last)
                    metrics.advance(step, last["loss"], lr, tokens_per_s)
                    if d.is_main and math.isfinite(last["loss"]):  # a skipped step's loss judges nothing
                        observer.observe(step, last["loss"], tokens_per_s)
                        if gate is not None:
                            gate.observe(step, last["loss"])
                    interval_start, interval_tokens = time.perf_counter(), 0
                if cfg.eval.every_steps and (step % cfg.eval.every_steps == 0 or is_last):
                    evaluated = {}
                    if eval_batches is not None:
                        evaluated["eval_loss"], by_source = evaluate(model, eval_batches, d, tags)
                        for name, source in (by_source or {}).items():
                            evaluated[f"eval_loss/{metric_name(name)}"] = source["loss"]
                            evaluated[f"eval_tokens/{metric_name(name)}"] = source["tokens"]
                    if task_evals is not None:
                        evaluated.update(task_evals.run(model, step))
                    last.update(evaluated)
                    metrics.log(step, evaluated, echo=True)
                    if gate is not None:  # rank 0 judges; every rank learns whether to stop
                        behind = from_main(gate.judge(step) if d.is_main else None)
                    interval_start = time.perf_counter()  # evaluation time is not training throughput
                stop = preemption.should_stop()
                if stop or behind or is_last or checkpointer.due(step):
                    checkpointer.save(state, model, optimizer, "preemption" if stop else "final" if is_last
                                      else "gate" if behind else "periodic")
                checkpointer.poll()
                watchdog.step_done(step)
                if behind and not is_last:
                    stopped = True
                    if d.is_main:
                        journal.record("gate_stop", step=step, reason=behind)
                    break
                if stop:
                    stopped = True
                    if d.is_main:
                        journal.record("preempted", step=step, signal=preemption.received or "a peer's signal",
                                       saved_step=step if checkpointer.enabled else None, detail="clean exit")
                    break
            guard.settle()
            checkpointer.close()
            status = "KILLED" if stopped else "FINISHED"
        except PeersLost as err:
            journal.record("preempted", step=state.step, signal=err.signal_name, saved_step=None,
                           detail=f"{err}: exiting without a checkpoint; a restart resumes from the last complete one")
            raise
        except Exception as err:
            journal.record("failure", step=state.step, cause=f"{type(err).__name__}: {err}")
            raise
    if d.is_main:
        print(f"run {run_dir.name}: step {state.step}, loss {last.get('loss', float('nan')):.4f}; outputs in {run_dir}",
              file=sys.stderr)
    if stopped and behind:
        raise BehindBand(behind)
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
    except BehindBand as err:
        print(f"stopped by the loss gate after a checkpoint: {err}", file=sys.stderr)
        return exit_status(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
