"""The ML engineers' commands as typed: `python -m training.X` in a subprocess, from a fresh working
directory, with relative paths. A training checkpoint is what training leaves, so generate, eval and
export_hf all take one (a checkpoint root or a step folder) and find the tokenizer its data was
tokenized with; preflight reports organisational gaps and vocabulary mismatches without crashing."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from training.eval.synthetic import train_byte_bpe
from training.weights.checkpoint_reader import read_model_state
from training.weights.consolidate import consolidate
from training.weights.export_hf import main as export_main

SEQ_LEN = 32
TEXTS = ["the cat sat on the mat and looked at the dog.\n", "def add(a, b):\n    return a + b\n",
         "a quick brown fox jumps over the lazy dog.\n"] * 40


def kiln(cwd: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -m <args>` as a user types it in ``cwd``; Kiln is imported from the installed package."""
    env = {key: value for key, value in os.environ.items() if key != "KILN_ON_CALL"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def write_dataset(work: Path, tokenizer_file: Path) -> int:
    """What the ETL publishes: a versioned dataset whose manifest names its tokenizer and the tokenizer's hash;
    returns the tokenizer's vocabulary size."""
    from training.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.from_file(tokenizer_file)
    ids = np.array([i for text in TEXTS for i in tokenizer.encode(text) + [tokenizer.eos_id]], dtype=np.uint16)
    rows = ids[:len(ids) // SEQ_LEN * SEQ_LEN].reshape(-1, SEQ_LEN)
    splits = {"train": rows[:-8], "val": rows[-8:]}
    for split, samples in splits.items():
        with MDSWriter(str(work / "data" / "dataset" / "v=1" / split), token_columns(tokenizer.vocab_size),
                       hashes=["xxh3_64"], size_limit=1 << 12) as writer:
            for sample in samples:
                writer.write({"tokens": sample})
    write_manifest(str(work / "data" / "dataset"), DatasetManifest(
        version=1, seq_len=SEQ_LEN, token_dtype="uint16", vocab_size=tokenizer.vocab_size,
        num_samples={s: len(r) for s, r in splits.items()}, num_tokens={s: r.size for s, r in splits.items()},
        splits=list(splits), config_hash="test", seed=0,
        tokenizer_hash=hashlib.sha256(tokenizer_file.read_bytes()).hexdigest(),
        extra={"tokenizer": str(tokenizer_file)},  # the ETL records the absolute path it tokenized with
    ))
    return tokenizer.vocab_size


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A fresh working directory holding a dataset, a relative training config and the run it trained."""
    work = tmp_path_factory.mktemp("work")
    tokenizer_file = work / "tokenizer" / "tokenizer.json"
    tokenizer_file.parent.mkdir()
    train_byte_bpe(TEXTS, 300).save(tokenizer_file)
    vocab = write_dataset(work, tokenizer_file)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        name: run
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 32, n_heads: 2, max_seq_len: {SEQ_LEN}, vocab_size: {vocab}}}}}
        data: {{datasets: [{{path: data/dataset}}], num_workers: 0}}
        train: {{max_steps: 4, global_batch_size: 4, micro_batch_size: 2}}
        checkpoint: {{every_steps: 2}}
        logging: {{progress_bar: false, mlflow: false, plot: false}}
        """))
    trained = kiln(work, "training.train", "train.yaml", timeout=180)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (work / "runs" / "run" / "checkpoints" / "step-00000004").is_dir()
    return work


def test_export_hf_takes_the_checkpoint_root_training_leaves(work, monkeypatch):
    """The README's `export_hf CHECKPOINT OUT_DIR` on a training checkpoint (its newest complete step),
    then (in this process, to save the interpreter starts) a step folder and a consolidated folder: the
    same weights, with the data's tokenizer."""
    exported = kiln(work, "training.export_hf", "runs/run/checkpoints", "hf")
    assert exported.returncode == 0, exported.stderr
    _, state = read_model_state(str(work / "runs" / "run" / "checkpoints"))
    tensors = load_file(str(work / "hf" / "model.safetensors"))
    assert set(tensors) == {"transformer." + name for name in state}
    assert all(torch.equal(tensors["transformer." + name], tensor) for name, tensor in state.items())
    assert (work / "hf" / "tokenizer.json").is_file()
    assert json.loads((work / "hf" / "config.json").read_text())["eos_token_id"] == 0

    monkeypatch.chdir(work)
    assert export_main(["runs/run/checkpoints/step-00000004", "hf-step"]) == 0
    assert (work / "hf-step" / "model.safetensors").read_bytes() == (work / "hf" / "model.safetensors").read_bytes()
    consolidate("runs/run/checkpoints", "model", tokenizer="tokenizer/tokenizer.json")
    assert export_main(["model", "hf-model"]) == 0
    again = load_file(str(work / "hf-model" / "model.safetensors"))
    assert all(torch.equal(again[name], tensor) for name, tensor in tensors.items())


