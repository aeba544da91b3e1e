"""What the spike policy's detection costs a training step, and what the loss's all-reduce costs.

    .venv/bin/python bench/spike_overhead_bench.py [--dataset demo_out/etl/dataset] [--steps 200] [--repeats 2]

The detection (``spike.action: skip`` or ``rollback``) reads two numbers a step on the host, the loss summed
over ranks and the gradient norm; ``log`` (the default) reads nothing between logging points. Both run the
same config through ``python -m training.launch`` on 2 ranks (gloo on CPU, NCCL on a GPU), alternating log
and skip ``--repeats`` times (each first in turn). A run's speed is the mean of metrics.jsonl's
``tokens_per_s`` after the first logging interval; the ratio is taken per repeat, since a shared machine
drifts between repeats. The scalar all-reduce that the non-finite guard makes every step, and that the
policy reads, is timed apart: 2 processes, 1,000 calls. No peer runs here: llm-foundry's KillLossSpike callback
needs composer, which is not installed; it reads the loss on the host every batch too.
Needs a dataset built by the ETL (``make demo`` writes demo_out/etl/dataset).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shards.local_ports import free_ports
from shards.manifest import latest_version, read_manifest, version_path

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 16
LOG_EVERY = 20


def _all_reduce_worker(rank: int, port: int, calls: int, backend: str, out) -> None:
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    device = torch.device("cuda", rank % max(torch.cuda.device_count(), 1)) if backend == "nccl" else torch.device("cpu")
    value = torch.ones((), device=device)
    for _ in range(50):
        dist.all_reduce(value)
    if backend == "nccl":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        dist.all_reduce(value)
    if backend == "nccl":
        torch.cuda.synchronize()
    if rank == 0:
        out.put((time.perf_counter() - start) / calls)
    dist.destroy_process_group()


def all_reduce_seconds(calls: int, backend: str) -> float:
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_all_reduce_worker, args=(free_ports(1)[0], calls, backend, queue), nprocs=2)
    return queue.get()


def train(work: Path, dataset: Path, action: str, steps: int, device: str) -> float:
    """One launch; its mean tokens/s after the first logging interval."""
    name = f"{action}-{time.monotonic_ns()}"
    manifest = read_manifest(version_path(str(dataset), latest_version(str(dataset))))
    seq_len, vocab = manifest.seq_len, manifest.vocab_size
    (work / "bench.yaml").write_text(textwrap.dedent(f"""\
        output_dir: {work}/runs
        parallel: {{device: {device}}}
        model: {{preset: tiny, overrides: {{d_model: 128, n_heads: 4, n_layers: 2, max_seq_len: {seq_len}, vocab_size: {vocab}}}}}
        data: {{datasets: [{{path: {dataset}}}], num_workers: 0, eval_split: null}}
        train: {{max_steps: {steps}, global_batch_size: {GLOBAL_BATCH}, micro_batch_size: {GLOBAL_BATCH // 2}}}
        checkpoint: {{every_steps: {steps}}}
        spike: {{action: {action}}}
        logging: {{every_steps: {LOG_EVERY}, progress_bar: false, mlflow: false, plot: false}}
        """))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "training.launch", str(work / "bench.yaml"), "--nproc-per-node", "2",
                           f"name={name}"], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    rows = [json.loads(line) for line in (work / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")][1:]
    return statistics.mean(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo_out/etl/dataset")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.device_count() >= 2 else "cpu")
    args = parser.parse_args()
    dataset = Path(args.dataset).absolute()
    if latest_version(str(dataset)) is None:
        raise SystemExit(f"{dataset} holds no ETL-built dataset: run `make demo` first, or pass --dataset")
    if args.steps < 2 * LOG_EVERY:
        parser.error(f"--steps must be at least {2 * LOG_EVERY}: the first logging interval is left out")
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        parser.error("2 ranks need 2 GPUs (NCCL refuses two ranks on one); on this machine use --device cpu")
    speeds: dict[str, list[float]] = {"log": [], "skip": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for action in ("log", "skip") if repeat % 2 == 0 else ("skip", "log"):  # neither always goes first
                speeds[action].append(train(Path(tmp), dataset, action, args.steps, args.device))
                print(json.dumps({"repeat": repeat, "action": action, "tokens_per_s": round(speeds[action][-1], 1)}),
                      flush=True)
    backend = "nccl" if args.device == "cuda" else "gloo"
    reduce_s = all_reduce_seconds(1000, backend)
    log, skip = statistics.mean(speeds["log"]), statistics.mean(speeds["skip"])
    pairs = [s / g for s, g in zip(speeds["skip"], speeds["log"])]  # each repeat's ratio: drift cancels out
    step_s = GLOBAL_BATCH * read_manifest(version_path(str(dataset), latest_version(str(dataset)))).seq_len / log
    print(json.dumps({"device": args.device, "log_tokens_per_s": round(log, 1), "skip_tokens_per_s": round(skip, 1),
                      "skip_over_log_per_repeat": [round(r, 3) for r in pairs],
                      "skip_over_log_median": round(statistics.median(pairs), 3), "step_ms": round(1e3 * step_s, 2),
                      "scalar_all_reduce_us": round(1e6 * reduce_s, 1),
                      "all_reduce_share_of_step": round(reduce_s / step_s, 4)}))


if __name__ == "__main__":
    main()
