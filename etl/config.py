"""The pipeline's YAML, as typed dataclasses.

```yaml
output: out/run1
inputs:
  - {path: data/web/*.jsonl.gz, format: jsonl, source: web, id_field: url}
stages:
  - {name: fix_encoding}
  - {name: quality, params: {min_words: 50}}
  - {name: exact_dedup}
```
Each stage's ``params`` are checked against that stage's own ``Params`` dataclass, so an unknown
stage, a misspelt parameter or a wrong type is reported before Spark starts.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from shards.config import ConfigError, from_dict, load_yaml, parse_override, set_path

from .stages import STAGES

InputFormat = Literal["jsonl", "parquet", "text", "delta"]


@dataclass
class InputSpec:
    """One input: files (glob) or a Delta table, and how its fields map to ours."""

    path: str  # a file, folder or glob (local or s3a://), or a Delta table's folder
    source: str  # a short name for this input; ids are namespaced by it and it is a column
    format: InputFormat = "jsonl"  # jsonl (plain, .gz, .zst), parquet, text (a document per file), delta
    text_field: str = "text"  # the field or column holding the document text
    # The input's own document id; when absent the id is derived from (source, file, row).
    id_field: str | None = None
    # Extra input fields kept as a string map column `meta` (e.g. url, timestamp).
    keep_fields: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.source or "/" in self.source:
            raise ValueError(f"source must be a non-empty name without '/', got {self.source!r}")


@dataclass
class StageSpec:
    name: str  # one of the stages below
    params: dict[str, Any] = field(default_factory=dict)  # that stage's parameters (its table below)


@dataclass
class PipelineConfig:
    output: str  # root of every table, the report and (by default) the dataset; local or s3a://
    inputs: list[InputSpec]  # read and unioned by ingest
    stages: list[StageSpec]  # run in this order after ingest
    # Documents larger than this (UTF-8 bytes) are rejected at ingest: a 100 MB "document" is a bug upstream.
    max_doc_bytes: int = 1_000_000
    # Incremental runs keep state (processed files, dedup indices) here; default <output>/_state.
    state_dir: str | None = None
    report: bool = True  # write the funnel report (JSON, Delta, HTML with plots) under <output>/report
    # Spark settings for a session this job creates; never applied over spark-submit's or a cluster's own.
    spark_conf: dict[str, str] = field(default_factory=dict)
    # Raw-zone tables (before the `pii` stage, and `rejected`) keep files an overwrite replaced for
    # this many hours, then VACUUM removes them; null: Delta's defaults (7 days, never vacuumed by us).
    raw_zone_retention_hours: int | None = None

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("inputs: at least one input is required")
        sources = [i.source for i in self.inputs]
        if len(set(sources)) != len(sources):
            raise ValueError(f"inputs: source names must be unique, got {sources}")
        if self.max_doc_bytes <= 0:
            raise ValueError("max_doc_bytes must be positive")
        if self.raw_zone_retention_hours is not None and self.raw_zone_retention_hours < 0:
            raise ValueError(f"raw_zone_retention_hours must be >= 0, got {self.raw_zone_retention_hours}")

    @property
    def state_root(self) -> str:
        return self.state_dir or join_path(self.output, "_state")


def join_path(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def load_pipeline_config(path: str, overrides: list[str] = (), check_inputs: bool = True) -> tuple[PipelineConfig, list]:
    """Load, override and validate a pipeline config; returns it with the instantiated stages."""
    data = load_yaml(path)
    for override in overrides:
        _apply_override(data, override)
    return validate_pipeline_config(data, check_inputs)


def validate_pipeline_config(data: dict, check_inputs: bool = True) -> tuple[PipelineConfig, list]:
    config = from_dict(PipelineConfig, data, "config")
    stages = []
    for i, spec in enumerate(config.stages):
        where = f"config.stages[{i}]"
        if spec.name not in STAGES:
            raise ConfigError(f"{where}.name: unknown stage {spec.name!r}; known stages: {', '.join(sorted(STAGES))}")
        stage_cls = STAGES[spec.name]
        params = from_dict(stage_cls.Params, spec.params, f"{where}.params")
        stages.append(stage_cls(params))
    names = [s.name for s in config.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"config.stages: each stage may appear once, got {names}")
    if check_inputs:
        for i, spec in enumerate(config.inputs):
            if not is_remote(spec.path) and not glob.glob(spec.path.removeprefix("file://")):
                raise ConfigError(f"config.inputs[{i}].path: no file or table matches {spec.path!r}")
            if spec.format == "delta" and not is_remote(spec.path) and not os.path.isdir(os.path.join(spec.path, "_delta_log")):
                raise ConfigError(f"config.inputs[{i}].path: {spec.path!r} is not a Delta table (no _delta_log)")
    return config, stages


def _apply_override(data: dict, override: str) -> None:
    """``--set quality.min_words=10`` addresses a stage by name; other keys address the top level."""
    parts, value = parse_override(override)
    stage_specs = data.get("stages") or []
    for spec in stage_specs:
        if isinstance(spec, dict) and spec.get("name") == parts[0]:
            if len(parts) < 2:
                raise ConfigError(f"override {override!r}: give a parameter, e.g. {parts[0]}.name=value")
            set_path(spec.setdefault("params", {}), parts[1:], value)
            return
    if parts[0] in STAGES:
        raise ConfigError(f"override {override!r}: stage {parts[0]!r} is not in this pipeline's stages")
    set_path(data, parts, value)
