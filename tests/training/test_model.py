"""training.model: every option against a plain reference written out below, and the two attention backends,
document masking and the KV cache against each other. (Logits against transformers' MptForCausalLM live in
test_model_hf.py.)"""
from __future__ import annotations

import math

import pytest
import torch

from training.hardware import get_gpu
from training.model import MPT, MPTConfig, check_sdpa_fits, sdpa_bias_bytes

# Eager FlexAttention on CPU warns that it is unfused; that is what these tests want.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def make_model(seed: int = 0, **overrides) -> MPT:
    """A tiny float32 model whose LayerNorm weights (and biases) are random too, so no layer can hide."""
    torch.manual_seed(seed)
    model = MPT(MPTConfig.preset("tiny", **overrides)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "_ln" in name:
                param.add_(0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
    return model


# ---------------------------------------------------------------------------------------------------------------
# A reference MPT: one sequence, float64, explicit loops over positions and heads.


def ref_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps) * weight
    return y if bias is None else y + bias


def ref_alibi_slopes(n_heads, bias_max):
    padded = 1
    while padded < n_heads:
        padded *= 2
    slopes = [2 ** (-bias_max * (i + 1) / padded) for i in range(padded)]
    return slopes if padded == n_heads else (slopes[1::2] + slopes[0::2])[:n_heads]


def ref_rope(vec, position, theta):
    """Rotate the pairs (i, i + half) of one head vector by position * theta^(-2i / head_dim)."""
    half = vec.shape[0] // 2
    out = vec.clone()
    for i in range(half):
        angle = position * theta ** (-2 * i / vec.shape[0])
        a, b = vec[i], vec[i + half]
        out[i] = a * math.cos(angle) - b * math.sin(angle)
        out[i + half] = b * math.cos(angle) + a * math.sin(angle)
    return out


def reference_logits(model: MPT, ids: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    p = {name: t.detach().double() for name, t in model.state_dict().items()}
    H, G, hd, d = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.d_model
    T = ids.shape[0]
    x = p["wte.weight"][ids]
    if cfg.position == "learned":
        x = x + p["wpe.weight"][:T]
    slopes = ref_alibi_slopes(H, cfg.alibi_bias_max)
    for layer in range(cfg.n_layers):
        w = lambda name: p[f"blocks.{layer}.{name}"]  # noqa: E731
        b = lambda name: p.get(f"blocks.{layer}.{name}")  # noqa: E731
        h = ref_layer_norm(x, w("norm_1.weight"), b("norm_1.bias"), cfg.layer_norm_eps)
        qkv = h @ w("attn.Wqkv.weight").T
        if b("attn.Wqkv.bias") is not None:
            qkv = qkv + b("attn.Wqkv.bias")
        if cfg.clip_qkv is not None:
            qkv = qkv.clamp(-cfg.clip_qkv, cfg.clip_qkv)
        q, k, v = qkv[:, :d], qkv[:, d:d + G * hd], qkv[:, d + G * hd:]
        if cfg.qk_ln:
            q = ref_layer_norm(q, w("attn.q_ln.weight"), b("attn.q_ln.bias"), cfg.layer_norm_eps)
            k = ref_layer_norm(k, w("attn.k_ln.weight"), b("attn.k_ln.bias"), cfg.layer_norm_eps)
        q, k, v = q.view(T, H, hd).clone(), k.view(T, G, hd).clone(), v.view(T, G, hd)
        if cfg.position == "rope":
            for t in range(T):
                for head in range(H):
                    q[t, head] = ref_rope(q[t, head], t, cfg.rope_theta)
                for group in range(G):
                    k[t, group] = ref_rope(k[t, group], t, cfg.rope_theta)
        out = torch.zeros(T, H, hd, dtype=torch.float64)
        for t in range(T):
            for head in range(H):
                group = head // (H // G)
                scores = torch.stack([q[t, head] @ k[s, group] / math.sqrt(hd) for s in range(t + 1)])
                if cfg.position == "alibi":
                    scores = scores + torch.tensor([slopes[head] * (s - t) for s in range(t + 1)], dtype=torch.float64)
                weights = torch.softmax(scores, dim=0)
                out[t, head] = sum(weights[s] * v[s, group] for s in range(t + 1))
        attn = out.reshape(T, d) @ w("attn.out_proj.weight").T
        if b("attn.out_proj.bias") is not None:
            attn = attn + b("attn.out_proj.bias")
        x = x + attn
        h = ref_layer_norm(x, w("norm_2.weight"), b("norm_2.bias"), cfg.layer_norm_eps)
        up = h @ w("ffn.up_proj.weight").T + (0 if b("ffn.up_proj.bias") is None else b("ffn.up_proj.bias"))
        up = 0.5 * up * (1 + torch.erf(up / math.sqrt(2)))
        down = up @ w("ffn.down_proj.weight").T + (0 if b("ffn.down_proj.bias") is None else b("ffn.down_proj.bias"))
        x = x + down
    x = ref_layer_norm(x, p["norm_f.weight"], p.get("norm_f.bias"), cfg.layer_norm_eps)
    logits = x @ (p["wte.weight"] if cfg.tie_embeddings else p["lm_head.weight"]).T
    return logits * cfg.logit_scale if cfg.logit_scale is not None else logits


OPTIONS = {
    "alibi": {},
    "alibi_6_heads": dict(d_model=48, n_heads=6),  # non-power-of-two head count: slope ordering
    "rope": dict(position="rope"),
    "learned": dict(position="learned"),
    "grouped_query": dict(n_kv_heads=2),
    "multi_query_rope": dict(n_kv_heads=1, position="rope"),
    "qk_ln": dict(qk_ln=True),
    "logit_scale": dict(logit_scale=0.37),
    "clip_qkv": dict(clip_qkv=0.5),
    "biases_untied": dict(no_bias=False, tie_embeddings=False, qk_ln=True),
    "alibi_bias_max": dict(alibi_bias_max=4.0),
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_matches_reference(option):
    model = make_model(**OPTIONS[option])
    ids = torch.randint(0, model.cfg.vocab_size, (1, 10))
    with torch.no_grad():
        ours = model(ids)[0].double()
    torch.testing.assert_close(ours, reference_logits(model, ids[0]), atol=1e-4, rtol=1e-4)


def test_clip_qkv_is_active():
    """clip_qkv=0.5 must actually clip at the tiny init, or test_matches_reference[clip_qkv] proves nothing."""
    ids = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        assert not torch.allclose(make_model(clip_qkv=0.5)(ids), make_model()(ids), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Backends, documents and the cache


def packed_batch():
    """Two rows: three documents packed into one, and one document filling a row."""
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (2, 24))
    sequence_ids = torch.tensor([[0] * 5 + [1] * 11 + [2] * 8, [7] * 24])
    return ids, sequence_ids


@pytest.mark.parametrize("overrides", [{}, dict(n_kv_heads=2, qk_ln=True), dict(position="rope"),
                                       dict(position="learned"), dict(d_model=48, n_heads=6)],
                         ids=["alibi", "alibi_gqa", "rope", "learned", "alibi_6_heads"])
@pytest.mark.parametrize("with_documents", [False, True])
def test_flex_matches_sdpa(overrides, with_documents):
    ids, sequence_ids = packed_batch()
    sdpa = make_model(**overrides)
    flex = MPT(MPTConfig.preset("tiny", **overrides, attn_impl="flex")).eval()
    flex.load_state_dict(sdpa.state_dict())
    kwargs = dict(sequence_ids=sequence_ids) if with_documents else {}
    with torch.no_grad():
        torch.testing.assert_close(flex(ids, **kwargs), sdpa(ids, **kwargs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_impl", ["sdpa", "flex"])
@pytest.mark.parametrize("position", ["alibi", "rope", "learned"])
def test_document_mask_equals_running_each_document_alone(position, attn_impl):
    model = make_model(position=position, attn_impl=attn_impl)
    ids, sequence_ids = packed_batch()
    with torch.no_grad():
        packed = model(ids, sequence_ids=sequence_ids)
        for start, end in [(0, 5), (5, 16), (16, 24)]:
            alone = model(ids[:1, start:end])
            torch.testing.assert_close(packed[:1, start:end], alone, atol=1e-5, rtol=1e-5)
        # A row holding one document is unaffected by the mask.
        torch.testing.assert_close(packed[1:], model(ids[1:]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_impl", ["sdpa", "flex"])
@pytest.mark.parametrize("overrides", [{}, dict(position="rope", n_kv_heads=2), dict(position="learned")],
                         ids=["alibi", "rope_gqa", "learned"])
def test_kv_cache_matches_full_forward(overrides, attn_impl):
    model = make_model(**overrides, attn_impl=attn_impl)
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        full = model(ids)
        # A prompt, a chunk of several tokens on top of the cache, then one token at a time.
        logits, cache = model(ids[:, :6], use_cache=True)
        steps = [logits]
        logits, cache = model(ids[:, 6:10], past_key_values=cache, use_cache=True)
        steps.append(logits)
        for t in range(10, 16):
            logits, cache = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(logits)
    assert len(cache) == model.cfg.n_layers
    assert cache[0][0].shape == (2, model.cfg.kv_heads, 16, model.cfg.head_dim)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_impl", ["sdpa", "flex"])
@pytest.mark.parametrize("overrides", [{}, dict(position="rope", n_kv_heads=2), dict(position="learned")],
                         ids=["alibi", "rope_gqa", "learned"])
def test_padded_rows_with_cache_equal_each_row_alone(overrides, attn_impl):
    model = make_model(**overrides, attn_impl=attn_impl)
    torch.manual_seed(2)
    ids = torch.randint(0, 256, (4, 12))
    pads = torch.zeros(4, 12, dtype=torch.bool)  # True at padding
    pads[0, :3] = True  # left-padded prompts, as generation batches them
    pads[1, :7] = True  # (its first chunk below is all padding)
    pads[3, [2, 3, 7]] = True  # padding between real tokens: positions and ALiBi distances skip it too
    with torch.no_grad():
        # A chunk, a chunk on top of the cache, then one token at a time.
        logits, cache = model(ids[:, :6], use_cache=True, key_padding_mask=pads[:, :6])
        steps = [logits]
        logits, cache = model(ids[:, 6:10], past_key_values=cache, use_cache=True, key_padding_mask=pads[:, :10])
        steps.append(logits)
        for t in range(10, 12):
            logits, cache = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True,
                                  key_padding_mask=pads[:, :t + 1])
            steps.append(logits)
        padded = torch.cat(steps, dim=1)
        for row in range(4):
            real = ~pads[row]
            alone = model(ids[row:row + 1, real])[0]
            torch.testing.assert_close(padded[row, real], alone, atol=1e-5, rtol=1e-5)


def test_backward_on_cpu_with_documents():
    model = make_model(n_kv_heads=2).train()
    ids, sequence_ids = packed_batch()
    logits = model(ids, sequence_ids=sequence_ids)
    loss = model.loss(logits[:, :-1], ids[:, 1:])
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.wte.weight.grad.abs().sum() > 0


def test_loss_is_float32_mean_over_kept_labels():
    logits = torch.randn(2, 5, 256, dtype=torch.bfloat16)
    labels = torch.randint(0, 256, (2, 5))
    labels[0, :3] = -100
    loss = MPT.loss(logits, labels)
    kept = labels != -100
    expected = -torch.log_softmax(logits.float(), dim=-1)[kept].gather(1, labels[kept].unsqueeze(1)).mean()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_low_precision_layernorm_runs_in_autocast_dtype():
    ids = torch.randint(0, 256, (1, 8))
    for low_precision, expected in [(True, torch.bfloat16), (False, torch.float32)]:
        model = make_model(low_precision_layernorm=low_precision)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            normed = model.norm_f(model.wte(ids))
            logits = model(ids)
        assert normed.dtype == expected
        assert torch.isfinite(logits.float()).all()


# ---------------------------------------------------------------------------------------------------------------
# Config, init and counts


def test_init_matches_mpt():
    cfg = MPTConfig.preset("tiny", d_model=256, n_heads=4, n_layers=8)
    torch.manual_seed(0)
    model = MPT(cfg)
    kaiming = math.sqrt(2 / 256)
    block = model.blocks[3]
    assert block.attn.Wqkv.weight.std().item() == pytest.approx(kaiming, rel=0.03)
    assert block.ffn.up_proj.weight.std().item() == pytest.approx(kaiming, rel=0.03)
    assert model.wte.weight.std().item() == pytest.approx(kaiming, rel=0.03)
    residual = kaiming / math.sqrt(2 * 8)
    assert block.attn.out_proj.weight.std().item() == pytest.approx(residual, rel=0.03)
    assert block.ffn.down_proj.weight.std().item() == pytest.approx(math.sqrt(2 / 1024) / 4, rel=0.03)
    assert torch.equal(block.norm_1.weight, torch.ones(256)) and block.norm_1.bias is None
    fixed = MPT(MPTConfig.preset("tiny", init_std=0.02, emb_init_std=0.1, init_div_is_residual=False))
    assert fixed.blocks[0].attn.out_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert fixed.wte.weight.std().item() == pytest.approx(0.1, rel=0.1)


@pytest.mark.parametrize("overrides", [{}, dict(n_kv_heads=2, qk_ln=True), dict(no_bias=False, qk_ln=True),
                                       dict(tie_embeddings=False, position="learned")])
def test_num_params_from_shapes_matches_the_model(overrides):
    cfg = MPTConfig.preset("tiny", **overrides)
    model = MPT(cfg)
    for exclude in (False, True):
        assert cfg.num_params(exclude_embeddings=exclude) == model.num_params(exclude_embeddings=exclude)


def test_published_presets():
    shapes = {name: (c.d_model, c.n_layers, c.n_heads) for name in ("125m", "350m", "760m", "1b", "3b", "7b", "30b")
              for c in [MPTConfig.preset(name)]}
    assert shapes == {"125m": (768, 12, 12), "350m": (1024, 24, 16), "760m": (1536, 24, 12),
                      "1b": (2048, 24, 16), "3b": (2560, 32, 20), "7b": (4096, 32, 32), "30b": (7168, 48, 64)}
    seven = MPTConfig.preset("7b")
    assert seven.padded_vocab_size == 50432 and seven.position == "alibi" and seven.max_seq_len == 2048
    assert MPTConfig.preset("125m").padded_vocab_size == 50304  # GPT-NeoX-20B's 50277 tokens, padded to 128
    with torch.device("meta"):
        n = MPT(seven).num_params()
    assert n == seven.num_params()
    assert 6.6e9 < n < 6.75e9  # published as 6.7B
    assert seven.flops_per_token(2048) == 6 * n + 12 * 32 * 4096 * 2048
    assert MPTConfig.preset("tiny", n_layers=5).n_layers == 5


@pytest.mark.parametrize("overrides, message", [
    (dict(d_model=100, n_heads=3), "not divisible by n_heads"),
    (dict(n_kv_heads=3), "n_kv_heads=3 must divide n_heads=4"),
    (dict(position="sinusoid"), "position='sinusoid'"),
    (dict(attn_impl="xformers"), "attn_impl='xformers'"),
    (dict(n_layers=0), "n_layers must be a positive int"),
    (dict(clip_qkv=-1.0), "clip_qkv must be positive"),
    (dict(hidden_size=64), "unknown MPTConfig keys \\['hidden_size'\\]"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        MPTConfig.preset("tiny", **overrides)


def test_input_errors():
    with pytest.raises(ValueError, match="unknown MPT preset 'huge'"):
        MPTConfig.preset("huge")
    with pytest.raises(ValueError, match="tokenizer has 300 tokens"):
        MPTConfig.preset("tiny").check_tokenizer(300)
    model = make_model(position="learned")
    ids = torch.zeros(1, 129, dtype=torch.long)
    with pytest.raises(ValueError, match="129 positions exceed max_seq_len=128"):
        model(ids)
    with pytest.raises(ValueError, match="sequence_ids shape"):
        model(ids[:, :8], sequence_ids=torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"key_padding_mask must be bool \[batch, past \+ seq\] = \[1, 8\]"):
        model(ids[:, :8], key_padding_mask=torch.zeros(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask cannot be combined with sequence_ids"):
        model(ids[:, :8], sequence_ids=torch.zeros(1, 8, dtype=torch.long),
              key_padding_mask=torch.zeros(1, 8, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------------------------
# The SDPA path's attention bias


@pytest.mark.parametrize("overrides", [{}, dict(attn_uses_sequence_id=True), dict(position="rope"),
                                       dict(position="rope", attn_uses_sequence_id=True)],
                         ids=["alibi", "alibi_documents", "rope", "rope_documents"])
def test_sdpa_bias_bytes_counts_the_bias_the_model_builds(overrides, monkeypatch):
    model = make_model(**overrides)
    batch, length = 3, 40
    ids, sequence_ids = torch.randint(0, 256, (batch, length)), torch.arange(length).div(7, rounding_mode="floor")
    masks = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(*args, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return sdpa(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    with torch.no_grad():
        model(ids, sequence_ids=sequence_ids.expand(batch, -1) if model.cfg.attn_uses_sequence_id else None)
    counted = sdpa_bias_bytes(model.cfg, batch, length, torch.float32)
    if masks[0] is None:  # plain causal attention builds no bias
        assert counted == 0
        return
    assert all(mask is masks[0] for mask in masks)  # one bias for every layer
    held = masks[0].numel() * masks[0].element_size()
    # The bias itself, plus temporaries that are not larger than a few bool/float copies of [B, T, T].
    assert held < counted <= held + 15 * batch * length * length
    assert sdpa_bias_bytes(model.cfg, batch, 2 * length, torch.float32) == 4 * counted


def test_sdpa_past_what_the_device_holds_is_refused_with_advice():
    h100 = get_gpu("h100").memory_bytes
    seven_b = MPTConfig.preset("7b", max_seq_len=65536)
    assert sdpa_bias_bytes(seven_b, 1, 65536) > 256e9  # one bf16 [1, 32, 64k, 64k] ALiBi bias
    with pytest.raises(ValueError, match=r"(?s)attn_impl='sdpa' at seq_len=65536.*fits up to about \d+ tokens.*"
                                         r"Use FlexAttention \(attn_impl='flex'"):
        check_sdpa_fits(seven_b, 1, 65536, h100)
    check_sdpa_fits(seven_b, 1, 8192, h100)
    check_sdpa_fits(MPTConfig.preset("7b", max_seq_len=65536, attn_impl="flex"), 1, 65536, h100)
    check_sdpa_fits(MPTConfig.preset("7b", max_seq_len=65536, position="rope"), 1, 65536, h100)  # no bias at all
    documents = MPTConfig.preset("7b", attn_uses_sequence_id=True)  # one bias per row of the micro-batch
    check_sdpa_fits(seven_b, 8, 16384, h100)
    with pytest.raises(ValueError, match=r"at seq_len=16384 .*\(micro batch 8"):
        check_sdpa_fits(documents, 8, 16384, h100)
