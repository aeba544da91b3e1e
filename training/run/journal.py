"""The training journal: what happened to a run, as events in ``journal.jsonl`` and a readable ``training_log.md``.

A run's numbers go to metrics.jsonl; the journal holds the story around them, one JSON object a line:
``start``, ``init_from`` (the weights a new run started from), ``resume`` (from which checkpoint and
step), ``checkpoint`` (saved), ``failure`` (which rank and why), ``restart`` (the launcher started
the ranks again, and the cause as far as it is known), ``preempted`` (a signal, and whether a
checkpoint was saved), ``loss_spike``, ``throughput`` (a lasting change in tokens/s), ``band`` (at an
evaluation point: the loss on track, behind or ahead of the expected band, training.run.gate),
``gate_stop`` (the gate stopped the run), ``spike`` (the spike policy judged a step a spike: by its loss
or its gradient norm, and what it did) and ``rollback`` (to which checkpoint, the global sample positions
skipped, the learning-rate scale; training.run.spike), ``exclude_docs`` (at every start with
``data.exclude_docs``: the list's file, sha256 and ids, how many the train split holds, from which step),
``data_phase`` (a new data phase, ``data.from_step``, started from the checkpoint of its first step: its data,
seq_len and the tokens consumed before it) and ``finish``. A ``checkpoint`` event carries the save's
``seconds`` and its ``blocking_seconds`` (what training waited; less for an asynchronous save), which
``python -m training.plan --save-journal`` reads.
Every event carries the time, the attempt and the rank that wrote it. Each start of the ranks is a new
attempt, whether torchrun restarted them or the same command was launched again: rank 0 numbers it
one past the highest attempt in the journal (``next_attempt``) and tells the other ranks. At the start
of an attempt after the first, rank 0 writes a ``failure`` for the ranks of the previous attempt that
ended without a word (SIGKILL; ``ranks``, ``reconciled``), then the ``restart`` (``relaunch``: the
command was run again rather than torchrun restarting the ranks).

Rank 0 writes most events; any rank writes its own failure. Lines are appended with one write
each (O_APPEND), so ranks of one machine can share the file. ``training_log.md`` is rendered from
the whole file after every event rank 0 writes, so it is current even after a SIGKILL.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections import deque
from pathlib import Path

from ..config import JournalSection

JOURNAL_NAME = "journal.jsonl"
LOG_NAME = "training_log.md"
BAND_VERDICTS = ("on track", "behind", "ahead")  # a ``band`` event's verdict
SILENT = "SIGKILL, the out-of-memory killer or a lost machine"  # what stops a rank without a word


def utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def next_attempt(run_dir: str | Path) -> int:
    """The number of a new start of the run's ranks: one past the highest in its journal, 0 for a new run."""
    return 1 + max((e.get("attempt", 0) for e in read_events(Path(run_dir) / JOURNAL_NAME)), default=-1)


def restart_attempt() -> int:
    """How many times torchrun has restarted the ranks of this launch (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


def read_events(path: str | Path) -> list[dict]:
    """Every event of a journal file; a line that does not parse (cut short by a machine crash) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def blocking_save_seconds(events: list[dict]) -> float | None:
    """The median time training waited for one checkpoint save, over a journal's periodic saves (all saves
    when it has no periodic one); journals from before ``blocking_seconds`` was recorded give ``seconds``."""
    saves = [e for e in events if e["event"] == "checkpoint" and e.get("seconds") is not None]
    periodic = [e for e in saves if e.get("reason") == "periodic"] or saves
    if not periodic:
        return None
    return statistics.median(e.get("blocking_seconds", e["seconds"]) for e in periodic)


