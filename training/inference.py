"""Consolidated checkpoints (one folder, one file of weights) and the tokenizer that goes with them.

A consolidated checkpoint folder holds
    config.json         MPTConfig.to_dict()
    model.safetensors   the full, unsharded state dict of training.model.MPT
    tokenizer.json      optional: a `tokenizers` tokenizer (the one the training data was built with)

It is what evaluation, generation and the Hugging Face export read, and what `import_hf` writes.
`load_model` also reads training's sharded checkpoints (a step-N folder or a checkpoint root, local or
on an object store) through training.consolidate; those carry no tokenizer.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

from training.hf_convert import check_state_dict
from training.model import MPT, MPTConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
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
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises plain Exception for a file it cannot parse
            raise ValueError(f"{path} is not a tokenizers tokenizer.json: {err}") from None
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
        raise FileNotFoundError(f"{folder} is not a consolidated checkpoint: {CONFIG_NAME} is missing")
    try:
        return MPTConfig.from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{config_file}: not a valid MPTConfig: {err}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               attn_impl: str | None = "sdpa") -> tuple[MPT, MPTConfig, TextTokenizer | None]:
    """Load a consolidated checkpoint folder, or a sharded training checkpoint, for inference:
    (model in eval mode, its config, its tokenizer).

    attn_impl overrides the attention backend the checkpoint was trained with (the weights do not depend
    on it); generation needs "sdpa", which runs everywhere. None keeps the checkpoint's choice.
    """
    from training.consolidate import is_training_checkpoint, read_model_state  # it imports this module

    folder = Path(path)
    if is_training_checkpoint(str(path)):
        config, state_dict = read_model_state(str(path))
        state_dict = {name: tensor.to(device) for name, tensor in state_dict.items()}
    else:
        config = read_config(folder)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{folder} is not a consolidated checkpoint: {WEIGHTS_NAME} is missing")
        state_dict = {}
        with safe_open(str(weights), framework="pt", device=str(device)) as handle:
            for name in handle.keys():
                state_dict[name] = handle.get_tensor(name)
    if attn_impl is not None:
        config = dataclasses.replace(config, attn_impl=attn_impl)
    check_state_dict(state_dict, config)
    with torch.device("meta"):
        model = MPT(config)
    model.load_state_dict(state_dict, assign=True)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    tokenizer_file = folder / TOKENIZER_NAME
    tokenizer = TextTokenizer.from_file(tokenizer_file) if tokenizer_file.is_file() else None
    if tokenizer is not None:
        config.check_tokenizer(tokenizer.vocab_size)
    return model, config, tokenizer
