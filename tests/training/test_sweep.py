"""training.planning.sweep: the power-law fit on known exponents, a real sweep of four tiny models on CPU, and
the loss band it exports judging a normal and a broken run of a fifth size (training.run.gate), the broken one
stopped through `python -m training.launch`, which does not restart it."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from tests.training.subprocess_env import child_env
from training.config import load_config
from training.model import MPTConfig
from training.planning import sweep
from training.planning.sweep import compute_frontier, fit_power_law, parse_budget, parse_size
from training.run.gate import GATE_EXIT_CODE, LossBand
from training.run.journal import read_events
from training.train import train

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


SIZES = ["d_model=16,n_layers=1,n_heads=2", "d_model=32,n_heads=2", "d_model=64", "d_model=128"]
PLANNED = "d_model=96"  # the planned run's size, inside the sweep's range (tiny runs extrapolate poorly)
EVERY_EVAL = 2  # the planned runs evaluate every 2 of their 24 steps


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A sweep of four sizes at 12K tokens (24 steps each, every step logged) that also exports the band of
    a 96-wide model: (folder, config, sweep folder, the sweep's arguments, what it printed)."""
    folder = tmp_path_factory.mktemp("sweep")
    dataset = write_markov_dataset(str(folder / "data"), {"train": 600, "val": 32})
    config = tiny_config(folder, dataset, logging={"every_steps": 1, "progress_bar": False, "mlflow": False,
                                                   "plot": False})
    out = folder / "sweep"
    args = [config, "--budget", "12K", "--target-size", PLANNED, "--out", str(out), "--band", str(folder / "band.json")]
    for size in SIZES:
        args += ["--size", size]
    assert sweep.main(args) == 0
    return folder, config, out, args


def planned_run(folder, name: str, *overrides: str) -> list[str]:
    """The sweep config at the planned size and the band's 24 steps, with the sweep runs' warmup, judged by the band."""
    return [f"name={name}", f"output_dir={folder / 'runs'}", "train.max_steps=24", "schedule.warmup_steps=2",
            f"eval.every_steps={EVERY_EVAL}", f"model.overrides.{PLANNED}", f"gate.band={folder / 'band.json'}",
            *overrides]


def verdicts(run_dir) -> list[dict]:
    return [e for e in read_events(run_dir / "journal.jsonl") if e["event"] == "band"]


def test_sweep_of_four_tiny_models_fits_and_plots(swept, capsys):
    folder, _, out, args = swept
    assert sweep.main(args) == 0  # every run finished in the fixture: reused, nothing trains
    captured = capsys.readouterr()
    printed = captured.out
    assert captured.err.count("reusing finished run") == 4 and "sweep: training" not in captured.err
    assert "budget 12K: L(N) =" in printed and "at the target size" in printed and "loss band over 24 steps" in printed

    result = json.loads((out / "sweep.json").read_text())
    runs = result["runs"]
    assert len(runs) == 4 and all(run["steps"] == 24 and run["loss_source"] == "eval loss" for run in runs)
    assert [run["params"] for run in runs] == sorted(run["params"] for run in runs)
    losses = [run["loss"] for run in runs]
    assert losses[-1] < losses[0]  # bigger models learn the chain faster
    fit = result["by_params"]["12K"]
    assert fit["fit"]["alpha"] > 0 and np.isfinite(fit["target_loss"])
    planned = MPTConfig.preset("tiny", max_seq_len=SEQ_LEN, vocab_size=VOCAB, d_model=96)
    assert result["target"]["params"] == planned.num_params(exclude_embeddings=True)
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    band = LossBand.load(folder / "band.json", max_steps=24)  # 12K tokens of the 96-wide model, 16 x 32 a step
    assert band.fractions[0] == 0.1 and band.fractions[-1] == 1.0
    assert all(low < expected < high for low, expected, high in zip(band.low, band.expected, band.high))
    assert band.at(2) is None and band.at(24) == (band.expected[-1], band.low[-1], band.high[-1])
    # The band follows the curve: mid-run it expects more than at the end (not the final loss all along).
    assert band.at(6)[0] > band.at(24)[0] + 0.2
    assert result["band"]["source"]["runs"] == [run["name"] for run in runs]


