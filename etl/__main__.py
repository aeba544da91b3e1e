"""`python -m etl COMMAND ...`: the pipeline's command line."""
from __future__ import annotations

import argparse
import sys

from shards.config import ConfigError


def _cmd_run(args) -> int:
    from .config import load_pipeline_config
    from .pipeline import run_pipeline

    config, stages = load_pipeline_config(args.config, args.set)
    run = run_pipeline(config, stages)
    print(f"done: {run.steps[-1].docs_out:,} documents kept in {run.final_table}")
    return 0


def _cmd_dedup_explain(args) -> int:
    from .dedup_explain import NotFound, explain
    from .spark import get_spark

    try:
        print(explain(get_spark("kiln-dedup-explain"), args.output, args.id))
    except NotFound as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m etl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline config")
    run.add_argument("config", help="pipeline YAML")
    run.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                     help="override a value, e.g. --set quality.min_words=20 or --set output=/tmp/out")
    run.set_defaults(func=_cmd_run)
    explain = sub.add_parser("dedup-explain", help="show a document's near-duplicate cluster and the text it matched")
    explain.add_argument("output", help="the pipeline's output root")
    explain.add_argument("id", help="document id")
    explain.set_defaults(func=_cmd_dedup_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
