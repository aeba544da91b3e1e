"""Every notebook in notebooks/ runs top to bottom, in this process, on real outputs: the demo's corpus
at a small size through every ETL stage (shared Spark session) and a few steps of a tiny model."""
from __future__ import annotations

import contextlib
import gc
import io
import subprocess
import sys
from pathlib import Path

import pytest

from notebooks.run import HEADER, NotebookError, main, run_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.py") if p.read_text().startswith(HEADER))
# Values the demo plants in its PII documents (jobs/demo.py PII_LINES): none may reach notebook 3's output.
RAW_PII = ("@example.com", "415 555", "4111 1111 1111 1111", "DE89 3704")


def notebook(name: str) -> Path:
    return next(p for p in NOTEBOOKS if p.name == name)


@pytest.fixture(scope="module")
def params(demo_etl) -> dict[str, str]:
    """The notebooks' parameters, pointing at the small demo run (tests/conftest.py) and a few training steps on it."""
    from training.config import load_config
    from training.train import train

    out, etl, tokenizer = demo_etl["out"], demo_etl["etl"], demo_etl["tokenizer"]
    cfg = load_config(ROOT / "configs" / "train_demo.yaml", [
        f"output_dir={out / 'runs'}", f"data.datasets=[{{path: {etl / 'dataset'}}}]",
        "model.overrides={d_model: 32, n_layers: 1, n_heads: 2, max_seq_len: 128, vocab_size: 512}",
        "train.max_steps=4", "train.global_batch_size=4", "train.micro_batch_size=2", "schedule.warmup_steps=1",
        "eval.every_steps=2", "eval.batches=1", "checkpoint.every_steps=0", "checkpoint.dir=null",
        "logging.every_steps=1", "logging.mlflow=false", "logging.progress_bar=false",
    ])
    try:
        train(cfg)
    finally:
        gc.collect()  # the run's gloo group, in a reference cycle, must not be collected in a forked child
    return {"OUTPUT": str(etl), "TOKENIZER": str(tokenizer), "RUN_DIR": str(Path(cfg.output_dir) / cfg.name)}


@pytest.fixture(scope="module")
def executed(params, tmp_path_factory):
    """Runs a notebook once, when first asked: (its globals, what it printed, the figures it drew)."""
    done = {}

    def run(path: Path):
        if path not in done:
            figures = tmp_path_factory.mktemp(path.stem)
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                namespace = run_notebook(path, params, figures)
            done[path] = namespace, printed.getvalue(), sorted(figures.glob("*.png"))
        return done[path]

    return run


def test_the_notebooks_are_found():
    assert {p.name for p in NOTEBOOKS} >= {"01_raw_corpus.py", "02_dedup_clusters.py", "03_pii_toxicity.py",
                                          "04_shards_and_funnel.py", "05_training_run.py"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, executed, spark):
    namespace, printed, figures = executed(path)
    assert printed.strip() and figures, f"{path.name} printed nothing or drew no figure"
    if "spark" in namespace:  # the session it found is the active one: no second session was started
        assert namespace["spark"] is spark


def test_dedup_notebook_shows_a_pair_side_by_side(executed):
    _, printed, _ = executed(notebook("02_dedup_clusters.py"))
    assert "(removed)" in printed and "(kept)" in printed
    assert "removed as near-duplicate" in printed and "kept document it matched" in printed


def test_pii_notebook_shows_redactions_and_never_a_raw_value(executed):
    _, printed, _ = executed(notebook("03_pii_toxicity.py"))
    assert "<EMAIL>" in printed and "toxic" in printed
    assert not [value for value in RAW_PII if value in printed]


def test_shards_notebook_decodes_with_the_datasets_tokenizer(executed):
    namespace, printed, _ = executed(notebook("04_shards_and_funnel.py"))
    assert namespace["tokenizer"].sha256 == namespace["manifest"].tokenizer_hash
    assert "warning" not in printed and "shuffle_and_write" in printed


def test_training_notebook_runs_from_the_command_line_without_spark_or_torch(params, tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "notebooks.run", str(notebook("05_training_run.py")),
         "--param", f"RUN_DIR={params['RUN_DIR']}", "--figures", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fingerprint matches" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "pandas" in imported and not imported & {"pyspark", "torch", "etl"}
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["05_training_run-cell04-1.png", "05_training_run-cell06-1.png"]


def test_a_failing_cell_is_named_by_notebook_and_number(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(f"{HEADER}\n# MAGIC %md\n# MAGIC # Title\n\n# COMMAND ----------\n\nX = 1\n\n"
                    "# COMMAND ----------\n\nY = X + MISSING\n")
    with pytest.raises(NotebookError, match=r"broken\.py, cell 3: NameError: name 'MISSING' is not defined"):
        run_notebook(path)
    assert run_notebook(path, {"MISSING": 2})["Y"] == 3  # parameters pre-fill the globals


def test_command_line_reports_errors_without_running(tmp_path, capsys):
    not_a_notebook = tmp_path / "plain.py"
    not_a_notebook.write_text("print('hello')\n")
    assert main([str(not_a_notebook)]) == 1
    assert "not a Databricks source notebook" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.py")]) == 1
    assert "No such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(not_a_notebook), "--param", "no-equals-sign"])
    assert exit_info.value.code == 2 and "must look like NAME=VALUE" in capsys.readouterr().err
