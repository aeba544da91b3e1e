"""spark-submit exactly as docs/cluster.md writes it, on a real Spark standalone cluster.

The cluster (etl/devtools/spark_cluster.py) is a master and two workers of one core each on 127.0.0.1,
each its own JVM, whose executors run in the workers' own folders with their own Python workers. The
command runs from a copy of the repository's tracked files outside the repository, after `make wheel`,
with the demo's inputs (jobs/demo.py's corpus, tokenizer and eval set, small) under demo_out/. Its Python
has Kiln's dependencies but not Kiln: a virtualenv whose only .pth file adds the project virtualenv's
site-packages, so Kiln's editable-install hook never runs, and Kiln's source folders are removed from the
copy after the wheel is built: Kiln reaches the executors through --py-files alone. The cluster loses an
executor in the middle of minhash_dedup, of tokenize and of shuffle_and_write (drills: etl/executor_drill.py),
and still every Delta table of the run holds the rows, and the dataset the bytes, of the same corpus run
through the same stages in one undisturbed local[2] session (the suite's shared demo run). On the same
cluster, jobs/train_on_spark.py trains through TorchDistributor, one rank on each worker, the samples and
weights of `python -m training.launch` with two ranks, and docs/operations.md's refresh takes a new input
file to the same tables and dataset as a local refresh.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

from etl.devtools.spark_cluster import StandaloneCluster, python_without_kiln, submit_env
from etl.devtools.same_results import dataset_bytes, table_rows
from etl.spark import INTERPRETED_PLANS, QUICK_COMPILER
from tests.training.subprocess_env import child_env
from tests.training.token_datasets import write_token_dataset

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "cluster.md"
OPERATIONS = ROOT / "docs" / "operations.md"
DOCUMENTED_MASTER = "spark://127.0.0.1:7077"


def documented(program: str, naming: str = "", page: Path = DOCS) -> str:
    """The one command of ``page``'s bash blocks that starts with ``program`` and holds ``naming``,
    continuation lines joined, a trailing comment left out."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL)
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for block in blocks
             for line in re.sub(r"\\\n\s*", "", block).splitlines()]
    commands = [line for line in lines if line.startswith(program) and naming in line]
    assert len(commands) == 1, f"expected one {program} command naming {naming!r} in {page}, found {commands}"
    return commands[0]


def documented_spark_submit(cluster: StandaloneCluster, job: str = "jobs/run_pipeline.py") -> str:
    """The documented spark-submit of ``job``, sent to ``cluster``'s master (the page's is 127.0.0.1:7077)."""
    command = documented("spark-submit", job)
    assert DOCUMENTED_MASTER in command
    return command.replace(DOCUMENTED_MASTER, cluster.url)


@pytest.fixture(scope="module")
def cluster_python(tmp_path_factory) -> Path:
    """A Python with the project's dependencies on its path but not Kiln, like a cluster's executors, and
    beside it the Spark settings of a small cluster's image (venv/conf/spark-defaults.conf): few shuffle and
    Delta-log partitions, as Kiln sets for local runs. Spark's defaults (200 and 50 tasks) made the refresh
    on this cluster spend most of its time starting empty tasks. Its jobs last seconds, so the driver and
    executor JVMs compile with C1 only, and the plans run interpreted, as Kiln's own short local jobs do
    (docs/cluster.md); their heaps are small, so one serial collector thread replaces G1's. With the serial
    collector and 4 shuffle partitions (one task per core twice) instead of 8, the demo and refresh runs'
    processes used about 81 and 52 CPU-seconds against 90 and 55 (one run each; the refresh was then of
    the demo's corpus)."""
    python = python_without_kiln(tmp_path_factory.mktemp("cluster-python") / "venv")
    (python.parent.parent / "conf").mkdir()
    (python.parent.parent / "conf" / "spark-defaults.conf").write_text(
        "spark.sql.shuffle.partitions 4\nspark.databricks.delta.snapshotPartitions 2\n"
        "spark.sql.sources.parallelPartitionDiscovery.parallelism 8\n"
        f"spark.driver.extraJavaOptions {QUICK_COMPILER} -XX:+UseSerialGC\n"
        f"spark.executor.extraJavaOptions {QUICK_COMPILER} -XX:+UseSerialGC\n"
        + "".join(f"{key} {value}\n" for key, value in INTERPRETED_PLANS.items()))
    check = subprocess.run([python, "-c", "import pyspark, delta, ftfy, etl"], cwd=python.parent, capture_output=True, text=True)
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
    # The corpus and tokenizer of the suite's shared demo run (tests/conftest.py demo_etl), to compare with.
    _, _, texts = build_corpus(work / "demo_out", n_docs=150, planted=6)
    train_tokenizer(texts, work / "demo_out", vocab_size=512)
    subprocess.run(["bash", "-c", documented("sed", "demo_pipeline.yaml")], cwd=work, check=True)  # the config, its paths absolute
    return work


