"""spark-submit exactly as docs/cluster.md writes it, the way a cluster runs it.

The command runs on local[2] from a copy of the repository's tracked files outside the repository,
after `make wheel`, with the demo's inputs (jobs/demo.py's corpus, tokenizer and eval set, small)
under demo_out/. Its Python has Kiln's dependencies but not Kiln: a virtualenv whose only .pth file
adds the project virtualenv's site-packages, so Kiln's editable-install hook never runs. Kiln's
source folders are removed from the copy after the wheel is built, since local executors share the
working directory and Python puts it on their path: Kiln must reach them through --py-files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "cluster.md"


def documented_spark_submit() -> str:
    """The spark-submit command of docs/cluster.md's fenced blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.DOTALL)
    commands = [re.sub(r"\\\n\s*", "", block).strip() for block in blocks if block.startswith("spark-submit")]
    assert len(commands) == 1, f"expected one spark-submit block in {DOCS}, found {commands}"
    return commands[0]


@pytest.fixture(scope="module")
def cluster_python(tmp_path_factory) -> Path:
    """A Python with the project's dependencies on its path but not Kiln, like a cluster's executors."""
    venv = tmp_path_factory.mktemp("cluster-python")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.check_output([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    check = subprocess.run([python, "-c", "import pyspark, delta, ftfy, etl"], cwd=venv, capture_output=True, text=True)
    assert "No module named 'etl'" in check.stderr, check.stderr  # the dependencies are there, Kiln is not
    return python


@pytest.fixture(scope="module")
def submit_dir(tmp_path_factory) -> Path:
    """The tracked files, `make wheel` run there, the demo's inputs, and no Kiln source."""
    from jobs.demo import build_corpus, train_tokenizer

    work = tmp_path_factory.mktemp("submit")
    for name in subprocess.check_output(["git", "ls-files"], cwd=ROOT, text=True).splitlines():
        if (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    subprocess.run(["make", "wheel", f"PY={sys.executable}"], cwd=work, check=True, capture_output=True)
    for package in ("etl", "shards", "training"):
        shutil.rmtree(work / package)
    _, _, texts = build_corpus(work / "demo_out", n_docs=150, planted=8)
    train_tokenizer(texts, work / "demo_out", vocab_size=512)
    return work


def _submit(command: str, work: Path, python: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AWS_", "KILN_", "PYSPARK_", "SPARK_")) and key != "PYTHONPATH"}
    env.update(PYSPARK_PYTHON=str(python), PYSPARK_DRIVER_PYTHON=str(python), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false",
               # spark-submit from the project's virtualenv; `python` is the cluster's.
               PATH=f"{python.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.timeout(1800)
def test_documented_spark_submit_runs_every_demo_stage(submit_dir, cluster_python):
    command = documented_spark_submit()
    assert "--packages io.delta:delta-spark_2.13:4.0.1" in command and "--py-files dist/kiln-0.1.0.zip" in command
    done = _submit(command, submit_dir, cluster_python)
    assert done.returncode == 0, done.stderr[-6000:]
    config = yaml.safe_load((submit_dir / "configs" / "demo_pipeline.yaml").read_text())
    stages = ["ingest"] + [stage["name"] for stage in config["stages"]]
    for stage in stages:
        assert re.search(rf"^\[\s*{stage}\]\s+[\d,]+ in ->", done.stdout, re.M), (stage, done.stdout)
    funnel = json.loads((submit_dir / "demo_out" / "etl" / "report" / "funnel.json").read_text())
    assert [step["stage"] for step in funnel["steps"]] == stages
    toxicity = next(step for step in funnel["steps"] if step["stage"] == "toxicity")
    assert toxicity["rejected"], toxicity  # the planted abusive documents, scored with the wheel's word lists
    assert (submit_dir / "demo_out" / "etl" / "dataset").is_dir()


def test_spark_submit_without_delta_is_one_line_naming_the_fix(submit_dir, cluster_python):
    command = documented_spark_submit().replace("--packages io.delta:delta-spark_2.13:4.0.1 ", "")
    done = _submit(command, submit_dir, cluster_python)
    output = done.stdout + done.stderr  # spark-submit passes the Python driver's stderr to its stdout
    assert done.returncode == 2, output[-4000:]
    assert ("error: Delta Lake's classes are not in Spark's JVM: pass --packages io.delta:delta-spark_2.13:4.0.1 "
            "to spark-submit (or --jars with the jars of scripts/fetch_jars.sh)\n") in output, output[-4000:]
    assert "Traceback" not in output and "ClassNotFoundException" not in output, output[-4000:]


def test_zip_for_py_files_carries_the_word_lists(submit_dir, cluster_python):
    """The toxicity stage's built-in lists load from the zip (package data read with importlib.resources)."""
    code = ("import etl; from etl.text.toxicity_scorers import WordListScorer; "
            "print(etl.__file__); print(sorted(WordListScorer.with_lists().lists))")
    done = subprocess.run([cluster_python, "-c", code], cwd=submit_dir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": "dist/kiln-0.1.0.zip"})
    assert done.returncode == 0, done.stderr
    where, languages = done.stdout.splitlines()
    assert where.endswith("dist/kiln-0.1.0.zip/etl/__init__.py") and languages == "['de', 'en', 'es', 'fr']"


def test_databricks_job_installs_the_cluster_extra():
    job = json.loads((ROOT / "jobs" / "schedules" / "databricks_refresh_job.json").read_text())
    libraries = job["tasks"][0]["libraries"]
    cluster = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cluster"]
    assert [lib["pypi"]["package"] for lib in libraries if "pypi" in lib] == cluster
    assert [lib["whl"] for lib in libraries if "whl" in lib] == ["dbfs:/kiln/dist/kiln-0.1.0-py3-none-any.whl"]
    assert not [r for r in cluster if "==" in r], "the cluster extra gives ranges, so a runtime keeps its own versions"
