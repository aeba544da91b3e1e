"""A pipeline config from YAML (or a dict) to its typed form and its stages, with every check that
needs no Spark done, so that a wrong config fails before Spark starts: each stage's params (against
its own ``Params`` dataclass), each stage's own inputs (`Stage.check`: a tokenizer, eval sets, the
stage order), the inputs' files and whether the output can be written. Local paths are made
absolute on the way (etl/config.py says why)."""
from __future__ import annotations

from shards.config import ConfigError, from_dict, load_yaml, parse_override, set_path

from .config import (PipelineConfig, StageSpec, absolute_path, check_inputs_exist, check_outputs_writable,
                     make_paths_absolute, spark_master)
from .dataset.shuffle_write import ShuffleAndWrite
from .dataset.tokenize import Tokenize
from .stages.base import Stage
from .stages.c4_badwords import C4BadWords
from .stages.classify import Classify
from .stages.decontaminate import Decontaminate
from .stages.exact_dedup import ExactDedup
from .stages.fix_encoding import FixEncoding
from .stages.language import Language
from .stages.minhash_dedup import MinHashDedup
from .stages.pii import Pii
from .stages.quality import Quality
from .stages.toxicity import Toxicity
from .stages.url_filter import UrlFilter

# Every stage by the name a pipeline config uses for it. Add a stage here to make it configurable.
STAGES: dict[str, type[Stage]] = {
    Language.name: Language,
    Pii.name: Pii,
    Toxicity.name: Toxicity,
    Tokenize.name: Tokenize,
    ShuffleAndWrite.name: ShuffleAndWrite,
    FixEncoding.name: FixEncoding,
    ExactDedup.name: ExactDedup,
    MinHashDedup.name: MinHashDedup,
    Quality.name: Quality,
    Decontaminate.name: Decontaminate,
    UrlFilter.name: UrlFilter,
    C4BadWords.name: C4BadWords,
    Classify.name: Classify,
}


def load_pipeline_config(path: str, overrides: list[str] = (), check_inputs: bool = True) -> tuple[PipelineConfig, list[Stage]]:
    """Load, override and validate a pipeline config; returns it with the instantiated stages."""
    data = load_yaml(path)
    for override in overrides:
        _apply_override(data, override)
    return validate_pipeline_config(data, check_inputs)


def check_one_session(paths: list[str], configs: list[PipelineConfig]) -> None:
    """Configs run in turn by one command share its Spark session, made with the first one's
    spark_conf, and must not write over each other."""
    for path, config in zip(paths[1:], configs[1:]):
        if config.spark_conf != configs[0].spark_conf:
            raise ConfigError(f"{path}: spark_conf {config.spark_conf} differs from {paths[0]}'s "
                              f"{configs[0].spark_conf}, which makes the Spark session they share: "
                              "give them the same spark_conf, or run this config in a command of its own")
    outputs: dict[str, str] = {}
    for path, config in zip(paths, configs):
        if config.output in outputs:
            raise ConfigError(f"{path} and {outputs[config.output]} both write to {config.output}: give each its own output")
        outputs[config.output] = path


def validate_pipeline_config(data: dict, check_inputs: bool = True) -> tuple[PipelineConfig, list[Stage]]:
    """The typed config and its stages, every path made absolute and every check that needs no
    Spark done; ``check_inputs=False`` skips checking that the inputs exist (erasure needs none)."""
    config = from_dict(PipelineConfig, data, "config")
    stages = build_stages(config.stages)
    master = spark_master()
    make_paths_absolute(config, master)
    _make_stage_paths_absolute(config, stages, master)
    names = [spec.name for spec in config.stages]
    for i, stage in enumerate(stages):
        stage.check(f"config.stages[{i}].params", config, names)
    if check_inputs:
        check_inputs_exist(config)
    check_outputs_writable(config)
    return config, stages


def build_stages(specs: list[StageSpec]) -> list[Stage]:
    """The configured stages, in order, each built from its ``params`` checked against its own
    ``Params``; an unknown stage, a misspelt parameter, a wrong type or a repeated stage is a ConfigError."""
    stages = []
    for i, spec in enumerate(specs):
        where = f"config.stages[{i}]"
        if spec.name not in STAGES:
            raise ConfigError(f"{where}.name: unknown stage {spec.name!r}; known stages: {', '.join(sorted(STAGES))}")
        stage_cls = STAGES[spec.name]
        stages.append(stage_cls(from_dict(stage_cls.Params, spec.params, f"{where}.params")))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"config.stages: each stage may appear once, got {names}")
    return stages


def _make_stage_paths_absolute(config: PipelineConfig, stages: list[Stage], master: str) -> None:
    """Each stage's ``path_params``, absolute; the raw ``params`` too, so the report shows the paths
    the run used."""
    for i, (spec, stage) in enumerate(zip(config.stages, stages)):
        for name in stage.path_params:
            value = absolute_path(getattr(stage.params, name), f"config.stages[{i}].params.{name}", master)
            setattr(stage.params, name, value)
            if name in spec.params:
                spec.params[name] = value


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
