"""WARC and WET records to documents, with FastWARC (a maintained C++ parser, gzip handled inside).

Only ``response`` records (a crawled page: HTML, whose main text is extracted) and ``conversion``
records (a WET file's plain text) are documents. Every other record (``warcinfo``, ``request``,
``metadata``, ``revisit``, ...) is skipped and counted, not rejected: it never was a document. A
page that cannot become one is rejected with a reason:

- ``not_html``: a response whose payload is not HTML (a PDF, an image, JSON); ``detail`` names the type;
- ``truncated_record``: the crawler cut the payload (``WARC-Truncated``), or the file ends inside it;
- ``undecodable``: its bytes are not valid in the charset the headers give or detection found;
- ``extraction_failed``: the HTML extractor raised.

The charset is the HTTP header's; without one, the page's ``<meta charset>``, else uchardet's guess
(Resiliparse's ``detect_encoding``), names mapped as browsers map them (WHATWG: ``latin1`` reads as
``windows-1252``). ``meta`` holds the URL, the crawl date (``WARC-Date``), the content type, the
charset and the WARC record id.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType
from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

from .extract import HtmlExtractor, extract_text

HTML_TYPES = ("text/html", "application/xhtml+xml")
_DOCUMENT_TYPES = (WarcRecordType.response, WarcRecordType.conversion)


@dataclass
class WebRecord:
    """One WARC record's outcome: a document (``reason`` None), a rejected record, or a skipped one."""

    index: int  # the record's position in its file, counting every record (skipped ones too)
    text: str | None = None
    meta: dict[str, str] | None = None
    reason: str | None = None
    detail: str | None = None
    skipped: str | None = None  # the record type of a record that is not a document
    crawled: int | None = None  # WARC-Date in microseconds since the epoch (the newest crawl of a URL wins)


def read_records(stream: BinaryIO, extractor: HtmlExtractor = "resiliparse") -> Iterator[WebRecord]:
    """Every record of a WARC or WET stream (plain or gzip), in order."""
    records = ArchiveIterator(stream, record_types=WarcRecordType.any_type, parse_http=True)
    for index, record in enumerate(records):
        if record.record_type not in _DOCUMENT_TYPES:
            record.reader.consume()
            yield WebRecord(index, skipped=str(record.record_type))
        else:
            yield _document(index, record, extractor)


def _document(index: int, record: WarcRecord, extractor: HtmlExtractor) -> WebRecord:
    headers = record.headers
    url = headers.get("WARC-Target-URI") or ""
    date = headers.get("WARC-Date") or ""
    is_response = record.record_type == WarcRecordType.response
    content_type = _content_type(record) if is_response else (headers.get("Content-Type") or "text/plain")
    meta = {"url": url, "crawl_date": date, "content_type": content_type,
            "warc_record_id": headers.get("WARC-Record-ID") or ""}
    out = WebRecord(index, meta={k: v for k, v in meta.items() if v}, crawled=_micros(record))
    payload = record.reader.read()
    if headers.get("WARC-Truncated"):
        out.reason, out.detail = "truncated_record", f"WARC-Truncated: {headers.get('WARC-Truncated')}"
    elif len(payload) < record.content_length:
        out.reason, out.detail = "truncated_record", f"the file ends after {len(payload)} of {record.content_length} bytes"
    elif is_response and content_type not in HTML_TYPES:
        out.reason, out.detail = "not_html", content_type or "no content type"
    if out.reason:
        return out
    charset = _charset(record, payload) if is_response else "utf-8"  # WET text is UTF-8
    out.meta["charset"] = charset
    try:
        text = payload.decode(charset)
    except UnicodeDecodeError as err:
        out.reason, out.detail = "undecodable", f"{charset}: invalid byte at {err.start}"
        return out
    if not is_response:
        out.text = text
        return out
    try:
        out.text = extract_text(text, extractor)
    except Exception as err:  # noqa: BLE001  an extractor's failure on one page rejects that page, not the file
        out.reason, out.detail = "extraction_failed", f"{extractor}: {type(err).__name__}: {err}"[:300]
    return out


def _content_type(record: WarcRecord) -> str:
    """The payload's media type: Common Crawl's identified type, else the HTTP header's."""
    identified = record.headers.get("WARC-Identified-Payload-Type")
    declared = record.http_content_type if record.is_http else None
    return (identified or declared or "").split(";")[0].strip().lower()


def _charset(record: WarcRecord, payload: bytes) -> str:
    """The HTTP header's charset when Python knows it, else the page's meta charset or a detected one."""
    declared = record.http_charset
    if declared:
        name = map_encoding_to_html5(declared)
        if name and _known(name):
            return name
    detected = detect_encoding(payload, from_html_meta=True)
    return detected if _known(detected) else "utf-8"


def _known(codec: str) -> bool:
    try:
        "".encode(codec)
    except LookupError:
        return False
    return True


def _micros(record: WarcRecord) -> int | None:
    date = record.record_date
    if not isinstance(date, datetime.datetime):
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=datetime.timezone.utc)
    return (date - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) // datetime.timedelta(microseconds=1)
