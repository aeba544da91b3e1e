"""The MPT decoder-only transformer, in one file.

MPT (MosaicML's GPT) is a pre-LayerNorm GPT with ALiBi instead of position
embeddings, a fused QKV projection, no biases, an exact-GELU MLP, tied input
and output embeddings, and LayerNorm that runs in the autocast dtype.  This
file follows llm-foundry's `modeling_mpt.py` and `layers/attention.py` (same
layer names, so checkpoints map one to one) and adds what llm-foundry keeps
elsewhere as options: RoPE or learned positions, grouped-query attention,
QK LayerNorm, clip_qkv and a logit scale.

Attention runs through one of two backends, chosen by `MPTConfig.attn_impl`:
  * "sdpa": torch's scaled_dot_product_attention.  With no ALiBi, no
    document mask and no padding it is plain causal attention (flash kernels
    on GPU); otherwise an additive float bias, built once per forward,
    carries the ALiBi slopes, the causal mask, the same-document mask and
    the padding mask.
  * "flex": FlexAttention with a score_mod for ALiBi and a block mask for
    causality, documents and padding, built once per forward.  It is fast
    only under torch.compile and has no CPU backward, so CPU training uses
    "sdpa".

Generation batches prompts of different lengths by left padding: forward's
key_padding_mask hides the pad tokens and counts each row's positions from
its first real token, so a padded row computes what it would compute alone.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

POSITIONS = ("alibi", "learned", "rope")
ATTN_IMPLS = ("sdpa", "flex")

# Published MPT shapes: d_model / n_layers / n_heads (and the released vocab and context where they differ).
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, max_seq_len=128, vocab_size=256),
    "125m": dict(d_model=768, n_layers=12, n_heads=12),
    "350m": dict(d_model=1024, n_layers=24, n_heads=16),
    "760m": dict(d_model=1536, n_layers=24, n_heads=12),
    "1b": dict(d_model=2048, n_layers=24, n_heads=16),
    "3b": dict(d_model=2560, n_layers=32, n_heads=20),
    # Released MPT-7B: 50432 embedding rows, the size GPT-NeoX-20B itself uses.
    "7b": dict(d_model=4096, n_layers=32, n_heads=32, vocab_size=50432),
    # Released MPT-30B (llm-foundry's own 30B yaml uses 56 heads instead); its last stage ran at 8k context.
    "30b": dict(d_model=7168, n_layers=48, n_heads=64, vocab_size=50432, max_seq_len=8192),
}


@dataclass
class MPTConfig:
    """Shape and options of an MPT model.

    `vocab_size` is the number of token ids the tokenizer may produce (50277
    for GPT-NeoX-20B's, which MPT uses); the embedding has `padded_vocab_size`
    rows, `vocab_size` rounded up to a multiple of `pad_vocab_to` so the
    output matmul has friendly shapes.
    """

    d_model: int  # width of the residual stream
    n_layers: int  # transformer blocks
    n_heads: int  # attention heads; head_dim = d_model / n_heads
    n_kv_heads: int | None = None  # None: multi-head; fewer than n_heads: grouped-query attention
    expansion_ratio: int = 4  # MLP hidden width = expansion_ratio x d_model
    max_seq_len: int = 2048  # longest sequence (sizes learned position tables and attention biases)
    vocab_size: int = 50277  # token ids the tokenizer produces
    pad_vocab_to: int = 128  # embedding rows are vocab_size rounded up to a multiple of this
    position: Literal["alibi", "learned", "rope"] = "alibi"  # how attention knows token positions
    alibi_bias_max: float = 8.0  # head h gets slope 2^(-alibi_bias_max * h / n), n = n_heads rounded up to 2^k
    rope_theta: float = 10000.0  # RoPE base frequency
    no_bias: bool = True  # no bias terms in Linear and LayerNorm layers (MPT's default)
    qk_ln: bool = False  # LayerNorm on queries and keys
    clip_qkv: float | None = None  # clamp the fused QKV activations to [-clip_qkv, clip_qkv]
    logit_scale: float | None = None  # multiply the output logits by this
    tie_embeddings: bool = True  # the output projection reuses the token embedding
    layer_norm_eps: float = 1e-5  # added to the variance in every LayerNorm
    low_precision_layernorm: bool = True  # LayerNorm in the activations' dtype under autocast (bf16)
    attn_impl: Literal["sdpa", "flex"] = "sdpa"  # flex: FlexAttention (GPU); sdpa: scaled_dot_product_attention
    # Pre-training: attention and loss stay inside each document packed into a sample. The loader derives
    # sequence_ids from the dataset's EOS token (its manifest's extra.eos_token_id); a token after an EOS starts
    # a new document. A training-time choice: exported models have it off (inference sees one text per row).
    attn_uses_sequence_id: bool = False
    # Init: None means MPT's kaiming_normal_(fan_in, relu); a float means normal(0, init_std).
    init_std: float | None = None
    emb_init_std: float | None = None  # None: the embeddings use the same init as the Linears
    init_div_is_residual: bool = True  # divide out_proj and down_proj by sqrt(2 * n_layers)

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layers", "n_heads", "expansion_ratio", "max_seq_len", "vocab_size", "pad_vocab_to"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MPTConfig.{key} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"MPTConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is not None and (
            not isinstance(self.n_kv_heads, int) or not 1 <= self.n_kv_heads <= self.n_heads
            or self.n_heads % self.n_kv_heads
        ):
            raise ValueError(
                f"MPTConfig.n_kv_heads={self.n_kv_heads!r} must divide n_heads={self.n_heads} "
                "(or be None for multi-head)"
            )
        if self.position not in POSITIONS:
            raise ValueError(f"MPTConfig.position={self.position!r} is not one of {POSITIONS}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"MPTConfig.attn_impl={self.attn_impl!r} is not one of {ATTN_IMPLS}")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"MPTConfig.position='rope' needs an even head_dim, got {self.head_dim}")
        if self.clip_qkv is not None and self.clip_qkv <= 0:
            raise ValueError(f"MPTConfig.clip_qkv must be positive or None, got {self.clip_qkv!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> MPTConfig:
        """A published MPT shape ("tiny" is for tests), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown MPT preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict) -> MPTConfig:
        """Build from a plain dict (a YAML section, a checkpoint), rejecting keys this config does not have."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MPTConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def d_ffn(self) -> int:
        return self.expansion_ratio * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        return math.ceil(self.vocab_size / self.pad_vocab_to) * self.pad_vocab_to

    def check_tokenizer(self, tokenizer_vocab_size: int) -> None:
        """Raise unless every id the tokenizer can produce has an embedding row."""
        if tokenizer_vocab_size > self.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer_vocab_size} tokens but MPTConfig.vocab_size is {self.vocab_size}"
            )

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count from the shapes alone (no model is built); tied embeddings count once.

        exclude_embeddings drops wte and wpe (as llm-foundry's count does); an untied lm_head stays.
        """
        d, bias = self.d_model, not self.no_bias
        norm = d * (2 if bias else 1)
        kv_dim = self.kv_heads * self.head_dim
        qkv_out = d + 2 * kv_dim
        per_layer = (
            2 * norm
            + d * qkv_out + (qkv_out if bias else 0)
            + d * d + (d if bias else 0)
            + 2 * d * self.d_ffn + ((self.d_ffn + d) if bias else 0)
        )
        if self.qk_ln:
            per_layer += norm + kv_dim * (2 if bias else 1)
        total = self.n_layers * per_layer + norm
        if not self.tie_embeddings:
            total += self.padded_vocab_size * d
        if not exclude_embeddings:
            total += self.padded_vocab_size * d
            if self.position == "learned":
                total += self.max_seq_len * d
        return total

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, llm-foundry's MFU formula: 6N + 12 * n_layers * d_model * seq_len.

        N is every parameter (embeddings included, as llm-foundry's n_active_params); the second term is
        the attention scores and weighted sum (QK^T and AV), forward plus backward, for a full causal row.
        """
        return 6 * self.num_params() + 12 * self.n_layers * self.d_model * seq_len


# ---------------------------------------------------------------------------------------------------------------
# The SDPA path's attention bias and the device's memory

# The SDPA bias may take at most this share of the device's memory: weights, optimizer state and activations
# need the rest.
SDPA_BIAS_MEMORY_FRACTION = 0.5


def sdpa_bias_bytes(cfg: MPTConfig, micro_batch: int, seq_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the SDPA path's attention bias takes in a training forward of micro_batch x seq_len tokens.

    0 where attention is plain causal (no ALiBi, no documents: no bias, flash kernels). Otherwise the bias
    [B or 1, H or 1, T, T] in the compute dtype `dtype` (B rows with attn_uses_sequence_id, H heads with ALiBi),
    held from the forward to the end of the backward, plus the temporaries that build it: the int64 distances
    [T, T], one head's float32 ALiBi term [T, T] and the bool masks (at most three of [B or 1, T, T]).
    Quadratic in seq_len: about 300 GB for 32 ALiBi heads at 64k tokens in bf16.
    """
    alibi, per_row = cfg.position == "alibi", cfg.attn_uses_sequence_id
    if not (alibi or per_row):
        return 0
    rows, heads, cells = (micro_batch if per_row else 1), (cfg.n_heads if alibi else 1), seq_len * seq_len
    held = rows * heads * cells * dtype.itemsize
    temporaries = cells * (8 + 4) + 3 * rows * cells
    return held + temporaries


def check_sdpa_fits(cfg: MPTConfig, micro_batch: int, seq_len: int, device_memory: int,
                    dtype: torch.dtype = torch.bfloat16) -> None:
    """Refuse attn_impl='sdpa' where its attention bias (sdpa_bias_bytes) would take more than
    SDPA_BIAS_MEMORY_FRACTION of `device_memory` bytes; FlexAttention builds no such tensor."""
    needed = sdpa_bias_bytes(cfg, micro_batch, seq_len, dtype)
    allowed = SDPA_BIAS_MEMORY_FRACTION * device_memory
    if cfg.attn_impl != "sdpa" or needed <= allowed:
        return
    longest = math.isqrt(int(allowed // sdpa_bias_bytes(cfg, micro_batch, 1, dtype)))
    raise ValueError(
        f"attn_impl='sdpa' at seq_len={seq_len} builds an attention bias of {needed / 2**30:.1f} GiB "
        f"(micro batch {micro_batch}, {dtype}), more than {SDPA_BIAS_MEMORY_FRACTION:.0%} of the device's "
        f"{device_memory / 2**30:.0f} GiB; it fits up to about {longest} tokens. Use FlexAttention "
        "(attn_impl='flex'; in a training YAML model.overrides.attn_impl: flex), which builds no bias tensor"
    )


# ---------------------------------------------------------------------------------------------------------------
# Position helpers


def alibi_slopes(n_heads: int, alibi_bias_max: float, device=None) -> torch.Tensor:
    """ALiBi slope per head, MPT's ordering: for a non-power-of-two head count, the odd then even slopes of
    the next power of two, truncated (so a 12-head model does not simply take the first 12 of 16)."""
    padded = 2 ** math.ceil(math.log2(n_heads))
    slopes = 2.0 ** (-alibi_bias_max * torch.arange(1, padded + 1, dtype=torch.float32, device=device) / padded)
    if padded != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def position_ids(length: int, past: int, sequence_ids: torch.Tensor | None, device) -> torch.Tensor:
    """Absolute positions [B or 1, T]; with sequence_ids, positions restart at 0 where each document begins."""
    steps = torch.arange(length, device=device)
    if sequence_ids is None:
        return (steps + past).unsqueeze(0)
    starts = torch.ones_like(sequence_ids, dtype=torch.bool)
    starts[:, 1:] = sequence_ids[:, 1:] != sequence_ids[:, :-1]
    doc_start = torch.where(starts, steps, torch.zeros_like(steps)).cummax(dim=1).values
    return steps - doc_start


def padded_position_ids(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """Positions [B, S] of every key of a padded batch, counting only each row's real tokens.

    key_padding_mask [B, S] is True at pad tokens; a pad gets the position of the real token before it (0 for
    left padding), which nothing reads: pads are hidden from every query but themselves.
    """
    return ((~key_padding_mask).long().cumsum(dim=1) - 1).clamp(min=0)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [B or 1, 1, T, head_dim] for rotate-half RoPE (GPT-NeoX / llm-foundry layout), fp32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float().unsqueeze(-1) * inv_freq
    angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Layers


class LayerNorm(nn.LayerNorm):
    """LayerNorm that, under autocast, runs in the autocast dtype (MPT's low_precision_layernorm).

    Plain autocast would run it in float32; MPT trades that precision for bandwidth.
    """

    def __init__(self, dim: int, eps: float, bias: bool, low_precision: bool):
        super().__init__(dim, eps=eps, bias=bias)
        self.low_precision = low_precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        if not (self.low_precision and torch.is_autocast_enabled(device)):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device, enabled=False):
            return F.layer_norm(x.to(dtype), self.normalized_shape, self.weight.to(dtype), bias, self.eps)


@dataclass
class AttentionInputs:
    """What every layer's attention needs, computed once per forward."""

    rope: tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin) [B or 1, 1, T, head_dim] when position == "rope"
    sdpa_bias: torch.Tensor | None  # additive float bias [B or 1, H or 1, T, S] (-inf where masked)
    sdpa_is_causal: bool
    flex_block_mask: object | None
    flex_score_mod: object | None


class Attention(nn.Module):
    """Self-attention with a fused QKV projection; n_kv_heads < n_heads gives grouped-query attention."""

    def __init__(self, cfg: MPTConfig):
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        kv_dim = self.kv_heads * self.head_dim
        bias = not cfg.no_bias
        # Output rows: [queries (d_model) | keys (kv_dim) | values (kv_dim)], as llm-foundry fuses them.
        self.Wqkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * kv_dim, bias=bias)
        if cfg.qk_ln:
            self.q_ln = LayerNorm(cfg.d_model, cfg.layer_norm_eps, bias, cfg.low_precision_layernorm)
            self.k_ln = LayerNorm(kv_dim, cfg.layer_norm_eps, bias, cfg.low_precision_layernorm)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=bias)

    def forward(self, x, inputs: AttentionInputs, past: tuple[torch.Tensor, torch.Tensor] | None):
        batch, length, _ = x.shape
        qkv = self.Wqkv(x)
        if self.cfg.clip_qkv is not None:
            qkv = qkv.clamp(min=-self.cfg.clip_qkv, max=self.cfg.clip_qkv)
        kv_dim = self.kv_heads * self.head_dim
        q, k, v = qkv.split([self.cfg.d_model, kv_dim, kv_dim], dim=-1)
        if self.cfg.qk_ln:  # over the whole query / key vector, before the head split (as llm-foundry)
            q, k = self.q_ln(q).to(qkv.dtype), self.k_ln(k).to(qkv.dtype)
        q = q.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = k.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, KVH, T, hd]
        v = v.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        if inputs.rope is not None:
            cos, sin = inputs.rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (k, v)

        repeats = self.n_heads // self.kv_heads
        if self.cfg.attn_impl == "flex":
            from torch.nn.attention.flex_attention import flex_attention

            y = flex_attention(q, k, v, score_mod=inputs.flex_score_mod, block_mask=inputs.flex_block_mask,
                               enable_gqa=repeats > 1)
        else:
            # Repeating kv heads (rather than enable_gqa) keeps every SDPA kernel, incl. the biased ones, usable.
            if repeats > 1:
                k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=inputs.sdpa_bias, is_causal=inputs.sdpa_is_causal)
        y = y.transpose(1, 2).reshape(batch, length, self.cfg.d_model)
        return self.out_proj(y), present


