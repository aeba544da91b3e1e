"""Process health for training ranks: hang detection, preemption signals, and injected faults for tests.

``Watchdog``: a thread per rank that (1) fails the rank when no step completes within
``watchdog.timeout_s``, after dumping every thread's stack (faulthandler) to stderr and to
``<run_dir>/stacks/``; (2) publishes a heartbeat counter in the rendezvous store, so any rank can
tell within seconds, without a collective, whether every rank is still alive; (3) when another rank
reports a hang through the store, dumps its own stacks and fails too, so every rank's stack is on
record; (4) under torchrun, stops the rank when the launcher is gone: torchrun starts each rank in a
session of its own, so a SIGKILL of the launcher's process group leaves the ranks running, and a
relaunch would then train beside them. A C-level faulthandler timer backs the thread up for hangs that
never release the GIL.

``Preemption``: SIGTERM or SIGINT asks for a checkpoint and a clean exit at the next step boundary.
The rank that received it first checks the heartbeats (bounded by ``checkpoint.alive_check_s``):
if a rank is dead, the launcher is tearing the group down after a failure, so the rank exits at
once without touching a collective (``PeersLost``). Otherwise every rank agrees on the stop
through one small all-reduce per step.

``FaultPlan``: deterministic kills and hangs from ``KILN_FAULT_PLAN`` (tests and fire drills), e.g.
``kill_at_step=5@1,kill_during_save=12,hang_at_step=3@1,nan_grad_at_step=4@1`` (``@rank``, default 0).
Each fault fires once per run: a marker file in ``<run_dir>/faults/`` remembers it across restarts.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import WatchdogSection
from .journal import Journal

HEARTBEAT_S = 0.5
HANG_EXIT_CODE = 124  # the conventional "timed out" status
# The faulthandler timer (which needs no GIL) fires this long after the watchdog thread should have.
BACKSTOP_S = 30.0
# How long a rank that reported a hang waits for the others to dump their stacks before it exits.
PEER_DUMP_WAIT_S = 3 * HEARTBEAT_S
FAULT_PLAN_ENV = "KILN_FAULT_PLAN"


def connect_store(attempt: int) -> dist.Store | None:
    """A client of the rendezvous store torchrun (or rank 0) serves, keyed by restart attempt;
    None for a single process."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timedelta(seconds=30), wait_for_workers=False)
    return dist.PrefixStore(f"kiln/attempt_{attempt}", client)


