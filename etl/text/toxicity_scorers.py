"""Toxicity scorers: a score in [0, 1] per document, higher is more toxic.

Three interchangeable implementations of one method, ``score(texts, languages) -> list[float]``:

``WordListScorer``      per-language weighted word and phrase lists (``etl/data/toxicity/<lang>.txt``),
                        shipped with Kiln; no model, no download, any language with a list.
``ProfanityCheckScorer`` the linear SVM shipped inside the ``alt-profanity-check`` package (English).
``HuggingFaceScorer``   any ``transformers`` sequence-classification model from a local folder or an
                        object-store path; imports torch and transformers only when built, so the
                        ETL side never loads torch unless this scorer is configured.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from typing import Protocol

import fsspec

# Read through importlib.resources: executors import Kiln from a zip (spark-submit --py-files), not a folder.
BUILTIN_LISTS = resources.files("etl") / "data" / "toxicity"
_WORD = re.compile(r"\w+(?:'\w+)*")
# Quoted spans: double quotes, curly quotes, and single quotes that are not apostrophes.
_QUOTED = re.compile(r"\"[^\"\n]{1,80}\"|“[^”\n]{1,80}”|‘[^’\n]{1,80}’|(?<!\w)'[^'\n]{1,80}'(?!\w)")
TARGET_FACTOR = 1.5
MENTION_FACTOR = 0.1
# A term within this many words of a target word ("you") is aimed at someone.
TARGET_WINDOW = 3


class ToxicityScorer(Protocol):
    def score(self, texts: list[str], languages: list[str]) -> list[float]: ...


@dataclass
class WordList:
    """One language's weighted terms, plus the words that aim a term at someone or mark it as mentioned."""

    terms: dict[tuple[str, ...], float] = field(default_factory=dict)
    targets: frozenset[str] = frozenset()
    mentions: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str, source: str) -> WordList:
        terms: dict[tuple[str, ...], float] = {}
        targets: set[str] = set()
        mentions: set[str] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@target "):
                targets.update(_words(line[len("@target "):]))
            elif line.startswith("@mention "):
                mentions.update(_words(line[len("@mention "):]))
            else:
                weight, _, term = line.partition(" ")
                try:
                    value = float(weight)
                except ValueError:
                    raise ValueError(f"{source}:{number}: expected 'weight term', got {line!r}") from None
                words = tuple(_words(term))
                if not words or value <= 0:
                    raise ValueError(f"{source}:{number}: a term needs a positive weight and at least one word, got {line!r}")
                terms[words] = value
        return cls(terms, frozenset(targets), frozenset(mentions))

    @classmethod
    def load(cls, path: str) -> WordList:
        with fsspec.open(path, "rt", encoding="utf-8") as handle:
            return cls.parse(handle.read(), path)

    def weight(self, text: str) -> tuple[float, int]:
        """Summed weight of the terms in `text` and its number of words."""
        text = text.replace("’", "'")
        quoted = [m.span() for m in _QUOTED.finditer(text)]
        matches = list(_WORD.finditer(text.lower()))
        words = [m.group() for m in matches]
        longest = max((len(t) for t in self.terms), default=1)
        total, i = 0.0, 0
        while i < len(words):
            for size in range(min(longest, len(words) - i), 0, -1):
                weight = self.terms.get(tuple(words[i:i + size]))
                if weight is not None:
                    break
            else:
                i += 1
                continue
            before = words[max(0, i - TARGET_WINDOW):i]
            after = words[i + size:i + size + TARGET_WINDOW]
            start = matches[i].start()
            if any(s <= start < e for s, e in quoted) or self.mentions.intersection(before):
                weight *= MENTION_FACTOR
            elif self.targets.intersection(before + after) and not self.targets.intersection(words[i:i + size]):
                weight *= TARGET_FACTOR
            total += weight
            i += size
        return total, len(words)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


