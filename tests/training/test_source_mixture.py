"""Mixing by source: the ETL packs each source into samples of its own and weights sources, and training
mixes the sources of one dataset by a schedule.

One ETL run (tokenize with ``pack_by_source``, shuffle_and_write with ``source_weights``) on three
sources, then:

* every sample holds one source, the weights give their repetition (web twice, books a half, code once),
  and the manifest records each source's samples and tokens before and after weighting;
* through the order function, a two-phase schedule over two sources of that dataset gives each source
  its share of the tokens within 1% in every phase (30 mixing blocks a phase), counted from the
  sources file the ETL wrote;
* a short run on 2 ranks (``python -m training.launch``) trains on exactly the order's samples, each
  from its configured source, and logs each source's tokens to metrics.jsonl; the same run with one rank
  SIGKILLed in phase 2 and launched again ends with the same ledger and bitwise the same weights. (This
  is also test_schedule.py's run of a schedule over two datasets: sources of one dataset and separate
  datasets reach the order function the same way.)
"""
from __future__ import annotations

import collections
import io
import json
import textwrap

import numpy as np
import pytest
import torch

from etl.load_config import load_pipeline_config
from etl.pipeline import run_pipeline
from shards import read_manifest, storage
from shards.mds import MDSReader
from shards.provenance import arrow_dataset, open_delta_table
from tests.etl.corpus import fixture_docs, write_fixture_tokenizer, write_jsonl
from tests.training.subprocess_env import finish, start_launch
from training.config import load_config
from training.data.order import MIX_BLOCK, build_order, schedule_phases
from training.data.sources import resolve_source
from training.weights.checkpoint_reader import read_model_state

SEQ_LEN, BUCKETS = 32, 2
WEIGHTS = {"web": 2.0, "books": 0.5}  # code: 1


