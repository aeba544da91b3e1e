"""training.planning.sweep: the power-law fit on known exponents, and a real sweep of four tiny models on CPU."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import yaml

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from training.model import MPTConfig
from training.planning import sweep
from training.planning.sweep import compute_frontier, fit_power_law, parse_budget, parse_size

VOCAB, SEQ_LEN = 64, 32


def write_markov_dataset(root: str, splits: dict[str, int], seed: int = 0) -> str:
    """Token samples from a fixed sparse random Markov chain: learnable, and larger models learn it faster."""
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.full(VOCAB, 0.1), size=VOCAB)
    cumulative = transitions.cumsum(axis=1)
    for split, count in splits.items():
        with MDSWriter(f"{root}/v=1/{split}", token_columns(VOCAB), hashes=["xxh3_64"], size_limit=1 << 14) as writer:
            for _ in range(count):
                tokens = np.empty(SEQ_LEN, np.uint16)
                token = rng.integers(VOCAB)
                for i in range(SEQ_LEN):
                    tokens[i] = token
                    token = min(int(np.searchsorted(cumulative[token], rng.random())), VOCAB - 1)
                writer.write({"tokens": tokens})
    write_manifest(root, DatasetManifest(
        version=1, seq_len=SEQ_LEN, token_dtype="uint16", vocab_size=VOCAB, num_samples=dict(splits),
        num_tokens={s: n * SEQ_LEN for s, n in splits.items()}, splits=list(splits),
        config_hash="test", tokenizer_hash="test", seed=seed,
    ))
    return root


def tiny_config(tmp_path, dataset: str, **changes) -> str:
    cfg = {
        "name": "tiny", "output_dir": str(tmp_path / "runs"),
        "model": {"preset": "tiny", "overrides": {"max_seq_len": SEQ_LEN, "vocab_size": VOCAB}},
        "data": {"datasets": [{"path": dataset}], "num_workers": 0},
        "train": {"max_steps": 100, "global_batch_size": 16, "micro_batch_size": 16},
        "optimizer": {"lr": 3.0e-3},
        "schedule": {"warmup_steps": 10},
        "eval": {"every_steps": 100, "batches": 2},
        "logging": {"every_steps": 5, "progress_bar": False, "mlflow": False, "plot": False},
    }
    cfg.update(changes)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_fit_recovers_a_known_exponent():
    params = np.geomspace(1e5, 1e8, 6)
    exact = fit_power_law(params, 1.7 + 400.0 * params**-0.34)
    assert (exact.E, exact.A, exact.alpha) == (pytest.approx(1.7), pytest.approx(400.0), pytest.approx(0.34))
    noisy_losses = (1.7 + 400.0 * params**-0.34) * (1 + 0.002 * np.random.default_rng(0).standard_normal(6))
    noisy = fit_power_law(params, noisy_losses)
    assert noisy.alpha == pytest.approx(0.34, abs=0.03)
    assert noisy.predict(1e10) == pytest.approx(1.7 + 400.0 * 1e10**-0.34, rel=0.02)
    no_floor = fit_power_law(params, 50.0 * params**-0.1 - 0.3)  # the best asymptote is negative: E is held at 0
    assert no_floor.E == 0.0 and no_floor.A > 0 and no_floor.alpha > 0.1
    with pytest.raises(ValueError, match="do not fall"):
        fit_power_law(params, np.linspace(2.0, 3.0, 6))
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law([1e5, 1e6], [3.0, 2.5])


def test_frontier_budgets_and_sizes():
    assert compute_frontier([1, 2, 3, 4], [5.0, 4.0, 4.5, 3.0]).tolist() == [0, 1, 3]
    assert parse_budget("20x").tokens_for(1000) == 20_000 and parse_budget("2M").tokens_for(1000) == 2e6
    assert parse_size("d_model=64, n_heads=4") == {"d_model": 64, "n_heads": 4}
    for bad in ("-3x", "lots", "0"):
        with pytest.raises(argparse.ArgumentTypeError, match="budget"):
            parse_budget(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("d_model")


def test_sweep_of_four_tiny_models_fits_and_plots(tmp_path, capsys):
    dataset = write_markov_dataset(str(tmp_path / "data"), {"train": 600, "val": 32})
    config = tiny_config(tmp_path, dataset)
    sizes = ["d_model=16,n_layers=1,n_heads=2", "d_model=32,n_heads=2", "d_model=64", "d_model=128"]
    out = tmp_path / "sweep"
    args = [config, "--budget", "12K", "--target-model", "1b", "--out", str(out)]
    for size in sizes:
        args += ["--size", size]
    assert sweep.main(args) == 0
    printed = capsys.readouterr().out
    assert "budget 12K: L(N) =" in printed and "at the target size" in printed

    result = json.loads((out / "sweep.json").read_text())
    runs = result["runs"]
    assert len(runs) == 4 and all(run["steps"] == 24 and run["loss_source"] == "eval loss" for run in runs)
    assert [run["params"] for run in runs] == sorted(run["params"] for run in runs)
    losses = [run["loss"] for run in runs]
    assert losses[-1] < losses[0]  # bigger models learn the chain faster
    fit = result["by_params"]["12K"]
    assert fit["fit"]["alpha"] > 0 and np.isfinite(fit["target_loss"])
    assert result["target"]["params"] == MPTConfig.preset("1b").num_params(exclude_embeddings=True)
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Run again: every run is finished, so nothing trains and the fit is the same.
    assert sweep.main(args) == 0
    assert "reusing finished run" in capsys.readouterr().err
    assert json.loads((out / "sweep.json").read_text())["by_params"] == result["by_params"]


def test_sweep_rejects_bad_grids(tmp_path, capsys):
    dataset = write_markov_dataset(str(tmp_path / "data"), {"train": 64, "val": 32})
    config = tiny_config(tmp_path, dataset)
    assert sweep.main([config, "--size", "d_model=16", "--size", "d_model=32"]) == 2
    assert "at least 3 sizes" in capsys.readouterr().err
    assert sweep.main([config, "--size", "d_model=16", "--size", "d_model=32", "--size", "d_model=30"]) == 2
    assert "not divisible by n_heads" in capsys.readouterr().err
