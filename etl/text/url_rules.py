"""URL block and allow lists, in plain Python (no Spark): which list, and which entry, rejects a URL.

A list file has one entry a line; blank lines and lines starting with ``#`` are ignored. Entries
match as datatrove's ``URLFilter`` matches them, except where said:

- a **domain** entry blocks that host and every host under it (``example.com`` blocks
  ``www.example.com`` and ``a.b.example.com``), compared lower-cased, without port or trailing dot
  (datatrove compares the registered domain and the full host only, through tldextract's public
  suffix list, which it downloads);
- a **URL** entry blocks that exact URL;
- a **banned word** blocks a URL holding it as a whole word, the URL split at every character
  that is not an ASCII letter or digit and lower-cased (datatrove's ``banned_words``);
- an **allow** entry (a domain, or a URL when it holds ``://``) lets a URL through whatever the
  block lists say.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


def parse_entries(text: str) -> list[str]:
    """The entries of a list file: stripped lines, without blanks and ``#`` comments."""
    return [line for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def url_words(url: str) -> set[str]:
    """The URL's words: split at anything but ASCII letters and digits, lower-cased."""
    return {word for word in _NOT_ALNUM.split(url.lower()) if word}


def host_of(url: str) -> str:
    """The URL's host, lower-cased, without port or trailing dot ('' when it has none)."""
    try:
        host = urlsplit(url if "://" in url else "//" + url).hostname or ""
    except ValueError:  # e.g. an invalid IPv6 literal
        return ""
    return host.rstrip(".")


def _suffixes(host: str) -> list[str]:
    """``a.b.com`` -> ``a.b.com``, ``b.com``, ``com``: the host and every domain above it."""
    parts = host.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


@dataclass
class UrlLists:
    """Every entry, each mapped to the list (a file name, or ``banned_words``) it came from."""

    domains: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    words: dict[str, str] = field(default_factory=dict)
    allowed_domains: dict[str, str] = field(default_factory=dict)
    allowed_urls: dict[str, str] = field(default_factory=dict)

    def add_domains(self, entries: list[str], origin: str) -> None:
        for entry in entries:
            self.domains.setdefault(host_of(entry) or entry.lower(), origin)

    def add_urls(self, entries: list[str], origin: str) -> None:
        for entry in entries:
            self.urls.setdefault(entry, origin)

    def add_words(self, entries: list[str], origin: str) -> None:
        for entry in entries:
            for word in url_words(entry):
                self.words.setdefault(word, origin)

    def add_allowed(self, entries: list[str], origin: str) -> None:
        for entry in entries:
            if "://" in entry:
                self.allowed_urls.setdefault(entry, origin)
            else:
                self.allowed_domains.setdefault(host_of(entry) or entry.lower(), origin)

    def judge(self, url: str | None) -> tuple[str | None, str | None]:
        """(reason, detail) when a list rejects ``url``; (None, None) when it passes (no URL passes)."""
        if not url:
            return None, None
        url = url.strip()
        host = host_of(url)
        suffixes = _suffixes(host) if host else []
        if url in self.allowed_urls or any(s in self.allowed_domains for s in suffixes):
            return None, None
        for suffix in suffixes:
            if suffix in self.domains:
                return "url_filter:domain", f"{self.domains[suffix]}: {suffix}"
        if url in self.urls:
            return "url_filter:url", f"{self.urls[url]}: {url}"
        if self.words:
            for word in sorted(url_words(url)):
                if word in self.words:
                    return "url_filter:banned_word", f"{self.words[word]}: {word}"
        return None, None
