"""The report's numbers in MLflow, so a scheduled job's history can be browsed there: one MLflow run
per pipeline run, with the funnel (per stage and per source), the warnings and every numeric stage
metric as metrics, and report.json and report.html as artifacts."""
from __future__ import annotations

import re

from .page import flatten

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow allows in a metric name


def _key(*parts: str) -> str:
    return _UNSAFE.sub("_", ".".join(parts))


def metrics(report: dict) -> dict[str, float]:
    """Flat metric name -> value: funnel counts, removed shares, per-source counts, warnings, stage metrics."""
    out: dict[str, float] = {"warnings": len(report["warnings"])}
    for s in report["steps"]:
        for field in ("docs_in", "docs_out", "chars_out", "tokens_out", "seconds"):
            if s.get(field) is not None:
                out[_key("funnel", s["stage"], field)] = s[field]
        if s["docs_in"]:
            out[_key("funnel", s["stage"], "removed_share")] = (s["docs_in"] - s["docs_out"]) / s["docs_in"]
        for reason, n in s["rejected"].items():
            out[_key("rejected", s["stage"], reason)] = n
        for name, value in flatten(s["metrics"]):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[_key("stage", s["stage"], name)] = value
    for r in report["by_source"]:
        for field in ("docs_out", "tokens_out"):
            if r[field] is not None:
                out[_key("source", r["source"], r["stage"], field)] = r[field]
    return out


def log_to_mlflow(report: dict, files: dict[str, str], tracking_uri: str, experiment: str) -> str:
    """One MLflow run named after the pipeline run; returns its MLflow run id."""
    import mlflow  # here, not at the top: MLflow is optional and only needed when a tracking URI is set

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=report["run_id"]) as active:
        mlflow.set_tags({"kiln.run_id": report["run_id"], "kiln.output": report["output"],
                         "kiln.warnings": "; ".join(w["message"] for w in report["warnings"]) or "none"})
        mlflow.log_metrics(metrics(report))
        mlflow.log_dict({"warnings": report["warnings"]}, "warnings.json")
        for name, text in files.items():
            mlflow.log_text(text, name)
        return active.info.run_id
