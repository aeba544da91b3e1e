"""The expected loss band, and the gate that stops a run which stays behind it.

``python -m training.sweep --band band.json`` writes the band: for fractions f of the planned run's
schedule, the loss a law fitted on the sweep runs' losses at the same fraction f predicts for the
planned size, +- z times the fit's residual standard deviation (training/planning/sweep.py). A run
whose config sets ``gate.band`` is judged at every evaluation point: its train loss, averaged over
the trailing window below, is "on track" inside the band, "behind" above it and "ahead" below it;
the journal records each verdict (a ``band`` event). With ``gate.stop_after: K``, K verdicts
"behind" in a row stop the run: a checkpoint, a ``gate_stop`` event, and exit status
``GATE_EXIT_CODE``, which ``training.launch`` does not restart.

Why the train loss: sweep runs evaluate only at their end, so their loss curves (the band's source)
are train losses; one step's loss is noisy, so both sides average the logged losses of the trailing
``WINDOW_FRACTION`` of the schedule (at least one logging interval).
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shards.config import ConfigError

from ..config import GateSection
from .journal import Journal

BAND_FORMAT = 1
GATE_EXIT_CODE = 3  # training.launch: 1 failed, 2 config error, 3 stopped by the gate, 128+N a signal
STOP_FILE_ENV = "KILN_GATE_STOP_FILE"  # set by training.launch: where a rank leaves the gate's reason
WINDOW_FRACTION = 0.05  # the trailing part of the schedule whose logged losses are averaged


def window_steps(max_steps: int, log_every: int) -> int:
    """Steps averaged for the loss at a point: 5% of the schedule, and at least one logging interval."""
    return max(log_every, math.ceil(WINDOW_FRACTION * max_steps))


def smoothed_loss(points: list[tuple[int, float]], step: int, window: int) -> float | None:
    """Mean logged loss over steps (step - window, step]; None when none was logged there."""
    values = [loss for s, loss in points if step - window < s <= step]
    return statistics.fmean(values) if values else None


@dataclass
class LossBand:
    """Expected train loss and its band at fractions of a planned run of ``max_steps`` steps."""

    max_steps: int  # the planned run's train.max_steps; the band is judged at step / max_steps
    fractions: list[float]  # increasing, in (0, 1]
    expected: list[float]
    low: list[float]
    high: list[float]
    z: float  # half-width in residual standard deviations
    source: dict = field(default_factory=dict)  # what it was fitted on (sweep, budget, target size)
    format: int = BAND_FORMAT

    def at(self, step: int) -> tuple[float, float, float] | None:
        """(expected, low, high) at `step`, linear between fractions; None before the first fraction."""
        f = step / self.max_steps
        if f < self.fractions[0] - 1e-9:
            return None
        return tuple(float(np.interp(f, self.fractions, values)) for values in (self.expected, self.low, self.high))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, max_steps: int | None = None) -> LossBand:
        """The band in `path`; ConfigError when it is not a band, or was made for another number of steps."""
        try:
            data = json.loads(Path(path).read_text())
            band = cls(**data)
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"gate.band {path}: not a loss band ({type(err).__name__}: {err})") from None
        if band.format != BAND_FORMAT:
            raise ConfigError(f"gate.band {path}: format {band.format}, this Kiln reads {BAND_FORMAT}")
        lengths = {len(band.fractions), len(band.expected), len(band.low), len(band.high)}
        if len(lengths) != 1 or not band.fractions or list(band.fractions) != sorted(band.fractions):
            raise ConfigError(f"gate.band {path}: fractions, expected, low and high must be equally long, increasing")
        if max_steps is not None and band.max_steps != max_steps:
            raise ConfigError(f"gate.band {path} was made for a run of {band.max_steps} steps, this run has "
                              f"train.max_steps={max_steps}: export it again with --band-steps {max_steps}")
        return band


class LossGate:
    """Rank 0's judge: ``observe`` every logged train loss, ``judge`` at every evaluation point.

    The count of verdicts "behind" in a row starts at 0 in each process, so after a restart the
    gate needs ``stop_after`` more evaluations behind before it stops the run.
    """

    def __init__(self, section: GateSection, max_steps: int, log_every: int, journal: Journal):
        self.band = LossBand.load(section.band, max_steps)
        self.stop_after, self.journal = section.stop_after, journal
        self.window = window_steps(max_steps, log_every)
        self.points: deque[tuple[int, float]] = deque(maxlen=self.window)
        self.behind = 0

    def observe(self, step: int, loss: float) -> None:
        self.points.append((step, loss))

    def judge(self, step: int) -> str | None:
        """Journal the verdict at `step`; the reason to stop the run, or None."""
        expected = self.band.at(step)
        loss = smoothed_loss(list(self.points), step, self.window)
        if expected is None or loss is None:
            return None
        mean, low, high = expected
        verdict = "behind" if loss > high else "ahead" if loss < low else "on track"
        self.behind = self.behind + 1 if verdict == "behind" else 0
        self.journal.record("band", step=step, verdict=verdict, loss=round(loss, 4), expected=round(mean, 4),
                            low=round(low, 4), high=round(high, 4), behind=self.behind)
        if self.stop_after and self.behind >= self.stop_after:
            return (f"train loss behind the expected band for {self.behind} evaluations in a row (step {step}: "
                    f"{loss:.4f} > {high:.4f}, expected {mean:.4f}; gate.stop_after={self.stop_after})")
        return None


class BehindBand(Exception):
    """Raised by ``train`` after the gate stopped the run cleanly (checkpoint saved, logs closed)."""


def exit_status(reason: str) -> int:
    """The rank's exit status after the gate stopped the run. Under training.launch the reason is left in
    the launcher's file and the rank exits 0, since torchrun restarts ranks that exit non-zero (the
    launcher then exits GATE_EXIT_CODE); run alone, the rank exits GATE_EXIT_CODE itself."""
    path = os.environ.get(STOP_FILE_ENV)
    if path is None:
        return GATE_EXIT_CODE
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        Path(path).write_text(reason + "\n")
    return 0
