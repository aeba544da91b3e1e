"""Generation throughput: training.generate against transformers' generate on the exported model.

Same weights (a random MPT of the given preset, exported with training.weights.export_hf), same prompts, same
machine, same run; greedy decoding of a fixed number of new tokens (EOS ignored), batch 1 and batch 8.
Prints new tokens per second for both and the ratio, after checking that both produce the same tokens.

    .venv/bin/python bench/generate_bench.py [--preset tiny|125m] [--device cpu|cuda] [--new-tokens 64]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM

from training.generate import GenerationConfig, generate_ids
from training.model import MPT, MPTConfig
from training.weights.export_hf import export_hf
from training.weights.layout import save_consolidated


def timed(function, device: str) -> tuple[float, object]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = MPTConfig.preset(args.preset, vocab_size=50304 if args.preset != "tiny" else 256, max_seq_len=2048)
    model = MPT(config)
    with tempfile.TemporaryDirectory() as folder:
        save_consolidated(model, config, f"{folder}/ckpt")
        export_hf(f"{folder}/ckpt", f"{folder}/hf")
        hf = AutoModelForCausalLM.from_pretrained(f"{folder}/hf", dtype=dtype).to(args.device).eval()
    model = model.to(args.device, dtype).eval()
    print(f"preset={args.preset} params={config.num_params() / 1e6:.1f}M device={args.device} dtype={args.dtype} "
          f"prompt={args.prompt_tokens} new={args.new_tokens} threads={torch.get_num_threads()}")
    ours_config = GenerationConfig(max_new_tokens=args.new_tokens, stop_at_eos=False, batch_size=64)
    for batch in (1, 8):
        prompts = torch.randint(0, config.vocab_size, (batch, args.prompt_tokens), generator=torch.Generator().manual_seed(batch))
        inputs = prompts.to(args.device)
        mask = torch.ones_like(inputs)

        def ours():
            return generate_ids(model, prompts.tolist(), ours_config)

        def theirs():
            with torch.no_grad():
                return hf.generate(inputs, attention_mask=mask, max_new_tokens=args.new_tokens,
                                   min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)

        ours(), theirs()  # warm up
        ours_s = min(timed(ours, args.device)[0] for _ in range(args.repeats))
        theirs_s, hf_out = min((timed(theirs, args.device) for _ in range(args.repeats)), key=lambda r: r[0])
        same = [tokens for tokens, _ in ours()] == hf_out[:, args.prompt_tokens:].tolist()
        tokens = batch * args.new_tokens
        print(f"batch {batch}: ours {tokens / ours_s:9.1f} tok/s   transformers {tokens / theirs_s:9.1f} tok/s   "
              f"ratio {theirs_s / ours_s:5.2f}x   same tokens: {same}")


if __name__ == "__main__":
    main()
