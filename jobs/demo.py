"""`make demo`: the whole system on an embedded corpus, on this machine's CPUs, in a few minutes.

1. Builds a corpus from text every Python installation has (the standard library's docstrings) plus
   planted problems for each stage: mojibake, exact and near duplicates, junk, bad JSON lines,
   personal data, toxic lines, and documents that leak an evaluation set.
2. Trains a byte-level BPE tokenizer on it.
3. Runs every ETL stage (configs/demo_pipeline.yaml) -> Delta tables, a report and MDS shards.
4. Trains a small MPT on the shards with two ranks (configs/train_demo.yaml), streaming them.
5. Evaluates it (perplexity, a few generated samples) and prints where everything is.

Set KILN_DEMO_OUT to write somewhere else than demo_out/.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we fork Spark workers after using tokenizers

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("KILN_DEMO_OUT", ROOT / "demo_out")).resolve()
TOXIC_LINES = [
    "You are a worthless idiot and everyone hates you.",
    "Shut up, you pathetic moron.",
    "Go to hell, you stupid loser.",
]
PII_LINES = [
    "Contact me at jane.doe{n}@example.com or call +1 415 555 01{n:02d}.",
    "My card number is 4111 1111 1111 1111 and the server is at 10.0.{n}.7.",
    "Please wire it to IBAN DE89 3704 0044 0532 0130 00, reference {n}.",
]


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def build_corpus(out: Path, n_docs: int = 2400, planted: int = 60) -> tuple[Path, Path, list[str]]:
    """The raw inputs under ``out``: a fixture of ``n_docs`` records with planted problems, plus
    ``planted`` near duplicates, ``planted`` documents with personal data and ``planted // 2`` abusive
    ones (from the fixture's clean documents), an eval set leaked into the corpus, and a small crawl
    (a WARC file of web pages wrapped in boilerplate)."""
    from etl.devtools.fixtures import make_fixture, make_warc_fixture, read_fixture_texts

    raw = out / "raw"
    truth = make_fixture(n_docs=n_docs, seed=7, out_dir=str(raw / "web"))
    make_warc_fixture(str(raw / "crawl"))
    texts = dict(read_fixture_texts(truth))
    clean = [texts[doc_id] for doc_id in truth.clean]
    toxic_end = 2 * planted + planted // 2
    if len(clean) < toxic_end + 10:
        raise ValueError(f"{n_docs} documents hold {len(clean)} clean ones, too few to plant {planted} of each problem")
    rng = random.Random(7)
    extra = []
    for i, text in enumerate(clean[:planted]):  # near duplicates: a few words changed
        words = text.split()
        for _ in range(max(1, len(words) // 50)):
            words[rng.randrange(len(words))] = rng.choice(["indeed", "also", "often", "here"])
        extra.append({"id": f"near-{i}", "text": " ".join(words)})
    for i, text in enumerate(clean[planted:2 * planted]):  # personal data inside otherwise good prose
        extra.append({"id": f"pii-{i}", "text": text + "\n\n" + PII_LINES[i % len(PII_LINES)].format(n=i)})
    for i, text in enumerate(clean[2 * planted:toxic_end]):  # abusive lines
        extra.append({"id": f"toxic-{i}", "text": text + "\n\n" + " ".join(TOXIC_LINES)})
    (raw / "forum").mkdir(parents=True, exist_ok=True)
    with open(raw / "forum" / "posts.jsonl", "w") as handle:
        for record in extra:
            handle.write(json.dumps(record) + "\n")
    # An evaluation set whose passages also sit in the training corpus: decontamination must remove those.
    eval_dir = out / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    eval_path = eval_dir / "lambada_demo.jsonl"
    with open(eval_path, "w") as handle:
        for text in clean[toxic_end:toxic_end + 10]:
            words = text.split()
            handle.write(json.dumps({"context": " ".join(words[:40]), "continuation": " " + words[40]}) + "\n")
    return raw, eval_path, [t for t in texts.values() if isinstance(t, str)]


def train_tokenizer(texts: list[str], out: Path, vocab_size: int = 2048) -> Path:
    from etl.dataset.tokenizer import save_tokenizer, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    return Path(save_tokenizer(tokenizer, str(out / "tokenizer")))


def run_etl(raw: Path, eval_path: Path, tokenizer: Path, out: Path, spark=None, progress=print) -> Path:
    """Every stage of configs/demo_pipeline.yaml into ``out/etl``; ``spark``: an existing session."""
    from etl.load_config import validate_pipeline_config
    from etl.pipeline import run_pipeline

    data = yaml.safe_load((ROOT / "configs" / "demo_pipeline.yaml").read_text())
    data["output"] = str(out / "etl")
    data["inputs"][0]["path"] = str(raw / "web" / "*")
    data["inputs"][1]["path"] = str(raw / "forum" / "*.jsonl")
    data["inputs"][2]["path"] = str(raw / "crawl" / "*.warc.gz")
    for stage in data["stages"]:
        if stage["name"] == "tokenize":
            stage["params"]["tokenizer"] = str(tokenizer)
        if stage["name"] == "decontaminate":
            stage["params"]["eval_paths"] = [str(eval_path)]
    config, stages = validate_pipeline_config(data)
    run_pipeline(config, stages, spark, progress)
    return out / "etl"


def train_model(dataset: Path) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "train_demo.yaml").read_text())
    config["output_dir"] = str(OUT / "runs")
    config["data"]["datasets"] = [{"path": str(dataset), "proportion": 1.0}]
    config["checkpoint"]["dir"] = str(OUT / "checkpoints")
    path = OUT / "train_demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "training.launch", str(path), "--nproc-per-node", "2"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return OUT / "runs" / config["name"]


def export_and_evaluate(run_dir: Path, tokenizer: Path, dataset: Path) -> Path:
    from shards.manifest import resolve_version, split_path
    from training.eval import run_evals
    from training.weights.consolidate import consolidate
    from training.weights.inference import load_model

    # The newest complete sharded checkpoint, gathered tensor by tensor into one safetensors file.
    model_dir = consolidate(str(OUT / "checkpoints"), OUT / "model", tokenizer=tokenizer)
    model, _, text_tokenizer = load_model(model_dir)
    val = split_path(resolve_version(str(dataset)), "val")
    results = run_evals(model, text_tokenizer, {
        "perplexity": [{"label": "demo_val", "path": val, "max_samples": 64}],
        "vibe": {"prompts": ["The module provides", "This function returns", "Raises an exception when"],
                 "max_new_tokens": 32},
    })
    (run_dir / "demo_eval.json").write_text(json.dumps(results, indent=2, default=str))
    for name, value in results["metrics"].items():
        print(f"{name}: {value:.4f}")
    for sample in results.get("vibe", []):
        print(f"> {sample['prompt']}{sample['completion']!r}")
    return Path(model_dir)


def main() -> int:
    start = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    banner("1/5 building the demo corpus (stdlib docstrings + planted problems)")
    raw, eval_path, texts = build_corpus(OUT)
    banner("2/5 training a byte-level BPE tokenizer")
    tokenizer = train_tokenizer(texts, OUT)
    banner("3/5 ETL: every stage, Spark + Delta -> MDS shards")
    from etl import spark

    spark.SHORT_JOB = True  # a few megabytes: a short job's JVM (etl.spark.QUICK_COMPILER)
    etl_out = run_etl(raw, eval_path, tokenizer, OUT)
    dataset = etl_out / "dataset"
    banner("4/5 training a small MPT on the shards (2 ranks, FSDP2 on CPU)")
    run_dir = train_model(dataset)
    banner("5/5 evaluation and samples")
    model_dir = export_and_evaluate(run_dir, tokenizer, dataset)
    banner(f"done in {time.time() - start:.0f}s")
    print(f"ETL report:     {etl_out / 'report' / 'report.html'}")
    print(f"Delta tables:   {etl_out}/<stage>/  (rejected rows with reasons: {etl_out / 'rejected'})")
    print(f"MDS dataset:    {dataset}")
    print(f"training run:   {run_dir}  (metrics.jsonl, loss curve PNG, training_log.md)")
    print(f"model:          {model_dir}  (python -m training.generate {model_dir} --prompt 'The module')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
