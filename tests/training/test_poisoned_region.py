"""A poisoned region in the demo's ETL-produced dataset, defended by the spike policy (``spike.action:
rollback``) and traced by ``python -m training.explain_step --spiked``.

The poison: the samples the global order puts at step SPIKE get random tokens in place of most of their
documents' tokens (EOS tokens stay where they were, so the provenance table's document spans still hold;
each sample keeps one document clean, so the planted documents share their samples with clean ones). A
tiny model learns the clean text first. Then:
- the defended run rolls back over the poison by itself, journals the rollback and the skipped positions,
  and ends with an eval loss within 2% of a run on the clean dataset;
- the same run, SIGKILLed right after its rollback and launched again, ends with bitwise the same weights;
- explain_step on the spike step, with the ledger's document losses, ranks the planted documents first.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from shards import MDSReader, read_manifest
from shards.manifest import content_hash, version_path, write_manifest
from shards.mds import MDSWriter, read_index, stored_basename
from shards.provenance import read_segments
from tests.training.subprocess_env import child_env, finish, start_launch, train_here
from training.run.journal import read_events
from training.run.ledger import step_records
from training.weights.checkpoint_reader import read_model_state

STEPS, SPIKE, BATCH, EVERY = 60, 41, 8, 5
CONFIG = f"""\
    output_dir: runs
    model: {{preset: tiny, overrides: {{d_model: 64, n_heads: 2, n_layers: 1, max_seq_len: 128, vocab_size: 512}}}}
    data: {{datasets: [{{path: clean}}], num_workers: 0}}
    train: {{max_steps: {STEPS}, global_batch_size: {BATCH}, micro_batch_size: {BATCH}}}
    optimizer: {{lr: 1.0e-2}}
    schedule: {{warmup_steps: 2, decay: cosine}}
    checkpoint: {{every_steps: {EVERY}, keep_last: 3}}
    eval: {{every_steps: {STEPS}, batches: 4}}
    spike: {{window: 10, loss_factor: 1.3}}
    logging: {{every_steps: 10, ledger_document_losses: true, progress_bar: false, mlflow: false, plot: false}}
    """
DEFENDED = ["data.datasets=[{path: poisoned}]", "spike.action=rollback"]


def plant_poison(clean: Path, poisoned: Path, sample_ids: list[int]) -> tuple[set[str], int]:
    """A copy of the dataset ``clean`` whose train samples ``sample_ids`` hold random tokens in place of all
    but one of their documents (the shortest stays clean; a sample of one document is poisoned whole), its
    shards and manifest rewritten as the ETL writes them; returns the planted documents' ids and spans."""
    shutil.copytree(clean, poisoned, symlinks=False)
    manifest = read_manifest(version_path(str(poisoned), 1))
    split_dir = poisoned / "v=1" / "train"
    reader = MDSReader(str(clean / "v=1" / "train"))
    samples = [reader[i] for i in range(len(reader))]
    keys = {i: (int(samples[i]["bucket"]), int(samples[i]["bucket_index"])) for i in sample_ids}
    segments = read_segments(manifest, "train", keys.values())
    eos, rng, planted, spans_planted = manifest.extra["eos_token_id"], np.random.default_rng(0), set(), 0
    for i in sample_ids:
        tokens = np.array(samples[i]["tokens"])
        spans = segments[keys[i]]
        keep = min(spans, key=lambda s: s.length) if len(spans) > 1 else None
        for span in spans:
            if span is keep:
                continue
            window = tokens[span.sample_offset:span.sample_offset + span.length]
            window[window != eos] = rng.integers(1, manifest.vocab_size, int((window != eos).sum()))
            planted.add(span.doc_id)
            spans_planted += 1
        samples[i] = {**samples[i], "tokens": tokens}
    entry = read_index(str(split_dir))["shards"][0]
    shutil.rmtree(split_dir)
    with MDSWriter(str(split_dir), dict(zip(entry["column_names"], entry["column_encodings"])),
                   compression=entry["compression"], hashes=entry["hashes"], size_limit=entry["size_limit"]) as out:
        for sample in samples:
            out.write(sample)

    def shard_sha256(split: str) -> list[str]:
        index = read_index(str(poisoned / "v=1" / split))
        return [hashlib.sha256((poisoned / "v=1" / split / stored_basename(e)).read_bytes()).hexdigest()
                for e in index["shards"]]

    manifest = replace(manifest, content_hash=content_hash(manifest.extra["columns"],
                                                          {s: shard_sha256(s) for s in manifest.splits}))
    (poisoned / "v=1" / "manifest.json").unlink()
    write_manifest(str(poisoned), manifest)
    return planted, spans_planted


