"""training.planning.memory: MPT-7B on 8 x 80 GB, the activation formula, sharding strategies and the CLI."""
from __future__ import annotations

import json

import pytest

from training.hardware import GIB, get_gpu
from training.model import MPTConfig
from training.planning import memory
from training.planning.memory import MemoryRequest, estimate, layer_activation_bytes

SEVEN_B = MPTConfig.preset("7b")
EIGHTY_GB = get_gpu("a100-80gb").memory_bytes


def seven_b(**changes) -> MemoryRequest:
    fields = dict(model=SEVEN_B, seq_len=2048, micro_batch=8, gpu_memory_bytes=EIGHTY_GB, num_gpus=8,
                  sharding="full", activation_checkpointing=True)
    return MemoryRequest(**{**fields, **changes})


def test_mpt_7b_fits_on_8_gpus_with_full_sharding_and_checkpointing():
    est = estimate(seven_b())
    assert est.fits and est.largest_micro_batch >= 8
    assert est.model_state_bytes == pytest.approx(16 * SEVEN_B.num_params() / 8, rel=1e-6)


def test_mpt_7b_does_not_fit_on_one_gpu_and_says_why():
    est = estimate(seven_b(num_gpus=1))
    assert not est.fits and est.largest_micro_batch == 0
    # 16 bytes per parameter (fp32 weights + fp32 grads + two fp32 Adam moments) is ~99 GiB > 72 GiB usable.
    assert est.model_state_bytes > est.usable_bytes
    assert any("model states alone" in note for note in est.notes)
    # DDP over 8 GPUs replicates the same states on each: no better.
    assert not estimate(seven_b(sharding="ddp")).fits


def test_checkpointing_and_micro_batch_move_the_activations():
    with_ckpt, without = estimate(seven_b()), estimate(seven_b(activation_checkpointing=False))
    assert without.components["activations"] > 5 * with_ckpt.components["activations"]
    assert not without.fits and 0 < without.largest_micro_batch < 8
    assert any("largest micro-batch that fits is" in note for note in without.notes)
    # The largest micro-batch really is the boundary.
    edge = without.largest_micro_batch
    assert estimate(seven_b(activation_checkpointing=False, micro_batch=edge)).fits
    assert not estimate(seven_b(activation_checkpointing=False, micro_batch=edge + 1)).fits


def test_activation_formula_reduces_to_korthikanti():
    """MHA, 4x FFN, bf16, eager attention: sbh(34 + 5as/h) bytes per layer; fused attention drops the s^2 term."""
    cfg = MPTConfig.preset("1b")
    s, b, h, a = 2048, 4, cfg.d_model, cfg.n_heads
    assert layer_activation_bytes(cfg, s, b, 2, "eager") == s * b * h * (34 + 5 * a * s / h)
    assert layer_activation_bytes(cfg, s, b, 2, "flash") == s * b * h * 34 + 4 * a * s * b
    gqa = MPTConfig.preset("1b", n_kv_heads=4)
    assert layer_activation_bytes(gqa, s, b) < layer_activation_bytes(cfg, s, b)


def test_sharding_strategies_and_optimizers():
    full, hybrid = estimate(seven_b(num_gpus=16)), estimate(seven_b(num_gpus=16, sharding="hybrid"))
    assert hybrid.request.shard_ranks == 8 and full.request.shard_ranks == 16
    assert hybrid.model_state_bytes == pytest.approx(2 * full.model_state_bytes, rel=1e-6)
    lion = estimate(seven_b(optimizer="lion"))
    assert lion.components["optimizer state"] * 2 == estimate(seven_b()).components["optimizer state"]
    small = MPTConfig.preset("125m")
    ddp = estimate(MemoryRequest(model=small, seq_len=2048, micro_batch=8, gpu_memory_bytes=EIGHTY_GB,
                                 num_gpus=8, sharding="ddp"))
    assert ddp.fits and ddp.components["working copies"] == 2 * small.num_params()
    with pytest.raises(ValueError, match="does not divide"):
        seven_b(num_gpus=12, sharding="hybrid")
    with pytest.raises(ValueError, match="sharding must be one of"):
        seven_b(sharding="zero3")


def test_cli(capsys):
    args = ["--model", "7b", "--micro-batch", "8", "--num-gpus", "8", "--gpu", "a100-80gb",
            "--activation-checkpointing"]
    assert memory.main(args) == 0
    assert "fits: yes" in capsys.readouterr().out
    one_gpu = ["--model", "7b", "--micro-batch", "8", "--num-gpus", "1", "--gpu", "a100-80gb", "--json"]
    assert memory.main(one_gpu) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] is False and data["largest_micro_batch"] == 0
    assert memory.main(["--model", "tiny", "--memory-gib", "0.001", "--seq-len", "64"]) == 1
    assert memory.main(["--model", "7b", "--gpu", "nope"]) == 2
    assert "unknown GPU" in capsys.readouterr().err
    assert GIB == 1 << 30


def test_request_from_a_training_config(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        "model: {preset: 1b, overrides: {max_seq_len: 4096}}\n"
        "data: {datasets: [{path: not/read/here}]}\n"
        "train: {max_steps: 10, global_batch_size: 64, micro_batch_size: 4}\n"
        "optimizer: {name: lion}\n"
        "parallel: {sharding: hybrid, shard_group_size: 4, activation_checkpointing: true}\n"
    )
    assert memory.main(["--config", str(config), "--num-gpus", "8", "--gpu", "h100", "--json"]) == 0
    request = json.loads(capsys.readouterr().out)["request"]
    assert (request["seq_len"], request["micro_batch"], request["optimizer"]) == (4096, 4, "lion")
    assert (request["sharding"], request["shard_group_size"], request["activation_checkpointing"]) == ("hybrid", 4, True)
    assert request["model"]["d_model"] == 2048
    # Flags win over the config; a bad key in the config is named.
    assert memory.main(["--config", str(config), "--num-gpus", "8", "--micro-batch", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["request"]["micro_batch"] == 2
    assert memory.main(["--config", str(config), "--override", "train.micro_batch=2"]) == 2
    assert "micro_batch" in capsys.readouterr().err
