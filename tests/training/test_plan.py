"""training.planning.plan: published runs reproduced, the sizing rules, the fitted laws, the measured-MFU table
(package data), failures and the Young/Daly checkpoint interval against hand computations, and the CLI."""
from __future__ import annotations

import fnmatch
import json
import math
import tomllib
from pathlib import Path

import pytest

from training.hardware import get_gpu, gpu_for_device_name
from training.model import MPTConfig
from training.planning import plan
from training.planning.plan import LAWS, MFU_TABLE, PlanRequest, make_plan
from training.run.journal import Journal

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_benchmarks(tmp_path):
    """A measured-MFU table that does not exist, so the default MFU applies whatever the package holds."""
    return tmp_path / "measured_mfu.csv"


def test_30b_on_600b_tokens_matches_the_seed_estimate(no_benchmarks):
    """The seed's estimate: about 3,000 H100-days and $500K at $7/GPU-hour (within 15%)."""
    result = make_plan(PlanRequest(model="30b", tokens=600e9, gpu="h100", price_per_gpu_hour=7.0), no_benchmarks)
    assert result.mfu == 0.40 and "assumed" in result.mfu_source
    assert result.gpu_days == pytest.approx(3000, rel=0.15)
    assert result.cost == pytest.approx(500_000, rel=0.15)
    assert 0.03 < result.attention_share < 0.06  # 12 L d s against 6N at 2048 tokens


def test_mpt_7b_matches_mosaicmls_published_run(no_benchmarks):
    """MosaicML: MPT-7B on 1T tokens took 440 A100-40GB for 9.5 days, about $200K (we use MFU 0.40, $2/GPU-hour)."""
    result = make_plan(PlanRequest(model="7b", tokens=1e12, gpu="a100-40gb", num_gpus=440, price_per_gpu_hour=2.0),
                       no_benchmarks)
    assert result.wall_clock_days == pytest.approx(9.5, rel=0.10)
    assert result.gpu_days == pytest.approx(440 * 9.5, rel=0.10)
    assert result.cost == pytest.approx(200_000, rel=0.10)


def test_sizing_fills_in_what_is_missing(no_benchmarks):
    by_params = make_plan(PlanRequest(params=1e9), no_benchmarks)
    assert by_params.tokens == pytest.approx(20e9)
    by_tokens = make_plan(PlanRequest(tokens=20e9), no_benchmarks)
    assert by_tokens.params == pytest.approx(1e9)
    by_flops = make_plan(PlanRequest(flops=6 * 1e9 * 20e9), no_benchmarks)
    assert (by_flops.params, by_flops.tokens) == (pytest.approx(1e9), pytest.approx(20e9))
    fixed_size = make_plan(PlanRequest(params=2e9, flops=1.2e21), no_benchmarks)
    assert fixed_size.tokens == pytest.approx(1e11)
    with pytest.raises(ValueError, match="at most two"):
        make_plan(PlanRequest(params=1e9, tokens=1e9, flops=1e20), no_benchmarks)
    with pytest.raises(ValueError, match="give a model"):
        make_plan(PlanRequest(), no_benchmarks)


def test_fitted_laws_optimum_is_self_consistent():
    """optimal_params minimises the law under 6ND = C, and the inverses agree with it."""
    for law in LAWS.values():
        budget = 1e22
        best = law.optimal_params(budget)
        loss_at = lambda n: law.loss(n, budget / (6 * n))  # noqa: E731
        assert loss_at(best) < loss_at(best * 1.2) and loss_at(best) < loss_at(best / 1.2)
        tokens = budget / (6 * best)
        assert law.optimal_tokens_for_params(best) == pytest.approx(tokens, rel=1e-9)
        assert law.optimal_params_for_tokens(tokens) == pytest.approx(best, rel=1e-6)
        assert law.tokens_for_loss(best, law.loss(best, tokens)) == pytest.approx(tokens, rel=1e-9)
    # Hoffmann et al.'s published constants, and the replication's near-20 tokens per parameter.
    hoffmann = LAWS["hoffmann"]
    assert (hoffmann.E, hoffmann.A, hoffmann.B, hoffmann.alpha, hoffmann.beta) == (1.69, 406.4, 410.7, 0.34, 0.28)
    ratio = LAWS["besiroglu"].optimal_tokens_for_params(LAWS["besiroglu"].optimal_params(1e23))
    assert 15 < ratio / LAWS["besiroglu"].optimal_params(1e23) < 30


