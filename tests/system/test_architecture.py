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


def _local_imports(func: ast.AST) -> list[ast.stmt]:
    """The import statements inside ``func``, nested blocks included, in line order."""
    return sorted((node for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom))),
                  key=lambda node: node.lineno)


def _is_kiln(node: ast.stmt) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in KILN
    return any(alias.name.split(".")[0] in KILN for alias in node.names)


def unexplained_local_imports(path: Path) -> list[str]:
    """Functions of ``path`` importing Kiln's own modules with no comment among their local imports (on an
    import line, or on the line above the first): a function's imports are one block with one reason."""
    lines = path.read_text().splitlines()
    found = []
    for func in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        imports = _local_imports(func)
        kiln = [node for node in imports if _is_kiln(node)]
        if not kiln:
            continue
        first = imports[0].lineno
        commented = [lines[n - 1] for node in imports for n in range(node.lineno, node.end_lineno + 1)]
        commented.append(lines[first - 2] if first > 1 else "")
        if not any("#" in line for line in commented):
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}" for node in kiln]
    return found


def test_function_local_imports_of_kiln_say_why():
    """A function-local import of Kiln's own code hides a dependency; one is allowed only where a heavy
    optional dependency justifies it, and a comment among the function's imports says so."""
    unexplained = [line for package in KILN for path in sorted((ROOT / package).rglob("*.py"))
                   for line in unexplained_local_imports(path)]
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
