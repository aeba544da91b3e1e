"""`python -m training.explain_step` on the demo's ETL output (the shared `demo_etl` session fixture):
a short run launched as a user would (relative paths, a fresh folder, the sample ledger on), then the
command typed in a subprocess. The documents it lists for a step must be the ones the provenance
table gives for the ledger's samples of that step (checked here with deltalake and the shards
directly), its excerpts must hold no planted personal data, the order gives the same samples as the
ledger, and document spans with a high recorded loss rank first even beside clean documents."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import deltalake
import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from shards import MDSReader, read_manifest
from shards.provenance import ProvenanceError, arrow_dataset, delta_table
from training.data.loader import next_token_labels
from training.data.sources import resolve_source
from training.run.explain import explain_step
from training.run.ledger import SampleLedger, ledger_path
from tests.training.subprocess_env import child_env

STEPS = 40
BATCH = 8
# The values jobs/demo.py plants in the forum's pii-N documents (PII_LINES), whatever N.
PLANTED_PII = [re.compile(p) for p in (r"jane\.doe\d+@example\.com", r"415 555 01\d\d", r"4111 1111 1111 1111",
                                       r"10\.0\.\d+\.7", r"DE89 3704 0044 0532 0130 00")]


def command(work: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=work, env=child_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def run(demo_etl, tmp_path_factory) -> Path:
    """A fresh folder holding the dataset (a link) and a config with relative paths; a 1-process run."""
    work = tmp_path_factory.mktemp("explain")
    (work / "dataset").symlink_to(demo_etl["etl"] / "dataset")
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        name: traced
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 32, n_layers: 1, n_heads: 2, max_seq_len: 128, vocab_size: 512}}}}
        data: {{datasets: [{{path: dataset}}], num_workers: 0}}
        train: {{max_steps: {STEPS}, global_batch_size: {BATCH}, micro_batch_size: 4}}
        logging: {{every_steps: 10, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))
    command(work, "-m", "training.launch", "train.yaml", "--nproc-per-node", "1")
    return work


def ledger_step(run_dir: Path, step: int) -> list[tuple[int, int]]:
    """(position, sample id) of the ledger's lines for ``step``."""
    lines = [json.loads(t) for p in sorted((run_dir / "ledger").glob("rank-*.jsonl")) for t in p.read_text().splitlines()]
    return sorted((p, s) for line in lines if line["step"] == step for p, s in zip(line["positions"], line["sample_ids"]))


def provenance_by_hand(work: Path, samples: list[tuple[int, int]]) -> dict[tuple[int, str, int, int], dict]:
    """(position, doc id, offset in the sample, length) -> provenance row, for every document in ``samples``:
    each sample's bucket key from its shard, then the provenance rows at the Delta version the manifest names."""
    manifest = read_manifest(str(work / "dataset"))
    reader = MDSReader(str(work / "dataset" / f"v={manifest.version}" / "train"))
    table = next(t for t in manifest.source_tables if t["path"].endswith("/tokenize/provenance"))
    rows = arrow_dataset(deltalake.DeltaTable(table["path"], version=table["delta_version"])).to_table(
        filter=pc.field("split") == "train").to_pylist()
    by_key: dict[tuple[int, int], list[dict]] = {}
    for row in rows:
        by_key.setdefault((row["bucket"], row["sample_index"]), []).append(row)
    found = {}
    for position, sample_id in samples:
        sample = reader[sample_id]  # one dataset: the sample id is its index
        for row in by_key[(int(sample["bucket"]), int(sample["bucket_index"]))]:
            found[(position, row["doc_id"], row["sample_offset"], row["length"])] = row
    return found


def a_step_with_the_end_of_a_pii_document(work: Path) -> int:
    """The first step whose samples hold the last tokens of a document with planted personal data."""
    for step in range(1, STEPS + 1):
        documents = provenance_by_hand(work, ledger_step(work / "runs" / "traced", step))
        if any(doc.startswith("forum/pii-") and row["doc_offset"] + row["length"] == row["doc_tokens"]
               for (_, doc, _, _), row in documents.items()):
            return step
    raise AssertionError(f"no pii document ends in the first {STEPS} steps")


