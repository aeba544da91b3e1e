"""Import released MPT weights from a local Hugging Face folder as a consolidated checkpoint, to fine-tune
or evaluate them: python -m training.import_hf HF_DIR OUT_DIR

Reads config.json (transformers' or llm-foundry's flavour, see training.weights.hf_convert.from_hf_mpt) and the
weights as model.safetensors, sharded safetensors (model.safetensors.index.json), or the older
pytorch_model*.bin files released MPTs ship; copies tokenizer.json when present. Weights keep their dtype.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from training.model import MPTConfig
from training.weights.hf_convert import from_hf_mpt, run_conversion
from training.weights.layout import TOKENIZER_NAME, save_state_dict


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face checkpoint folder, whichever of the usual layouts it uses."""
    for index_name, loader in (("model.safetensors.index.json", load_file),
                               ("pytorch_model.bin.index.json", _load_bin)):
        index = folder / index_name
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state_dict = {}
            for file in files:
                state_dict.update(loader(str(folder / file)))
            return state_dict
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return _load_bin(str(folder / "pytorch_model.bin"))
    raise FileNotFoundError(f"{folder} has no model.safetensors, pytorch_model.bin or an index of shards")


def _load_bin(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_hf_config(folder: Path) -> dict:
    """A Hugging Face MPT folder's config.json, refusing folders of other model types."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json")
    hf_config = json.loads(config_file.read_text())
    if hf_config.get("model_type") != "mpt":
        raise ValueError(f"{config_file}: model_type is {hf_config.get('model_type')!r}, not 'mpt'")
    return hf_config


def read_hf_mpt(hf_dir: str | Path) -> tuple[MPTConfig, dict[str, torch.Tensor]]:
    """(MPTConfig, our state dict) of a Hugging Face MPT folder."""
    folder = Path(hf_dir)
    return from_hf_mpt(read_hf_config(folder), read_hf_weights(folder))


def import_hf(hf_dir: str | Path, out_dir: str | Path) -> Path:
    config, state_dict = read_hf_mpt(hf_dir)
    tokenizer = Path(hf_dir) / TOKENIZER_NAME
    return save_state_dict(state_dict, config, out_dir, tokenizer if tokenizer.is_file() else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.import_hf", description=__doc__.split("\n\n")[0])
    parser.add_argument("hf_dir", help="a local Hugging Face MPT folder")
    parser.add_argument("out_dir", help="where to write the consolidated checkpoint")
    args = parser.parse_args(argv)
    return run_conversion(import_hf, args.hf_dir, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
