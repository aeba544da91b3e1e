"""The run report: the stage funnel as JSON and Delta, and an HTML page with plots to look at."""
from __future__ import annotations

import base64
import html
import io

import fsspec
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import NumericType  # noqa: E402

from .delta import read_table, write_table  # noqa: E402
from .funnel import PipelineRun, funnel_json  # noqa: E402
from .paths import join_path, to_fsspec_url  # noqa: E402

# Rows sampled to the driver for histograms: plots need a shape, not every document.
HISTOGRAM_SAMPLE = 50_000
_FUNNEL_SCHEMA = (
    "step int, stage string, docs_in long, docs_out long, chars_in long, chars_out long, "
    "bytes_in long, bytes_out long, rejected map<string,long>"
)


def _sample(df, columns: list[str], limit: int):
    total = df.count()
    if total > limit:
        df = df.sample(fraction=min(1.0, 1.2 * limit / total), seed=0)
    return df.select(*columns).limit(limit).toPandas()


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _funnel_plot(run: PipelineRun) -> bytes:
    names = [s.stage for s in run.steps]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(names, [s.docs_out for s in run.steps], color="#4c72b0", label="kept")
    ax.bar(names, [sum(s.rejected.values()) for s in run.steps], bottom=[s.docs_out for s in run.steps],
           color="#dd8452", label="rejected here")
    ax.set_ylabel("documents")
    ax.set_title("Stage funnel")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return _figure_png(fig)


def _length_plot(spark: SparkSession, run: PipelineRun) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name in ("ingest", run.steps[-1].stage):
        lengths = _sample(read_table(spark, run.tables[name]).select(F.length("text").alias("chars")), ["chars"], HISTOGRAM_SAMPLE)
        if len(lengths):
            ax.hist(lengths["chars"].clip(lower=1), bins=60, alpha=0.55, label=name, log=True)
    ax.set_xscale("log")
    ax.set_xlabel("document length (characters)")
    ax.set_title("Document length, before and after")
    ax.legend()
    return _figure_png(fig)


def _score_plots(spark: SparkSession, run: PipelineRun) -> list[tuple[str, bytes]]:
    """A histogram for each numeric column a stage added (heuristic scores, toxicity, ...)."""
    plots = []
    seen = {"id", "source", "text", "content_hash", "meta"}
    for step in run.steps[1:]:
        df = read_table(spark, run.tables[step.stage])
        added = [f.name for f in df.schema.fields if isinstance(f.dataType, NumericType) and f.name not in seen]
        seen.update(f.name for f in df.schema.fields)
        if not added:
            continue
        sample = _sample(df, added, HISTOGRAM_SAMPLE)
        cols = min(3, len(added))
        rows = (len(added) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows), squeeze=False)
        for ax, name in zip(axes.flat, added):
            values = sample[name].dropna()
            ax.hist(values, bins=40, color="#55a868")
            ax.set_title(name, fontsize=9)
        for ax in list(axes.flat)[len(added):]:
            ax.axis("off")
        fig.suptitle(f"{step.stage}: scores of kept documents", fontsize=10)
        plots.append((f"{step.stage} scores", _figure_png(fig)))
    return plots


def _html(run: PipelineRun, plots: list[tuple[str, bytes]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.stage)}</td><td>{s.docs_in:,}</td><td>{s.docs_out:,}</td>"
        f"<td>{s.chars_in:,}</td><td>{s.chars_out:,}</td><td>{s.bytes_in:,}</td><td>{s.bytes_out:,}</td>"
        f"<td>{html.escape(', '.join(f'{k}: {v:,}' for k, v in s.rejected.items())) or '-'}</td>"
        f"<td>{s.seconds:.1f}</td></tr>"
        for s in run.steps
    )
    metrics = "".join(
        f"<h3>{html.escape(s.stage)}</h3><pre>{html.escape(str(s.metrics))}</pre>" for s in run.steps if s.metrics
    )
    images = "".join(
        f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        for title, png in plots
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Kiln ETL report {run.run_id}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,td:nth-child(8){{text-align:left}}</style>
</head><body><h1>Kiln ETL report</h1><p>run {run.run_id} &middot; output {html.escape(run.config.output)}</p>
<h2>Funnel</h2><table><tr><th>stage</th><th>docs in</th><th>docs out</th><th>chars in</th><th>chars out</th>
<th>bytes in</th><th>bytes out</th><th>rejected (reason: count)</th><th>seconds</th></tr>{rows}</table>
{('<h2>Stage metrics</h2>' + metrics) if metrics else ''}<h2>Plots</h2>{images}</body></html>"""


def write_report(spark: SparkSession, run: PipelineRun) -> str:
    """Writes report/funnel.json, report/funnel (Delta), report/report.html and PNGs; returns the HTML path."""
    root = join_path(run.config.output, "report")
    funnel_rows = [
        (i, s.stage, s.docs_in, s.docs_out, s.chars_in, s.chars_out, s.bytes_in, s.bytes_out, s.rejected)
        for i, s in enumerate(run.steps)
    ]
    write_table(spark.createDataFrame(funnel_rows, _FUNNEL_SCHEMA), join_path(root, "funnel"))
    plots = [("Stage funnel", _funnel_plot(run)), ("Document length", _length_plot(spark, run))]
    plots += _score_plots(spark, run)
    files = {"funnel.json": funnel_json(run).encode(), "report.html": _html(run, plots).encode()}
    for i, (title, png) in enumerate(plots):
        files[f"plot_{i}_{title.split()[0].lower()}.png"] = png
    for name, data in files.items():
        with fsspec.open(to_fsspec_url(join_path(root, name)), "wb", auto_mkdir=True) as handle:
            handle.write(data)
    return join_path(root, "report.html")
