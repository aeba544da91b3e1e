"""``data.exclude_docs``: documents named by id carry no loss, without rewriting a shard.

The dataset is laid out as the ETL builds one (tests.training.token_datasets.write_traced_dataset): documents
packed into samples, each sample keyed to the provenance table that maps its tokens back to document ids.
Some documents are planted (random tokens, ids ``bad/N``) and listed in the exclude file, with an id the
dataset does not hold. Each run trains one epoch with document-aware attention and the ledger's document
losses, so the ledger shows, for every sample, which tokens were excluded and which document spans had a loss.
The 2-rank run is launched as a user would (`python -m training.launch`) while the others run on one rank in
this process.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import deltalake
import fsspec
import numpy as np
import pytest

from shards.config import ConfigError
from shards.mds import MDSReader
from shards.provenance import arrow_dataset
from tests.training.subprocess_env import child_env, train_here
from tests.training.token_datasets import VOCAB, write_token_dataset, write_traced_dataset
from training.data.exclude import read_exclude_list
from training.launch import main as launch_main
from training.run.journal import read_events
from training.run.ledger import token_runs

GLOBAL_BATCH, SEQ_LEN = 4, 16


def documents(seed: int) -> dict[str, np.ndarray]:
    """80 documents of 3 to 13 tokens: every seventh one planted (random tokens, ``bad/N``; ``seed`` draws
    them), the others counting up. The same ids and lengths for every seed."""
    lengths = np.random.default_rng(0).integers(3, 14, 80)
    noise = np.random.default_rng(seed)
    return {(f"bad/{i}" if i % 7 == 3 else f"web/{i}"):
            (noise.integers(1, VOCAB, n) if i % 7 == 3 else 1 + (np.arange(n) + 13 * i) % (VOCAB - 1))
            for i, n in enumerate(lengths)}


PLANTED = sorted(doc for doc in documents(0) if doc.startswith("bad/"))
NOT_IN_DATA = "bad/never"


def write_config(work: Path, steps: int) -> None:
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 16, n_heads: 2, n_layers: 1, max_seq_len: {SEQ_LEN},
                 attn_uses_sequence_id: true}}}}
        data: {{datasets: [{{path: data}}], num_workers: 0, shuffle_window_shards: 2, eval_split: null,
                exclude_docs: planted.txt}}
        train: {{max_steps: {steps}, global_batch_size: {GLOBAL_BATCH}, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        logging: {{every_steps: 1, ledger_document_losses: true, progress_bar: false, mlflow: false, plot: false}}
        """))


def write_list(path: Path, ids: list[str]) -> None:
    path.write_text("# planted by the test\n" + "\n".join(ids) + "\n\n")


def planted_segments(work: Path, dataset: str = "data") -> dict[int, list[tuple[int, int, str]]]:
    """Sample index -> the ``(offset, length, doc id)`` of planted documents in it, read straight from the
    provenance table and the shards' keys."""
    provenance = deltalake.DeltaTable(str(work / f"{dataset}-etl" / "tokenize" / "provenance"))
    rows = arrow_dataset(provenance).to_table().to_pylist()
    by_key: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
    for row in rows:
        if row["doc_id"].startswith("bad/"):
            by_key.setdefault((row["bucket"], row["sample_index"]), []).append(
                (row["sample_offset"], row["length"], row["doc_id"]))
    reader = MDSReader(str(work / dataset / "v=1" / "train"))
    return {i: by_key.get((int(reader[i]["bucket"]), int(reader[i]["bucket_index"])), []) for i in range(len(reader))}


