"""`python -m training.explain_step RUN --step N`: the documents a training step trained on, worst loss first.

1. The step's samples: from the run's sample ledger (``logging.sample_ledger``), or, without one,
   recomputed from the deterministic global order (training.data.order) over the datasets and versions
   ``run_info.json`` pinned, with the run's seed and batch size.
   A step the spike policy rolled back was trained again on other samples; ``--spiked`` takes the ones
   it spiked on (the ledger lines of the abandoned branch, or the order before that rollback).
2. With ``logging.ledger_document_losses`` the ledger holds each document span's mean loss, and the
   spans are ranked by it; otherwise they are listed in the step's order.
3. Each sample's ``bucket`` and ``bucket_index`` (read from its shard) key the dataset's provenance table,
   read at the Delta version its manifest names (shards.provenance): the document ids and sources, the
   scores the ETL kept for them, and a short excerpt decoded from the shard's tokens with the dataset's
   tokenizer. Those tokens were written after the pii stage, so the excerpt holds no redacted value.

Relative dataset paths in ``run_info.json`` are read from the working directory: run it where training ran.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards import storage
from shards.manifest import read_manifest, version_path
from shards.mds import TOKENS_COLUMN, MDSReader
from shards.provenance import (KEY_COLUMNS, ProvenanceError, documents_table, provenance_table, read_scores,
                               read_segments)

from ..data.order import build_order, schedule_phases
from ..data.sources import Source, resolve_source
from ..tokenizer import TextTokenizer
from .ledger import step_records

RUN_INFO = "run_info.json"


class ExplainError(Exception):
    """The run or its data cannot answer the question; the message says why."""


@dataclass(frozen=True)
class StepSample:
    position: int
    sample_id: int
    dataset: int  # index into the run's train sources
    index: int  # the sample's index in that dataset's split
    spans: dict[tuple[int, int], float | None] | None  # (start, length) -> mean loss, when recorded


def load_run(run_dir: Path) -> tuple[dict, list[Source]]:
    """The run's ``run_info.json`` and its train sources, pinned to the versions it recorded."""
    path = run_dir / RUN_INFO
    if not path.is_file():
        raise ExplainError(f"{run_dir} is not a training run folder: it has no {RUN_INFO}")
    info = json.loads(path.read_text())
    sources = []
    for recorded in info["data"]["train"]:
        if recorded["version"] is None:
            raise ExplainError(f"{recorded['path']} is not a versioned dataset built by the ETL: it has no "
                               "provenance to trace (instruction data and plain MDS folders have none)")
        try:
            source = resolve_source(recorded["path"], recorded["split"], recorded["version"], recorded["proportion"],
                                    recorded.get("source"))
        except (FileNotFoundError, ValueError) as err:
            raise ExplainError(f"the run's dataset {recorded['path']} v={recorded['version']} cannot be read "
                               f"({err}); a relative path is read from the working directory, so run this where "
                               "training ran") from None
        if source.fingerprint != recorded["fingerprint"]:
            raise ExplainError(f"{recorded['path']} v={recorded['version']} is not the dataset the run trained on "
                               "(its fingerprint differs from run_info.json's)")
        sources.append(source)
    return info, sources


def rollback_events(run_dir: Path) -> list[dict]:
    """The journal's ``rollback`` events in order, read as plain JSON (the journal module brings torch); a
    last line cut off by a kill is left out, as the journal's own reader leaves it."""
    journal = run_dir / "journal.jsonl"
    lines = journal.read_text().splitlines() if journal.exists() else []
    events = []
    for number, line in enumerate(lines, 1):
        if '"event": "rollback"' in line:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                if number != len(lines):
                    raise ExplainError(f"{journal}:{number} is not a JSON line") from None
    return events


def spiked_branch(mine: list[dict], step: int, which: int | None = None) -> int:
    """How many rollbacks came before ``step`` spiked and was rolled back (``mine``: its rollback events), the
    last time (``which``: the 1st, 2nd, ... time): the branch whose samples of ``step`` the ledger keeps under
    that count."""
    if not mine:
        raise ExplainError(f"step {step} was not rolled back (the journal has no rollback for a spike at it); "
                           "without --spiked the step's samples are shown")
    if which is not None and not 1 <= which <= len(mine):
        raise ExplainError(f"step {step} spiked and was rolled back {len(mine)} time(s); --spiked {which} names "
                           f"no such rollback (1 ... {len(mine)})")
    return mine[-1 if which is None else which - 1]["rollbacks"] - 1