def test_export_hf_names_what_a_checkpoint_path_must_be(work):
    missing = kiln(work, "training.export_hf", "runs/run/no-such-checkpoint", "hf-missing")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "runs/run/no-such-checkpoint is not a checkpoint: neither a consolidated folder" in missing.stderr
    assert "nor a training checkpoint" in missing.stderr


def test_generate_and_eval_use_the_tokenizer_the_data_records(work):
    generated = kiln(work, "training.generate", "runs/run/checkpoints", "--prompt", "the cat", "--max-new-tokens", "4")
    assert generated.returncode == 0, generated.stderr
    assert "### completion" in generated.stdout
    (work / "tasks.yaml").write_text(yaml.safe_dump({
        "perplexity": [{"label": "val", "path": "data/dataset/v=1/val"}],
        "vibe": {"prompts": ["the cat"], "max_new_tokens": 4},
    }))
    evaluated = kiln(work, "training.eval", "runs/run/checkpoints", "tasks.yaml")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "eval/perplexity/val/perplexity" in evaluated.stdout and "--- vibe: 'the cat'" in evaluated.stdout


def test_a_changed_tokenizer_is_not_used(work):
    """The data was tokenized with other bytes than the file now holds: generating with it would be wrong."""
    tokenizer_file = work / "tokenizer" / "tokenizer.json"
    original = tokenizer_file.read_bytes()
    tokenizer_file.write_bytes(original.replace(b'"<|endoftext|>"', b'"<|end|>"'))
    try:
        generated = kiln(work, "training.generate", "runs/run/checkpoints", "--prompt", "the cat")
    finally:
        tokenizer_file.write_bytes(original)
    assert generated.returncode == 2 and "Traceback" not in generated.stderr
    assert "changed since the training data was tokenized with it" in generated.stderr
    assert "error: runs/run/checkpoints has no tokenizer" in generated.stderr


def one_spaced(report: str) -> str:
    """The preflight table with its column padding (which depends on the rows shown) cut to one space."""
    return re.sub(r" +", " ", report)


def test_preflight_warns_without_an_on_call_contact(work):
    checked = kiln(work, "training.preflight", "train.yaml", "name=fresh", "--steps", "0")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARN run identity no on-call contact (--on-call or $KILN_ON_CALL)" in one_spaced(checked.stdout)


def test_preflight_reports_a_vocabulary_mismatch_and_skips_its_training_steps(work):
    """Token ids past 128 against a 64-token model (128 embedding rows): the FAIL is the finding; the
    training steps would only index past the embedding."""
    vocab = json.loads((work / "data" / "dataset" / "v=1" / "manifest.json").read_text())["vocab_size"]
    assert vocab > 128
    checked = kiln(work, "training.preflight", "train.yaml", "name=fresh", "model.overrides.vocab_size=64",
                   "--steps", "2", "--on-call", "ana@example.com")
    assert checked.returncode == 1
    assert "IndexError" not in checked.stdout + checked.stderr
    report = one_spaced(checked.stdout)
    assert f"FAIL vocabulary data/dataset: the tokenizer has {vocab} tokens but the model's vocab_size is 64" in report
    assert "WARN training steps not run: the vocabulary check failed" in report
    assert "WARN throughput not run: the vocabulary check failed" in report


def test_the_quickstart_config_fits_the_demo_data_and_leaves_a_checkpoint():
    """configs/train_tiny.yaml reads what the README's ETL command writes, with an embedding for every id of
    the demo tokenizer, and checkpoints where the README's generate, eval and export commands look."""
    import inspect

    from jobs.demo import train_tokenizer
    from training.run.checkpoint import checkpoint_root
    from training.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "train_tiny.yaml")
    readme = (root / "README.md").read_text()
    assert "python -m etl run configs/demo_pipeline.yaml --set output=out/run1" in readme
    assert [d.path for d in cfg.data.datasets] == ["out/run1/dataset"]
    assert cfg.model.build().vocab_size >= inspect.signature(train_tokenizer).parameters["vocab_size"].default
    assert cfg.checkpoint.enabled and checkpoint_root(cfg) == "runs/tiny/checkpoints"
    for command in ("training.generate runs/tiny/checkpoints", "training.eval runs/tiny/checkpoints",
                    "training.export_hf runs/tiny/checkpoints"):
        assert f"python -m {command}" in readme
