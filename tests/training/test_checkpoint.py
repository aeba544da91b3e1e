"""training.run.checkpoint and training.weights.consolidate in one process (no launcher): retention, skipping a
truncated checkpoint, refusing other data, resuming on a fresh machine from an object store, and
consolidating a checkpoint within a memory bound."""
from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from shards.config import ConfigError
from tests.training.token_datasets import write_token_dataset
from training.config import load_config
from training.model import MPT, MPTConfig
from training.run.checkpoint import (LATEST_NAME, apply_retention, finalize, latest_complete, list_steps,
                                     step_name)
from training.run.journal import read_events
from training.weights.checkpoint_reader import read_model_state
from training.weights.inference import load_model

ROOT = Path(__file__).resolve().parents[2]


def write_config(folder: Path, data: str, **sections: str) -> Path:
    path = folder / "train.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: run
        output_dir: {folder / 'runs'}
        model: {{preset: tiny, overrides: {{d_model: 32, n_heads: 2, max_seq_len: 32}}}}
        data: {{datasets: [{{path: {data}}}], num_workers: 0, shuffle_window_shards: 2, eval_split: null,
                cache_dir: {folder / 'cache'}, cache_limit_gb: 0.01}}
        train: {{max_steps: 4, global_batch_size: 4, micro_batch_size: 2}}
        optimizer: {{lr: 1.0e-2}}
        schedule: {{warmup_steps: 0, decay: constant}}
        checkpoint: {{every_steps: 2, keep_last: 3}}
        logging: {{every_steps: 1, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))
    return path


def run(config: Path, *overrides: str) -> list[dict]:
    """Train in this process; returns the run's journal.

    The finished run's process group sits in a reference cycle (FSDP state, device mesh); collecting
    it here matters: collected later inside a forked DataLoader worker, a gloo group's destructor
    waits forever for threads that exist only in this process."""
    from training.train import train

    cfg = load_config(config, list(overrides))
    try:
        train(cfg)
    finally:
        gc.collect()
    return read_events(Path(cfg.output_dir) / cfg.name / "journal.jsonl")


def test_retention_keeps_the_last_k_and_every_nth_and_drops_leftovers(tmp_path):
    root = str(tmp_path / "checkpoints")
    for step in range(2, 22, 2):
        folder = tmp_path / "checkpoints" / step_name(step)
        folder.mkdir(parents=True)
        (folder / "__0_0.distcp").write_bytes(b"x" * step)
        if step != 12:  # an interrupted save: shards but no manifest
            finalize(str(folder), {"step": step})
    deleted = apply_retention(root, keep_last=2, keep_every=8)
    assert list_steps(root) == [8, 16, 18, 20]
    assert deleted == [2, 4, 6, 10, 12, 14]
    assert (tmp_path / "checkpoints" / LATEST_NAME).read_text() == step_name(20)


def test_truncated_checkpoint_is_skipped_and_other_data_is_refused(tmp_path, caplog):
    data = write_token_dataset(str(tmp_path / "data"), {"train": 200}, seq_len=32, size_limit=1 << 11)
    config = write_config(tmp_path, data)
    run(config, "train.max_steps=6")
    root = tmp_path / "runs" / "run" / "checkpoints"
    assert list_steps(str(root)) == [2, 4, 6]

    shard = root / "step-00000006" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])  # a copy cut short
    with caplog.at_level(logging.WARNING):
        url, manifest = latest_complete(str(root))
    assert url.endswith("step-00000004") and manifest["step"] == 4
    assert "skipping checkpoint" in caplog.text and "__0_0.distcp holds 1000 bytes" in caplog.text
    journal = run(config, "train.max_steps=7")
    assert [e["step"] for e in journal if e["event"] == "resume"] == [4]
    assert latest_complete(str(root))[1]["step"] == 7

    # A newer dataset version under the same root: refused by the trainer and by the launcher.
    write_token_dataset(data, {"train": 200}, seq_len=32, size_limit=1 << 11, version=2, sample_offset=1000)
    from training.launch import validate

    for attempt in (lambda: run(config, "train.max_steps=8"),
                    lambda: validate(load_config(config, ["train.max_steps=8"]), 1, 1)):
        with pytest.raises(ConfigError) as refused:
            attempt()
        message = str(refused.value)
        assert "version 1" in message and "version 2" in message and "checkpoint.allow_data_change" in message
    journal = run(config, "train.max_steps=8", "checkpoint.allow_data_change=true")
    assert [e["step"] for e in journal if e["event"] == "resume"][-1] == 7
    assert json.loads((root / step_name(8) / "manifest.json").read_text())["data"][0]["version"] == 2
    pinned = run(config, "train.max_steps=9", "data.datasets=[{path: " + data + ", version: 2}]")
    assert pinned[-1]["event"] == "finish"
    with pytest.raises(ConfigError, match="cannot resume from .*step-00000009: loader state is for seed=1234"):
        run(config, "train.max_steps=10", "data.seed=5")  # another seed is another global sample order


