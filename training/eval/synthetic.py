"""A synthetic "facts" task and a tiny model trained on it: the end-to-end check of the evaluation harness.

Each object has a colour ("the lemon is yellow ."). A model trained on shuffled runs of these facts
should then complete "the lemon is" with "yellow" (language modelling), pick "yellow" among four colours
(multiple choice), and prefer "the lemon is" over "the coal is" before "yellow" (schema), well above
chance; the task files also ask about objects it never saw, where it can only guess. Tests and docs use it; it downloads nothing (the byte-level BPE tokenizer is trained here too).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from training.model import MPT, MPTConfig
from training.tokenizer import TextTokenizer

EOS = "<|endoftext|>"
OBJECTS = ["apple", "sky", "grass", "snow", "coal", "banana", "cherry", "ocean", "lemon", "rose", "leaf", "cloud",
           "crow", "frog", "milk", "ink", "tomato", "lime", "pearl", "soot", "sea", "corn", "plum", "salt"]
COLOURS = ["red", "blue", "green", "white", "black", "yellow"]
# Objects the model never sees: their questions can only be guessed, so scores land between chance and 1.
UNSEEN = ["zebra", "violet", "cocoa", "jade", "amber", "slate", "olive", "ruby", "navy", "ivory", "mint", "wine"]


def train_byte_bpe(texts: list[str], vocab_size: int) -> TextTokenizer:
    """A GPT-2 style byte-level BPE (no prefix space added) with <|endoftext|> as id 0."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return TextTokenizer(tokenizer, EOS)


@dataclass
class FactsTask:
    facts: dict[str, str]  # object -> colour

    unseen: dict[str, str]  # asked about in the task files, never in the training text

    @classmethod
    def make(cls, seed: int = 0) -> FactsTask:
        rng = random.Random(seed)
        return cls({obj: rng.choice(COLOURS) for obj in OBJECTS}, {obj: rng.choice(COLOURS) for obj in UNSEEN})

    def sentence(self, obj: str) -> str:
        return f"the {obj} is {self.facts[obj]} ."

    def training_text(self, rng: random.Random, facts_per_line: int = 6) -> str:
        return " ".join(self.sentence(rng.choice(OBJECTS)) for _ in range(facts_per_line))

    def write_jsonl(self, folder: str | Path, seed: int = 0) -> dict[str, Path]:
        """language_modeling, multiple_choice and schema task files in llm-foundry's formats."""
        rng = random.Random(seed)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lm, mc, schema = [], [], []
        for obj, colour in {**self.facts, **self.unseen}.items():
            lm.append({"context": f"the {obj} is", "continuation": colour})
            choices = [colour] + rng.sample([c for c in COLOURS if c != colour], 3)
            rng.shuffle(choices)
            mc.append({"query": f"the {obj} is", "choices": choices, "gold": choices.index(colour)})
            other = rng.choice([o for o in OBJECTS if self.facts[o] != colour])
            options = [f"the {obj} is", f"the {other} is"]
            gold = rng.randrange(2)
            if gold:
                options.reverse()
            schema.append({"context_options": options, "continuation": colour, "gold": gold})
        paths = {}
        for name, rows in (("language_modeling", lm), ("multiple_choice", mc), ("schema", schema)):
            paths[name] = folder / f"facts_{name}.jsonl"
            paths[name].write_text("".join(json.dumps(row) + "\n" for row in rows))
        return paths


def train_facts_model(task: FactsTask, steps: int = 300, seed: int = 0,
                      vocab_size: int = 384) -> tuple[MPT, TextTokenizer]:
    """A tiny MPT (and its tokenizer) trained on the facts; a few seconds on a CPU."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = train_byte_bpe([task.training_text(rng) for _ in range(500)], vocab_size)
    config = MPTConfig.preset("tiny", vocab_size=tokenizer.vocab_size)
    model = MPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    seq_len, batch_size = 48, 16
    model.train()
    for _ in range(steps):
        rows = []
        for _ in range(batch_size):
            ids: list[int] = []
            while len(ids) < seq_len + 1:
                ids += tokenizer.encode(task.training_text(rng)) + [tokenizer.eos_id]
            rows.append(ids[:seq_len + 1])
        batch = torch.tensor(rows)
        loss = MPT.loss(model(batch[:, :-1]), batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer
