"""Draws docs/architecture.png, the data flow from raw files to a trained model.

Run: .venv/bin/python scripts/draw_architecture.py
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ETL = ["raw files\n(JSONL, Parquet,\ntext, Delta)", "ingest", "fix_encoding", "quality", "exact_dedup",
       "minhash_dedup", "language", "pii", "toxicity", "decontaminate", "tokenize\n+ pack", "shuffle_and_write"]
TRAIN = ["MDS shards\nv=N + manifest", "streaming\ndataset", "MPT model", "FSDP2 trainer",
         "sharded\ncheckpoints", "eval / generate\nfine-tune / export HF"]


def box(ax, x, y, text, color):
    ax.add_patch(FancyBboxPatch((x - 0.62, y - 0.42), 1.24, 0.84, boxstyle="round,pad=0.04", fc=color, ec="#333"))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def arrow(ax, x0, y0, x1, y1):
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->", color="#333"))


def main():
    fig, ax = plt.subplots(figsize=(13, 4.4))
    ax.set_xlim(-0.9, 6 * 1.6 - 0.6)
    ax.set_ylim(-3.3, 1.2)
    ax.axis("off")
    ax.text(-0.8, 0.95, "etl (Spark + Delta Lake): every stage writes a Delta table; removed rows go to rejected/ with a reason",
            fontsize=9, weight="bold")
    for i, name in enumerate(ETL):
        row, col = divmod(i, 6)
        x, y = col * 1.6, -row * 1.05
        box(ax, x, y, name, "#dbe8f6" if i else "#eeeeee")
        if i and col:
            arrow(ax, x - 0.98, y, x - 0.62, y)
    arrow(ax, 5 * 1.6, -0.42, 0, -0.63)
    ax.text(-0.8, -1.75, "shards (the contract: MDS codec + versioned manifest)  ->  training (PyTorch FSDP2)",
            fontsize=9, weight="bold")
    for i, name in enumerate(TRAIN):
        x, y = i * 1.6, -2.6
        box(ax, x, y, name, "#fde9d4" if i else "#e4f2dc")
        if i:
            arrow(ax, x - 0.98, y, x - 0.62, y)
    arrow(ax, 5 * 1.6, -1.47, 0, -2.18)
    out = Path(__file__).resolve().parent.parent / "docs" / "architecture.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()
