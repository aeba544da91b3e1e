"""The `toxicity` stage and its scorers, measured on a labelled set written for the purpose.

tests/data/toxicity_labelled.jsonl: 366 sentences (163 toxic: insults, harassment, threats,
identity hate; 203 clean, 115 of them hard negatives: identity terms used neutrally, quoted or
discussed slurs, medical and legal vocabulary, dialect, violent words in technical or news use),
mostly English with some German, Spanish and French. Written by the same hand as the word lists,
so the word-list numbers are optimistic; alt-profanity-check's are an independent reference.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from etl.stages.base import StageContext
from etl.stages.toxicity import Toxicity, ToxicityParams
from etl.text.toxicity_scorers import HuggingFaceScorer, ProfanityCheckScorer, WordList, WordListScorer
from shards.config import ConfigError, from_dict

ROOT = Path(__file__).resolve().parents[2]
LABELLED = ROOT / "tests" / "data" / "toxicity_labelled.jsonl"


@pytest.fixture(scope="module")
def labelled():
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]


def roc_auc(labels: list[int], scores: list[float]) -> float:
    """Probability that a random toxic sentence outscores a random clean one (ties count half)."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def _report(name: str, rows: list[dict], scores: list[float], threshold: float) -> dict:
    flagged = [s >= threshold for s in scores]
    toxic = [f for f, r in zip(flagged, rows) if r["label"]]
    clean = [f for f, r in zip(flagged, rows) if not r["label"]]
    hard = [f for f, r in zip(flagged, rows) if r["kind"] == "hard_negative"]
    result = {
        "scorer": name, "threshold": threshold, "roc_auc": round(roc_auc([r["label"] for r in rows], scores), 4),
        "toxic_removed": round(sum(toxic) / len(toxic), 4), "clean_removed": round(sum(clean) / len(clean), 4),
        "hard_negative_fpr": round(sum(hard) / len(hard), 4),
    }
    print(f"\n{result}")
    return result


def test_labelled_set_is_large_and_balanced(labelled):
    kinds = [r["kind"] for r in labelled]
    assert len(labelled) >= 300 and len({r["text"] for r in labelled}) == len(labelled)
    assert kinds.count("toxic") >= 120 and kinds.count("hard_negative") >= 100 and kinds.count("clean") >= 60
    assert {"identity", "quoted_slur", "medical", "legal", "dialect"} <= {r["category"] for r in labelled}


def test_default_wordlist_scorer_on_the_labelled_set(labelled):
    scorer = WordListScorer.with_lists()
    scores = scorer.score([r["text"] for r in labelled], [r["language"] for r in labelled])
    report = _report("wordlist", labelled, scores, ToxicityParams().max_score)
    assert report["roc_auc"] >= 0.93
    assert report["toxic_removed"] >= 0.90
    assert report["clean_removed"] <= 0.05
    assert report["hard_negative_fpr"] <= 0.05


def test_profanity_check_scorer_on_the_labelled_set(labelled):
    """The model inside alt-profanity-check, for reference: good on profanity, poor on the hard negatives."""
    english = [r for r in labelled if r["language"] == "en"]
    scores = ProfanityCheckScorer().score([r["text"] for r in english], ["en"] * len(english))
    report = _report("profanity_check", english, scores, 0.5)
    assert report["roc_auc"] >= 0.75


def test_stage_in_spark_removes_toxic_documents_and_keeps_the_score(spark, labelled):
    rows = [(f"t{i}", "test", r["text"], "h", None, r["language"]) for i, r in enumerate(labelled)]
    docs = spark.createDataFrame(
        rows, "id string, source string, text string, content_hash string, meta map<string,string>, language string"
    )
    stage = Toxicity(ToxicityParams())
    out = {r["id"]: r for r in stage.run(docs, StageContext(spark, "", "", "test")).docs.collect()}
    removed = [out[f"t{i}"]["reason"] == "toxic" for i in range(len(labelled))]
    toxic = [x for x, r in zip(removed, labelled) if r["label"]]
    clean = [x for x, r in zip(removed, labelled) if not r["label"]]
    assert sum(toxic) / len(toxic) >= 0.90 and sum(clean) / len(clean) <= 0.05
    assert all(0.0 <= r["toxicity"] <= 1.0 for r in out.values())
    assert out["t0"]["detail"].startswith("score ") and ">= max_score 0.3" in out["t0"]["detail"]