class Watchdog:
    """Hang detection and heartbeats for one rank (see the module docstring)."""

    def __init__(self, cfg: WatchdogSection, rank: int, world_size: int, run_dir: Path, journal: Journal,
                 store: dist.Store | None):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.stacks_path = run_dir / "stacks" / f"attempt-{journal.attempt}-rank-{rank:05d}.txt"
        self.journal, self.store = journal, store
        self.launcher = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None  # torchrun's agent
        self.store_lost = False  # its host (rank 0, or torchrun's agent) is gone
        self.last_step: int | None = None
        self._deadline: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiln-watchdog", daemon=True)

    def start(self) -> None:
        """Arm the first-step timeout and start heartbeats."""
        self._arm(self.cfg.first_step_timeout_s)
        self._thread.start()

    def step_done(self, step: int) -> None:
        self.last_step = step
        self._arm(self.cfg.timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        faulthandler.cancel_dump_traceback_later()

    def _arm(self, timeout_s: float) -> None:
        if not self.cfg.timeout_s:
            return
        self._deadline = time.monotonic() + timeout_s
        # faulthandler writes to a file descriptor: the process's real stderr, not a replacement
        # such as pytest's or a notebook's capture, which has none.
        faulthandler.dump_traceback_later(timeout_s + BACKSTOP_S, exit=True, file=sys.__stderr__)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if self.launcher is not None and os.getppid() != self.launcher:
                self.journal.record("failure", step=self.last_step,
                                    cause=f"the launcher (pid {self.launcher}) is gone; stopping this rank")
                os._exit(1)
            if self.store is not None and not self.store_lost:
                try:
                    self.store.add(f"heartbeat/{self.rank}", 1)
                    if self.store.check(["hang"]):
                        peer = self.store.get("hang").decode()
                        self._fail(f"stopped because rank {peer} reported a hang", report=False)
                except (RuntimeError, OSError):
                    self.store_lost = True
            if self._deadline is not None and time.monotonic() > self._deadline:
                after = "the start" if self.last_step is None else f"step {self.last_step}"
                timeout = self.cfg.first_step_timeout_s if self.last_step is None else self.cfg.timeout_s
                self._fail(f"hang: no step completed within {timeout:g}s after {after}", report=True)

    def _fail(self, cause: str, report: bool) -> None:
        """Journal, dump every thread's stack, let the other ranks dump theirs, and exit."""
        self.journal.record("failure", step=self.last_step, cause=cause, stacks=str(self.stacks_path))
        print(f"[rank {self.rank}] {cause}; stacks of every thread follow (also in {self.stacks_path})",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        self.stacks_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stacks_path, "w") as out:
            out.write(f"rank {self.rank}: {cause}\n")
            out.flush()
            faulthandler.dump_traceback(file=out, all_threads=True)
        if report and self.store is not None and not self.store_lost:
            try:
                self.store.set("hang", str(self.rank))
                time.sleep(PEER_DUMP_WAIT_S)
            except (RuntimeError, OSError):
                pass
        sys.stderr.flush()
        os._exit(HANG_EXIT_CODE)

    def dead_ranks(self, wait_s: float) -> list[int]:
        """Ranks whose heartbeat does not move within ``wait_s`` (returns as soon as all have moved)."""
        if self.store is None:
            return []
        others = [r for r in range(self.world_size) if r != self.rank]
        if self.store_lost:
            return others
        try:
            before = [self.store.add(f"heartbeat/{r}", 0) for r in range(self.world_size)]
            deadline = time.monotonic() + wait_s
            while True:
                time.sleep(HEARTBEAT_S)
                stale = [r for r in range(self.world_size) if self.store.add(f"heartbeat/{r}", 0) == before[r]]
                if not stale or time.monotonic() >= deadline:
                    return stale
        except (RuntimeError, OSError):
            self.store_lost = True
            return others


class PeersLost(Exception):
    """A stop signal arrived while some rank is dead: the group cannot save, so this rank just exits."""

    def __init__(self, signal_name: str, dead: list[int]):
        super().__init__(f"{signal_name} received while rank(s) {dead} are not alive")
        self.signal_name, self.dead = signal_name, dead


class Preemption:
    """SIGTERM/SIGINT handling for the training loop (see the module docstring).

    A repeated SIGTERM is ignored (a scheduler and torchrun's agent may both send one; the agent's
    SIGKILL after its grace period is the hard stop); a second SIGINT raises KeyboardInterrupt.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, watchdog: Watchdog, alive_check_s: float, world_size: int):
        self.watchdog, self.alive_check_s, self.world_size = watchdog, alive_check_s, world_size
        self.received: str | None = None
        self._checked = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    def should_stop(self) -> bool:
        """Called by every rank at every step boundary: True on all ranks once any rank got a signal."""
        if self.received and not self._checked:
            dead = self.watchdog.dead_ranks(self.alive_check_s)
            if dead:
                raise PeersLost(self.received, dead)
            self._checked = True
        if self.world_size == 1:
            return self.received is not None
        flag = torch.tensor([int(self.received is not None)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


@dataclass(frozen=True)
class Fault:
    kind: str  # one of FaultPlan.KINDS
    step: int
    rank: int = 0


class FaultPlan:
    """Injected failures (``KILN_FAULT_PLAN``), each fired once per run on its rank.

    kill_at_step=N: SIGKILL after step N's update, before its checkpoint. kill_during_save=N: SIGKILL
    in the save of step N after the shard files are written and before the manifest (on rank 0 this
    leaves an incomplete checkpoint). hang_at_step=N: sleep forever after step N. preempt_at_step=N:
    what a scheduler's preemption notice does, SIGTERM to the launcher (under torchrun, this rank's
    parent) and to the ranks (here: this one, so the stop lands on step N exactly). nan_grad_at_step=N:
    a NaN in this rank's gradient of step N, before clipping (what the non-finite guard must catch).
    grad_spike_at_step=N: this rank's gradients of step N times 1e4, before clipping (a gradient-norm spike for
    the spike policy). kill_after_rollback=N: SIGKILL right after the spike policy's N-th rollback.
    """

    KINDS = ("kill_at_step", "kill_during_save", "hang_at_step", "preempt_at_step", "nan_grad_at_step",
             "grad_spike_at_step", "kill_after_rollback")

    def __init__(self, faults: list[Fault], marker_dir: Path, rank: int, journal: Journal):
        self.faults, self.marker_dir, self.rank, self.journal = faults, marker_dir, rank, journal

    @classmethod
    def from_env(cls, marker_dir: Path, rank: int, journal: Journal) -> FaultPlan:
        return cls(cls.parse(os.environ.get(FAULT_PLAN_ENV, "")), marker_dir, rank, journal)

    @classmethod
    def parse(cls, text: str) -> list[Fault]:
        faults = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            kind, _, value = item.partition("=")
            step, _, rank = value.partition("@")
            if kind not in cls.KINDS or not step.isdigit() or (rank and not rank.isdigit()):
                raise ValueError(f"{FAULT_PLAN_ENV}: cannot read {item!r}; expected KIND=STEP[@RANK] with KIND one "
                                 f"of {', '.join(cls.KINDS)}")
            faults.append(Fault(kind, int(step), int(rank or 0)))
        return faults

    def at_step(self, step: int) -> None:
        self._maybe_fire(step, ("kill_at_step", "hang_at_step", "preempt_at_step"))

    def after_backward(self, step: int, params) -> None:
        """nan_grad_at_step: poison this rank's share of the first gradient (its local shard under FSDP2);
        grad_spike_at_step: multiply this rank's shares of every gradient by 1e4."""
        for index, fault in enumerate(self.faults):
            if fault.kind in ("nan_grad_at_step", "grad_spike_at_step") and fault.step == step \
                    and fault.rank == self.rank and self._claim(index, fault):
                grads = [p.grad for p in params if p.grad is not None]
                locals_ = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
                if fault.kind == "nan_grad_at_step":
                    locals_[0].view(-1)[0] = float("nan")
                else:
                    for local in locals_:
                        local.mul_(1e4)

    def after_rollback(self, count: int) -> None:
        self._maybe_fire(count, ("kill_after_rollback",))

    def during_save(self, step: int) -> None:
        self._maybe_fire(step, ("kill_during_save",))

    def _maybe_fire(self, step: int, kinds: tuple[str, ...]) -> None:
        for index, fault in enumerate(self.faults):
            if fault.kind in kinds and fault.step == step and fault.rank == self.rank and self._claim(index, fault):
                self._fire(fault)

    def _fire(self, fault: Fault) -> None:
        if fault.kind == "preempt_at_step":
            if "TORCHELASTIC_RUN_ID" in os.environ:
                os.kill(os.getppid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.journal.record("failure", step=fault.step, cause=f"injected {fault.kind} ({FAULT_PLAN_ENV})")
        if fault.kind == "hang_at_step":
            while True:
                time.sleep(60)
        os.kill(os.getpid(), signal.SIGKILL)

    def _claim(self, index: int, fault: Fault) -> bool:
        """Create this fault's marker file; False when an earlier attempt already fired it."""
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(self.marker_dir / f"{index}-{fault.kind}-{fault.step}",
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True