def step_start(run_dir: Path, step: int, global_batch: int, rollbacks: int | None = None, from_step: int = 0) -> int:
    """The global position of ``step``'s first sample: ``(step - 1 - from_step) x global_batch`` (``from_step``:
    where the run's data phase starts, data.from_step), unless the spike policy
    rolled back to a checkpoint before ``step`` (training.run.spike): then, after the latest such rollback (of
    the first ``rollbacks``, when given), the steps after its target continued from the end of its skipped
    positions."""
    start = (step - 1 - from_step) * global_batch
    for event in rollback_events(run_dir):
        in_phase = from_step < event["step"]  # a rollback of this data phase, not an earlier one's
        if (rollbacks is None or event["rollbacks"] <= rollbacks) and in_phase and event["target_step"] < step:
            start = event["skipped_positions"][1] + (step - 1 - max(event["target_step"], from_step)) * global_batch
    return start


def step_samples(run_dir: Path, info: dict, sources: list[Source], step: int,
                 rollbacks: int | None = None) -> tuple[list[StepSample], str, int | None]:
    """The samples of ``step`` in position order (as trained after ``rollbacks`` rollbacks, when given),
    where they came from ("ledger" or "order"), and the ledger's attempt."""
    records, attempt = step_records(run_dir, step, rollbacks)
    origin = "ledger"
    if not records:
        data, batch = info["config"]["data"], info["config"]["train"]["global_batch_size"]
        phases = schedule_phases(data.get("schedule", []), batch, data.get("from_step", 0))
        order = build_order(sources, data["seed"], data["shuffle"], data["shuffle_window_shards"], phases)
        start = step_start(run_dir, step, batch, rollbacks, data.get("from_step", 0))
        datasets, samples = order.locate(start, start + batch)
        records = [{"position": start + i, "sample_id": int(sid), "spans": None}
                   for i, sid in enumerate(order.sample_ids(datasets, samples))]
        origin = "order"
    offsets = np.concatenate([[0], np.cumsum([s.num_samples for s in sources])])
    out = []
    for record in records:
        dataset = int(np.searchsorted(offsets, record["sample_id"], side="right")) - 1
        if not 0 <= dataset < len(sources):
            raise ExplainError(f"sample id {record['sample_id']} at position {record['position']} lies beyond the "
                               f"run's {offsets[-1]} samples")
        spans = None if record["spans"] is None else {(s, n): loss for s, n, loss in record["spans"]}
        out.append(StepSample(record["position"], record["sample_id"], dataset,
                              record["sample_id"] - int(offsets[dataset]), spans))
    return out, origin, attempt


def load_tokenizer(manifest, where: str) -> TextTokenizer:
    """The dataset's tokenizer (the manifest's extra.tokenizer), checked against its tokenizer_hash."""
    url = manifest.extra.get("tokenizer")
    if not url:
        raise ExplainError(f"{where}: the manifest names no tokenizer (extra.tokenizer)")
    data = storage.read_bytes(url)
    if hashlib.sha256(data).hexdigest() != manifest.tokenizer_hash:
        raise ExplainError(f"{where}: {url} has changed since the dataset was built (its sha256 is not the "
                           "manifest's tokenizer_hash), so it would decode the tokens wrongly")
    return TextTokenizer.from_bytes(data, url)


def excerpt(tokenizer: TextTokenizer, tokens: np.ndarray, special: set[int], chars: int) -> str:
    """The text of ``tokens`` without special tokens, whitespace collapsed, cut to ``chars`` characters."""
    text = re.sub(r"\s+", " ", tokenizer.decode([int(t) for t in tokens if int(t) not in special])).strip()
    return text if len(text) <= chars else text[:chars].rstrip() + "..."


