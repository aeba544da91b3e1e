"""training.run.gate: the band file's checks, interpolation, the config's rules and the exit status.

The gate in real runs (a sweep-fitted band, a normal and a broken run, the launcher) is in test_sweep.py."""
from __future__ import annotations

import pytest

from shards.config import ConfigError, from_dict
from training.config import GateSection, TrainConfig
from training.run.gate import GATE_EXIT_CODE, STOP_FILE_ENV, LossBand, exit_status, smoothed_loss, window_steps


def test_band_interpolates_by_fraction_and_refuses_other_runs(tmp_path):
    band = LossBand(max_steps=100, fractions=[0.1, 0.5, 1.0], expected=[5.0, 4.0, 3.0], low=[4.5, 3.8, 2.9],
                    high=[5.5, 4.2, 3.1], z=2.0)
    path = tmp_path / "band.json"
    band.write(path)
    loaded = LossBand.load(path, max_steps=100)
    assert loaded.at(9) is None and loaded.at(10) == (5.0, 4.5, 5.5)
    assert loaded.at(30) == pytest.approx((4.5, 4.15, 4.85)) and loaded.at(100) == (3.0, 2.9, 3.1)
    with pytest.raises(ConfigError, match="made for a run of 100 steps.*--band-steps 200"):
        LossBand.load(path, max_steps=200)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a loss band"):
        LossBand.load(path)


def test_smoothing_window_and_exit_status(tmp_path, monkeypatch):
    assert window_steps(1000, 10) == 50 and window_steps(24, 5) == 5
    points = [(1, 4.0), (2, 3.0), (3, 2.0)]
    assert smoothed_loss(points, 3, 2) == 2.5 and smoothed_loss(points, 10, 2) is None
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    assert exit_status("behind") == GATE_EXIT_CODE == 3
    monkeypatch.setenv(STOP_FILE_ENV, str(tmp_path / "stopped"))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert exit_status("behind") == 0 and (tmp_path / "stopped").read_text() == "behind\n"


def test_gate_config_rules():
    with pytest.raises(ValueError, match="gate.stop_after is set but gate.band is not"):
        GateSection(stop_after=2)
    with pytest.raises(ValueError, match="gate.stop_after must be >= 0"):
        GateSection(band="b.json", stop_after=-1)
    base = {"data": {"datasets": [{"path": "d"}]}, "train": {"max_steps": 10, "global_batch_size": 2,
                                                              "micro_batch_size": 1}}
    with pytest.raises(ConfigError, match="gate.band is judged at evaluation points: set eval.every_steps"):
        from_dict(TrainConfig, {**base, "gate": {"band": "b.json"}}, "config")
    assert from_dict(TrainConfig, {**base, "gate": {"band": "b.json"}, "eval": {"every_steps": 5}}, "config").gate.band
