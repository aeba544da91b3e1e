"""A synthetic web-like corpus with planted problems, and the ground truth to check a pipeline against.

`make_fixture(n_docs, seed, out_dir)` writes JSONL files (every other one gzipped) of clean prose
documents mixed with problems each stage must catch: mojibake (fix_encoding repairs it), text that
is undecodable (fix_encoding rejects it), exact duplicates and their whitespace/case variants
(exact_dedup keeps one), junk (quality rejects it) and bad input lines (ingest rejects them).
It returns a `FixtureTruth` naming, for each problem, the document ids a pipeline must catch.

The prose is built from sentences of the Python standard library's docstrings (found in its source
files with a regular expression, so nothing is imported or downloaded), assembled into paragraphs. Every clean document passes the
Gopher and C4 quality rules at their defaults: 50+ words, five or more sentences, every line ending
in terminal punctuation, stop words, no curly brackets. A share of them carries typographic
punctuation and accented names, as real web text does, so the non-ASCII paths get exercised.
The output depends only on `seed` (and the Python version, whose docstrings are the raw material).

Ids in the truth are pipeline ids: ``<source>/<id field>`` for records that parse, and ingest's
``<source>/<file>:<line>`` for lines that do not.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import re
import sysconfig
from dataclasses import dataclass, field
from functools import cache
from typing import Iterator

import ftfy.bad_codecs  # noqa: F401  (registers the "sloppy-windows-1252" codec real mojibake comes from)

from .web_pages import Page, article_pages, http_response, make_pages, page_records, warc_record, write_warc

# Gopher's stop words: a clean document holds at least two of them.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_SKIPPED_STDLIB_DIRS = {
    "test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__", "turtledemo",
    "pydoc_data", "ensurepip",
}
# A sentence we take: starts with a capital, plain words and commas, ends in . ! or ? (Gopher counts
# punctuation marks as words, and prose heavy in brackets and quotes falls below its 80% alphabetic words).
_PROSE_SENTENCE_RE = re.compile(r"^[A-Z][A-Za-z0-9 ,'\-]+[a-z][.!?]$")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# Docstrings, and a few other triple-quoted strings: the sentence filter keeps only prose from them.
_TRIPLE_QUOTED_RE = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.DOTALL)
_BANNED_WORDS = ("lorem", "javascript", "cookie", "terms of use", "privacy policy")

_NAMES = ["José Núñez", "Zoë Brontë", "Jürgen Müller", "Søren Kierkegaard", "Ana Sánchez", "François Dupré",
          "Łukasz Wójcik", "Ömer Çelik", "Björk Guðmundsdóttir", "Nguyễn Văn An"]
_PLACES = ["Zürich", "Kraków", "São Paulo", "Reykjavík", "Łódź", "Málaga", "Göteborg", "Besançon", "Tōkyō",
           "Curaçao"]
_CYRILLIC = str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                          "абцдефгхийклмнопярстуввхызАБЦДЕФГХИЙКЛМНОПЯРСТУВВХЫЗ")
_LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
          "dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip "
          "ex ea commodo consequat duis aute irure dolor in reprehenderit in voluptate velit esse cillum").split()

JUNK_KINDS = ("too_short", "symbol_spam", "lorem_ipsum", "repeated_lines", "bullet_list")
BAD_INPUT_KINDS = ("malformed_json", "invalid_utf8", "missing_text", "empty_text", "too_large")
MOJIBAKE_KINDS = ("utf8_read_as_cp1252", "utf8_read_as_latin1", "utf8_read_as_cp1252_twice", "one_paragraph")


@dataclass
class FixtureTruth:
    """What a correct pipeline does with the fixture; every id is a pipeline document id."""

    out_dir: str
    source: str
    # Ingest must reject records larger than this (run the pipeline with max_doc_bytes set to it).
    max_doc_bytes: int
    files: list[str]
    n_records: int
    # Documents with no planted problem: all should be kept, unchanged.
    clean: list[str] = field(default_factory=list)
    # id -> the text before mojibake: fix_encoding must restore it exactly, and the document is kept.
    mojibake: dict[str, str] = field(default_factory=dict)
    # Ids sharing one text up to whitespace, case or mojibake: exactly one of each group survives.
    duplicate_groups: list[list[str]] = field(default_factory=list)
    # Junk kind -> ids the quality stage must reject.
    junk: dict[str, list[str]] = field(default_factory=dict)
    # Ids fix_encoding must reject as `undecodable`.
    undecodable: list[str] = field(default_factory=list)
    # Ingest reason -> ids ingest must reject with that reason.
    bad_input: dict[str, list[str]] = field(default_factory=dict)

    def input_config(self) -> dict:
        """The pipeline `inputs` entry that reads this fixture."""
        return {"path": os.path.join(self.out_dir, "*"), "source": self.source, "id_field": "id"}


@cache
def prose_sentences() -> tuple[str, ...]:
    """Prose sentences from the standard library's docstrings, sorted (deterministic for a Python version)."""
    root = sysconfig.get_paths()["stdlib"]
    sentences = set()
    for path in _stdlib_files(root):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for match in _TRIPLE_QUOTED_RE.finditer(handle.read()):
                sentences.update(_docstring_sentences(match.group(1) or match.group(2)))
    if len(sentences) < 1000:
        raise RuntimeError(f"found only {len(sentences)} prose sentences in {root}; is the standard library there?")
    return tuple(sorted(sentences))


