"""training.planning.preflight: a clean config passes; each planted problem is flagged with its reason."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from training.planning import preflight
from training.planning.preflight import PreflightOptions, run_preflight

ROOT = Path(__file__).resolve().parents[2]
VOCAB, SEQ_LEN, SAMPLES = 64, 32, 200


def write_dataset(root: str) -> str:
    """Counting-up samples (easy to learn) in a few hashed shards, with a manifest."""
    with MDSWriter(f"{root}/v=1/train", token_columns(VOCAB), hashes=["xxh3_64"], size_limit=1 << 12) as writer:
        for i in range(SAMPLES):
            writer.write({"tokens": ((i * 7 + np.arange(SEQ_LEN)) % VOCAB).astype(np.uint16)})
    write_manifest(root, DatasetManifest(
        version=1, seq_len=SEQ_LEN, token_dtype="uint16", vocab_size=VOCAB, num_samples={"train": SAMPLES},
        num_tokens={"train": SAMPLES * SEQ_LEN}, splits=["train"], config_hash="t", tokenizer_hash="t", seed=0,
    ))
    return root


def write_config(folder: Path, dataset: str, **changes) -> str:
    cfg = {
        "name": "preflight-test", "output_dir": str(folder / "runs"),
        "model": {"preset": "tiny", "overrides": {"max_seq_len": SEQ_LEN, "vocab_size": VOCAB}},
        "data": {"datasets": [{"path": dataset}], "eval_split": None, "num_workers": 0},
        "train": {"max_steps": 10, "global_batch_size": 16, "micro_batch_size": 8},
        "optimizer": {"lr": 3.0e-3},
        "logging": {"progress_bar": False, "mlflow": False, "plot": False},
    }
    cfg.update(changes)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def setup(tmp_path):
    return tmp_path, write_dataset(str(tmp_path / "data"))


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_a_sound_config_passes_and_measures_throughput(setup, capsys):
    folder, dataset = setup
    config = write_config(folder, dataset)
    code = preflight.main([config, "--on-call", "ana@example.com", "--steps", "4", "--price", "2", "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert code == 0
    assert checks["trackers"]["status"] == "WARN"  # this config turns MLflow off
    assert checks["checkpoint interval"]["status"] == "WARN"  # ...and saves no periodic checkpoint
    assert "checkpoint.every_steps is 0" in checks["checkpoint interval"]["reason"]
    assert all(c["status"] == "PASS" for name, c in checks.items() if name not in ("trackers", "checkpoint interval"))
    assert "->" in checks["training steps"]["reason"] and "tokens/s" in checks["throughput"]["reason"]
    assert not (folder / "runs").exists()  # the checkpoint probe leaves nothing behind


def test_vocabulary_mismatch_fails(setup):
    folder, dataset = setup
    config = write_config(folder, dataset)
    checks = by_name(run_preflight(config, ["model.overrides.vocab_size=50"], PreflightOptions(steps=0, on_call="x")))
    assert checks["vocabulary"].status == "FAIL"
    assert "the tokenizer has 64 tokens but the model's vocab_size is 50" in checks["vocabulary"].reason


def test_unreachable_data_fails_and_holds_back_what_needs_it(setup, capsys):
    folder, _ = setup
    config = write_config(folder, str(folder / "no-such-dataset"))
    assert preflight.main([config, "--on-call", "x", "--steps", "0"]) == 1
    printed = capsys.readouterr().out
    assert "FAIL  data" in printed and "no-such-dataset" in printed
    assert "WARN  tokens          not run: the data check failed" in printed


def test_fewer_tokens_than_planned_fails_unless_repeating_is_allowed(setup):
    folder, dataset = setup
    config = write_config(folder, dataset)
    options = PreflightOptions(steps=0, on_call="x")
    tokens = by_name(run_preflight(config, ["train.max_steps=1000"], options))["tokens"]
    assert tokens.status == "FAIL" and "holds 6,400" in tokens.reason and "80.00 epochs" in tokens.reason
    options.allow_repeat = True
    assert by_name(run_preflight(config, ["train.max_steps=1000"], options))["tokens"].status == "WARN"


def test_corrupt_shard_missing_identity_and_bad_config(setup):
    folder, dataset = setup
    config = write_config(folder, dataset, name=None)
    shard = sorted(Path(dataset, "v=1", "train").glob("shard.*.mds"))[-1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    checks = by_name(run_preflight(config, [], PreflightOptions(steps=0)))
    assert checks["shard hashes"].status == "FAIL" and shard.name in checks["shard hashes"].reason
    assert checks["run identity"].status == "FAIL"
    assert "name is unset" in checks["run identity"].reason and "on-call" in checks["run identity"].reason
    bad = run_preflight(config, ["train.micro_batch_size=3"], PreflightOptions(steps=0))
    assert [(c.name, c.status) for c in bad] == [("config", "FAIL")] and "multiple of" in bad[0].reason


def test_read_only_checkpoint_folder_fails(setup, capsys):
    """Root ignores permission bits, so as root the preflight runs in a child without CAP_DAC_OVERRIDE."""
    folder, dataset = setup
    read_only = folder / "read-only"
    read_only.mkdir()
    config = write_config(folder, dataset, output_dir=str(read_only / "runs"))
    args = [config, "--on-call", "x", "--steps", "0"]
    read_only.chmod(0o555)
    try:
        if os.geteuid() != 0:
            code = preflight.main(args)
            printed = capsys.readouterr().out
        else:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
            drop = "-dac_override,-dac_read_search"
            child = subprocess.run([setpriv, "--bounding-set", drop, "--inh-caps", drop, sys.executable,
                                    "-m", "training.preflight", *args], cwd=ROOT, capture_output=True, text=True,
                                   timeout=120)
            code, printed = child.returncode, child.stdout
    finally:
        read_only.chmod(0o755)
    assert code == 1
    line = next(line for line in printed.splitlines() if line.startswith("FAIL  checkpoints"))
    assert "cannot save and load a checkpoint" in line and "Permission denied" in line
    assert list(read_only.iterdir()) == []


def test_checkpoint_interval_is_judged_against_young_daly(setup):
    """A 60 s save and 1 failure per 1,000 GPU-days give one rank a job MTBF of 24,000 h: an interval of
    sqrt(2 x 60 x 86.4e6) s, about 28 h, far more than every 5 steps of a tiny model."""
    folder, dataset = setup
    config = write_config(folder, dataset, checkpoint={"every_steps": 5})
    options = PreflightOptions(steps=3, on_call="x", save_seconds=60.0)
    interval = by_name(run_preflight(config, [], options))["checkpoint interval"]
    assert interval.status == "WARN" and "checkpoint.every_steps=5 is outside [0.5x, 2x]" in interval.reason
    assert "Young/Daly: sqrt(2 x 60.0 s save (given) x 24,000.0 h job MTBF) = 1,697.1 min" in interval.reason
    assert preflight.interval_verdict(100, 100.0) == preflight.interval_verdict(51, 100.0) == "PASS"
    assert preflight.interval_verdict(199, 100.0) == "PASS" and preflight.interval_verdict(201, 100.0) == "WARN"
    assert preflight.interval_verdict(49, 100.0) == "WARN" and preflight.interval_verdict(0, 100.0) == "WARN"
