"""The loss-spike policy (``spike:``): judge every step against a rolling baseline, then skip it or roll back.

With ``spike.action`` ``skip`` or ``rollback`` the host reads two numbers a step, the loss summed over
ranks (the all-reduce the non-finite guard already needs) and the clip step's total gradient norm, in
one device-to-host copy before the optimizer step: the one host sync this policy adds. Every rank reads
the same all-reduced numbers, so every rank reaches the same verdict without another collective. A step is
a spike when its loss is above ``loss_factor`` x the mean loss of the last ``window`` steps that were not
spikes, or its gradient norm above ``grad_norm_factor`` x their mean gradient norm (the ``spike`` event says
which). Non-finite steps are the guard's (training.run.guard) and judge nothing.

- ``skip``: the step's update is dropped on the device, the way the guard drops a non-finite step.
- ``rollback``: every rank restores the newest complete checkpoint at least ``min_steps_back`` steps before
  the spike, and the loader continues after the spiking step's samples, so the global sample positions from
  the checkpoint's position to the end of the spiking step are skipped (the order stays a pure function of
  seed and position; only the position jumps). The target's manifest is rewritten with the new loader
  position and this policy's state (baseline, rollbacks, learning-rate scale), then newer checkpoints are
  deleted, so a kill and relaunch after the rollback resumes the same sequence (a manifest with more
  rollbacks outranks newer checkpoints: training.run.checkpoint.latest_complete). After ``max_rollbacks`` rollbacks the
  next spike fails the run (SpikeFailure). ``notify_command`` is run, and ``notify_url`` posted to, on each
  rollback and on that failure.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
import subprocess
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from ..config import SpikeSection
from ..data.loader import StreamingLoader
from .checkpoint import Checkpointer, TrainState, step_name
from .journal import Journal
from .watchdog import FaultPlan

log = logging.getLogger(__name__)


class SpikeFailure(RuntimeError):
    """A spike the policy may not act on: no rollback left, or no checkpoint far enough back."""


@dataclass(frozen=True)
class Spike:
    step: int
    trigger: str  # "loss" or "grad_norm"
    loss: float
    baseline_loss: float
    grad_norm: float
    baseline_grad_norm: float


class SpikePolicy:
    """The baseline and the rollbacks of one run; the same on every rank (all judge the same numbers)."""

    def __init__(self, cfg: SpikeSection, journal: Journal, is_main: bool):
        self.cfg, self.journal, self.is_main = cfg, journal, is_main
        self.active = cfg.action != "log"  # log: the journal's RunObserver judges logged losses, as before
        self.losses: deque[float] = deque(maxlen=cfg.window)
        self.grad_norms: deque[float] = deque(maxlen=cfg.window)
        self.rollbacks: list[dict] = []  # one record per rollback of the run, oldest first
        self.lr_scale_until = 0  # steps up to this one train at lr x spike.lr_scale

    # ---- state, kept in checkpoints

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "grad_norms": list(self.grad_norms), "rollbacks": self.rollbacks,
                "lr_scale_until": self.lr_scale_until}

    def load_state_dict(self, state: dict) -> None:
        self.losses = deque(state.get("losses", []), maxlen=self.cfg.window)
        self.grad_norms = deque(state.get("grad_norms", []), maxlen=self.cfg.window)
        self.rollbacks = list(state.get("rollbacks", []))
        self.lr_scale_until = state.get("lr_scale_until", 0)

    def lr_scale(self, step: int) -> float:
        return self.cfg.lr_scale if step <= self.lr_scale_until else 1.0

    # ---- detection

    def observe(self, step: int, loss_sum: torch.Tensor, ranks_x_micro: int, grad_norm: torch.Tensor) -> Spike | None:
        """The spike at ``step``, if it is one (journaled), else None (the step joins the baseline). Reads the
        loss (summed over ranks and micro-batches) and the gradient norm on the host: the policy's one sync."""
        if not self.active:
            return None
        loss_total, norm = torch.stack([loss_sum.float(), grad_norm.float()]).tolist()
        return self.judge(step, loss_total / ranks_x_micro, norm)

    def judge(self, step: int, loss: float, grad_norm: float) -> Spike | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return None  # the non-finite guard's case
        if len(self.losses) == self.cfg.window:
            baseline_loss, baseline_norm = statistics.fmean(self.losses), statistics.fmean(self.grad_norms)
            trigger = ("loss" if loss > self.cfg.loss_factor * baseline_loss
                       else "grad_norm" if grad_norm > self.cfg.grad_norm_factor * baseline_norm else None)
            if trigger is not None:
                spike = Spike(step, trigger, loss, baseline_loss, grad_norm, baseline_norm)
                if self.is_main:
                    self.journal.record("spike", step=step, trigger=trigger, loss=loss, baseline_loss=baseline_loss,
                                        grad_norm=grad_norm, baseline_grad_norm=baseline_norm, action=self.cfg.action)
                return spike
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)
        return None

    # ---- rollback

    def roll_back(self, spike: Spike, checkpointer: Checkpointer, model: nn.Module, optimizer: torch.optim.Optimizer,
                  loader: StreamingLoader, faults: FaultPlan) -> TrainState:
        """Every rank: restore the target checkpoint and skip the data since it (module docstring); returns
        the state to continue from. ``loader`` has consumed the spiking step."""
        if len(self.rollbacks) >= self.cfg.max_rollbacks:
            self._fail(spike, f"spike at step {spike.step} ({spike.trigger}) after {len(self.rollbacks)} rollbacks "
                              f"(spike.max_rollbacks={self.cfg.max_rollbacks}): the run keeps spiking. Look at the "
                              f"steps' data (python -m training.explain_step), lower the learning rate, or raise "
                              f"spike.max_rollbacks")
        found = checkpointer.target_before(spike.step - self.cfg.min_steps_back)
        if found is None:
            self._fail(spike, f"spike at step {spike.step} ({spike.trigger}): no complete checkpoint at step "
                              f"{spike.step - self.cfg.min_steps_back} or before (spike.min_steps_back="
                              f"{self.cfg.min_steps_back}) to roll back to; save more often (checkpoint.every_steps)")
        url, manifest = found
        skip_end = loader.position  # the end of the spiking step's samples
        rollbacks = self.rollbacks
        state = checkpointer.load(url, manifest, model, optimizer, loader)
        self.load_state_dict(state.spike)  # the baseline as it was at the target
        skip_start, loader.position = loader.position, skip_end
        record = {"step": spike.step, "trigger": spike.trigger, "target": step_name(state.step),
                  "target_step": state.step, "skipped_positions": [skip_start, skip_end]}
        self.rollbacks = [*rollbacks, record]
        if self.cfg.lr_scale_steps:
            self.lr_scale_until = state.step + self.cfg.lr_scale_steps
        state.loader, state.spike = loader.state_dict(), self.state_dict()
        retired = checkpointer.retarget(url, manifest, state)
        if self.is_main:
            event = self.journal.record("rollback", **record, rollbacks=len(self.rollbacks),
                                        max_rollbacks=self.cfg.max_rollbacks, lr_scale=self.cfg.lr_scale,
                                        lr_scale_until=self.lr_scale_until, retired=retired, checkpoint=url)
            self.notify(event)
        faults.after_rollback(len(self.rollbacks))
        return state

    def _fail(self, spike: Spike, message: str) -> None:
        if self.is_main:
            self.notify({"event": "failure", "step": spike.step, "cause": f"SpikeFailure: {message}"})
        raise SpikeFailure(message)

    def notify(self, event: dict) -> None:
        """Run ``spike.notify_command`` with ``event`` as JSON on stdin and POST it to ``spike.notify_url``; a
        failing hook is logged, never fatal."""
        body = json.dumps(event, default=str)
        if self.cfg.notify_command:
            try:
                done = subprocess.run(self.cfg.notify_command, shell=True, input=body, text=True,
                                      capture_output=True, timeout=60, check=False)
                if done.returncode:
                    log.warning("spike.notify_command exited %d: %s", done.returncode, done.stderr.strip()[-500:])
            except (OSError, subprocess.TimeoutExpired) as err:
                log.warning("spike.notify_command failed: %s", err)
        if self.cfg.notify_url:
            request = urllib.request.Request(self.cfg.notify_url, data=body.encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30):
                    pass
            except (OSError, urllib.error.URLError) as err:
                log.warning("spike.notify_url %s failed: %s", self.cfg.notify_url, err)