def test_inference_aware_view_prefers_a_smaller_model_trained_longer(no_benchmarks):
    result = make_plan(PlanRequest(params=7e9, tokens=140e9, inference_tokens=10e12, law="besiroglu",
                                   price_per_gpu_hour=2.0), no_benchmarks)
    planned, chinchilla, inference = result.inference
    total = lambda a: a.training_flops + a.inference_flops  # noqa: E731
    # Same loss for all three; the Chinchilla-optimal one is the cheapest to train, the last the cheapest overall.
    law = LAWS["besiroglu"]
    for allocation in (chinchilla, inference):
        assert law.loss(allocation.params, allocation.tokens) == pytest.approx(planned.loss, rel=1e-9)
    assert chinchilla.training_flops <= planned.training_flops * (1 + 1e-6)
    assert inference.params < chinchilla.params and inference.tokens > chinchilla.tokens
    assert total(inference) < total(chinchilla) and inference.cost < chinchilla.cost
    # With no inference the two optima coincide.
    quiet = make_plan(PlanRequest(params=7e9, tokens=140e9, inference_tokens=1.0, law="besiroglu"), no_benchmarks)
    assert quiet.inference[2].params == pytest.approx(quiet.inference[1].params, rel=1e-3)


def test_measured_mfu_is_read_from_the_table(tmp_path):
    table = tmp_path / "measured_mfu.csv"
    table.write_text("gpu,mfu,notes\na100-80gb,0.51,other GPU\nH100,0.38,\"MPT-1B, first try\"\n"
                     "h100-sxm,0.45,\"MPT-1B, 8 GPUs\"\n")
    result = make_plan(PlanRequest(params=1e9, gpu="h100"), table)
    assert result.mfu == 0.45 and "measured_mfu.csv line 4" in result.mfu_source
    assert make_plan(PlanRequest(params=1e9, gpu="h100", mfu=0.3), table).mfu == 0.3
    assert make_plan(PlanRequest(params=1e9, gpu="b200"), table).mfu == plan.DEFAULT_MFU
    table.write_text("gpu,mfu,notes\nh100,45,a percentage by mistake\n")
    with pytest.raises(ValueError, match="fraction"):
        make_plan(PlanRequest(params=1e9, gpu="h100"), table)


def test_the_measured_mfu_table_ships_with_the_package():
    """Read through importlib.resources, and named in pyproject's package data, so an installed wheel has it."""
    assert MFU_TABLE.is_file() and MFU_TABLE.read_text().splitlines()[0] == "gpu,mfu,notes"
    plan.read_mfu_table()  # the packaged rows parse
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["training"]
    assert any(fnmatch.fnmatch("planning/data/measured_mfu.csv", pattern) for pattern in patterns)


def test_failures_interval_and_lost_cost_of_30b_on_600b_tokens_by_hand(no_benchmarks):
    """The seed's case on 512 H100s at MFU 0.40, $7/GPU-hour, a 60 s blocking save, 1 failure per 1,000 GPU-days."""
    request = PlanRequest(model="30b", tokens=600e9, gpu="h100", num_gpus=512, mfu=0.40, price_per_gpu_hour=7.0,
                          save_seconds=60.0, global_batch=1024)
    result = make_plan(request, no_benchmarks)
    gpu_hours = MPTConfig.preset("30b", max_seq_len=2048).flops_per_token(2048) * 600e9 / (989.5e12 * 0.40) / 3600
    assert result.gpu_hours == pytest.approx(gpu_hours)
    f = result.failures
    assert f.expected_failures == pytest.approx(gpu_hours / 24 / 1000)  # about 3.3
    assert f.job_mtbf_hours == pytest.approx(1000 * 24 / 512)  # 46.875 h
    assert f.interval_minutes == pytest.approx(75.0)  # sqrt(2 x 60 s x 168,750 s) = 4,500 s
    wall_seconds = gpu_hours * 3600 / 512
    assert f.interval_steps == round(4500 / (wall_seconds / (600e9 / (1024 * 2048))))
    lost_wall_hours = f.expected_failures * (25 + 37.5) / 60 + wall_seconds / 4500 * 60 / 3600
    assert f.lost_gpu_hours == pytest.approx(lost_wall_hours * 512)
    assert f.lost_cost == pytest.approx(lost_wall_hours * 512 * 7.0)
    assert 3.2 < f.expected_failures < 3.4 and 2_500 < f.lost_gpu_hours < 3_000


