"""training.run.journal: events in, training_log.md out; loss spikes, throughput changes, band verdicts; restart causes."""
from __future__ import annotations

from training.config import JournalSection
from training.run.journal import (JOURNAL_NAME, LOG_NAME, Journal, RunObserver, blocking_save_seconds, next_attempt,
                                  read_events)


def test_events_append_per_rank_and_render_a_log(tmp_path):
    rank0, rank1 = Journal(tmp_path, rank=0, attempt=0), Journal(tmp_path, rank=1, attempt=0)
    rank0.record("start", world_size=2, max_steps=10, data=[{"path": "s3://b/web", "version": 3}], checkpoints="ck")
    rank0.record("checkpoint", step=4, name="step-00000004", url="ck/step-00000004", reason="periodic",
                 bytes=2_500_000, seconds=1.25, removed=[])
    rank1.record("failure", step=5, cause="injected kill_at_step (KILN_FAULT_PLAN)")
    rank0.record("failure", step=5, cause="RuntimeError: Connection closed by peer")
    with (tmp_path / JOURNAL_NAME).open("a") as out:
        out.write('{"time": "torn\n')  # a line a machine crash cut short
    restarted = Journal(tmp_path, rank=0, attempt=1)
    restarted.record("restart", cause=restarted.restart_cause())
    restarted.record("resume", step=4, checkpoint="ck/step-00000004", tokens=4096, saved_world_size=2, world_size=4)
    restarted.record("finish", step=10, status="FINISHED")

    events = read_events(tmp_path / JOURNAL_NAME)
    assert [e["event"] for e in events] == ["start", "checkpoint", "failure", "failure", "restart", "resume",
                                            "finish"]
    assert events[4]["cause"] == ("rank 1: injected kill_at_step (KILN_FAULT_PLAN); "
                                  "rank 0: RuntimeError: Connection closed by peer")
    log = (tmp_path / LOG_NAME).read_text()
    assert log.startswith(f"# Training log: {tmp_path.name}")
    assert "failures: 2, restarts by the launcher: 1, resumptions: 1" in log
    assert "checkpoint step-00000004 saved (periodic, 2.5 MB, 1.2 s)" in log
    assert "**failure** on rank 1: injected kill_at_step" in log
    assert "resumed from ck/step-00000004 (step 4, 4,096 tokens; saved on 2 rank(s), now 4)" in log
    assert "data: s3://b/web v3" in log and "finished: FINISHED" in log


def test_a_rank_killed_outright_is_named_beside_the_peers_it_broke(tmp_path):
    Journal(tmp_path, rank=0, attempt=0).record("start", world_size=3, max_steps=10, data=[], checkpoints=None)
    Journal(tmp_path, rank=0, attempt=0).record("failure", step=7, cause="RuntimeError: Connection closed by peer")
    assert Journal(tmp_path, rank=0, attempt=1).restart_cause() == (
        "rank 0: RuntimeError: Connection closed by peer; rank(s) [1, 2] reported nothing "
        "(SIGKILL, the out-of-memory killer or a lost machine)")