def _env(python: Path) -> dict[str, str]:
    """spark-submit's environment, with the cluster image's settings beside ``python`` (cluster_python)."""
    return submit_env(python, python.parent.parent / "conf")


def _submit(command: str, work: Path, python: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=work, env=_env(python), capture_output=True, text=True,
                          timeout=1500)


DRILLED_STAGES = ("minhash_dedup", "tokenize", "shuffle_and_write")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cluster_python):
    """Two workers that lose executors to drills (etl/executor_drill.py): the first task of minhash_dedup's
    signatures, of tokenize's encoding and of shuffle_and_write's shard writes (after a shard) kills the
    executor it runs in."""
    folder = tmp_path_factory.mktemp("cluster")
    (folder / "drills").mkdir()
    env = {**_env(cluster_python), "KILN_EXECUTOR_DRILL": ",".join(DRILLED_STAGES),
           "KILN_EXECUTOR_DRILL_DIR": str(folder / "drills")}
    started = StandaloneCluster(folder, workers=2, cores=1, env=env)
    yield started.start()
    started.stop()


@pytest.mark.timeout(1800)
def test_documented_spark_submit_runs_every_demo_stage_on_a_cluster(submit_dir, cluster_python, cluster, demo_etl):
    command = documented_spark_submit(cluster)
    assert "--packages io.delta:delta-spark_2.13:4.0.1" in command and "--py-files dist/kiln-0.1.0.zip" in command
    done = _submit(command, submit_dir, cluster_python)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    config = yaml.safe_load((submit_dir / "configs" / "demo_pipeline.yaml").read_text())
    stages = ["ingest"] + [stage["name"] for stage in config["stages"]]
    for stage in stages:
        assert re.search(rf"^\[\s*{stage}\]\s+[\d,]+ in ->", done.stdout, re.M), (stage, done.stdout)
    output = submit_dir / "demo_out" / "etl"
    funnel = json.loads((output / "report" / "funnel.json").read_text())
    assert [step["stage"] for step in funnel["steps"]] == stages
    toxicity = next(step for step in funnel["steps"] if step["stage"] == "toxicity")
    assert toxicity["rejected"], toxicity  # the planted abusive documents, scored with the wheel's word lists
    assert all(step["docs_in"] == step["docs_out"] + sum(step["rejected"].values()) for step in funnel["steps"])
    # The work ran on the workers, each executor in a folder of its own; each drill killed one, which the
    # cluster replaced, and the stage's lost tasks ran again.
    for i in range(2):
        assert list((cluster.folder / f"worker-{i}").glob("app-*/*/stderr")), f"worker {i} ran no executor"
    assert sorted(p.name for p in (cluster.folder / "drills").iterdir()) == sorted(DRILLED_STAGES)
    executors = list(cluster.folder.glob("worker-*/app-*/*/stderr"))
    assert len(executors) >= 2 + len(DRILLED_STAGES), executors
    # The same rows in every Delta table (no document lost or doubled), and the same dataset bytes (no stray
    # shard files), as the undisturbed local[2] run of the same corpus.
    mine, local = table_rows(output, submit_dir / "demo_out"), table_rows(demo_etl["etl"], demo_etl["out"])
    assert sorted(mine) == sorted(local)
    differ = [name for name in mine if mine[name] != local[name]]
    assert not differ, f"tables whose rows differ from the local[2] run's: {differ}"
    assert dataset_bytes(output / "dataset") == dataset_bytes(demo_etl["etl"] / "dataset")


