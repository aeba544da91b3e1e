"""The tokenizer that goes with a model (its tokenizer.json), as instruction data, generation and evaluation use it."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

# Names an end-of-text token goes by in common tokenizers, most common first (GPT-NeoX/GPT-2, Llama, Gemma).
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>")


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus what generation and evaluation need from it: plain encode/decode
    (no special tokens added) and the end-of-text id (None when the tokenizer has none)."""

    def __init__(self, tokenizer: Tokenizer, eos_token: str | None = None):
        self.tokenizer = tokenizer
        if eos_token is None:
            eos_token = next((t for t in EOS_CANDIDATES if tokenizer.token_to_id(t) is not None), None)
        elif tokenizer.token_to_id(eos_token) is None:
            raise ValueError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary")
        self.eos_token = eos_token
        self.eos_id = None if eos_token is None else tokenizer.token_to_id(eos_token)

    @classmethod
    def from_file(cls, path: str | Path, eos_token: str | None = None) -> TextTokenizer:
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        return cls.from_bytes(Path(path).read_bytes(), str(path), eos_token)

    @classmethod
    def from_bytes(cls, data: bytes, source: str, eos_token: str | None = None) -> TextTokenizer:
        """A tokenizer.json's contents (read from a file or an object store); ``source`` names it in errors."""
        try:
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as err:  # tokenizers raises plain Exception for a file it cannot parse
            raise ValueError(f"{source} is not a tokenizers tokenizer.json: {err}") from None
        return cls(tokenizer, eos_token)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))
