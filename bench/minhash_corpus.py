"""A near-duplicate benchmark corpus with planted edited copies, and its exact ground truth.

Text: sentences of the Python standard library's docstrings (read with ``ast`` from a fixed list of
modules; nothing is imported or downloaded), assembled into paragraphs, with a share of typographic
punctuation and a few shared boilerplate blocks (cookie banners, footers) as web pages have.

Planted copies of about a quarter of the documents, each edited one way: word substitutions,
insertions or deletions at rates from 0.5% to 5%, mixed edits, paragraph reorderings, copies of
copies, and near misses (8% of words replaced, or half the paragraphs swapped for new text) that
mostly fall below the thresholds. Whether a pair is a duplicate is not taken from the plan but
computed: the ground truth is the connected components of the pairs whose exact Jaccard similarity
of word 5-gram sets (after the same normalisation as etl.text.minhash, written here independently in
plain Python) reaches the threshold, found with an exact prefix-filter similarity join.

``python bench/minhash_corpus.py --docs 20000 --out corpus.parquet`` writes one; the tests and
bench/minhash_bench.py call make_corpus() and ground_truth() directly.
"""
from __future__ import annotations

import argparse
import ast
import math
import os
import random
import re
import sysconfig
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache

_MODULES = (
    "argparse", "asyncio/base_events", "asyncio/streams", "asyncio/tasks", "calendar", "collections/__init__",
    "configparser", "csv", "dataclasses", "difflib", "email/message", "email/utils", "enum", "ftplib",
    "functools", "gettext", "heapq", "http/client", "http/cookiejar", "http/server", "imaplib", "inspect",
    "ipaddress", "locale", "logging/__init__", "logging/handlers", "mailbox", "multiprocessing/pool", "optparse",
    "pathlib", "pdb", "pickle", "pydoc", "random", "selectors", "shutil", "smtplib", "socket", "ssl",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "tkinter/__init__",
    "typing", "unittest/case", "unittest/mock", "urllib/parse", "urllib/request", "uuid", "warnings",
    "xml/dom/minidom", "zipfile/__init__", "_pydecimal", "_pyio", "doctest", "trace", "turtle",
)
_SENTENCE = re.compile(r"^[A-Z][A-Za-z ,;'()-]+[a-z][.!?]$")
BOILERPLATE = (
    "We use cookies to improve your experience on our site. By continuing to browse you agree to our use of "
    "cookies. You can change your settings at any time in the privacy center.",
    "Subscribe to our newsletter to get the latest updates delivered to your inbox every week. All rights "
    "reserved. Terms of use and privacy policy apply to all content on this page.",
    "Share this article on social media. Related posts you may also like. Leave a comment below and let us "
    "know what you think about this topic.",
)


@cache
def sentences() -> tuple[str, ...]:
    """Plain English sentences (6 to 40 words) from stdlib docstrings, deduplicated, in a fixed order."""
    root = sysconfig.get_paths()["stdlib"]
    found: dict[str, None] = {}
    for module in _MODULES:
        path = os.path.join(root, module + ".py")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                        if _SENTENCE.match(sentence) and 6 <= len(sentence.split()) <= 40:
                            found[sentence] = None
    return tuple(found)


def _typographic(text: str, rng: random.Random) -> str:
    """Curly quotes, em dashes and an accented name, as web text has."""
    text = re.sub(r"'([^']*)'", "\u2018\\1\u2019", text).replace(" - ", " \u2014 ")
    return text + " " + rng.choice(["Fran\u00e7ois", "Jos\u00e9", "Zo\u00eb", "Bj\u00f6rn"]) + " wrote this note."


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    # id -> how it was made: "base", or "<edit>:<source id>" for planted copies
    origin: dict[str, str] = field(default_factory=dict)


def _paragraphs(rng: random.Random, pool: tuple[str, ...], n_paragraphs: int, sentences_per: tuple[int, int]) -> list[str]:
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(*sentences_per))) for _ in range(n_paragraphs)]


def _edit_words(words: list[str], rng: random.Random, rate: float, kind: str, vocabulary: list[str]) -> list[str]:
    out = []
    for word in words:
        roll = rng.random()
        if roll >= rate:
            out.append(word)
            continue
        op = kind if kind != "mixed" else rng.choice(["substitute", "insert", "delete"])
        if op == "substitute":
            out.append(rng.choice(vocabulary))
        elif op == "insert":
            out.extend([word, rng.choice(vocabulary)])
        # delete: drop the word
    return out