def test_a_normal_run_stays_on_track_and_a_broken_one_ends_far_behind(swept):
    """The gate never stops a normal run of the planned size; a run with a learning rate too small to learn
    is behind at every judged point and ends at least 3 band-widths above the band."""
    folder, config, _, _ = swept
    train(load_config(config, planned_run(folder, "normal", "gate.stop_after=2")))
    normal = verdicts(folder / "runs" / "normal")
    assert [e["step"] for e in normal] == list(range(4, 25, EVERY_EVAL))  # judged from 10% of the schedule on
    assert all(e["verdict"] != "behind" for e in normal), normal
    assert not [e for e in read_events(folder / "runs" / "normal" / "journal.jsonl") if e["event"] == "gate_stop"]

    train(load_config(config, planned_run(folder, "broken", "optimizer.lr=1e-6")))  # stop_after 0: journal only
    broken = verdicts(folder / "runs" / "broken")
    assert broken and all(e["verdict"] == "behind" for e in broken)
    assert [e["behind"] for e in broken] == list(range(1, len(broken) + 1))
    end = broken[-1]
    assert end["loss"] > end["high"] + 3 * (end["high"] - end["low"]), end
    assert "against the expected loss band: 0 on track, 11 behind, 0 ahead" in (
        folder / "runs" / "broken" / "training_log.md").read_text()


def test_the_gate_stops_a_broken_launch_after_a_checkpoint_and_launch_does_not_restart_it(swept):
    """Through the documented command on 2 ranks (rank 0 judges, both stop), from the run's folder with relative
    paths, allowed 2 restarts."""
    folder, _, _, _ = swept
    overrides = [o.replace(f"{folder}/", "") for o in planned_run(folder, "gated", "optimizer.lr=1e-6",
                                                                  "gate.stop_after=2", "checkpoint.every_steps=100",
                                                                  "train.micro_batch_size=8")]
    child = subprocess.run([sys.executable, "-m", "training.launch", "train.yaml", *overrides, "--max-restarts", "2",
                            "--nproc-per-node", "2"], cwd=folder, env=child_env(), capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == GATE_EXIT_CODE, child.stderr[-4000:]
    assert "stopped by the loss gate, after a checkpoint" in child.stderr and "Not restarted" in child.stderr
    events = read_events(folder / "runs" / "gated" / "journal.jsonl")
    kinds = [e["event"] for e in events]
    assert "restart" not in kinds and {e["attempt"] for e in events} == {0} and events[0]["world_size"] == 2
    # Judged from step 4 (10% of 24 steps): behind at steps 4 and 6, so stopped at 6, the second evaluation.
    assert [(e["step"], e["verdict"]) for e in events if e["event"] == "band"] == [(4, "behind"), (6, "behind")]
    [saved] = [e for e in events if e["event"] == "checkpoint"]
    assert (saved["step"], saved["reason"]) == (6, "gate") and saved["blocking_seconds"] <= saved["seconds"]
    assert kinds.index("checkpoint") < kinds.index("gate_stop") and events[-1]["event"] == "finish"
    assert "stopped by the loss gate" in (folder / "runs" / "gated" / "training_log.md").read_text()


def test_sweep_rejects_bad_grids(tmp_path, capsys):
    dataset = write_markov_dataset(str(tmp_path / "data"), {"train": 64, "val": 32})
    config = tiny_config(tmp_path, dataset)
    assert sweep.main([config, "--size", "d_model=16", "--size", "d_model=32"]) == 2
    assert "at least 3 sizes" in capsys.readouterr().err
    assert sweep.main([config, "--size", "d_model=16", "--size", "d_model=32", "--size", "d_model=30"]) == 2
    assert "not divisible by n_heads" in capsys.readouterr().err