@pytest.fixture(scope="module")
def work(spark, tmp_path_factory):
    """The ETL's dataset under ``work/out/dataset``, built in this process's Spark session from relative paths."""
    work = tmp_path_factory.mktemp("mixture")
    docs = fixture_docs(60)
    for source in ("web", "books", "code"):
        write_jsonl(work / "in" / f"{source}.jsonl", [d for d in docs if d["source"] == source])
    write_fixture_tokenizer(work / "tok")
    (work / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        output: out
        inputs:
          - {{path: in/web.jsonl, source: web}}
          - {{path: in/books.jsonl, source: books}}
          - {{path: in/code.jsonl, source: code}}
        stages:
          - {{name: tokenize, params: {{tokenizer: tok, seq_len: {SEQ_LEN}, num_buckets: {BUCKETS},
                                       val_fraction: 0.1, pack_by_source: true}}}}
          - {{name: shuffle_and_write, params: {{size_limit: 3000, source_weights: {json.dumps(WEIGHTS)}}}}}
        """))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        config, stages = load_pipeline_config("pipeline.yaml")
        run_pipeline(config, stages, spark, progress=lambda line: None)
    return work


def keys_of(split_dir: str) -> list[tuple[int, int]]:
    reader = MDSReader(split_dir)
    return [(reader[i]["bucket"], reader[i]["bucket_index"]) for i in range(len(reader))]


def source_numbers(version_dir: str, split: str, manifest) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(f"{version_dir}/{manifest.extra['sources']['files'][split]}")))


def test_each_sample_holds_one_source_and_weights_repeat_or_subsample_it(work):
    dataset = str(work / "out" / "dataset")
    manifest = read_manifest(dataset)
    version_dir = f"{dataset}/v={manifest.version}"
    sources = manifest.extra["sources"]
    assert sources["names"] == ["books", "code", "web"]
    assert sources["weights"] == {"books": 0.5, "code": 1.0, "web": 2.0}
    provenance = arrow_dataset(open_delta_table(str(work / "out" / "tokenize" / "provenance"))).to_table().to_pylist()
    per_sample = collections.defaultdict(set)
    for row in provenance:
        if row["kept"]:
            per_sample[(row["split"], row["bucket"], row["sample_index"])].add(row["source"])
    assert per_sample and all(len(found) == 1 for found in per_sample.values())
    for split in manifest.splits:
        keys = keys_of(f"{version_dir}/{split}")
        numbers = source_numbers(version_dir, split, manifest)
        # The sources file agrees with the shards: source k packs into buckets [k x BUCKETS, (k + 1) x BUCKETS).
        assert numbers.tolist() == [bucket // BUCKETS for bucket, _ in keys]
        assert all(per_sample[(split, b, i)] == {sources["names"][b // BUCKETS]} for b, i in keys)
        copies = collections.Counter(keys)
        tokenized = collections.Counter(b for (s, b, _) in per_sample if s == split)  # samples per bucket
        for k, name in enumerate(sources["names"]):
            mine = {key: n for key, n in copies.items() if key[0] // BUCKETS == k}
            weight = sources["weights"][name]
            if weight >= 1:  # every sample, weight times
                assert set(mine.values()) == {int(weight)}
            else:  # each bucket's first round(weight x samples), once
                for bucket in range(k * BUCKETS, (k + 1) * BUCKETS):
                    kept = sorted(i for b, i in mine if b == bucket)
                    assert kept == list(range(round(weight * tokenized[bucket])))
            counts = sources["samples"][split][name]
            assert counts == {"before": sum(tokenized[b] for b in range(k * BUCKETS, (k + 1) * BUCKETS)),
                              "after": sum(mine.values())}
            assert sources["tokens"][split][name] == {"before": counts["before"] * SEQ_LEN,
                                                      "after": counts["after"] * SEQ_LEN}
        assert manifest.num_samples[split] == len(keys)
    assert manifest.num_tokens == {s: manifest.num_samples[s] * SEQ_LEN for s in manifest.splits}
    # The run report shows each source's weight and tokens before and after.
    report = json.loads((work / "out" / "report" / "report.json").read_text())
    assert report["dataset"]["sources"]["web"] == {
        "weight": 2.0, **{k: sum(t["web"][k] for t in sources["tokens"].values()) for k in ("before", "after")}}
    assert "tokens before weighting" in (work / "out" / "report" / "report.html").read_text()
    quality = json.loads(storage.read_bytes(f"{version_dir}/report/shuffle_quality.json"))
    assert quality["samples"] == len({k for k in per_sample if k[0] == "train"} & set(
        (("train", b, i) for b, i in keys_of(f"{version_dir}/train"))))  # each written sample once


def test_mistakes_are_config_errors_naming_what_there_is(work, tmp_path):
    from etl.load_config import validate_pipeline_config
    from shards.config import ConfigError
    from tests.training.token_datasets import write_token_dataset

    dataset = str(work / "out" / "dataset")
    with pytest.raises(ValueError, match=r"has no source 'wiki'; its sources are \['books', 'code', 'web'\]"):
        resolve_source(dataset, "train", source="wiki")
    plain = write_token_dataset(str(tmp_path / "plain"), {"train": 4}, seq_len=8)
    with pytest.raises(ValueError, match="packs several sources into each sample.*pack_by_source: true"):
        resolve_source(plain, "train", source="web")
    # Weights need samples of one source each: refused when the config is loaded, before Spark starts.
    data = {"output": str(tmp_path / "out"), "inputs": [{"path": str(tmp_path), "source": "web"}],
            "stages": [{"name": "tokenize", "params": {"tokenizer": str(work / "tok")}},
                       {"name": "shuffle_and_write", "params": {"source_weights": {"web": 2.0}}}]}
    with pytest.raises(ConfigError, match=r"stages\[1\]\.params\.source_weights: .*set pack_by_source: true"):
        validate_pipeline_config(data, check_inputs=False)
    data["stages"][1]["params"]["source_weights"] = {"web": 0}
    with pytest.raises(ConfigError, match="source_weights must be numbers > 0"):
        validate_pipeline_config(data, check_inputs=False)


STEPS, BATCH = 8, 8


def write_train_config(work) -> None:
    (work / "train.yaml").write_text(textwrap.dedent(f"""\
        output_dir: runs
        model: {{preset: tiny, overrides: {{d_model: 16, n_heads: 2, n_layers: 1, max_seq_len: {SEQ_LEN}, vocab_size: 320}}}}
        data:
          datasets: [{{path: out/dataset, source: web}}, {{path: out/dataset, source: books}}]
          num_workers: 0
          eval_split: null
          schedule: [{{until_step: 4, proportions: [3, 1]}}, {{until_step: null, proportions: [1, 3]}}]
        train: {{max_steps: {STEPS}, global_batch_size: {BATCH}, micro_batch_size: 4}}
        optimizer: {{lr: 1.0e-2}}
        checkpoint: {{every_steps: 2}}
        logging: {{every_steps: 4, sample_ledger: true, progress_bar: false, mlflow: false, plot: false}}
        """))


def test_a_two_phase_schedule_over_two_sources_gives_each_its_tokens(work):
    dataset = str(work / "out" / "dataset")
    manifest = read_manifest(dataset)
    numbers = source_numbers(f"{dataset}/v={manifest.version}", "train", manifest)
    web, books = (resolve_source(dataset, "train", source=name) for name in ("web", "books"))
    phases = [(30 * MIX_BLOCK, [0.7, 0.3]), (None, [0.2, 0.8])]
    order = build_order([web, books], seed=7, shuffle=True, window_shards=2, phases=phases)
    datasets, samples = order.locate(0, 60 * MIX_BLOCK)
    assert (numbers[samples[datasets == 0]] == web.source_number).all()
    assert (numbers[samples[datasets == 1]] == books.source_number).all()
    for phase, (_, proportions) in enumerate(phases):
        tokens = np.bincount(numbers[samples[phase * 30 * MIX_BLOCK:(phase + 1) * 30 * MIX_BLOCK]],
                             minlength=3) * SEQ_LEN  # every sample holds SEQ_LEN tokens of its source
        shares = tokens[[web.source_number, books.source_number]] / tokens.sum()
        assert np.allclose(shares, proportions, rtol=0.01), (phase, shares)
    # An epoch of a source covers each of its samples once (twice-written web samples appear twice).
    first_epoch = np.sort(samples[datasets == 0][:web.drawable])
    assert first_epoch.tolist() == np.flatnonzero(numbers == web.source_number).tolist()


def test_a_run_mixes_the_sources_of_one_dataset_and_logs_their_tokens(work):
    """Side by side on 2 ranks: a run, and the same run with rank 1 SIGKILLed in phase 2 (after step 7)
    and launched again."""
    write_train_config(work)
    launch = start_launch(work, "mix", [], nproc=2, KILN_FAULT_PLAN="")
    killed = start_launch(work, "killed", [], nproc=2, KILN_FAULT_PLAN="kill_at_step=7@1")
    cfg = load_config(work / "train.yaml", ["name=check"])
    dataset = str(work / "out" / "dataset")
    sources = [resolve_source(dataset, "train", source=s.source) for s in cfg.data.datasets]
    order = build_order(sources, cfg.data.seed, True, cfg.data.shuffle_window_shards,
                        schedule_phases(cfg.data.schedule, BATCH))
    datasets, samples = order.locate(0, STEPS * BATCH)
    finish(launch)
    run = launch[1]
    assert [sample for _, sample in ledger_of(run)] == order.sample_ids(datasets, samples).tolist()
    numbers = source_numbers(f"{dataset}/v={sources[0].version}", "train", read_manifest(dataset))
    assert (numbers[samples] == np.array([s.source_number for s in sources])[datasets]).all()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in logged if "tokens/web" in m][-1]
    drawn = np.bincount(datasets, minlength=2) * SEQ_LEN
    assert (last["tokens/web"], last["tokens/books"]) == tuple(drawn.tolist())
    assert last["tokens/web"] + last["tokens/books"] == last["tokens"]

    finish(killed, succeeds=False)
    finish(start_launch(work, "killed", [], nproc=2, KILN_FAULT_PLAN=""))
    assert ledger_of(killed[1]) == ledger_of(run)
    mine, theirs = (read_model_state(str(r / "checkpoints"))[1] for r in (killed[1], run))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def ledger_of(run) -> list[tuple[int, int]]:
    """(position, sample id) of every sample the run trained on, the last attempt's where steps were redone."""
    lines = [json.loads(line) for path in sorted((run / "ledger").glob("rank-*.jsonl"))
             for line in path.read_text().splitlines()]
    latest = {}
    for line in sorted(lines, key=lambda line: line["attempt"]):
        latest.update(zip(line["positions"], line["sample_ids"]))
    return sorted(latest.items())
