"""Convert MPT checkpoints between `training.model.MPT` and Hugging Face's `MptForCausalLM`.

Our layer names are llm-foundry's, so the state-dict mapping is a prefix: every model tensor lives under
`transformer.` on the Hugging Face side, and an untied output head is `lm_head.weight` on both sides.

`MptForCausalLM` (transformers 5.15, `models/mpt/modeling_mpt.py`) expresses less than its config suggests:
it always applies ALiBi with alibi_bias_max 8, builds every Linear and LayerNorm without bias, hard-codes the
MLP width to 4 * d_model, and reads but never applies qk_ln, logit_scale or a kv-head count.  It does apply
clip_qkv and supports an untied lm_head.  `check_hf_expressible` refuses everything else before export.

`from_hf_mpt` also reads the llm-foundry flavour of the config (released `mosaicml/mpt-*` checkpoints), whose
attn_config may turn on RoPE, grouped-query attention or QK LayerNorm.  Settings that only affect training
(dropouts, embedding_fraction, init_config, init_device, attn_impl, attn_uses_sequence_id) are not carried over.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import torch

from training.model import MPT, MPTConfig

HF_PREFIX = "transformer."
HF_ALIBI_BIAS_MAX = 8  # MptModel.forward calls build_mpt_alibi_tensor with its default


def hf_inexpressible(config: MPTConfig) -> list[str]:
    """Every option of `config` that MptForCausalLM cannot reproduce, as readable reasons (empty if none)."""
    reasons = []
    if config.position != "alibi":
        reasons.append(f"position={config.position!r}: MptForCausalLM always uses ALiBi and has no RoPE or wpe")
    elif config.alibi_bias_max != HF_ALIBI_BIAS_MAX:
        reasons.append(f"alibi_bias_max={config.alibi_bias_max}: MptForCausalLM hard-codes {HF_ALIBI_BIAS_MAX}")
    if config.kv_heads != config.n_heads:
        reasons.append(f"n_kv_heads={config.n_kv_heads}: MptForCausalLM has only multi-head attention")
    if config.qk_ln:
        reasons.append("qk_ln=True: MptForCausalLM has no q_ln / k_ln layers")
    if config.logit_scale is not None:
        reasons.append(f"logit_scale={config.logit_scale}: MptForCausalLM reads it but never applies it")
    if not config.no_bias:
        reasons.append("no_bias=False: MptForCausalLM builds every Linear and LayerNorm without bias")
    if config.expansion_ratio != 4:
        reasons.append(f"expansion_ratio={config.expansion_ratio}: MptForCausalLM hard-codes an MLP of 4 * d_model")
    return reasons


def check_hf_expressible(config: MPTConfig) -> None:
    """Raise ValueError listing every option MptForCausalLM cannot express."""
    reasons = hf_inexpressible(config)
    if reasons:
        raise ValueError("this MPT cannot be exported to transformers' MptForCausalLM:\n  - " + "\n  - ".join(reasons))


def expected_shapes(config: MPTConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes for `config`, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = MPT(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def shape_problems(shapes: dict[str, tuple[int, ...]], config: MPTConfig) -> list[str]:
    """Every missing, unexpected or mis-shaped tensor of ``shapes`` (name -> shape) against ``config``'s MPT."""
    expected = expected_shapes(config)
    problems = [f"missing {name}" for name in sorted(set(expected) - set(shapes))]
    problems += [f"unexpected {name}" for name in sorted(set(shapes) - set(expected))]
    problems += [f"{name} has shape {tuple(shapes[name])}, expected {shape}"
                 for name, shape in expected.items() if name in shapes and tuple(shapes[name]) != shape]
    return problems


def check_state_dict(state_dict: dict[str, torch.Tensor], config: MPTConfig) -> None:
    """Raise ValueError naming every missing, unexpected or mis-shaped tensor."""
    problems = shape_problems({name: tuple(tensor.shape) for name, tensor in state_dict.items()}, config)
    if problems:
        raise ValueError("state dict does not match the MPT config:\n  - " + "\n  - ".join(problems))


