"""Checkpoints for inference: load_model, and open_weights, which reads either kind of checkpoint.

A checkpoint is a consolidated folder (training.weights.layout) or a sharded training checkpoint (a step-N
folder or a checkpoint root, local or on an object store, read through training.weights.checkpoint_reader);
the latter carry no tokenizer, so the one their training data was tokenized with is used
(training.weights.checkpoint_reader.recorded_tokenizer).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from training.model import MPT, MPTConfig
from training.tokenizer import TextTokenizer
from training.weights.checkpoint_reader import (is_training_checkpoint, model_tensors, recorded_tokenizer,
                                                resolve_checkpoint)
from training.weights.hf_convert import check_state_dict
from training.weights.layout import SAFETENSORS_DTYPES, TOKENIZER_NAME, WEIGHTS_NAME, read_config


@dataclass
class CheckpointWeights:
    """A checkpoint's weights, read one tensor at a time, and what goes with them."""

    config: MPTConfig
    specs: dict[str, tuple[tuple[int, ...], torch.dtype]]  # name -> (shape, dtype), every tensor
    tensors: Iterator[tuple[str, torch.Tensor]]  # (name, tensor on the CPU) in the order of specs
    tokenizer: TextTokenizer | None


@contextlib.contextmanager
def open_weights(path: str | Path) -> Iterator[CheckpointWeights]:
    """The weights of a consolidated folder or of a sharded training checkpoint (a step-N folder, or a
    checkpoint root: its newest complete step; local or on an object store). A training checkpoint holds no
    tokenizer: the one its training data was tokenized with is used (checkpoint_reader.recorded_tokenizer).
    Loading, generation, evaluation and the Hugging Face export all read checkpoints through here."""
    if is_training_checkpoint(str(path)):
        step_folder, manifest = resolve_checkpoint(str(path))
        config, specs, tensors = model_tensors(step_folder)
        yield CheckpointWeights(config, specs, tensors, recorded_tokenizer(manifest))
        return
    folder = Path(path)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} is not a consolidated checkpoint: {WEIGHTS_NAME} is missing")
    tokenizer_file = folder / TOKENIZER_NAME
    tokenizer = TextTokenizer.from_file(tokenizer_file) if tokenizer_file.is_file() else None
    torch_dtypes = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}
    with safe_open(str(weights), framework="pt") as handle:
        specs = {}
        for name in handle.keys():
            piece = handle.get_slice(name)
            specs[name] = (tuple(piece.get_shape()), torch_dtypes[piece.get_dtype()])
        yield CheckpointWeights(config, specs, ((name, handle.get_tensor(name)) for name in specs), tokenizer)


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               attn_impl: str | None = "sdpa") -> tuple[MPT, MPTConfig, TextTokenizer | None]:
    """Load a consolidated checkpoint folder, or a sharded training checkpoint, for inference:
    (model in eval mode, its config, its tokenizer).

    attn_impl overrides the attention backend the checkpoint was trained with (the weights do not depend
    on it); generation needs "sdpa", which runs everywhere. None keeps the checkpoint's choice.
    """
    with open_weights(path) as weights:
        state_dict = {name: tensor.to(device) for name, tensor in weights.tensors}
    config, tokenizer = weights.config, weights.tokenizer
    if attn_impl is not None:
        config = dataclasses.replace(config, attn_impl=attn_impl)
    check_state_dict(state_dict, config)
    with torch.device("meta"):
        model = MPT(config)
    model.load_state_dict(state_dict, assign=True)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    if tokenizer is not None:
        config.check_tokenizer(tokenizer.vocab_size)
    return model, config, tokenizer