@pytest.mark.timeout(1200)
def test_documented_refresh_on_the_cluster_matches_local(submit_dir, cluster_python, cluster, refresh_nights, tmp_path):
    """docs/operations.md's refresh on a cluster, taking over from the first of the suite's two local
    refreshes (tests/conftest.py refresh_nights: incremental exact_dedup and minhash_dedup, whose indexes
    are MERGEd into, with checkpoints on a cluster, and the dataset's stages) once the second night's new
    input file had arrived, leaves the tables and the dataset version that the local second night left."""
    on_cluster = tmp_path / "out"
    shutil.copytree(refresh_nights["night1"], on_cluster)  # the cluster takes over from a copy
    config = yaml.safe_load(Path(refresh_nights["config"]).read_text())
    (tmp_path / "nightly.yaml").write_text(yaml.safe_dump({**config, "output": str(on_cluster)}))
    command = documented("spark-submit", "jobs/refresh.py", page=OPERATIONS).replace(
        "spark-submit", f"spark-submit --master {cluster.url}", 1)
    done = _submit(command.replace("configs/nightly_pipeline.yaml", str(tmp_path / "nightly.yaml")), submit_dir, cluster_python)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert re.search(r"^\[\s*accumulate\]", done.stdout, re.M), done.stdout[-4000:]
    assert "published: dataset v=2" in done.stdout, done.stdout[-4000:]

    local = refresh_nights["out"]
    mine, expected = table_rows(on_cluster, on_cluster), table_rows(local, local)
    new_file = refresh_nights["inputs"] / "batch2.jsonl"
    assert any(str(new_file) in row for row in mine["_state/refresh_files"]), mine["_state/refresh_files"]
    assert sorted(mine) == sorted(expected)
    differ = [name for name in mine if mine[name] != expected[name]]
    assert not differ, f"tables whose rows differ from the local refresh's: {differ}"
    assert dataset_bytes(on_cluster / "dataset") == dataset_bytes(local / "dataset")


def test_spark_submit_without_delta_is_one_line_naming_the_fix(submit_dir, cluster_python, cluster):
    command = documented_spark_submit(cluster).replace("--packages io.delta:delta-spark_2.13:4.0.1 ", "")
    done = _submit(command, submit_dir, cluster_python)
    output = done.stdout + done.stderr  # spark-submit passes the Python driver's stderr to its stdout
    assert done.returncode == 2, output[-4000:]
    assert ("error: Delta Lake's classes are not in Spark's JVM: pass --packages io.delta:delta-spark_2.13:4.0.1 "
            "to spark-submit (or --jars with the jars of scripts/fetch_jars.sh)\n") in output, output[-4000:]
    assert "Traceback" not in output and "ClassNotFoundException" not in output, output[-4000:]


def test_spark_submit_without_the_wheel_is_one_line_naming_the_fix(submit_dir, cluster_python, cluster):
    command = documented_spark_submit(cluster).replace("--py-files dist/kiln-0.1.0.zip ", "")
    done = _submit(command, submit_dir, cluster_python)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    assert ("error: Kiln's code is not on this Python's path (No module named 'etl'): pass --py-files "
            "dist/kiln-0.1.0.zip to spark-submit (`make wheel` builds it)") in output, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


def test_executors_without_kiln_are_one_line_naming_the_fix(submit_dir, cluster_python, cluster):
    """The driver imports Kiln (from the zip on its own path) but the executors get nothing to import. One
    executor is enough to say so, and one fewer JVM starts."""
    command = documented_spark_submit(cluster).replace("--py-files dist/kiln-0.1.0.zip ", "--total-executor-cores 1 ")
    done = _submit(f"PYTHONPATH=dist/kiln-0.1.0.zip {command}", submit_dir, cluster_python)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-4000:]
    assert ("error: the executors cannot import Kiln (No module named 'etl'): pass --py-files dist/kiln-0.1.0.zip "
            "to spark-submit") in output, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


