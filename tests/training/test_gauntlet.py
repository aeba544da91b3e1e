"""The eval gauntlet: three toy tasks in two categories score as computed by hand (normalised against each
task's random baseline, averaged per category, categories averaged), through the documented command from
a fresh directory, into JSON, a self-contained HTML page and an MLflow store; checkpoints are evaluated
with the suite's tasks; the shipped offline suite loads."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.training.subprocess_env import child_env
from training.eval import run_evals
from training.eval.__main__ import main as eval_main
from training.eval.gauntlet import load_suite, score
from training.eval.icl import read_examples
from training.eval.synthetic import FactsTask, train_byte_bpe
from training.model import MPT, MPTConfig
from training.weights.layout import save_consolidated

ROOT = Path(__file__).resolve().parents[2]
# Three toy tasks in two categories: "reading" (language modelling, baseline 0; schema, two options, 0.5)
# and "choice" (multiple choice, four options, 0.25).
SUITE = {
    "tasks": {"icl_tasks": [
        {"label": "toy_lm", "dataset_uri": "facts/facts_language_modeling.jsonl", "icl_task_type": "language_modeling"},
        {"label": "toy_schema", "dataset_uri": "facts/facts_schema.jsonl", "icl_task_type": "schema"},
        {"label": "toy_mc", "dataset_uri": "facts/facts_multiple_choice.jsonl", "icl_task_type": "multiple_choice"},
    ]},
    "categories": [
        {"name": "reading", "benchmarks": [{"task": "toy_lm", "metric": "0-shot/acc", "random_baseline": 0.0},
                                           {"task": "toy_schema", "metric": "0-shot/acc", "random_baseline": 0.5}]},
        {"name": "choice", "benchmarks": [{"task": "toy_mc", "metric": "0-shot/acc", "random_baseline": 0.25}]},
    ],
}


def results(lm: float, schema: float, mc: float, step: int | None) -> dict:
    """What `python -m training.eval CHECKPOINT TASKS.yaml --output` writes (the parts the gauntlet reads)."""
    return {"checkpoint": "ckpt", "step": step, "metrics": {
        "eval/icl/toy_lm/0-shot/acc": lm, "eval/icl/toy_schema/0-shot/acc": schema, "eval/icl/toy_mc/0-shot/acc": mc,
        "eval/icl/toy_mc/0-shot/acc_norm": 0.0}, "vibe": [], "details": {}}


def test_three_toy_tasks_in_two_categories_score_as_computed_by_hand(tmp_path):
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    # Step 100: reading = mean(0.6, (0.8 - 0.5) / 0.5 = 0.6) = 0.6; choice = (0.4 - 0.25) / 0.75 = 0.2;
    # overall = mean(0.6, 0.2) = 0.4 (not the mean of the three tasks, 0.4667: each category weighs the same).
    # Step 200: reading = mean(0.9, (0.4 - 0.5) / 0.5 = -0.2) = 0.35; choice = 1.0; overall = 0.675.
    expected = {100: ({"reading": 0.6, "choice": 0.2}, 0.4), 200: ({"reading": 0.35, "choice": 1.0}, 0.675)}
    (tmp_path / "late.json").write_text(json.dumps(results(0.9, 0.4, 1.0, step=200)))
    (tmp_path / "step-100.json").write_text(json.dumps(results(0.6, 0.8, 0.4, step=None)))  # step from the name
    command = [sys.executable, "-m", "training.eval", "gauntlet", "--suite", "suite.yaml", "late.json", "step-100.json",
               "--output-dir", "report", "--mlflow-uri", "sqlite:///mlflow.db"]
    run = subprocess.run(command, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    report = json.loads((tmp_path / "report" / "gauntlet.json").read_text())
    assert [point["step"] for point in report["checkpoints"]] == [100, 200]
    for point in report["checkpoints"]:
        categories, overall = expected[point["step"]]
        assert point["categories"] == pytest.approx(categories) and point["overall"] == pytest.approx(overall)
    assert report["checkpoints"][1]["benchmarks"]["toy_schema/0-shot/acc"]["normalized"] == pytest.approx(-0.2)

    page = (tmp_path / "report" / "gauntlet.html").read_text()
    image = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert image and base64.b64decode(image.group(1)).startswith(b"\x89PNG")
    assert "<script" not in page and "http" not in page  # self-contained

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run_info] = client.search_runs([client.get_experiment_by_name("kiln-gauntlet").experiment_id])
    for name, values in (("gauntlet/overall", [0.4, 0.675]), ("gauntlet/choice", [0.2, 1.0]),
                         ("gauntlet/reading/toy_schema/0-shot/acc", [0.6, -0.2])):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_info.info.run_id, name))
        assert history == [(100, pytest.approx(values[0])), (200, pytest.approx(values[1]))]
    artifacts = {a.path for a in client.list_artifacts(run_info.info.run_id, "gauntlet")}
    assert artifacts == {"gauntlet/gauntlet.json", "gauntlet/gauntlet.html"}


def test_gauntlet_evaluates_checkpoints_with_the_suites_tasks(tmp_path, monkeypatch, capsys):
    facts = FactsTask.make(0)
    facts.write_jsonl(tmp_path / "facts")
    tokenizer = train_byte_bpe([facts.sentence(obj) for obj in facts.facts] * 4, vocab_size=300)
    models = {}
    for step in (30, 7):
        torch.manual_seed(step)
        models[step] = MPT(MPTConfig.preset("tiny", vocab_size=tokenizer.vocab_size)).eval()
        save_consolidated(models[step], models[step].cfg, tmp_path / f"step-{step}", tokenizer)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    monkeypatch.chdir(tmp_path)
    assert eval_main(["gauntlet", "--suite", "suite.yaml", "step-30", "step-7", "--no-mlflow"]) == 0
    assert "step-7 (step 7): overall" in capsys.readouterr().out
    report = json.loads(Path("gauntlet/gauntlet.json").read_text())
    suite = load_suite("suite.yaml")
    assert [point["step"] for point in report["checkpoints"]] == [7, 30]
    for point in report["checkpoints"]:
        metrics = run_evals(models[point["step"]], tokenizer, suite.tasks)["metrics"]
        assert point["metrics"] == pytest.approx(metrics)
        expected = score(suite, metrics)
        assert point["categories"] == pytest.approx(expected["categories"])
        assert point["overall"] == pytest.approx(expected["overall"])
    assert not Path("gauntlet/mlflow.db").exists()
    # A benchmark naming a metric the task does not give fails with one line that lists what it gives.
    broken = {**SUITE, "categories": [{"name": "x", "benchmarks": [{"task": "toy_mc", "metric": "5-shot/acc",
                                                                   "random_baseline": 0.25}]}]}
    Path("broken.yaml").write_text(yaml.safe_dump(broken))
    assert eval_main(["gauntlet", "--suite", "broken.yaml", "step-7", "--no-mlflow"]) == 2
    assert "toy_mc/5-shot/acc" in capsys.readouterr().err


def test_shipped_offline_suite_loads_and_a_suite_naming_no_task_is_refused(tmp_path):
    suite = load_suite(ROOT / "configs" / "gauntlet_offline.yaml")
    assert [c.name for c in suite.categories] == ["language_modeling", "world_knowledge", "programming"]
    for task in suite.tasks.icl_tasks:
        if task.label.startswith("facts_"):  # shipped beside it (lambada_demo is built by `make demo`)
            assert read_examples(task.dataset_uri, task.icl_task_type)
    unknown = {**SUITE, "categories": [{"name": "x", "benchmarks": [{"task": "nope", "metric": "0-shot/acc",
                                                                    "random_baseline": 0.0}]}]}
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump(unknown))
    with pytest.raises(ValueError, match=r"names tasks \['nope'\] that `tasks` does not define"):
        load_suite(tmp_path / "unknown.yaml")
