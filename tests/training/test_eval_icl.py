"""In-context-learning evaluation: prompts as llm-foundry builds them, metrics equal to a hand-computed
reference, a tiny model trained on a synthetic task scores above chance, and EleutherAI's lm-eval run on
the exported model agrees; perplexity on MDS shards; run_evals and the CLI end to end."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from shards import MDSWriter
from training.eval import run_evals
from training.eval.__main__ import main as eval_main
from training.eval.icl import ICLTask, PromptBuilder, evaluate_icl_task, read_examples
from training.eval.perplexity import PerplexityTask, evaluate_perplexity
from training.eval.synthetic import FactsTask, train_facts_model
from training.model import MPT, MPTConfig
from training.weights.export_hf import export_hf
from training.weights.layout import save_consolidated

ROOT = Path(__file__).resolve().parents[2]
LMEVAL_PYTHON = ROOT / ".cache" / "venv-lmeval" / "bin" / "python"
HUMANEVAL = Path(__file__).resolve().parents[1] / "data" / "humaneval_mini.jsonl"


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    """The synthetic facts task files and a tiny model trained on them (~20 s of CPU)."""
    task = FactsTask.make(0)
    model, tokenizer = train_facts_model(task, steps=200)
    folder = tmp_path_factory.mktemp("facts")
    return task.write_jsonl(folder), model, tokenizer, folder


def icl(kind: str, path, **options) -> ICLTask:
    return ICLTask(label=kind, dataset_uri=str(path), icl_task_type=kind, **options)


def test_prompts_follow_llm_foundry(facts):
    paths, model, tokenizer, _ = facts
    examples = read_examples(paths["multiple_choice"], "multiple_choice")
    task = icl("multiple_choice", paths["multiple_choice"], prompt_string="Colours:", continuation_delimiter="\nA:",
               example_delimiter="\n\n")
    builder = PromptBuilder(task, tokenizer, examples, max_seq_len=128)
    assert builder.prefix_space
    requests = builder.requests(0, 2, random.Random(1))
    shots = sorted(random.Random(1).sample(range(1, len(examples)), 2))
    solved = "".join(f"\n\n{examples[i]['query']}\nA:{examples[i]['choices'][examples[i]['gold']]}" for i in shots)
    expected_context = f"Colours:{solved}\n\n{examples[0]['query']}\nA:"
    assert [tokenizer.decode(r.context) for r in requests] == [expected_context] * 4
    assert [tokenizer.decode(r.continuation) for r in requests] == [f" {c}" for c in examples[0]["choices"]]
    schema = read_examples(paths["schema"], "schema")
    builder = PromptBuilder(icl("schema", paths["schema"]), tokenizer, schema, max_seq_len=128)
    requests = builder.requests(3, 0, random.Random(0))
    assert [tokenizer.decode(r.context) for r in requests] == schema[3]["context_options"]
    # A context too long for max_seq_len loses tokens from the left; the continuation is kept whole.
    short = PromptBuilder(task, tokenizer, examples, max_seq_len=8).requests(0, 2, random.Random(1))[0]
    assert len(short.context) + len(short.continuation) == 8 and tokenizer.decode(short.context).endswith("\nA:")


def bigram_model(tokenizer) -> MPT:
    """An MPT whose blocks are switched off (zero weights): logits at t depend on token t alone, so every
    log-likelihood is a sum of entries of one table a test can compute by hand."""
    torch.manual_seed(3)
    model = MPT(MPTConfig.preset("tiny", vocab_size=tokenizer.vocab_size)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("blocks.") and param.dim() == 2:
                param.zero_()
    return model


def test_metrics_equal_a_hand_computed_reference(facts):
    paths, _, tokenizer, _ = facts
    model = bigram_model(tokenizer)
    embedding = model.wte.weight.detach().double()
    normed = torch.nn.functional.layer_norm(embedding, (embedding.shape[1],), eps=model.cfg.layer_norm_eps)
    table = torch.log_softmax(normed @ embedding.T, dim=-1)  # table[a, b] = log p(next = b | current = a)

    def loglik(context: str, continuation: str) -> tuple[float, bool, int]:
        ids = tokenizer.encode(context) + tokenizer.encode(continuation)
        start = len(tokenizer.encode(context))
        pairs = [(ids[t - 1], ids[t]) for t in range(start, len(ids))]
        return (sum(float(table[a, b]) for a, b in pairs), all(int(table[a].argmax()) == b for a, b in pairs),
                len(pairs))

    lm = read_examples(paths["language_modeling"], "language_modeling")
    expected_lm = np.mean([loglik(e["context"], " " + e["continuation"])[1] for e in lm])
    mc = read_examples(paths["multiple_choice"], "multiple_choice")
    hits = {"acc": 0, "acc_sum": 0, "acc_norm": 0}
    for example in mc:
        scored = [loglik(example["query"], " " + choice) for choice in example["choices"]]
        for name, values in (("acc", [s / n for s, _, n in scored]), ("acc_sum", [s for s, _, _ in scored]),
                             ("acc_norm", [s / len(c) for (s, _, _), c in zip(scored, example["choices"])])):
            hits[name] += int(np.argmax(values)) == example["gold"]
    got = evaluate_icl_task(model, tokenizer, icl("language_modeling", paths["language_modeling"]))
    assert got == {"0-shot/acc": pytest.approx(expected_lm)}
    got = evaluate_icl_task(model, tokenizer, icl("multiple_choice", paths["multiple_choice"], batch_size=5))
    assert got == {f"0-shot/{name}": pytest.approx(count / len(mc)) for name, count in hits.items()}
    assert len(set(hits.values())) > 1 or hits["acc"] not in (0, len(mc))  # the reference is not trivial


def test_tiny_model_trained_on_facts_beats_chance(facts):
    paths, model, tokenizer, _ = facts
    lm = evaluate_icl_task(model, tokenizer, icl("language_modeling", paths["language_modeling"], num_fewshot=[0, 3]))
    mc = evaluate_icl_task(model, tokenizer, icl("multiple_choice", paths["multiple_choice"]))
    schema = evaluate_icl_task(model, tokenizer, icl("schema", paths["schema"]))
    # 24 of 36 questions are about objects it saw (chance: 1/6 for a colour, 1/4 and 1/2 for the choices).
    assert lm["0-shot/acc"] >= 0.6 and lm["3-shot/acc"] >= 0.6
    assert mc["0-shot/acc"] >= 0.6 and mc["0-shot/acc_norm"] >= 0.6
    assert schema["0-shot/acc"] >= 0.9


LMEVAL_TASKS = {
    "language_modeling": dict(output_type="loglikelihood", doc_to_text="context",
                              doc_to_target="{{' ' + continuation}}", metric_list=[{"metric": "acc"}]),
    "multiple_choice": dict(output_type="multiple_choice", doc_to_text="query", doc_to_choice="choices",
                            doc_to_target="gold", target_delimiter=" ",
                            metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}]),
    "schema": dict(output_type="multiple_choice", doc_to_text="gold", doc_to_choice="context_options",
                   doc_to_target="continuation", target_delimiter=" ", metric_list=[{"metric": "acc"}]),
}
OURS_VS_LMEVAL = {"language_modeling": {"acc": "acc"}, "multiple_choice": {"acc_sum": "acc", "acc_norm": "acc_norm"},
                  "schema": {"acc_sum": "acc"}}


@pytest.mark.skipif(not LMEVAL_PYTHON.exists(), reason="lm-eval side venv missing: run scripts/side_install_lmeval.sh")
def test_agrees_with_lm_eval_on_the_exported_model(facts, tmp_path):
    paths, model, tokenizer, _ = facts
    save_consolidated(model, model.cfg, tmp_path / "ckpt", tokenizer)
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    (tmp_path / "tasks").mkdir()
    for kind, spec in LMEVAL_TASKS.items():
        config = {"task": f"kiln_facts_{kind}", "dataset_path": "json", "test_split": "test",
                  "dataset_kwargs": {"data_files": {"test": str(paths[kind])}}, **spec}
        (tmp_path / "tasks" / f"{kind}.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [str(LMEVAL_PYTHON), "-m", "lm_eval", "--model", "hf", "--model_args",
               f"pretrained={tmp_path / 'hf'},dtype=float32", "--tasks", ",".join(f"kiln_facts_{k}" for k in LMEVAL_TASKS),
               "--include_path", str(tmp_path / "tasks"), "--device", "cpu", "--batch_size", "8",
               "--output_path", str(tmp_path / "out"), "--log_samples"]
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    for kind, names in OURS_VS_LMEVAL.items():
        ours = evaluate_icl_task(model, tokenizer, icl(kind, paths[kind]))
        for our_name, their_name in names.items():
            theirs = results[f"kiln_facts_{kind}"][f"{their_name},none"]
            assert abs(ours[f"0-shot/{our_name}"] - theirs) <= 0.005, (kind, our_name, ours, theirs)
    # Per request, the log-likelihoods themselves agree.
    from training.eval.icl import score_requests

    examples = read_examples(paths["multiple_choice"], "multiple_choice")
    builder = PromptBuilder(icl("multiple_choice", paths["multiple_choice"]), tokenizer, examples, 128)
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_kiln_facts_multiple_choice*.jsonl"))
               .read_text().splitlines()]
    for sample in samples[:10]:
        ours = score_requests(model, builder.requests(sample["doc_id"], 0, random.Random(0)), 8)
        theirs = [float(resp[0]) for resp in sample["filtered_resps"]]
        assert [s.logprob for s in ours] == pytest.approx(theirs, abs=1e-3)


def write_val_shards(folder: Path, vocab: int) -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    samples = [generator.integers(0, vocab, length).astype(np.uint16) for length in (17, 17, 9, 17, 5)]
    with MDSWriter(str(folder), {"tokens": "ndarray:uint16"}, size_limit=200) as writer:
        for sample in samples:
            writer.write({"tokens": sample})
    return samples


def test_perplexity_on_mds_shards(tmp_path):
    torch.manual_seed(0)
    model = MPT(MPTConfig.preset("tiny")).eval()
    samples = write_val_shards(tmp_path / "val", 256)
    got = evaluate_perplexity(model, PerplexityTask(label="val", path=str(tmp_path / "val"), batch_size=2))
    losses = []
    with torch.no_grad():
        for sample in samples:
            ids = torch.from_numpy(sample.astype(np.int64)).unsqueeze(0)
            losses += torch.nn.functional.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:], reduction="none").tolist()
    assert got["tokens"] == len(losses) == sum(len(s) - 1 for s in samples)
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(np.mean(losses)), rel=1e-5)


def test_run_evals_and_cli_end_to_end(facts, tmp_path, capsys):
    paths, model, tokenizer, _ = facts
    write_val_shards(tmp_path / "val", tokenizer.vocab_size)
    known = read_examples(paths["language_modeling"], "language_modeling")[0]  # {"context": "the apple is", ...}
    tasks = {
        "perplexity": [{"label": "val", "path": "val"}],
        "icl_tasks": [{"label": "facts_mc", "dataset_uri": str(paths["multiple_choice"]),
                       "icl_task_type": "multiple_choice", "num_fewshot": [0, 1]}],
        "code_tasks": [{"label": "mini", "dataset_uri": str(HUMANEVAL), "max_new_tokens": 6, "temperature": 0.0,
                        "max_examples": 2}],
        "vibe": {"prompts": [known["context"], "the sky is"], "max_new_tokens": 4},
        "sandbox": {"unsafe": True, "timeout_s": 5},
    }
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(tasks))
    results = run_evals(model, tokenizer, tmp_path / "tasks.yaml", step=7)
    assert results["step"] == 7
    assert set(results["metrics"]) == {
        "eval/perplexity/val/loss", "eval/perplexity/val/perplexity", "eval/perplexity/val/tokens",
        *(f"eval/icl/facts_mc/{s}-shot/{m}" for s in (0, 1) for m in ("acc", "acc_sum", "acc_norm")),
        "eval/code/mini/pass@1"}
    assert results["metrics"]["eval/code/mini/pass@1"] == 0.0  # a facts model writes no Python
    assert results["details"]["sandbox_isolation"] in ("bwrap", "none")
    assert [v["prompt"] for v in results["vibe"]] == [known["context"], "the sky is"]
    assert results["vibe"][0]["completion"].startswith(" " + known["continuation"])

    save_consolidated(model, model.cfg, tmp_path / "ckpt", tokenizer)
    out = tmp_path / "results.json"
    assert eval_main([str(tmp_path / "ckpt"), str(tmp_path / "tasks.yaml"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "eval/icl/facts_mc/0-shot/acc" in printed and f"vibe: {known['context']!r}" in printed
    assert json.loads(out.read_text())["metrics"] == pytest.approx(results["metrics"])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"icl_tasks": [{"label": "x", "dataset_uri": "x.jsonl",
                                                                      "icl_task_type": "cloze"}]}))
    assert eval_main([str(tmp_path / "ckpt"), str(tmp_path / "bad.yaml")]) == 2
    assert "icl_task_type" in capsys.readouterr().err
