"""training.eval.extrapolation: loss by position past the training length, as a user runs it.

A tiny ALiBi model is trained here at 128 tokens on a learnable stream (mostly "next = this + 1", with a
random jump one token in five, so the loss has a floor of about 1.6 nats, far below the 5.5 of guessing),
then the documented command scores windows of 128, 256 and 512 tokens of a held-out split."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from tests.training.subprocess_env import child_env
from training.eval.extrapolation import evaluate_extrapolation, main
from training.model import MPT, MPTConfig
from training.weights.layout import save_consolidated

TRAIN_LEN, EVAL_LEN, VOCAB = 128, 512, 256


def jump_stream(rng: np.random.Generator, length: int) -> np.ndarray:
    """Counting up mod VOCAB, except that one step in five jumps to a random token."""
    steps = np.where(rng.random(length) < 0.8, 1, rng.integers(0, VOCAB, length))
    steps[0] = rng.integers(0, VOCAB)
    return np.cumsum(steps) % VOCAB


def train_briefly(config: MPTConfig, steps: int = 60) -> MPT:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = MPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        batch = torch.from_numpy(np.stack([jump_stream(rng, TRAIN_LEN) for _ in range(8)]))
        loss = MPT.loss(model(batch[:, :-1]), batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("extrapolation")
    rng = np.random.default_rng(1)
    with MDSWriter(str(work / "long" / "v=1" / "val"), token_columns(VOCAB)) as writer:
        for _ in range(16):
            writer.write({"tokens": jump_stream(rng, EVAL_LEN).astype(np.uint16)})
    write_manifest(str(work / "long"), DatasetManifest(
        version=1, seq_len=EVAL_LEN, token_dtype="uint16", vocab_size=VOCAB, num_samples={"val": 16},
        num_tokens={"val": 16 * EVAL_LEN}, splits=["val"], config_hash="test", tokenizer_hash="test", seed=0))
    model = train_briefly(MPTConfig.preset("tiny", max_seq_len=TRAIN_LEN))
    save_consolidated(model, model.cfg, work / "alibi")
    return work


def test_alibi_loss_holds_past_the_training_length(work, tmp_path):
    """The documented command, from a fresh directory with relative paths: table, JSON and plot."""
    (tmp_path / "alibi").symlink_to(work / "alibi")
    (tmp_path / "long").symlink_to(work / "long")
    done = subprocess.run(
        [sys.executable, "-m", "training.eval.extrapolation", "alibi", "--data", "long", "--lengths", "128", "256",
         "512", "--windows", "16", "--output-dir", "out"],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "L=512" in done.stdout and "past training" in done.stdout
    result = json.loads((tmp_path / "out" / "extrapolation.json").read_text())
    assert result["train_len"] == TRAIN_LEN and result["windows"] == {"128": 16, "256": 16, "512": 16}
    curve = np.array(result["loss_by_position"]["512"])
    assert len(curve) == EVAL_LEN - 1
    inside, beyond = curve[64:128].mean(), curve[384:512].mean()
    assert inside < 2.5, "the model did not learn the stream: the comparison would mean nothing"
    assert beyond <= 1.1 * inside, (inside, beyond)
    assert (tmp_path / "out" / "extrapolation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learned_positions_past_max_seq_len_are_refused(work, tmp_path, capsys):
    model = MPT(MPTConfig.preset("tiny", position="learned", max_seq_len=TRAIN_LEN)).eval()
    save_consolidated(model, model.cfg, tmp_path / "learned")
    args = [str(tmp_path / "learned"), "--data", str(work / "long"), "--output-dir", str(tmp_path / "out")]
    assert main([*args, "--lengths", "128", "512"]) == 2
    assert "learned position embeddings for max_seq_len=128 positions; lengths [512] go past them" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # Within max_seq_len it runs; the function refuses too, before reading any data.
    with pytest.raises(ValueError, match="go past them"):
        evaluate_extrapolation(model, str(tmp_path / "nowhere"), [256])
    assert main([*args, "--lengths", "128", "--windows", "2"]) == 0
