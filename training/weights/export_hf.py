"""Export a checkpoint as a Hugging Face MPT folder: python -m training.export_hf CHECKPOINT OUT_DIR

CHECKPOINT is what generation and evaluation take (training.weights.inference.open_weights): a training checkpoint
(a step-N folder, or a checkpoint root meaning its newest complete step; local or on an object store) or a
consolidated folder. The folder written holds config.json (model_type "mpt"), model.safetensors,
generation_config.json and, when the checkpoint has a tokenizer (a training checkpoint: the one its data was
tokenized with), tokenizer.json with tokenizer_config.json, so that
`transformers.AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `AutoTokenizer.from_pretrained(OUT_DIR)`
load it and compute the same logits. A model using options `MptForCausalLM` cannot express (RoPE, GQA,
QK LayerNorm, ...) is refused with the list of them (training.weights.hf_convert.check_hf_expressible).

Weights are copied tensor by tensor (read one, write one), so the export never holds the whole model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from training.weights.consolidate import write_safetensors
from training.weights.hf_convert import HF_PREFIX, run_conversion, to_hf_mpt
from training.weights.inference import open_weights
from training.weights.layout import CONFIG_NAME, TOKENIZER_NAME, WEIGHTS_NAME

HF_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def hf_name(name: str) -> str:
    """Our state-dict key -> MptForCausalLM's (the rule of training.weights.hf_convert.to_hf_mpt)."""
    return name if name == "lm_head.weight" else HF_PREFIX + name


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the Hugging Face MPT folder for a training or consolidated checkpoint; returns the folder."""
    out = Path(out_dir)
    with open_weights(checkpoint) as weights:
        config = weights.config
        if weights.tokenizer is not None:
            config.check_tokenizer(weights.tokenizer.vocab_size)
        # The HF config and the exported names come from shapes alone (meta tensors), never the weights;
        # to_hf_mpt refuses what MptForCausalLM cannot express and weights that do not match the config.
        meta_state = {name: torch.empty(shape, dtype=dtype, device="meta")
                      for name, (shape, dtype) in weights.specs.items()}
        hf_config, hf_meta_state = to_hf_mpt(meta_state, config)
        if {hf_name(name) for name in meta_state} != set(hf_meta_state):
            raise RuntimeError("training.weights.hf_convert changed its naming; update export_hf.hf_name")
        out.mkdir(parents=True, exist_ok=True)
        write_safetensors(out / WEIGHTS_NAME, {hf_name(name): spec for name, spec in weights.specs.items()},
                          ((hf_name(name), tensor) for name, tensor in weights.tensors))
    dtypes = {dtype for _, dtype in weights.specs.values()}
    if len(dtypes) == 1:
        hf_config["dtype"] = HF_DTYPES.get(dtypes.pop(), "float32")

    tokenizer = weights.tokenizer
    generation: dict = {"do_sample": False}
    if config.padded_vocab_size > config.vocab_size:  # padding rows of the embedding are never generated
        generation["suppress_tokens"] = list(range(config.vocab_size, config.padded_vocab_size))
    if tokenizer is not None:
        tokenizer.save(out / TOKENIZER_NAME)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_hf", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a training checkpoint (step-N folder, or a checkpoint root: its "
                                           "newest complete step) or a consolidated folder")
    parser.add_argument("out_dir", help="where to write the Hugging Face folder")
    args = parser.parse_args(argv)
    return run_conversion(export_hf, args.checkpoint, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
