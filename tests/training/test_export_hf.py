"""training.weights.export_hf / import_hf against transformers 5.15.1: same logits, same greedy
generations, a clear refusal of what MptForCausalLM cannot express, and the way back."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, MptConfig, MptForCausalLM

from training.eval.synthetic import train_byte_bpe
from training.generate import GenerationConfig, generate_ids
from training.model import MPT, MPTConfig
from training.weights.export_hf import export_hf, main
from training.weights.import_hf import import_hf
from training.weights.inference import load_model
from training.weights.layout import save_consolidated


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    tokenizer = train_byte_bpe(["def add(a, b):\n    return a + b\n", "the cat sat on the mat.\n"] * 30, 300)
    torch.manual_seed(0)
    model = MPT(MPTConfig.preset("tiny", vocab_size=tokenizer.vocab_size, clip_qkv=4.0)).eval()
    save_consolidated(model, model.cfg, root / "ckpt", tokenizer)
    export_hf(root / "ckpt", root / "hf")
    return root, model, tokenizer


def test_transformers_loads_the_same_model(exported):
    root, model, tokenizer = exported
    hf = AutoModelForCausalLM.from_pretrained(root / "hf").eval()
    assert isinstance(hf, MptForCausalLM)
    hf_tokenizer = AutoTokenizer.from_pretrained(root / "hf")
    text = "def add(a, b):\n    return a"
    assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text)
    assert hf_tokenizer.eos_token_id == tokenizer.eos_id == 0
    ids = torch.randint(0, model.cfg.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=1e-4)
    # Greedy generations: transformers reads generation_config.json, which keeps it off the padding rows.
    for prompt in ("def add", "the cat", "x"):
        ids = tokenizer.encode(prompt)
        ours = generate_ids(model, [ids], GenerationConfig(max_new_tokens=16, stop_at_eos=False))[0][0]
        theirs = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=16, eos_token_id=None)[0, len(ids):].tolist()
        assert ours == theirs, prompt


def test_streamed_weights_equal_the_checkpoint(exported):
    root, model, _ = exported
    tensors = load_file(str(root / "hf" / "model.safetensors"))
    assert set(tensors) == {"transformer." + name for name in model.state_dict()}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensors["transformer." + name], tensor)
    assert json.loads((root / "hf" / "config.json").read_text())["dtype"] == "float32"


def test_refuses_what_mpt_for_causal_lm_cannot_express(tmp_path, capsys):
    model = MPT(MPTConfig.preset("tiny", position="rope", n_kv_heads=2))
    save_consolidated(model, model.cfg, tmp_path / "ckpt")
    assert main([str(tmp_path / "ckpt"), str(tmp_path / "hf")]) == 2
    message = capsys.readouterr().err
    assert "cannot be exported" in message and "position='rope'" in message and "n_kv_heads=2" in message
    assert not (tmp_path / "hf").exists()


def test_import_released_style_folder(tmp_path):
    torch.manual_seed(1)
    hf_config = MptConfig(d_model=64, n_heads=4, n_layers=2, max_seq_len=64, vocab_size=256,
                          attn_config={"alibi": True, "clip_qkv": 2.0})
    hf = MptForCausalLM(hf_config).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_hf(tmp_path / "hf", tmp_path / "ours")
    model, config, tokenizer = load_model(tmp_path / "ours")
    assert config.clip_qkv == 2.0 and config.vocab_size == 256 and tokenizer is None
    ids = torch.randint(0, 256, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
