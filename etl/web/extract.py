"""The main text of an HTML page, without its navigation, banners and footers.

Two maintained extractors: Resiliparse (the default: ``extract_plain_text`` with its main-content
heuristics, in C++) and trafilatura (pure Python on lxml). On the demo's web pages both remove the
planted boilerplate; Resiliparse is an order of magnitude faster and keeps all of the main content,
where trafilatura drops a tenth of it (bench/warc_bench.py; docs/etl/ingest.md).
"""
from __future__ import annotations

from typing import Callable, Literal

from resiliparse.extract.html2text import extract_plain_text

HtmlExtractor = Literal["resiliparse", "trafilatura"]


def _resiliparse(html: str) -> str:
    return extract_plain_text(html, main_content=True, preserve_formatting=True, list_bullets=True, alt_texts=False)


def _trafilatura(html: str) -> str:
    import trafilatura  # imported where it runs, and only when chosen (it loads lxml and its models)

    return trafilatura.extract(html, include_comments=False, include_tables=True) or ""


EXTRACTORS: dict[str, Callable[[str], str]] = {"resiliparse": _resiliparse, "trafilatura": _trafilatura}


def extract_text(html: str, extractor: HtmlExtractor = "resiliparse") -> str:
    """The page's main text, lines stripped, runs of blank lines collapsed to one."""
    lines = [line.strip() for line in EXTRACTORS[extractor](html).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()
