"""Pre-flight checklist: what to know before spending a cluster on a training config.

    python -m training.preflight configs/run.yaml --nproc-per-node 8 --nnodes 4 --price 2.5 \\
        --on-call "ana@example.com" [key.path=value ...]

Each item is PASS, WARN or FAIL with its reason; the exit status is 1 when any item FAILs:

  config          the YAML loads (every key and type) and its batch sizes split over the ranks
  run identity    the run has a name (not a timestamp); no on-call contact (--on-call or $KILN_ON_CALL) WARNs
  data            every dataset resolves to a complete version and the sample lengths agree
  vocabulary      the tokenizer's vocabulary (from the manifest) fits the model's embedding, and samples fit
                  max_seq_len
  shard hashes    a few shards per dataset (first, last, random) match the sizes and hashes in index.json
  tokens          the datasets hold at least the tokens the run will read (max_steps x global batch x length,
                  split by proportion); repeating data FAILs unless --allow-repeat
  checkpoints     the checkpoint folder (checkpoint.dir, else <output_dir>/<name>/checkpoints) works: a small
                  sharded checkpoint is saved there as training saves one (DCP, manifest), verified, loaded
                  back, compared and removed
  disk            free space for the shard cache (remote data) and one checkpoint (fp32 weights + optimizer)
  trackers        MLflow's store is writable or its server answers; W&B's host answers
  training steps  a few optimizer steps on one repeated micro-batch, on this machine's device, lower the loss
                  (not run when the data or vocabulary check failed)
  throughput      the steps' speed, scaled linearly to the planned ranks: time, GPU-hours and cost to finish
  checkpoint      checkpoint.every_steps within [0.5x, 2x] the Young/Daly interval sqrt(2 x save x job MTBF),
  interval        from the blocking save time (--save-seconds, this run's journal, or estimated from the size)
                  and the failure rate (--failure-rate per 1,000 GPU-days); WARN outside
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from shards import storage
from shards.config import ConfigError
from shards.mds import TOKENS_COLUMN, MDSReader, ShardCorruptError
from training.config import TrainConfig, check_world_size, load_config
from training.data.cache import default_cache_root
from training.data.loader import next_token_labels
from training.data.order import build_order, schedule_phases
from training.data.resolve import resolve_sources
from training.data.sources import IGNORE_INDEX, SEQUENCE_IDS_COLUMN, check_sources
from training.distributed import build_model, grad_norm_and_clip, init_distributed
from training.hardware import GIB, gpu_for_device_name
from training.model import MPT
from training.optim import build_optimizer
from training.planning.memory import OPTIMIZER_STATE_BYTES, MemoryRequest, estimate
from training.planning.plan import FAILURES_PER_1000_GPU_DAYS, job_mtbf_seconds, save_time, young_daly_interval
from training.run import checkpoint
from training.run.journal import JOURNAL_NAME, blocking_save_seconds, read_events

Status = Literal["PASS", "WARN", "FAIL"]
ON_CALL_ENV = "KILN_ON_CALL"
HTTP_TIMEOUT_S = 5.0


@dataclass
class Check:
    name: str
    status: Status
    reason: str


@dataclass
class PreflightOptions:
    nnodes: int = 1
    nproc_per_node: int = 1
    steps: int = 5  # optimizer steps on the repeated batch; 0 skips the training and throughput checks
    verify_shards: int = 3  # per dataset; 0 verifies every shard
    price_per_gpu_hour: float | None = None
    on_call: str | None = None  # default: $KILN_ON_CALL
    allow_repeat: bool = False
    failure_rate: float = FAILURES_PER_1000_GPU_DAYS  # failures per 1,000 GPU-days
    save_seconds: float | None = None  # blocking time of one save; default: this run's journal, else estimated

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


@dataclass
class Context:
    """What earlier checks found and later ones need."""

    cfg: TrainConfig
    options: PreflightOptions
    sources: list = field(default_factory=list)  # training.data.sources.Source, once the data check passed
    seq_len: int | None = None
    step_seconds: float | None = None
    device_name: str | None = None


# ------------------------------------------------------------------------------------------ the checks


def check_identity(ctx: Context) -> Check:
    """A missing name FAILs (a relaunch could not find the run's checkpoints); a missing on-call contact
    is an organisational gap, not a broken run, so it only WARNs."""
    cfg = ctx.cfg
    problems = [] if cfg.name else ["name is unset (the run would be named by a timestamp)"]
    gaps = []
    on_call = ctx.options.on_call or os.environ.get(ON_CALL_ENV)
    if not on_call:
        gaps.append(f"no on-call contact (--on-call or ${ON_CALL_ENV})")
    if cfg.name and storage.exists(storage.join(cfg.output_dir, cfg.name, "metrics.jsonl")):
        gaps.append(f"run {cfg.name!r} already wrote metrics in {storage.join(cfg.output_dir, cfg.name)}: "
                    "they would be appended to; pick a new name")
    if problems or gaps:
        return Check("run identity", "FAIL" if problems else "WARN", "; ".join(problems + gaps))
    return Check("run identity", "PASS", f"run {cfg.name!r}, on call: {on_call}")


def check_data(ctx: Context) -> Check:
    try:
        sources, _ = resolve_sources(ctx.cfg, check_model=False)
        ctx.seq_len = check_sources(sources)
    except (ValueError, OSError, ConfigError) as err:
        return Check("data", "FAIL", f"{type(err).__name__}: {err}")
    ctx.sources = sources
    described = ", ".join(f"{s.path} (v={s.version}, {s.num_samples:,} samples)" if s.version is not None
                          else f"{s.path} ({s.num_samples:,} samples, no manifest)" for s in sources)
    return Check("data", "PASS", f"{described}; {ctx.seq_len} tokens per sample")


def check_vocabulary(ctx: Context) -> Check:
    model = ctx.cfg.model.build()
    if ctx.seq_len > model.max_seq_len:
        return Check("vocabulary", "FAIL", f"samples hold {ctx.seq_len} tokens but model max_seq_len is "
                                           f"{model.max_seq_len}")
    unchecked = []
    for source in ctx.sources:
        if source.vocab_size is not None:
            if source.vocab_size > model.vocab_size:
                return Check("vocabulary", "FAIL", f"{source.path}: the tokenizer has {source.vocab_size} tokens "
                                                   f"but the model's vocab_size is {model.vocab_size}")
            continue
        # A plain MDS folder has no manifest: look at the ids of its first shard instead.
        reader = MDSReader(source.url)
        highest = max(int(np.max(sample[TOKENS_COLUMN])) for sample in reader.read_shard(0))
        if highest >= model.vocab_size:
            return Check("vocabulary", "FAIL", f"{source.path}: token id {highest} has no embedding row "
                                               f"(vocab_size {model.vocab_size})")
        unchecked.append(source.path)
    reason = (f"tokenizer vocabularies {sorted({s.vocab_size for s in ctx.sources if s.vocab_size})} fit "
              f"vocab_size {model.vocab_size} ({model.padded_vocab_size} embedding rows)")
    if unchecked:
        return Check("vocabulary", "WARN", f"no manifest for {unchecked}: only their first shard's ids were "
                                           f"checked; {reason}")
    return Check("vocabulary", "PASS", reason)


def check_shards(ctx: Context) -> Check:
    rng = np.random.default_rng(0)
    verified, unhashed = 0, []
    for source in ctx.sources:
        reader = MDSReader(source.url)
        picks = _shards_to_verify(reader.num_shards, ctx.options.verify_shards, rng)
        if not all(entry.get("hashes") for entry in reader.entries):
            unhashed.append(source.path)
        for index in picks:
            try:
                reader.verify(index)
            except (ShardCorruptError, FileNotFoundError, OSError) as err:
                return Check("shard hashes", "FAIL", f"{source.path}: {err}")
            verified += 1
    if unhashed:
        return Check("shard hashes", "WARN", f"{verified} shard(s) match their sizes, but {unhashed} carry no hashes")
    return Check("shard hashes", "PASS", f"{verified} shard(s) match the sizes and hashes in their index.json")


def _shards_to_verify(count: int, wanted: int, rng: np.random.Generator) -> list[int]:
    """The first and last shard (where writers go wrong) and random ones between; every shard when wanted is 0."""
    if wanted == 0 or wanted >= count:
        return list(range(count))
    ends = [0, count - 1][:wanted]
    middle = rng.choice(np.arange(1, count - 1), size=wanted - len(ends), replace=False).tolist()
    return sorted(ends + middle)


def check_tokens(ctx: Context) -> Check:
    """What each dataset supplies to the run's positions, through the global order (data.schedule included)."""
    cfg = ctx.cfg
    positions = (cfg.train.max_steps - cfg.data.from_step) * cfg.train.global_batch_size
    planned = positions * ctx.seq_len
    order = build_order(ctx.sources, cfg.data.seed, cfg.data.shuffle, cfg.data.shuffle_window_shards,
                        schedule_phases(cfg.data.schedule, cfg.train.global_batch_size, cfg.data.from_step))
    short = []
    for source, draws in zip(ctx.sources, order.draws_before(positions).tolist()):
        needed = draws * ctx.seq_len
        held = source.drawable * ctx.seq_len
        if needed > held:
            short.append(f"{source.path} supplies {needed:,.0f} tokens but holds {held:,} ({needed / held:.2f} epochs)")
    available = sum(s.drawable for s in ctx.sources) * ctx.seq_len
    if short:
        status: Status = "WARN" if ctx.options.allow_repeat else "FAIL"
        return Check("tokens", status, f"the run reads {planned:,} tokens: " + "; ".join(short))
    return Check("tokens", "PASS", f"the run reads {planned:,} of {available:,} tokens ({planned / available:.1%})")


def checkpoint_location(cfg: TrainConfig) -> str:
    """Where checkpoints go: checkpoint.dir, else <output_dir>/<name>/checkpoints."""
    return checkpoint.checkpoint_root(cfg if cfg.name else dataclasses.replace(cfg, name="preflight"))


def check_checkpoint_location(location: str) -> Check:
    """Save a small checkpoint at `location` the way training does (DCP and a manifest), check it is
    complete, load it back and compare; leave nothing behind."""
    created = []
    probe = storage.join(location, f".preflight-{uuid.uuid4().hex[:12]}")
    state = {"step": torch.tensor(7), "weights": torch.randn(32, 32, generator=torch.Generator().manual_seed(0))}
    loaded = {name: torch.zeros_like(tensor) for name, tensor in state.items()}
    try:
        if storage.is_local(location):
            missing = Path(storage.open_fs(location)[1])
            while not missing.exists():
                created.append(missing)
                missing = missing.parent
        with warnings.catch_warnings():  # DCP warns that it runs without a process group: intended here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save(state, storage_writer=checkpoint.writer(probe), no_dist=True)
            checkpoint.write_manifest(probe, {"step": 0})
            problem = checkpoint.incomplete_reason(probe)
            dcp.load(loaded, storage_reader=checkpoint.reader(probe), no_dist=True)
        checkpoint.remove(probe)
    except (OSError, CheckpointException) as err:
        if isinstance(err, CheckpointException):  # DCP wraps (exception, traceback) of each failed rank
            err = next(iter(err.failures.values()))[0]
        return Check("checkpoints", "FAIL", f"cannot save and load a checkpoint in {location}: "
                                            f"{type(err).__name__}: {err}")
    finally:
        for folder in created:  # innermost first; only folders this check made, and only when empty
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
    if problem is not None:
        return Check("checkpoints", "FAIL", f"a checkpoint saved in {location} is not complete: {problem}")
    if not all(torch.equal(state[k], loaded[k]) for k in state):
        return Check("checkpoints", "FAIL", f"a checkpoint saved in {location} read back different")
    return Check("checkpoints", "PASS", f"saved, verified, loaded and compared a sharded checkpoint in {location}")


def check_disk(ctx: Context) -> Check:
    cfg = ctx.cfg
    params = cfg.model.build().num_params()
    needs: dict[str, int] = {}  # folder -> bytes
    checkpoint_bytes = params * (4 + OPTIMIZER_STATE_BYTES[cfg.optimizer.name])
    location = checkpoint_location(cfg)
    lines = []
    if storage.is_local(location):
        needs[location] = checkpoint_bytes
        lines.append(f"one checkpoint {checkpoint_bytes / 1e9:.2f} GB in {location}")
    else:
        lines.append(f"checkpoints go to {location} (object store, not measured)")
    remote = [s for s in ctx.sources if not storage.is_local(s.url)]
    if remote:
        shard_bytes = sum(entry["raw_data"]["bytes"] for s in remote for entry in MDSReader(s.url).entries)
        cache = cfg.data.cache_dir or default_cache_root()
        cache_bytes = min(int(cfg.data.cache_limit_gb * 1e9), shard_bytes)
        needs[cache] = needs.get(cache, 0) + cache_bytes
        lines.append(f"shard cache {cache_bytes / 1e9:.2f} GB in {cache}")
    by_device: dict[int, tuple[str, int]] = {}
    for folder, size in needs.items():
        existing = _existing_parent(folder)
        device = os.stat(existing).st_dev
        shown, total = by_device.get(device, (existing, 0))
        by_device[device] = (shown, total + size)
    for existing, total in by_device.values():
        free = shutil.disk_usage(existing).free
        if free < total:
            return Check("disk", "FAIL", f"{existing}: {free / 1e9:.2f} GB free, {total / 1e9:.2f} GB needed "
                                         f"({'; '.join(lines)})")
    return Check("disk", "PASS", "; ".join(lines) + " fit")


def _existing_parent(folder: str) -> str:
    path = Path(folder).resolve()
    while not path.exists():
        path = path.parent
    return str(path)


def check_trackers(ctx: Context) -> Check:
    log = ctx.cfg.logging
    found, problems = [], []
    if log.mlflow:
        if importlib.util.find_spec("mlflow") is None:
            problems.append("logging.mlflow is true but mlflow is not installed")
        else:
            uri = log.mlflow_tracking_uri or f"sqlite:///{Path(ctx.cfg.output_dir).resolve() / 'mlflow.db'}"
            problem = _mlflow_problem(uri)
            if problem:
                problems.append(problem)
            else:
                found.append(f"MLflow at {uri}")
    if log.wandb_project:
        if importlib.util.find_spec("wandb") is None:
            problems.append("logging.wandb_project is set but wandb is not installed")
        elif os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            found.append(f"W&B in {os.environ['WANDB_MODE']} mode")
        else:
            host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
            problem = _http_problem(host)
            if problem:
                problems.append(f"W&B: {problem}")
            else:
                found.append(f"W&B at {host}")
    if problems:
        return Check("trackers", "FAIL", "; ".join(problems))
    if not found:
        return Check("trackers", "WARN", "no experiment tracker: logging.mlflow is false and no wandb_project")
    return Check("trackers", "PASS", ", ".join(found) + " reachable")


def _mlflow_problem(uri: str) -> str | None:
    if uri.startswith(("http://", "https://")):
        problem = _http_problem(uri.rstrip("/") + "/health")
        return f"MLflow server {uri}: {problem}" if problem else None
    if uri.startswith("sqlite:///") or uri.startswith("file:") or "://" not in uri:
        path = uri.removeprefix("sqlite:///").removeprefix("file://").removeprefix("file:")
        folder = os.path.dirname(path) if uri.startswith("sqlite:") else path
        parent = _existing_parent(folder or ".")
        if not os.access(parent, os.W_OK):
            return f"MLflow store {uri}: {parent} is not writable"
        return None
    return None  # another store (a database URL): the tracker reports problems itself when the run starts


def _http_problem(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return None if response.status < 500 else f"{url} answered HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return None if err.code < 500 else f"{url} answered HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return f"{url} unreachable: {getattr(err, 'reason', err)}"


def check_training_steps(ctx: Context) -> Check:
    """A few optimizer steps on the first micro-batch, repeated: the loss must fall."""
    cfg, steps = ctx.cfg, ctx.options.steps
    model_cfg = cfg.model.build()
    too_big = _too_big_for_one_device(cfg, ctx.seq_len)
    if too_big:
        return Check("training steps", "WARN", f"not run: {too_big}")
    reader = MDSReader(ctx.sources[0].url)
    samples = [reader[i] for i in range(min(cfg.train.micro_batch_size, len(reader)))]
    input_ids = torch.from_numpy(np.stack([s[TOKENS_COLUMN] for s in samples]).astype(np.int64))
    sequence_ids = None
    if SEQUENCE_IDS_COLUMN in samples[0]:
        sequence_ids = torch.from_numpy(np.stack([s[SEQUENCE_IDS_COLUMN] for s in samples]).astype(np.int64))

    d = init_distributed(cfg.parallel)
    try:
        torch.manual_seed(cfg.train.seed)
        model = build_model(model_cfg, cfg.parallel, d)
        optimizer = build_optimizer(model, cfg.optimizer)  # at the peak learning rate, no warmup
        input_ids = input_ids.to(d.device)
        sequence_ids = sequence_ids.to(d.device) if sequence_ids is not None else None
        labels = next_token_labels(input_ids, sequence_ids)
        losses, seconds = [], []
        for _ in range(steps):
            start = time.perf_counter()
            loss = MPT.loss(model(input_ids, sequence_ids=sequence_ids), labels, ignore_index=IGNORE_INDEX)
            loss.backward()
            grad_norm_and_clip(model, cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())  # synchronises with the device
            seconds.append(time.perf_counter() - start)
        ctx.device_name = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else "cpu"
    finally:
        dist.destroy_process_group()
    trace = " -> ".join(f"{value:.3f}" for value in losses)
    if not all(np.isfinite(losses)):
        return Check("training steps", "FAIL", f"the loss is not finite: {trace}")
    if losses[-1] >= losses[0]:
        return Check("training steps", "FAIL", f"the loss did not fall on a repeated batch: {trace} "
                                               "(learning rate too high or too low? broken labels?)")
    ctx.step_seconds = float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
    return Check("training steps", "PASS", f"loss on a repeated micro-batch of {len(samples)}: {trace}")


def _too_big_for_one_device(cfg: TrainConfig, seq_len: int) -> str | None:
    """Why one process on this machine cannot hold the model and a micro-batch (memory planner), or None."""
    on_gpu = cfg.parallel.device == "cuda" or (cfg.parallel.device == "auto" and torch.cuda.is_available())
    if on_gpu:
        memory = torch.cuda.get_device_properties(0).total_memory
        bf16 = cfg.parallel.mixed_precision != "fp32"
    else:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        bf16 = cfg.parallel.mixed_precision == "bf16"
    request = MemoryRequest(model=cfg.model.build(), seq_len=seq_len, micro_batch=cfg.train.micro_batch_size,
                            gpu_memory_bytes=memory, precision="bf16" if bf16 else "fp32",
                            optimizer=cfg.optimizer.name,
                            activation_checkpointing=cfg.parallel.activation_checkpointing)
    result = estimate(request)
    if result.fits:
        return None
    where = "this GPU" if on_gpu else "this machine's memory"
    return (f"the model and a micro-batch need about {result.total_bytes / GIB:.0f} GiB, more than {where} "
            f"({memory / GIB:.0f} GiB) holds in one process; try a short real launch instead")


def check_throughput(ctx: Context) -> Check:
    cfg, options = ctx.cfg, ctx.options
    if ctx.step_seconds is None:
        return Check("throughput", "WARN", "not measured: the training steps did not run")
    model_cfg = cfg.model.build()
    micro_tokens = cfg.train.micro_batch_size * ctx.seq_len
    rank_tokens_per_s = micro_tokens / ctx.step_seconds
    planned = cfg.train.max_steps * cfg.train.global_batch_size * ctx.seq_len
    world = options.world_size
    hours = planned / (rank_tokens_per_s * world) / 3600
    parts = [f"{rank_tokens_per_s:,.0f} tokens/s on one {ctx.device_name}",
             f"{hours:,.2f} h to finish on {world} ranks (linear scaling assumed)",
             f"{hours * world:,.1f} device-hours"]
    gpu = gpu_for_device_name(ctx.device_name) if ctx.device_name != "cpu" else None
    if gpu is not None:
        mfu = model_cfg.flops_per_token(ctx.seq_len) * rank_tokens_per_s / gpu.peak_flops
        parts.append(f"MFU {mfu:.2f} of {gpu.name}'s {gpu.bf16_tflops:g} TFLOP/s")
    if options.price_per_gpu_hour is not None:
        parts.append(f"${hours * world * options.price_per_gpu_hour:,.0f} at ${options.price_per_gpu_hour:g}/hour")
    return Check("throughput", "PASS", "; ".join(parts))


INTERVAL_TOLERANCE = 2.0  # checkpoint.every_steps may be up to 2x off the optimum either way


def interval_verdict(every_steps: int, optimal_steps: float) -> Status:
    """PASS when every_steps is within [0.5x, 2x] the optimal interval, else WARN (also when it is 0)."""
    if every_steps and optimal_steps / INTERVAL_TOLERANCE <= every_steps <= optimal_steps * INTERVAL_TOLERANCE:
        return "PASS"
    return "WARN"


def check_checkpoint_interval(ctx: Context) -> Check:
    """checkpoint.every_steps against the Young/Daly interval on the planned ranks (training.planning.plan)."""
    cfg, options = ctx.cfg, ctx.options
    if ctx.step_seconds is None:
        return Check("checkpoint interval", "WARN", "not measured: the training steps did not run")
    step_seconds = ctx.step_seconds * cfg.train.global_batch_size / (cfg.train.micro_batch_size * options.world_size)
    journal = Path(cfg.output_dir) / cfg.name / JOURNAL_NAME if cfg.name else None
    earlier = journal if journal is not None and blocking_save_seconds(read_events(journal)) is not None else None
    save, source = save_time(options.save_seconds, earlier, cfg.model.build().num_params())
    mtbf = job_mtbf_seconds(options.failure_rate, options.world_size)
    interval = young_daly_interval(save, mtbf)
    optimal = interval / step_seconds
    every = cfg.checkpoint.every_steps
    basis = (f"Young/Daly: sqrt(2 x {save:,.1f} s save ({source}) x {mtbf / 3600:,.1f} h job MTBF) = "
             f"{interval / 60:,.1f} min = {optimal:,.0f} steps of {step_seconds:.3g} s")
    status = interval_verdict(every, optimal)
    if not every:
        return Check("checkpoint interval", "WARN", f"checkpoint.every_steps is 0 (no periodic checkpoint); {basis}")
    where = "within" if status == "PASS" else "outside"
    return Check("checkpoint interval", status, f"checkpoint.every_steps={every} is {where} [0.5x, 2x] of {basis}")


# ------------------------------------------------------------------------------------------ the checklist


def run_preflight(config: str, overrides: list[str], options: PreflightOptions) -> list[Check]:
    """Every check in order; a check whose inputs an earlier failure withheld is reported as not run (WARN)."""
    try:
        cfg = load_config(config, overrides)
        check_world_size(cfg, options.world_size, options.nproc_per_node)
    except ConfigError as err:
        return [Check("config", "FAIL", str(err))]
    results = [Check("config", "PASS", f"{config}: valid for {options.world_size} ranks")]
    ctx = Context(cfg, options)

    def run(check: Callable[[Context], Check], name: str, needs: tuple[str, ...] = ()) -> None:
        """Run ``check`` unless a check it ``needs`` failed (then report it as not run)."""
        failed = [c.name for c in results if c.name in needs and c.status == "FAIL"]
        if failed:
            results.append(Check(name, "WARN", f"not run: the {' and '.join(failed)} check failed"))
            return
        try:
            results.append(check(ctx))
        except Exception as err:  # one broken check must not hide the others' answers
            results.append(Check(name, "FAIL", f"the check itself failed: {type(err).__name__}: {err}"))

    run(check_identity, "run identity")
    run(check_data, "data")
    run(check_vocabulary, "vocabulary", needs=("data",))
    run(check_shards, "shard hashes", needs=("data",))
    run(check_tokens, "tokens", needs=("data",))
    run(lambda c: check_checkpoint_location(checkpoint_location(c.cfg)), "checkpoints")
    run(check_disk, "disk")
    run(check_trackers, "trackers")
    if options.steps > 0:
        # Token ids past the model's embedding would fail the steps with an IndexError, not a finding.
        run(check_training_steps, "training steps", needs=("data", "vocabulary"))
        run(check_throughput, "throughput", needs=("data", "vocabulary"))
        run(check_checkpoint_interval, "checkpoint interval", needs=("data", "vocabulary"))
    else:
        results.append(Check("training steps", "WARN", "skipped (--steps 0)"))
    return results


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<4}  {c.name:<{width}}  {c.reason}" for c in checks]
    counts = {status: sum(c.status == status for c in checks) for status in ("PASS", "WARN", "FAIL")}
    lines.append(f"\n{counts['PASS']} passed, {counts['WARN']} warnings, {counts['FAIL']} failed")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.preflight",
                                     description="Check a training config before launching it.")
    parser.add_argument("config", help="training YAML")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, as for training.launch")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="ranks per node the launch will use")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps on a repeated batch (0: skip)")
    parser.add_argument("--verify-shards", type=int, default=3, help="shards per dataset to verify (0: all)")
    parser.add_argument("--price", type=float, dest="price_per_gpu_hour", help="dollars per GPU-hour")
    parser.add_argument("--on-call", help=f"who answers when the run breaks (default: ${ON_CALL_ENV})")
    parser.add_argument("--allow-repeat", action="store_true", help="reading data more than once is a WARN")
    parser.add_argument("--failure-rate", type=float, default=FAILURES_PER_1000_GPU_DAYS,
                        help="failures per 1,000 GPU-days, for the checkpoint interval (default %(default)g)")
    parser.add_argument("--save-seconds", type=float, help="blocking time of one checkpoint save (default: this "
                                                           "run's journal, else estimated from the size)")
    parser.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nnodes < 1 or args.nproc_per_node < 1 or args.steps < 0 or args.verify_shards < 0:
        print("training.preflight: --nnodes and --nproc-per-node must be >= 1, --steps and --verify-shards >= 0",
              file=sys.stderr)
        return 2
    options = PreflightOptions(args.nnodes, args.nproc_per_node, args.steps, args.verify_shards,
                               args.price_per_gpu_hour, args.on_call, args.allow_repeat, args.failure_rate,
                               args.save_seconds)
    checks = run_preflight(args.config, args.overrides, options)
    print(json.dumps([asdict(c) for c in checks], indent=2) if args.json else format_checks(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
