"""The `classify` stage with each kind of model, and `python -m etl train-classifier` measured on held-out sources.

The corpus is etl/devtools/quality_corpus.py: real docstring prose (standard library, numpy,
scikit-learn, pandas) as the reference, against generated web-like text (boilerplate, keyword spam,
word salad). The classifier is trained on some sources and scored on others it never saw.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etl.classifier_train import roc_auc
from etl.devtools import quality_corpus
from etl.load_config import validate_pipeline_config
from etl.stages.base import StageContext
from etl.stages.classify import SCORE_COLUMN, Classify, ClassifyParams
from etl.text.classifiers import FastTextClassifier, HashedLinearClassifier, local_copy
from shards.config import ConfigError, from_dict

ROOT = Path(__file__).resolve().parents[2]
DOC_SCHEMA = "id string, source string, text string, content_hash string, meta map<string,string>"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A fresh working folder with the training files (reference, web) and the held-out documents."""
    work = tmp_path_factory.mktemp("classify")
    quality_corpus.write_files(str(work), docs_per_source=30)
    return work


def train(work: Path, *args: str) -> str:
    """`python -m etl train-classifier ...` typed in ``work``, relative paths; its output."""
    proc = subprocess.run([sys.executable, "-m", "etl", "train-classifier", "--positive", "reference.jsonl",
                           "--negative", "web.jsonl", *args], cwd=work, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def models(corpus) -> dict[str, Path]:
    """Kiln's hashed model and a fastText model, each trained by the command line."""
    assert "done: hashed classifier in models/quality.npz" in train(corpus, "--out", "models/quality.npz")
    assert "done: fasttext classifier" in train(corpus, "--model", "fasttext", "--features", "65536",
                                               "--out", "models/quality.bin")
    return {"kiln": corpus / "models" / "quality.npz", "fasttext": corpus / "models" / "quality.bin"}


@pytest.fixture(scope="module")
def held_out(corpus) -> list[dict]:
    return [json.loads(line) for line in (corpus / "held_out.jsonl").read_text().splitlines()]


def frame(spark, records: list[dict], partitions: int = 2):
    rows = [(f"d{i}", r["source"], r["text"], "h", None) for i, r in enumerate(records)]
    return spark.createDataFrame(rows, DOC_SCHEMA).repartition(partitions)


def run_stage(spark, docs, **params) -> tuple[dict[str, dict], Classify, object]:
    stage = Classify(from_dict(ClassifyParams, params, "classify"))
    result = stage.run(docs, StageContext(spark, "", "", "test"))
    return {r["id"]: r.asDict() for r in result.docs.collect()}, stage, result


def bag_of_words_auc(corpus: Path, held_out: list[dict]) -> float:
    """The plain baseline: word counts (no order) and a logistic regression, trained on the same files."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    rows = [(json.loads(line)["text"], label) for name, label in (("reference.jsonl", 1), ("web.jsonl", 0))
            for line in (corpus / name).read_text().splitlines()]
    vectorizer = CountVectorizer()
    model = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform([t for t, _ in rows]), [y for _, y in rows])
    scores = model.predict_proba(vectorizer.transform([r["text"] for r in held_out]))[:, 1]
    return roc_auc([r["label"] for r in held_out], list(scores))


def test_trained_classifier_beats_bag_of_words_on_held_out_sources(spark, corpus, models, held_out):
    """Scored by the stage in Spark on sources the training never saw; min_score rejects with a reason."""
    train_sources = {json.loads(line)["source"] for name in ("reference.jsonl", "web.jsonl")
                     for line in (corpus / name).read_text().splitlines()}
    assert not train_sources & {r["source"] for r in held_out}  # split by source, not by row
    metrics = json.loads((corpus / "models" / "quality.npz.metrics.json").read_text())
    assert metrics["validation"]["roc_auc"] >= 0.95 and metrics["train_docs"]["positive"] > 100

    out, _, _ = run_stage(spark, frame(spark, held_out), model_path=str(models["kiln"]), model_type="kiln",
                          min_score=0.5)
    scores = [out[f"d{i}"][SCORE_COLUMN] for i in range(len(held_out))]
    kiln, baseline = roc_auc([r["label"] for r in held_out], scores), bag_of_words_auc(corpus, held_out)
    print(f"\nheld-out sources, ROC AUC: kiln hashed n-grams {kiln:.4f}, bag of words {baseline:.4f}")
    assert kiln >= 0.97 and kiln > baseline + 0.05
    rejected = [r for r in out.values() if r["reason"] is not None]
    assert rejected and all(r["reason"] == "classify:quality<0.5" and r[SCORE_COLUMN] < 0.5 for r in rejected)
    assert rejected[0]["detail"].startswith("score ") and "< min_score 0.5" in rejected[0]["detail"]
    assert all(r[SCORE_COLUMN] >= 0.5 for r in out.values() if r["reason"] is None)


def test_fasttext_model_from_an_object_store_in_spark(spark, models, held_out, s3_prefix):
    """The fastText model read from s3a://, copied once to the workers' cache, scores as it does locally."""
    import fsspec

    fsspec.filesystem("s3").put_file(str(models["fasttext"]), f"{s3_prefix}/dclm.bin")
    out, _, _ = run_stage(spark, frame(spark, held_out), model_path=f"s3a://{s3_prefix[5:]}/dclm.bin",
                          model_type="fasttext", label="__label__hq", min_score=0.5)
    local = FastTextClassifier(str(models["fasttext"])).score([r["text"] for r in held_out])
    scores = [out[f"d{i}"][SCORE_COLUMN] for i in range(len(held_out))]
    assert scores == pytest.approx(local, abs=1e-6)
    auc = roc_auc([r["label"] for r in held_out], scores)
    print(f"\nheld-out sources, ROC AUC: fastText (train-classifier --model fasttext) {auc:.4f}")
    assert auc >= 0.97
    assert {r["reason"] for r in out.values()} == {None, "classify:dclm<0.5"}


def _tiny_regression_model(folder: Path) -> None:
    """A randomly initialised one-output BERT (a regression head, as FineWeb-Edu's classifier has)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocabulary = ["[PAD]", "[UNK]", "return", "the", "value", "of", "a", "buy", "cheap", "now", "click", "here"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocabulary), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)


def test_huggingface_model_in_spark(spark, tmp_path, held_out):
    pytest.importorskip("transformers")
    from etl.text.classifiers import HuggingFaceClassifier

    _tiny_regression_model(tmp_path / "edu")
    texts = [r["text"] for r in held_out[:24]]
    expected = HuggingFaceClassifier(str(tmp_path / "edu"), max_length=32, batch_size=4).score(texts)
    threshold = sorted(expected)[len(expected) // 2]
    # One partition: one Python worker pays for importing torch.
    out, _, _ = run_stage(spark, frame(spark, held_out[:24], partitions=1), model_path=str(tmp_path / "edu"),
                          model_type="huggingface", max_length=32, batch_size=8, min_score=threshold)
    scores = [out[f"d{i}"][SCORE_COLUMN] for i in range(len(texts))]
    assert scores == pytest.approx(expected, abs=1e-4)  # batches of 8, sorted by length, or of 4: the same
    assert {r["reason"] for r in out.values() if r[SCORE_COLUMN] < threshold} == {f"classify:edu<{threshold:.4g}"}


def test_a_remote_model_is_copied_once(tmp_path, models, monkeypatch):
    import fsspec

    monkeypatch.setenv("KILN_MODEL_CACHE", str(tmp_path / "cache"))
    fsspec.filesystem("memory").put_file(str(models["kiln"]), "/kiln-classify/quality.npz")
    first = local_copy("memory://kiln-classify/quality.npz")
    assert local_copy("memory://kiln-classify/quality.npz") == first and len(os.listdir(tmp_path / "cache")) == 1
    remote, local = HashedLinearClassifier("memory://kiln-classify/quality.npz"), HashedLinearClassifier(str(models["kiln"]))
    assert remote.score(["Return the value."]) == local.score(["Return the value."])


def test_bad_models_and_params_are_reported(tmp_path, models, corpus):
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a Kiln classifier written by"):
        HashedLinearClassifier(str(tmp_path / "junk.npz"))
    with pytest.raises(ValueError, match=r"no label '__label__keep'; its labels are"):
        FastTextClassifier(str(models["fasttext"]), "keep")
    with pytest.raises(ConfigError, match="min_score or keep_top_fraction, not both"):
        from_dict(ClassifyParams, {"model_path": "m.npz", "model_type": "kiln", "min_score": 0.5,
                                   "keep_top_fraction": 0.1}, "classify")
    config = {"output": str(tmp_path / "out"), "inputs": [{"path": str(corpus / "web.jsonl"), "source": "web"}],
              "stages": [{"name": "classify", "params": {"model_path": str(tmp_path / "missing.bin"),
                                                         "model_type": "fasttext"}}]}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params\.model_path: .*missing.bin' does not exist"):
        validate_pipeline_config(config)
    config["stages"][0]["params"] = {"model_path": str(models["kiln"]), "model_type": "huggingface"}
    with pytest.raises(ConfigError, match="a huggingface model is a folder"):
        validate_pipeline_config(config)


def test_train_classifier_reports_bad_input(corpus):
    proc = subprocess.run([sys.executable, "-m", "etl", "train-classifier", "--positive", "reference.jsonl",
                           "--negative", "web.jsonl", "--out", "models/quality.bin"], cwd=corpus,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "a hashed model is a .npz file" in proc.stderr


def test_pipeline_keeps_a_top_fraction_and_the_notebook_shows_the_scores(spark, corpus, models, tmp_path, monkeypatch,
                                                                         capsys):
    """A run with the stage (relative paths, as in a config file): one global threshold keeps the top
    quarter, the funnel counts the reason naming it, and the notebook prints the documents on either
    side of it."""
    from etl.delta import read_table
    from etl.pipeline import run_pipeline
    from notebooks.run import run_notebook

    monkeypatch.chdir(corpus)
    config, stages = validate_pipeline_config({
        "output": "out", "inputs": [{"path": "held_out.jsonl", "source": "web"}],
        "stages": [{"name": "classify", "params": {"model_path": "models/quality.npz", "model_type": "kiln",
                                                   "keep_top_fraction": 0.25, "quantile_error": 0.0}}]})
    run = run_pipeline(config, stages, spark, progress=lambda line: None)
    step = run.steps[-1]
    threshold = step.metrics["threshold"]
    assert abs(step.docs_out - 0.25 * step.docs_in) <= 1  # an exact quantile over distinct scores
    assert step.rejected == {f"classify:quality<{threshold:.4g}": step.docs_in - step.docs_out}
    report = json.loads((corpus / "out" / "report" / "report.json").read_text())
    assert [h["column"] for h in report["scores"]["classify"]] == [SCORE_COLUMN]  # the histogram to choose by
    kept = read_table(spark, str(corpus / "out" / "classify")).toPandas()
    assert kept[SCORE_COLUMN].min() == pytest.approx(threshold)
    run_notebook(ROOT / "notebooks" / "06_classify.py", {"OUTPUT": str(corpus / "out")}, tmp_path)
    printed = capsys.readouterr().out
    assert f"threshold {threshold:.4g} keeps {step.docs_out / step.docs_in:.1%}" in printed
    assert "--- removed, highest scores" in printed
    assert list(tmp_path.glob("*.png"))
