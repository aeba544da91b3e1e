"""Writes docs/config_reference.md from the config dataclasses themselves.

    .venv/bin/python scripts/config_reference.py           # rewrite the page
    .venv/bin/python scripts/config_reference.py --check   # exit 1 when the page is out of date

Every key of the pipeline YAML (each stage's params included) and of the training YAML is listed
with its type, default and the comment written beside it in the source, so the reference cannot
drift from the code: tests/system/test_config_reference.py runs --check.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAGE = ROOT / "docs" / "config_reference.md"
FIELD_LINE = re.compile(r"^\s+(\w+)\s*:[^=#]*(?:=[^#]*)?(?:#\s*(.*))?$")


def field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """Each field's (own comment, group comment). Its own: the `# ...` lines just above it plus
    the one at the end of its line. A comment block that follows a blank line heads a group: the
    fields after it, up to the next blank line."""
    comments, pending, group, after_blank = {}, [], "", True
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            group, after_blank, pending = "", True, []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        if pending and after_blank:
            group, pending = " ".join(pending), []
        after_blank = False
        match = FIELD_LINE.match(line)
        if match and not stripped.startswith(("def ", "@", "return")):
            own = " ".join(pending + ([match.group(2)] if match.group(2) else []))
            comments.setdefault(match.group(1), (own, group))
        pending = []
    return comments


def type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`" if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(names) + (" \\| null" if type(None) in args else "")
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"map[{type_name(args[0])}, {type_name(args[1])}]"
    if dataclasses.is_dataclass(tp):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    if tp is typing.Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(its defaults)"
    else:
        return "**required**"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def nested(tp) -> list[type]:
    """Dataclasses a field's type refers to, in order."""
    found = [tp] if dataclasses.is_dataclass(tp) else []
    for arg in typing.get_args(tp):
        found += nested(arg)
    return found


def section(cls: type, title: str, seen: set) -> list[str]:
    """A table for `cls`, then one for each dataclass its fields use (once each)."""
    seen.add(cls)
    doc = inspect.getdoc(cls) or ""
    lines = [f"### {title}", ""]
    if doc and not doc.startswith(cls.__name__ + "("):
        lines += [doc.split("\n\n")[0].replace("\n", " "), ""]
    hints, comments = typing.get_type_hints(cls), field_comments(cls)
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    later, current_group = [], ""
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        own, group = (text.replace("|", "\\|") for text in comments.get(f.name, ("", "")))
        if group and group != current_group:
            lines.append(f"| *{group}* | | | |")
        current_group = group
        lines.append(f"| `{f.name}` | {type_name(hints[f.name])} | {default_text(f)} | {own} |")
        later += [c for c in nested(hints[f.name]) if c not in seen and c not in later]
    lines.append("")
    for child in later:
        if child not in seen:
            lines += section(child, child.__name__, seen)
    return lines


def render(seen: set | None = None) -> str:
    """The page; ``seen`` collects every config class it covers."""
    from etl.config import PipelineConfig
    from etl.load_config import STAGES
    from training.config import TrainConfig
    from training.model import MPTConfig

    lines = [
        "# Config reference",
        "",
        "Generated from the config dataclasses by `scripts/config_reference.py`; do not edit by hand",
        "(`tests/system/test_config_reference.py` fails when this page is out of date). Every key is checked,",
        "name and type, when a file is loaded: an unknown key or a wrong type stops the job before any",
        "work, naming the key. Numbers such as `3e-4` are floats (YAML 1.2's rule), in files and in",
        "overrides alike.",
        "",
        "## Pipeline YAML (`python -m etl run CONFIG`)",
        "",
        "Local paths (`output`, `state_dir`, `inputs[].path` and the stage parameters that name files:",
        "`tokenizer`, `eval_paths`, `dataset_root`, toxicity's `wordlists` and `model_path`) are relative",
        "to the working directory and made absolute when the config is loaded; with a Spark master that",
        "is not `local`, a relative one is an error (give an absolute path every node sees, or a URL).",
        "Each stage's inputs (a tokenizer, eval sets, tokenize running before shuffle_and_write) and",
        "whether a local output can be written are checked then too, before Spark starts.",
        "",
    ]
    seen = set() if seen is None else seen
    lines += section(PipelineConfig, "PipelineConfig (top level)", seen)
    lines += ["## Stage parameters (`stages[i].params`)", "",
              "Stages run in the order listed; what each does: [docs/etl/](etl/).", ""]
    for name in sorted(STAGES):
        params = STAGES[name].Params
        if dataclasses.fields(params):
            lines += section(params, f"`{name}`", seen)
        else:
            lines += [f"### `{name}`", "", "No parameters.", ""]
    lines += ["## Training YAML (`python -m training.launch CONFIG`)", ""]
    lines += section(TrainConfig, "TrainConfig (top level)", seen)
    lines += ["### model.overrides: MPTConfig fields", "",
              "`model.preset` picks a published shape; `model.overrides` may set any of these.", ""]
    lines += section(MPTConfig, "MPTConfig", seen)[2:]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run .venv/bin/python scripts/config_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
