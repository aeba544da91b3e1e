"""Autoregressive sampling from an MPT with a KV cache: greedy, temperature, top-k, top-p, stop sequences.

Prompts of different lengths share a batch by left padding. `MPT.forward(key_padding_mask=...)` hides
the pad keys and gives every row its own positions (row i's first real token is position 0): each row
then computes exactly what it would compute alone, so batched generation equals unbatched generation.
Batches without padding (one prompt, or prompts of one length) pass no mask. Every step goes through
`MPT.forward`, which is what a sharded (FSDP) model needs. Without the cache every step recomputes the
whole sequence through `MPT.forward(sequence_ids=...)` (pads are their own document), the independent
path the tests compare with.

Sampling is reproducible per row: row i of a call draws from a generator seeded with `seed + i`.

    python -m training.generate CHECKPOINT --prompt "Once upon a time" --max-new-tokens 50 --temperature 0.8
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import torch

from training.model import MPT
from training.weights.inference import load_model


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 picks the most likely token (greedy)
    top_k: int | None = None  # sample among the k most likely tokens only
    top_p: float | None = None  # sample among the smallest set of tokens whose probability reaches p
    stop_sequences: list[str] = field(default_factory=list)  # text that ends a row (and is cut from it)
    stop_at_eos: bool = True
    seed: int = 0
    use_cache: bool = True
    batch_size: int = 16

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if any(not stop for stop in self.stop_sequences):
            raise ValueError("stop_sequences must not contain an empty string")


@dataclass
class Generation:
    prompt: str | None
    text: str  # the continuation, cut before the first stop sequence
    token_ids: list[int]  # the generated tokens (through the one that completed a stop sequence or was EOS)
    finish_reason: str  # "eos", "stop" or "length"


# ---------------------------------------------------------------------------------------------------------------
# Next-token choice


def _filter_logits(logits: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Scale by temperature and mask (to -inf) what top-k and top-p exclude. logits: [B, V] float32."""
    logits = logits / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens before it already reach top_p (the most likely token always stays).
        drop_sorted = probs.cumsum(dim=-1) - probs >= config.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(logits: torch.Tensor, config: GenerationConfig, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row [B] from the last-position logits [B, V]."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    probs = _filter_logits(logits.float(), config).softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(generators)])


class _Rows:
    """Per-row bookkeeping of one batch: new tokens, stop checks, finish reasons."""

    def __init__(self, count: int, config: GenerationConfig, eos_id: int | None, decode):
        self.config, self.eos_id, self.decode = config, eos_id, decode
        self.tokens: list[list[int]] = [[] for _ in range(count)]
        self.finish: list[str | None] = [None] * count

    @property
    def all_done(self) -> bool:
        return all(reason is not None for reason in self.finish)

    def add(self, chosen: torch.Tensor) -> None:
        for row, token in enumerate(chosen.tolist()):
            if self.finish[row] is not None:
                continue
            self.tokens[row].append(token)
            if self.config.stop_at_eos and token == self.eos_id:
                self.finish[row] = "eos"
            elif self.config.stop_sequences and self.decode is not None:
                text = self.decode(self.tokens[row])
                if any(stop in text for stop in self.config.stop_sequences):
                    self.finish[row] = "stop"
            if self.finish[row] is None and len(self.tokens[row]) >= self.config.max_new_tokens:
                self.finish[row] = "length"


def _generate_batch(model: MPT, prompts: list[list[int]], config: GenerationConfig, eos_id: int | None,
                    decode, seeds: list[int]) -> _Rows:
    device = model.wte.weight.device
    vocab = model.cfg.vocab_size  # embedding rows past the vocabulary are padding, never produced
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds] if config.temperature > 0 else []
    longest = max(len(p) for p in prompts)
    pad_id = 0
    ids = torch.tensor([[pad_id] * (longest - len(p)) + list(p) for p in prompts], device=device)
    valid = torch.tensor([[False] * (longest - len(p)) + [True] * len(p) for p in prompts], device=device)
    padded = not bool(valid.all())
    rows = _Rows(len(prompts), config, eos_id, decode)

    if not config.use_cache:
        for _ in range(config.max_new_tokens):
            logits = model(ids, sequence_ids=valid.long()) if padded else model(ids)
            chosen = next_tokens(logits[:, -1, :vocab].float(), config, generators)
            rows.add(chosen)
            if rows.all_done:
                break
            ids = torch.cat([ids, chosen.unsqueeze(1)], dim=1)
            valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
        return rows

    pads = ~valid if padded else None  # [B, cache + new tokens]: True at the left padding
    logits, cache = model(ids, use_cache=True, key_padding_mask=pads)
    for _ in range(config.max_new_tokens):
        chosen = next_tokens(logits[:, -1, :vocab].float(), config, generators)
        rows.add(chosen)
        if rows.all_done:
            break
        if padded:
            pads = torch.cat([pads, torch.zeros_like(pads[:, :1])], dim=1)
        logits, cache = model(chosen.unsqueeze(1), past_key_values=cache, use_cache=True, key_padding_mask=pads)
    return rows


