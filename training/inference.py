"""Consolidated checkpoints (one folder, one file of weights) and the tokenizer that goes with them.

A consolidated checkpoint folder holds
    config.json         MPTConfig.to_dict()
    model.safetensors   the full, unsharded state dict of training.model.MPT
    tokenizer.json      optional: a `tokenizers` tokenizer (the one the training data was built with)

It is what evaluation, generation and the Hugging Face export read, and what `import_hf` writes.
`load_model` (and the export) also read training's sharded checkpoints (a step-N folder or a checkpoint
root, local or on an object store) through training.consolidate; those carry no tokenizer, so the one
their training data was tokenized with is used (training.consolidate.recorded_tokenizer).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

from training.hf_convert import check_state_dict
from training.model import MPT, MPTConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
SAFETENSORS_DTYPES = {  # torch dtype -> its name in a safetensors header
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
# Names an end-of-text token goes by in common tokenizers, most common first (GPT-NeoX/GPT-2, Llama, Gemma).
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>")


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus what generation and evaluation need from it: plain encode/decode
    (no special tokens added) and the end-of-text id (None when the tokenizer has none)."""

    def __init__(self, tokenizer: Tokenizer, eos_token: str | None = None):
        self.tokenizer = tokenizer
        if eos_token is None:
            eos_token = next((t for t in EOS_CANDIDATES if tokenizer.token_to_id(t) is not None), None)
        elif tokenizer.token_to_id(eos_token) is None:
            raise ValueError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary")
        self.eos_token = eos_token
        self.eos_id = None if eos_token is None else tokenizer.token_to_id(eos_token)

    @classmethod
    def from_file(cls, path: str | Path, eos_token: str | None = None) -> TextTokenizer:
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        return cls.from_bytes(Path(path).read_bytes(), str(path), eos_token)

    @classmethod
    def from_bytes(cls, data: bytes, source: str, eos_token: str | None = None) -> TextTokenizer:
        """A tokenizer.json's contents (read from a file or an object store); ``source`` names it in errors."""
        try:
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as err:  # tokenizers raises plain Exception for a file it cannot parse
            raise ValueError(f"{source} is not a tokenizers tokenizer.json: {err}") from None
        return cls(tokenizer, eos_token)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))


def save_consolidated(model: MPT, config: MPTConfig, out_dir: str | Path,
                      tokenizer_path: str | Path | TextTokenizer | None = None) -> Path:
    """Write `model` (unsharded) as a consolidated checkpoint folder; returns the folder."""
    return save_state_dict(model.state_dict(), config, out_dir, tokenizer_path)


def save_state_dict(state_dict: dict[str, torch.Tensor], config: MPTConfig, out_dir: str | Path,
                    tokenizer_path: str | Path | TextTokenizer | None = None) -> Path:
    """Write a full MPT state dict as a consolidated checkpoint folder; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_dict = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state_dict.items()}
    check_state_dict(state_dict, config)
    save_file(state_dict, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    if isinstance(tokenizer_path, TextTokenizer):
        tokenizer_path.save(out / TOKENIZER_NAME)
    elif tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, out / TOKENIZER_NAME)
    return out


def read_config(path: str | Path) -> MPTConfig:
    """The MPTConfig of a consolidated checkpoint folder, with a clear error when it is not one."""
    folder = Path(path)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint: neither a consolidated folder ({CONFIG_NAME} is "
                                "missing) nor a training checkpoint (a step-N folder or a checkpoint root)")
    try:
        return MPTConfig.from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{config_file}: not a valid MPTConfig: {err}") from None


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
    tokenizer: the one its training data was tokenized with is used (training.consolidate.recorded_tokenizer).
    Loading, generation, evaluation and the Hugging Face export all read checkpoints through here."""
    # training.consolidate imports this module
    from training.consolidate import is_training_checkpoint, model_tensors, recorded_tokenizer, resolve_checkpoint

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
