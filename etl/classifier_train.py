"""`python -m etl train-classifier`: train a quality classifier from documents to keep and documents not to.

DCLM's recipe: reference text (what the model should read more of) against a random sample of the
web; the classifier learns what separates them, and the `classify` stage keeps what scores like the
reference. Two kinds of model, each written as one file, with its metrics beside it
(``<out>.metrics.json``):

``hashed``   word 1..n-grams hashed into ``features`` buckets (scikit-learn's HashingVectorizer, so
             there is no vocabulary to store) and a logistic regression trained by SGD; a ``.npz``
             that the stage reads as ``model_type: kiln``.
``fasttext`` fastText supervised, labels ``__label__hq`` and ``__label__lq``, word n-grams hashed into
             ``features`` buckets; a ``.bin`` that the stage (and any fastText user) reads.

The metrics come from a random ``validation_fraction`` of the rows held out of training: a row split,
so documents of one source fall on both sides (a split by source is the honest test of a new source;
docs/etl/classify.md shows one).
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from typing import Literal

import fsspec
import numpy as np

from .dataset.tokenizer import iter_texts
from .paths import to_fsspec_url
from .text.classifiers import (FASTTEXT_PREFIX, FastTextClassifier, HashedLinearClassifier, hashing_vectorizer,
                               write_hashed_linear)

SUFFIXES = {"hashed": ".npz", "fasttext": ".bin"}


@dataclass
class TrainSettings:
    model: Literal["hashed", "fasttext"] = "hashed"  # the kind of model (the module's docstring)
    ngrams: int = 2  # word n-grams up to this length
    features: int = 2 ** 20  # hash buckets (hashed: weights; fasttext: its n-gram buckets)
    epochs: int = 25  # fasttext passes over the data (the hashed model stops when its loss settles)
    dim: int = 32  # fasttext vector size
    validation_fraction: float = 0.1  # rows held out of training to measure the model on
    seed: int = 0  # the row split's and the training's


def metrics_path(out: str) -> str:
    return out + ".metrics.json"


def train_classifier(positive: list[str], negative: list[str], out: str, settings: TrainSettings,
                     fmt: str = "jsonl", text_field: str = "text", max_docs: int | None = None) -> dict:
    """Train on the texts of ``positive`` (label 1, keep) and ``negative`` (0); write the model to
    ``out`` and its metrics beside it; returns the metrics."""
    if not out.endswith(SUFFIXES[settings.model]):
        raise ValueError(f"--out {out!r}: a {settings.model} model is a {SUFFIXES[settings.model]} file")
    if not 0.0 <= settings.validation_fraction < 0.5:
        raise ValueError(f"validation fraction must be in [0, 0.5), got {settings.validation_fraction}")
    rows = [(t, 1) for path in positive for t in iter_texts(path, fmt, text_field, max_docs)]
    rows += [(t, 0) for path in negative for t in iter_texts(path, fmt, text_field, max_docs)]
    random.Random(settings.seed).shuffle(rows)
    n_valid = round(len(rows) * settings.validation_fraction)
    valid, train = rows[:n_valid], rows[n_valid:]
    if len({label for _, label in train}) < 2:
        raise ValueError("training needs documents of both kinds after the validation split")
    if settings.model == "hashed":
        write_hashed_linear(out, *_train_hashed(train, settings))
        scorer = lambda: HashedLinearClassifier(out)  # noqa: E731
    else:
        _save_fasttext(_train_fasttext(train, settings), out)
        scorer = lambda: FastTextClassifier(out, "hq")  # noqa: E731
    metrics = {
        "model": settings.model, "settings": asdict(settings),
        "positive": positive, "negative": negative,
        "train_docs": {"positive": sum(y for _, y in train), "negative": sum(1 - y for _, y in train)},
        "validation_docs": {"positive": sum(y for _, y in valid), "negative": sum(1 - y for _, y in valid)},
    }
    if valid:  # measured through the file as written, read back as the stage reads it
        scores = scorer().score([t for t, _ in valid])
        labels = [y for _, y in valid]
        accuracy = float(np.mean([(s >= 0.5) == y for s, y in zip(scores, labels)]))
        metrics["validation"] = {"roc_auc": round(roc_auc(labels, scores), 4), "accuracy_at_0.5": round(accuracy, 4)}
    with fsspec.open(to_fsspec_url(metrics_path(out)), "w", auto_mkdir=True) as handle:
        json.dump(metrics, handle, indent=2)
    return metrics


def roc_auc(labels: list[int], scores: list[float]) -> float:
    """The probability that a random positive outscores a random negative (ties count half)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan")


def hashing_settings(settings: TrainSettings) -> dict:
    """The HashingVectorizer's settings, stored in the model so the stage hashes as training did."""
    return {"n_features": settings.features, "ngram_range": [1, settings.ngrams], "alternate_sign": False,
            "norm": "l2", "lowercase": True}


def _train_hashed(rows: list[tuple[str, int]], settings: TrainSettings) -> tuple[dict, np.ndarray, float]:
    from sklearn.linear_model import SGDClassifier

    vectorizer = hashing_settings(settings)
    x = hashing_vectorizer(vectorizer).transform([t for t, _ in rows])
    # Logistic regression by SGD: its cost grows with the n-grams present, not with the 2**20 buckets
    # (lbfgs over every bucket took 17 s on 900 documents; this, 0.1 s).
    model = SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=50, class_weight="balanced", random_state=settings.seed)
    model.fit(x, [y for _, y in rows])
    return vectorizer, model.coef_[0], float(model.intercept_[0])


def _train_fasttext(rows: list[tuple[str, int]], settings: TrainSettings):
    import fasttext

    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
        for text, label in rows:
            handle.write(f"{FASTTEXT_PREFIX}{'hq' if label else 'lq'} {' '.join(text.split())}\n")
    try:
        return fasttext.train_supervised(input=handle.name, wordNgrams=settings.ngrams, bucket=settings.features,
                                         dim=settings.dim, epoch=settings.epochs, lr=0.1, seed=settings.seed,
                                         thread=1, verbose=0)
    except RuntimeError as err:  # fastText's "Encountered NaN.": its SGD diverged
        raise ValueError(f"fastText training failed ({err}): try fewer --epochs, or more documents") from None
    finally:
        os.unlink(handle.name)


def _save_fasttext(model, out: str) -> None:
    """fastText writes local files only: an object-store ``out`` is written locally, then copied."""
    if "://" not in out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        model.save_model(out)
        return
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "model.bin")
        model.save_model(local)
        fs, path = fsspec.core.url_to_fs(to_fsspec_url(out))
        fs.put_file(local, path)