def to_hf_mpt(model_or_state_dict: MPT | dict[str, torch.Tensor], config: MPTConfig) -> tuple[dict, dict]:
    """Our model (or its full, unsharded state dict) -> (config.json dict, state dict) for MptForCausalLM.

    As in released MPT checkpoints, a tied lm_head is left out (transformers re-ties it on load).
    """
    check_hf_expressible(config)
    state_dict = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, MPT) else model_or_state_dict
    check_state_dict(state_dict, config)
    hf_state_dict = {
        (name if name == "lm_head.weight" else HF_PREFIX + name): tensor.detach() for name, tensor in state_dict.items()
    }
    hf_config = {
        "architectures": ["MptForCausalLM"],
        "model_type": "mpt",
        "d_model": config.d_model,
        "n_heads": config.n_heads,
        "n_layers": config.n_layers,
        "expansion_ratio": config.expansion_ratio,
        "max_seq_len": config.max_seq_len,
        "vocab_size": config.padded_vocab_size,
        "layer_norm_epsilon": config.layer_norm_eps,
        "learned_pos_emb": False,
        "no_bias": True,
        "logit_scale": None,
        "norm_type": "low_precision_layernorm" if config.low_precision_layernorm else "layernorm",
        "tie_word_embeddings": config.tie_embeddings,
        "attn_config": {
            "attn_type": "multihead_attention",
            "alibi": True,
            "alibi_bias_max": HF_ALIBI_BIAS_MAX,
            "clip_qkv": config.clip_qkv,
            "qk_ln": False,
            "softmax_scale": None,
            "prefix_lm": False,
            "attn_uses_sequence_id": False,  # a training-time choice (MPTConfig.attn_uses_sequence_id): off here
            "attn_pdrop": 0,  # transformers 5 types it as int
        },
        "resid_pdrop": 0.0,
        "emb_pdrop": 0.0,
        "embedding_fraction": 1.0,
    }
    return hf_config, hf_state_dict