class WordListScorer:
    """Weighted terms per language; score = 1 - exp(-weight / (1 + words / 100)).

    One insult in a ten-word sentence scores about 0.5; the same word in a thousand-word article
    about 0.07, since the weight is spread over the document's length. A term aimed at someone
    ("you idiot") weighs 1.5 times as much, a term in quotation marks or introduced as a word
    ("the word 'idiot'") a tenth. Documents in a language without a list use the fallback list.
    """

    def __init__(self, lists: dict[str, WordList], fallback_language: str = "en"):
        if fallback_language not in lists:
            raise ValueError(f"no word list for the fallback language {fallback_language!r}; have {sorted(lists)}")
        self.lists = lists
        self.fallback_language = fallback_language

    @classmethod
    def with_lists(cls, overrides: dict[str, str] | None = None, fallback_language: str = "en") -> WordListScorer:
        """The built-in lists, with the languages in `overrides` (language -> file path) replaced."""
        lists = {
            entry.name.removesuffix(".txt"): WordList.parse(entry.read_text(encoding="utf-8"), f"etl/data/toxicity/{entry.name}")
            for entry in BUILTIN_LISTS.iterdir() if entry.name.endswith(".txt")
        }
        lists.update({language: WordList.load(path) for language, path in (overrides or {}).items()})
        return cls(lists, fallback_language)

    def score(self, texts: list[str], languages: list[str]) -> list[float]:
        scores = []
        for text, language in zip(texts, languages):
            wordlist = self.lists.get(language) or self.lists[self.fallback_language]
            weight, n_words = wordlist.weight(text or "")
            scores.append(1.0 - math.exp(-weight / (1.0 + n_words / 100.0)))
        return scores


class ProfanityCheckScorer:
    """alt-profanity-check's TF-IDF + linear SVM (calibrated); English, no download."""

    def __init__(self):
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def score(self, texts: list[str], languages: list[str]) -> list[float]:
        return [float(p) for p in self._predict_prob([t or "" for t in texts])] if texts else []


class HuggingFaceScorer:
    """A transformers sequence-classification model; the score is the probability of its toxic label.

    Needs the ``transformers`` package (and torch, from the training extra). ``path`` is a local
    folder or an fsspec URL (s3://...) of one, as written by ``save_pretrained``; it is copied to a
    local temporary folder once per worker. Nothing is fetched from a model hub.
    """

    def __init__(self, path: str, label: str | None = None, max_length: int = 512, batch_size: int = 32,
                 threads: int = 1):
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as err:
            raise ImportError(
                "the huggingface toxicity scorer needs torch and transformers (pip install transformers)"
            ) from err
        torch.set_num_threads(threads)
        local = _local_folder(path)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(local, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(local, local_files_only=True).eval()
        self.label_index = _toxic_label_index(self.model.config.id2label, label, path)
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.max_length = max_length
        self.batch_size = batch_size

    def score(self, texts: list[str], languages: list[str]) -> list[float]:
        scores: list[float] = []
        with self.torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = [t or "" for t in texts[start:start + self.batch_size]]
                inputs = self.tokenizer(batch, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model(**inputs).logits.float()
                probs = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
                scores.extend(probs[:, self.label_index].tolist())
        return scores


def _toxic_label_index(id2label: dict[int, str], label: str | None, path: str) -> int:
    names = {int(i): str(n) for i, n in id2label.items()}
    if label is not None:
        matches = [i for i, n in names.items() if n == label]
        if not matches:
            raise ValueError(f"model {path}: no label {label!r}; its labels are {sorted(names.values())}")
        return matches[0]
    toxic = [i for i, n in names.items() if n.lower() in ("toxic", "toxicity", "offensive", "hate", "label_1")]
    if len(toxic) == 1:
        return toxic[0]
    if len(names) == 2:
        return 1
    raise ValueError(f"model {path}: cannot tell which of {sorted(names.values())} is the toxic label; set model_label")


_LOCAL_COPIES: dict[str, str] = {}


def _local_folder(path: str) -> str:
    """A local folder with the model: the path itself, or a per-process copy of a remote folder."""
    if "://" not in path or path.startswith("file://"):
        local = path.removeprefix("file://")
        if not os.path.isdir(local):
            raise ValueError(f"toxicity model_path {path!r} is not a folder")
        return local
    if path not in _LOCAL_COPIES:
        url = "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path
        fs, root = fsspec.core.url_to_fs(url)
        target = tempfile.mkdtemp(prefix="kiln-toxicity-model-")
        fs.get(root.rstrip("/") + "/", target, recursive=True)
        _LOCAL_COPIES[path] = target
    return _LOCAL_COPIES[path]