class Journal:
    """Appends events for one rank of one attempt; rank 0 also keeps training_log.md current."""

    def __init__(self, run_dir: str | Path, rank: int = 0, attempt: int | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / JOURNAL_NAME
        self.rank = rank
        self.attempt = restart_attempt() if attempt is None else attempt

    def record(self, event: str, **fields) -> dict:
        entry = {"time": utc_now(), "event": event, "attempt": self.attempt, "rank": self.rank, **fields}
        line = (json.dumps(entry, default=str) + "\n").encode()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if self.rank == 0:
            self.render()
        return entry

    def events(self) -> list[dict]:
        return read_events(self.path)

    def render(self) -> Path:
        out = self.run_dir / LOG_NAME
        tmp = out.with_name(f".{LOG_NAME}.tmp-{os.getpid()}")
        tmp.write_text(render_markdown(self.events(), self.run_dir.name))
        os.replace(tmp, out)
        return out

    def record_restart(self, relaunch: bool) -> None:
        """Rank 0, at the start of an attempt after the first: a ``failure`` for the previous attempt's
        ranks that stopped without a word (so the log counts it), then the ``restart`` and its cause."""
        previous = self._previous()
        silent = self._silent(previous)
        if silent:
            step = max((e["step"] for e in previous if isinstance(e.get("step"), int)), default=None)
            self.record("failure", attempt=self.attempt - 1, ranks=silent, step=step, reconciled=True,
                        cause=f"stopped without a word ({SILENT}); found by attempt {self.attempt}")
        self.record("restart", cause=self.restart_cause(), relaunch=relaunch)

    def restart_cause(self) -> str:
        """Why the previous attempt ended, from what its ranks wrote before they stopped (in time
        order); ranks that wrote nothing were killed outright."""
        previous = self._previous()
        finished = next((e for e in previous if e["event"] == "finish"), None)
        if finished is not None:
            return f"attempt {self.attempt - 1} ended: {finished['status']}"
        parts = [f"rank {rank}: {cause}" for rank, cause in self._reports(previous)]
        silent = self._silent(previous)
        if silent or not parts:
            who = f"rank(s) {silent}" if silent else "the ranks"
            parts.append(f"{who} reported nothing ({SILENT})")
        return "; ".join(parts)

    def _previous(self) -> list[dict]:
        return [e for e in self.events() if e.get("attempt") == self.attempt - 1]

    @staticmethod
    def _reports(previous: list[dict]) -> list[tuple[int, str]]:
        """(rank, cause) of what the ranks of an attempt wrote themselves before they stopped."""
        return [(e["rank"], e.get("cause") or e.get("signal")) for e in previous
                if e["event"] in ("failure", "preempted") and not e.get("reconciled")]

    def _silent(self, previous: list[dict]) -> list[int]:
        """Ranks of an attempt that neither finished nor reported why they stopped."""
        started = next((e for e in previous if e["event"] == "start"), None)
        if started is None or any(e["event"] == "finish" for e in previous):
            return []
        return sorted(set(range(started["world_size"])) - {rank for rank, _ in self._reports(previous)})


class RunObserver:
    """Watches rank 0's logged metrics and journals loss spikes and lasting throughput changes.

    The baseline is the last ``window`` logged values. A loss above ``loss_spike_factor`` x the
    baseline mean is a spike (the spike stays out of the baseline). Throughput is judged on the
    median of the newest ``window // 4`` (at least 3) values against the baseline median, so one slow
    step is not an event; after a change, the baseline starts again at the new level. ``judge_loss``
    false: losses are the spike policy's (training.run.spike, which journals every step's), only
    throughput is judged here.
    """

    def __init__(self, cfg: JournalSection, journal: Journal, judge_loss: bool = True):
        self.cfg, self.journal, self.judge_loss = cfg, journal, judge_loss
        self.losses: deque[float] = deque(maxlen=cfg.window)
        self.speeds: deque[float] = deque(maxlen=cfg.window)
        self.recent = max(3, cfg.window // 4)

    def observe(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self.judge_loss and len(self.losses) >= min(5, self.cfg.window):
            baseline = statistics.fmean(self.losses)
            if loss > self.cfg.loss_spike_factor * baseline:
                self.journal.record("loss_spike", step=step, loss=round(loss, 4), baseline=round(baseline, 4))
                return
        self.losses.append(loss)
        self._observe_speed(step, tokens_per_s)

    def _observe_speed(self, step: int, tokens_per_s: float) -> None:
        self.speeds.append(tokens_per_s)
        if len(self.speeds) < self.recent * 2:
            return
        values = list(self.speeds)
        before = statistics.median(values[:-self.recent])
        now = statistics.median(values[-self.recent:])
        change = (now - before) / before if before else 0.0
        if abs(change) >= self.cfg.throughput_change:
            self.journal.record("throughput", step=step, tokens_per_s=round(now, 1), before=round(before, 1),
                                change=round(change, 3))
            self.speeds = deque(values[-self.recent:], maxlen=self.cfg.window)


# --------------------------------------------------------------------------- training_log.md

def _describe(event: dict) -> str:
    kind = event["event"]
    if kind == "start":
        data = ", ".join(f"{d['path']} v{d['version']}" for d in event.get("data", []))
        return (f"started on {event['world_size']} rank(s), {event.get('max_steps')} steps planned; data: {data}; "
                f"checkpoints: {event.get('checkpoints') or 'off'}")
    if kind == "resume":
        return (f"resumed from {event['checkpoint']} (step {event['step']}, {event['tokens']:,} tokens; "
                f"saved on {event['saved_world_size']} rank(s), now {event['world_size']})")
    if kind == "init_from":
        return f"weights initialised from {event['source']} (fresh optimizer and schedule)"
    if kind == "restart":
        who = "relaunched" if event.get("relaunch") else "launcher restarted the ranks"
        return f"{who} (attempt {event['attempt']}); cause: {event['cause']}"
    if kind == "checkpoint":
        if event.get("reconciled"):
            return (f"checkpoint {event['name']} found complete at the restart ({event['reason']}, "
                    f"{event['bytes'] / 1e6:.1f} MB); the attempt that saved it stopped before journaling it")
        return (f"checkpoint {event['name']} saved ({event['reason']}, {event['bytes'] / 1e6:.1f} MB, "
                f"{event['seconds']:.1f} s)")
    if kind == "failure":
        if "ranks" in event:
            return f"**failure** of attempt {event['attempt']} on rank(s) {event['ranks']}: {event['cause']}"
        return f"**failure** on rank {event['rank']}: {event['cause']}"
    if kind == "preempted":
        saved = f"checkpoint at step {event['saved_step']}" if event.get("saved_step") else "no checkpoint"
        return f"{event['signal']} received: {saved}; {event.get('detail', '')}".rstrip("; ")
    if kind == "loss_spike":
        return f"loss spike: {event['loss']} against a baseline of {event['baseline']}"
    if kind == "throughput":
        return (f"throughput {event['change']:+.0%}: {event['before']:,.0f} -> {event['tokens_per_s']:,.0f} "
                f"tokens/s")
    if kind == "band":
        return (f"loss {event['loss']:.4f} {event['verdict']} (band {event['low']:.4f}-{event['high']:.4f}, "
                f"expected {event['expected']:.4f})" + (f"; behind {event['behind']} in a row" if event['behind'] else ""))
    if kind == "skipped":
        parts = [f"step(s) {event['nonfinite']} not applied (NaN/Inf loss or gradient norm)"] if event["nonfinite"] else []
        parts += [f"step(s) {event['requested']} skipped as train.skip_steps asks"] if event["requested"] else []
        parts += [f"step(s) {event['spikes']} skipped as spikes"] if event.get("spikes") else []
        return "; ".join(parts) + f"; {event['total']} skipped in this attempt"
    if kind == "spike":
        return (f"**spike** by {event['trigger']}: loss {event['loss']:.4f} (baseline {event['baseline_loss']:.4f}), "
                f"gradient norm {event['grad_norm']:.4g} (baseline {event['baseline_grad_norm']:.4g}); {event['action']}")
    if kind == "rollback":
        start, end = event["skipped_positions"]
        scaled = (f"; learning rate x{event['lr_scale']} up to step {event['lr_scale_until']}"
                  if event["lr_scale_until"] > event["target_step"] else "")
        return (f"**rollback** {event['rollbacks']} of {event['max_rollbacks']} to {event['target']} (step "
                f"{event['target_step']}); global sample positions [{start}, {end}) skipped{scaled}; "
                f"retired: {', '.join(event['retired']) or 'none'}")
    if kind == "gate_stop":
        return f"**stopped by the loss gate**: {event['reason']}"
    if kind == "exclude_docs":
        missing = (f"; {event['not_found']} not in the train split ({', '.join(event['not_found_ids'])}"
                   f"{', ...' if event['not_found'] > len(event['not_found_ids']) else ''})" if event["not_found"] else "")
        context = ("; later documents of those samples still attend to them (model.attn_uses_sequence_id is off)"
                   if not event["document_attention"] else "")
        return (f"data.exclude_docs {event['file']} (sha256 {event['sha256'][:12]}, {event['ids']} ids): "
                f"{event['found']} found in {event['samples']} samples (traced from {event['traced_from']}), their "
                f"tokens carry no loss from step {event['step'] + 1}{missing}{context}")
    if kind == "data_phase":
        data = ", ".join(f"{d['path']} v{d['version']}" for d in event["data"])
        return (f"new data phase from step {event['step']}: {data} at seq_len {event['seq_len']}, its order from "
                f"position 0, after {event['tokens_before']:,} tokens")
    if kind == "finish":
        return f"finished: {event['status']}"
    return json.dumps({k: v for k, v in event.items() if k not in ("time", "event", "attempt", "rank", "step")})


def render_markdown(events: list[dict], run_name: str) -> str:
    """The journal as a page: a summary of failures, restarts and checkpoints, then every event in order."""
    count = {kind: sum(e["event"] == kind for e in events)
             for kind in ("failure", "checkpoint", "loss_spike", "spike", "preempted", "gate_stop")}
    relaunches = sum(e["event"] == "restart" and bool(e.get("relaunch")) for e in events)
    count["restart"] = sum(e["event"] == "restart" for e in events) - relaunches
    skipped = sum(len({*e["nonfinite"], *e["requested"], *e.get("spikes", [])}) for e in events if e["event"] == "skipped")
    rollbacks = sum(e["event"] == "rollback" for e in events)
    verdicts = [e["verdict"] for e in events if e["event"] == "band"]
    resumes = [e for e in events if e["event"] == "resume"]
    last_step = max((e["step"] for e in events if isinstance(e.get("step"), int)), default=0)
    first, latest = (events[0]["time"], events[-1]["time"]) if events else ("-", "-")
    lines = [
        f"# Training log: {run_name}",
        "",
        f"- events: {len(events)}, from {first} to {latest}",
        f"- furthest step recorded: {last_step}",
        f"- failures: {count['failure']}, restarts by the launcher: {count['restart']}, "
        f"resumptions: {len(resumes)}, preemptions: {count['preempted']}, relaunches: {relaunches}",
        f"- checkpoints saved: {count['checkpoint']}, loss spikes: {count['loss_spike'] + count['spike']}, steps skipped: {skipped}"
        + (f", rollbacks: {rollbacks}" if rollbacks else ""),
        *([f"- against the expected loss band: {', '.join(f'{verdicts.count(v)} {v}' for v in BAND_VERDICTS)}"
           + ("; **stopped by the loss gate**" if count["gate_stop"] else "")] if verdicts else []),
        "",
        "| time (UTC) | attempt | step | event |",
        "| --- | --- | --- | --- |",
    ]
    for event in events:
        step = event.get("step", "")
        text = _describe(event).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {event['time']} | {event.get('attempt', '')} | {step} | {text} |")
    return "\n".join(lines) + "\n"
