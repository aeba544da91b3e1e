"""WARC ingest and HTML extraction: Kiln's reader against datatrove 0.10.1's WarcReader, same extractor.

Writes a WARC corpus (``etl.devtools.web_pages``: pydoc pages of standard-library modules wrapped in
planted boilerplate, a ``request`` record before each ``response``, gzipped per record as crawlers
write them), then times, in one process each and alternating so that both sides see the same load:

- Kiln: ``etl.web.warc.read_records`` (FastWARC, charset, Resiliparse's main-content extraction):
  what each Spark task of ingest runs per file, without Spark and Delta;
- datatrove: ``WarcReader`` (warcio, cchardet) then a ``BaseExtractor`` calling the same Resiliparse
  function with the same arguments, run as datatrove runs every extractor (in its sandbox process),
  without an executor.

Documents per second is documents out / wall seconds, the best of ``--repeat`` runs. It then reports
the other extractor (trafilatura) on Kiln's reader, and for both extractors a boilerplate-removal
score on the demo's WARC file (``etl.devtools.fixtures.make_warc_fixture``, as ``make demo`` writes it): the share of the planted boilerplate sentences gone from the text, and
the share of the main content's words (of four letters or more, in pydoc's HTML with its tags
removed) kept.

datatrove runs in .cache/venv-datatrove (scripts/side_install_datatrove.sh), with its reader's
own dependencies (warcio, faust-cchardet, python-magic) and Resiliparse, at the versions .venv
has, installed on first use into .cache/side/warc-peer, which goes first on its path.

    .venv/bin/python bench/warc_bench.py [--pages 600] [--repeat 3]
"""
from __future__ import annotations

import argparse
import html
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from etl.devtools.fixtures import make_warc_fixture  # noqa: E402
from etl.devtools.web_pages import BOILERPLATE, make_pages, page_records, warc_record, write_warc  # noqa: E402
from etl.web.warc import read_records  # noqa: E402

DATATROVE_PYTHON = ROOT / ".cache" / "venv-datatrove" / "bin" / "python"
PEER = ROOT / ".cache" / "side" / "warc-peer"
# datatrove's WarcReader imports warcio, cchardet and magic; the extractor both sides run is Resiliparse.
PEER_PACKAGES = ["warcio==1.8.1", "six==1.17.0", "faust-cchardet==3.2.0", "python-magic==0.4.27",
                 "Resiliparse==2.0.1", "FastWARC==2.0.1"]

_DATATROVE_RUNNER = r"""
import json, sys, time
from datatrove.pipeline.extractors.base import BaseExtractor
from datatrove.pipeline.readers import WarcReader
from etl.web.extract import extract_text

class Resiliparse(BaseExtractor):
    name = "resiliparse"
    def __init__(self, timeout=1):
        super().__init__(timeout)
    def extract(self, text):
        return extract_text(text, "resiliparse")

folder = sys.argv[1]
start = time.perf_counter()
docs = list(Resiliparse().run(WarcReader(folder, glob_pattern="*.warc.gz")()))
seconds = time.perf_counter() - start
print(json.dumps({"docs": len(docs), "seconds": seconds, "chars": sum(len(d.text) for d in docs)}))
"""


def ensure_peer() -> None:
    """datatrove's reader dependencies and Resiliparse, pinned, beside datatrove's venv (once)."""
    stamp = PEER / (".installed-" + "-".join(PEER_PACKAGES).replace("==", "_"))
    if stamp.exists():
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--upgrade", "--target", str(PEER), *PEER_PACKAGES], check=True)
    stamp.touch()


def write_corpus(folder: Path, n_pages: int, files: int = 2) -> int:
    """``n_pages`` pages in ``files`` gzipped WARC files; returns the number of response records."""
    pages = make_pages(n_pages)
    per_file = -(-n_pages // files)
    for i in range(files):
        chunk = pages[i * per_file:(i + 1) * per_file]
        records = [warc_record("warcinfo", b"software: kiln-bench\r\n", seq=i)] + page_records(chunk)
        write_warc(str(folder / f"crawl-{i}.warc.gz"), records)
    return n_pages


def run_kiln(folder: Path, extractor: str) -> dict:
    start = time.perf_counter()
    docs = chars = 0
    for path in sorted(folder.glob("*.warc.gz")):
        with open(path, "rb") as handle:
            for record in read_records(handle, extractor):
                if record.text:
                    docs += 1
                    chars += len(record.text)
    return {"docs": docs, "seconds": time.perf_counter() - start, "chars": chars}


def run_datatrove(folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{PEER}:{ROOT}", "LOGURU_LEVEL": "ERROR"}
    proc = subprocess.run([str(DATATROVE_PYTHON), "-c", _DATATROVE_RUNNER, str(folder)], capture_output=True,
                          text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"datatrove runner failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_WORD = re.compile(r"[A-Za-z]{4,}")
_TAG = re.compile(r"<[^>]*>")


def boilerplate_scores(extractor: str) -> tuple[float, float, int]:
    """(boilerplate sentences removed, main-content words kept) as shares, over the pages of the demo's
    WARC file (``make_warc_fixture``) that ingest keeps; and how many pages that is."""
    removed = planted = kept = total = docs = 0
    with tempfile.TemporaryDirectory() as tmp:
        truth = make_warc_fixture(tmp)
        pages = {page.url: page for page in truth.pages.values()}
        with open(truth.path, "rb") as handle:
            records = [r for r in read_records(handle, extractor) if r.text and r.meta["url"] in pages]
    for record in records:
        page = pages[record.meta["url"]]
        present = [b for b in BOILERPLATE if b in page.html]
        planted += len(present)
        removed += sum(b not in record.text for b in present)
        reference = set(_WORD.findall(html.unescape(_TAG.sub(" ", page.body))))  # neither extractor's view
        words = set(_WORD.findall(record.text.replace("\xa0", " ")))
        kept += len(reference & words)
        total += len(reference)
        docs += 1
    return removed / planted, kept / total, docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ensure_peer()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n = write_corpus(folder, args.pages)
        size = sum(p.stat().st_size for p in folder.glob("*.warc.gz"))
        kiln, theirs, trafilatura = [], [], []
        for _ in range(args.repeat):
            theirs.append(run_datatrove(folder))
            kiln.append(run_kiln(folder, "resiliparse"))
        trafilatura.append(run_kiln(folder, "trafilatura"))
    best = {name: min(runs, key=lambda r: r["seconds"]) for name, runs in
            [("kiln", kiln), ("datatrove", theirs), ("kiln_trafilatura", trafilatura)]}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"machine: {os.cpu_count()} cores, {cpu}; load average {os.getloadavg()[0]:.1f}; one process each side")
    print(f"corpus: {n} pages ({2 * n + 2} records, gzipped WARC, {size / 1e6:.1f} MB); best of {args.repeat}")
    for name, run in best.items():
        print(f"{name:18} {run['docs']:5} docs {run['seconds']:7.2f} s  {run['docs'] / run['seconds']:7.1f} docs/s "
              f"{run['chars']:>10,} chars")
    ratio = (best["kiln"]["docs"] / best["kiln"]["seconds"]) / (best["datatrove"]["docs"] / best["datatrove"]["seconds"])
    print(f"Kiln / datatrove (Resiliparse on both sides): {ratio:.2f}x")
    for extractor in ("resiliparse", "trafilatura"):
        removed, kept, docs = boilerplate_scores(extractor)
        print(f"boilerplate on the demo WARC's {docs} HTML documents, {extractor}: {removed:.1%} of planted "
              f"sentences removed, {kept:.1%} of main-content words kept")


if __name__ == "__main__":
    main()
