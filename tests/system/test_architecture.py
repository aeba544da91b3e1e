"""The package rule of docs/architecture.md, enforced: which package may import which, no import cycle,
no function-local import of Kiln's own code without a comment saying why, and no repeated code."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KILN = ("etl", "training", "shards")
BIN = Path(sys.executable).parent


def test_package_rule_and_no_cycles():
    """import-linter's contracts in pyproject.toml: etl without torch, training without Spark, shards
    without either, and no cycle among sibling modules at any depth."""
    result = subprocess.run([BIN / "lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


def _local_kiln_imports(path: Path) -> list[tuple[int, str]]:
    """(line, source) of every import of Kiln's own modules inside a function of ``path``."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["etl"]  # relative: always Kiln's own
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[0] in KILN for name in names):
                found.append((node.lineno, lines[node.lineno - 1]))
    return found


def test_function_local_imports_of_kiln_say_why():
    """A function-local import of Kiln's own code hides a dependency; one is allowed only where a heavy
    optional dependency justifies it, and a comment on the line (or the line above) says so."""
    unexplained = []
    for package in KILN:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for lineno, line in _local_kiln_imports(path):
                above = lines[lineno - 2].strip() if lineno > 1 else ""
                if "#" not in line and not above.startswith("#"):
                    unexplained.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not unexplained, "function-local imports of Kiln's own modules without a reason:\n" + "\n".join(unexplained)


def test_no_repeated_code():
    """pylint's duplicate-code check (6 similar lines, imports, docstrings and comments ignored) finds nothing
    inside etl/ or training/."""
    result = subprocess.run(
        [sys.executable, "-m", "pylint", "--disable=all", "--enable=duplicate-code", "--min-similarity-lines=6",
         "--score=n", "etl", "training"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "R0801" not in result.stdout, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
