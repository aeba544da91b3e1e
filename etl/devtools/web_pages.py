"""Web pages and WARC files made at run time, the same on every machine with this Python.

The main content of a reference page is what ``pydoc.HTMLDoc`` writes for a standard-library
module (its file paths and object addresses replaced, so the page does not depend on where Python
lives); that of an article page is prose, one paragraph a ``<p>``, marked up by pydoc. Each is wrapped in planted boilerplate (a navigation bar, a cookie banner, a sidebar, a footer), whose
sentences ``BOILERPLATE`` lists so that a test or the benchmark can check the extracted text for
them. ``warc_record`` writes one WARC/1.0 record by hand, so a test can plant exactly the record it
needs (a truncated one, a PDF, a ``request``); ``write_warc`` writes a list of them, one gzip member
per record as crawlers do when the name ends in ``.gz``.
"""
from __future__ import annotations

import gzip
import importlib
import pydoc
import re
import uuid
from dataclasses import dataclass

# Small, pure-Python modules whose pydoc pages hold no object addresses.
MODULES = ("textwrap", "colorsys", "bisect", "fnmatch", "heapq", "shlex", "glob", "keyword", "stat", "string",
           "copy", "html", "graphlib", "reprlib", "quopri", "netrc", "numbers", "zipimport", "secrets", "calendar")

_NAVS = [
    '<header><nav class="navbar"><ul><li><a href="/">Home</a></li><li><a href="/docs">Documentation index</a></li>'
    '<li><a href="/downloads">Downloads and releases</a></li><li><a href="/community">Community forum</a></li></ul>'
    '</nav></header>',
    '<div id="top-menu" class="menu"><a href="/">Start page</a> | <a href="/blog">Latest blog posts</a> | '
    '<a href="/shop">Merchandise shop</a> | <a href="/login">Sign in to your account</a></div>',
]
_COOKIES = [
    '<div id="cookie-banner" class="cookie-consent"><p>We use cookies to improve your browsing experience and '
    'to show you personalised offers.</p><button>Accept all cookies</button><button>Manage preferences</button></div>',
    '<div class="gdpr-notice" role="dialog"><p>This website stores data such as cookies to enable essential site '
    'functionality.</p><a href="/privacy">Read our privacy notice</a></div>',
]
_SIDEBARS = [
    '<aside class="sidebar"><h3>Related articles</h3><ul><li><a href="/a">Ten tricks every programmer should '
    'know</a></li><li><a href="/b">Subscribe to our weekly newsletter</a></li></ul></aside>',
    '',
]
_FOOTERS = [
    '<footer class="site-footer"><p>Copyright 2001-2026 Example Software Foundation. All rights reserved.</p>'
    '<p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a> | <a href="/contact">Contact '
    'us</a></p></footer>',
    '<footer><div class="footer-links">Follow us on social media for daily updates | Advertise with us | '
    'Careers at Example Corp</div></footer>',
]
# One sentence of each template: none may survive extraction.
BOILERPLATE = ("Documentation index", "Latest blog posts", "Accept all cookies", "cookies to improve your browsing",
               "stores data such as cookies", "Ten tricks every programmer", "weekly newsletter",
               "All rights reserved", "Follow us on social media", "Careers at Example Corp")


@dataclass
class Page:
    url: str
    html: str  # the whole page, boilerplate included
    body: str  # pydoc's HTML alone: the main content


def module_html(name: str) -> str:
    """pydoc's page for a standard-library module, without machine-dependent paths."""
    module = importlib.import_module(name)
    html = pydoc.HTMLDoc().docmodule(module)
    folder = re.escape(str(getattr(module, "__file__", "") or "").rsplit("/", 1)[0])
    html = re.sub(folder, "lib", html) if folder else html
    return re.sub(r" at 0x[0-9a-f]+", "", html)


def _wrap(i: int, title: str, body: str) -> str:
    """``body`` as the main content of a page in the ``i``-th boilerplate combination."""
    wrap = (_NAVS[i % 2], _COOKIES[(i // 2) % 2], _SIDEBARS[i % 2], _FOOTERS[(i // 3) % 2])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body>{wrap[0]}{wrap[1]}<main><article>{body}</article></main>{wrap[2]}{wrap[3]}</body></html>')


def make_pages(n: int, host: str = "docs.example.org") -> list[Page]:
    """``n`` reference pages, the modules in turn, each wrapped in one of the boilerplate combinations."""
    pages = []
    for i in range(n):
        name = MODULES[i % len(MODULES)]
        body = module_html(name)
        url = f"https://{host}/lib/{name}.html" + (f"?copy={i}" if i >= len(MODULES) else "")
        pages.append(Page(url, _wrap(i, f"{name} module", body), body))
    return pages


def article_pages(texts: list[str], host: str = "blog.example.org") -> list[Page]:
    """An article page per text (paragraphs one a line), each paragraph marked up by pydoc."""
    markup = pydoc.HTMLDoc().markup
    pages = []
    for i, text in enumerate(texts):
        body = "".join(f"<p>{markup(line)}</p>" for line in text.splitlines() if line.strip())
        pages.append(Page(f"https://{host}/posts/{i}.html", _wrap(i, f"Post {i}", body), body))
    return pages


def http_response(body: bytes, content_type: str | None = "text/html; charset=utf-8", status: str = "200 OK") -> bytes:
    """An HTTP response as a WARC response record's block."""
    header = f"HTTP/1.1 {status}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
    return (header + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def warc_record(kind: str, block: bytes, url: str | None = None, date: str = "2024-05-01T12:00:00Z",
                headers: dict[str, str] | None = None, seq: int = 0, cut: int = 0) -> bytes:
    """One WARC/1.0 record (``kind``: response, request, warcinfo, metadata, conversion, ...); its id is
    derived from ``url``, ``date`` and ``seq``, so the bytes are the same on every run. ``cut`` drops
    that many bytes from the end, as a file that ends inside the record."""
    content_type = {"response": "application/http; msgtype=response", "request": "application/http; msgtype=request",
                    "warcinfo": "application/warc-fields", "metadata": "application/warc-fields",
                    "conversion": "text/plain"}.get(kind, "application/octet-stream")
    record_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{kind} {url} {date} {seq}")
    fields = {"WARC-Type": kind, "WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": date}
    if url:
        fields["WARC-Target-URI"] = url
    fields.update({"Content-Type": content_type, **(headers or {}), "Content-Length": str(len(block))})
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    data = head.encode() + block + b"\r\n\r\n"
    return data[: len(data) - cut]


def write_warc(path: str, records: list[bytes]) -> None:
    """The records as a WARC file; gzipped one member per record when ``path`` ends in .gz."""
    with open(path, "wb") as out:
        for record in records:
            out.write(gzip.compress(record, mtime=0) if path.endswith(".gz") else record)


def page_records(pages: list[Page], date: str = "2024-05-01T12:00:00Z") -> list[bytes]:
    """A request and a response record for each page, as a crawler writes them."""
    records = []
    for i, page in enumerate(pages):
        request = f"GET {page.url} HTTP/1.1\r\nHost: example\r\n\r\n".encode()
        records.append(warc_record("request", request, page.url, date, seq=i))
        records.append(warc_record("response", http_response(page.html.encode()), page.url, date, seq=i))
    return records