def test_word_list_weights_mentions_and_targets():
    wordlist = WordList.parse("@target you\n@mention word\n1.0 idiot\n2.0 kill yourself\n", "test")
    used, _ = wordlist.weight("What an idiot.")
    aimed, _ = wordlist.weight("You idiot.")
    quoted, _ = wordlist.weight("The insult 'idiot' is old.")
    mentioned, _ = wordlist.weight("The word idiot is old.")
    phrase, _ = wordlist.weight("Just kill yourself.")
    assert (used, aimed, quoted, mentioned, phrase) == (1.0, 1.5, pytest.approx(0.1), pytest.approx(0.1), 2.0)


def test_score_is_spread_over_the_document_length():
    scorer = WordListScorer({"en": WordList.parse("1.0 idiot\n", "test")})
    short, long = scorer.score(["What an idiot.", "What an idiot. " + "The rest is calm prose. " * 200], ["en", "en"])
    assert short > 0.5 > 0.1 > long


def test_word_list_is_chosen_by_language_with_a_fallback():
    scorer = WordListScorer.with_lists()
    german, as_english, unknown = scorer.score(["Du Vollidiot."] * 2 + ["You idiot."], ["de", "en", "sw"])
    assert german >= 0.3 > as_english  # the German insult is only in the German list
    assert unknown >= 0.3  # Swahili has no list: the English one is used


def test_word_lists_are_pluggable_per_language(tmp_path):
    (tmp_path / "en.txt").write_text("1.0 frobnicate\n")
    scorer = WordListScorer.with_lists({"en": str(tmp_path / "en.txt")})
    assert scorer.score(["Do not frobnicate.", "You idiot."], ["en", "en"])[0] > 0.3
    assert scorer.score(["You idiot."], ["en"])[0] == 0.0  # the built-in English list was replaced
    (tmp_path / "bad.txt").write_text("idiot 1.0\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'weight term'"):
        WordListScorer.with_lists({"en": str(tmp_path / "bad.txt")})


def _tiny_classifier(folder: Path) -> None:
    """A randomly initialised two-label BERT with a word-level tokenizer, saved like any HF model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "you", "are", "an", "idiot", "have", "a", "nice", "day"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=2,
                        id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1})
    BertForSequenceClassification(config).save_pretrained(folder)


def test_huggingface_scorer_loads_a_local_or_object_store_model(tmp_path):
    pytest.importorskip("transformers")
    import fsspec

    _tiny_classifier(tmp_path / "model")
    local = HuggingFaceScorer(str(tmp_path / "model"), batch_size=2)
    texts = ["you are an idiot", "have a nice day", "unknown words only"]
    scores = local.score(texts, ["en"] * 3)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert local.label_index == 1  # found by its name, "toxic"

    memory = fsspec.filesystem("memory")
    memory.put(str(tmp_path / "model"), "/kiln-test-model", recursive=True)
    remote = HuggingFaceScorer("memory://kiln-test-model", label="toxic")
    assert remote.score(texts, ["en"] * 3) == pytest.approx(scores, abs=1e-5)
    with pytest.raises(ValueError, match="no label 'hateful'"):
        HuggingFaceScorer(str(tmp_path / "model"), label="hateful")


def test_etl_does_not_import_torch():
    code = "import sys, etl.load_config, etl.text.toxicity_scorers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"scorer": "huggingface"}, "needs model_path"),
        ({"model_path": "/models/x"}, "apply to scorer 'huggingface'"),
        ({"scorer": "profanity_check", "wordlists": {"en": "x.txt"}}, "wordlists apply"),
        ({"max_score": 1.5}, "max_score must be between"),
        ({"min_score": 0.5, "max_score": 0.4}, "must be below"),
        ({"scorer": "bert"}, "must be one of"),
    ],
)
def test_bad_params_are_reported(params, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ToxicityParams, params, "toxicity")
