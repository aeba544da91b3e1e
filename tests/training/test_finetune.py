"""The trainer beyond pre-training, on CPU with gloo: evaluation tasks at its evaluation points,
instruction fine-tuning from `init_from` weights, and both on two ranks.

One small world throughout: facts such as "the lemon is yellow ." (training.eval.synthetic), a byte-level
BPE trained on them, a pre-training dataset of those facts, ICL task files and vibe prompts about them,
and question/answer JSONL for fine-tuning.
"""
from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from shards.manifest import DatasetManifest, write_manifest
from shards.mds import MDSWriter, token_columns
from tests.training.subprocess_env import child_env
from training.config import load_config
from training.data.finetune import read_instruction_jsonl, tokenize_example
from training.data.loader import as_tensors
from training.data.sources import IGNORE_INDEX
from training.eval.synthetic import FactsTask, train_byte_bpe
from training.run.journal import read_events
from training.tokenizer import TextTokenizer
from training.weights.export_hf import export_hf
from training.weights.inference import load_model
from training.weights.layout import save_consolidated

SEQ_LEN, VOCAB = 48, 384
PRETRAIN_STEPS, FINETUNE_STEPS = 30, 24


def question(obj: str) -> str:
    return f"question: what colour is the {obj}?\nanswer:"


def write_facts_dataset(root: Path, facts: FactsTask, tokenizer: TextTokenizer, splits: dict[str, int]) -> None:
    """A versioned token dataset of runs of facts, SEQ_LEN tokens a sample."""
    rng = random.Random(1)
    for split, count in splits.items():
        with MDSWriter(str(root / "v=1" / split), token_columns(VOCAB), hashes=["xxh3_64"]) as writer:
            for _ in range(count):
                ids: list[int] = []
                while len(ids) < SEQ_LEN:
                    ids += tokenizer.encode(facts.training_text(rng)) + [tokenizer.eos_id]
                writer.write({"tokens": np.asarray(ids[:SEQ_LEN], np.uint16)})
    write_manifest(str(root), DatasetManifest(
        version=1, seq_len=SEQ_LEN, token_dtype="uint16", vocab_size=tokenizer.vocab_size,
        num_samples=dict(splits), num_tokens={s: n * SEQ_LEN for s, n in splits.items()}, splits=list(splits),
        config_hash="test", tokenizer_hash="test", seed=0))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("finetune")
    facts = FactsTask.make(0)
    rng = random.Random(0)
    answers = [f"{question(obj)} {colour} ." for obj, colour in facts.facts.items()]
    tokenizer = train_byte_bpe([facts.training_text(rng) for _ in range(300)] + answers, VOCAB)
    tokenizer.save(work / "tokenizer.json")
    write_facts_dataset(work / "facts", facts, tokenizer, {"train": 240, "val": 16})
    tasks = facts.write_jsonl(work / "tasks")
    vibe_prompts = json.dumps(["the lemon is", question("sky")])  # JSON is YAML
    (work / "tasks" / "tasks.yaml").write_text(textwrap.dedent(f"""\
        icl_tasks:
          - {{label: facts_lm, dataset_uri: {tasks['language_modeling'].name}, icl_task_type: language_modeling,
             max_examples: 12}}
          - {{label: facts_mc, dataset_uri: {tasks['multiple_choice'].name}, icl_task_type: multiple_choice,
             max_examples: 12}}
        vibe: {{prompts: {vibe_prompts}, max_new_tokens: 6}}
        """))
    examples = [{"prompt": question(obj), "response": f" {colour} ."} for obj, colour in facts.facts.items()] * 4
    (work / "qa.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    (work / "pretrain.yaml").write_text(textwrap.dedent(f"""\
        output_dir: {work / 'runs'}
        model: {{preset: tiny, overrides: {{d_model: 64, n_heads: 4, max_seq_len: {SEQ_LEN}, vocab_size: {VOCAB}}}}}
        data: {{datasets: [{{path: {work / 'facts'}}}], num_workers: 0, shuffle_window_shards: 2}}
        train: {{max_steps: {PRETRAIN_STEPS}, global_batch_size: 8, micro_batch_size: 4}}
        optimizer: {{lr: 3.0e-3}}
        schedule: {{warmup_steps: 3}}
        eval: {{every_steps: 15, batches: 1, tasks: {work / 'tasks' / 'tasks.yaml'},
                tokenizer: {work / 'tokenizer.json'}}}
        logging: {{progress_bar: false, plot: false}}
        watchdog: {{timeout_s: 600}}
        """))
    (work / "finetune.yaml").write_text(textwrap.dedent(f"""\
        output_dir: {work / 'runs'}
        model: {{preset: tiny, overrides: {{d_model: 64, n_heads: 4, max_seq_len: {SEQ_LEN}, vocab_size: {VOCAB}}}}}
        data:
          instruction: {{path: {work / 'qa.jsonl'}, tokenizer: {work / 'tokenizer.json'}, eval_fraction: 0.25,
                         cache_dir: {work / 'packed'}}}
          num_workers: 0
        train: {{max_steps: {FINETUNE_STEPS}, global_batch_size: 4, micro_batch_size: 2}}
        optimizer: {{lr: 2.0e-3}}
        schedule: {{warmup_steps: 2}}
        eval: {{every_steps: 12, batches: 2}}
        logging: {{progress_bar: false, plot: false, mlflow: false}}
        """))
    return work


def train_in_process(config: Path, *overrides: str) -> dict:
    from training.train import train

    try:
        return train(load_config(config, list(overrides)))
    finally:
        gc.collect()  # the run's gloo groups, in reference cycles, must not be collected in a forked child


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(work) -> Path:
    """Run (a): pre-training with eval.tasks at steps 15 and 30, saving a sharded checkpoint."""
    train_in_process(work / "pretrain.yaml", "name=pretrain", f"checkpoint.dir={work / 'pretrain-ckpt'}")
    return work / "runs" / "pretrain"


ICL_METRICS = ("eval/icl/facts_lm/0-shot/acc", "eval/icl/facts_mc/0-shot/acc", "eval/icl/facts_mc/0-shot/acc_norm")


def test_eval_tasks_are_logged_at_every_evaluation_point(pretrained, work):
    evals = [r for r in read_metrics(pretrained) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [15, 30]
    for record in evals:  # one line per evaluation point: eval loss and every task metric together
        assert set(ICL_METRICS) <= set(record) and all(0 <= record[key] <= 1 for key in ICL_METRICS)
    assert evals[1]["eval/icl/facts_mc/0-shot/acc"] >= 0.5  # 4 choices: chance is 0.25
    vibe = [json.loads(line) for line in (pretrained / "vibe" / "step_000030.jsonl").read_text().splitlines()]
    assert [v["prompt"] for v in vibe] == ["the lemon is", question("sky")] and vibe[0]["step"] == 30
    assert (pretrained / "vibe" / "step_000015.jsonl").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kiln")
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'pretrain'")
    for key in (*ICL_METRICS, "eval_loss"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [15, 30], key
        assert history[-1].value == pytest.approx(evals[-1][key])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "vibe")}
    assert artifacts == {"vibe/step_000015.jsonl", "vibe/step_000030.jsonl"}


def test_instruction_batches_carry_loss_on_response_tokens_only(work):
    """What the trainer's data path yields for data.instruction: labels only where a response token follows."""
    from training.data.resolve import make_batches, resolve_sources

    cfg = load_config(work / "finetune.yaml")
    train, held_out = resolve_sources(cfg)
    assert train[0].split == "train" and held_out[0].split == "held_out"
    tokenizer = TextTokenizer.from_file(work / "tokenizer.json")
    examples = read_instruction_jsonl(work / "qa.jsonl")
    assert (train[0].num_samples + held_out[0].num_samples) * SEQ_LEN < sum(
        len(tokenize_example(tokenizer, e, tokenizer.eos_id)[0]) for e in examples) * 2  # several examples a row

    class OneRank:
        rank, world_size = 0, 1

    batch = as_tensors(next(iter(make_batches(train, cfg.data, 4, 4, OneRank, shuffle=True))))
    assert set(batch) >= {"input_ids", "labels", "sequence_ids"}
    answers = {tuple(tokenize_example(tokenizer, e, tokenizer.eos_id)[0]): e for e in examples}
    checked = 0
    for ids, labels, seqs in zip(batch["input_ids"], batch["labels"], batch["sequence_ids"]):
        for doc in seqs.unique().tolist():
            where = (seqs == doc).nonzero().flatten()
            tokens = tuple(ids[where].tolist())
            if tokens not in answers:
                continue  # the padding after the last example
            prompt_len = len(tokenizer.encode(answers[tokens].prompt))
            targets = labels[where].tolist()
            # Position t of the example predicts token t + 1, and only response tokens are targets.
            assert targets[:prompt_len - 1] == [IGNORE_INDEX] * (prompt_len - 1)
            assert targets[prompt_len - 1:-1] == list(tokens[prompt_len:]) and targets[-1] == IGNORE_INDEX
            checked += 1
    assert checked >= 4


def held_out_losses(run_dir: Path) -> list[float]:
    return [r["eval_loss"] for r in read_metrics(run_dir) if "eval_loss" in r]


@pytest.fixture(scope="module")
def first_step(pretrained, work) -> float:
    """The held-out loss after one fine-tuning step from run (a)'s sharded checkpoint."""
    train_in_process(work / "finetune.yaml", "name=sft", f"init_from={work / 'pretrain-ckpt'}",
                     "train.max_steps=1", "eval.every_steps=1")
    return held_out_losses(work / "runs" / "sft")[0]


def test_fine_tuning_from_a_checkpoint_lowers_held_out_response_loss(first_step, work):
    """Run (b): instruction fine-tuning through the trainer, init_from run (a)'s sharded checkpoint."""
    start = first_step
    train_in_process(work / "finetune.yaml", "name=sft-full", f"init_from={work / 'pretrain-ckpt'}")
    losses = held_out_losses(work / "runs" / "sft-full")
    assert len(losses) == 2 and losses[-1] < 0.5 * start, (start, losses)
    events = read_events(work / "runs" / "sft-full" / "journal.jsonl")
    assert [e["source"] for e in events if e["event"] == "init_from"] == [
        f"checkpoint {work / 'pretrain-ckpt' / 'step-00000030'}"]

    # A fresh model learns the answers' format too, but from much further away.
    train_in_process(work / "finetune.yaml", "name=sft-scratch", "train.max_steps=1", "eval.every_steps=1")
    assert held_out_losses(work / "runs" / "sft-scratch")[0] > start + 1.0


def test_init_from_consolidated_and_hugging_face_weights_and_autoresume_wins(first_step, work, tmp_path):
    model, config, _ = load_model(work / "pretrain-ckpt", attn_impl=None)
    save_consolidated(model, config, tmp_path / "consolidated")
    export_hf(tmp_path / "consolidated", tmp_path / "hf")
    train_in_process(work / "finetune.yaml", "name=from-hf", f"output_dir={tmp_path}", f"init_from={tmp_path / 'hf'}",
                     "train.max_steps=1", "eval.every_steps=1")
    assert held_out_losses(tmp_path / "from-hf")[0] == pytest.approx(first_step, rel=1e-5)
    run = ["name=resumable", f"output_dir={tmp_path}", f"init_from={tmp_path / 'consolidated'}",
           f"checkpoint.dir={tmp_path / 'ckpt'}", "eval.every_steps=1"]
    train_in_process(work / "finetune.yaml", *run, "train.max_steps=2")
    assert held_out_losses(tmp_path / "resumable")[0] == pytest.approx(first_step, rel=1e-5)
    # The same run, relaunched longer: its own checkpoint wins over init_from.
    train_in_process(work / "finetune.yaml", *run, "train.max_steps=3")
    events = read_events(tmp_path / "resumable" / "journal.jsonl")
    assert [e["source"] for e in events if e["event"] == "init_from"] == [f"consolidated {tmp_path / 'consolidated'}"]
    assert [e["step"] for e in events if e["event"] == "resume"] == [2]
    assert [r["step"] for r in read_metrics(tmp_path / "resumable") if "eval_loss" in r] == [1, 2, 3]


def test_launch_rejects_bad_tasks_instruction_data_and_init_from(pretrained, work, tmp_path, capsys):
    from training.launch import main

    (tmp_path / "bad_tasks.yaml").write_text("icl_tasks: [{label: x, dataset_uri: nowhere.jsonl, "
                                             "icl_task_type: multiple_choice}]\n")
    (tmp_path / "no_tok_tasks.yaml").write_text("vibe: {prompts: [hi]}\n")
    (tmp_path / "code.jsonl").write_text(json.dumps({"task_id": "t", "prompt": "def f():\n", "canonical_solution": "",
                                                     "test": "", "entry_point": "f"}) + "\n")
    (tmp_path / "code_tasks.yaml").write_text("code_tasks: [{label: c, dataset_uri: code.jsonl}]\n"
                                              "sandbox: {isolation: none}\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    wider = tmp_path / "wider"
    model, config, _ = load_model(work / "pretrain-ckpt", attn_impl=None)
    save_consolidated(model, config, wider)
    pretrain, finetune = str(work / "pretrain.yaml"), str(work / "finetune.yaml")
    cases = [
        (pretrain, [f"eval.tasks={tmp_path / 'bad_tasks.yaml'}"], "nowhere.jsonl"),
        (pretrain, [f"eval.tasks={tmp_path / 'no_tok_tasks.yaml'}", "eval.tokenizer=null"], "need a tokenizer"),
        (pretrain, [f"eval.tasks={tmp_path / 'code_tasks.yaml'}"], "refusing to run it"),
        (pretrain, ["eval.every_steps=0"], "eval.tasks is set but eval.every_steps is 0"),
        (finetune, [f"data.instruction.path={tmp_path / 'bad.jsonl'}"], "bad.jsonl:2: key 'response'"),
        (finetune, [f"data.datasets=[{{path: {work / 'facts'}}}]"], "either datasets"),
        (finetune, ["init_from=/nonexistent/weights"], "is neither a training checkpoint"),
        (finetune, [f"init_from={work / 'pretrain-ckpt'}", "model.overrides.d_model=32"],
         "wte.weight has shape (384, 64), expected (384, 32)"),
        (finetune, [f"init_from={wider}", "model.overrides.n_layers=3"], "missing blocks.2.attn.Wqkv.weight"),
    ]
    for config, args, message in cases:
        assert main([config, *args]) == 2, args
        assert message in capsys.readouterr().err, args


def test_two_ranks_evaluate_without_hanging_and_log_once(pretrained, work):
    """Run (c): 2 ranks (FSDP over gloo) with eval.tasks; rank 0 evaluates, its numbers match one rank's."""
    log = work / "two.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "training.launch", str(work / "pretrain.yaml"), "name=two",
                               "--nproc-per-node", "2", "train.max_steps=15", "schedule.decay_steps=30",
                               "logging.mlflow=false"],
                              cwd=work, env=child_env(), stdout=out, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, log.read_text()[-6000:]
    evals = [r for r in read_metrics(work / "runs" / "two") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [15]
    single = next(r for r in read_metrics(pretrained) if "eval_loss" in r)
    for key in ("eval_loss", *ICL_METRICS):
        assert evals[0][key] == pytest.approx(single[key], abs=1e-3), key
    assert len((work / "runs" / "two" / "vibe" / "step_000015.jsonl").read_text().splitlines()) == 2
    assert log.read_text().count("step 15: eval_loss") == 1  # the console line, from rank 0 only
