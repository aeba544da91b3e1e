"""The run report a data engineer opens every morning: ``<output>/report/report.html``, one
self-contained page, and ``report.json``, its twin for tools.

In the order a reader needs them: warnings (a stage that removed most of its input, a source that
lost everything, a dataset version whose token count jumped), the funnel overall and per source
(documents, characters, tokens), example documents for every rejection reason (PII redacted,
truncated, with the command that shows more), score histograms of kept against rejected with the
thresholds drawn, the largest near-duplicate clusters and borderline pairs, every stage's metrics,
and what changed since the previous run of the same output. With ``report.mlflow_tracking_uri``
set, the same numbers go to MLflow. The funnel is also written as ``funnel.json`` and the Delta
table ``report/funnel``; the figures as PNGs beside the page. Settings: ``report:`` in the
pipeline config (etl/config.py, ReportConfig); what each section means: docs/etl/report.md.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from pyspark.sql import SparkSession

from shards import storage
from shards.config import to_dict
from shards.manifest import list_versions, read_manifest, version_path

from ..delta import overwrite_small_table, write_table
from ..funnel import PipelineRun, funnel_json
from ..paths import join_path, to_fsspec_url
from . import checks, collect, page, plots, scores
from .tracking import log_to_mlflow

_FUNNEL_SCHEMA = pa.schema([
    ("step", pa.int32()), ("stage", pa.string()), *((name, pa.int64()) for name in (
        "docs_in", "docs_out", "chars_in", "chars_out", "bytes_in", "bytes_out")),
    ("rejected", pa.map_(pa.string(), pa.int64())),
])
FUNNEL_PLOT = "plot_0_stage.png"  # notebooks/04_shards_and_funnel.py shows this one


def _read_json(url: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(url))
    except FileNotFoundError:
        return None


def _dataset(run: PipelineRun) -> dict | None:
    """The version shuffle_and_write published (or found unchanged), with the previous version's tokens."""
    found = next((s.metrics for s in reversed(run.steps) if "version" in s.metrics and "num_tokens" in s.metrics), None)
    if found is None:
        return None
    root = found["dataset"].rstrip("/").rsplit("/", 1)[0]
    earlier = [v for v in list_versions(root) if v < found["version"]]
    previous = read_manifest(version_path(root, earlier[-1])) if earlier else None
    return {"version": found["version"], "tokens": sum(found["num_tokens"].values()), "message": found["message"],
            "previous_version": previous.version if previous else None,
            "previous_tokens": sum(previous.num_tokens.values()) if previous else None,
            "sources": found.get("sources")}  # with tokenize.pack_by_source: weight, tokens before and after


@contextmanager
def _timed(timings: dict[str, float], section: str):
    """Adds the block's seconds to ``timings[section]``: the report says what it cost, part by part."""
    start = time.time()
    yield
    timings[section] = round(timings.get(section, 0.0) + time.time() - start, 2)


