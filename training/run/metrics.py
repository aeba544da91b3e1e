"""Where training metrics go: a tqdm bar, a JSONL file, MLflow, optionally W&B, and a loss-curve PNG.

Only rank 0 logs; on other ranks every method does nothing. MLflow defaults to a local SQLite
store beside the runs (``sqlite:///<output_dir>/mlflow.db``, artifacts in
``<output_dir>/mlflow-artifacts``); read it back with ``mlflow.tracking.MlflowClient(uri)``.
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..config import LoggingSection
from ..hardware import gpu_for_device_name


def peak_flops(device: torch.device, configured: float | None) -> float | None:
    """FLOP/s of one device for MFU: the configured value, a known GPU's (training.hardware, the
    table the planners use too), or None (CPU, unknown GPU)."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    gpu = gpu_for_device_name(torch.cuda.get_device_name(device))
    return gpu.peak_flops if gpu else None


def memory_gb(device: torch.device) -> float:
    """Peak accelerator memory allocated since the last call (GPU), or peak process RSS (CPU)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [2]}`` -> ``{"a.b": 1, "c.0": 2}`` (MLflow params are flat)."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return {prefix: data}
    out = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


class MetricsLogger:
    def __init__(self, cfg: LoggingSection, run_dir: Path, output_dir: Path, run_name: str,
                 max_steps: int, start_step: int, enabled: bool):
        self.cfg, self.run_dir, self.enabled = cfg, run_dir, enabled
        self.history: list[dict] = []
        self._bar = self._mlflow = self._wandb = None
        if not enabled:
            return
        self._jsonl = open(run_dir / "metrics.jsonl", "a")
        if cfg.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=max_steps, initial=start_step, desc=run_name, unit="step", dynamic_ncols=True)
        if cfg.mlflow:
            self._start_mlflow(output_dir, run_name)
        if cfg.wandb_project:
            import wandb  # noqa: the launcher checked it is installed

            self._wandb = wandb.init(project=cfg.wandb_project, name=run_name, dir=str(run_dir))

    def _start_mlflow(self, output_dir: Path, run_name: str) -> None:
        from mlflow.tracking import MlflowClient

        uri = self.cfg.mlflow_tracking_uri or f"sqlite:///{output_dir.resolve() / 'mlflow.db'}"
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(self.cfg.mlflow_experiment)
        if experiment is None:
            artifacts = None
            if self.cfg.mlflow_tracking_uri is None:
                artifacts = (output_dir.resolve() / "mlflow-artifacts").as_uri()
            experiment_id = client.create_experiment(self.cfg.mlflow_experiment, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        run = client.create_run(experiment_id, run_name=run_name)
        self._mlflow, self.mlflow_run_id, self.mlflow_uri = client, run.info.run_id, uri

    def log_params(self, params: dict[str, Any]) -> None:
        """The run's configuration and data versions (flattened to dotted keys)."""
        if not self.enabled:
            return
        flat = flatten(params)
        (self.run_dir / "params.json").write_text(json.dumps(flat, indent=2, sort_keys=True, default=str) + "\n")
        if self._mlflow is not None:
            from mlflow.entities import Param

            items = [Param(k, str(v)[:6000]) for k, v in sorted(flat.items())]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                self._mlflow.log_batch(self.mlflow_run_id, params=items[i:i + 100])
        if self._wandb is not None:
            self._wandb.config.update(flat, allow_val_change=True)

    def log(self, step: int, metrics: dict[str, float | None], echo: bool = False) -> None:
        """Record ``metrics`` at ``step`` in every sink; ``echo`` also prints them on the console."""
        if not self.enabled:
            return
        record = {"step": step, **metrics}
        self.history.append(record)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        numbers = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        if self._mlflow is not None:
            from mlflow.entities import Metric

            now = int(1000 * time.time())
            self._mlflow.log_batch(self.mlflow_run_id, metrics=[Metric(k, v, now, step) for k, v in numbers.items()])
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)
        if echo:
            line = f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in numbers.items())
            if self._bar is not None:
                self._bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)

    def log_artifact(self, path: Path, folder: str) -> None:
        """A file of the run folder, also stored with the MLflow run under ``folder``."""
        if self._mlflow is not None:
            self._mlflow.log_artifact(self.mlflow_run_id, str(path), folder)

    def advance(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        """Move the progress bar to ``step`` (called every step; metrics only every few)."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)

    def finish(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        self._jsonl.close()
        plot = self.run_dir / "loss.png" if self.cfg.plot and self.history else None
        if plot is not None:
            plot_losses(self.history, plot)
        if self._mlflow is not None:
            for artifact in (plot, self.run_dir / "metrics.jsonl", self.run_dir / "run_info.json"):
                if artifact is not None and artifact.exists():
                    self._mlflow.log_artifact(self.mlflow_run_id, str(artifact))
            self._mlflow.set_terminated(self.mlflow_run_id, status=status)
        if self._wandb is not None:
            self._wandb.finish(exit_code=0 if status == "FINISHED" else 1)


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in history if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in history if r.get("eval_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(path.parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