def _stdlib_files(root: str) -> Iterator[str]:
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in _SKIPPED_STDLIB_DIRS and not d.startswith("config-"))
        yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))


def _docstring_sentences(doc: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", doc):
        for sentence in _SENTENCE_SPLIT_RE.split(" ".join(paragraph.split())):
            words, lowered = sentence.split(), sentence.lower()
            if (
                6 <= len(words) <= 40
                and _PROSE_SENTENCE_RE.match(sentence)
                and sentence.count(",") <= len(words) // 6  # not a list of names
                and " - " not in sentence and "--" not in sentence
                and not any(b in lowered for b in _BANNED_WORDS)
            ):
                yield sentence


class _Writer:
    """Builds the documents; every method returns text (or raw line bytes) from the shared random state."""

    def __init__(self, rng: random.Random, max_doc_bytes: int):
        self.rng = rng
        self.sentences = prose_sentences()
        self.max_doc_bytes = max_doc_bytes

    def prose(self, min_words: int = 80, max_words: int = 400) -> str:
        """Paragraphs of 2-5 sentences, one paragraph per line, blank lines between some of them."""
        target = self.rng.randint(min_words, max_words)
        picked = self.rng.sample(self.sentences, 120)
        paragraphs, words, used = [], 0, 0
        while used < len(picked) and (words < target or used < 6 or not _has_stop_words(picked[:used])):
            size = min(self.rng.randint(2, 5), len(picked) - used)
            paragraph = picked[used:used + size]
            used += size
            words += sum(len(s.split()) for s in paragraph)
            paragraphs.append(" ".join(paragraph))
        separator = self.rng.choice(["\n", "\n\n"])
        return separator.join(paragraphs)

    def international(self, text: str) -> str:
        """Typographic apostrophes and dashes and an accented name or place: web text is rarely ASCII."""
        text = text.replace("'", "\u2019")
        text = text.replace(", ", " \u2014 ", 1)
        lines = text.split("\n")
        where = self.rng.randrange(len(lines))
        while not lines[where]:
            where = self.rng.randrange(len(lines))
        name, place = self.rng.choice(_NAMES), self.rng.choice(_PLACES)
        lines[where] += f" This note was revised by {name} during a visit to {place}."
        return "\n".join(lines)

    def mojibake(self, text: str, kind: str) -> str:
        if kind == "utf8_read_as_cp1252":
            return text.encode("utf-8").decode("sloppy-windows-1252")
        if kind == "utf8_read_as_latin1":
            return text.encode("utf-8").decode("latin-1")
        if kind == "utf8_read_as_cp1252_twice":
            return self.mojibake(self.mojibake(text, "utf8_read_as_cp1252"), "utf8_read_as_cp1252")
        lines = text.split("\n")  # one_paragraph: only the line that carries the accents went wrong
        for i, line in enumerate(lines):
            if not line.isascii():
                lines[i] = self.mojibake(line, "utf8_read_as_cp1252")
                break
        return "\n".join(lines)

    def whitespace_variant(self, text: str) -> str:
        """Doubled spaces, tabs, trailing blanks: the same text to anyone who collapses whitespace."""
        lines = []
        for line in text.split("\n"):
            words = line.split(" ")
            spaced = "".join(w + self.rng.choice([" ", " ", "  ", "\t"]) for w in words[:-1]) + words[-1]
            lines.append(spaced + " " if spaced else spaced)
        return "  " + "\n".join(lines) + "\n"

    def undecodable(self) -> str:
        """Cyrillic text stored as windows-1251 and read as UTF-8 with replacement: mostly U+FFFD."""
        cyrillic = self.prose(60, 150).translate(_CYRILLIC)
        return cyrillic.encode("cp1251").decode("utf-8", errors="replace")

    def junk(self, kind: str) -> str:
        rng = self.rng
        if kind == "too_short":
            return rng.choice(self.sentences)  # at most 40 words
        if kind == "symbol_spam":
            symbols = "#$%&*+=~^|@!?<>"
            return " ".join("".join(rng.choices(symbols, k=rng.randint(2, 6))) for _ in range(rng.randint(60, 150)))
        if kind == "lorem_ipsum":
            lines = []
            for _ in range(rng.randint(5, 10)):
                words = [rng.choice(_LOREM) for _ in range(rng.randint(12, 25))]
                lines.append(" ".join(words).capitalize() + ".")
            lines[0] = "Lorem ipsum " + lines[0]
            return "\n".join(lines)
        if kind == "repeated_lines":
            line = rng.choice(self.sentences)
            return "\n".join([line] * rng.randint(20, 40))
        if kind == "bullet_list":
            items = [" ".join(rng.choice(self.sentences).rstrip(".!?").split()[:rng.randint(3, 8)]) for _ in range(15)]
            bullet = rng.choice(["\u2022 ", "- "])
            return "\n".join(bullet + item for item in items)
        raise ValueError(f"unknown junk kind {kind!r}")

    def bad_line(self, kind: str, doc_id: str) -> bytes:
        if kind == "malformed_json":
            return json.dumps({"id": doc_id, "text": self.prose()}).encode()[: self.rng.randint(20, 200)]
        if kind == "invalid_utf8":
            return b'{"id": "' + doc_id.encode() + b'", "text": "caf\xe9 cr\xe8me \xff\xfe br\xfbl\xe9e"}'
        if kind == "missing_text":
            return json.dumps({"id": doc_id, "text": None}).encode()
        if kind == "empty_text":
            return json.dumps({"id": doc_id, "text": self.rng.choice(["", "   ", "\n\n"])}).encode()
        if kind == "too_large":
            text = self.prose()
            while len(text.encode("utf-8")) <= self.max_doc_bytes:
                text += "\n" + self.prose()
            return json.dumps({"id": doc_id, "text": text}).encode()
        raise ValueError(f"unknown bad input kind {kind!r}")


def _has_stop_words(sentences: list[str]) -> bool:
    words = {w for s in sentences for w in s.split()}
    return sum(w in words for w in STOP_WORDS) >= 2


def _count(n_docs: int, share: float) -> int:
    return max(1, round(n_docs * share))


def make_fixture(n_docs: int, seed: int, out_dir: str, source: str = "web", max_doc_bytes: int = 20_000,
                 docs_per_file: int = 2000, bad_input_kinds: tuple[str, ...] = BAD_INPUT_KINDS) -> FixtureTruth:
    """Write `n_docs` records (documents and bad lines) under `out_dir`; return what must happen to each.

    Shares: 3% mojibake, 0.5% undecodable, 2% duplicate groups (2-3 copies each), 1% of each junk
    kind, 0.4% of each of `bad_input_kinds`; the rest clean. Every kind appears at least once.
    (A benchmark against a reader that gives up on a file at its first invalid UTF-8 line leaves
    out "invalid_utf8".)
    """
    unknown = set(bad_input_kinds) - set(BAD_INPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown bad input kinds {sorted(unknown)}; known: {BAD_INPUT_KINDS}")
    if n_docs < 100:
        raise ValueError(f"n_docs must be at least 100 so that every planted problem fits, got {n_docs}")
    rng = random.Random(seed)
    writer = _Writer(rng, max_doc_bytes)
    ids = [f"doc-{i:07d}" for i in rng.sample(range(n_docs * 2), n_docs * 2)]  # more than enough, random order
    truth = FixtureTruth(out_dir=out_dir, source=source, max_doc_bytes=max_doc_bytes, files=[], n_records=0)
    # (kind, id or None for lines whose id ingest derives, payload: text or raw bytes)
    records: list[tuple[str, str | None, str | bytes]] = []

    def next_id() -> str:
        return ids.pop()

    def clean_text() -> str:
        text = writer.prose()
        return writer.international(text) if rng.random() < 0.35 else text

    for i, kind in enumerate(MOJIBAKE_KINDS * _count(n_docs, 0.03 / len(MOJIBAKE_KINDS))):
        original = writer.international(writer.prose())
        doc_id = next_id()
        truth.mojibake[f"{source}/{doc_id}"] = original
        records.append(("mojibake", doc_id, writer.mojibake(original, kind)))
    for _ in range(_count(n_docs, 0.005)):
        doc_id = next_id()
        truth.undecodable.append(f"{source}/{doc_id}")
        records.append(("undecodable", doc_id, writer.undecodable()))
    for _ in range(_count(n_docs, 0.02)):
        original = clean_text()
        variants = [original]
        for _ in range(rng.randint(1, 2)):
            variant = rng.choice(["exact", "whitespace", "lowercase", "mojibake"])
            if variant == "whitespace":
                variants.append(writer.whitespace_variant(original))
            elif variant == "lowercase":
                variants.append(original.lower())
            elif variant == "mojibake" and not original.isascii():
                variants.append(writer.mojibake(original, "utf8_read_as_cp1252"))
            else:
                variants.append(original)
        group = []
        for text in variants:
            doc_id = next_id()
            group.append(f"{source}/{doc_id}")
            records.append(("duplicate", doc_id, text))
        truth.duplicate_groups.append(group)
    for kind in JUNK_KINDS:
        truth.junk[kind] = []
        for _ in range(_count(n_docs, 0.01)):
            doc_id = next_id()
            truth.junk[kind].append(f"{source}/{doc_id}")
            records.append((kind, doc_id, writer.junk(kind)))
    for kind in bad_input_kinds:
        truth.bad_input[kind] = []
        for _ in range(_count(n_docs, 0.004)):
            records.append((kind, next_id(), b""))  # the line itself is written below, once its place is known
    while len(records) < n_docs:
        doc_id = next_id()
        truth.clean.append(f"{source}/{doc_id}")
        records.append(("clean", doc_id, clean_text()))
    rng.shuffle(records)
    _write_files(records, truth, writer, docs_per_file)
    truth.clean.sort()
    return truth


def _write_files(records: list, truth: FixtureTruth, writer: _Writer, docs_per_file: int) -> None:
    os.makedirs(truth.out_dir, exist_ok=True)
    for file_no, start in enumerate(range(0, len(records), docs_per_file)):
        name = f"part-{file_no:05d}.jsonl" + (".gz" if file_no % 2 else "")
        lines = []
        for line_no, (kind, doc_id, payload) in enumerate(records[start:start + docs_per_file]):
            if kind in BAD_INPUT_KINDS:
                lines.append(writer.bad_line(kind, doc_id))
                # Lines that do not parse get ingest's positional id; the others keep their own.
                derived = kind in ("malformed_json", "invalid_utf8")
                truth.bad_input[kind].append(f"{truth.source}/{name}:{line_no}" if derived else f"{truth.source}/{doc_id}")
            else:
                lines.append(json.dumps({"id": doc_id, "text": payload}, ensure_ascii=False).encode("utf-8"))
        data = b"\n".join(lines) + b"\n"
        path = os.path.join(truth.out_dir, name)
        with (gzip.open(path, "wb", compresslevel=1) if name.endswith(".gz") else open(path, "wb")) as handle:
            handle.write(data)
        truth.files.append(path)
    truth.n_records = len(records)


def read_fixture_texts(truth: FixtureTruth) -> Iterator[tuple[str, str]]:
    """(pipeline id, text) of every record that parses as a document, as ingest will see it."""
    for path in truth.files:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw.decode("utf-8"))
                except ValueError:
                    continue
                if isinstance(record.get("text"), str) and record["text"].strip():
                    yield f"{truth.source}/{record['id']}", record["text"]


@dataclass
class WarcTruth:
    """What ingest must do with the demo's WARC file; ids are pipeline ids."""

    path: str
    pages: dict[str, Page] = field(default_factory=dict)  # id -> the HTML page that becomes that document
    rejected: dict[str, str] = field(default_factory=dict)  # id -> ingest's reason
    skipped: dict[str, int] = field(default_factory=dict)  # record type -> how many (not documents)


def make_warc_fixture(out_dir: str, n_pages: int = 16, source: str = "crawl", seed: int = 7) -> WarcTruth:
    """One gzipped WARC file of a small crawl, the same on every machine with this Python: ``n_pages``
    pages wrapped in boilerplate (``etl.devtools.web_pages``), half pydoc's reference pages (which
    quality rejects: API listings, not prose), half articles of the fixture's clean prose (which
    pass), each with its request record, plus a PDF, a truncated page, a page crawled twice (the
    older copy is a ``duplicate_url``) and warcinfo and metadata records."""
    writer = _Writer(random.Random(seed), 20_000)
    articles = article_pages([writer.prose(min_words=120) for _ in range(n_pages - n_pages // 2)])
    references = make_pages(n_pages // 2 + 1)
    pages = [page for pair in zip(articles, references) for page in pair] + references[len(articles):]
    records = [warc_record("warcinfo", b"software: kiln demo crawl\r\nformat: WARC File Format 1.0\r\n")]
    records += page_records(pages[:n_pages])
    special = [
        ("not_html", warc_record("response", http_response(b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n", "application/pdf"),
                                 "https://docs.example.org/manual.pdf")),
        ("truncated_record", warc_record("response", http_response(references[-1].html.encode()[:3000]),
                                         references[-1].url, headers={"WARC-Truncated": "length"})),
        ("duplicate_url", warc_record("response", http_response(pages[0].html.encode()), pages[0].url,
                                      "2024-04-01T12:00:00Z", seq=1)),
    ]
    records += [record for _, record in special]
    records.append(warc_record("metadata", b"fetchTimeMs: 42\r\n", pages[0].url))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "crawl-00000.warc.gz")
    write_warc(path, records)
    truth = WarcTruth(path, skipped={"warcinfo": 1, "request": n_pages, "metadata": 1})
    truth.pages = {f"{source}/crawl-00000.warc.gz:{2 + 2 * i}": page for i, page in enumerate(pages[:n_pages])}
    first_special = 1 + 2 * n_pages
    truth.rejected = {f"{source}/crawl-00000.warc.gz:{first_special + i}": reason for i, (reason, _) in enumerate(special)}
    return truth
