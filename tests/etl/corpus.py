"""Builders the ETL tests share: small deterministic documents, a tokenizer trained on them, and a
refreshable corpus with exact and near duplicates plus its pipeline config."""
from __future__ import annotations

import hashlib
import json
import random
import string
from dataclasses import dataclass

import yaml

from etl.dataset.tokenizer import save_tokenizer, train_bpe_tokenizer
from etl.delta import read_table
from shards import read_manifest

WORDS = {
    "web": "click here home page news today free online best new video login search share".split(),
    "books": "the old captain said that night she walked slowly across the quiet river valley".split(),
    "code": "def return import class self value list dict none true false for in while".split(),
}


def fixture_docs(per_source: int = 60, seed: int = 0) -> list[dict]:
    """Small deterministic documents of three sources with different words and lengths."""
    rng = random.Random(seed)
    lengths = {"web": (3, 120), "books": (150, 700), "code": (20, 300)}
    docs = []
    for source, words in WORDS.items():
        for i in range(per_source):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(*lengths[source])))
            docs.append({"id": f"{source}/{i}", "source": source, "text": text})
    return docs


def write_fixture_tokenizer(folder) -> str:
    tokenizer = train_bpe_tokenizer((d["text"] for d in fixture_docs()), vocab_size=320)
    return save_tokenizer(tokenizer, str(folder))


def docs_frame(spark, docs: list[dict], partitions: int = 2):
    rows = [(d["id"], d["source"], d["text"], hashlib.sha1(d["text"].encode()).hexdigest(), {}) for d in docs]
    schema = "id string, source string, text string, content_hash string, meta map<string,string>"
    return spark.createDataFrame(rows, schema).repartition(partitions)


@dataclass
class Corpus:
    batch1: list[dict]
    new: list[dict]  # batch 2's new documents
    exact: list[dict]  # batch 2's copies of batch-1 documents (case and spacing changed)
    near: list[dict]  # batch 2's batch-1 documents with one word changed
    replayed: list[dict]  # batch 2's batch-1 documents again, same id and text
    republished: list[dict]  # batch 2's batch-1 ids with other text


def make_corpus(n1: int = 100, n_new: int = 40, n_dup: int = 10, seed: int = 0) -> Corpus:
    """Random-word documents (no two alike) with exact and near duplicates of the first batch."""
    rng = random.Random(seed)
    vocabulary = sorted({"".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) for _ in range(400)})

    def text() -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(60, 110))) + "."

    batch1 = [{"id": f"a{i}", "text": text()} for i in range(n1)]
    new = [{"id": f"b{i}", "text": text()} for i in range(n_new)]
    exact = [{"id": f"x{i}", "text": "  " + d["text"].upper().replace(" ", "   ")} for i, d in enumerate(batch1[:n_dup])]
    near = []
    for i, d in enumerate(batch1[n_dup: 2 * n_dup]):
        words = d["text"].split(" ")
        words[len(words) // 2] = "changed"
        near.append({"id": f"n{i}", "text": " ".join(words), "of": d["id"]})
    return Corpus(batch1, new, exact, near, [dict(batch1[-1])], [{"id": batch1[-2]["id"], "text": text()}])


def write_jsonl(path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))


def write_config(root, texts: list[str]) -> str:
    """A tiny tokenizer and a refreshable pipeline reading <root>/in/*.jsonl into <root>/out."""
    tokenizer = save_tokenizer(train_bpe_tokenizer(texts, vocab_size=300), str(root / "tok"))
    config = {
        "output": str(root / "out"), "report": False,
        "inputs": [{"path": str(root / "in" / "*.jsonl"), "source": "web", "id_field": "id"}],
        "stages": [
            {"name": "exact_dedup", "params": {"incremental": True}},
            {"name": "minhash_dedup", "params": {"incremental": True, "verify": "estimated", "num_perm": 64, "threshold": 0.7}},
            {"name": "tokenize", "params": {"tokenizer": tokenizer, "seq_len": 64, "num_buckets": 4, "val_fraction": 0.1,
                                            "tail": "pad"}},
            {"name": "shuffle_and_write", "params": {"quality_report": False, "size_limit": 20_000}},
        ],
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def ids_of(spark, path: str, version: int | None = None, column: str = "id") -> set[str]:
    return {r[0] for r in read_table(spark, path, version).select(column).distinct().collect()}


def dataset_ids(spark, version_dir: str) -> set[str]:
    """Documents of a dataset version, from the provenance table at the Delta version its manifest records."""
    source = next(t for t in read_manifest(version_dir).source_tables if t["path"].endswith("/provenance"))
    return ids_of(spark, source["path"], source["delta_version"], "doc_id")
