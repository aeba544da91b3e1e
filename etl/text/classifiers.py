"""Text classifiers that score documents for the `classify` stage: one number per document, higher is better.

Three kinds of model, each one method, ``score(texts) -> list[float]``:

``FastTextClassifier``    a fastText supervised model (``.bin``), as DCLM's and FineWeb-Edu's annotators use;
                          the score is the probability of one label (``hq`` by default, DCLM's name).
``HuggingFaceClassifier`` a ``transformers`` sequence-classification folder (``save_pretrained``) on CPU, in
                          batches; the probability of one label, or the raw output of a one-output
                          (regression) model such as FineWeb-Edu's. Imports torch only when built: the one
                          place besides the toxicity scorer where the ETL side may load torch.
``HashedLinearClassifier`` Kiln's own (``python -m etl train-classifier``): word n-grams hashed by
                          scikit-learn's HashingVectorizer and a logistic regression, stored as plain arrays
                          in one ``.npz`` (read without pickle, so a model file cannot run code).

A model path is local or an fsspec URL (s3://...); a remote model is copied once into a cache folder on
the worker's machine (``local_copy``), shared by the Python workers there.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from typing import Protocol

import fsspec
import numpy as np

from ..paths import local_fs_path, to_fsspec_url

# The format name inside a Kiln model file, checked when it is loaded.
HASHED_LINEAR_FORMAT = "kiln-hashed-linear-v1"
# fastText's default label for the documents to keep (DCLM's classifier names them so too).
DEFAULT_FASTTEXT_LABEL = "hq"
FASTTEXT_PREFIX = "__label__"
# Where remote models are copied on a worker's machine; KILN_MODEL_CACHE overrides it.
MODEL_CACHE = os.path.join(tempfile.gettempdir(), "kiln-models")


class Classifier(Protocol):
    def score(self, texts: list[str | None]) -> list[float]: ...


def local_copy(path: str) -> str:
    """A path on this machine holding the model at ``path`` (a file or a folder).

    A local path is used where it is. A remote one is downloaded into the model cache under a name
    made of its URL and its size and modification stamp, so a model replaced at the same URL is
    fetched again, and renamed into place when complete: workers that race each download a copy
    and the first rename wins.
    """
    local = local_fs_path(path)
    if local is not None:
        if not os.path.exists(local):
            raise FileNotFoundError(f"model {path!r} does not exist")
        return local
    fs, root = fsspec.core.url_to_fs(to_fsspec_url(path))
    if not fs.exists(root):
        raise FileNotFoundError(f"model {path!r} does not exist")
    info = fs.info(root)
    stamp = [info.get(k) for k in ("size", "ETag", "LastModified", "mtime")] if info["type"] == "file" else \
        sorted((p, i.get("size"), str(i.get("ETag"))) for p, i in fs.find(root, detail=True).items())
    key = hashlib.sha1(json.dumps([path, stamp], default=str).encode()).hexdigest()[:20]
    cache = os.environ.get("KILN_MODEL_CACHE", MODEL_CACHE)
    target = os.path.join(cache, key, os.path.basename(root.rstrip("/")))
    if not os.path.exists(target):
        os.makedirs(cache, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f"{key}.", dir=cache)
        fs.get(root.rstrip("/") + ("/" if info["type"] == "directory" else ""),
               os.path.join(staging, os.path.basename(target)), recursive=info["type"] == "directory")
        try:
            os.rename(staging, os.path.dirname(target))
        except OSError:  # another worker finished first: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return target


class FastTextClassifier:
    """A fastText supervised model; the score is the probability fastText gives ``label``.

    fastText reads one line per prediction, so newlines become spaces (as DCLM does); all texts of a
    call go to fastText's own batched predict.
    """

    def __init__(self, path: str, label: str | None = None):
        import fasttext

        self.model = fasttext.load_model(local_copy(path))
        wanted = label or DEFAULT_FASTTEXT_LABEL
        wanted = wanted if wanted.startswith(FASTTEXT_PREFIX) else FASTTEXT_PREFIX + wanted
        if wanted not in self.model.labels:
            raise ValueError(f"model {path}: no label {wanted!r}; its labels are {self.model.labels}")
        self.label = wanted

    def score(self, texts: list[str | None]) -> list[float]:
        if not texts:
            return []
        lines = [(t or "").replace("\n", " ") for t in texts]
        labels, probabilities = self.model.predict(lines, k=-1, threshold=0.0)
        return [float(p[list(names).index(self.label)]) if self.label in names else 0.0
                for names, p in zip(labels, probabilities)]


class HuggingFaceClassifier:
    """A transformers sequence-classification model on CPU, one thread, ``batch_size`` texts a pass.

    Texts are sorted by length before batching, so a batch pads little. The score: the output of a
    one-output (regression) model as it is, else the probability (softmax, or sigmoid for a
    multi-label model) of ``label``, by default label 1 of a two-label model.
    """

    def __init__(self, path: str, label: str | None = None, max_length: int = 512, batch_size: int = 32):
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as err:
            raise ImportError("a huggingface classifier needs torch and transformers (pip install transformers)") from err
        torch.set_num_threads(1)  # Spark runs one Python worker per core
        local = local_copy(path)
        if not os.path.isdir(local):
            raise ValueError(f"model {path}: a huggingface model is a folder written by save_pretrained")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(local, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(local, local_files_only=True).eval()
        config = self.model.config
        self.regression = config.num_labels == 1
        self.sigmoid = config.problem_type == "multi_label_classification"
        self.index = 0 if self.regression else _label_index(config.id2label, label, path)
        self.max_length = max_length
        self.batch_size = batch_size

    def score(self, texts: list[str | None]) -> list[float]:
        # A tokenizer reads the whole text before it truncates: a text is cut to what max_length
        # tokens can hold (a token is rarely longer than 16 characters) before it sees it.
        cut = [(t or "")[:16 * self.max_length] for t in texts]
        order = sorted(range(len(cut)), key=lambda i: len(cut[i]))
        scores = [0.0] * len(cut)
        with self.torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                inputs = self.tokenizer([cut[i] for i in chunk], truncation=True, max_length=self.max_length,
                                        padding=True, return_tensors="pt")
                logits = self.model(**inputs).logits.float()
                if not self.regression:
                    logits = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
                for i, value in zip(chunk, logits[:, self.index].tolist()):
                    scores[i] = value
        return scores


def _label_index(id2label: dict, label: str | None, path: str) -> int:
    names = {int(i): str(n) for i, n in id2label.items()}
    if label is None:
        if len(names) == 2:
            return 1
        raise ValueError(f"model {path}: {len(names)} labels {sorted(names.values())}; set label to the one to score")
    found = [i for i, n in names.items() if n == label]
    if not found:
        raise ValueError(f"model {path}: no label {label!r}; its labels are {sorted(names.values())}")
    return found[0]


class HashedLinearClassifier:
    """Kiln's model: hashed word n-grams and a logistic regression; the score is P(keep) in [0, 1]."""

    def __init__(self, path: str):
        self.meta, self.coef, self.intercept = read_hashed_linear(local_copy(path), path)
        self.vectorizer = hashing_vectorizer(self.meta["vectorizer"])

    def score(self, texts: list[str | None]) -> list[float]:
        if not texts:
            return []
        logits = self.vectorizer.transform([t or "" for t in texts]) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-logits))).tolist()