def explain_step(run_dir: Path, step: int, top: int = 20, excerpt_chars: int = 200, spiked: bool = False,
                 which: int | None = None) -> dict:
    """What ``python -m training.explain_step --json`` prints: the step's samples and its document spans,
    ranked by loss when the ledger recorded it (``top``: how many spans to list, 0 all). A step the spike
    policy rolled back was trained again on other samples; ``spiked`` explains the ones it spiked on (the
    last time, or the ``which``-th time it spiked and was rolled back)."""
    info, sources = load_run(run_dir)
    max_steps = info["config"]["train"]["max_steps"]
    if not 1 <= step <= max_steps:
        raise ExplainError(f"step {step} is not a step of this run (1 ... {max_steps})")
    from_step = info["config"]["data"].get("from_step", 0)
    if step <= from_step:
        raise ExplainError(f"step {step} trained on the data phase before step {from_step + 1} (data.from_step), "
                           "and run_info.json describes the data from there on; explain it from a copy of the run "
                           "folder taken before that phase started")
    mine = [e for e in rollback_events(run_dir) if e["step"] == step]
    branch = spiked_branch(mine, step, which) if spiked else None
    rolled_back = len(mine)
    samples, origin, attempt = step_samples(run_dir, info, sources, step, branch)

    datasets, spans, sample_rows = [], [], []
    for d, source in enumerate(sources):
        mine = [s for s in samples if s.dataset == d]
        if not mine:
            continue
        where = f"{source.path} v={source.version}"
        manifest = read_manifest(version_path(source.path, source.version))
        reader = MDSReader(source.url)
        missing = [c for c in KEY_COLUMNS if c not in reader.columns]
        if missing:
            raise ExplainError(f"{where}: its samples have no {missing} columns (built before samples carried "
                               "their provenance key), so they cannot be traced to documents")
        rows = {s.position: reader[s.index] for s in mine}
        keys = {s.position: (int(rows[s.position]["bucket"]), int(rows[s.position]["bucket_index"])) for s in mine}
        segments = read_segments(manifest, source.split, keys.values())
        scores_table = documents_table(manifest)
        scores = read_scores(scores_table, {seg.doc_id for key in keys.values() for seg in segments[key]})
        tokenizer = load_tokenizer(manifest, where)
        special = {manifest.extra.get(k) for k in ("eos_token_id", "pad_token_id", "bos_token_id")} - {None}
        datasets.append({"path": source.path, "split": source.split, "version": source.version,
                         "provenance": provenance_table(manifest).describe(), "scores_table": scores_table.describe()})
        for s in mine:
            bucket, index = keys[s.position]
            if not segments[(bucket, index)]:
                raise ExplainError(f"{where}: the provenance table has no rows for sample (bucket {bucket}, "
                                   f"index {index}); it does not match this dataset version")
            sample_rows.append({"position": s.position, "sample_id": s.sample_id, "dataset": source.path,
                                "dataset_version": source.version, "index": s.index, "bucket": bucket,
                                "bucket_index": index, "documents": len(segments[(bucket, index)])})
            tokens = np.asarray(rows[s.position][TOKENS_COLUMN])
            for seg in segments[(bucket, index)]:
                spans.append({
                    "loss": None if s.spans is None else s.spans.get((seg.sample_offset, seg.length)),
                    "doc_id": seg.doc_id, "source": seg.source, "dataset": source.path,
                    "dataset_version": source.version, "split": source.split, "position": s.position,
                    "sample_id": s.sample_id, "sample_offset": seg.sample_offset, "length": seg.length,
                    "doc_offset": seg.doc_offset, "doc_tokens": seg.doc_tokens, "scores": scores.get(seg.doc_id),
                    "excerpt": excerpt(tokenizer, tokens[seg.sample_offset:seg.sample_offset + seg.length],
                                       special, excerpt_chars),
                })
    losses = any(s.spans is not None for s in samples)
    if losses:  # worst first; spans without a loss (a lone EOS) last
        spans.sort(key=lambda x: (x["loss"] is None, -(x["loss"] or 0.0), x["position"], x["sample_offset"]))
    else:
        spans.sort(key=lambda x: (x["position"], x["sample_offset"]))
    sample_rows.sort(key=lambda x: x["position"])
    for rank, span in enumerate(spans, 1):
        span["rank"] = rank
    return {"run": str(run_dir), "step": step, "spiked": spiked, "rolled_back": rolled_back,
            "samples_from": origin, "attempt": attempt,
            "document_losses": losses, "datasets": datasets, "samples": sample_rows,
            "documents_total": len(spans), "documents": spans[:top] if top else spans}


