"""MinHash signatures and LSH banding, vectorised with numpy over Arrow string arrays.

Everything here is plain numpy + pyarrow (no Spark), so the Spark stage, the benchmark and the
tests share one implementation. The steps, all array operations over a whole batch of documents:

1. normalise: Unicode lowercase, every run of characters that are not letters, digits, marks or
   ``_`` becomes one space, trimmed (Arrow compute kernels);
2. shingles: word n-grams (default) or character n-grams of the normalised text. A shingle is a
   byte range of the batch's normalised UTF-8 buffer; its 64-bit hash is a polynomial hash of those
   bytes computed from prefix sums (wrapping uint64 arithmetic, so the hash of any range costs two
   look-ups and a multiply), then mixed with the murmur3 finaliser. No Python call per shingle;
3. signatures: ``num_perm`` hash functions ``h_i(x) = a_i * x + b_i mod 2^32`` on the top 32 bits
   ``x`` of each shingle hash, each applied to all shingles of the chunk at once, with the minimum
   per document taken by ``np.minimum.reduceat``;
4. bands: the signature cut into ``bands`` slices of ``rows`` values, each slice hashed to 64 bits.

A document without any shingle (empty after normalisation) has no signature and never matches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ShingleKind = Literal["word", "char"]

# Characters that are not part of a word: every run of them becomes one space.
_NON_WORD = r"[^\p{L}\p{N}\p{M}_]+"
_SPACE = 32
_U64 = np.uint64
# Fixed odd constants (digits of pi and e) for the polynomial byte hash and the band mixing.
_POLY_BASE = _U64(0x243F6A8885A308D3)
_POLY_BASE_INV = _U64(pow(0x243F6A8885A308D3, -1, 1 << 64))
_LENGTH_SALT = _U64(0xB7E151628AED2A6B)
_BAND_SALT = _U64(0x9E3779B97F4A7C15)
# Bytes of normalised text hashed at once (bounds the prefix-sum arrays to a few tens of MiB).
_CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class ShingleSpec:
    kind: ShingleKind = "word"
    n: int = 5

    def __post_init__(self):
        if self.kind not in ("word", "char"):
            raise ValueError(f"shingle kind must be 'word' or 'char', got {self.kind!r}")
        if self.n < 1:
            raise ValueError(f"shingle n must be at least 1, got {self.n}")


def fmix64(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: a bijection that spreads every input bit over the output."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> _U64(33))
        h = h * _U64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> _U64(33))
        h = h * _U64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> _U64(33))


def _ascii_table() -> np.ndarray:
    """Byte map: ASCII letters lowercased, digits and '_' kept, other ASCII to space; bytes >= 0x80 kept."""
    table = np.arange(256, dtype=np.uint8)
    for byte in range(128):
        char = chr(byte)
        table[byte] = ord(char.lower()) if (char.isalnum() or char == "_") else _SPACE
    return table


_ASCII_TABLE = _ascii_table()


def normalize(texts: pa.Array) -> pa.Array:
    """Lowercase, punctuation, symbols and whitespace runs to one space, trimmed; null -> ''.

    Same result as lowercasing and replacing every match of ``[^\\p{L}\\p{N}\\p{M}_]+`` with a space,
    but the regular expression only runs on documents with non-ASCII text: the ASCII part is a byte
    table look-up and a vectorised collapse of space runs.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    lowered = pc.utf8_lower(pc.fill_null(texts.cast(pa.large_string()), ""))
    non_ascii = pc.invert(pc.string_is_ascii(lowered))
    if pc.any(non_ascii).as_py():
        replaced = pc.replace_substring_regex(lowered.filter(non_ascii), _NON_WORD, " ")
        lowered = pc.replace_with_mask(lowered, non_ascii, replaced)
    return _collapse_ascii(lowered)