def ledger_samples(run: Path) -> dict[int, dict]:
    """Position -> ``{"step", "sample_id", "spans", "excluded"}`` over every rank's ledger lines."""
    samples = {}
    for path in sorted((run / "ledger").glob("rank-*.jsonl")):
        for line in map(json.loads, path.read_text().splitlines()):
            excluded = line.get("excluded") or [[]] * len(line["positions"])
            for position, sample_id, spans, runs in zip(line["positions"], line["sample_ids"],
                                                        line["document_losses"], excluded):
                samples[position] = {"step": line["step"], "sample_id": sample_id, "spans": spans, "excluded": runs}
    return samples


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def check_masked(record: dict, planted: list[tuple[int, int, str]], masked: set[str]) -> tuple[int, int]:
    """The sample's excluded runs are exactly the ``masked`` documents' tokens, their spans have no loss and every
    other span of 2 tokens or more has one; returns (masked spans, planted spans left to train on)."""
    mask = np.zeros((1, SEQ_LEN), bool)
    for offset, length, doc in planted:
        mask[0, offset:offset + length] = doc in masked
    assert record["excluded"] == token_runs(mask)[0]
    excluded = {(offset, length) for offset, length, doc in planted if doc in masked}
    for start, length, loss in record["spans"]:
        if (start, length) in excluded:
            assert loss is None, record
        elif length >= 2:
            assert loss is not None, record
    return len(excluded), sum(doc not in masked and length >= 2 for _, length, doc in planted)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-rank launch, and meanwhile the same run on one rank and one on a twin dataset whose planted documents
    hold other random tokens (same ids and lengths), both in this process."""
    work = tmp_path_factory.mktemp("exclude")
    write_traced_dataset(str(work / "data"), documents(seed=1))
    write_traced_dataset(str(work / "twin"), documents(seed=2))
    write_list(work / "planted.txt", [*PLANTED, NOT_IN_DATA])
    steps = len(MDSReader(str(work / "data" / "v=1" / "train"))) // GLOBAL_BATCH  # one epoch: every sample once
    write_config(work, steps)
    log = work / "two.log"
    with open(log, "w") as out:
        launch = subprocess.Popen([sys.executable, "-m", "training.launch", "train.yaml", "--nproc-per-node", "2",
                                   "name=two"], cwd=work, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        one = train_here(work, "name=one")
        twin = train_here(work, "name=twin", "data.datasets=[{path: twin}]")
        launch.wait(timeout=300)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode == 0, log.read_text()[-6000:]
    return {"work": work, "steps": steps, "one": one, "two": work / "runs" / "two", "twin": twin}


def test_planted_documents_carry_no_loss_and_one_and_two_ranks_agree(runs):
    planted = planted_segments(runs["work"])
    ledgers = {name: ledger_samples(runs[name]) for name in ("one", "two")}
    for ledger in ledgers.values():
        assert sorted(ledger) == list(range(runs["steps"] * GLOBAL_BATCH))
        masked = sum(check_masked(r, planted[r["sample_id"]], set(PLANTED))[0] for r in ledger.values())
        assert masked == sum(len(planted[r["sample_id"]]) for r in ledger.values()) > 10
    one, two = ledgers["one"], ledgers["two"]
    for position, record in one.items():
        other = two[position]
        assert (record["step"], record["sample_id"], record["excluded"]) == \
            (other["step"], other["sample_id"], other["excluded"])
        assert [s[:2] for s in record["spans"]] == [s[:2] for s in other["spans"]]
        assert [s[2] for s in record["spans"]] == pytest.approx([s[2] for s in other["spans"]], abs=2e-4)  # 4 places
    assert losses(runs["one"]) == pytest.approx(losses(runs["two"]), abs=1e-4)

    [event] = [e for e in read_events(runs["one"] / "journal.jsonl") if e["event"] == "exclude_docs"]
    found = {doc for segments in planted.values() for _, _, doc in segments}
    assert (event["file"], event["ids"], event["found"], event["not_found_ids"]) == \
        ("planted.txt", len(PLANTED) + 1, len(found), [NOT_IN_DATA])
    assert event["samples"] == sum(bool(s) for s in planted.values()) and event["step"] == 0
    assert event["sha256"] == read_exclude_list(str(runs["work"] / "planted.txt")).sha256
    log = (runs["two"] / "training_log.md").read_text()
    assert f"data.exclude_docs planted.txt (sha256 {event['sha256'][:12]}, {len(PLANTED) + 1} ids)" in log
    assert f"tokens carry no loss from step 1; 1 not in the train split ({NOT_IN_DATA})" in log


def test_what_the_excluded_tokens_hold_changes_nothing(runs):
    """With document-aware attention no loss reads an excluded token: planted documents of other random tokens
    give the same loss at every step and the same loss for every other document."""
    assert losses(runs["twin"]) == losses(runs["one"])
    twin, one = ledger_samples(runs["twin"]), ledger_samples(runs["one"])
    assert [r["spans"] for r in twin.values()] == [r["spans"] for r in one.values()]


def test_ids_added_at_a_resume_change_only_later_steps_and_a_restart_needs_no_provenance(tmp_path):
    """Half the planted ids for 4 steps, all of them after a resume to step 8; then a restart after the provenance
    table is gone (as `etl erase` leaves the Delta versions of older datasets) reads the run folder's copy."""
    write_traced_dataset(str(tmp_path / "data"), documents(seed=1))
    planted = planted_segments(tmp_path)
    first = set(PLANTED[::2])
    write_config(tmp_path, steps=4)
    write_list(tmp_path / "planted.txt", sorted(first))
    run = train_here(tmp_path, "name=grown", "checkpoint.every_steps=2")
    write_list(tmp_path / "planted.txt", PLANTED)
    train_here(tmp_path, "name=grown", "checkpoint.every_steps=2", "train.max_steps=8")
    shutil.move(tmp_path / "data-etl", tmp_path / "erased")
    train_here(tmp_path, "name=grown", "checkpoint.every_steps=2", "train.max_steps=10")

    masked_before = trained_before = masked_after = 0
    for record in ledger_samples(run).values():
        before = record["step"] <= 4
        masked, trained = check_masked(record, planted[record["sample_id"]], first if before else set(PLANTED))
        if before:
            masked_before, trained_before = masked_before + masked, trained_before + trained
        else:
            masked_after += masked
    assert masked_before and trained_before and masked_after  # the added ids: trained on up to step 4, not after
    events = [e for e in read_events(run / "journal.jsonl") if e["event"] == "exclude_docs"]
    assert [(e["step"], e["ids"], e["traced_from"]) for e in events] == [
        (0, len(first), "provenance"), (4, len(PLANTED), "provenance"), (8, len(PLANTED), "the run's copy")]

    # Another list can no longer be traced: an error naming the key and the retention it needs.
    write_list(tmp_path / "planted.txt", PLANTED[:1])
    with pytest.raises(ConfigError, match=r"(?s)data\.exclude_docs: cannot read the Delta table .* delta\.logRetention"):
        train_here(tmp_path, "name=grown", "checkpoint.every_steps=2", "train.max_steps=12")


