"""The report's figures, as PNG bytes, from its plain data. Every axis uses plain numbers (no offset
notation such as ``1e-5+9.999e-1``), figures lay themselves out (no overlapping titles) and are sized
for a page 1400 px wide."""
from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

plt.rcParams.update({"axes.formatter.useoffset": False, "axes.formatter.limits": (-6, 9), "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})
KEPT, REJECTED, OTHER = "#4c72b0", "#dd8452", "#b0b0b0"
SOURCE_COLORS = plt.get_cmap("tab10").colors
WIDTH = 12.5  # inches: 1250 px at the report's dpi, inside the page's 1300 px column
DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _thousands(ax, axis: str = "y") -> None:
    fmt = FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:g}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def funnel_plot(steps: list[dict]) -> bytes:
    """Documents kept after each stage, with what the stage removed stacked on top."""
    names = [s["stage"] for s in steps]
    kept = [s["docs_out"] for s in steps]
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4), layout="constrained")
    ax.bar(names, kept, color=KEPT, label="kept")
    ax.bar(names, [s["docs_in"] - s["docs_out"] for s in steps], bottom=kept, color=REJECTED, label="removed here")
    ax.set_ylabel("documents")
    ax.set_title("Documents per stage")
    _thousands(ax)
    ax.legend(loc="upper right", frameon=False)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return _png(fig)


def source_plot(by_source: list[dict], stages: list[str]) -> bytes:
    """Per source, stacked: the documents and the tokens that leave each stage."""
    sources = sorted({r["source"] for r in by_source})
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6), layout="constrained")
    for ax, key, title in ((axes[0], "docs_out", "documents kept, by source"), (axes[1], "tokens_out", "tokens kept, by source")):
        bottom = [0] * len(stages)
        for i, source in enumerate(sources):
            values = [next((r[key] or 0 for r in by_source if r["stage"] == s and r["source"] == source), 0) for s in stages]
            ax.bar(stages, values, bottom=bottom, label=source, color=SOURCE_COLORS[i % len(SOURCE_COLORS)])
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_title(title + ("" if key == "docs_out" else " (estimated before tokenize)"))
        _thousands(ax)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="source", loc="outside right upper", frameon=False)
    return _png(fig)


def score_plot(stage: str, histograms: list[dict]) -> bytes:
    """Small multiples, two per row: kept against rejected (by this rule, by another) with the
    thresholds dashed; one legend for the figure, above the plots."""
    cols = 2 if len(histograms) > 1 else 1
    rows = (len(histograms) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, 0.5 + 2.6 * rows), layout="constrained", squeeze=False)
    series = (("kept", KEPT, "kept"), ("rejected_by_rule", REJECTED, "rejected by this rule"),
              ("rejected_other", OTHER, f"rejected by another {stage} rule"))
    for ax, h in zip(axes.flat, histograms):
        edges = h["edges"]
        for key, color, label in series:
            ax.stairs(h[key], edges, color=color, label=label, fill=key != "kept", alpha=1 if key == "kept" else 0.55,
                      linewidth=1.6 if key == "kept" else 0.8)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        _thousands(ax)
        if h["scale"] == "count":
            ax.set_xscale("log")
            _thousands(ax, "x")
        ax.set_xlim(edges[0], edges[-1])
        off_axis = []
        for name, value in h["thresholds"].items():
            if not edges[0] <= value <= edges[-1]:
                off_axis.append(f"{name} = {value:g}")
                continue
            ax.axvline(value, color="black", linestyle="--", linewidth=1)
            right = value > edges[0] + 0.75 * (edges[-1] - edges[0]) if h["scale"] != "count" else False
            ax.annotate(f"{name} = {value:g}", (value, 1), xycoords=("data", "axes fraction"), xytext=(-3 if right else 3, -2),
                        textcoords="offset points", va="top", ha="right" if right else "left", fontsize=8)
        title = f"{h['column']}: {h['label']}" + (f" (off the axis: {', '.join(off_axis)})" if off_axis else "")
        ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9, loc="left")
        ax.set_ylabel("documents")
    for ax in list(axes.flat)[len(histograms):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=3, frameon=False)
    return _png(fig)


def cluster_plot(sizes: dict[int, int]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH / 2, 2.8), layout="constrained")
    ax.bar([str(s) for s in sizes], list(sizes.values()), color=KEPT)
    ax.set_xlabel("documents in the cluster (the kept one included)")
    ax.set_ylabel("clusters")
    ax.set_title("Near-duplicate cluster sizes")
    _thousands(ax)
    return _png(fig)
