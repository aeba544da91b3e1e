"""Export a consolidated checkpoint as a Hugging Face MPT folder: python -m training.export_hf CHECKPOINT OUT_DIR

The folder holds config.json (model_type "mpt"), model.safetensors, generation_config.json and, when the
checkpoint has a tokenizer, tokenizer.json with tokenizer_config.json, so that
`transformers.AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `AutoTokenizer.from_pretrained(OUT_DIR)`
load it and compute the same logits. A model using options `MptForCausalLM` cannot express (RoPE, GQA,
QK LayerNorm, ...) is refused with the list of them (training.hf_convert.check_hf_expressible).

Weights are copied tensor by tensor (read one, write one), so the export never holds the whole model.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from training.hf_convert import HF_PREFIX, check_hf_expressible, expected_shapes, to_hf_mpt
from training.inference import CONFIG_NAME, TOKENIZER_NAME, WEIGHTS_NAME, TextTokenizer, read_config

SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def hf_name(name: str) -> str:
    """Our state-dict key -> MptForCausalLM's (the rule of training.hf_convert.to_hf_mpt)."""
    return name if name == "lm_head.weight" else HF_PREFIX + name


def write_safetensors_streaming(path: Path, names: list[str], read, metadata: dict[str, str]) -> None:
    """Write a safetensors file one tensor at a time.

    The header needs every dtype and shape up front, so `read(name, meta_only)` is called twice per tensor:
    with meta_only=True for a meta tensor of the right dtype and shape (cheap with safetensors' lazy reader),
    then with meta_only=False for the tensor whose bytes are written.
    """
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name in names:
        tensor = read(name, meta_only=True)
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for name in names:
            tensor = read(name, meta_only=False).contiguous()
            handle.write(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the Hugging Face MPT folder for a consolidated checkpoint; returns the folder."""
    checkpoint, out = Path(checkpoint), Path(out_dir)
    config = read_config(checkpoint)
    check_hf_expressible(config)
    weights = checkpoint / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a consolidated checkpoint: {WEIGHTS_NAME} is missing")
    # The HF config and the exported names come from shapes alone (meta tensors), never the weights.
    meta_state = {name: torch.empty(shape, device="meta") for name, shape in expected_shapes(config).items()}
    hf_config, hf_meta_state = to_hf_mpt(meta_state, config)
    to_ours = {hf_name(name): name for name in meta_state}
    if set(to_ours) != set(hf_meta_state):
        raise RuntimeError("training.hf_convert changed its naming; update export_hf.hf_name")

    out.mkdir(parents=True, exist_ok=True)
    with safe_open(str(weights), framework="pt") as source:
        stored = set(source.keys())
        missing = sorted(set(meta_state) - stored)
        if missing:
            raise ValueError(f"{weights} lacks tensors {missing[:5]} the config needs")
        exported = list(hf_meta_state)
        dtypes = {source.get_slice(to_ours[name]).get_dtype() for name in exported}

        def read(name: str, meta_only: bool) -> torch.Tensor:
            ours = to_ours[name]
            if meta_only:
                piece = source.get_slice(ours)
                return torch.empty(piece.get_shape(), dtype=_torch_dtype(piece.get_dtype()), device="meta")
            return source.get_tensor(ours)

        write_safetensors_streaming(out / "model.safetensors", exported, read, {"format": "pt"})
    if len(dtypes) == 1:
        hf_config["dtype"] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(dtypes.pop(), "float32")

    tokenizer_file = checkpoint / TOKENIZER_NAME
    generation: dict = {"do_sample": False}
    if config.padded_vocab_size > config.vocab_size:  # padding rows of the embedding are never generated
        generation["suppress_tokens"] = list(range(config.vocab_size, config.padded_vocab_size))
    if tokenizer_file.is_file():
        tokenizer = TextTokenizer.from_file(tokenizer_file)
        shutil.copyfile(tokenizer_file, out / "tokenizer.json")
        tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_seq_len,
                            "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False}
        if tokenizer.eos_token is not None:
            tokenizer_config.update(eos_token=tokenizer.eos_token, pad_token=tokenizer.eos_token)
            hf_config.update(eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.eos_id)
            generation.update(eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.eos_id)
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    (out / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2) + "\n")
    return out


def _torch_dtype(safetensors_dtype: str) -> torch.dtype:
    for dtype, name in SAFETENSORS_DTYPES.items():
        if name == safetensors_dtype:
            return dtype
    raise ValueError(f"unsupported tensor dtype {safetensors_dtype!r} in the checkpoint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_hf", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="consolidated checkpoint folder")
    parser.add_argument("out_dir", help="where to write the Hugging Face folder")
    args = parser.parse_args(argv)
    try:
        out = export_hf(args.checkpoint, args.out_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