@pytest.mark.parametrize("text, message", [
    ("web/1 web/2\n", "planted.txt:1: 'web/1 web/2' is not a document id"),
    ("# from explain_step\ndoc_id,loss\n", "planted.txt:2: 'doc_id,loss' is not a document id"),
    ("# nothing yet\n\n", "planted.txt lists no document id"),
])
def test_a_list_that_is_not_one_id_a_line_is_a_config_error(tmp_path, text, message):
    (tmp_path / "planted.txt").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"data.exclude_docs: {tmp_path}/{message}")):
        read_exclude_list(str(tmp_path / "planted.txt"))


def test_the_list_is_read_from_an_object_store_url_as_the_datasets_are():
    text = b"web/1\nbad/2\nweb/1\n"
    fsspec.filesystem("memory").pipe("/kiln-exclude/planted.txt", text)
    listed = read_exclude_list("memory://kiln-exclude/planted.txt")
    assert listed.ids == ("bad/2", "web/1") and listed.sha256 == hashlib.sha256(text).hexdigest()
    with pytest.raises(ConfigError, match="data.exclude_docs: memory://kiln-exclude/gone.txt not found"):
        read_exclude_list("memory://kiln-exclude/gone.txt")


@pytest.mark.parametrize("overrides, message", [
    (["data.exclude_docs=missing.txt"], "data.exclude_docs: missing.txt not found"),
    (["data.datasets=[{path: plain}]", "model.overrides.attn_uses_sequence_id=false"],
     "data.exclude_docs: plain: dataset v=1 names no provenance table"),
    (["data.datasets=[]", "data.instruction={path: chat.jsonl, tokenizer: tokenizer.json}"],
     "data.exclude_docs traces document ids through the provenance tables of ETL-built datasets"),
])
def test_the_launcher_refuses_a_list_it_cannot_apply_before_any_rank_starts(tmp_path, monkeypatch, capsys,
                                                                           overrides, message):
    write_traced_dataset(str(tmp_path / "data"), documents(seed=1))
    write_token_dataset(str(tmp_path / "plain"), {"train": 8}, seq_len=SEQ_LEN)  # versioned, but no provenance
    write_list(tmp_path / "planted.txt", PLANTED)
    write_config(tmp_path, steps=2)
    monkeypatch.chdir(tmp_path)
    assert launch_main(["train.yaml", *overrides]) == 2
    error = capsys.readouterr().err
    assert error.startswith("config error: ") and message in error and "Traceback" not in error


def test_a_micro_batch_of_excluded_documents_only_adds_zero_not_nan(runs):
    """Every document listed, and no ledger (its document losses take the same path): each micro-batch's labels
    are all ignored, so it adds 0 to the loss, not the NaN of 0 / 0 (which the non-finite guard would skip)."""
    write_list(runs["work"] / "everything.txt", sorted(documents(0)))
    run = train_here(runs["work"], "name=nothing", "data.exclude_docs=everything.txt", "train.max_steps=3",
                     "logging.ledger_document_losses=false")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"], r["skipped_steps"]) for r in rows if "loss" in r] == [(1, 0.0, 0), (2, 0.0, 0), (3, 0.0, 0)]
