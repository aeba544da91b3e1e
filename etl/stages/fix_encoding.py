"""fix_encoding: repair mojibake with ftfy, NFC-normalise, drop control characters; reject what stays undecodable.

ftfy is the slow part of any text pipeline, and most documents give it nothing to do. Before calling
it we check, cheaply, whether any of the fixers we enable could change the text: every fixer acts
only on characters we can list (control characters, C1 controls, odd line breaks, surrogates, '&'
for HTML entities), NFC changes only text that is not already NFC, and ftfy's encoding repair runs
only where its own `is_bad` heuristic fires. Pure-ASCII text needs only the first check. Documents
that pass every check are exactly those `ftfy.fix_text` would return unchanged, so skipping them
gives the same output as running ftfy on everything (`TextRepair.reference_fix`, which the tests
compare against).

Documents that are still mostly U+FFFD or unassigned/private-use code points after repair were
decoded from bytes in an unknown encoding; nothing can restore them, so they are rejected as
`undecodable` with the offending share in `detail`. Documents left with no text at all (they were
nothing but control characters) are rejected as `empty_after_repair`. Rejected rows keep their
original text.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, partial

import ftfy
import pyarrow as pa
from ftfy import TextFixerConfig
from ftfy.badness import is_bad
from ftfy.chardata import CONTROL_CHARS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from .base import BatchVerdicts, DocumentStage, StageContext, StageResult

CHANGED_COLUMN = "fix_encoding_changed"

# Every C0/C1 control character except tab and newline. ftfy leaves some of them (form feed, the C1
# bytes windows-1252 does not define), so we remove what is left after it.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# ftfy's `^[ÃÂ][ ]` badness rule sees a line start only where ftfy cuts the text into lines.
_LINE_START_MOJIBAKE_RE = re.compile("\n[\u00c3\u00c2] ")
_NON_ASCII_RE = re.compile("[^\x00-\x7f]+")
# Every pattern of ftfy's badness regex needs a non-ASCII character and spans at most this many
# characters (tests/etl/test_fix_encoding.py checks both against the installed ftfy).
MOJIBAKE_REACH = 7


@dataclass
class FixEncodingParams:
    # Reject a document when, after repair, more than this share of its characters are U+FFFD.
    max_replacement_share: float = 0.01
    # ... or when more than this share are unassigned or private-use code points.
    max_unassigned_share: float = 0.01
    # Decode HTML entities (&amp;, &#8217;) unless the text contains '<' and so looks like markup.
    unescape_html: bool = True

    def __post_init__(self):
        for name in ("max_replacement_share", "max_unassigned_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")


def ftfy_config(unescape_html: bool) -> TextFixerConfig:
    """Fix broken encodings, not style: like datatrove's FTFYFormatter, plus NFC and Unix line breaks.

    Ligatures, full-width forms and curly quotes are left alone (a model should see them as they
    are written). If you enable another fixer here, add the characters it acts on to `_triggers`.
    """
    return TextFixerConfig(
        unescape_html="auto" if unescape_html else False,
        remove_terminal_escapes=True,
        fix_encoding=True,
        fix_c1_controls=True,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=True,
        fix_surrogates=True,
        remove_control_chars=True,
        normalization="NFC",
        explain=False,
    )


def _triggers(config: TextFixerConfig) -> re.Pattern:
    """The characters at least one enabled ftfy fixer acts on (mojibake and NFC are checked apart)."""
    chars = {chr(c) for c in CONTROL_CHARS}  # remove_control_chars; includes ESC for terminal escapes
    chars |= {chr(c) for c in range(0x80, 0xA0)}  # fix_c1_controls
    chars |= {"\r", "\u2028", "\u2029", "\x85"}  # fix_line_breaks
    if config.unescape_html:
        chars.add("&")
    surrogates = "\ud800-\udfff"  # fix_surrogates
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + surrogates + "]")


class TextRepair:
    """ftfy + NFC + control-character removal, skipping ftfy where it provably changes nothing."""

    def __init__(self, unescape_html: bool = True):
        self.config = ftfy_config(unescape_html)
        self._trigger_re = _triggers(self.config)

    def needs_ftfy(self, text: str) -> bool:
        if len(text) > self.config.max_decode_length:  # ftfy would cut mid-line; let it
            return True
        if self._trigger_re.search(text):
            return True
        if text.isascii():  # ASCII is NFC and has no mojibake: only the triggers matter
            return False
        return (
            not unicodedata.is_normalized("NFC", text)
            or _LINE_START_MOJIBAKE_RE.search(text) is not None
            or _may_have_mojibake(text)
        )

    def fix(self, text: str) -> str:
        if self.needs_ftfy(text):
            text = ftfy.fix_text(text, self.config)
        return _finish(text)

    def reference_fix(self, text: str) -> str:
        """What `fix` must return for every text: ftfy on everything, no shortcut."""
        return _finish(ftfy.fix_text(text, self.config))


def _may_have_mojibake(text: str) -> bool:
    """ftfy's `is_bad`, run only on the windows around non-ASCII characters (where any match must lie).

    On mostly-ASCII text with a few accents or curly quotes this is many times faster than scanning
    the whole text with ftfy's large regex; joining the windows can only add matches, never lose one.
    """
    windows: list[str] = []
    start = end = -1
    for match in _NON_ASCII_RE.finditer(text):
        low, high = max(match.start() - MOJIBAKE_REACH, 0), match.end() + MOJIBAKE_REACH
        if low > end:
            if end >= 0:
                windows.append(text[start:end])
            start = low
        end = high
    if end >= 0:
        windows.append(text[start:end])
    return is_bad("\n".join(windows))


def _finish(text: str) -> str:
    """Remove the control characters ftfy keeps; re-normalise, as a removal can join combining marks."""
    if _CONTROL_RE.search(text):
        text = unicodedata.normalize("NFC", _CONTROL_RE.sub("", text))
    return text


def undecodable_detail(text: str, max_replacement_share: float, max_unassigned_share: float) -> str | None:
    """Why a (repaired) text counts as undecodable, or None when it is fine."""
    if not text or text.isascii():
        return None
    replacement = text.count("\ufffd") / len(text)
    if replacement > max_replacement_share:
        return f"replacement_char_share={replacement:.4f} > {max_replacement_share}"
    # Categories of the distinct characters only: cheap even for long texts.
    odd = sum(text.count(c) for c in set(text) if not c.isascii() and unicodedata.category(c) in ("Cn", "Co"))
    unassigned = odd / len(text)
    if unassigned > max_unassigned_share:
        return f"unassigned_or_private_use_share={unassigned:.4f} > {max_unassigned_share}"
    return None


@cache
def _repair(unescape_html: bool) -> TextRepair:
    """One TextRepair per Python worker (compiling its regex once)."""
    return TextRepair(unescape_html)


def _repair_document(original: str | None, repair: TextRepair, params: FixEncodingParams):
    """(text, reason, detail) for one document; a rejected document keeps the text it came with."""
    if original is None:
        return None, None, None
    fixed = repair.fix(original)
    if not fixed.strip():
        return original, "empty_after_repair", "nothing but control characters and whitespace"
    detail = undecodable_detail(fixed, params.max_replacement_share, params.max_unassigned_share)
    if detail is not None:
        return original, "undecodable", detail
    return fixed, None, None


def _fix_batch(params: FixEncodingParams, batch: pa.RecordBatch) -> BatchVerdicts:
    repair = _repair(params.unescape_html)
    originals = batch.column("text").to_pylist()
    results = [_repair_document(text, repair, params) for text in originals]
    texts = [text for text, _, _ in results]
    return BatchVerdicts(
        reasons=[reason for _, reason, _ in results],
        details=[detail for _, _, detail in results],
        columns={CHANGED_COLUMN: [new != old for new, old in zip(texts, originals)]},
        texts=texts,
    )


class FixEncoding(DocumentStage[FixEncodingParams]):
    name = "fix_encoding"
    Params = FixEncodingParams
    columns = {CHANGED_COLUMN: BooleanType()}

    def run(self, docs: DataFrame, ctx: StageContext) -> StageResult:
        return StageResult(self.annotate(docs, partial(_fix_batch, self.params)), metrics=_metrics)


def _metrics(annotated: DataFrame) -> dict:
    row = annotated.agg(
        F.sum(F.when(F.col("reason").isNull() & F.col(CHANGED_COLUMN), 1).otherwise(0)).alias("changed")
    ).collect()[0]
    return {"documents_changed": int(row["changed"] or 0)}