def test_zip_for_py_files_carries_the_word_lists(submit_dir, cluster_python):
    """The toxicity stage's built-in lists load from the zip (package data read with importlib.resources)."""
    code = ("import etl; from etl.text.toxicity_scorers import WordListScorer; "
            "print(etl.__file__); print(sorted(WordListScorer.with_lists().lists))")
    done = subprocess.run([cluster_python, "-c", code], cwd=submit_dir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": "dist/kiln-0.1.0.zip"})
    assert done.returncode == 0, done.stderr
    where, languages = done.stdout.splitlines()
    assert where.endswith("dist/kiln-0.1.0.zip/etl/__init__.py") and languages == "['de', 'en', 'es', 'fr']"


@pytest.mark.parametrize("name", ["databricks_refresh_job.json", "databricks_etl_then_train_job.json"])
def test_databricks_job_installs_the_cluster_extra(name):
    """Each task installs the wheel and its side's cluster extra (ranges, so a runtime keeps its own
    versions), and runs a job script that exists; a training task runs after the ETL task."""
    job = json.loads((ROOT / "jobs" / "schedules" / name).read_text())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for task in job["tasks"]:
        script = task["spark_python_task"]["python_file"].removeprefix("dbfs:/kiln/")
        assert (ROOT / script).is_file(), script
        extra = extras["cluster-training" if script == "jobs/train_on_spark.py" else "cluster"]
        libraries = task["libraries"]
        assert [lib["pypi"]["package"] for lib in libraries if "pypi" in lib] == extra
        assert [lib["whl"] for lib in libraries if "whl" in lib] == ["dbfs:/kiln/dist/kiln-0.1.0-py3-none-any.whl"]
        assert not [r for r in extra if "==" in r], "the cluster extras give ranges, so a runtime keeps its own versions"
        if script == "jobs/train_on_spark.py":
            assert [d["task_key"] for d in task["depends_on"]] == ["etl"]


TRAIN_STEPS = 6


def _train_config(path: Path, data: Path, output_dir: Path) -> None:
    """A tiny training run with absolute paths (the ranks open them on the workers) and a sample ledger."""
    path.write_text(textwrap.dedent(f"""\
        output_dir: {output_dir}
        model: {{preset: tiny, overrides: {{d_model: 32, n_heads: 2, max_seq_len: 32}}}}
        data: {{datasets: [{{path: {data}}}], num_workers: 0, eval_split: null}}
        train: {{max_steps: {TRAIN_STEPS}, global_batch_size: 8, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        schedule: {{warmup_steps: 0, decay: constant}}
        checkpoint: {{every_steps: {TRAIN_STEPS}}}
        logging: {{every_steps: 1, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))


def _ledger(run_dir: Path) -> dict[str, list]:
    """Each rank's ledger: (step, positions, sample ids) per record."""
    return {path.name: [(r["step"], r["positions"], r["sample_ids"]) for r in map(json.loads, path.read_text().splitlines())]
            for path in sorted((run_dir / "ledger").glob("rank-*.jsonl"))}


@pytest.mark.timeout(900)
def test_training_through_torch_distributor_on_the_cluster_matches_launch(submit_dir, cluster_python, cluster):
    """The documented spark-submit of jobs/train_on_spark.py: two ranks in two Spark tasks on the two workers
    (TorchDistributor, local_mode=False, gloo) train the sample sequence and the weights of
    `python -m training.launch --nproc-per-node 2` with the same config."""
    import torch

    from training.weights.checkpoint_reader import read_model_state

    work = submit_dir / "demo_out" / "torch_distributor"
    write_token_dataset(str(work / "data"), {"train": 200}, seq_len=32, size_limit=1 << 11)
    _train_config(submit_dir / "demo_out" / "cluster_train.yaml", work / "data", work / "runs")
    command = documented_spark_submit(cluster, "jobs/train_on_spark.py")
    earlier_apps = set(cluster.folder.glob("worker-*/app-*"))
    done = _submit(command + " name=spark", submit_dir, cluster_python)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    # The two ranks ran in executors, one on each worker, not in the driver.
    assert "Started distributed training with 2 executor processes" in done.stdout, done.stdout[-4000:]
    assert sorted(app.parent.name for app in set(cluster.folder.glob("worker-*/app-*")) - earlier_apps) == ["worker-0", "worker-1"]
    launch = subprocess.run([sys.executable, "-m", "training.launch", str(submit_dir / "demo_out" / "cluster_train.yaml"),
                             "--nproc-per-node", "2", "name=launch"], cwd=ROOT, env=child_env(),
                            capture_output=True, text=True, timeout=600)
    assert launch.returncode == 0, (launch.stdout + launch.stderr)[-6000:]

    spark_run, launched = work / "runs" / "spark", work / "runs" / "launch"
    ledger = _ledger(spark_run)
    assert len(ledger) == 2 and ledger == _ledger(launched)
    records = [record for rank in ledger.values() for record in rank]
    assert {step for step, _, _ in records} == set(range(1, TRAIN_STEPS + 1))
    assert sorted(p for _, positions, _ in records for p in positions) == list(range(TRAIN_STEPS * 8))
    _, expected = read_model_state(str(launched / "checkpoints"))
    _, got = read_model_state(str(spark_run / "checkpoints"))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
