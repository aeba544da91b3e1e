"""url_filter: block lists of domains, URLs and words, an allow list that wins, each rejection
naming its list and entry; lists read from local files and from the object store."""
from __future__ import annotations

import pytest

from etl.load_config import validate_pipeline_config
from etl.stages.url_filter import UrlFilterParams, load_lists
from etl.text.url_rules import UrlLists, host_of, parse_entries
from shards.config import ConfigError


@pytest.fixture
def list_files(tmp_path):
    (tmp_path / "domains.txt").write_text("# gambling\ncasino.example\nBad.Example.ORG.\n\n")
    (tmp_path / "urls.txt").write_text("https://news.example/2024/fake-story\n")
    (tmp_path / "words.txt").write_text("porn\nXXX\n")
    (tmp_path / "allow.txt").write_text("museum.casino.example\nhttps://bad.example.org/press-release\n")
    return tmp_path


def _lists(folder) -> UrlLists:
    return load_lists(UrlFilterParams(
        domain_lists=[str(folder / "domains.txt")], url_lists=[str(folder / "urls.txt")],
        banned_word_lists=[str(folder / "words.txt")], banned_words=["warez"], allow_lists=[str(folder / "allow.txt")]))


@pytest.mark.parametrize("url, reason, detail", [
    ("https://casino.example/", "url_filter:domain", "domains.txt: casino.example"),
    ("https://www.casino.example:8443/slots?id=1", "url_filter:domain", "domains.txt: casino.example"),
    ("http://a.b.bad.example.org/x", "url_filter:domain", "domains.txt: bad.example.org"),
    ("https://news.example/2024/fake-story", "url_filter:url", "urls.txt: https://news.example/2024/fake-story"),
    ("https://videos.example/free-XXX-clips", "url_filter:banned_word", "words.txt: xxx"),
    ("https://files.example/warez/list", "url_filter:banned_word", "banned_words: warez"),
    # Passes: an allow-listed host or URL, a longer word, another host, another URL on a listed site.
    ("https://museum.casino.example/history", None, None),
    ("https://bad.example.org/press-release", None, None),
    ("https://videos.example/xxxl-shirts", None, None),
    ("https://notcasino.example/", None, None),
    ("https://news.example/2024/true-story", None, None),
    (None, None, None),
    ("", None, None),
])
def test_each_list_rejects_with_its_entry(list_files, url, reason, detail):
    assert _lists(list_files).judge(url) == (reason, detail)


def test_list_parsing_and_hosts():
    assert parse_entries("# c\n a.example \n\n#x\nb.example") == ["a.example", "b.example"]
    assert host_of("HTTPS://WWW.Example.COM.:80/a") == "www.example.com"
    assert host_of("example.com/path") == "example.com"
    assert host_of("http://[::1") == ""  # not a URL: no host, nothing matches it


def test_lists_load_from_the_object_store(list_files, s3_prefix):
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.put(str(list_files / "domains.txt"), f"{s3_prefix}/lists/domains.txt")
    lists = load_lists(UrlFilterParams(domain_lists=[f"{s3_prefix}/lists/domains.txt"]))
    assert lists.judge("https://casino.example/") == ("url_filter:domain", "domains.txt: casino.example")


def _config(params):
    return {"output": "out", "inputs": [{"path": "x", "source": "s"}], "report": False,
            "stages": [{"name": "url_filter", "params": params}]}


def test_config_errors_name_the_list(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\[0\]\.params: cannot read a list: .*missing\.txt"):
        validate_pipeline_config(_config({"domain_lists": [str(tmp_path / "missing.txt")]}), check_inputs=False)
    with pytest.raises(ConfigError, match="give at least one of"):
        validate_pipeline_config(_config({"allow_lists": []}), check_inputs=False)