def test_fresh_machine_resumes_from_an_object_store(s3_prefix, tmp_path):
    """Data and (asynchronously saved) checkpoints in S3; the second half runs with new local folders."""
    data = write_token_dataset(f"{s3_prefix}/data", {"train": 200}, seq_len=32, size_limit=1 << 11)
    first, fresh, whole = (tmp_path / name for name in ("first", "fresh", "whole"))
    for folder in (first, fresh, whole):
        folder.mkdir()
    checkpoints = f"{s3_prefix}/checkpoints"
    settings = [f"checkpoint.dir={checkpoints}", "checkpoint.async_save=true"]
    run(write_config(first, data), "train.max_steps=4", *settings)
    journal = run(write_config(fresh, data), "train.max_steps=7", *settings)
    [resume] = [e for e in journal if e["event"] == "resume"]
    assert resume["step"] == 4 and resume["checkpoint"] == f"{checkpoints}/step-00000004"
    ledger = [json.loads(line) for line in (fresh / "runs" / "run" / "ledger" / "rank-00000.jsonl").open()]
    assert [r["step"] for r in ledger][0] == 5 and ledger[0]["positions"][0] == 4 * 4

    run(write_config(whole, data), "train.max_steps=7", f"checkpoint.dir={s3_prefix}/whole")
    _, resumed = read_model_state(checkpoints)
    _, uninterrupted = read_model_state(f"{s3_prefix}/whole")
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_consolidation_reads_one_tensor_at_a_time(tmp_path):
    """A 200 MB model (4 x 50 MB blocks, no tensor over 17 MB) consolidates with peak RSS growing by
    less than 80 MB (under 5x the largest tensor, 40% of the model), the bound in docs/operations.md."""
    config = MPTConfig.preset("tiny", d_model=1024, n_heads=8, n_layers=4, max_seq_len=64)
    torch.manual_seed(0)
    model = MPT(config)
    state = model.state_dict()
    total = sum(t.numel() * t.element_size() for t in state.values())
    largest = max(t.numel() * t.element_size() for t in state.values())
    assert total > 190e6 and largest < 17e6
    checkpoint = tmp_path / "step-00000001"
    dcp.save({"model": state}, checkpoint_id=str(checkpoint), no_dist=True)
    overrides = {"d_model": 1024, "n_heads": 8, "n_layers": 4, "max_seq_len": 64}
    finalize(str(checkpoint), {"step": 1, "config": {"model": {"preset": "tiny", "overrides": overrides}}})

    out = tmp_path / "consolidated"
    # The baseline is taken after imports and after building one model skeleton on the meta device,
    # whose lazy initialisation (~80 MB here) does not grow with the model.
    probe = textwrap.dedent(f"""\
        import re, sys
        from training.model import MPTConfig
        from training.weights.consolidate import main
        from training.weights.hf_convert import expected_shapes
        def status(key):
            return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        expected_shapes(MPTConfig.preset("tiny"))
        before = status("VmRSS")
        code = main([{str(checkpoint)!r}, {str(out)!r}])
        print(before, status("VmHWM"), code)
        """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    before, peak, code = map(int, result.stdout.split()[-3:])
    assert code == 0
    assert peak - before < 80e6, f"consolidation grew RSS by {(peak - before) / 1e6:.0f} MB"

    loaded, loaded_config, tokenizer = load_model(out, attn_impl=None)
    assert loaded_config == config and tokenizer is None
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in state.items())
