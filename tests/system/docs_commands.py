"""The shell commands README.md and docs/**/*.md document, with the docs-test tag each one carries.

A command is a logical line (backslash continuations joined, `# comments` dropped) of a fenced block
marked bash, sh, shell or console (console: only `$ ` lines), or of an unmarked block whose first
line starts with a program (python, make, spark-submit, ...); there an indented line continues the
line above (a usage synopsis). The line right before the block's
opening fence tags its commands, one kind per command in order, or one kind for all of them:

    <!-- docs-test: run -->
    <!-- docs-test: run, gpu, cluster -->

Placeholders come from comments on the page; a definition applies to the blocks below it:

    <!-- docs-test placeholders
    CHECKPOINT = runs/tiny/checkpoints
    -->
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

KINDS = {
    "run": "run exactly as written (placeholders filled in) in a copy of the tree; must exit 0",
    "check": "not run: --help knows every option, configs load through the real loaders, make -n succeeds",
    "gpu": "needs GPUs (the page says why); checked like `check`",
    "cluster": "needs a real cluster or object store (the page says why); checked like `check`",
}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PROGRAMS = ("python", "python3", "make", "spark-submit", "pip", "torchrun", "export", "bash", "databricks",
            ".venv/", "scripts/", "./")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
TAG = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
PLACEHOLDERS = re.compile(r"<!--\s*docs-test placeholders\b[^\n]*\n(.*?)-->", re.S)
# Words that say why a command is not run, one of which must be near a gpu / cluster tag.
REASON_WORDS = {"gpu": re.compile(r"\bGPUs?\b", re.I), "cluster": re.compile(r"\bcluster|\bnodes?\b|object[- ]store", re.I)}
REASON_LINES = 8


@dataclass(frozen=True)
class DocCommand:
    page: str                       # path relative to the repository root
    line: int                       # 1-based line of the command's first line
    text: str                       # as documented: continuations joined, comment dropped
    kind: str | None                # a key of KINDS; None when untagged
    placeholders: dict = field(default_factory=dict, compare=False, hash=False)
    problem: str | None = None      # a tagging mistake to report

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def filled(self) -> str:
        """The command with the page's placeholders replaced by their values."""
        text = self.text
        for name in sorted(self.placeholders, key=len, reverse=True):
            text = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w/-])", self.placeholders[name], text)
        return text


def documented_pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # after whitespace, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def block_commands(lines: list[str], language: str) -> list[tuple[int, str]]:
    """(offset in the block, command) for each command of a block's lines."""
    commands, pending, start = [], "", 0
    for offset, raw in enumerate(lines):
        line = raw.strip()
        if not pending:
            if language == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            start = offset
        line = strip_comment(line)
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not language and raw[:1].isspace() and commands:  # an indented synopsis line
            commands[-1] = (commands[-1][0], f"{commands[-1][1]} {command}")
        elif command:
            commands.append((start, command))
    return commands


def is_command_block(language: str, lines: list[str]) -> bool:
    if language in SHELL_LANGUAGES:
        return True
    if language:
        return False
    first = next((line.strip() for line in lines if line.strip() and not line.strip().startswith("#")), "")
    return first.startswith(PROGRAMS)


def parse_placeholders(body: str) -> dict[str, str]:
    values = {}
    for line in body.splitlines():
        if line.strip():
            name, sep, value = line.partition("=")
            values[name.strip()] = value.strip() if sep else None
    return values


def read_page(root: Path, page: Path) -> list[DocCommand]:
    """Every command on one page, tagged or not."""
    relative = page.relative_to(root).as_posix()
    text = page.read_text(encoding="utf-8")
    lines = text.splitlines()
    definitions = {text.count("\n", 0, m.start()): parse_placeholders(m.group(1)) for m in PLACEHOLDERS.finditer(text)}
    placeholders: dict[str, str] = {}
    found, i = [], 0
    while i < len(lines):
        placeholders.update(definitions.get(i, {}))
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence.group(1))), len(lines))
        body, language = lines[i + 1:end], fence.group(2).lower()
        tag = TAG.match(lines[i - 1]) if i else None
        if is_command_block(language, body):
            commands = block_commands(body, language)
            kinds = [k.strip() for k in tag.group(1).split(",")] if tag else [None] * len(commands)
            problem = None
            if len(kinds) == 1 and len(commands) > 1:
                kinds *= len(commands)
            if len(kinds) != len(commands):
                problem = f"the tag names {len(kinds)} kinds for {len(commands)} commands"
                kinds = (kinds + [None] * len(commands))[:len(commands)]
            unknown = [k for k in kinds if k is not None and k not in KINDS]
            if unknown:
                problem = f"unknown kind {unknown[0]!r}; kinds: {', '.join(KINDS)}"
            reason = reason_text(lines, i, end, body)
            for (offset, command), kind in zip(commands, kinds):
                missing_reason = kind in REASON_WORDS and not REASON_WORDS[kind].search(reason)
                found.append(DocCommand(
                    relative, i + 2 + offset, command, kind, dict(placeholders),
                    problem or (f"tagged {kind}, but no sentence near it says why (a word like "
                                f"{REASON_WORDS[kind].pattern!r})" if missing_reason else None)))
        elif tag:
            found.append(DocCommand(relative, i + 1, " ".join(body).strip(), None, {},
                                    "a docs-test tag on a block that holds no command"))
        i = end + 1
    return found


