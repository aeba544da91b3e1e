"""A sharded training checkpoint's model weights, read one tensor at a time, and the tokenizer it was trained with.

What consolidation, loading for inference, the Hugging Face export and ``init_from`` take from a training
checkpoint (a ``step-N`` folder, or a checkpoint root meaning its newest complete one; local or on an object
store). Optimizer state is never read.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Iterator

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader  # no public name in torch 2.11
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from shards import storage
from shards.config import from_dict
from shards.manifest import read_manifest as read_dataset_manifest
from shards.manifest import version_path
from training.config import ModelSection
from training.model import MPTConfig
from training.run.checkpoint import LATEST_NAME, MANIFEST_NAME, incomplete_reason, latest_complete, read_manifest
from training.tokenizer import TextTokenizer
from training.weights.hf_convert import shape_problems

log = logging.getLogger(__name__)
MODEL_PREFIX = "model."


def is_training_checkpoint(url: str) -> bool:
    """A checkpoint folder (it has a manifest) or a checkpoint root (it has a ``latest`` pointer)."""
    return storage.exists(storage.join(url, MANIFEST_NAME)) or storage.exists(storage.join(url, LATEST_NAME))


def resolve_checkpoint(url: str) -> tuple[str, dict]:
    """(folder, manifest) of the complete checkpoint ``url`` names; raises when there is none."""
    if storage.exists(storage.join(url, MANIFEST_NAME)):
        reason = incomplete_reason(url)
        if reason is not None:
            raise ValueError(f"{url} is not a complete checkpoint: {reason}")
        return url, read_manifest(url)
    found = latest_complete(url)
    if found is None:
        raise FileNotFoundError(f"{url} holds no complete checkpoint (a step-N folder with {MANIFEST_NAME}, "
                                f"or a checkpoint root holding one)")
    return found


def model_config(manifest: dict) -> MPTConfig:
    """The MPT shape recorded in a checkpoint's resolved training config."""
    return from_dict(ModelSection, manifest["config"]["model"], "model").build()


def recorded_tokenizer(manifest: dict) -> TextTokenizer | None:
    """The tokenizer a checkpoint's model was trained with, for generation, evaluation and export (a sharded
    checkpoint holds none): the config's eval.tokenizer or data.instruction.tokenizer, else the tokenizer the
    ETL recorded in the training dataset's manifest (``extra.tokenizer``), used only while its bytes still hash
    to the manifest's ``tokenizer_hash``. None, with a warning saying why, when none is recorded or reachable.

    Dataset paths are read as the run recorded them: a relative one resolves against the working directory.
    """
    config = manifest["config"]
    named = config["eval"].get("tokenizer") or (config["data"].get("instruction") or {}).get("tokenizer")
    if named:
        return _read_tokenizer(named, None)
    for entry in manifest["data"]:
        if entry["version"] is None:  # a plain MDS folder records no tokenizer
            continue
        try:
            dataset = read_dataset_manifest(version_path(entry["path"], entry["version"]))
        except (OSError, ValueError) as err:
            log.warning("no tokenizer: the training data %s v=%s is not readable from here: %s",
                        entry["path"], entry["version"], err)
            return None
        if "tokenizer" in dataset.extra:
            return _read_tokenizer(dataset.extra["tokenizer"], dataset.tokenizer_hash)
    log.warning("no tokenizer: the checkpoint's config names none and its data records none")
    return None


def _read_tokenizer(url: str, expected_sha256: str | None) -> TextTokenizer | None:
    try:
        data = storage.read_bytes(url)
    except OSError as err:
        log.warning("no tokenizer: the training data's tokenizer %s is not readable: %s", url, err)
        return None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        log.warning("no tokenizer: %s changed since the training data was tokenized with it (sha256 differs)", url)
        return None
    return TextTokenizer.from_bytes(data, url)


class TensorReader:
    """Single tensors out of one DCP checkpoint: the metadata is read once, then each ``read`` plans
    and loads just the shards of one tensor."""

    def __init__(self, url: str):
        self.reader = FsspecReader(url)
        self.metadata = self.reader.read_metadata()
        self.reader.set_up_storage_reader(self.metadata, True)

    def tensors(self, prefix: str) -> dict[str, TensorStorageMetadata]:
        """Key (without ``prefix``) -> metadata of every tensor whose key starts with ``prefix``."""
        return {key[len(prefix):]: md for key, md in sorted(self.metadata.state_dict_metadata.items())
                if key.startswith(prefix) and isinstance(md, TensorStorageMetadata)}

    def read(self, key: str) -> torch.Tensor:
        md = self.metadata.state_dict_metadata[key]
        out = torch.empty(md.size, dtype=md.properties.dtype)
        planner = DefaultLoadPlanner()
        planner.set_up_planner({key: out}, self.metadata, True)
        plan = self.reader.prepare_local_plan(planner.create_local_plan())
        [plan] = self.reader.prepare_global_plan(planner.create_global_plan([plan]))
        self.reader.read_data(planner.finish_plan(plan), planner).wait()
        return out


def check_shapes(found: dict[str, TensorStorageMetadata], config: MPTConfig, url: str) -> None:
    problems = shape_problems({name: tuple(md.size) for name, md in found.items()}, config)
    if problems:
        raise ValueError(f"{url}: the model weights do not match the recorded config:\n  - " + "\n  - ".join(problems))


TensorSpecs = dict[str, tuple[tuple[int, ...], torch.dtype]]  # name -> (shape, dtype)


def model_tensors(url: str) -> tuple[MPTConfig, TensorSpecs, Iterator[tuple[str, torch.Tensor]]]:
    """(config, name -> (shape, dtype), an iterator reading the weights one at a time) of a checkpoint."""
    folder, manifest = resolve_checkpoint(url)
    config = model_config(manifest)
    reader = TensorReader(folder)
    found = reader.tensors(MODEL_PREFIX)
    check_shapes(found, config, folder)
    specs = {name: (tuple(md.size), md.properties.dtype) for name, md in found.items()}
    return config, specs, ((name, reader.read(MODEL_PREFIX + name)) for name in found)


def read_model_state(url: str) -> tuple[MPTConfig, dict[str, torch.Tensor]]:
    """The full model state dict of a training checkpoint, in memory (for loading a model)."""
    config, _, tensors = model_tensors(url)
    return config, dict(tensors)
