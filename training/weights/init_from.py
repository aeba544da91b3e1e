"""Start a run from existing weights (``init_from: PATH``): weights only, a fresh optimizer and schedule, step 0.

What PATH holds decides how it is read:

  checkpoint    a training checkpoint (a ``step-N`` folder, or a checkpoint root: its newest complete one),
                local or on an object store: DCP reads each rank's shards of the model straight into the
                sharded model, on any number of ranks (optimizer state, loader and RNG are not read)
  hf            a Hugging Face MPT folder (its ``config.json`` names ``model_type: mpt``), converted as
                training.weights.import_hf converts it
  consolidated  ``config.json`` (an MPTConfig) + ``model.safetensors`` (training.weights.consolidate, import_hf)

Consolidated and Hugging Face weights are read on rank 0 only and broadcast into every rank's shards.
Every tensor must have the shape this run's model has: the launcher checks that before any rank starts,
naming each tensor that differs. Other differences of the two model configs (positions, ALiBi slopes,
QKV clipping, ...) change what the weights compute but may be meant, so they are a warning.

A checkpoint of the run itself wins: when autoresume finds one, ``init_from`` is not read (the weights
it gave were saved in that checkpoint).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     set_model_state_dict)

from shards.config import ConfigError

from training.model import MPTConfig
from training.run.checkpoint import reader
from training.weights.checkpoint_reader import (MODEL_PREFIX, TensorReader, is_training_checkpoint, model_config,
                                                resolve_checkpoint)
from training.weights.hf_convert import config_from_hf, expected_shapes, shape_problems
from training.weights.import_hf import read_hf_config, read_hf_mpt
from training.weights.layout import CONFIG_NAME, WEIGHTS_NAME, read_config

log = logging.getLogger(__name__)

# Config fields that do not change what the weights compute (or only how they were first drawn).
NEUTRAL_FIELDS = {"attn_impl", "init_std", "emb_init_std", "init_div_is_residual", "max_seq_len", "pad_vocab_to"}


@dataclass
class InitSource:
    kind: Literal["checkpoint", "consolidated", "hf"]
    url: str  # for a checkpoint root: the checkpoint folder it resolved to
    config: MPTConfig  # the model config the weights were made with
    shapes: dict[str, tuple[int, ...]]  # our tensor names -> shapes

    def describe(self) -> str:
        return f"{self.kind} {self.url}"


def inspect_source(path: str) -> InitSource:
    """What ``path`` holds, without reading any weights (only headers and metadata)."""
    if is_training_checkpoint(path):
        folder, manifest = resolve_checkpoint(path)
        found = TensorReader(folder).tensors(MODEL_PREFIX)
        return InitSource("checkpoint", folder, model_config(manifest),
                          {name: tuple(md.size) for name, md in found.items()})
    folder = Path(path)
    config_file = folder / CONFIG_NAME  # both folders have one; only Hugging Face's names a model_type
    if config_file.is_file() and "model_type" in json.loads(config_file.read_text()):
        config = config_from_hf(read_hf_config(folder))
        return InitSource("hf", path, config, expected_shapes(config))
    if (folder / WEIGHTS_NAME).is_file():
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        return InitSource("consolidated", path, read_config(folder), shapes)
    raise FileNotFoundError(f"{path} is neither a training checkpoint (manifest.json or a 'latest' pointer), "
                            f"a consolidated folder ({WEIGHTS_NAME}) nor a Hugging Face MPT folder (config.json)")


def check_source(source: InitSource, model: MPTConfig) -> list[str]:
    """Raise ConfigError naming every tensor that does not fit ``model``; return the other config differences."""
    problems = shape_problems(source.shapes, model)
    if problems:
        raise ConfigError(f"init_from {source.url}: its weights do not fit this run's model (model.preset, "
                          "model.overrides):\n  - " + "\n  - ".join(problems))
    theirs, ours = source.config.to_dict(), model.to_dict()
    return [f"{key}: {theirs[key]!r} in init_from, {ours[key]!r} here" for key in sorted(ours)
            if key not in NEUTRAL_FIELDS and theirs.get(key) != ours[key]]


def inspect_and_check(path: str, model: MPTConfig) -> InitSource:
    """inspect_source + check_source as one config check (ConfigError), warning about config differences."""
    try:
        source = inspect_source(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"init_from: {err}") from None
    differences = check_source(source, model)
    if differences:
        log.warning("init_from %s: the weights were made with another model config: %s", source.url,
                    "; ".join(differences))
    return source


def read_full_state_dict(source: InitSource) -> dict[str, torch.Tensor]:
    """All weights of a consolidated or Hugging Face source, in memory (rank 0 only)."""
    if source.kind == "consolidated":
        return load_file(str(Path(source.url) / WEIGHTS_NAME))
    _, state_dict = read_hf_mpt(source.url)
    return state_dict


def load_weights(model: nn.Module, path: str, model_cfg: MPTConfig, is_main: bool,
                 broadcast: Callable[[object], object]) -> InitSource:
    """Copy the weights at ``path`` into the (sharded) model; every rank calls this.

    Rank 0 checks the source and reads consolidated or Hugging Face weights; ``broadcast`` (the trainer's
    broadcast_from_main) carries its result, so a failure there is raised on every rank."""

    def on_main(work: Callable[[], object]):
        result = None
        if is_main:
            try:
                result = work()
            except ConfigError as err:
                result = err
            except (OSError, ValueError) as err:
                result = ConfigError(f"init_from {path}: {err}")
        return broadcast(result)

    source = on_main(lambda: inspect_and_check(path, model_cfg))
    if source.kind == "checkpoint":
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, storage_reader=reader(source.url))
        set_model_state_dict(model, state["model"])
        return source
    full: dict[str, torch.Tensor] = {}
    on_main(lambda: full.update(read_full_state_dict(source)))
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return source