def reason_text(lines: list[str], start: int, end: int, body: list[str]) -> str:
    """The prose around a block (its comments included) that must say why it is not run."""
    before = [line for line in lines[max(0, start - REASON_LINES):start] if "docs-test" not in line]
    after = lines[end + 1:end + 1 + REASON_LINES]
    return "\n".join(before + [line for line in body if "#" in line] + after)


def read_commands(root: Path) -> list[DocCommand]:
    return [command for page in documented_pages(root) for command in read_page(root, page)]


def words(command: str) -> tuple[list[str], list[str]]:
    """The command's words outside a synopsis' [optional parts], and every word without those brackets.
    A YAML list in an argument (`data.datasets=[{...}]`) is not an optional part."""
    required, every, depth = [], [], 0
    for word in shlex.split(command):
        opening = len(word) - len(word.lstrip("[")) if not word.lstrip("[").startswith("{") else 0
        depth += opening
        closing = min(depth, len(word) - len(word.rstrip("]")))
        bare = word[opening:len(word) - closing]
        if bare and bare != "...":
            every.append(bare)
            if depth == 0:
                required.append(bare)
        depth -= closing
    return required, every


# --- Checking a command without running it: `python tests/system/docs_commands.py` in the working directory
# reads [[command, kind], ...] (filled in) as JSON on stdin and prints each one's problems as a JSON list
# of lists. One process checks them all, so torch, pyspark and the stages are imported once.

SCRIPT_COMMANDS = {"jobs/run_pipeline.py": "etl run", "jobs/refresh.py": "etl refresh",
                   "jobs/train_on_spark.py": "training.launch"}
TRAINING_CONFIG_COMMANDS = ("training.launch", "training.preflight", "training.sweep", "training.train")


