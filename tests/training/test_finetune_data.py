"""Instruction fine-tuning data: labels only on response tokens, packed examples kept apart, and a
few steps of fine-tuning lower the held-out response loss."""
from __future__ import annotations

import json
import random

import pytest
import torch

from training.data.finetune import (InstructionExample, PackedInstructionDataset, pack_examples, read_instruction_jsonl,
                                    tokenize_example)
from training.data.sources import IGNORE_INDEX
from training.eval.synthetic import COLOURS, OBJECTS, train_byte_bpe
from training.model import MPT, MPTConfig


def test_packing_masks_prompts_and_separates_examples():
    examples = [([1, 2, 3, 4], [False, False, True, True]), ([5, 6, 7], [False, True, True]),
                ([8, 9], [False, True]), ([10, 11, 12, 13, 14, 15, 16], [False, False, False, True, True, True, True])]
    rows, stats = pack_examples(examples, seq_len=8, pad_id=0)
    assert [row.input_ids for row in rows] == [[1, 2, 3, 4, 5, 6, 7, 0], [8, 9, 0, 0, 0, 0, 0, 0],
                                               [10, 11, 12, 13, 14, 15, 16, 0]]
    x = IGNORE_INDEX
    # labels[t] is the token after t, only where that token is a response token of the same example.
    assert rows[0].labels == [x, 3, 4, x, 6, 7, x, x]
    assert rows[0].sequence_ids == [0, 0, 0, 0, 1, 1, 1, 2]
    assert rows[1].labels == [9, x, x, x, x, x, x, x] and rows[1].sequence_ids == [0, 0, 1, 1, 1, 1, 1, 1]
    assert rows[2].labels == [x, x, 13, 14, 15, 16, x, x]
    assert (stats.rows, stats.examples, stats.tokens, stats.loss_tokens) == (3, 4, 16, 9)
    too_long = [(list(range(1, 12)), [False] * 3 + [True] * 8)]
    rows, stats = pack_examples(too_long, seq_len=8)
    assert stats.truncated == 1 and rows[0].input_ids == list(range(1, 9))
    rows, stats = pack_examples(too_long, seq_len=8, overflow="drop")
    assert stats.dropped == 1 and rows == []


def test_bad_jsonl_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: key 'response' must hold a string"):
        read_instruction_jsonl(path)


def facts_examples(objects: list[str]) -> list[InstructionExample]:
    colours = {obj: COLOURS[i % len(COLOURS)] for i, obj in enumerate(OBJECTS)}
    return [InstructionExample(f"question: what colour is the {obj}?\nanswer:", f" the {obj} is {colours[obj]}.")
            for obj in objects]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = random.Random(0)
    train, held_out = facts_examples(OBJECTS[:18]) * 2, facts_examples(OBJECTS[18:])
    tokenizer = train_byte_bpe([e.prompt + e.response for e in train + held_out], vocab_size=320)
    folder = tmp_path_factory.mktemp("sft")
    for name, examples in (("train", train), ("held_out", held_out)):
        rng.shuffle(examples)
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": e.prompt, "response": e.response}) + "\n"
                                                      for e in examples))
    return folder, tokenizer


def batch_loss(model: MPT, batch: dict) -> torch.Tensor:
    logits = model(batch["input_ids"], sequence_ids=batch["sequence_ids"])
    return MPT.loss(logits, batch["labels"])


def test_prompt_tokens_carry_no_loss_and_examples_do_not_attend_across(setup):
    folder, tokenizer = setup
    dataset, stats = PackedInstructionDataset.from_jsonl(folder / "train.jsonl", tokenizer, seq_len=64)
    assert stats.dropped == stats.truncated == 0 and len(dataset) < stats.examples  # several per row
    torch.manual_seed(0)
    model = MPT(MPTConfig.preset("tiny", vocab_size=tokenizer.vocab_size)).eval()
    row = dataset[0]
    first = read_instruction_jsonl(folder / "train.jsonl")[0]
    ids, is_response = tokenize_example(tokenizer, first, tokenizer.eos_id)
    n = len(ids)
    assert row["input_ids"][:n].tolist() == ids
    targets = row["labels"][:n - 1]
    assert (targets[[not r for r in is_response[1:]]] == IGNORE_INDEX).all()  # no label is a prompt token
    assert targets[[bool(r) for r in is_response[1:]]].tolist() == [t for t, r in zip(ids[1:], is_response[1:]) if r]
    assert tokenizer.decode(targets[targets != IGNORE_INDEX].tolist()) == first.response + "<|endoftext|>"
    with torch.no_grad():
        packed = model(row["input_ids"][None], sequence_ids=row["sequence_ids"][None])[0]
        second = row["sequence_ids"] == 1
        alone = model(row["input_ids"][second][None])[0]
        torch.testing.assert_close(packed[second], alone, atol=1e-5, rtol=1e-5)
    # Changing what the prompt positions would predict changes nothing: only response labels count.
    batch = {k: v[None] for k, v in row.items()}
    logits = model(batch["input_ids"], sequence_ids=batch["sequence_ids"])
    prompt_positions = torch.tensor([label == IGNORE_INDEX for label in row["labels"].tolist()])
    nudged = logits.clone()
    nudged[0, prompt_positions] += 5 * torch.randn_like(nudged[0, prompt_positions])
    assert torch.equal(MPT.loss(logits, batch["labels"]), MPT.loss(nudged, batch["labels"]))


def test_fine_tuning_lowers_held_out_response_loss(setup):
    folder, tokenizer = setup
    train, _ = PackedInstructionDataset.from_jsonl(folder / "train.jsonl", tokenizer, seq_len=64)
    held_out, _ = PackedInstructionDataset.from_jsonl(folder / "held_out.jsonl", tokenizer, seq_len=64)
    collate = torch.utils.data.default_collate
    held_out_batch = collate([held_out[i] for i in range(len(held_out))])
    torch.manual_seed(0)
    model = MPT(MPTConfig.preset("tiny", vocab_size=tokenizer.vocab_size))
    with torch.no_grad():
        before = float(batch_loss(model.eval(), held_out_batch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(0))
    model.train()
    for _ in range(6):
        for batch in loader:
            loss = batch_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        after = float(batch_loss(model.eval(), held_out_batch))
    assert after < 0.6 * before, (before, after)
