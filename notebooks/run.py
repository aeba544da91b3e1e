"""Run a Databricks source notebook top to bottom in this process: locally, in tests, in CI.

    python -m notebooks.run notebooks/01_raw_corpus.py --param OUTPUT=out/run1 --figures out/figures

The file is split at its ``# COMMAND ----------`` lines; ``# MAGIC`` cells (markdown, ``%sql``, ...)
are skipped and every code cell runs in one shared globals dict, pre-filled with the parameters
(each notebook's first cell reads them with ``globals().get(NAME, default)``). Figures use
matplotlib's Agg backend; they are saved to ``--figures`` when given, then closed after each cell.
A failing cell raises ``NotebookError`` naming the notebook and the cell's number (1-based, markdown
cells counted, as Databricks numbers them).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
MAGIC = "# MAGIC"
DISPLAY_ROWS = 20


class NotebookError(RuntimeError):
    """A notebook that is not a Databricks source file, or a cell of it that failed."""


def read_cells(path: str | Path) -> list[str]:
    """The notebook's cells, in order, each as its source text."""
    text = Path(path).read_text(encoding="utf-8")
    first, _, body = text.partition("\n")
    if first.strip() != HEADER:
        raise NotebookError(f"{path}: not a Databricks source notebook (its first line must be {HEADER!r})")
    cells, current = [], []
    for line in body.splitlines():
        if line.strip() == SEPARATOR:
            cells.append("\n".join(current))
            current = []
        else:
            current.append(line)
    cells.append("\n".join(current))
    return cells


def is_magic(cell: str) -> bool:
    lines = [line for line in cell.splitlines() if line.strip()]
    return bool(lines) and all(line.startswith(MAGIC) for line in lines)


def display(obj: Any) -> None:
    """A local stand-in for Databricks' ``display``: the first rows of a Spark or pandas table."""
    if hasattr(obj, "toPandas"):  # a Spark DataFrame (duck-typed: notebooks without Spark use this too)
        obj = obj.limit(DISPLAY_ROWS).toPandas()
    if hasattr(obj, "to_string"):
        print(obj.head(DISPLAY_ROWS).to_string(max_colwidth=100))
    else:
        print(obj)


def run_notebook(path: str | Path, params: dict[str, Any] | None = None, figures: str | Path | None = None) -> dict:
    """Execute every code cell of ``path``; returns the notebook's globals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(path), "display": display, **(params or {})}
    for number, cell in enumerate(read_cells(path), start=1):
        if is_magic(cell) or not cell.strip():
            continue
        try:
            exec(compile(cell, f"{path}, cell {number}", "exec"), namespace)
        except Exception as err:
            raise NotebookError(f"{path.name}, cell {number}: {type(err).__name__}: {err}") from err
        finally:
            _save_figures(plt, path, number, figures)
    return namespace


def _save_figures(plt, path: Path, cell: int, folder: str | Path | None) -> None:
    for index, number in enumerate(plt.get_fignums(), start=1):
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            plt.figure(number).savefig(Path(folder) / f"{path.stem}-cell{cell:02d}-{index}.png", bbox_inches="tight")
    plt.close("all")


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} must look like NAME=VALUE")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="a Databricks source notebook (.py)")
    parser.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter the first cell reads (repeatable), e.g. OUTPUT=out/run1")
    parser.add_argument("--figures", help="save every figure here as <notebook>-cell<N>-<k>.png")
    args = parser.parse_args(argv)
    try:
        run_notebook(args.notebook, dict(args.param), args.figures)
    except NotebookError as err:
        if err.__cause__ is not None:
            traceback.print_exception(err.__cause__, file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