def _edit(paragraphs: list[str], rng: random.Random, kind: str, rate: float, vocabulary: list[str],
          pool: tuple[str, ...]) -> list[str]:
    if kind == "reorder":
        shuffled = paragraphs[:]
        while len(shuffled) > 1 and shuffled == paragraphs:
            rng.shuffle(shuffled)
        return shuffled
    if kind == "replace_half":
        return [p if i % 2 == 0 else _paragraphs(rng, pool, 1, (2, 4))[0] for i, p in enumerate(paragraphs)]
    return [" ".join(_edit_words(p.split(" "), rng, rate, kind, vocabulary)) for p in paragraphs]


# (edit kind, word edit rate): planted copies cycle through these.
# A word edit changes up to n=5 shingles, so rates of a few percent already straddle 0.7-0.8.
EDITS = (
    ("substitute", 0.005), ("substitute", 0.01), ("substitute", 0.02), ("substitute", 0.03), ("substitute", 0.05),
    ("insert", 0.01), ("insert", 0.02), ("insert", 0.04),
    ("delete", 0.01), ("delete", 0.02), ("delete", 0.04),
    ("mixed", 0.01), ("mixed", 0.03), ("reorder", 0.0),
    ("substitute", 0.08), ("replace_half", 0.0),  # near misses
)


def make_corpus(n_docs: int, seed: int = 0, short: bool = False, dup_share: float = 0.25,
                paragraphs_per_doc: tuple[int, int] = (2, 6)) -> Corpus:
    """About n_docs documents; ``short`` gives 1-3 sentence documents (for the scale run); more
    paragraphs per document give web-length ones (6-16: about 3,000 characters, as web pages)."""
    rng = random.Random(seed)
    pool = sentences()
    vocabulary = sorted({w for s in pool for w in s.split()})
    corpus = Corpus([], [])

    def add(doc_id: str, paragraphs: list[str], origin: str) -> None:
        corpus.ids.append(doc_id)
        corpus.texts.append("\n\n".join(paragraphs))
        corpus.origin[doc_id] = origin

    index = 0
    while len(corpus.ids) < n_docs:
        if short:
            paragraphs = _paragraphs(rng, pool, 1, (1, 3))
        else:
            paragraphs = _paragraphs(rng, pool, rng.randint(*paragraphs_per_doc), (2, 5))
        if rng.random() < 0.2:
            paragraphs[-1] = _typographic(paragraphs[-1], rng)
        if not short and rng.random() < 0.3:
            paragraphs.append(rng.choice(BOILERPLATE))
        base_id = f"d{index:07d}"
        index += 1
        add(base_id, paragraphs, "base")
        if rng.random() < dup_share:
            source, source_id = paragraphs, base_id
            for copy in range(rng.choice([1, 1, 1, 2, 3])):
                kind, rate = rng.choice(EDITS)
                edited = _edit(source, rng, kind, rate, vocabulary, pool)
                copy_id = f"d{index:07d}"
                index += 1
                add(copy_id, edited, f"{kind}:{rate}:{source_id}")
                if rng.random() < 0.3:  # the next copy is made from this one: chains
                    source, source_id = edited, copy_id
    # Shuffle so copies are not next to their sources (ids keep creation order).
    order = list(range(len(corpus.ids)))
    rng.shuffle(order)
    corpus.ids = [corpus.ids[i] for i in order]
    corpus.texts = [corpus.texts[i] for i in order]
    return corpus


# ---------------------------------------------------------------- ground truth


def _is_word_char(char: str) -> bool:
    return char == "_" or unicodedata.category(char)[0] in "LNM"


def normalize(text: str) -> str:
    """Lowercase; every run of characters that are not letters, digits, marks or '_' -> one space."""
    lowered = text.lower()
    if lowered.isascii():
        return " ".join(re.sub(r"[^a-z0-9_]+", " ", lowered).split())
    return " ".join("".join(c if _is_word_char(c) else " " for c in lowered).split())