def config_from_hf(hf: dict) -> MPTConfig:
    """Read a transformers- or llm-foundry-style MPT config.json, refusing what our MPT cannot run."""
    missing = [key for key in ("d_model", "n_heads", "n_layers", "vocab_size") if key not in hf]
    if missing:
        raise ValueError(f"MPT config.json lacks required keys {missing}")
    attn = dict(hf.get("attn_config") or {})
    problems = []

    def refuse(key: str, value, why: str) -> None:
        problems.append(f"{key}={value!r}: {why}")

    d_model, n_heads = hf["d_model"], hf["n_heads"]
    head_dim = d_model // n_heads
    # transformers' MptAttentionConfig defaults alibi to True (and MptForCausalLM always applies it).
    if attn.get("alibi", True):
        position = "alibi"
    elif attn.get("rope", False):
        position = "rope"
        rope_impl = attn.get("rope_impl", "dail")
        scaling = (attn.get("rope_dail_config") or {}).get("type", "original") if rope_impl == "dail" else \
            (attn.get("rope_hf_config") or {}).get("type", "no_scaling")
        if scaling not in ("original", "no_scaling"):
            refuse(f"attn_config.rope_{rope_impl}_config.type", scaling, "only unscaled RoPE is supported")
    elif hf.get("learned_pos_emb", True):
        position = "learned"
    else:
        position = "alibi"
        refuse("attn_config.alibi/rope and learned_pos_emb", False, "a model without positions is not supported")

    attn_type = attn.get("attn_type", "multihead_attention")
    n_kv_heads = {"multihead_attention": None, "multiquery_attention": 1}.get(attn_type)
    if attn_type == "grouped_query_attention":
        n_kv_heads = attn["kv_n_heads"]
    elif attn_type not in ("multihead_attention", "multiquery_attention"):
        refuse("attn_config.attn_type", attn_type, "unknown attention type")
    softmax_scale = attn.get("softmax_scale")
    if softmax_scale is not None and not math.isclose(softmax_scale, head_dim ** -0.5):
        refuse("attn_config.softmax_scale", softmax_scale, f"only 1/sqrt(head_dim) = {head_dim ** -0.5} is supported")
    for key, neutral in (("prefix_lm", False), ("qk_gn", False), ("sliding_window_size", -1),
                         ("attn_logit_softcapping", None), ("kv_dim", None)):
        if attn.get(key, neutral) not in (neutral, None):
            refuse(f"attn_config.{key}", attn[key], "not supported by training.model.MPT")

    logit_scale = hf.get("logit_scale")
    if logit_scale == "inv_sqrt_d_model":
        logit_scale = 1 / math.sqrt(d_model)
    norm_type = str(hf.get("norm_type", "low_precision_layernorm")).lower()
    if norm_type not in ("low_precision_layernorm", "layernorm"):
        refuse("norm_type", norm_type, "only LayerNorm is supported")
    ffn = hf.get("ffn_config") or {}
    if ffn.get("ffn_type", "mptmlp") != "mptmlp":
        refuse("ffn_config.ffn_type", ffn["ffn_type"], "only MPT's GELU MLP is supported")
    act = ffn.get("ffn_act_fn") or {"name": "gelu", "approximate": "none"}
    if act.get("name") != "gelu" or act.get("approximate", "none") != "none":
        refuse("ffn_config.ffn_act_fn", act, "only exact GELU is supported")
    expansion_ratio = hf.get("expansion_ratio", 4)
    if expansion_ratio != int(expansion_ratio):
        refuse("expansion_ratio", expansion_ratio, "only a whole-number ratio is supported")
    if problems:
        listed = "\n  - ".join(problems)
        raise ValueError(f"this MPT checkpoint cannot be loaded into training.model.MPT:\n  - {listed}")

    return MPTConfig(
        d_model=d_model,
        n_layers=hf["n_layers"],
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        expansion_ratio=int(expansion_ratio),
        max_seq_len=hf.get("max_seq_len", 2048),
        vocab_size=hf["vocab_size"],
        pad_vocab_to=1,  # the checkpoint's embedding already has the rows it has
        position=position,
        alibi_bias_max=attn.get("alibi_bias_max", 8),
        rope_theta=attn.get("rope_theta", 10000.0),
        no_bias=hf.get("no_bias", True),
        qk_ln=attn.get("qk_ln", False),
        clip_qkv=attn.get("clip_qkv"),
        logit_scale=logit_scale,
        tie_embeddings=hf.get("tie_word_embeddings", True),
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        low_precision_layernorm=norm_type == "low_precision_layernorm",
    )


def from_hf_mpt(hf_config: dict, hf_state_dict: dict[str, torch.Tensor]) -> tuple[MPTConfig, dict[str, torch.Tensor]]:
    """(MPT config.json dict, its state dict) -> (MPTConfig, state dict for training.model.MPT)."""
    config = config_from_hf(hf_config)
    state_dict = {}
    for name, tensor in hf_state_dict.items():
        if name == "lm_head.weight":
            if not config.tie_embeddings:  # a tied head is the embedding itself
                state_dict[name] = tensor
        elif name.startswith(HF_PREFIX):
            state_dict[name[len(HF_PREFIX):]] = tensor
        else:
            raise ValueError(f"unexpected tensor {name!r} in the MPT checkpoint (expected a 'transformer.' prefix)")
    check_state_dict(state_dict, config)
    return config, state_dict


def run_conversion(convert: Callable[[str, str], Path], source: str, out_dir: str) -> int:
    """The import's and the export's command line: ``wrote OUT_DIR`` and status 0, or one error line and 2."""
    try:
        out = convert(source, out_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
