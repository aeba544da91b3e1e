"""Turn a sharded training checkpoint into the consolidated folder training.inference loads, one tensor at a time.

    python -m training.consolidate CHECKPOINT OUT_DIR [--tokenizer tokenizer.json]

CHECKPOINT is one checkpoint folder (``.../step-00000012``) or a checkpoint root (its newest complete
checkpoint is used), local or on an object store. OUT_DIR gets ``model.safetensors`` and
``config.json`` (and ``tokenizer.json`` when given): the format of training.inference.

Memory stays near the size of the largest tensor, whatever the model's size: the DCP metadata is
read once, the safetensors header is written from it, and then each weight is assembled from its
shards (every rank's piece, read with a one-tensor load plan) and streamed to the file before the
next is read. Optimizer state is never read.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Iterator

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader  # no public name in torch 2.11
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from shards import storage
from shards.config import from_dict
from shards.manifest import read_manifest as read_dataset_manifest
from shards.manifest import version_path

from .checkpoint import LATEST_NAME, MANIFEST_NAME, incomplete_reason, latest_complete, read_manifest
from .config import ModelSection
from .hf_convert import shape_problems
from .inference import CONFIG_NAME, SAFETENSORS_DTYPES, TOKENIZER_NAME, WEIGHTS_NAME, TextTokenizer
from .model import MPTConfig

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


def write_safetensors(path: Path, specs: TensorSpecs, tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """A safetensors file whose header comes from ``specs`` (name -> (shape, dtype)) and whose data is
    streamed from ``tensors`` (in the order of ``specs``); written to a temporary name and renamed into place."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, dtype) in specs.items():
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            for (name, tensor), expected in zip(tensors, specs):
                if name != expected:
                    raise AssertionError(f"tensors arrived out of order: {name} before {expected}")
                out.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
                del tensor
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def consolidate(url: str, out_dir: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Write the consolidated folder (model.safetensors, config.json, tokenizer.json) for ``url``."""
    config, specs, tensors = model_tensors(url)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_NAME, specs, tensors)
    (out / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        shutil.copyfile(tokenizer, out / TOKENIZER_NAME)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.consolidate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint folder (step-N) or a checkpoint root (newest complete)")
    parser.add_argument("out_dir", help="the consolidated folder to write")
    parser.add_argument("--tokenizer", help="a tokenizer.json to copy beside the weights")
    args = parser.parse_args(argv)
    try:
        out = consolidate(args.checkpoint, args.out_dir, args.tokenizer)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