def build(spark: SparkSession, run: PipelineRun, stage_params: dict[str, Any], previous: dict | None) -> tuple[dict, dict]:
    """(the report's data, its figures); the data's ``timings`` say what each part cost."""
    settings = run.config.report
    timings: dict[str, float] = {}
    rejected = collect.rejected_tables(spark, run.config.output)
    redact = collect.Redactor(stage_params.get("pii"))
    with _timed(timings, "funnel per source"):
        by_source = collect.source_funnel(run)
    steps = []
    for s in run.steps:
        mine = [r for r in by_source if r["stage"] == s.stage]
        tokens = [r["tokens_out"] for r in mine]
        steps.append({**{k: v for k, v in to_dict(s).items() if k != "by_source"}, "tokens_out": sum(tokens) if tokens and None not in tokens else None,
                      "tokens_exact": bool(mine) and all(r["tokens_exact"] for r in mine)})
    timings["score samples (taken in the stages)"] = round(run.score_sample_seconds, 2)
    with _timed(timings, "score histograms"):
        histograms = scores.score_histograms(run.score_samples, stage_params)
    # The two sections run side by side: where Spark reads the tables (etl.report.collect says when), each
    # is a few small Spark jobs whose time is mostly the driver planning them and reading Delta logs,
    # which overlap (at 10,000 documents, 0.9 s and 1.6 s one after the other).
    def examples_section():
        with _timed(timings, "examples"):
            return collect.rejected_examples(spark, rejected, [s["stage"] for s in steps], settings.examples_per_reason,
                                             settings.example_chars, redact)

    def dedup_section():
        with _timed(timings, "dedup"):
            return collect.dedup_clusters(spark, run.config.output, run.tables.get(collect.MINHASH), rejected,
                                          settings.dedup_clusters, settings.dedup_pairs, settings.example_chars, redact)

    with ThreadPoolExecutor(2, thread_name_prefix="kiln-report") as pool:
        examples, dedup = [future.result() for future in [pool.submit(examples_section), pool.submit(dedup_section)]]
    report = {
        "run_id": run.run_id, "output": run.config.output, "config": to_dict(run.config), "tables": run.tables,
        "written_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "steps": steps, "by_source": by_source,
        "examples": examples, "scores": histograms, "dedup": dedup, "dataset": _dataset(run), "timings": timings,
    }
    report["warnings"] = checks.warnings(steps, by_source, report["dataset"], settings)
    report["comparison"] = checks.compare(report, previous)
    with _timed(timings, "plots"):
        figures = {"funnel": plots.funnel_plot(steps), "sources": plots.source_plot(by_source, [s["stage"] for s in steps]),
                   "scores": {stage: plots.score_plot(stage, h) for stage, h in histograms.items()}}
        if dedup and dedup["cluster_sizes"]:
            figures["clusters"] = plots.cluster_plot(dedup["cluster_sizes"])
    return report, figures


def write_report(spark: SparkSession, run: PipelineRun, stage_params: dict[str, Any] | None = None, progress=print) -> str:
    """Writes report.html, report.json, funnel.json, the funnel (Delta) and the figures under
    ``<output>/report``, logs to MLflow when configured, prints the warnings; returns the page's path."""
    start = time.time()
    root = join_path(run.config.output, "report")
    previous = _read_json(to_fsspec_url(join_path(root, "report.json"))) or _read_json(to_fsspec_url(join_path(root, "funnel.json")))
    funnel = pa.Table.from_pylist([
        {"step": i, "stage": s.stage, "docs_in": s.docs_in, "docs_out": s.docs_out, "chars_in": s.chars_in,
         "chars_out": s.chars_out, "bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "rejected": s.rejected}
        for i, s in enumerate(run.steps)], schema=_FUNNEL_SCHEMA)
    funnel_timing: dict[str, float] = {}

    def write_funnel_table():
        with _timed(funnel_timing, "funnel table (Delta)"):
            path = join_path(root, "funnel")
            if not overwrite_small_table(spark, path, funnel):
                write_table(spark.createDataFrame(funnel), path)

    with ThreadPoolExecutor(1, thread_name_prefix="kiln-report-funnel") as pool:  # a Delta commit, beside the sections
        funnel_written = pool.submit(write_funnel_table)
        report, figures = build(spark, run, stage_params or {}, previous)
        funnel_written.result()
    report["timings"].update(funnel_timing)
    report["report_seconds"] = round(time.time() - start + run.score_sample_seconds, 2)
    texts = {"report.json": json.dumps(report, indent=2, sort_keys=True) + "\n", "report.html": page.render(report, figures)}
    files = {"funnel.json": funnel_json(run).encode(), FUNNEL_PLOT: figures["funnel"], "plot_sources.png": figures["sources"],
             **{f"plot_scores_{stage}.png": png for stage, png in figures["scores"].items()},
             **{name: text.encode() for name, text in texts.items()}}
    for name, data in files.items():
        storage.atomic_write_bytes(to_fsspec_url(join_path(root, name)), data)
    for warning in report["warnings"]:
        progress(f"warning: {warning['message']}")
    settings = run.config.report
    if settings.mlflow_tracking_uri:
        mlflow_run = log_to_mlflow(report, texts, settings.mlflow_tracking_uri, settings.mlflow_experiment)
        progress(f"report logged to MLflow at {settings.mlflow_tracking_uri} (run {mlflow_run})")
    path = join_path(root, "report.html")
    progress(f"report: {path} ({report['report_seconds']:.1f}s, {len(report['warnings'])} warnings)")
    return path
