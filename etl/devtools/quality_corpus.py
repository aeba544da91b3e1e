"""A labelled corpus for training and measuring a quality classifier, from text every installation has.

Reference documents (label 1, what a quality filter should keep): real prose, the paragraphs of the
docstrings of the Python standard library and of numpy, scikit-learn and pandas (read with ``ast``;
nothing is imported or downloaded). Each package is one source: ``stdlib/email``, ``numpy``...

Web-like documents (label 0), generated, since no web crawl ships with Python:
  ``shuffled/<package>``  a reference document with the words of each paragraph shuffled: word
                          salad, as spam generators make it; the same words as real prose
  ``boilerplate/<site>``  navigation, cookie banners, share buttons, log-in prompts, footers
  ``spam/<niche>``        keyword-stuffed shop text ("buy cheap X online, best X deals")

Every document names its source, so a classifier can be trained on some sources and measured on
others (``HELD_OUT``): a split by source, not by row, as a new crawl brings sources never seen.
Deterministic for a seed and a set of installed package versions.

    python -m etl.devtools.quality_corpus FOLDER [--docs-per-source 40]

writes FOLDER/reference.jsonl and FOLDER/web.jsonl (the training sources) and FOLDER/held_out.jsonl
(the held-out sources, both labels), each line ``{"text", "label", "source"}``.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import re
import sysconfig
from functools import cache

# Reference sources: standard library packages and installed third-party packages.
STDLIB_PACKAGES = ("asyncio", "concurrent", "email", "http", "importlib", "logging", "multiprocessing", "unittest",
                   "urllib", "xml")
THIRD_PARTY_PACKAGES = ("numpy", "sklearn", "pandas")
NICHES = {
    "shoes": ["running shoes", "sneakers", "leather boots", "sandals"],
    "loans": ["payday loans", "personal loan", "bad credit loans", "cash advance"],
    "watches": ["replica watches", "luxury watch", "smart watch", "diver watch"],
    "phones": ["cheap phones", "unlocked phone", "phone case", "refurbished phone"],
    "casino": ["online casino", "free spins", "slot machines", "casino bonus"],
    "pills": ["diet pills", "weight loss pills", "vitamin supplements", "keto pills"],
    "travel": ["cheap flights", "hotel deals", "last minute holidays", "car rental"],
    "crypto": ["bitcoin wallet", "crypto trading", "token presale", "nft drop"],
}
SITES = {
    "news": ["World", "Politics", "Business", "Sport", "Weather", "Opinion"],
    "shop": ["New In", "Women", "Men", "Sale", "Gift Cards", "Stores"],
    "forum": ["Latest", "Top", "Categories", "Members", "Rules", "Search"],
    "recipes": ["Dinner", "Baking", "Vegan", "Quick Meals", "Desserts", "Holidays"],
}
# Sources held out of training, to measure a classifier on: packages, niches and sites it never saw.
HELD_OUT = frozenset({"stdlib/email", "stdlib/http", "stdlib/unittest", "sklearn",
                      "shuffled/stdlib/email", "shuffled/stdlib/http", "shuffled/stdlib/unittest", "shuffled/sklearn",
                      "spam/casino", "spam/pills", "spam/travel", "spam/crypto",
                      "boilerplate/forum", "boilerplate/recipes"})
_MAX_FILES = 80  # per package: enough paragraphs, and parsing stays quick
_WORD = re.compile(r"[A-Za-z][a-z]+")


@cache
def package_paragraphs(package: str) -> tuple[str, ...]:
    """Prose paragraphs of a package's docstrings: 15+ words, mostly words, ends like a sentence,
    no code, no reStructuredText markup, no numpydoc section."""
    files = _package_files(package)
    paragraphs = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                paragraphs += [p for p in _paragraphs(ast.get_docstring(node) or "") if _is_prose(p)]
    return tuple(dict.fromkeys(paragraphs))  # first occurrence, in file order


def _package_files(package: str) -> list[str]:
    if package.startswith("stdlib/"):
        root = os.path.join(sysconfig.get_paths()["stdlib"], package.removeprefix("stdlib/"))
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            return []
        root = os.path.dirname(spec.origin)
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in ("tests", "test", "__pycache__"))
        found += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return found[:_MAX_FILES]


def _paragraphs(doc: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc) if p.strip()]


def _is_prose(paragraph: str) -> bool:
    words = paragraph.split()
    return (len(words) >= 15 and paragraph[0].isupper() and paragraph.endswith(".")
            and sum(bool(_WORD.fullmatch(w.strip(".,;:()'\""))) for w in words) >= 0.8 * len(words)
            and not re.search(r">>>|::|`|--|==|\w\(|\)\w|\{|\[", paragraph))


def reference_documents(source: str, n_docs: int, rng: random.Random) -> list[str]:
    """``n_docs`` documents of 2-6 paragraphs of one package (each paragraph used once, while they last)."""
    pool = list(package_paragraphs(source.removeprefix("shuffled/")))
    if len(pool) < 10:
        raise ValueError(f"source {source!r}: only {len(pool)} prose paragraphs found")
    rng.shuffle(pool)
    docs = []
    for i in range(n_docs):
        size = rng.randint(2, 6)
        start = (i * 4) % len(pool)
        docs.append("\n\n".join((pool + pool)[start:start + size]))
    return docs


def shuffled(text: str, rng: random.Random) -> str:
    """Each paragraph's words in random order, dressed as sentences: word salad with prose's vocabulary."""
    out = []
    for paragraph in text.split("\n\n"):
        words = [w.strip(".,;:") for w in paragraph.split()]
        rng.shuffle(words)
        sentences, i = [], 0
        while i < len(words):
            size = rng.randint(8, 16)
            chunk = words[i:i + size]
            sentences.append(chunk[0].capitalize() + " " + " ".join(chunk[1:]) + ".")
            i += size
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def boilerplate(site: str, rng: random.Random) -> str:
    """A page's chrome without its article: menus, banners, prompts and a footer."""
    name = rng.choice(["Daily", "Best", "Smart", "Home", "City", "Prime"]) + rng.choice(["Hub", "Post", "Zone", "Point"])
    sections = SITES[site]
    lines = [" | ".join(["Home", *rng.sample(sections, 4), "Contact"])]
    blocks = [
        "We use cookies to improve your experience on our site. By continuing to browse you agree to our use of cookies. Accept all | Manage preferences",
        f"Sign in to {name} | Register | Forgot your password?",
        "Share this: Facebook Twitter WhatsApp Email Print",
        f"Subscribe to the {name} newsletter and never miss an update! Enter your email address. Subscribe",
        f"Related: {' | '.join(rng.sample(sections, 3))}",
        "Advertisement",
        f"Trending now: {rng.choice(sections)} {rng.randint(2, 99)} things you need to know",
        "Leave a comment. You must be logged in to post a comment.",
        "Read more >> Previous page | Next page | Page 1 of " + str(rng.randint(2, 40)),
    ]
    lines += rng.sample(blocks, rng.randint(4, len(blocks)))
    lines.append(f"Copyright {rng.randint(2005, 2026)} {name}. All rights reserved. Privacy Policy | Terms of Use | Sitemap")
    return "\n".join(lines)


