"""``python -m training.launch CONFIG [options] [key=value ...]``: check the config, then start the ranks.

The ranks are started by PyTorch's own elastic launcher (torch.distributed.run, i.e. torchrun),
so the same config runs as one process, one node, or many nodes:

    python -m training.launch configs/train_tiny.yaml                       # one process
    python -m training.launch configs/train_tiny.yaml --nproc-per-node 8    # one node
    python -m training.launch configs/train_tiny.yaml --nnodes 4 --nproc-per-node 8 \\
        --rdzv-endpoint head-node:29500                                     # run this on each node

Everything is validated here first: the YAML's keys and types, the batch sizes against the world
size, that each dataset resolves to a complete version (instruction data is packed here), that
optional loggers are installed, that a checkpoint to resume from was trained on the same data
versions, that ``init_from`` weights fit the model, and that ``eval.tasks`` loads (task files,
tokenizer, and a sandbox for code tasks).

With ``--max-restarts N``, ranks that fail are started again (up to N times) and resume from the
newest complete checkpoint by themselves. SIGTERM or SIGINT to this process is passed to the ranks,
which save a checkpoint when every rank is alive and exit; relaunching the same command resumes.

A run the loss gate stops (``gate.stop_after``, training.run.gate) is not restarted: its ranks save a
checkpoint and exit 0, leaving the reason in a file this launcher named (torchrun restarts any rank
that exits non-zero), and the launcher exits with status 3 (GATE_EXIT_CODE), saying so.

Exit status: 0 finished, 1 failed, 2 bad config, 3 stopped by the loss gate, 128+N stopped by signal N.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from shards.config import ConfigError

from .config import TrainConfig, check_world_size, load_config
from .data.exclude import check_traceable, read_exclude_list
from .data.resolve import resolve_sources
from .eval.in_training import load_tasks
from .run.checkpoint import check_data, checkpoint_root, describe_data, latest_complete, starts_data_phase
from .run.gate import GATE_EXIT_CODE, STOP_FILE_ENV, LossBand
from .weights.init_from import inspect_and_check


def validate(cfg: TrainConfig, nnodes: int, nproc_per_node: int) -> None:
    """Everything that can be checked before any rank starts; raises ConfigError."""
    check_world_size(cfg, nnodes * nproc_per_node, nproc_per_node)
    if cfg.logging.mlflow and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("logging.mlflow is true but mlflow is not installed (pip install mlflow-skinny)")
    if cfg.logging.wandb_project and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logging.wandb_project is set but wandb is not installed (pip install wandb)")
    try:
        train_sources, _ = resolve_sources(cfg)
    except (ValueError, OSError) as err:
        raise ConfigError(f"data: {err}") from None
    if cfg.data.exclude_docs is not None:  # the list and the datasets' provenance; rank 0 traces the ids
        read_exclude_list(cfg.data.exclude_docs)
        check_traceable(train_sources)
    model = cfg.model.build()
    if cfg.init_from is not None:
        inspect_and_check(cfg.init_from, model)
    if cfg.eval.tasks is not None:
        load_tasks(cfg, model)
    if cfg.gate.band is not None:
        LossBand.load(cfg.gate.band, cfg.train.max_steps)
    if cfg.checkpoint.enabled:
        found = latest_complete(checkpoint_root(cfg))
        if found is None and cfg.data.from_step:
            raise ConfigError(f"data.from_step={cfg.data.from_step} goes on from the run's checkpoint of that step, "
                              f"but {checkpoint_root(cfg)} holds none: train the earlier data phase first")
        if found is not None and not starts_data_phase(found[1], cfg, found[0]):
            check_data(found[1], describe_data(train_sources), cfg.checkpoint.allow_data_change, found[0])


def torchrun_args(args: argparse.Namespace) -> list[str]:
    """The torch.distributed.run command line that starts ``training.train`` with the same config."""
    out = ["--nnodes", str(args.nnodes), "--nproc-per-node", str(args.nproc_per_node),
           "--max-restarts", str(args.max_restarts)]
    if args.rdzv_endpoint:
        out += ["--rdzv-backend", "c10d", "--rdzv-endpoint", args.rdzv_endpoint, "--rdzv-id", args.rdzv_id]
        if args.node_rank is not None:
            out += ["--node-rank", str(args.node_rank)]
    else:
        out += ["--standalone"]
    return out + ["--module", "training.train", args.config, *args.overrides]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="training YAML")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.max_steps=100")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="ranks on this node (one per GPU)")
    parser.add_argument("--nnodes", type=int, default=1, help="number of nodes")
    parser.add_argument("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous (needed for several nodes)")
    parser.add_argument("--rdzv-id", default="kiln", help="job id shared by every node of one run")
    parser.add_argument("--node-rank", type=int, help="this node's rank (optional with c10d rendezvous)")
    parser.add_argument("--max-restarts", type=int, default=0, help="times torchrun restarts failed ranks")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if args.nproc_per_node < 1 or args.nnodes < 1:
        parser.error("--nproc-per-node and --nnodes must be >= 1")
    if args.nnodes > 1 and not args.rdzv_endpoint:
        parser.error("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        validate(cfg, args.nnodes, args.nproc_per_node)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun's agent shares one rendezvous store with the ranks across restarts, so restarted ranks
    # read the previous attempt's gloo/NCCL addresses and hang or fail to connect (pytorch#135712).
    # Rank 0 hosts a fresh store per attempt instead.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    gate_file = Path(tempfile.mkdtemp(prefix="kiln-gate-")) / "stopped"
    os.environ[STOP_FILE_ENV] = str(gate_file)
    try:
        run(get_args_parser().parse_args(torchrun_args(args)))
        if gate_file.exists():
            print(f"stopped by the loss gate, after a checkpoint: {gate_file.read_text().strip()}. Not restarted: "
                  f"a run behind its expected loss band needs a person to decide (see the run's training_log.md); "
                  f"exit status {GATE_EXIT_CODE}", file=sys.stderr)
            return GATE_EXIT_CODE
    except ChildFailedError as err:
        print(f"training failed: {err}", file=sys.stderr)
        return 1
    except SignalException as err:
        print(f"stopped by {err.sigval.name}: the ranks saved a checkpoint if all were alive (see the run's "
              "training_log.md); run the same command again to resume", file=sys.stderr)
        return 128 + err.sigval
    finally:
        gate_file.unlink(missing_ok=True)
        gate_file.parent.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
