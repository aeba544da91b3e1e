"""Train, save and load the byte-level BPE tokenizer the `tokenize` stage encodes with.

A tokenizer is one ``tokenizer.json`` file (the Hugging Face `tokenizers` format), at a local path
or an object-store URL. Kiln can train one (``python -m etl train-tokenizer``) or use any existing
file, for example the GPT-NeoX tokenizer that MPT models use. Its identity in a dataset manifest is
the SHA-256 of that file's bytes, so a changed tokenizer never passes for the old one.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from shards import storage
from shards.provenance import arrow_dataset, open_delta_table

from ..config import InputSpec
from ..ingest import UNREADABLE_FILE_ERRORS, decompressed, list_input_files
from ..paths import to_fsspec_url

log = logging.getLogger(__name__)

TOKENIZER_BASENAME = "tokenizer.json"
# The names GPT-NeoX's tokenizer uses, so a trained tokenizer and NeoX's work with the same config.
DEFAULT_EOS = "<|endoftext|>"
DEFAULT_PAD = "<|padding|>"
DEFAULT_BOS = "<|startoftext|>"


def tokenizer_file(path: str) -> str:
    """``path`` itself when it names a ``.json`` file, else ``path/tokenizer.json``."""
    url = to_fsspec_url(path)
    return url if url.endswith(".json") else storage.join(url, TOKENIZER_BASENAME)


@dataclass(frozen=True)
class LoadedTokenizer:
    tokenizer: Tokenizer
    url: str
    sha256: str  # of the file's bytes: the tokenizer_hash of a dataset manifest

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included (sizes the token dtype)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str, what: str) -> int:
        """The id of a special token, or a clear error naming the parameter ``what``."""
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{what}: token {token!r} is not in the tokenizer at {self.url}")
        return token_id


def load_tokenizer(path: str) -> LoadedTokenizer:
    """Load ``tokenizer.json`` from a local path or object-store URL (a file, or a folder holding one)."""
    url = tokenizer_file(path)
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise FileNotFoundError(f"no tokenizer at {url}; train one with `python -m etl train-tokenizer`") from None
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as err:  # tokenizers raises a bare Exception for malformed files
        raise ValueError(f"{url} is not a valid tokenizer.json: {err}") from None
    return LoadedTokenizer(tokenizer, url, hashlib.sha256(data).hexdigest())


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    eos_token: str = DEFAULT_EOS,
    pad_token: str = DEFAULT_PAD,
    bos_token: str | None = None,
    min_frequency: int = 2,
) -> Tokenizer:
    """A byte-level BPE tokenizer (GPT-2 style: any byte sequence encodes, nothing is unknown).

    The special tokens get the first ids (EOS 0, PAD 1, BOS 2 when asked for), then the 256 byte
    symbols, then merges until ``vocab_size``.
    """
    special = [eos_token, pad_token] + ([bos_token] if bos_token else [])
    if len(set(special)) != len(special):
        raise ValueError(f"special tokens must differ, got {special}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(special) + len(alphabet):
        raise ValueError(f"vocab_size {vocab_size} is below the {len(special) + len(alphabet)} special and byte tokens")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
        initial_alphabet=alphabet, show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str) -> str:
    """Write ``tokenizer.json`` atomically (local or object store); returns the file's URL."""
    url = tokenizer_file(path)
    storage.atomic_write_bytes(url, tokenizer.to_str().encode("utf-8"))
    return url


# --------------------------------------------------------------------------- training texts

def iter_texts(path: str, fmt: str, text_field: str = "text", max_docs: int | None = None) -> Iterator[str]:
    """Texts of a Delta table, Parquet files, JSONL files (compressed too) or text files, in a stable order.

    Read without Spark: a tokenizer trains on one machine, and a sample of the corpus is enough.
    """
    readers = {"delta": _delta_texts, "parquet": _parquet_texts, "jsonl": _jsonl_texts, "text": _file_texts}
    if fmt not in readers:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(readers)}")
    count = 0
    for text in readers[fmt](to_fsspec_url(path), text_field):
        if not isinstance(text, str) or not text:
            continue
        yield text
        count += 1
        if max_docs is not None and count >= max_docs:
            return
    if count == 0:
        raise ValueError(f"no non-empty {text_field!r} values found in {path} ({fmt})")


def _arrow_texts(dataset, text_field: str) -> Iterator[str]:
    if text_field not in dataset.schema.names:
        raise ValueError(f"no column {text_field!r}; columns are {', '.join(dataset.schema.names)}")
    for batch in dataset.to_batches(columns=[text_field]):
        yield from batch.column(0).to_pylist()


def _delta_texts(url: str, text_field: str) -> Iterator[str]:
    yield from _arrow_texts(arrow_dataset(open_delta_table(url)), text_field)


def _parquet_texts(url: str, text_field: str) -> Iterator[str]:
    import pyarrow.dataset as ds

    fs, root = storage.open_fs(url)
    yield from _arrow_texts(ds.dataset(root, filesystem=fs, format="parquet"), text_field)


def _files(url: str) -> list[str]:
    return [full for full, _ in list_input_files(InputSpec(path=url, source="tokenizer"))]


@contextmanager
def _open_text(url: str) -> Iterator[io.TextIOBase]:
    """The file's text, decompressed; the file under the decompressor is closed with it."""
    fs, path = storage.open_fs(url)
    with fs.open(path, "rb") as raw, io.TextIOWrapper(decompressed(url, raw), encoding="utf-8", errors="replace") as text:
        yield text


def _readable_lines(file_url: str) -> Iterator[str]:
    """The file's lines up to where it stops being readable; the rest is skipped with a warning,
    as ingest turns it into an ``unreadable_file`` row instead of failing."""
    read = 0
    try:
        with _open_text(file_url) as lines:
            for line in lines:
                yield line
                read += 1
    except UNREADABLE_FILE_ERRORS as err:
        log.warning("%s: unreadable after line %d (%s: %s); skipped the rest of the file",
                    file_url, read, type(err).__name__, err)


def _jsonl_texts(url: str, text_field: str) -> Iterator[str]:
    skipped = 0
    for file_url in _files(url):
        for line in _readable_lines(file_url):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                yield record.get(text_field)
            elif line.strip():
                skipped += 1
    if skipped:
        log.warning("skipped %d lines of %s that are not JSON objects (ingest reports them per line)", skipped, url)


def _file_texts(url: str, text_field: str) -> Iterator[str]:
    for file_url in _files(url):
        try:
            with _open_text(file_url) as f:
                text = f.read()
        except UNREADABLE_FILE_ERRORS as err:
            log.warning("%s: unreadable (%s: %s); skipped", file_url, type(err).__name__, err)
            continue
        yield text
