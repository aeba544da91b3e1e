"""Training on a Spark cluster, the Databricks way: the ranks of torch.distributed run in Spark tasks.

    spark-submit --master spark://HOST:7077 --py-files dist/kiln-0.1.0.zip jobs/train_on_spark.py \\
        CONFIG --num-processes N [--gpu] [key=value ...]

or from a notebook on a cluster with the wheel installed:

    from jobs.train_on_spark import train_on_spark
    train_on_spark("/Volumes/main/kiln/configs/train.yaml", num_processes=8, use_gpu=True)

PySpark's TorchDistributor (``local_mode=False``) starts one barrier stage of N tasks, all scheduled at
once or not at all; each task runs torchrun for one rank, with the rendezvous at the first task's
host. The ranks are those `python -m training.launch` starts for a world of N: the same sample order
(the sample ledger) and, on CPU, the same weights (tests/system/test_spark_submit.py).

The config is loaded and checked here on the driver first (training.launch.validate), then sent to
the ranks as text, so the workers need not see the file. Every path inside it (data, output_dir) is
opened by the ranks on the workers: on a real cluster it must be an object-store URL or a path on
storage every worker mounts (/Volumes, /dbfs), not a driver-local path.

GPUs (docs/cluster.md): one GPU per task, so Spark must schedule GPUs: spark.executor.resource.gpu.amount
(the GPUs of a worker), spark.task.resource.gpu.amount=1 and a discovery script; Databricks GPU
clusters set these. With --gpu each rank uses the GPU its task owns (CUDA_VISIBLE_DEVICES) and NCCL.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


class _ImportPaths:
    """Pickles as the Python path of the process that pickles it, and unpickles by adding that path.

    TorchDistributor pickles the rank's call again inside the Spark task, whose Python worker imports
    Kiln from --py-files: Spark adds those to the worker's sys.path, not to PYTHONPATH, so the torchrun
    processes it starts would not find Kiln. Passed as the call's first argument, this carries them over.
    """

    def __getstate__(self) -> list[str]:
        return [path for path in sys.path if path]

    def __setstate__(self, paths: list[str]) -> None:
        sys.path.extend(path for path in paths if path not in sys.path)


def _rank(_: _ImportPaths, config_text: str, overrides: list[str]) -> None:
    """One rank, in the process torchrun starts inside a Spark task (RANK, WORLD_SIZE, MASTER_ADDR set)."""
    from training.train import main

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kiln-train-", delete=False) as config:
        config.write(config_text)
    try:
        status = main([config.name, *overrides])
    finally:
        Path(config.name).unlink(missing_ok=True)
    if status != 0:
        raise SystemExit(status)


def train_on_spark(config: str, num_processes: int, overrides: list[str] | tuple[str, ...] = (),
                   use_gpu: bool = False) -> None:
    """Train ``config`` with ``num_processes`` ranks, one per Spark task, on the active session's cluster.

    Raises ConfigError before any task starts, and RuntimeError (with the ranks' last lines) when training fails.
    """
    from pyspark import cloudpickle
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    from training.config import load_config
    from training.launch import validate

    validate(load_config(config, list(overrides)), nnodes=num_processes, nproc_per_node=1)
    SparkSession.builder.getOrCreate()  # spark-submit's or the cluster's session
    if __name__ != "__main__":  # imported (a notebook): the workers have Kiln's packages, not jobs/
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    distributor = TorchDistributor(num_processes=num_processes, local_mode=False, use_gpu=use_gpu)
    distributor.run(_rank, _ImportPaths(), Path(config).read_text(), list(overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/train_on_spark.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="training YAML (read on the driver)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.max_steps=100")
    parser.add_argument("--num-processes", type=int, default=2, help="ranks, one per Spark task (and per GPU with --gpu)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per task (spark.task.resource.gpu.amount=1)")
    args = parser.parse_intermixed_args(argv)
    from shards.config import ConfigError

    try:
        train_on_spark(args.config, args.num_processes, args.overrides, use_gpu=args.gpu)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # TorchDistributor's: a rank failed; its message ends with the ranks' output
        print(f"training failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
