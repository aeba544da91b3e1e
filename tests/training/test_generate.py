"""training.generate: KV-cache generation equals recomputing everything, batched equals unbatched,
and the sampling controls, stop sequences and CLI behave; consolidated checkpoints (training.weights) round-trip."""
from __future__ import annotations

import pytest
import torch

from training.eval.synthetic import train_byte_bpe
from training.generate import GenerationConfig, cut_at_stop, generate, generate_ids, main, next_tokens
from training.model import MPT, MPTConfig
from training.weights.inference import load_model
from training.weights.layout import save_consolidated

SHAPES = {
    "alibi": {},
    "rope_gqa_qk_ln": dict(position="rope", n_kv_heads=2, qk_ln=True),
    "learned_untied": dict(position="learned", tie_embeddings=False, clip_qkv=1.0),
}
PROMPT_LENGTHS = (5, 1, 9, 3)


def tiny(seed: int = 0, **options) -> MPT:
    torch.manual_seed(seed)
    return MPT(MPTConfig.preset("tiny", **options)).eval()


def prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (n,), generator=generator).tolist() for n in PROMPT_LENGTHS]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_cache_batched_and_unbatched_agree_token_for_token(shape):
    model = tiny(**SHAPES[shape])
    greedy = GenerationConfig(max_new_tokens=12, stop_at_eos=False)
    cached = generate_ids(model, prompts(), greedy)
    assert all(reason == "length" and len(tokens) == 12 for tokens, reason in cached)
    assert cached == generate_ids(model, prompts(), GenerationConfig(max_new_tokens=12, stop_at_eos=False,
                                                                     use_cache=False))
    assert cached == [generate_ids(model, [p], greedy)[0] for p in prompts()]
    sampling = dict(max_new_tokens=12, stop_at_eos=False, temperature=1.3, top_k=40, top_p=0.95, seed=7)
    sampled = generate_ids(model, prompts(), GenerationConfig(**sampling))
    assert sampled == generate_ids(model, prompts(), GenerationConfig(**sampling, use_cache=False))
    # Row i samples with seed + i, so a prompt alone with that seed draws the same tokens.
    alone = [generate_ids(model, [p], GenerationConfig(**{**sampling, "seed": 7 + i}))[0]
             for i, p in enumerate(prompts())]
    assert sampled == alone
    assert sampled != cached


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_model_generates_what_the_sdpa_model_does():
    sdpa = tiny()
    flex = MPT(MPTConfig.preset("tiny", attn_impl="flex")).eval()
    flex.load_state_dict(sdpa.state_dict())
    greedy = GenerationConfig(max_new_tokens=6, stop_at_eos=False)
    assert generate_ids(flex, prompts(), greedy) == generate_ids(sdpa, prompts(), greedy)


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(3, 50)
    config = GenerationConfig(temperature=5.0, top_k=1)
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    assert torch.equal(next_tokens(logits, config, generators), logits.argmax(-1))
    config = GenerationConfig(temperature=5.0, top_p=1e-6)
    assert torch.equal(next_tokens(logits, config, generators), logits.argmax(-1))
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tokenizer = train_byte_bpe(["the cat sat on the mat. the dog ran.\n"] * 20, vocab_size=300)
    model = tiny(vocab_size=tokenizer.vocab_size)
    folder = tmp_path_factory.mktemp("ckpt")
    save_consolidated(model, model.cfg, folder, tokenizer)
    return folder, model, tokenizer


def test_consolidated_checkpoint_round_trip(checkpoint):
    folder, model, tokenizer = checkpoint
    loaded, config, loaded_tokenizer = load_model(folder)
    assert config == model.cfg
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded_tokenizer.eos_id == 0 and loaded_tokenizer.encode("the cat") == tokenizer.encode("the cat")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_model(folder / "nowhere")


def test_stop_sequences_and_eos(checkpoint):
    _, model, tokenizer = checkpoint
    free = generate(model, tokenizer, ["the cat"], GenerationConfig(max_new_tokens=10, stop_at_eos=False))[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 10
    stop = free.text[3:5]  # a piece of what it writes anyway
    stopped = generate(model, tokenizer, ["the cat"], GenerationConfig(max_new_tokens=10, stop_at_eos=False,
                                                                       stop_sequences=[stop]))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == cut_at_stop(free.text, [stop]) and stop not in stopped.text
    first = free.token_ids[0]
    ended = generate_ids(model, [tokenizer.encode("the cat")], GenerationConfig(max_new_tokens=10), eos_id=first)
    assert ended == [([first], "eos")]


def test_cli_prints_completions(checkpoint, capsys):
    folder, _, _ = checkpoint
    assert main([str(folder), "--prompt", "the cat", "--prompt", "the", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("### completion") == 2
    assert main([str(folder), "--prompt", "x", "--top-p", "2"]) == 2