@torch.no_grad()
def generate_ids(model: MPT, prompts: list[list[int]], config: GenerationConfig, eos_id: int | None = None,
                 decode=None) -> list[tuple[list[int], str]]:
    """Continue each prompt (token ids): [(new token ids, finish reason)] in the order given.

    Prompts are batched by similar length (`config.batch_size` per batch); `decode(ids) -> str` is needed
    only for stop sequences.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if config.stop_sequences and decode is None:
        raise ValueError("stop_sequences need a decode function (a tokenizer)")
    cfg = model.cfg
    if cfg.position == "learned":
        longest = max(len(p) for p in prompts) + config.max_new_tokens
        if longest > cfg.max_seq_len:
            raise ValueError(f"prompt + max_new_tokens = {longest} tokens exceed max_seq_len={cfg.max_seq_len} "
                             "of the learned position embedding")
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[tuple[list[int], str] | None] = [None] * len(prompts)
    try:
        for start in range(0, len(order), config.batch_size):
            chunk = order[start:start + config.batch_size]
            # Seeds follow the caller's row order, not the length order used for batching.
            rows = _generate_batch(model, [prompts[i] for i in chunk], config, eos_id, decode,
                                   [config.seed + i for i in chunk])
            for offset, i in enumerate(chunk):
                results[i] = (rows.tokens[offset], rows.finish[offset])
    finally:
        model.train(was_training)
    return results


def cut_at_stop(text: str, stop_sequences: list[str]) -> str:
    """The text before the earliest stop sequence (all of it when none occurs)."""
    cut = min((text.find(stop) for stop in stop_sequences if stop in text), default=len(text))
    return text[:cut]


def generate(model: MPT, tokenizer, prompts: list[str], config: GenerationConfig) -> list[Generation]:
    """Continue each text prompt; `tokenizer` is a training.tokenizer.TextTokenizer."""
    encoded = [tokenizer.encode(prompt) for prompt in prompts]
    for prompt, ids in zip(prompts, encoded):
        if not ids:
            raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    outputs = generate_ids(model, encoded, config, tokenizer.eos_id, tokenizer.decode)
    generations = []
    for prompt, (tokens, reason) in zip(prompts, outputs):
        text_tokens = tokens[:-1] if reason == "eos" else tokens
        text = cut_at_stop(tokenizer.decode(text_tokens), config.stop_sequences)
        generations.append(Generation(prompt, text, tokens, reason))
    return generations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a training checkpoint (step-N folder, or a checkpoint root: its newest "
                                           "complete step) or a consolidated folder")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for a batch)")
    parser.add_argument("--prompts-file", help="a text file with one prompt per line")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = parser.parse_args(argv)

    prompts = list(args.prompt)
    if args.prompts_file:
        with open(args.prompts_file, encoding="utf-8") as handle:
            prompts += [line.rstrip("\n") for line in handle if line.strip()]
    if not prompts:
        parser.error("give at least one --prompt or a --prompts-file")
    try:
        config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p, stop_sequences=[s.encode().decode("unicode_escape")
                                                                    for s in args.stop],
                                  seed=args.seed, use_cache=not args.no_cache, batch_size=args.batch_size)
        model, _, tokenizer = load_model(args.checkpoint, device=args.device, dtype=getattr(torch, args.dtype))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if tokenizer is None:
        print(f"error: {args.checkpoint} has no tokenizer (a consolidated folder's tokenizer.json, or the one a "
              "training checkpoint's data records); text prompts need one", file=sys.stderr)
        return 2
    for generation in generate(model, tokenizer, prompts, config):
        print(f"### prompt ({generation.finish_reason}, {len(generation.token_ids)} tokens)\n{generation.prompt}")
        print(f"### completion\n{generation.text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