def spam(niche: str, rng: random.Random) -> str:
    """Keyword-stuffed shop text, a dozen or so lines about the niche's products."""
    products = NICHES[niche]
    templates = [
        "Buy cheap {p} online at the best price.", "Best {p} deals {y}, {p} for sale near me.",
        "Top {n} {p} reviews: {p} {p} {p}.", "Order {p} today and get free shipping!",
        "Discount {p}, {p} sale, {p} coupon code {y}.", "Why pay more? {p} at wholesale prices.",
        "Click here for {p}. Limited offer! Only {n} left in stock.", "{P} {p} {p} best cheap {p} top rated.",
        "Looking for {p}? We have the largest selection of {p} online.", "Hot {p} offers, {n}% off all {p} this week.",
    ]
    lines = []
    for _ in range(rng.randint(8, 16)):
        product = rng.choice(products)
        lines.append(rng.choice(templates).format(p=product, P=product.capitalize(), y=rng.randint(2019, 2026),
                                                   n=rng.randint(3, 90)))
    return " ".join(lines) if rng.random() < 0.5 else "\n".join(lines)


def sources() -> list[str]:
    """Every source, reference and web-like."""
    packages = [f"stdlib/{p}" for p in STDLIB_PACKAGES]
    packages += [p for p in THIRD_PARTY_PACKAGES if importlib.util.find_spec(p) is not None]
    return (packages + [f"shuffled/{p}" for p in packages] + [f"spam/{n}" for n in NICHES]
            + [f"boilerplate/{s}" for s in SITES])


def build(docs_per_source: int = 40, seed: int = 0) -> list[dict]:
    """Records ``{"text", "label", "source"}``: label 1 for reference documents, 0 for web-like ones."""
    records = []
    for source in sources():
        rng = random.Random(f"{seed}/{source}")
        kind, _, rest = source.partition("/")
        if kind == "shuffled":
            texts = [shuffled(t, rng) for t in reference_documents(source, docs_per_source, rng)]
        elif kind == "spam":
            texts = [spam(rest, rng) for _ in range(docs_per_source)]
        elif kind == "boilerplate":
            texts = [boilerplate(rest, rng) for _ in range(docs_per_source)]
        else:
            texts = reference_documents(source, docs_per_source, rng)
        label = int(kind not in ("shuffled", "spam", "boilerplate"))
        records += [{"text": t, "label": label, "source": source} for t in texts]
    return records


def split_by_source(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training records, held-out records): the held-out sources are ``HELD_OUT``."""
    return [r for r in records if r["source"] not in HELD_OUT], [r for r in records if r["source"] in HELD_OUT]


def write_files(folder: str, docs_per_source: int = 40, seed: int = 0) -> dict[str, str]:
    """The corpus as JSONL files in ``folder``: reference.jsonl and web.jsonl (training sources, by
    label) and held_out.jsonl (the held-out sources); returns their paths by name."""
    train, held_out = split_by_source(build(docs_per_source, seed))
    parts = {"reference": [r for r in train if r["label"]], "web": [r for r in train if not r["label"]],
             "held_out": held_out}
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, rows in parts.items():
        paths[name] = os.path.join(folder, f"{name}.jsonl")
        with open(paths[name], "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write the quality classifier corpus (reference, web, held_out) as JSONL")
    parser.add_argument("folder")
    parser.add_argument("--docs-per-source", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = write_files(args.folder, args.docs_per_source, args.seed)
    print("wrote " + ", ".join(written.values()))