@pytest.fixture(scope="module")
def runs(demo_etl, tmp_path_factory) -> dict:
    """The clean run (in this process), the killed launch started beside it, then the defended run."""
    work = tmp_path_factory.mktemp("poisoned")
    shutil.copytree(demo_etl["etl"] / "dataset", work / "clean")
    (work / "train.yaml").write_text(textwrap.dedent(CONFIG))
    clean = train_here(work, "name=clean", KILN_FAULT_PLAN="")
    samples = [r["sample_id"] for r in step_records(clean, SPIKE)[0]]
    planted, planted_spans = plant_poison(work / "clean", work / "poisoned", samples)
    killed = start_launch(work, "killed", DEFENDED, nproc=1, KILN_FAULT_PLAN="kill_after_rollback=1")
    try:
        defended = train_here(work, "name=defended", *DEFENDED, KILN_FAULT_PLAN="")
        finish(killed, succeeds=False)
    finally:
        if killed[0].poll() is None:
            killed[0].kill()
    return {"work": work, "clean": clean, "defended": defended, "killed": killed, "planted": planted,
            "planted_spans": planted_spans}


def eval_loss(run: Path) -> float:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]["eval_loss"]


def test_the_run_rolls_back_over_the_poison_by_itself_and_ends_near_the_clean_run(runs):
    events = read_events(runs["defended"] / "journal.jsonl")
    [spike] = [e for e in events if e["event"] == "spike"]
    assert (spike["step"], spike["trigger"], spike["action"]) == (SPIKE, "loss", "rollback")
    [rollback] = [e for e in events if e["event"] == "rollback"]
    target = (SPIKE - 1) // EVERY * EVERY  # the newest checkpoint at least one step back
    assert (rollback["target_step"], rollback["skipped_positions"]) == (target, [target * BATCH, SPIKE * BATCH])
    assert events[-1]["event"] == "finish" and events[-1]["step"] == STEPS
    log = (runs["defended"] / "training_log.md").read_text()
    assert f"[{target * BATCH}, {SPIKE * BATCH}) skipped" in log
    assert abs(eval_loss(runs["defended"]) / eval_loss(runs["clean"]) - 1) < 0.02


def test_killed_during_the_recovery_it_resumes_to_the_same_weights(runs):
    killed = runs["killed"][1]
    assert [e["event"] for e in read_events(killed / "journal.jsonl")][-1] == "failure"
    finish(start_launch(runs["work"], "killed", DEFENDED, nproc=1, KILN_FAULT_PLAN=""))
    mine, theirs = (read_model_state(str(run / "checkpoints"))[1] for run in (killed, runs["defended"]))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_explain_step_ranks_the_planted_documents_first(runs):
    """As typed, from the training folder: the top K spans, K the planted spans, are the planted documents',
    which share their samples with clean ones."""
    proc = subprocess.run([sys.executable, "-m", "training.explain_step", "runs/defended", "--step", str(SPIKE),
                           "--spiked", "--top", str(runs["planted_spans"]), "--json"],
                          cwd=runs["work"], env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["spiked"] and report["document_losses"]
    assert {d["doc_id"] for d in report["documents"]} == runs["planted"]
    shared = [s for s in report["samples"] if s["documents"] > 1]
    assert shared and report["documents_total"] > len(runs["planted"])
    # without --spiked: the samples the run kept for that step, and a pointer to --spiked
    plain = subprocess.run([sys.executable, "-m", "training.explain_step", "runs/defended", "--step", str(SPIKE)],
                           cwd=runs["work"], env=child_env(), capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "rolled back (1 time(s)): --spiked shows the samples it spiked on" in plain.stdout
