"""End to end on CPU with gloo: `python -m training.launch` on 1 process, 2 processes and 2 "nodes".

All three runs train on one small MDS dataset and must consume the same global sample sequence
(compared through each rank's sample ledger); the 1-process run must learn and be readable back
from MLflow.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shards.local_ports import free_ports
from tests.training.token_datasets import write_token_dataset
from tests.training.subprocess_env import child_env

STEPS = 24


def launch_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "training.launch", str(config), *args]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("train")
    write_token_dataset(str(work / "data"), {"train": 400, "val": 32}, seq_len=32, size_limit=1 << 11)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: {work / 'runs'}
        model: {{preset: tiny, overrides: {{d_model: 32, n_heads: 2, max_seq_len: 32}}}}
        data: {{datasets: [{{path: {work / 'data'}}}], num_workers: 1, shuffle_window_shards: 2}}
        train: {{max_steps: {STEPS}, global_batch_size: 8, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        schedule: {{warmup_steps: 4, decay: cosine}}
        eval: {{every_steps: 12, batches: 2}}
        logging: {{every_steps: 1, sample_ledger: true, progress_bar: false, mlflow: false}}
        """))
    return work


def start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Output goes to a file: a full pipe would block a rank that its peers wait for."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def wait_ok(proc: subprocess.Popen, timeout: int = 300) -> None:
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.log.read_text()[-6000:]}"


def read_ledger(run_dir: Path) -> dict[int, tuple[int, int]]:
    """position -> (step, sample id), from every rank's ledger."""
    seen = {}
    for path in sorted((run_dir / "ledger").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for position, sample in zip(record["positions"], record["sample_ids"]):
                assert position not in seen, f"{path}: position {position} consumed twice"
                seen[position] = (record["step"], sample)
    return seen


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(workdir) -> Path:
    """Four launches at once: 1 process; 2 processes (with activation checkpointing); two 1-process
    "nodes" meeting through the c10d rendezvous (hybrid sharding). Returns the runs folder."""
    config, (port,) = workdir / "train.yaml", free_ports(1)
    procs = [
        start(launch_cmd(config, "name=single", "logging.mlflow=true", "logging.progress_bar=true"), workdir,
              workdir / "single.log"),
        start(launch_cmd(config, "name=two", "--nproc-per-node", "2", "parallel.activation_checkpointing=true"),
              workdir, workdir / "two.log"),
    ] + [
        start(launch_cmd(config, "name=nodes", "parallel.sharding=hybrid", "--nnodes", "2", "--nproc-per-node", "1",
                         "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"), workdir,
              workdir / f"node{node}.log")
        for node in range(2)
    ]
    for proc in procs:
        wait_ok(proc)
    return workdir / "runs"


def test_single_process_learns_and_reads_back_from_mlflow(runs):
    single = runs / "single"
    losses = [r["loss"] for r in read_metrics(single) if "loss" in r]
    assert len(losses) == STEPS
    assert losses[-1] < 0.5 * losses[0], losses
    evals = [r["eval_loss"] for r in read_metrics(single) if "eval_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]
    assert (single / "loss.png").stat().st_size > 1000
    info = json.loads((single / "run_info.json").read_text())
    assert info["data"]["train"][0]["version"] == 1 and info["data"]["train"][0]["fingerprint"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kiln")
    [mlflow_run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'single'")
    assert mlflow_run.info.status == "FINISHED"
    history = client.get_metric_history(mlflow_run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(1, STEPS + 1))
    assert history[-1].value == pytest.approx(losses[-1])
    for key in ("lr", "grad_norm", "tokens_per_s", "memory_gb", "eval_loss"):
        assert key in mlflow_run.data.metrics
    assert "mfu" not in mlflow_run.data.metrics  # no peak FLOP/s on CPU: logged as null, not as a number
    assert mlflow_run.data.params["data.train.0.version"] == "1"
    artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"loss.png", "metrics.jsonl", "run_info.json"} <= artifacts


def test_two_processes_and_two_nodes_consume_the_same_global_sequence(runs):
    single = runs / "single"
    expected = read_ledger(single)
    assert sorted(expected) == list(range(STEPS * 8))
    single_losses = [r["loss"] for r in read_metrics(single) if "loss" in r]
    for name, ranks in (("two", 2), ("nodes", 2)):
        run_dir = runs / name
        assert len(list((run_dir / "ledger").glob("rank-*.jsonl"))) == ranks
        assert read_ledger(run_dir) == expected, name
        info = json.loads((run_dir / "run_info.json").read_text())
        assert info["world_size"] == ranks
        # fp32 on CPU with the same init and data: the same run up to reduction order.
        losses = [r["loss"] for r in read_metrics(run_dir) if "loss" in r]
        assert losses == pytest.approx(single_losses, rel=1e-3), name
    assert json.loads((runs / "nodes" / "run_info.json").read_text())["mesh"] == {"replicate": 2, "shard": 1}


def test_launch_rejects_a_bad_config_before_starting_ranks(workdir, capsys):
    from training.launch import main

    cases = [
        (["train.micro_batch_size=three"], "config.train.micro_batch_size: expected int"),
        (["--nproc-per-node", "3"], "not a multiple of train.micro_batch_size"),
        (["--nnodes", "2", "--nproc-per-node", "2", "parallel.sharding=hybrid", "parallel.shard_group_size=3"],
         "shard_group_size 3 does not divide"),
        (["data.datasets=[{path: /nonexistent/data}]"], "data: /nonexistent/data"),
        (["data.eval_split=test"], "no split 'test'"),
        (["eval.batches=5"], "lower eval.batches"),
        (["model.overrides.max_seq_len=16"], "max_seq_len is 16"),
    ]
    if importlib.util.find_spec("wandb") is None:
        cases.append((["logging.wandb_project=kiln"], "wandb is not installed"))
    for args, message in cases:
        rdzv = ["--rdzv-endpoint", "127.0.0.1:1"] if "--nnodes" in args else []
        assert main([str(workdir / "train.yaml"), *args, *rdzv]) == 2, args
        assert message in capsys.readouterr().err, args