def shingles(text: str, n: int = 5) -> set[str]:
    normalized = normalize(text)
    words = normalized.split(" ") if normalized else []
    if not words:
        return set()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def similar_pairs(sets: list[set], threshold: float) -> list[tuple[int, int, float]]:
    """Every pair (i < j) with exact Jaccard >= threshold: prefix filtering, then exact check.

    With elements ordered rarest first, two sets reaching the threshold must share an element
    among the first |x| - ceil(t|x|) + 1 of each, so only such pairs are checked.
    """
    frequency: dict[str, int] = defaultdict(int)
    for s in sets:
        for item in s:
            frequency[item] += 1
    rank = {item: r for r, item in enumerate(sorted(frequency, key=lambda k: (frequency[k], k)))}
    ordered = [sorted(rank[item] for item in s) for s in sets]
    inverted: dict[int, list[int]] = defaultdict(list)
    pairs = []
    # Visit sets by size so each pair is checked from its larger set, against smaller indexed ones.
    for i in sorted(range(len(sets)), key=lambda k: (len(ordered[k]), k)):
        items = ordered[i]
        if not items:
            continue
        prefix = len(items) - math.ceil(threshold * len(items) - 1e-9) + 1
        candidates = set()
        for item in items[:prefix]:
            candidates.update(inverted[item])
            inverted[item].append(i)
        for j in candidates:
            if len(ordered[j]) < threshold * len(items) - 1e-9:
                continue
            inter = len(sets[i] & sets[j])
            similarity = inter / (len(sets[i]) + len(sets[j]) - inter)
            if similarity >= threshold:
                pairs.append((min(i, j), max(i, j), similarity))
    return pairs


def components(n: int, pairs) -> list[int]:
    """Union-find labels (smallest member index) for n items linked by pairs."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, *_ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


def ground_truth(texts: list[str], threshold: float, n: int = 5) -> list[int]:
    """Cluster label per document: components of exact-Jaccard >= threshold pairs."""
    return components(len(texts), similar_pairs([shingles(t, n) for t in texts], threshold))


def core_scores(truth_labels: list, predicted_labels: list) -> dict[str, float]:
    """Document-level scores as text-dedup's CORE benchmark computes them.

    A document's ground-truth duplicates are the other members of its true cluster, its predicted
    duplicates the other members of its predicted cluster: TP when it is predicted to have
    duplicates and they include all true ones, FP when predicted but not covering them, FN when
    it has true duplicates but none predicted, TN otherwise. Macro F1 averages the F1 of the
    duplicate and the non-duplicate class.
    """
    true_groups, predicted_groups = defaultdict(set), defaultdict(set)
    for i, (t, p) in enumerate(zip(truth_labels, predicted_labels)):
        true_groups[t].add(i)
        predicted_groups[p].add(i)
    counts = {"TP": 0, "FP": 0, "TN": 0, "FN": 0}
    for i, (t, p) in enumerate(zip(truth_labels, predicted_labels)):
        duplicates = true_groups[t] - {i}
        predicted = predicted_groups[p] - {i}
        if not predicted:
            counts["FN" if duplicates else "TN"] += 1
        else:
            counts["TP" if duplicates and duplicates <= predicted else "FP"] += 1

    def ratio(a: int, b: int) -> float:
        return a / b if b else 1.0

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r else 0.0

    dup_p, dup_r = ratio(counts["TP"], counts["TP"] + counts["FP"]), ratio(counts["TP"], counts["TP"] + counts["FN"])
    non_p, non_r = ratio(counts["TN"], counts["TN"] + counts["FN"]), ratio(counts["TN"], counts["TN"] + counts["FP"])
    return {
        **counts,
        "precision_dup": dup_p, "recall_dup": dup_r, "precision_nondup": non_p, "recall_nondup": non_r,
        "macro_f1": (f1(dup_p, dup_r) + f1(non_p, non_r)) / 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short", action="store_true", help="1-3 sentence documents")
    parser.add_argument("--out", required=True, help="Parquet file to write (columns id, text)")
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = make_corpus(args.docs, args.seed, args.short)
    pq.write_table(pa.table({"id": corpus.ids, "text": corpus.texts}), args.out)
    print(f"wrote {len(corpus.ids):,} documents to {args.out}")


if __name__ == "__main__":
    main()