def test_attempts_number_every_start_and_a_silent_end_is_journaled_as_a_failure(tmp_path):
    """A relaunch after every rank was SIGKILLed at once (nothing written) records the failure for the
    previous attempt, then the restart; an attempt that finished is no failure; a lost checkpoint line
    is journaled without timings, which the save planner leaves out."""
    assert next_attempt(tmp_path) == 0
    Journal(tmp_path, rank=0, attempt=0).record("start", world_size=2, max_steps=10, data=[], checkpoints="ck")
    Journal(tmp_path, rank=0, attempt=0).record("checkpoint", step=3, name="step-00000003", url="ck", reason="periodic",
                                                bytes=1e6, seconds=2.0, blocking_seconds=1.0, removed=[])
    assert next_attempt(tmp_path) == 1
    relaunched = Journal(tmp_path, rank=0, attempt=1)
    relaunched.record_restart(relaunch=True)
    relaunched.record("checkpoint", step=6, name="step-00000006", url="ck", reason="periodic", bytes=1e6,
                      seconds=None, blocking_seconds=None, removed=[], reconciled=True)
    relaunched.record("start", world_size=2, max_steps=10, data=[], checkpoints="ck")
    relaunched.record("finish", step=10, status="FINISHED")
    events = read_events(tmp_path / JOURNAL_NAME)
    failure, restart = events[2], events[3]
    assert (failure["event"], failure["attempt"], failure["ranks"], failure["step"]) == ("failure", 0, [0, 1], 3)
    assert restart["relaunch"] and restart["cause"].startswith("rank(s) [0, 1] reported nothing (SIGKILL")
    log = (tmp_path / LOG_NAME).read_text()
    assert "failures: 1, restarts by the launcher: 0, resumptions: 0, preemptions: 0, relaunches: 1" in log
    assert "**failure** of attempt 0 on rank(s) [0, 1]: stopped without a word (SIGKILL" in log
    assert "relaunched (attempt 1); cause: rank(s) [0, 1]" in log
    assert "checkpoint step-00000006 found complete at the restart" in log
    assert blocking_save_seconds(events) == 1.0
    again = Journal(tmp_path, rank=0, attempt=next_attempt(tmp_path))
    again.record_restart(relaunch=True)
    assert again.attempt == 2 and again.events()[-1]["cause"] == "attempt 1 ended: FINISHED"
    assert sum(e["event"] == "failure" for e in again.events()) == 1


def test_observer_reports_a_loss_spike_and_a_lasting_throughput_change(tmp_path):
    journal = Journal(tmp_path, rank=0, attempt=0)
    observer = RunObserver(JournalSection(window=8, loss_spike_factor=1.5, throughput_change=0.3), journal)
    for step in range(1, 11):
        observer.observe(step, loss=4.0 - 0.01 * step, tokens_per_s=1000.0 + step)
    observer.observe(11, loss=9.0, tokens_per_s=1000.0)  # a spike; one slow step is not a change
    for step in range(12, 20):
        observer.observe(step, loss=3.8, tokens_per_s=600.0)  # a lasting slowdown
    events = read_events(tmp_path / JOURNAL_NAME)
    spikes = [e for e in events if e["event"] == "loss_spike"]
    assert [(e["step"], e["loss"]) for e in spikes] == [(11, 9.0)]
    changes = [e for e in events if e["event"] == "throughput"]
    assert len(changes) == 1 and changes[0]["tokens_per_s"] == 600.0 and changes[0]["change"] < -0.3
    assert "throughput -40%" in (tmp_path / LOG_NAME).read_text()


def test_band_verdicts_and_a_gate_stop_are_summarised_and_blocking_saves_read_back(tmp_path):
    journal = Journal(tmp_path, rank=0, attempt=0)
    for step, verdict, loss, behind in ((4, "on track", 3.9, 0), (6, "behind", 4.6, 1), (8, "behind", 4.7, 2)):
        journal.record("band", step=step, verdict=verdict, loss=loss, expected=4.0, low=3.8, high=4.2, behind=behind)
    journal.record("checkpoint", step=8, name="step-00000008", url="ck", reason="gate", bytes=1e6, seconds=2.0,
                   blocking_seconds=2.0, removed=[])
    journal.record("gate_stop", step=8, reason="train loss behind the expected band for 2 evaluations in a row")
    log = (tmp_path / LOG_NAME).read_text()
    assert "against the expected loss band: 1 on track, 2 behind, 0 ahead; **stopped by the loss gate**" in log
    assert "loss 4.7000 behind (band 3.8000-4.2000, expected 4.0000); behind 2 in a row" in log
    assert "**stopped by the loss gate**: train loss behind" in log
    events = read_events(tmp_path / JOURNAL_NAME)
    assert blocking_save_seconds(events) == 2.0  # no periodic save: every save counts
    events.append({"event": "checkpoint", "reason": "periodic", "seconds": 9.0, "blocking_seconds": 0.5})
    events.append({"event": "checkpoint", "reason": "periodic", "seconds": 7.0})  # an older journal: seconds
    assert blocking_save_seconds(events) == 3.75 and blocking_save_seconds([]) is None
