"""training.model against transformers' MptForCausalLM (pinned transformers==5.15.1), and the conversion between
them (training.weights.hf_convert)."""
from __future__ import annotations

import pytest
import torch
from transformers import MptConfig, MptForCausalLM

from training.model import MPT, MPTConfig
from training.weights.hf_convert import check_hf_expressible, from_hf_mpt, hf_inexpressible, to_hf_mpt

# Every shape MptForCausalLM can express: ALiBi, multi-head, no bias, GELU MLP (x4); clip_qkv and an untied head.
EXPRESSIBLE = {
    "tiny_4_heads": {},
    "6_heads": dict(d_model=48, n_heads=6, n_layers=3),  # 6 heads -> the 8-slope odd/even interleave
    "12_heads_like_125m": dict(d_model=96, n_heads=12, n_layers=2, vocab_size=300),
    "clip_qkv": dict(clip_qkv=0.5),
    "untied_head": dict(tie_embeddings=False, layer_norm_eps=1e-6),
}


def exported(model: MPT) -> MptForCausalLM:
    hf_config, hf_state_dict = to_hf_mpt(model, model.cfg)
    hf = MptForCausalLM(MptConfig(**hf_config)).eval()
    missing, unexpected = hf.load_state_dict(hf_state_dict, strict=False)
    assert unexpected == []
    assert missing == ([] if not model.cfg.tie_embeddings else ["lm_head.weight"])  # tied: lm_head is wte
    return hf


@pytest.mark.parametrize("shape", list(EXPRESSIBLE))
def test_logits_equal_mpt_for_causal_lm(shape):
    torch.manual_seed(0)
    model = MPT(MPTConfig.preset("tiny", **EXPRESSIBLE[shape])).eval()
    with torch.no_grad():  # random LayerNorm weights too, so a misplaced norm cannot hide
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn_like(param))
    hf = exported(model)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_round_trip_through_hf_names():
    model = MPT(MPTConfig.preset("tiny", tie_embeddings=False, clip_qkv=2.0))
    hf_config, hf_state_dict = to_hf_mpt(model.state_dict(), model.cfg)
    assert "transformer.blocks.1.attn.Wqkv.weight" in hf_state_dict and "lm_head.weight" in hf_state_dict
    hf_state_dict = MptForCausalLM(MptConfig(**hf_config)).state_dict() | hf_state_dict  # as transformers saves it
    config, state_dict = from_hf_mpt(hf_config, hf_state_dict)
    expected = {**model.cfg.to_dict(), "pad_vocab_to": 1}
    assert config.to_dict() == expected
    for name, tensor in model.state_dict().items():
        assert torch.equal(state_dict[name], tensor), name


def test_inexpressible_options_are_all_listed():
    config = MPTConfig.preset("tiny", position="rope", n_kv_heads=2, qk_ln=True, logit_scale=0.5, no_bias=False,
                              expansion_ratio=3)
    assert len(hf_inexpressible(config)) == 6
    with pytest.raises(ValueError, match="cannot be exported") as raised:
        check_hf_expressible(config)
    for fragment in ("position='rope'", "n_kv_heads=2", "qk_ln=True", "logit_scale=0.5", "no_bias=False",
                     "expansion_ratio=3"):
        assert fragment in str(raised.value)
    with pytest.raises(ValueError, match="alibi_bias_max=4.0"):
        check_hf_expressible(MPTConfig.preset("tiny", alibi_bias_max=4.0))
    check_hf_expressible(MPTConfig.preset("7b"))


def test_from_llm_foundry_config_with_options():
    """Released llm-foundry configs may turn on what MptForCausalLM lacks; we load them."""
    source = MPT(MPTConfig.preset("tiny", position="rope", n_kv_heads=2, qk_ln=True, logit_scale=0.125))
    hf_state_dict = {"transformer." + name: t for name, t in source.state_dict().items()}
    foundry_config = {
        "d_model": 64, "n_heads": 4, "n_layers": 2, "expansion_ratio": 4, "max_seq_len": 128, "vocab_size": 256,
        "learned_pos_emb": True, "logit_scale": "inv_sqrt_d_model", "no_bias": True,
        "norm_type": "low_precision_layernorm", "ffn_config": {"ffn_type": "mptmlp"}, "init_config": {"name": "x"},
        "attn_config": {"attn_type": "grouped_query_attention", "kv_n_heads": 2, "alibi": False, "rope": True,
                        "rope_theta": 10000, "rope_impl": "dail", "rope_dail_config": {"type": "original"},
                        "qk_ln": True, "attn_impl": "flash", "attn_pdrop": 0.0},
    }
    config, state_dict = from_hf_mpt(foundry_config, hf_state_dict)
    assert (config.position, config.n_kv_heads, config.qk_ln, config.logit_scale) == ("rope", 2, True, 0.125)
    loaded = MPT(config)
    loaded.load_state_dict(state_dict)
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), source(ids))


def test_from_hf_refuses_what_it_cannot_run():
    base = {"d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 256}
    bad = {**base, "norm_type": "rmsnorm",
           "attn_config": {"prefix_lm": True, "softmax_scale": 0.5, "alibi": True}}
    with pytest.raises(ValueError) as raised:
        from_hf_mpt(bad, {})
    for fragment in ("norm_type='rmsnorm'", "prefix_lm=True", "softmax_scale=0.5"):
        assert fragment in str(raised.value)
    with pytest.raises(ValueError, match="lacks required keys \\['n_layers'\\]"):
        from_hf_mpt({"d_model": 64, "n_heads": 4, "vocab_size": 256}, {})
    good_state = {"transformer." + k: v for k, v in MPT(MPTConfig.preset("tiny")).state_dict().items()}
    del good_state["transformer.norm_f.weight"]
    with pytest.raises(ValueError, match="missing norm_f.weight"):
        from_hf_mpt(base, good_state)