class MLP(nn.Module):
    def __init__(self, cfg: MPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ffn, bias=not cfg.no_bias)
        self.down_proj = nn.Linear(cfg.d_ffn, cfg.d_model, bias=not cfg.no_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="none"))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm_1(x)), then x + ffn(norm_2(x))."""

    def __init__(self, cfg: MPTConfig):
        super().__init__()
        bias = not cfg.no_bias
        self.norm_1 = LayerNorm(cfg.d_model, cfg.layer_norm_eps, bias, cfg.low_precision_layernorm)
        self.attn = Attention(cfg)
        self.norm_2 = LayerNorm(cfg.d_model, cfg.layer_norm_eps, bias, cfg.low_precision_layernorm)
        self.ffn = MLP(cfg)

    def forward(self, x, inputs: AttentionInputs, past=None):
        attn_out, present = self.attn(self.norm_1(x), inputs, past)
        x = x + attn_out
        x = x + self.ffn(self.norm_2(x))
        return x, present


# ---------------------------------------------------------------------------------------------------------------
# The model


KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), each [B, n_kv_heads, S, head_dim]


class MPT(nn.Module):
    """MPT language model: token ids in, next-token logits out."""

    def __init__(self, cfg: MPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        if cfg.position == "learned":
            self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = LayerNorm(cfg.d_model, cfg.layer_norm_eps, not cfg.no_bias, cfg.low_precision_layernorm)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """MPT's init: every Linear weight kaiming_normal_(fan_in, relu) (or normal(0, init_std)), biases zero,
        the residual output projections (attn.out_proj, ffn.down_proj) divided by sqrt(2 * n_layers),
        embeddings like the Linears unless emb_init_std is set, LayerNorms one and zero.

        llm-foundry initialises the fused Wqkv slice by slice; all slices share fan_in = d_model, so one
        kaiming call over the fused weight draws from the same distribution. Safe on FSDP2-sharded params.
        """
        cfg = self.cfg

        def init_(weight: torch.Tensor, std: float | None) -> None:
            if std is None:
                nn.init.kaiming_normal_(weight, a=0.0, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.normal_(weight, mean=0.0, std=std)

        for module in self.modules():
            if isinstance(module, nn.Linear):
                init_(module.weight, cfg.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                init_(module.weight, cfg.emb_init_std if cfg.emb_init_std is not None else cfg.init_std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if cfg.init_div_is_residual:
            for block in self.blocks:
                block.attn.out_proj.weight.div_(math.sqrt(2 * cfg.n_layers))
                block.ffn.down_proj.weight.div_(math.sqrt(2 * cfg.n_layers))

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Counted from the built parameters (works on the meta device); see MPTConfig.num_params."""
        skip = {"wte.weight", "wpe.weight"} if exclude_embeddings else set()
        return sum(p.numel() for name, p in self.named_parameters() if name not in skip)

    def forward(
        self,
        input_ids: torch.Tensor,
        sequence_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, KVCache]:
        """Logits [B, T, padded_vocab_size] (and the extended cache when use_cache).

        sequence_ids [B, T] (ints, one per packed document, contiguous runs) restricts attention to the
        same document and restarts learned / RoPE positions at each document start. past_key_values is the
        cache a previous call returned; input_ids then holds only the new tokens.

        key_padding_mask [B, past + T] (bool, True at pad tokens, of the cache and of the new tokens) is for
        padded batches (generation pads prompts on the left): no query sees a pad key (a pad query sees only
        itself, so no row is all masked), and positions (learned, RoPE and ALiBi distances alike) count only
        the row's real tokens, so each real token's logits are what its row would give without the pads.
        """
        cfg = self.cfg
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        batch, length = input_ids.shape
        if sequence_ids is not None:
            if sequence_ids.shape != input_ids.shape:
                raise ValueError(
                    f"sequence_ids shape {tuple(sequence_ids.shape)} != input_ids shape {tuple(input_ids.shape)}"
                )
            if past_key_values is not None:
                raise ValueError("sequence_ids cannot be combined with past_key_values (decode one document per row)")
        if past_key_values is not None and len(past_key_values) != cfg.n_layers:
            raise ValueError(f"past_key_values has {len(past_key_values)} layers, the model has {cfg.n_layers}")
        past = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if key_padding_mask is not None:
            if sequence_ids is not None:
                raise ValueError("key_padding_mask cannot be combined with sequence_ids (pads are not a document)")
            if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (batch, past + length):
                raise ValueError(f"key_padding_mask must be bool [batch, past + seq] = [{batch}, {past + length}], "
                                 f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        if cfg.position == "learned" and past + length > cfg.max_seq_len:
            raise ValueError(
                f"{past + length} positions exceed max_seq_len={cfg.max_seq_len} of the learned position embedding"
            )

        x = self.wte(input_ids)
        key_positions = None if key_padding_mask is None else padded_position_ids(key_padding_mask)  # [B, past + T]
        positions = None
        if cfg.position in ("learned", "rope"):
            if key_positions is None:
                positions = position_ids(length, past, sequence_ids, input_ids.device)
            else:
                positions = key_positions[:, past:]
        if cfg.position == "learned":
            x = x + self.wpe(positions)
        inputs = self._attention_inputs(length, past, sequence_ids, positions, x, key_padding_mask, key_positions)

        presents: KVCache = []
        for index, block in enumerate(self.blocks):
            x, present = block(x, inputs, None if past_key_values is None else past_key_values[index])
            if use_cache:
                presents.append(present)
        x = self.norm_f(x)
        logits = F.linear(x, self.wte.weight) if cfg.tie_embeddings else self.lm_head(x)
        if cfg.logit_scale is not None:
            logits = logits * cfg.logit_scale
        return (logits, presents) if use_cache else logits

    def _attention_inputs(self, length, past, sequence_ids, positions, x, key_padding_mask=None,
                          key_positions=None) -> AttentionInputs:
        """Build the per-forward attention context (rope tables, SDPA bias or Flex block mask) once.

        With key_padding_mask [B, S], key_positions [B, S] are padded_position_ids of it (S = past + T).
        """
        cfg, device = self.cfg, x.device
        rope = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta) if cfg.position == "rope" else None
        alibi = cfg.position == "alibi"
        slopes = alibi_slopes(cfg.n_heads, cfg.alibi_bias_max, device) if alibi else None
        per_row = sequence_ids is not None or key_padding_mask is not None  # the mask differs between rows

        if cfg.attn_impl == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            def mask_mod(b, h, q_idx, kv_idx):
                causal = kv_idx <= q_idx + past
                if key_padding_mask is not None:  # a pad key is seen only by itself
                    return causal & (~key_padding_mask[b, kv_idx] | (kv_idx == q_idx + past))
                if sequence_ids is None:
                    return causal
                return causal & (sequence_ids[b, q_idx] == sequence_ids[b, kv_idx])

            def alibi_mod(score, b, h, q_idx, kv_idx):
                return score + slopes[h] * (kv_idx - q_idx - past)

            def padded_alibi_mod(score, b, h, q_idx, kv_idx):
                return score + slopes[h] * (key_positions[b, kv_idx] - key_positions[b, q_idx + past])

            block_mask = create_block_mask(mask_mod, x.shape[0] if per_row else None, None,
                                           length, past + length, device=device)
            score_mod = (alibi_mod if key_padding_mask is None else padded_alibi_mod) if alibi else None
            return AttentionInputs(rope, None, False, block_mask, score_mod)

        if not alibi and not per_row and (past == 0 or length == 1):
            # Plain causal attention (a single new token may see the whole cache): no bias, flash kernels.
            return AttentionInputs(rope, None, past == 0 and length > 1, None, None)
        # relative[i, j] = key position - query position; <= 0 where query i may see key j.
        query_pos = torch.arange(past, past + length, device=device)
        relative = torch.arange(past + length, device=device).unsqueeze(0) - query_pos.unsqueeze(1)  # [T, S]
        allowed = (relative <= 0).view(1, 1, length, past + length)
        if sequence_ids is not None:
            allowed = allowed & (sequence_ids.unsqueeze(2) == sequence_ids.unsqueeze(1)).unsqueeze(1)
        if key_padding_mask is not None:
            # A pad key is seen only by itself; ALiBi distances count real tokens only.
            allowed = allowed & (~key_padding_mask.view(-1, 1, 1, past + length) | (relative == 0))  # [B, 1, T, S]
            relative = (key_positions.unsqueeze(1) - key_positions[:, past:].unsqueeze(2)).unsqueeze(1)  # [B, 1, T, S]
        # The bias is made at its final size in the compute dtype and filled one head at a time, so no float32
        # tensor of [H, T, S] exists even briefly (sdpa_bias_bytes counts what does).
        shape = (allowed.shape[0], cfg.n_heads if alibi else 1, length, past + length)
        bias = torch.zeros(shape, dtype=self._compute_dtype(x), device=device)
        if alibi:
            relative = relative.view(-1, length, past + length)  # [1 or B, T, S]
            for head in range(cfg.n_heads):
                bias[:, head] = slopes[head] * relative
        return AttentionInputs(rope, bias.masked_fill_(~allowed, float("-inf")), False, None, None)

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype queries will have: the autocast dtype when autocast is on, else the activations'."""
        if torch.is_autocast_enabled(x.device.type):
            return torch.get_autocast_dtype(x.device.type)
        return x.dtype

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean cross-entropy in float32 over labels != ignore_index.

        labels[b, t] is the token that should follow input_ids[b, t]: shift before calling.
        """
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=ignore_index)

    @staticmethod
    def token_losses(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Per-token cross-entropy [B, T] in float32, 0 where labels == ignore_index (the sample ledger
        splits it by document); its sum over the non-ignored count is ``loss``."""
        losses = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=ignore_index,
                                 reduction="none")
        return losses.view_as(labels)
