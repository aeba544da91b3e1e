"""Docs as tests: every shell command in README.md and docs/**/*.md works as a newcomer types it.

Each command carries a tag (an HTML comment on the line before its fenced block; the syntax is in
tests/system/docs_commands.py and docs/architecture.md):

- ``run``: run exactly as written, placeholders filled in from the page's table, in a subprocess;
  it must exit 0.
- ``check``: too long or too costly to run here (the whole demo, the whole suite, a refresh):
  ``--help`` must know every option it uses, the configs it names must load and validate through the
  real loaders (``etl.load_config.load_pipeline_config``, ``training.config.load_config``), ``make -n``
  must succeed for a make target and ``bash -n`` for a script.
- ``gpu`` / ``cluster``: needs GPUs, several nodes or a real object store, and the page says why near
  the command; checked like ``check``.

The commands run in a copy of the tracked tree (``git ls-files``) outside the repository, with the
project's virtualenv first on PATH (``.venv`` linked in, as after ``make setup``) and no PYTHONPATH:
a working directory inside the repository would let Spark's Python workers import Kiln from the
source tree and hide the bugs a newcomer meets. They share one small demo output: the demo's corpus
and tokenizer builders (``jobs/demo.py``) at a small size, then the README's own ETL and training
commands (``SHARED_OUTPUT``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from docs_commands import KINDS, DocCommand, read_commands

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
COMMANDS = read_commands(ROOT)
CHECKED = [c for c in COMMANDS if c.kind in ("check", "gpu", "cluster")]
# The README commands that build the output every other command uses, in order: its first ETL run
# and its first training launch.
SHARED_OUTPUT = ("python -m etl run ", "python -m training.launch ")
# The demo's inputs at a small size, and an erasure request a user would write (README's takedown.txt).
DEMO_INPUTS = """
from pathlib import Path
from jobs.demo import build_corpus, train_tokenizer
raw, eval_path, texts = build_corpus(Path("demo_out"), n_docs=400, planted=12)
train_tokenizer(texts, Path("demo_out"))
Path("demo_out/takedown.txt").write_text("forum/pii-0\\n")
"""
RUN_TIMEOUT_S = 900  # a hang fails; an idle 2-core machine runs each command in well under 2 minutes
OUTPUT_LINES = 25
CHECKER = Path(__file__).with_name("docs_commands.py")


def newcomer_env() -> dict[str, str]:
    """This environment without anything that points Python or Kiln at the repository or a test
    server; the virtualenv's bin first on PATH; Kiln's jar cache kept (downloads are not under test)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "AWS_", "KILN_", "SPARK_", "PYSPARK_", "VIRTUAL_ENV"))}
    if "KILN_CACHE" in os.environ:
        env["KILN_CACHE"] = os.environ["KILN_CACHE"]
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def shell(command: str, cwd: Path, timeout: int = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Runs one command line in bash; past the timeout its whole process group (Spark's JVM, the
    training ranks) is killed and the result says so."""
    process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=newcomer_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, process.returncode, output, "")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return subprocess.CompletedProcess(command, -1, output, f"timed out after {timeout} s")
    finally:  # also when pytest-timeout or Ctrl-C interrupts the wait
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def tail(result: subprocess.CompletedProcess) -> str:
    lines = (result.stdout + (result.stderr or "")).rstrip().splitlines()
    return "\n".join(lines[-OUTPUT_LINES:])


def shared_output() -> list[str]:
    """The filled-in SHARED_OUTPUT commands, as README.md writes them."""
    found = []
    for prefix in SHARED_OUTPUT:
        matches = [c.filled for c in COMMANDS if c.page == "README.md" and c.text.startswith(prefix)]
        assert matches, f"README.md has no `{prefix}...` command: update SHARED_OUTPUT in {Path(__file__).name}"
        found.append(matches[0])
    return found


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A fresh copy of the tracked tree, outside the repository, with the demo's inputs in demo_out/
    (where configs/demo_pipeline.yaml looks for them) at a small size."""
    tree = tmp_path_factory.mktemp("docs") / "kiln"
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not part of it
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    (tree / ".venv").symlink_to(VENV_BIN.parent)
    built = shell(f"python -c '{DEMO_INPUTS}'", tree)
    assert built.returncode == 0, f"building the demo's inputs failed:\n{tail(built)}"
    return tree


@pytest.fixture(scope="session")
def ran(workdir) -> dict[str, subprocess.CompletedProcess]:
    """Each run command's result by its filled-in text (a command documented twice runs once),
    starting with SHARED_OUTPUT; its first failure stops the rest of it."""
    results = {}
    for command in shared_output():
        results[command] = shell(command, workdir)
        if results[command].returncode != 0:
            break
    return results


def failure(command: DocCommand, result: subprocess.CompletedProcess) -> str:
    return f"{command.where}: `{command.filled}` exited {result.returncode}:\n{tail(result)}"


def test_commands_are_found():
    """The collector sees the README's commands (a parser that finds none would pass everything)."""
    shared_output()
    assert len(COMMANDS) > 30


def test_every_command_is_tagged():
    untagged = [f"{c.where}: `{c.text}`" for c in COMMANDS if c.kind is None and c.problem is None]
    mistakes = [f"{c.where}: {c.problem}" for c in COMMANDS if c.problem]
    assert not untagged, ("commands without a docs-test tag (<!-- docs-test: KIND --> before the block; "
                          f"kinds: {', '.join(KINDS)}):\n" + "\n".join(untagged))
    assert not mistakes, "\n".join(mistakes)


@pytest.mark.timeout(3 * RUN_TIMEOUT_S)  # the first one builds the shared output
@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind == "run"], ids=lambda c: c.where)
def test_run(command: DocCommand, workdir: Path, ran: dict):
    if command.filled not in ran:
        ran[command.filled] = shell(command.filled, workdir)
    result = ran[command.filled]
    broken = next((c for c in shared_output() if c != command.filled and c in ran and ran[c].returncode != 0), None)
    note = f"\n(the shared demo output is incomplete: `{broken}` failed)" if broken else ""
    assert result.returncode == 0, failure(command, result) + note


@pytest.fixture(scope="session")
def checked(workdir, ran) -> dict[tuple[str, str], list[str]]:
    """Each check/gpu/cluster command's problems, by (filled-in text, kind), found in one process
    after the shared output exists (a `check` launch resolves its data, as the launcher does)."""
    jobs = sorted({(c.filled, c.kind) for c in CHECKED})
    result = subprocess.run([str(VENV_BIN / "python"), str(CHECKER)], input=json.dumps(jobs), cwd=workdir,
                            env=newcomer_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, f"the checker failed:\n{tail(result)}"
    return dict(zip(jobs, json.loads(result.stdout.splitlines()[-1])))


@pytest.mark.timeout(3 * RUN_TIMEOUT_S)
@pytest.mark.parametrize("command", CHECKED, ids=lambda c: c.where)
def test_check(command: DocCommand, checked: dict):
    problems = checked[command.filled, command.kind]
    assert not problems, f"{command.where}: `{command.filled}`:\n" + "\n".join(problems)
