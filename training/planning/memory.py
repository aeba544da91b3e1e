"""Memory planner: does a model, micro-batch and sharding fit on the GPUs, and what is the largest micro-batch?

    python -m training.memory --model 7b --seq-len 2048 --micro-batch 8 --num-gpus 8 --gpu a100-80gb \\
        --activation-checkpointing
    python -m training.memory --config configs/run.yaml --gpu h100 --num-gpus 16

Bytes per GPU, by component (N parameters, S = ranks a parameter is sharded over: all of them for
FSDP full sharding, the shard group for hybrid, 1 for DDP; s sequence, b micro-batch, h d_model,
a heads, L layers, V padded vocabulary, c bytes per activation element, 2 for bf16, 4 for fp32):

* parameters, gradients, optimizer state: 4 + 4 + 8 (AdamW: two fp32 moments) or 4 + 4 + 4 (LION:
  one) bytes per parameter, over S. Both precisions keep fp32 master weights, and FSDP2 reduces
  gradients in fp32, as training/train.py does.
* working copies: FSDP all-gathers parameters in the compute dtype, one block at a time with the
  next one prefetched, and holds one block's unsharded fp32 gradients before the reduce-scatter;
  the tied embedding stays gathered for the whole step: c (embedding + 2 blocks) + 4 x block.
  DDP instead holds autocast's bf16 copy of every weight (2N) and, with gradient_as_bucket_view,
  no second gradient copy.
* activations, after Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", eq. 1): without recomputation sbh(34 + 5as/h) bytes per layer in 16-bit.
  The 34 generalised to grouped-query attention (kv width k) and an FFN of width f: c(3h + 2k)
  for the attention inputs, q, k, v and output, c(h + 2f) for the MLP, 2ch for the two
  LayerNorms, plus the paper's two 1-byte dropout masks (MPT's dropout is 0 by default; they are
  kept as a 6% margin). The 5as^2b term (softmax and dropout of the scores) applies only to eager
  attention; fused attention (flash / memory-efficient SDPA, Flex) keeps an fp32 log-sum-exp per
  row instead. With full activation checkpointing each layer keeps only its input, 2sbh in 16-bit
  (c sbh in general), and backward recomputes one layer's activations at a time.
* attention bias: with attn_impl "sdpa", ALiBi (or document masking) is an additive [1, a, s, s]
  bias ([b, ., s, s] with document masks), built once per forward.
* logits and loss: b s V elements, c for the logits, 4 for their fp32 copy (bf16 only), 4 for the
  log-softmax kept for backward and 4 for its gradient: 14 bytes in bf16, 12 in fp32.

The usable memory is the GPU's less a reserve (default 10%) for the CUDA context, NCCL buffers and
allocator fragmentation. Estimates, not measurements: leave margin, and trust a real step more.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Literal

from training.config import load_config
from training.hardware import GIB, get_gpu
from training.model import PRESETS, MPTConfig

SHARDINGS = ("full", "hybrid", "ddp")
PRECISIONS = ("bf16", "fp32")
OPTIMIZER_STATE_BYTES = {"adamw": 8, "lion": 4}  # fp32 moments per parameter
DEFAULT_RESERVE = 0.10
MAX_MICRO_BATCH = 1 << 16


@dataclass
class MemoryRequest:
    model: MPTConfig
    seq_len: int
    micro_batch: int
    gpu_memory_bytes: int
    num_gpus: int = 1
    sharding: Literal["full", "hybrid", "ddp"] = "full"
    shard_group_size: int | None = None  # hybrid only; default: 8 (one node) or fewer when fewer GPUs
    precision: Literal["bf16", "fp32"] = "bf16"
    optimizer: Literal["adamw", "lion"] = "adamw"
    activation_checkpointing: bool = False
    attention: Literal["flash", "eager"] = "flash"
    document_masks: bool = False
    reserve: float = DEFAULT_RESERVE

    def __post_init__(self) -> None:
        for key in ("seq_len", "micro_batch", "num_gpus", "gpu_memory_bytes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "micro_batch" else 1):
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        choices = {"sharding": SHARDINGS, "precision": PRECISIONS, "optimizer": tuple(OPTIMIZER_STATE_BYTES),
                   "attention": ("flash", "eager")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if not 0 <= self.reserve < 1:
            raise ValueError(f"reserve must be a fraction in [0, 1), got {self.reserve}")
        if self.shard_group_size is not None and self.sharding != "hybrid":
            raise ValueError("shard_group_size applies only to sharding='hybrid'")
        if self.sharding == "hybrid" and self.num_gpus % self.shard_ranks:
            raise ValueError(f"hybrid shard group of {self.shard_ranks} does not divide {self.num_gpus} GPUs")

    @property
    def shard_ranks(self) -> int:
        """How many ranks each parameter (and its gradient and optimizer state) is split over."""
        if self.sharding == "full":
            return self.num_gpus
        if self.sharding == "hybrid":
            return self.shard_group_size or min(8, self.num_gpus)
        return 1

    @property
    def activation_bytes(self) -> int:
        return 2 if self.precision == "bf16" else 4


@dataclass
class MemoryEstimate:
    request: MemoryRequest
    components: dict[str, int]  # bytes per GPU
    usable_bytes: int
    largest_micro_batch: int
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.components.values())

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.usable_bytes

    @property
    def model_state_bytes(self) -> int:
        return sum(self.components[k] for k in ("parameters", "gradients", "optimizer state"))

    def to_dict(self) -> dict:
        request = dataclasses.asdict(self.request)
        return {
            "request": request,
            "components_gib": {k: v / GIB for k, v in self.components.items()},
            "total_gib": self.total_bytes / GIB,
            "usable_gib": self.usable_bytes / GIB,
            "fits": self.fits,
            "largest_micro_batch": self.largest_micro_batch,
            "notes": self.notes,
        }


def layer_activation_bytes(cfg: MPTConfig, seq_len: int, micro_batch: int, act_bytes: int = 2,
                           attention: str = "flash") -> int:
    """Activations one transformer block keeps for backward, without recomputation (Korthikanti eq. 1, generalised).

    For multi-head attention, a 4x FFN, bf16 and eager attention this is exactly sbh(34 + 5as/h).
    """
    s, b, h, a = seq_len, micro_batch, cfg.d_model, cfg.n_heads
    kv = cfg.kv_heads * cfg.head_dim
    tokens = s * b
    attention_inputs = act_bytes * (3 * h + 2 * kv) * tokens  # Wqkv input, q, k, v, out_proj input
    mlp = act_bytes * (h + 2 * cfg.d_ffn) * tokens  # up_proj input, GELU input, GELU output
    layer_norms = 2 * act_bytes * h * tokens
    dropout_masks = 2 * h * tokens  # 1 byte each, after attention and after the MLP
    if attention == "eager":
        scores = 5 * a * s * s * b * act_bytes // 2  # softmax output, dropout mask and output (2 + 1 + 2 bytes)
    else:
        scores = 4 * a * s * b  # fp32 log-sum-exp per query row
    return attention_inputs + mlp + layer_norms + dropout_masks + scores


def _components(req: MemoryRequest, micro_batch: int) -> dict[str, int]:
    cfg = req.model
    params = cfg.num_params()
    shards = req.shard_ranks
    c = req.activation_bytes
    embedding = cfg.padded_vocab_size * cfg.d_model
    block = (params - embedding * (1 if cfg.tie_embeddings else 2)) // cfg.n_layers
    if req.sharding == "ddp":
        working = 2 * params if req.precision == "bf16" else 0
    else:
        working = c * (embedding + 2 * block) + 4 * block
    s, b, h = req.seq_len, micro_batch, cfg.d_model
    per_layer = layer_activation_bytes(cfg, s, b, c, req.attention)
    if req.activation_checkpointing:
        activations = cfg.n_layers * c * s * b * h + per_layer
    else:
        activations = cfg.n_layers * per_layer
    activations += 2 * c * s * b * h  # the embedding output and the final LayerNorm's input
    bias = 0
    if cfg.attn_impl == "sdpa" and (cfg.position == "alibi" or req.document_masks):
        heads = cfg.n_heads if cfg.position == "alibi" else 1
        bias = heads * s * s * c * (b if req.document_masks else 1)
    logit_bytes = c + (4 if c != 4 else 0) + 4 + 4
    return {
        "parameters": 4 * params // shards,
        "gradients": 4 * params // shards,
        "optimizer state": OPTIMIZER_STATE_BYTES[req.optimizer] * params // shards,
        "working copies": working,
        "activations": activations,
        "attention bias": bias,
        "logits and loss": logit_bytes * s * b * cfg.padded_vocab_size,
    }


def estimate(req: MemoryRequest) -> MemoryEstimate:
    """Bytes per GPU by component, whether they fit, the largest micro-batch that does, and why."""
    usable = int(req.gpu_memory_bytes * (1 - req.reserve))

    def fits(micro_batch: int) -> bool:
        return sum(_components(req, micro_batch).values()) <= usable

    largest = 0
    if fits(1):
        low, high = 1, 2
        while high <= MAX_MICRO_BATCH and fits(high):
            low, high = high, high * 2
        while high - low > 1:  # fits(low) and not fits(high)
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        largest = low
    result = MemoryEstimate(req, _components(req, req.micro_batch), usable, largest)
    result.notes = _explain(result)
    return result


def _explain(est: MemoryEstimate) -> list[str]:
    req = est.request
    gib = lambda value: f"{value / GIB:.1f} GiB"  # noqa: E731
    state_bytes = 4 + 4 + OPTIMIZER_STATE_BYTES[req.optimizer]
    where = {"full": f"sharded over all {req.num_gpus} GPUs", "hybrid": f"sharded over groups of {req.shard_ranks}",
             "ddp": "replicated on every GPU (DDP)"}[req.sharding]
    if req.num_gpus == 1:
        where = "all on the one GPU"
    notes = [f"model states: {state_bytes} bytes/param (fp32 weights, fp32 gradients, {req.optimizer} state), "
             f"{where}: {gib(est.model_state_bytes)} per GPU"]
    if est.fits:
        notes.append(f"fits: {gib(est.total_bytes)} of {gib(est.usable_bytes)} usable "
                     f"({req.gpu_memory_bytes / GIB:.0f} GiB less {req.reserve:.0%} reserve)")
        return notes
    notes.append(f"does not fit: {gib(est.total_bytes)} needed, {gib(est.usable_bytes)} usable "
                 f"({req.gpu_memory_bytes / GIB:.0f} GiB less {req.reserve:.0%} reserve)")
    fixed = est.model_state_bytes + est.components["working copies"]
    if fixed > est.usable_bytes:
        params = req.model.num_params()
        needed = -(-(state_bytes * params) // max(est.usable_bytes - est.components["working copies"], 1))
        notes.append(f"the model states alone ({gib(est.model_state_bytes)}) exceed the usable memory at any "
                     f"micro-batch; shard them over at least {needed} GPUs (FSDP full or hybrid sharding)")
    elif est.largest_micro_batch == 0:
        notes.append("even micro-batch 1 does not fit: shorten the sequence, shard more, or checkpoint activations")
    else:
        notes.append(f"activations and logits at micro-batch {req.micro_batch} are too large; "
                     f"the largest micro-batch that fits is {est.largest_micro_batch}")
    if not req.activation_checkpointing:
        notes.append("activation checkpointing would keep only each block's input (2sbh per layer in bf16)")
    return notes


def format_estimate(est: MemoryEstimate) -> str:
    req = est.request
    lines = [f"{req.sharding} sharding on {req.num_gpus} GPU(s) of {req.gpu_memory_bytes / GIB:.0f} GiB, "
             f"{req.model.num_params() / 1e9:.2f}B params, seq {req.seq_len}, micro-batch {req.micro_batch}, "
             f"{req.precision}, {req.optimizer}, activation checkpointing "
             f"{'on' if req.activation_checkpointing else 'off'}, {req.attention} attention", ""]
    width = max(len(name) for name in est.components)
    lines += [f"  {name:<{width}}  {value / GIB:8.2f} GiB" for name, value in est.components.items()]
    lines += [f"  {'total':<{width}}  {est.total_bytes / GIB:8.2f} GiB  (usable {est.usable_bytes / GIB:.2f} GiB)", "",
              f"fits: {'yes' if est.fits else 'NO'}; largest micro-batch that fits: {est.largest_micro_batch}"]
    lines += [f"- {note}" for note in est.notes]
    return "\n".join(lines)


def request_from_config(path: str, overrides: list[str] = ()) -> dict:
    """What a training YAML fixes: model, micro-batch, sharding, precision, optimizer, checkpointing."""
    cfg = load_config(path, list(overrides))
    fields = {
        "model": cfg.model.build(),
        "micro_batch": cfg.train.micro_batch_size,
        "sharding": cfg.parallel.sharding,
        "optimizer": cfg.optimizer.name,
        "activation_checkpointing": cfg.parallel.activation_checkpointing,
    }
    fields["seq_len"] = fields["model"].max_seq_len
    if cfg.parallel.shard_group_size is not None:
        fields["shard_group_size"] = cfg.parallel.shard_group_size
    if cfg.parallel.mixed_precision != "auto":
        fields["precision"] = cfg.parallel.mixed_precision
    return fields


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.memory",
                                     description="Per-GPU memory of an MPT training step, and the largest micro-batch.")
    parser.add_argument("--config", help="a training YAML: model, micro-batch, sharding, precision, optimizer")
    parser.add_argument("--override", action="append", default=[], help="key.path=value for --config (repeatable)")
    parser.add_argument("--model", choices=sorted(PRESETS), help="an MPT preset (default: the config's, else 7b)")
    parser.add_argument("--seq-len", type=int, help="default: the config's max_seq_len, else 2048")
    parser.add_argument("--micro-batch", type=int, help="samples per GPU per forward (default: config's, else 1)")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--sharding", choices=SHARDINGS)
    parser.add_argument("--shard-group-size", type=int, help="hybrid sharding: GPUs per shard group (default 8)")
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZER_STATE_BYTES))
    parser.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--attention", choices=("flash", "eager"), default="flash")
    parser.add_argument("--document-masks", action="store_true", help="per-sample attention bias (sdpa only)")
    parser.add_argument("--gpu", default="h100-sxm", help="GPU type from training.hardware (sets the memory)")
    parser.add_argument("--memory-gib", type=float, help="GPU memory in GiB (instead of the GPU's)")
    parser.add_argument("--reserve", type=float, default=DEFAULT_RESERVE, help="fraction of memory kept free")
    parser.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        fields = request_from_config(args.config, args.override) if args.config else {}
        if args.model:
            fields["model"] = MPTConfig.preset(args.model)
        fields.setdefault("model", MPTConfig.preset("7b"))
        given = {"seq_len": args.seq_len, "micro_batch": args.micro_batch, "sharding": args.sharding,
                 "shard_group_size": args.shard_group_size, "precision": args.precision,
                 "optimizer": args.optimizer, "activation_checkpointing": args.activation_checkpointing}
        fields.update({k: v for k, v in given.items() if v is not None})
        fields.setdefault("seq_len", 2048)
        fields.setdefault("micro_batch", 1)
        memory = int(args.memory_gib * GIB) if args.memory_gib else get_gpu(args.gpu).memory_bytes
        request = MemoryRequest(**fields, gpu_memory_bytes=memory, num_gpus=args.num_gpus,
                                attention=args.attention, document_masks=args.document_masks, reserve=args.reserve)
        est = estimate(request)
    except ValueError as err:
        print(f"training.memory: {err}", file=sys.stderr)
        return 2
    print(json.dumps(est.to_dict(), indent=2) if args.json else format_estimate(est))
    return 0 if est.fits else 1


if __name__ == "__main__":
    sys.exit(main())