def option_values(args: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Positional words and each option's values. An option takes the next word unless that is an
    option too (flags at the end or before another option need no special case)."""
    positional, values, i = [], {}, 0
    while i < len(args):
        word = args[i]
        if word.startswith("-") and not re.fullmatch(r"-\d[\d.e]*", word):
            name, sep, value = word.partition("=")
            if not sep and i + 1 < len(args) and not args[i + 1].startswith("-"):
                value, i = args[i + 1], i + 1
            values.setdefault(name, []).append(value)
        else:
            positional.append(word)
        i += 1
    return positional, values


class Checker:
    """Runs --help in this process (runpy) and loads configs through Kiln's own loaders."""

    def __init__(self):
        self.helps: dict[tuple, tuple[int, str]] = {}

    def help(self, entry: tuple[str, ...]) -> tuple[int, str]:
        """(exit status, text) of ``entry --help``: ("-m", module, *sub) or (script,) or a program."""
        if entry not in self.helps:
            self.helps[entry] = self._help(entry)
        return self.helps[entry]

    @staticmethod
    def _help(entry: tuple[str, ...]) -> tuple[int, str]:
        import contextlib
        import io
        import runpy
        import subprocess
        import traceback

        if entry[0] != "-m" and not entry[0].endswith(".py"):
            result = subprocess.run([*entry, "--help"], capture_output=True, text=True)
            return result.returncode, result.stdout + result.stderr
        text, argv, status = io.StringIO(), sys.argv, 0
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                if entry[0] == "-m":
                    sys.argv = [entry[1], *entry[2:], "--help"]
                    runpy.run_module(entry[1], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = [entry[0], "--help"]
                    runpy.run_path(entry[0], run_name="__main__")
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except Exception:  # reported as the check's problem, with its traceback's last line
            status = 1
            text.write(traceback.format_exc())
        finally:
            sys.argv = argv
        return status, text.getvalue()

    def known_options(self, entry: tuple[str, ...], args: list[str]) -> list[str]:
        status, text = self.help(entry)
        shown = " ".join(entry).replace("-m ", "python -m ", 1)
        if status != 0:
            return [f"`{shown} --help` exited {status}: {text.strip().splitlines()[-1:] or ''}"]
        problems = []
        for word in args:
            option = word.partition("=")[0]
            if word.startswith("-") and not re.fullmatch(r"-\d[\d.e]*", word) and \
                    not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                problems.append(f"`{shown} --help` does not know {option}")
        return problems

    @staticmethod
    def config_loads(command: str, args: list[str], kind: str) -> list[str]:
        """Loads and validates the config a command names as the command does before Spark or any rank
        starts. Data a gpu or cluster command names is on that machine, not here: for those, only the
        config and the ranks it is launched on are checked."""
        from shards.config import ConfigError

        positional, values = option_values(args)
        try:
            if command in ("etl run", "etl refresh", "etl erase"):
                from etl.load_config import load_pipeline_config

                path = (values.get("--config") or positional)[0]
                config, stages = load_pipeline_config(path, values.get("--set", []), check_inputs=command != "etl erase")
                if command == "etl refresh":
                    from etl.refresh import check_refreshable

                    check_refreshable(config, stages)
                if command == "etl erase":
                    from etl.erase import read_request

                    read_request(values["--ids"][0])
            elif command in TRAINING_CONFIG_COMMANDS:
                from training.config import check_world_size, load_config

                config = load_config(positional[0], [p for p in positional[1:] if "=" in p])
                nnodes, nproc = (int(values.get(f"--{key}", ["1"])[0]) for key in ("nnodes", "nproc-per-node"))
                if "--num-processes" in values:  # jobs/train_on_spark.py: one rank per Spark task
                    nnodes, nproc = int(values["--num-processes"][0]), 1
                check_world_size(config, nnodes * nproc, nproc)
                if command == "training.launch" and kind == "check":
                    from training.launch import validate

                    validate(config, nnodes, nproc)
            elif command == "training.memory" and "--config" in values:
                from training.config import load_config

                load_config(values["--config"][0], values.get("--override", []))
        except (ConfigError, FileNotFoundError) as err:
            return [f"config error: {err}"]
        except RuntimeError as err:  # ErasureError: a request file that is missing or malformed
            return [f"{type(err).__name__}: {err}"]
        return []

    def check(self, command: str, kind: str) -> list[str]:
        required, every = words(command)
        program = every[0]
        if program in ("python", "python3") and every[1:2] == ["-m"]:
            module = every[2]
            sub = every[3:4] if module == "etl" and not every[3:4] == ["--help"] else []
            entry = ("-m", module, *sub)
            start = 1 + len(entry)
            name = " ".join([module, *sub])
            return self.known_options(entry, every[start:]) + self.config_loads(name, required[start:], kind)
        if program in ("python", "python3") and every[1:2] and every[1].endswith(".py"):
            if not Path(every[1]).is_file():
                return [f"{every[1]}: no such script in the repository"]
            return self.known_options((every[1],), every[2:])
        if program == "spark-submit":
            script = next((i for i, w in enumerate(every) if w.endswith(".py")), None)
            if script is None or every[script] not in SCRIPT_COMMANDS:
                return [f"spark-submit runs no known job script (one of {', '.join(SCRIPT_COMMANDS)})"]
            _, options = option_values(every[1:script])
            shipped = [f for value in options.get("--py-files", []) for f in value.split(",")
                       if not f.endswith((".zip", ".egg", ".py"))]
            problems = [f"--py-files {', '.join(shipped)}: the executors import only .zip, .egg and .py files"
                        ] if shipped else []  # Spark puts only these on the executors' Python path
            reads_delta = SCRIPT_COMMANDS[every[script]].startswith("etl")  # training reads shards, not tables
            if reads_delta and not any("io.delta:delta-spark" in p for p in options.get("--packages", [])) \
                    and "--jars" not in options:
                problems.append("no Delta Lake jars: spark-submit needs --packages io.delta:delta-spark_... (or --jars)")
            if problems:
                return problems
            # the job scripts take `--config CONFIG` for the subcommand's positional CONFIG (submit_main)
            return (self.known_options(("spark-submit",), every[1:script])
                    + self.known_options((every[script],), [w for w in every[script + 1:] if w != "--config"])
                    + self.config_loads(SCRIPT_COMMANDS[every[script]], required[script + 1:], kind))
        if program == "make":
            return self.succeeds(["make", "-n", *every[1:]])
        if program.endswith(".sh"):
            return self.succeeds(["bash", "-n", program])
        if program == "pip" or program.endswith("/pip"):
            return self.known_options((program, every[1]), every[2:])
        if program == "export":
            return [] if re.fullmatch(r"[A-Za-z_]\w*=\S*", " ".join(every[1:])) else ["not a `export NAME=value`"]
        return [f"no check for {program!r}: tag it run, or teach tests/system/docs_commands.py to check it"]

    @staticmethod
    def succeeds(argv: list[str]) -> list[str]:
        import subprocess

        result = subprocess.run(argv, capture_output=True, text=True)
        last = (result.stdout + result.stderr).strip().splitlines()[-1:]
        return [] if result.returncode == 0 else [f"`{' '.join(argv)}` exited {result.returncode}: {last}"]


if __name__ == "__main__":
    import json
    import os

    sys.path.insert(0, os.getcwd())  # as `python -m` does: Kiln from the working directory
    checker = Checker()
    print(json.dumps([checker.check(command, kind) for command, kind in json.load(sys.stdin)]))
