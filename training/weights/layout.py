"""The consolidated checkpoint folder (one folder, one file of weights), and how it is written and its config read.

A consolidated checkpoint folder holds
    config.json         MPTConfig.to_dict()
    model.safetensors   the full, unsharded state dict of training.model.MPT
    tokenizer.json      optional: a `tokenizers` tokenizer (the one the training data was built with)

It is what evaluation, generation and the Hugging Face export read (training.weights.inference), and what
training.weights.consolidate and training.weights.import_hf write.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from training.model import MPT, MPTConfig
from training.tokenizer import TextTokenizer
from training.weights.hf_convert import check_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
SAFETENSORS_DTYPES = {  # torch dtype -> its name in a safetensors header
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


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
