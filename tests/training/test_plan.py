"""training.planning.plan: published runs reproduced, the sizing rules, the fitted laws, MFU from docs, and the CLI."""
from __future__ import annotations

import json
import math

import pytest

from training.hardware import get_gpu, gpu_for_device_name
from training.planning import plan
from training.planning.plan import LAWS, PlanRequest, make_plan


@pytest.fixture
def no_benchmarks(tmp_path):
    """A benchmarks file that does not exist, so the default MFU applies whatever docs/ holds."""
    return tmp_path / "benchmarks.md"


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


def test_measured_mfu_is_read_from_the_documented_row(tmp_path):
    bench = tmp_path / "benchmarks.md"
    bench.write_text(
        "| metric | gpu | value | notes |\n|---|---|---|---|\n"
        "| mfu | a100-80gb | 0.51 | other GPU |\n"
        "| mfu | H100 | 0.38 | MPT-1B, first try |\n"
        "| mfu | h100-sxm | 0.45 | MPT-1B, 8 GPUs |\n"
    )
    result = make_plan(PlanRequest(params=1e9, gpu="h100"), bench)
    assert result.mfu == 0.45 and "line 5" in result.mfu_source
    assert make_plan(PlanRequest(params=1e9, gpu="h100", mfu=0.3), bench).mfu == 0.3
    assert make_plan(PlanRequest(params=1e9, gpu="b200"), bench).mfu == plan.DEFAULT_MFU
    bench.write_text("| mfu | h100 | 45 | a percentage by mistake |\n")
    with pytest.raises(ValueError, match="fraction"):
        make_plan(PlanRequest(params=1e9, gpu="h100"), bench)


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
    args = ["--model", "30b", "--tokens", "600B", "--gpu", "h100", "--price", "7", "--benchmarks", str(no_benchmarks)]
    assert plan.main(args) == 0
    table = capsys.readouterr().out
    assert "GPU-days" in table and "assumed default" in table and "$" in table
    assert plan.main(args + ["--json", "--inference-tokens", "1T"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert math.isclose(data["gpu_days"], data["gpu_hours"] / 24)
    assert [a["label"] for a in data["inference"]] == ["planned", "chinchilla-optimal", "inference-optimal"]
    assert plan.main(["--params", "1B", "--gpu", "tpu9"]) == 2
    assert "unknown GPU 'tpu9'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plan.main(["--params", "lots"])
