"""The non-finite guard: a step whose loss or gradient norm is NaN/Inf on any rank is applied on no rank.

The verdict is a 0-dim bool tensor computed on the device from values every rank already shares (the
all-reduced loss and the clip step's total gradient norm), and the optimizer obeys it on the device
(training.optim), so the step never waits for the host. The host reads the verdicts at the next logging
point, where it reads the loss anyway: it counts the skips, journals them (``skipped`` events) and fails
the run after ``train.max_skipped_steps`` skipped steps in a row. ``train.skip_steps`` skips chosen
steps the same way, and so does a step the spike policy (training.run.spike, ``spike.action: skip``) judged
a spike.
"""
from __future__ import annotations

import torch

from .journal import Journal


class TooManySkippedSteps(RuntimeError):
    """Skipped steps in a row reached ``train.max_skipped_steps``."""


class NonFiniteGuard:
    def __init__(self, max_skipped: int, skip_steps: list[int], journal: Journal, is_main: bool):
        self.max_skipped, self.skip_steps = max_skipped, set(skip_steps)
        self.journal, self.is_main = journal, is_main
        self.total = 0  # steps skipped so far in this attempt (settled ones)
        self.in_a_row = 0
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, non-finite verdict), not yet read
        self._spikes: list[int] = []  # steps skipped as spikes, not yet journaled

    def verdict(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, spike: bool = False) -> torch.Tensor:
        """True (on the device) when step ``step`` must not be applied; ``loss`` and ``grad_norm`` must
        be the same on every rank (all-reduced), so every rank reaches the same verdict. ``spike``: the spike
        policy, which read the same numbers, skips this step."""
        nonfinite = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        self._pending.append((step, nonfinite))
        if spike:
            self._spikes.append(step)
        if step in self.skip_steps or spike:
            return torch.ones_like(nonfinite)
        return nonfinite

    def settle(self) -> None:
        """Read the pending verdicts (one host sync), journal the skipped steps, and raise
        TooManySkippedSteps after ``max_skipped`` in a row."""
        if not self._pending:
            return
        steps = [step for step, _ in self._pending]
        flags = torch.stack([flag for _, flag in self._pending]).tolist()
        self._pending = []
        nonfinite = [step for step, bad in zip(steps, flags) if bad]
        requested = [step for step in steps if step in self.skip_steps]
        spikes, self._spikes = self._spikes, []
        too_many = None  # the step where the run of skips reached the limit
        for step in steps:
            skipped = step in nonfinite or step in requested or step in spikes
            self.in_a_row = self.in_a_row + 1 if skipped else 0
            self.total += skipped
            if self.in_a_row >= self.max_skipped and too_many is None:
                too_many = step
        if self.is_main and (nonfinite or requested or spikes):
            self.journal.record("skipped", step=steps[-1], nonfinite=nonfinite, requested=requested,
                                spikes=spikes, total=self.total)
        if too_many is not None:
            raise TooManySkippedSteps(
                f"{self.max_skipped} steps in a row skipped, up to step {too_many} (train.max_skipped_steps): the "
                f"loss or gradient norm stayed NaN/Inf and the weights have not changed since step "
                f"{too_many - self.max_skipped}. Lower the learning rate, or find the data of these steps "
                f"(logging.sample_ledger) and step over it with train.skip_steps")