def hashing_vectorizer(settings: dict):
    """scikit-learn's HashingVectorizer from its settings as stored in a model's JSON header."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])})


def write_hashed_linear(path: str, vectorizer: dict, coef: np.ndarray, intercept: float) -> None:
    """One ``.npz``: the weights, and a JSON header (the format, the vectorizer's settings)."""
    meta = {"format": HASHED_LINEAR_FORMAT, "vectorizer": vectorizer}
    with fsspec.open(to_fsspec_url(path), "wb", auto_mkdir=True) as handle:
        np.savez_compressed(handle, coef=coef.astype(np.float32), intercept=np.float64(intercept),
                            meta=np.array(json.dumps(meta)))


def read_hashed_linear(local: str, path: str) -> tuple[dict, np.ndarray, float]:
    try:
        with np.load(local, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            coef, intercept = data["coef"], float(data["intercept"])
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"model {path}: not a Kiln classifier written by `python -m etl train-classifier` ({err})") from None
    if meta.get("format") != HASHED_LINEAR_FORMAT:
        raise ValueError(f"model {path}: format {meta.get('format')!r}, expected {HASHED_LINEAR_FORMAT!r}")
    if not math.isfinite(intercept) or coef.shape != (meta["vectorizer"]["n_features"],):
        raise ValueError(f"model {path}: weights do not match its header")
    return meta, coef, intercept