def _collapse_ascii(strings: pa.Array) -> pa.Array:
    """Map bytes through _ASCII_TABLE, keep one space between words and none at either end."""
    data, offsets = _buffers(strings)
    mapped = _ASCII_TABLE[data]
    is_space = mapped == _SPACE
    doc_starts = offsets[:-1][np.diff(offsets) > 0]
    # Keep every non-space byte, and a space only when it follows a non-space of the same document.
    keep = ~is_space
    keep[1:] |= is_space[1:] & ~is_space[:-1]
    keep[doc_starts] &= ~is_space[doc_starts]
    kept_before = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    # A document's last kept byte may still be a space (trailing run): drop it.
    kept_positions = np.flatnonzero(keep)
    counts = kept_before[offsets[1:]] - kept_before[offsets[:-1]]
    last = kept_before[offsets[1:]][counts > 0] - 1
    trailing = kept_positions[last][is_space[kept_positions[last]]]
    keep[trailing] = False
    np.cumsum(keep, out=kept_before[1:])
    new_offsets = kept_before[offsets]
    return pa.Array.from_buffers(
        pa.large_string(), len(strings), [None, pa.py_buffer(new_offsets.tobytes()), pa.py_buffer(mapped[keep].tobytes())]
    )


def _buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets rebased to 0) of a large_string array without copying the bytes."""
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset: strings.offset + len(strings) + 1]
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    start, end = int(offsets[0]), int(offsets[-1])
    return data[start:end], offsets - start


class _Powers:
    """P^i and P^-i mod 2^64 for i < length, computed once per worker process and grown on demand."""

    def __init__(self):
        self.forward = self.inverse = np.ones(0, dtype=_U64)

    def get(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.forward) < length:
            size = 1 << max(16, (length - 1).bit_length())  # next power of two: few regrowths
            with np.errstate(over="ignore"):
                # cumprod of [1, P, P, ...] is [P^0, P^1, P^2, ...] (wrapping mod 2^64).
                steps = np.full(size, _POLY_BASE, dtype=_U64)
                steps[0] = 1
                self.forward = np.cumprod(steps)
                steps[1:] = _POLY_BASE_INV
                self.inverse = np.cumprod(steps)
        return self.forward[:length], self.inverse[:length]


_POWERS = _Powers()


def _range_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hash of each byte range data[starts[k]:ends[k]], all at once.

    With S[i] = sum_{g<i} data[g] * P^g (mod 2^64), the polynomial hash of data[a:b] is
    (S[b] - S[a]) * P^-a; P is odd, so P^-1 exists mod 2^64. The length is mixed in, then fmix64.
    """
    forward, inverse = _POWERS.get(len(data) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(data) + 1, dtype=_U64)
        np.cumsum(data.astype(_U64) * forward[: len(data)], out=prefix[1:])
        poly = (prefix[ends] - prefix[starts]) * inverse[starts]
        return fmix64(poly + (ends - starts).astype(_U64) * _LENGTH_SALT)


def _units(data: np.ndarray, offsets: np.ndarray, kind: ShingleKind) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte of every word (or character) of normalised text, in document order."""
    doc_starts, doc_ends = offsets[:-1], offsets[1:]
    nonempty = doc_ends > doc_starts
    if kind == "word":
        # Normalised text is words separated by single spaces, no leading or trailing space.
        is_space = data == _SPACE
        start_mask = np.zeros(len(data), dtype=bool)
        start_mask[1:] = is_space[:-1]
        start_mask[doc_starts[nonempty]] = True
        end_mask = np.zeros(len(data) + 1, dtype=bool)
        end_mask[:-1] = is_space
        end_mask[doc_ends[nonempty]] = True
        return np.flatnonzero(start_mask), np.flatnonzero(end_mask)
    # Characters: every byte that is not a UTF-8 continuation byte starts one.
    starts = np.flatnonzero((data & 0xC0) != 0x80)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    if len(ends):
        ends[-1] = len(data)
    # The last character of each document ends at the document's end, not at the next document.
    last = np.searchsorted(starts, doc_ends[nonempty]) - 1
    ends[last] = doc_ends[nonempty]
    return starts, ends


def _shingle_hashes_chunk(strings: pa.Array, spec: ShingleSpec) -> tuple[np.ndarray, np.ndarray]:
    data, offsets = _buffers(strings)
    n_docs = len(offsets) - 1
    unit_starts, unit_ends = _units(data, offsets, spec.kind)
    unit_doc = np.searchsorted(offsets, unit_starts, side="right") - 1
    units_per_doc = np.bincount(unit_doc, minlength=n_docs)
    first_unit = np.zeros(n_docs, dtype=np.int64)
    np.cumsum(units_per_doc[:-1], out=first_unit[1:])
    # A document shorter than n units is one shingle of all its units.
    shingles_per_doc = np.where(units_per_doc >= spec.n, units_per_doc - spec.n + 1, np.minimum(units_per_doc, 1))
    shingle_offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(shingles_per_doc, out=shingle_offsets[1:])
    shingle_doc = np.repeat(np.arange(n_docs), shingles_per_doc)
    first = first_unit[shingle_doc] + (np.arange(shingle_offsets[-1]) - shingle_offsets[shingle_doc])
    last = first + np.minimum(units_per_doc[shingle_doc], spec.n) - 1
    return _range_hashes(data, unit_starts[first], unit_ends[last]), shingle_offsets


def shingle_hashes(normalized: pa.Array, spec: ShingleSpec) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every shingle of every (normalised) document, and per-document offsets.

    Hashes of document d are ``hashes[offsets[d]:offsets[d + 1]]`` (repeats kept, in text order).
    """
    if isinstance(normalized, pa.ChunkedArray):
        normalized = normalized.combine_chunks()
    normalized = normalized.cast(pa.large_string())
    parts, counts = [], []
    for begin, end in _byte_chunks(normalized):
        hashes, offsets = _shingle_hashes_chunk(normalized.slice(begin, end - begin), spec)
        parts.append(hashes)
        counts.append(np.diff(offsets))
    if not parts:
        return np.zeros(0, dtype=_U64), np.zeros(1, dtype=np.int64)
    offsets = np.zeros(len(normalized) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=offsets[1:])
    return np.concatenate(parts), offsets