def test_explain_step_lists_the_provenance_of_the_ledgers_samples(run):
    step = a_step_with_the_end_of_a_pii_document(run)
    out = command(run, "-m", "training.explain_step", "runs/traced", "--step", str(step), "--top", "0",
                  "--excerpt-chars", "100000", "--json")
    report = json.loads(out.stdout)
    assert report["samples_from"] == "ledger" and not report["document_losses"]
    expected = provenance_by_hand(run, ledger_step(run / "runs" / "traced", step))
    listed = {(d["position"], d["doc_id"], d["sample_offset"], d["length"]) for d in report["documents"]}
    assert listed == set(expected) and report["documents_total"] == len(expected)
    manifest = read_manifest(str(run / "dataset"))
    assert {d["dataset_version"] for d in report["documents"]} == {manifest.version}
    assert report["datasets"][0]["provenance"]["delta_version"] == next(
        t["delta_version"] for t in manifest.source_tables if t["path"].endswith("/provenance"))

    # Scores kept by the ETL's stages, read from the tokenize stage's document table.
    first = report["documents"][0]
    assert report["datasets"][0]["scores_table"]["path"].endswith("/tokenize")
    assert {"language", "language_score", "toxicity", "q_words"} <= set(first["scores"])
    assert "text" not in first["scores"] and first["source"] in ("web", "forum")

    # The excerpts are decoded from the shards' tokens, written after the pii stage: the planted values
    # are redacted, and the placeholder is there where a pii document ends.
    for doc in report["documents"]:
        assert not any(p.search(doc["excerpt"]) for p in PLANTED_PII), doc["excerpt"]
    pii_ends = [d for d in report["documents"]
                if d["doc_id"].startswith("forum/pii-") and d["doc_offset"] + d["length"] == d["doc_tokens"]]
    assert pii_ends and all(re.search(r"<[A-Z_]+>", d["excerpt"]) for d in pii_ends), [d["excerpt"] for d in pii_ends]

    # Without a ledger the same samples come from the data order.
    shutil.copytree(run / "runs" / "traced", run / "runs" / "no_ledger", ignore=shutil.ignore_patterns("ledger"))
    again = json.loads(command(run, "-m", "training.explain_step", "runs/no_ledger", "--step", str(step),
                               "--top", "0", "--json").stdout)
    assert again["samples_from"] == "order"
    assert [(s["position"], s["sample_id"]) for s in again["samples"]] == ledger_step(run / "runs" / "traced", step)
    assert {(d["position"], d["doc_id"]) for d in again["documents"]} == {(p, d) for p, d, _, _ in expected}

    # A Delta version that retention (or an erasure's vacuum) took away: an error naming the retention.
    provenance = report["datasets"][0]["provenance"]
    with pytest.raises(ProvenanceError, match="delta.logRetentionDuration"):
        delta_table(provenance["path"], provenance["delta_version"] + 1000)

    # Plain text for a person, and a clear error for a step the run does not have.
    text = command(run, "-m", "training.explain_step", "runs/traced", "--step", str(step), "--top", "3").stdout
    assert f"step {step}: {BATCH} samples from the ledger" in text and "scores: " in text
    bad = subprocess.run([sys.executable, "-m", "training.explain_step", "runs/traced", "--step", str(STEPS + 1)],
                         cwd=run, env=child_env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and f"step {STEPS + 1} is not a step of this run" in bad.stderr


def test_document_spans_with_high_loss_rank_first(run, monkeypatch):
    """Ledger lines written by SampleLedger with per-token losses where a few planted document spans,
    each sharing its sample with clean documents, have a high loss: they rank first."""
    traced = run / "runs" / "traced"
    spiky = run / "runs" / "spiky"
    (spiky / "ledger").mkdir(parents=True)
    shutil.copy(traced / "run_info.json", spiky / "run_info.json")
    info = json.loads((traced / "run_info.json").read_text())["data"]["train"][0]
    source = resolve_source(str(run / "dataset"), "train", info["version"])
    reader = MDSReader(source.url)
    for step in range(1, STEPS + 1):  # a step with 3 samples where a document starts after another one's EOS
        samples = ledger_step(traced, step)
        input_ids = torch.from_numpy(np.stack([np.asarray(reader[s]["tokens"], np.int64) for _, s in samples]))
        is_eos = input_ids[:, :-2] == source.eos_token_id  # a document of 2 tokens or more follows
        if int(is_eos.any(dim=1).sum()) >= 3:
            break
    else:
        raise AssertionError(f"no step of {STEPS} has 3 samples holding the start of a document")
    losses = torch.full(input_ids.shape, 2.0)
    planted = set()
    for row in is_eos.any(dim=1).nonzero().flatten().tolist()[:3]:  # the document after the row's first EOS
        start = int(is_eos[row].nonzero()[0]) + 1
        later = (input_ids[row, start:] == source.eos_token_id).nonzero()
        stop = start + int(later[0]) + 1 if len(later) else input_ids.shape[1]
        losses[row, start:stop] = 9.0 + row
        planted.add((samples[row][0], start))

    ledger = SampleLedger(ledger_path(spiky, 0), attempt=0, sources=[source])
    for micro in range(0, len(samples), 4):  # micro-batches of 4, as the run took them
        rows = slice(micro, micro + 4)
        ledger.record(step, {"positions": torch.tensor([p for p, _ in samples[rows]]),
                             "sample_ids": torch.tensor([s for _, s in samples[rows]]), "input_ids": input_ids[rows]})
        ledger.record_losses(losses[rows], next_token_labels(input_ids[rows]))
    ledger.close()

    monkeypatch.chdir(run)  # where training ran: the run's dataset path is relative
    report = explain_step(Path("runs/spiky"), step, top=3)
    assert report["document_losses"] and report["documents_total"] > 3 * 2
    top = report["documents"]
    assert {(d["position"], d["sample_offset"]) for d in top} == planted
    assert [d["loss"] for d in top] == sorted((d["loss"] for d in top), reverse=True) and top[-1]["loss"] >= 9.0
    for d in top:  # each shares its sample with documents of ordinary loss
        assert next(s for s in report["samples"] if s["position"] == d["position"])["documents"] >= 2