def test_save_time_is_read_from_an_earlier_runs_journal(tmp_path, no_benchmarks, capsys):
    """Only the blocking part of asynchronous saves counts; periodic saves, when there are any."""
    journal = Journal(tmp_path, rank=0, attempt=0)
    for step, blocking, seconds, reason in ((10, 2.0, 30.0, "periodic"), (20, 4.0, 31.0, "periodic"),
                                            (30, 3.0, 29.0, "periodic"), (40, 90.0, 90.0, "final")):
        journal.record("checkpoint", step=step, name=f"step-{step}", url="x", reason=reason, bytes=1,
                       seconds=seconds, blocking_seconds=blocking, removed=[])
    result = make_plan(PlanRequest(params=1e9, save_journal=tmp_path), no_benchmarks)
    assert result.failures.save_seconds == 3.0 and "median blocking save" in result.failures.save_source
    with pytest.raises(ValueError, match="no journal.jsonl"):
        make_plan(PlanRequest(params=1e9, save_journal=tmp_path / "elsewhere"), no_benchmarks)
    assert plan.main(["--params", "1B", "--json", "--save-journal", str(tmp_path),
                      "--mfu-table", str(no_benchmarks)]) == 0
    assert json.loads(capsys.readouterr().out)["failures"]["save_seconds"] == 3.0
    estimated = make_plan(PlanRequest(params=1e9), no_benchmarks).failures
    assert estimated.save_seconds == pytest.approx(12e9 / 5e9) and "estimated" in estimated.save_source


def test_gpu_table():
    assert get_gpu("H100").bf16_tflops == 989.5 and get_gpu("A100-40GB").bf16_tflops == 312
    assert get_gpu("a100_80gb").memory_gib == 80
    with pytest.raises(ValueError, match="unknown GPU 'v99'"):
        get_gpu("v99")
    names = {"NVIDIA H100 80GB HBM3": "h100-sxm", "NVIDIA H100 PCIe": "h100-pcie", "NVIDIA A100-SXM4-40GB": "a100-40gb",
             "NVIDIA A100 80GB PCIe": "a100-80gb", "NVIDIA H200": "h200", "NVIDIA GH200 480GB": "gh200",
             "NVIDIA L40S": "l40s", "NVIDIA L4": "l4"}
    for device_name, expected in names.items():
        assert gpu_for_device_name(device_name).name == expected
    assert gpu_for_device_name("Tesla T4") is None


def test_cli_table_and_json(capsys, no_benchmarks):
    args = ["--model", "30b", "--tokens", "600B", "--gpu", "h100", "--price", "7", "--mfu-table", str(no_benchmarks)]
    assert plan.main(args) == 0
    table = capsys.readouterr().out
    assert "GPU-days" in table and "assumed default" in table and "$" in table
    assert plan.main(args + ["--mfu", "0.4", "--num-gpus", "512", "--save-seconds", "60"]) == 0
    lines = {line[:22].strip(): line[22:].strip() for line in capsys.readouterr().out.splitlines()}
    assert lines["expected failures"].startswith("3.3 (1 per 1,000 GPU-days")
    assert lines["checkpoint interval"].startswith("75.0 min") and "Young/Daly" in lines["checkpoint interval"]
    assert lines["lost to failures"].startswith("2,") and "GPU-hours, $" in lines["lost to failures"]
    assert plan.main(args + ["--json", "--inference-tokens", "1T"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert math.isclose(data["gpu_days"], data["gpu_hours"] / 24)
    assert [a["label"] for a in data["inference"]] == ["planned", "chinchilla-optimal", "inference-optimal"]
    assert plan.main(["--params", "1B", "--gpu", "tpu9"]) == 2
    assert "unknown GPU 'tpu9'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plan.main(["--params", "lots"])