def _byte_chunks(strings: pa.Array) -> list[tuple[int, int]]:
    """Consecutive document ranges of about _CHUNK_BYTES each (at least one document)."""
    _, offsets = _buffers(strings)
    bounds, begin = [], 0
    while begin < len(strings):
        end = int(np.searchsorted(offsets, offsets[begin] + _CHUNK_BYTES, side="right")) - 1
        end = min(max(end, begin + 1), len(strings))
        bounds.append((begin, end))
        begin = end
    return bounds


class MinHasher:
    """``num_perm`` hash functions ``x -> a*x + b mod 2^32`` (a odd) drawn from ``seed``.

    ``x`` is the top half of a shingle's 64-bit hash, already mixed by fmix64, so each affine map
    acts as a random permutation of it (datasketch 2's non-legacy schemes do the same); the same
    seed always gives the same signatures.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1):
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm}")
        self.num_perm = num_perm
        self.seed = seed
        rng = np.random.Generator(np.random.PCG64(seed))
        self.a = (rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint32) << np.uint32(1)) | np.uint32(1)
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)

    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint32 [docs, num_perm] signatures, bool [docs] has-shingles) from shingle_hashes().

        One pass over all shingles per hash function, with the per-document minima taken by
        ``np.minimum.reduceat``; documents without shingles get all-ones signatures.
        """
        n_docs = len(offsets) - 1
        has_shingles = np.diff(offsets) > 0
        out = np.full((n_docs, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        if not has_shingles.any():
            return out, has_shingles
        keys = (hashes >> _U64(32)).astype(np.uint32)
        starts = offsets[:-1][has_shingles]
        permuted = np.empty_like(keys)
        minima = np.empty((self.num_perm, len(starts)), dtype=np.uint32)
        with np.errstate(over="ignore"):
            for i in range(self.num_perm):
                np.multiply(keys, self.a[i], out=permuted)
                np.add(permuted, self.b[i], out=permuted)
                minima[i] = np.minimum.reduceat(permuted, starts)
        out[has_shingles] = minima.T
        return out, has_shingles

    def signatures_of_texts(self, texts: pa.Array, spec: ShingleSpec) -> tuple[np.ndarray, np.ndarray]:
        """Normalise, shingle and sign raw texts, a few MiB of text at a time."""
        normalized = normalize(texts)
        parts, flags = [], []
        for begin, end in _byte_chunks(normalized):
            signatures, has = self.signatures(*_shingle_hashes_chunk(normalized.slice(begin, end - begin), spec))
            parts.append(signatures)
            flags.append(has)
        if not parts:
            return np.zeros((0, self.num_perm), np.uint32), np.zeros(0, bool)
        return np.concatenate(parts), np.concatenate(flags)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """int64 [docs, bands]: band b hashes signature values [b*rows, (b+1)*rows).

    Values are packed two per uint64 and chained through fmix64, so distinct slices collide only
    by chance (~2^-64); the band index seeds the chain so equal slices of different bands differ.
    """
    n_docs, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"bands x rows = {bands} x {rows} exceeds num_perm {num_perm}")
    sliced = signatures[:, : bands * rows].reshape(n_docs, bands, rows).astype(_U64)
    with np.errstate(over="ignore"):
        h = np.broadcast_to(fmix64(np.arange(bands, dtype=_U64) + _BAND_SALT), (n_docs, bands)).copy()
        for k in range(0, rows, 2):
            packed = sliced[:, :, k] << _U64(32)
            if k + 1 < rows:
                packed = packed | sliced[:, :, k + 1]
            h = fmix64((h ^ packed) * _BAND_SALT)
    return h.view(np.int64)


def _collision_probability(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - s**rows) ** bands


def _integral(f, lo: float, hi: float, points: int = 2001) -> float:
    if hi <= lo:
        return 0.0
    s = np.linspace(lo, hi, points)
    return float(np.trapezoid(f(s), s))


def optimal_bands(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) minimising the weighted areas of false positives below and false negatives above
    the Jaccard threshold under the S-curve 1 - (1 - s^rows)^bands (the rule datasketch.MinHashLSH uses)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _integral(lambda s: _collision_probability(s, bands, rows), 0.0, threshold)
            fn = _integral(lambda s: 1.0 - _collision_probability(s, bands, rows), threshold, 1.0)
            error = fp * false_positive_weight + fn * false_negative_weight
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def signatures_from_binary(values: pa.Array, num_perm: int) -> np.ndarray:
    """uint32 [n, num_perm] from a binary Arrow array of packed signatures (no nulls)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.large_binary())
    data, offsets = _buffers(values)
    if len(values) and not np.all(np.diff(offsets) == 4 * num_perm):
        raise ValueError(f"signatures must be {4 * num_perm} bytes each (num_perm={num_perm})")
    return data.view(np.uint32).reshape(len(values), num_perm) if len(values) else np.zeros((0, num_perm), np.uint32)


def signatures_to_binary(signatures: np.ndarray) -> pa.Array:
    """Packed little-endian uint32 signatures as an Arrow binary array (one value per row)."""
    n_docs, num_perm = signatures.shape
    width = 4 * num_perm
    offsets = pa.py_buffer((np.arange(n_docs + 1, dtype=np.int32) * width).tobytes())
    data = pa.py_buffer(np.ascontiguousarray(signatures, dtype="<u4").tobytes())
    return pa.Array.from_buffers(pa.binary(), n_docs, [None, offsets, data])


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal signature values, row by row: the MinHash estimate of Jaccard similarity."""
    return (a == b).mean(axis=1)


def unique_per_document(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's distinct shingle hashes (sorted), with new offsets."""
    n_docs = len(offsets) - 1
    doc = np.repeat(np.arange(n_docs), np.diff(offsets))
    order = np.lexsort((hashes, doc))
    hashes, doc = hashes[order], doc[order]
    keep = np.ones(len(hashes), dtype=bool)
    keep[1:] = (hashes[1:] != hashes[:-1]) | (doc[1:] != doc[:-1])
    new_offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc[keep], minlength=n_docs), out=new_offsets[1:])
    return hashes[keep], new_offsets


def exact_jaccard(
    hashes_a: np.ndarray, offsets_a: np.ndarray, hashes_b: np.ndarray, offsets_b: np.ndarray
) -> np.ndarray:
    """Exact Jaccard similarity of shingle sets, pair k being document k of side a and of side b."""
    set_a, off_a = unique_per_document(hashes_a, offsets_a)
    set_b, off_b = unique_per_document(hashes_b, offsets_b)
    n_pairs = len(off_a) - 1
    size_a, size_b = np.diff(off_a), np.diff(off_b)
    pair = np.concatenate([np.repeat(np.arange(n_pairs), size_a), np.repeat(np.arange(n_pairs), size_b)])
    values = np.concatenate([set_a, set_b])
    order = np.lexsort((values, pair))
    pair, values = pair[order], values[order]
    shared = (pair[1:] == pair[:-1]) & (values[1:] == values[:-1])
    intersection = np.bincount(pair[1:][shared], minlength=n_pairs)
    union = size_a + size_b - intersection
    return np.divide(intersection, union, out=np.zeros(n_pairs), where=union > 0)