def _score_text(scores: dict | None) -> str:
    if scores is None:
        return "scores: not found (the document is no longer in the table)"
    shown = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items() if v is not None]
    return "scores: " + (" ".join(shown) if shown else "none recorded")


def render_text(report: dict) -> str:
    """The report for a person at a terminal."""
    origin = ("the ledger" + (f", attempt {report['attempt']}" if report["attempt"] else "")
              if report["samples_from"] == "ledger" else "the data order (no ledger lines for this step)")
    which = " as trained when it spiked (before its rollback)" if report["spiked"] else ""
    lines = [f"run {report['run']}, step {report['step']}{which}: {len(report['samples'])} samples from {origin}, "
             f"{report['documents_total']} document spans"]
    if report["rolled_back"] and not report["spiked"]:
        lines.append(f"step {report['step']} spiked and was rolled back ({report['rolled_back']} time(s)): "
                     "--spiked shows the samples it spiked on")
    for d in report["datasets"]:
        prov, scores = d["provenance"], d["scores_table"]
        lines.append(f"  dataset {d['path']} v={d['version']} ({d['split']}): provenance {prov['path']} "
                     f"@ Delta v{prov['delta_version']}, scores {scores['path']} @ Delta v{scores['delta_version']}")
    shown = report["documents"]
    if report["document_losses"]:
        lines.append(f"the {len(shown)} document spans with the highest loss:")
    else:
        lines.append(f"no document losses recorded (logging.ledger_document_losses): {len(shown)} spans in step order")
    for span in shown:
        loss = "   -  " if span["loss"] is None else f"{span['loss']:6.3f}"
        first, last = span["doc_offset"], span["doc_offset"] + span["length"] - 1
        lines.append(f"{span['rank']:3d}. loss {loss}  {span['doc_id']}  (source {span['source']}, dataset "
                     f"v={span['dataset_version']}; sample at position {span['position']}, its tokens "
                     f"{span['sample_offset']}..{span['sample_offset'] + span['length'] - 1} = the document's tokens "
                     f"{first}..{last} of {span['doc_tokens']})")
        lines.append(f"       {_score_text(span['scores'])}")
        lines.append(f"       \"{span['excerpt']}\"")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.explain_step",
        description="The documents a training step trained on, ranked by loss when the ledger recorded it "
                    "(logging.ledger_document_losses), each traced through the dataset's provenance table.")
    parser.add_argument("run", help="the run folder (<output_dir>/<name>, holding run_info.json)")
    parser.add_argument("--step", type=int, required=True, help="the optimizer step (1 = the first)")
    parser.add_argument("--top", type=int, default=20, help="how many document spans to list (0: all; default 20)")
    parser.add_argument("--excerpt-chars", type=int, default=200, help="characters of each excerpt (default 200)")
    parser.add_argument("--spiked", nargs="?", type=int, const=0, default=None, metavar="K",
                        help="a step the spike policy rolled back: the samples it spiked on, the last time (or the "
                             "K-th time, 1 = the first, when it spiked again after a rollback); default: the "
                             "samples the run kept for the step")
    parser.add_argument("--json", action="store_true", help="print JSON for tools instead of text")
    args = parser.parse_args(argv)
    if args.top < 0 or args.excerpt_chars < 0 or (args.spiked is not None and args.spiked < 0):
        parser.error("--top, --excerpt-chars and --spiked must be >= 0")
    try:
        report = explain_step(Path(args.run), args.step, args.top, args.excerpt_chars, args.spiked is not None,
                              args.spiked or None)
    except (ExplainError, ProvenanceError, ValueError, OSError) as err:  # bad input: one line, no traceback
        print(f"explain_step: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report))
    return 0
