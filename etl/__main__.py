"""`python -m etl COMMAND ...`: the pipeline's command line.

Each command imports what it needs when it runs: every one of them pulls in pyspark, and `run`,
`refresh` and `erase` the whole stage table (presidio, scikit-learn...), none of which `--help` or a
usage error should wait for, nor `train-tokenizer` and `train-classifier` the stage table.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from shards.config import ConfigError


def _note_job_size(args, configs, reads_output: bool = False) -> None:
    """A program whose configs read at most SHORT_JOB_BYTES, all of it on this machine, is a short job
    (etl.spark.QUICK_COMPILER); a process that goes on after the command is not."""
    from . import spark  # local: see the module's docstring
    from .config import local_data_bytes

    spark.SHORT_JOB = False
    if args.as_program:
        sizes = [local_data_bytes(config, spark.SHORT_JOB_BYTES, reads_output) for config in configs]
        spark.SHORT_JOB = None not in sizes and sum(sizes) <= spark.SHORT_JOB_BYTES


def _cmd_run(args) -> int:
    from .load_config import check_one_session, load_pipeline_config  # local: see the module's docstring
    from .pipeline import run_pipeline

    # Every config is checked before Spark starts; one session then runs them in turn, so the
    # second starts with a warm JVM (two recipe configs: 40 s together, 60 s as two commands).
    loaded = [load_pipeline_config(path, args.set) for path in args.config]
    check_one_session(args.config, [config for config, _ in loaded])
    _note_job_size(args, [config for config, _ in loaded])
    for number, (path, (config, stages)) in enumerate(zip(args.config, loaded), 1):
        if len(loaded) > 1:
            print(f"config {number}/{len(loaded)}: {path}")
        run = run_pipeline(config, stages)
        print(f"done: {run.steps[-1].docs_out:,} documents kept in {run.final_table}")
    return 0


def _cmd_refresh(args) -> int:
    from .load_config import load_pipeline_config  # local: see the module's docstring
    from .refresh import RefreshError, refresh

    config, stages = load_pipeline_config(args.config, args.set)
    _note_job_size(args, [config], reads_output=True)
    try:
        refresh(config, stages)
    except RefreshError as err:
        print(f"refresh: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_erase(args) -> int:
    from .erase import ErasureError, erase  # local: see the module's docstring
    from .load_config import load_pipeline_config

    # The inputs may be gone (or be the very thing being taken down): only the outputs matter here.
    config, stages = load_pipeline_config(args.config, args.set, check_inputs=False)
    _note_job_size(args, [config], reads_output=True)
    try:
        erase(config, stages, args.ids, retire_versions=args.retire_versions)
    except ErasureError as err:
        print(f"erase: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_dedup_explain(args) -> int:
    from .dedup_explain import NotFound, explain  # local: see the module's docstring
    from .spark import get_spark

    try:
        print(explain(get_spark("kiln-dedup-explain"), args.output, args.id))
    except NotFound as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def _cmd_train_tokenizer(args) -> int:
    # local: see the module's docstring
    from .dataset.tokenizer import DEFAULT_BOS, iter_texts, save_tokenizer, train_bpe_tokenizer

    try:
        texts = iter_texts(args.input, args.format, args.text_field, args.max_docs)
        tokenizer = train_bpe_tokenizer(texts, args.vocab_size, bos_token=DEFAULT_BOS if args.bos else None,
                                        min_frequency=args.min_frequency)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"train-tokenizer: {err}") from None
    url = save_tokenizer(tokenizer, args.out)
    reached = tokenizer.get_vocab_size()
    print(f"done: {reached} tokens in {url}")
    if reached < args.vocab_size:
        print(f"note: reached {reached} of the {args.vocab_size} tokens asked for: the corpus is too small or "
              f"--min-frequency {args.min_frequency} too high (no other pair of tokens occurs that often); "
              "train on more documents or lower --min-frequency for a larger vocabulary")
    return 0


def _cmd_train_classifier(args) -> int:
    from .classifier_train import TrainSettings, metrics_path, train_classifier  # local: see the module's docstring

    settings = TrainSettings(model=args.model, ngrams=args.ngrams, features=args.features, epochs=args.epochs,
                             validation_fraction=args.validation_fraction, seed=args.seed)
    try:
        metrics = train_classifier(args.positive, args.negative, args.out, settings, args.format, args.text_field,
                                   args.max_docs)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"train-classifier: {err}") from None
    docs = metrics["train_docs"]
    print(f"done: {args.model} classifier in {args.out}, trained on {docs['positive']:,} + {docs['negative']:,} documents; "
          f"validation: {metrics.get('validation', 'none (--validation-fraction 0)')}; metrics in {metrics_path(args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m etl", description=__doc__)
    parser.set_defaults(as_program=False)  # main() says whether this process ends with the command
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline config")
    run.add_argument("config", nargs="+", help="pipeline YAML; several run in turn in one Spark session "
                     "(each with its own output, all with the same spark_conf)")
    run.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                     help="override a value (in every config), e.g. --set quality.min_words=20 or --set output=/tmp/out")
    run.set_defaults(func=_cmd_run)
    refresh = sub.add_parser("refresh", help="take only new input files, add their documents, publish a new dataset version")
    refresh.add_argument("config", help="pipeline YAML")
    refresh.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE", help="override a value")
    refresh.set_defaults(func=_cmd_refresh)
    erase = sub.add_parser("erase", help="erase documents from every table and publish a dataset version without them")
    erase.add_argument("config", help="pipeline YAML")
    erase.add_argument("--ids", required=True, metavar="FILE", help="one document id, or content hash, per line")
    erase.add_argument("--retire-versions", action="store_true", help="also delete old dataset versions that hold them")
    erase.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE", help="override a value")
    erase.set_defaults(func=_cmd_erase)
    explain = sub.add_parser("dedup-explain", help="show a document's near-duplicate cluster and the text it matched")
    explain.add_argument("output", help="the pipeline's output root")
    explain.add_argument("id", help="document id")
    explain.set_defaults(func=_cmd_dedup_explain)
    train = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer and save tokenizer.json")
    train.add_argument("--input", required=True, help="a Delta table, or files (path, folder or glob; local or URL)")
    train.add_argument("--format", default="delta", choices=["delta", "parquet", "jsonl", "text"])
    train.add_argument("--text-field", default="text", help="the text column or JSON field")
    train.add_argument("--vocab-size", type=int, default=50_000, help="including the special and 256 byte tokens")
    train.add_argument("--max-docs", type=int, default=1_000_000, help="train on at most this many documents")
    train.add_argument("--min-frequency", type=int, default=2, help="a merge needs at least this many occurrences")
    train.add_argument("--bos", action="store_true", help="also add a BOS token (<|startoftext|>)")
    train.add_argument("--out", required=True, help="tokenizer.json path, or a folder to write it in (local or URL)")
    train.set_defaults(func=_cmd_train_tokenizer)
    classifier = sub.add_parser("train-classifier", help="train a quality classifier (hashed n-grams or fastText) "
                                                         "on documents to keep against documents not to")
    classifier.add_argument("--positive", action="append", required=True, metavar="PATH",
                            help="documents to keep, e.g. reference text (repeatable; files or a Delta table, local or URL)")
    classifier.add_argument("--negative", action="append", required=True, metavar="PATH",
                            help="documents not to keep, e.g. a random sample of the crawl (repeatable)")
    classifier.add_argument("--format", default="jsonl", choices=["delta", "parquet", "jsonl", "text"])
    classifier.add_argument("--text-field", default="text", help="the text column or JSON field")
    classifier.add_argument("--model", default="hashed", choices=["hashed", "fasttext"],
                            help="hashed: Kiln's n-gram logistic regression (.npz); fasttext: a fastText .bin")
    classifier.add_argument("--ngrams", type=int, default=2, help="word n-grams up to this length")
    classifier.add_argument("--features", type=int, default=2 ** 20, help="hash buckets for the n-grams")
    classifier.add_argument("--epochs", type=int, default=25, help="fastText's passes over the data")
    classifier.add_argument("--validation-fraction", type=float, default=0.1,
                            help="rows held out of training to measure the model on (a random row split)")
    classifier.add_argument("--max-docs", type=int, default=1_000_000, help="at most this many documents per input")
    classifier.add_argument("--seed", type=int, default=0)
    classifier.add_argument("--out", required=True, help="the model file: .npz (hashed) or .bin (fasttext), local or URL")
    classifier.set_defaults(func=_cmd_train_classifier)
    for command in sub.choices.values():
        command.add_argument("--log-level", choices=list(SPARK_LOG_LEVELS),
                             help="Kiln's logging and Spark's log level (default: Kiln's warnings and Spark's errors); "
                                  "ERROR also hides the progress line")
    return parser


# Python's level names -> log4j's, for SparkContext.setLogLevel.
SPARK_LOG_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR"}


def configure_logging(level: str | None) -> None:
    """Python logging at `level` (default WARNING); Spark at the same level when one is given."""
    logging.basicConfig(level=level or "WARNING", format="%(levelname)s %(name)s: %(message)s")
    if level:
        os.environ["KILN_SPARK_LOG_LEVEL"] = SPARK_LOG_LEVELS[level]  # read by etl.spark.get_spark


def main(argv: list[str] | None = None, as_program: bool = False) -> int:
    """`as_program`: this process is `python -m etl` and ends with the command (etl/jvm_archive.py)."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    from . import jvm_archive
    from .delta import VacuumError  # local, after parsing: see the module's docstring
    from .spark import SparkSetupError

    jvm_archive.WRITE_AT_EXIT = as_program and args.command in ("run", "refresh")
    args.as_program = as_program
    code = 1
    try:
        code = args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        code = 2
    except (SparkSetupError, VacuumError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    finally:
        jvm_archive.WRITE_AT_EXIT = jvm_archive.WRITE_AT_EXIT and code == 0
    return code


def submit_main(command: str, argv: list[str]) -> int:
    """For spark-submit scripts (jobs/): `--config CONFIG [--set k=v]` runs `COMMAND CONFIG [--set k=v]`."""
    return main([command, *(argv[1:] if argv[:1] == ["--config"] else argv)])


if __name__ == "__main__":
    sys.exit(main(as_program=True))
