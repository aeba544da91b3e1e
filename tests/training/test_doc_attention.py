"""Document-aware attention in pre-training (model.attn_uses_sequence_id), through the trainer's own data path:
the config resolved as the launcher and the trainer resolve it, the streaming loader (one worker process, as
configured), model_inputs, the model. The dataset is laid out as the ETL writes one: documents ending in EOS
packed back to back into samples, the last one padded, and the manifest's extra naming the EOS and pad ids."""
from __future__ import annotations

import dataclasses
import gc
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from tests.training.token_datasets import write_token_dataset
from training.config import load_config
from training.data.loader import StreamingLoader, model_inputs
from training.data.resolve import make_batches, resolve_sources
from training.data.sources import IGNORE_INDEX
from training.model import MPT

# Eager FlexAttention on CPU warns that it is unfused; that is what these tests want.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

SEQ_LEN, VOCAB, EOS, PAD = 64, 256, 0, 1


def write_documents_dataset(root: Path, splits: dict[str, int], seq_len: int = SEQ_LEN) -> str:
    """Documents of 3 to 40 tokens, each ended by EOS, packed into ``seq_len``-token samples; the split's tail is
    padded (as the ETL's ``tail: pad``). Returns ``root``."""
    rng = np.random.default_rng(5)
    for split, count in splits.items():
        stream: list[int] = []
        while len(stream) < count * seq_len - 6:
            stream += rng.integers(2, VOCAB, int(rng.integers(2, 40))).tolist() + [EOS]
        stream = stream[:count * seq_len - 6] + [EOS] + [PAD] * 5
        with MDSWriter(str(root / "v=1" / split), token_columns(VOCAB), hashes=["xxh3_64"],
                       size_limit=1 << 20) as writer:
            for i in range(count):
                writer.write({"tokens": np.asarray(stream[i * seq_len:(i + 1) * seq_len], np.uint16)})
    write_manifest(str(root), DatasetManifest(
        version=1, seq_len=seq_len, token_dtype="uint16", vocab_size=VOCAB,
        num_samples=dict(splits), num_tokens={s: n * seq_len - 5 for s, n in splits.items()}, splits=list(splits),
        config_hash="test", tokenizer_hash="test", seed=0,
        extra={"columns": {"tokens": "ndarray:uint16"}, "tail": "pad", "eos_token_id": EOS, "pad_token_id": PAD,
               "bos_token_id": None}))
    return str(root)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("doc_attention")
    write_documents_dataset(work / "docs", {"train": 48, "val": 8})
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        name: docs
        output_dir: {work / "runs"}
        model: {{preset: tiny, overrides: {{max_seq_len: {SEQ_LEN}, attn_uses_sequence_id: true}}}}
        data: {{datasets: [{{path: {work / "docs"}}}], shuffle_window_shards: 2, num_workers: 1}}
        train: {{max_steps: 2, global_batch_size: 4, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        eval: {{every_steps: 2, batches: 1}}
        checkpoint: {{every_steps: 2}}
        parallel: {{device: cpu}}
        logging: {{progress_bar: false, mlflow: false, plot: false}}
        """))
    return work


class OneRank:
    rank, world_size = 0, 1


def trainer_batch(cfg) -> dict[str, torch.Tensor]:
    """The first micro-batch of 4 samples the trainer's data path yields for ``cfg``."""
    train, _ = resolve_sources(cfg)
    loader = StreamingLoader(make_batches(train, cfg.data, 4, 4, OneRank, cfg.data.shuffle), cfg.data.num_workers)
    return next(iter(loader))


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of each row over its labelled positions, float64."""
    losses = F.cross_entropy(logits.double().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                             reduction="none").view(labels.shape)
    return losses.sum(1) / (labels != IGNORE_INDEX).sum(1)


def documents_alone(model: MPT, ids: torch.Tensor, sequence_ids: torch.Tensor) -> float:
    """The token-weighted loss of one row's documents, each run through the model alone."""
    total, count = 0.0, 0
    for doc in sequence_ids.unique().tolist():
        tokens = ids[sequence_ids == doc]
        if len(tokens) < 2:
            continue
        logits = model(tokens[None, :-1])
        total += F.cross_entropy(logits.double()[0], tokens[1:], reduction="sum").item()
        count += len(tokens) - 1
    return total / count


@pytest.mark.parametrize("position", ["alibi", "learned", "rope"])
def test_each_sample_loss_equals_its_documents_run_alone(work, position):
    cfg = load_config(work / "train.yaml", [f"model.overrides.position={position}"])
    batch = trainer_batch(cfg)
    input_ids, sequence_ids, labels = model_inputs(batch, torch.device("cpu"))
    assert sequence_ids is not None, "the loader must derive sequence_ids from the manifest's EOS"
    # A token after an EOS, and only there, starts a new document.
    assert torch.equal(sequence_ids[:, 1:] != sequence_ids[:, :-1], input_ids[:, :-1] == EOS)
    assert (sequence_ids[:, 0] == 0).all() and max(len(row.unique()) for row in sequence_ids) >= 3

    torch.manual_seed(0)
    sdpa = MPT(cfg.model.build()).eval()
    with torch.no_grad():
        logits = sdpa(input_ids, sequence_ids=sequence_ids)
        packed = row_losses(logits, labels)
        alone = torch.tensor([documents_alone(sdpa, ids, seqs) for ids, seqs in zip(input_ids, sequence_ids)],
                             dtype=torch.float64)
        torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
        # Without the mask the packed documents see each other: the losses differ.
        assert (row_losses(sdpa(input_ids), labels) - alone).abs().max() > 1e-3

        # FlexAttention (forward only: it has no CPU backward) computes the same logits and losses.
        flex = MPT(dataclasses.replace(cfg.model.build(), attn_impl="flex")).eval()
        flex.load_state_dict(sdpa.state_dict())
        flex_logits = flex(input_ids, sequence_ids=sequence_ids)
    torch.testing.assert_close(flex_logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(row_losses(flex_logits, labels), alone, atol=1e-5, rtol=0)


def test_trains_with_document_ids_and_exports_with_them_off(work):
    """A real run (eval and checkpoint included) with attn_uses_sequence_id; its Hugging Face export turns it off."""
    from transformers import AutoModelForCausalLM

    from training.train import train
    from training.weights.export_hf import export_hf
    from training.weights.inference import load_model

    cfg = load_config(work / "train.yaml")
    try:
        last = train(cfg)
    finally:
        gc.collect()  # the finished run's process group must not be collected inside a forked loader worker
    assert np.isfinite(last["loss"]) and np.isfinite(last["eval_loss"])
    checkpoints = work / "runs" / "docs" / "checkpoints"
    model, config, _ = load_model(checkpoints)
    assert config.attn_uses_sequence_id  # the checkpoint records how it was trained

    export_hf(checkpoints, work / "hf")
    hf_config = json.loads((work / "hf" / "config.json").read_text())
    assert hf_config["attn_config"]["attn_uses_sequence_id"] is False
    hf = AutoModelForCausalLM.from_pretrained(work / "hf").eval()
    ids = torch.randint(2, VOCAB, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=1e-4)


def test_launch_refuses_document_ids_without_an_eos(work, capsys):
    """A dataset whose manifest names no EOS token (and has no sequence_ids column) cannot be split into documents."""
    from training.launch import main

    plain = write_token_dataset(str(work / "no_eos"), {"train": 16, "val": 8}, seq_len=SEQ_LEN)
    assert main([str(work / "train.yaml"), f"data.datasets=[{{path: {plain}}}]"]) == 2
    err = capsys.readouterr().err
    assert "model.attn_uses_sequence_id" in err and "eos_token_id" in err


def test_launch_refuses_sdpa_whose_bias_cannot_fit(work, capsys):
    """65,536-token samples, 8 a micro-batch, one ALiBi bias per row: hundreds of GB in fp32; FlexAttention is fine."""
    from training.launch import main, validate

    long = write_documents_dataset(work / "long", {"train": 1}, seq_len=65536)
    overrides = [f"data.datasets=[{{path: {long}}}]", "data.eval_split=null", "eval.every_steps=0",
                 "checkpoint.every_steps=0", "model.overrides.max_seq_len=65536", "train.micro_batch_size=8",
                 "train.global_batch_size=8"]
    assert main([str(work / "train.yaml"), *overrides]) == 2
    err = capsys.readouterr().err
    assert "attn_impl='sdpa' at seq_len=65536" in err and "FlexAttention" in err and "attn_impl: flex" in err
    validate(load_config(work / "train.yaml", [*overrides, "model.overrides.attn_impl=flex"]), 1, 1)
