"""A long-context phase: a tiny model trained at 128 tokens goes on at 512 (``data.from_step``).

As MPT-30B's final 8k stage: the same run, relaunched with a dataset packed at 512, a model whose
max_seq_len is 512 (ALiBi: no weights depend on it) and ``data.from_step`` at the step the 128-token
phase ended. The run resumes model, optimizer and schedule from that step's checkpoint; the new data's
order starts at position 0, and the tokens consumed carry over. A run SIGKILLed in the 512-token phase
and launched again ends with the same ledger and bitwise the same weights as one that was not.
"""
from __future__ import annotations

import json
import textwrap

import torch

from tests.training.subprocess_env import finish, start_launch
from tests.training.token_datasets import write_token_dataset
from training.config import load_config
from training.data.order import build_order
from training.data.sources import resolve_source
from training.launch import main as launch
from training.run.journal import read_events
from training.weights.checkpoint_reader import read_model_state

SHORT, LONG, BATCH, FIRST, LAST = 128, 512, 4, 4, 8
PHASE_TWO = ["data.datasets=[{path: long}]", f"data.from_step={FIRST}", f"model.overrides.max_seq_len={LONG}",
             f"train.max_steps={LAST}"]


def test_a_model_trained_at_128_goes_on_at_512_and_resumes_within_the_phase(tmp_path, capsys, monkeypatch):
    work = tmp_path
    write_token_dataset(str(work / "short"), {"train": 64}, seq_len=SHORT, size_limit=1 << 13)
    write_token_dataset(str(work / "long"), {"train": 32}, seq_len=LONG, size_limit=1 << 14, sample_offset=500)
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 16, n_heads: 2, n_layers: 1, max_seq_len: {SHORT}}}}}
        data: {{datasets: [{{path: short}}], num_workers: 0, eval_split: null}}
        train: {{max_steps: {FIRST}, global_batch_size: {BATCH}, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        schedule: {{warmup_steps: 0, decay: cosine}}
        checkpoint: {{every_steps: 2}}
        logging: {{every_steps: 1, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))
    # The 128-token phase, twice: one run goes on undisturbed, the other is killed in the 512-token phase.
    firsts = [start_launch(work, name, [], nproc=1) for name in ("whole", "killed")]
    for run in firsts:
        finish(run)

    # Going on from a step that is not where the first phase ended is refused, naming both.
    monkeypatch.chdir(work)
    assert launch(["train.yaml", "name=whole", *PHASE_TWO[:1], "data.from_step=3", *PHASE_TWO[2:]]) == 2
    assert "saved at step 4 on data that starts at step 0, but data.from_step is 3" in capsys.readouterr().err

    whole = start_launch(work, "whole", PHASE_TWO, nproc=1)
    killed = start_launch(work, "killed", PHASE_TWO, nproc=1, KILN_FAULT_PLAN="kill_at_step=7@0")
    finish(whole)
    finish(killed, succeeds=False)
    finish(start_launch(work, "killed", PHASE_TWO, nproc=1))

    run = work / "runs" / "whole"
    events = read_events(run / "journal.jsonl")
    phase = next(e for e in events if e["event"] == "data_phase")
    assert (phase["step"], phase["seq_len"], phase["tokens_before"]) == (FIRST, LONG, FIRST * BATCH * SHORT)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if m.get("step") == LAST and "tokens" in m][-1]
    assert last["tokens"] == FIRST * BATCH * SHORT + (LAST - FIRST) * BATCH * LONG
    # The 512-token steps read the long dataset's order from position 0.
    cfg = load_config(work / "train.yaml", ["name=check", *PHASE_TWO])
    order = build_order([resolve_source(str(work / "long"), "train")], cfg.data.seed, True,
                        cfg.data.shuffle_window_shards)
    ledger = [json.loads(line) for line in (run / "ledger" / "rank-00000.jsonl").read_text().splitlines()]
    later = [line for line in ledger if line["step"] > FIRST]
    assert [p for line in later for p in line["positions"]] == list(range((LAST - FIRST) * BATCH))
    assert [s for line in later for s in line["sample_ids"]] == \
        order.sample_ids(*order.locate(0, (LAST - FIRST) * BATCH)).tolist()

    killed_events = read_events(work / "runs" / "killed" / "journal.jsonl")
    assert [e["step"] for e in killed_events if e["event"] == "resume"] == [FIRST, 6]
    mine, theirs = (read_model_state(str(work / "runs" / name / "checkpoints"))[1] for name in ("killed", "whole"))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
