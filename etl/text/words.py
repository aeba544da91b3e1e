"""Gopher and C4 quality heuristics for one document, in plain Python (no Spark).

The rules and their defaults are those of datatrove 0.10.1's ``GopherRepetitionFilter``,
``GopherQualityFilter`` and ``C4QualityFilter``, applied in that order (FineWeb's order), so a
document gets the reason of the first rule that fires. What datatrove does in three filters, each
splitting the text again, happens here in one pass: the text is split into words once, and line,
paragraph and n-gram statistics come from that one split.

Word splitting has to agree with datatrove's, because every count depends on it. For English,
datatrove splits with spaCy's blank English tokenizer (whitespace, then prefix/suffix/infix rules
and special cases such as "don't" -> "do", "n't"), and counts C4 sentences with spaCy's
sentencizer. ``split_words`` and ``count_sentences`` reimplement those rules with a handful of
regular expressions and a table of special cases (spaCy's English rule set, MIT licensed), cached
per whitespace-separated chunk, so no spaCy is needed at run time. docs/etl/quality.md lists where
they still differ.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, fields

# --------------------------------------------------------------------------------------------
# Character classes (spaCy's tokenizer rules are written in terms of these)
# --------------------------------------------------------------------------------------------


def _class_ranges(code_points: list[int]) -> str:
    """A regex character-class body, as ranges, for sorted code points."""
    parts = []
    start = prev = None
    for cp in code_points + [-2]:
        if start is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            parts.append(re.escape(chr(start)) if start == prev else f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
        start = prev = cp
    return "".join(parts)


# Scripts without case, whole Unicode blocks (their punctuation included, as in spaCy): Ethiopic,
# Bengali, Hebrew, Arabic, Sinhala, Devanagari, Kannada, Tamil, Telugu, Hangul, kana and CJK.
_UNCASED_BLOCKS = [
    (0x1200, 0x137F), (0x0980, 0x09FF), (0x0591, 0x05F4), (0xFB1D, 0xFB4F), (0x0620, 0x064A), (0x066E, 0x06D5),
    (0x06E5, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08BD), (0xFB50, 0xFBB1), (0xFBD3, 0xFD3D), (0xFD50, 0xFDC7),
    (0xFDF0, 0xFDFB), (0xFE70, 0xFEFC), (0x1EE00, 0x1EEBB), (0x0D80, 0x0DFF), (0x0900, 0x097F), (0x0C80, 0x0CFF),
    (0x0B80, 0x0BFF), (0x0C00, 0x0C7F), (0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF), (0x20000, 0x2EBEF), (0x2E80, 0x2FDF), (0x2FF0, 0x303F), (0x31C0, 0x31EF), (0x3200, 0x33FF),
    (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0x1F200, 0x1F2FF), (0x2F800, 0x2FA1F),
]


def _unicode_classes(limit: int = 0x30000) -> tuple[str, str, str, str]:
    """Letters (all, lower-or-uncased, upper-or-uncased) and other symbols (icons, emoji).

    Cased letters are those of the Latin, Greek and Cyrillic scripts, as in spaCy's classes.
    """
    uncased = sorted({cp for low, high in _UNCASED_BLOCKS for cp in range(low, high + 1)})
    lower, upper, icons = [], [], []
    category, name = unicodedata.category, unicodedata.name
    for cp in range(limit):
        char = chr(cp)
        cat = category(char)
        if cat in ("Ll", "Lu", "Lt") and name(char, "").startswith(("LATIN", "GREEK", "CYRILLIC")):
            (lower if cat == "Ll" else upper).append(cp)
        elif cat == "So":
            icons.append(cp)
    return (
        _class_ranges(sorted(lower + upper + uncased)),
        _class_ranges(sorted(lower + uncased)),
        _class_ranges(sorted(upper + uncased)),
        _class_ranges(icons),
    )


ALPHA, ALPHA_LOWER, ALPHA_UPPER, ICONS = _unicode_classes()

PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
HYPHENS = ["-", "–", "—", "--", "---", "——", "~"]
CURRENCIES = "$ £ € ¥ ฿ US$ C$ A$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ ₭ ₮ ₯ ₰ ₱ ₲ ₳ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₾ ₿".split()
UNITS = (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh "
    "mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ "
    "нм кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тб"
).split()


def _cls(chars: str) -> str:
    return "".join(re.escape(c) for c in chars)


def _alternatives(items: list[str]) -> str:
    return "|".join(re.escape(i) for i in items)


# A prefix is matched at the start (with .match): the first alternative that matches wins.
_PREFIX = re.compile(
    "(?:" + "|".join([
        "[" + _cls("§%=—–" + PUNCT + QUOTES) + "]",
        r"\+(?![0-9])",
        r"\.\.+",
        _alternatives(CURRENCIES),
        f"[{ICONS}]",
    ]) + ")"
)
# A suffix is the leftmost match that runs to the end of the string.
_SUFFIX = re.compile(
    "(?:" + "|".join([
        "[" + _cls(PUNCT + QUOTES + "—–") + "]",
        "……",
        r"\.\.+",
        f"[{ICONS}]",
        "'s|'S|’s|’S",
        r"(?<=[0-9])\+",
        r"(?<=°[FfCcKk])\.",
        r"(?<=[0-9])(?:" + _alternatives(CURRENCIES) + ")",
        r"(?<=[0-9])(?:" + _alternatives(UNITS) + ")",
        # spaCy's class here also holds '|', from how its punctuation list is joined.
        r"(?<=[0-9" + ALPHA_LOWER + _cls("%²-+" + PUNCT + QUOTES + "|") + r"])\.",
        r"(?<=[" + ALPHA_UPPER + "][" + ALPHA_UPPER + r"])\.",
    ]) + ")$"
)
# Infixes split inside what is left; alternatives are tried in this order at each position.
_INFIX = re.compile(
    "|".join([
        r"\.\.+",
        "…",
        f"[{ICONS}]",
        r"(?<=[0-9])[+\-*^](?=[0-9-])",
        r"(?<=[" + ALPHA_LOWER + _cls(QUOTES) + r"])\.(?=[" + ALPHA_UPPER + _cls(QUOTES) + "])",
        r"(?<=[" + ALPHA + "]),(?=[" + ALPHA + "])",
        r"(?<=[" + ALPHA + "0-9])(?:" + _alternatives(HYPHENS) + ")(?=[" + ALPHA + "])",
        r"(?<=[" + ALPHA + r"0-9])[:<>=/](?=[" + ALPHA + "])",
    ])
)
# A URL (or e-mail address, or bare host name like "file.txt") is one token.
_URL_HOST_CHAR = "A-Za-z0-9\u00a1-\uffff"
_URL = re.compile(
    r"(?:[\w+\-.]{2,}://)?"                                   # scheme
    r"(?:\S+(?::\S*)?@)?"                                     # user[:password]@
    r"(?:"
    r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
    r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})"         # not a private IPv4 address
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4])"                 # a public IPv4 address
    r"|"
    rf"(?:(?:[{_URL_HOST_CHAR}][{_URL_HOST_CHAR}_-]{{0,62}})?[{_URL_HOST_CHAR}]\.)+"
    rf"(?:[{ALPHA_LOWER}]{{2,63}})"                           # host names and a lower-case TLD
    r")"
    r"(?::\d{2,5})?"                                          # port
    r"(?:[/?#]\S*)?$"                                         # path, query, fragment
)

# --------------------------------------------------------------------------------------------
# Special cases: strings that are split (or kept whole) as a fixed list of tokens
# --------------------------------------------------------------------------------------------

_EMOTICONS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-;
:( :-( :(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p :-p
:O :-O :o :-o :0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD XDD 8D
8-D ^_^ ^__^ ^___^ >.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0 o.O O.o
O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333 </3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ) ¯\(ツ)/¯
(╯°□°）╯︵┻━┻ ><(((*>
""".split()

# Abbreviations and other strings kept as one token (their final '.' is not split off).
_KEEP_WHOLE = """
' '' C++ \\") <space> \\t \\n — 'S 's ‘S ‘s and/or w/o 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz
'bout ma'am Ma'am o'clock O'clock lovin' Lovin' lovin Lovin havin' Havin' havin Havin doin' Doin' doin
Doin goin' Goin' goin Goin 'd a.m. p.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e.
I.e. I.E. Inc. Jr. Ltd. Md. Messrs. Mo. Mont. Mr. Mrs. Ms. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. Mt.
Ak. Ala. Apr. Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul.
Jun. Kan. Kans. Ky. La. Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov.
Oct. Okla. Ore. Pa. S.C. Sep. Sept. Tenn. Va. Wash. Wis.
a. b. c. d. e. f. g. h. i. j. k. l. m. n. o. p. q. r. s. t. u. v. w. x. y. z. ä. ö. ü.
""".split()

# Words that look like a contraction without its apostrophe but are words ("ill", "well", "its").
_NOT_CONTRACTIONS = {"Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed",
                     "were", "Were", "Well", "well", "Whore", "whore"}


def _english_special_cases() -> dict[str, tuple[str, ...]]:
    cases: dict[str, tuple[str, ...]] = {}

    def add_cased(first: str, *rest: str) -> None:
        """The contraction as written, and with its first word capitalised."""
        for head in (first, first[0].upper() + first[1:]):
            cases[head + "".join(rest)] = (head, *rest)

    with_apostrophe = [("'ll",), ("'ll", "'ve"), ("'d",), ("'d", "'ve")]
    without = [("ll",), ("ll", "ve"), ("d",), ("d", "ve")]
    add_cased("i", "'m"), add_cased("i", "m"), add_cased("i", "'m", "a"), add_cased("i", "m", "a")
    for pronoun in ["i", "you", "he", "she", "it", "we", "they"]:
        for tail in with_apostrophe + without:
            add_cased(pronoun, *tail)
    for pronoun in ["i", "you", "we", "they"]:
        add_cased(pronoun, "'ve"), add_cased(pronoun, "ve")
    for pronoun in ["you", "we", "they"]:
        add_cased(pronoun, "'re"), add_cased(pronoun, "re")
    for pronoun in ["he", "she", "it"]:
        add_cased(pronoun, "'s"), add_cased(pronoun, "s")
    singular, plural = {"that", "this"}, {"these", "those"}
    for word in ["who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"]:
        tails = with_apostrophe + without
        if word not in plural:
            tails += [("'s",), ("s",)]
        if word not in singular:
            tails += [("'re",), ("re",), ("'ve",), ("ve",)]
        for tail in tails:
            add_cased(word, *tail)
    for verb in ["ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought", "sha",
                 "should", "wo", "would"]:
        for tail in [("n't",), ("nt",), ("n't", "'ve"), ("nt", "ve")]:
            add_cased(verb, *tail)
    for verb in ["could", "might", "must", "should", "would"]:
        add_cased(verb, "'ve"), add_cased(verb, "ve")
    for verb in ["ai", "are", "is", "was", "were", "have", "has", "dare"]:
        add_cased(verb, "n't"), add_cased(verb, "nt")
    for word in ["doin", "goin", "nothin", "nuthin", "ol", "somethin"]:
        add_cased(word), add_cased(word + "'")
    for word in ["em", "ll", "nuff"]:
        cases[word] = (word,)
        cases["'" + word] = ("'" + word,)
    for hour in range(1, 13):
        for period in ["a.m.", "am", "p.m.", "pm"]:
            cases[f"{hour}{period}"] = (str(hour), period)
    for first, second in [("y'", "all"), ("y", "all")]:
        cases[first + second] = (first, second)
    add_cased("how", "'d", "'y"), add_cased("not", "'ve"), add_cased("not", "ve"), add_cased("can", "not")
    add_cased("gon", "na"), add_cased("got", "ta"), add_cased("let", "'s"), add_cased("c'm", "on")
    for name in _NOT_CONTRACTIONS:
        cases.pop(name, None)
    for text in _KEEP_WHOLE + _EMOTICONS:
        cases[text] = (text,)
    for unit in "cfkCFK":
        cases[f"°{unit}."] = ("°", unit, ".")
    # Every case written with ' is also a case with the typographic apostrophe ’.
    for text, tokens in list(cases.items()):
        if "'" in text:
            cases[text.replace("'", "’")] = tuple(t.replace("'", "’") for t in tokens)
    return cases


SPECIAL_CASES = _english_special_cases()
_LONGEST_SPECIAL = max(map(len, SPECIAL_CASES))

# --------------------------------------------------------------------------------------------
# Word and sentence splitting
# --------------------------------------------------------------------------------------------

# A chunk's tokens, with the counts the heuristics add up: tokens that are words (not only
# punctuation), the characters of those words, and tokens that hold a letter.
_ChunkInfo = tuple[tuple[str, ...], int, int, int]
_CHUNK_CACHE: dict[str, _ChunkInfo] = {}
_CHUNK_CACHE_LIMIT = 500_000  # distinct chunks kept per process before the cache starts over
_CACHED_CHUNK_LEN = 64  # longer chunks (URLs, base64 blobs) rarely repeat: not worth the memory

_SUFFIX_REACH = 8  # no suffix but a run of dots is longer than this ("mbar", "US$", "……")


def _suffix_length(chunk: str, start: int, end: int) -> int:
    """Length of the suffix of ``chunk[start:end]``, searching only its tail, so that peeling a long
    run of punctuation stays linear. The tail keeps two characters before any possible match for
    the look-behinds, or starts at ``start``, where spaCy's own search starts."""
    dots = end
    while dots > start and chunk[dots - 1] == ".":
        dots -= 1
    tail = chunk[max(start, dots - _SUFFIX_REACH - 2, end - _SUFFIX_REACH - 2):end]
    match = _SUFFIX.search(tail)
    return len(tail) - match.start() if match else 0


def _split_chunk(chunk: str, specials: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """One whitespace-free chunk into tokens, the way spaCy's tokenizer does it.

    Prefixes and suffixes are peeled off until none is left (or what is left is a special case),
    then what remains is a special case, a URL, or is split at its infixes. Positions, not slices,
    track what is left, so a chunk of 10,000 brackets costs 10,000 steps, not 10,000 copies.
    """
    special = specials.get(chunk)
    if special is not None:
        return special
    longest = _LONGEST_SPECIAL if specials else 0

    def is_special(a: int, b: int) -> bool:
        return a < b and b - a <= longest and chunk[a:b] in specials

    prefixes: list[str] = []
    suffixes: list[str] = []
    start, end = 0, len(chunk)
    last_len = -1
    while start < end and end - start != last_len and not is_special(start, end):
        last_len = end - start
        match = _PREFIX.match(chunk, start, end)
        pre_len = match.end() - start if match else 0
        if pre_len and is_special(start + pre_len, end):
            prefixes.append(chunk[start:start + pre_len])
            start += pre_len
            break
        suf_len = _suffix_length(chunk, start + pre_len, end)
        if suf_len and is_special(start, end - suf_len):
            suffixes.append(chunk[end - suf_len:end])
            end -= suf_len
            break
        if pre_len and suf_len and pre_len + suf_len <= end - start:
            prefixes.append(chunk[start:start + pre_len])
            suffixes.append(chunk[end - suf_len:end])
            start, end = start + pre_len, end - suf_len
        elif pre_len:
            prefixes.append(chunk[start:start + pre_len])
            start += pre_len
        elif suf_len:
            suffixes.append(chunk[end - suf_len:end])
            end -= suf_len
    tokens = prefixes
    rest = chunk[start:end]
    if rest:
        special = specials.get(rest)
        if special is not None:
            tokens.extend(special)
        elif "." in rest and _URL.match(rest):
            tokens.append(rest)
        else:
            position = 0
            for match in _INFIX.finditer(rest):
                if match.start() == 0:
                    continue
                if match.start() != position:
                    tokens.append(rest[position:match.start()])
                if match.end() != match.start():
                    tokens.append(match.group())
                position = match.end()
            if position < len(rest):
                tokens.append(rest[position:])
    tokens.extend(reversed(suffixes))
    return tuple(tokens)


def _special_merges() -> dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Token runs that spell a special case once split by the affix rules alone (")" ":" for
    "):"), by their first token; spaCy merges such runs back after splitting."""
    merges: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    for text, tokens in SPECIAL_CASES.items():
        if _PREFIX.match(text) or _SUFFIX.search(text) or _INFIX.search(text):
            # A run that already reads as its special case still claims its tokens (longest wins).
            pattern = _split_chunk(text, {})
            merges.setdefault(pattern[0], []).append((pattern, tokens))
    return merges


_MERGES = _special_merges()


def _merge_specials(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """Replace runs of tokens that spell a special case; longer runs first, then earlier ones."""
    found = []
    for i, token in enumerate(tokens):
        for pattern, replacement in _MERGES.get(token, ()):
            if tokens[i:i + len(pattern)] == pattern:
                found.append((i, i + len(pattern), replacement))
    if not found:
        return tokens
    found.sort(key=lambda span: (-(span[1] - span[0]), span[0]))
    taken: set[int] = set()
    chosen = []
    for start, end, replacement in found:
        if start not in taken and end - 1 not in taken:
            chosen.append((start, end, replacement))
        taken.update(range(start, end))
    merged: list[str] = []
    position = 0
    for start, end, replacement in sorted(chosen):
        merged.extend(tokens[position:start])
        merged.extend(replacement)
        position = end
    merged.extend(tokens[position:])
    return tuple(merged)


def _chunk_info(chunk: str) -> _ChunkInfo:
    info = _CHUNK_CACHE.get(chunk)
    if info is None:
        if len(_CHUNK_CACHE) >= _CHUNK_CACHE_LIMIT:
            _CHUNK_CACHE.clear()
        tokens = _split_chunk(chunk, SPECIAL_CASES)
        if len(tokens) > 1:
            tokens = _merge_specials(tokens)
        words = [t for t in tokens if not PUNCTUATION_CHARS.issuperset(t)]
        with_letter = sum(1 for t in tokens if any(c.isalpha() for c in t))
        info = (tokens, len(words), sum(map(len, words)), with_letter)
        if len(chunk) <= _CACHED_CHUNK_LEN:
            _CHUNK_CACHE[chunk] = info
    return info


def _scan(text: str) -> tuple[list[str], int, int, int]:
    """Tokens of ``text``, words among them, characters of those words, tokens with a letter."""
    tokens: list[str] = []
    extend = tokens.extend
    cache = _CHUNK_CACHE
    n_words = word_chars = with_letter = 0
    for chunk in text.split():
        info = cache.get(chunk) or _chunk_info(chunk)
        extend(info[0])
        n_words += info[1]
        word_chars += info[2]
        with_letter += info[3]
    return tokens, n_words, word_chars, with_letter


def split_words(text: str) -> list[str]:
    """The words (and punctuation tokens) of ``text``, as datatrove's English ``split_into_words``."""
    return _scan(text)[0]


# spaCy's sentencizer ends a sentence after one of these, at the next token that is not punctuation.
SENTENCE_ENDS = frozenset(
    "!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？"
    "\U00010a56\U00010a57\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142"
    "\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c"
    "\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd"
    "\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7"
    "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41"
    "\U00011c42\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U0001bc9f\U0001da88｡。"
)
_IS_PUNCT: dict[str, bool] = {}
_CHUNKS = re.compile(r"\S+")


def _is_punct(token: str) -> bool:
    """Every character is Unicode punctuation (spaCy's ``is_punct``)."""
    known = _IS_PUNCT.get(token)
    if known is None:
        if len(_IS_PUNCT) >= _CHUNK_CACHE_LIMIT:
            _IS_PUNCT.clear()
        known = all(unicodedata.category(c)[0] == "P" for c in token)
        if len(token) <= _CACHED_CHUNK_LEN:
            _IS_PUNCT[token] = known
    return known


def count_sentences(line: str) -> int:
    """Sentences in a stripped line, as datatrove's English ``split_into_sentences`` counts them.

    A whitespace run other than the single space between two chunks is a token of its own in
    spaCy (one that is not punctuation), which can start a sentence.
    """
    sentences = 1
    seen_end = False
    position = 0
    for match in _CHUNKS.finditer(line):
        gap = line[position:match.start()]
        position = match.end()
        if gap not in ("", " ") and seen_end:
            sentences += 1
            seen_end = False
        for token in _chunk_info(match.group())[0]:
            if token in SENTENCE_ENDS:
                seen_end = True
            elif seen_end and not _is_punct(token):
                sentences += 1
                seen_end = False
    return sentences

# --------------------------------------------------------------------------------------------
# The heuristics
# --------------------------------------------------------------------------------------------

# Tokens made only of these characters are not words (datatrove's PUNCTUATION_SET).
PUNCTUATION_CHARS = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, [*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)]))
) | SENTENCE_ENDS | frozenset(
    "\u061d\u061e\u0837\u0839\u083d\u083e\u17d4\u17d5\u17d6\u17d9\u17da\u1b7d\u1b7e\u2e53\u2e54"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89"
    "\U00011944\U00011946\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016e98"
)
DEFAULT_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_C4_LINE_ENDS = (".", "?", "!", '"', "'")
_POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


@dataclass
class QualityParams:
    """Thresholds of the quality rules; the defaults are datatrove 0.10.1's.

    A numeric threshold set to null disables its rule; an on/off rule is disabled by false (or null).
    """

    # Rule families, in the order they run (a document gets the first rule that fires).
    gopher_repetition: bool = True
    gopher_quality: bool = True
    c4: bool = True

    # Gopher repetition: fraction of duplicated paragraphs/lines (by count, and by characters of
    # the text), of characters in the most frequent n-gram, and in duplicated n-grams.
    max_dup_para_frac: float | None = 0.3
    max_dup_para_char_frac: float | None = 0.2
    max_dup_line_frac: float | None = 0.3
    max_dup_line_char_frac: float | None = 0.2
    max_top_2gram_char_frac: float | None = 0.20
    max_top_3gram_char_frac: float | None = 0.18
    max_top_4gram_char_frac: float | None = 0.16
    max_dup_5gram_char_frac: float | None = 0.15
    max_dup_6gram_char_frac: float | None = 0.14
    max_dup_7gram_char_frac: float | None = 0.13
    max_dup_8gram_char_frac: float | None = 0.12
    max_dup_9gram_char_frac: float | None = 0.11
    max_dup_10gram_char_frac: float | None = 0.10

    # Gopher quality.
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_len: float | None = 3
    max_mean_word_len: float | None = 10
    max_symbol_word_ratio: float | None = 0.1  # '#' per word, and '...' or '…' per word
    max_bullet_lines_frac: float | None = 0.9  # lines starting with '•' or '-'
    max_ellipsis_lines_frac: float | None = 0.3  # lines ending with '...' or '…'
    min_alpha_words_frac: float | None = 0.8  # words with at least one letter
    min_stop_words: int | None = 2  # distinct stop words present
    stop_words: list[str] = field(default_factory=lambda: list(DEFAULT_STOP_WORDS))

    # C4. Lines failing a line rule are dropped from the text when filter_lines is true (as
    # datatrove always does); the document rules (lorem ipsum, curly bracket, too few sentences)
    # only look at lines that passed the line rules before them.
    filter_lines: bool = True
    c4_remove_citations: bool | None = True  # remove "[1]", "[edit]", "[citation needed]"
    c4_terminal_punct: bool | None = True  # keep only lines ending in . ? ! " ' (but not ...)
    c4_min_words_per_line: int | None = 3
    c4_max_word_len: int | None = 1000  # drop lines with a longer word
    c4_lorem_ipsum: bool | None = True  # reject documents with "lorem ipsum"
    c4_javascript: bool | None = True  # drop lines mentioning javascript
    c4_curly_bracket: bool | None = True  # reject documents with '{'
    c4_policy: bool | None = True  # drop cookie / terms-of-use / privacy-policy lines
    c4_min_sentences: int | None = 5

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, (bool, list)):
                continue
            if value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value!r} (null disables the rule)")
            if f.name.endswith("_frac") and value > 1:
                raise ValueError(f"{f.name} is a fraction between 0 and 1, got {value!r}")
        for low, high in [("min_words", "max_words"), ("min_mean_word_len", "max_mean_word_len")]:
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} ({a}) is greater than {high} ({b})")
        if not all(isinstance(w, str) and w for w in self.stop_words):
            raise ValueError(f"stop_words must be non-empty strings, got {self.stop_words!r}")

    def top_ngram_limits(self) -> list[tuple[int, float]]:
        return [(n, t) for n, t in ((n, getattr(self, f"max_top_{n}gram_char_frac")) for n in (2, 3, 4)) if t is not None]

    def dup_ngram_limits(self) -> list[tuple[int, float]]:
        return [(n, t) for n, t in ((n, getattr(self, f"max_dup_{n}gram_char_frac")) for n in range(5, 11)) if t is not None]


# Every reason the stage can give, with what it means (docs/etl/quality.md shows this table).
REASONS = {
    "quality:empty": "no text, or no token in it",
    "quality:gopher_dup_para_frac": "too many paragraphs (split at blank lines) repeat an earlier one",
    "quality:gopher_dup_para_char_frac": "repeated paragraphs hold too many of the text's characters",
    "quality:gopher_dup_line_frac": "too many lines repeat an earlier line",
    "quality:gopher_dup_line_char_frac": "repeated lines hold too many of the text's characters",
    **{f"quality:gopher_top_{n}gram_frac": f"the most frequent {n}-gram covers too many characters" for n in (2, 3, 4)},
    **{f"quality:gopher_dup_{n}gram_frac": f"duplicated {n}-grams cover too many characters" for n in range(5, 11)},
    "quality:gopher_short_doc": "fewer words than min_words",
    "quality:gopher_long_doc": "more words than max_words",
    "quality:gopher_short_words": "mean word length below min_mean_word_len",
    "quality:gopher_long_words": "mean word length above max_mean_word_len",
    "quality:gopher_hash_ratio": "too many '#' per word",
    "quality:gopher_ellipsis_ratio": "too many '...' or '…' per word",
    "quality:gopher_bullet_lines": "too many lines start with a bullet ('•' or '-')",
    "quality:gopher_ellipsis_lines": "too many lines end with an ellipsis",
    "quality:gopher_non_alpha_words": "too few words contain a letter",
    "quality:gopher_few_stop_words": "fewer distinct stop words than min_stop_words",
    "quality:c4_lorem_ipsum": "a kept line contains 'lorem ipsum'",
    "quality:c4_curly_bracket": "a kept line contains '{'",
    "quality:c4_few_sentences": "fewer sentences than c4_min_sentences in the kept lines",
    "quality:c4_no_lines_left": "line filtering left no text (only when c4_min_sentences is null or 0)",
}

# Per-document scores, kept as columns (the report draws their histograms).
SCORE_COLUMNS = {
    "q_words": "int",  # words that are not only punctuation
    "q_mean_word_len": "float",
    "q_symbol_ratio": "float",  # the larger of '#' per word and ellipses per word
    "q_alpha_frac": "float",  # words with a letter / all tokens
    "q_dup_line_frac": "float",
    "q_dup_para_frac": "float",
    "q_top_2gram_frac": "float",
    "q_dup_5gram_frac": "float",
    "q_c4_lines_dropped": "int",  # lines C4's line rules dropped (null where C4 did not run)
}


@dataclass
class Verdict:
    reason: str | None  # None: kept
    detail: str | None  # the measured value that made the rule fire
    text: str  # the text, with C4's dropped lines removed when filter_lines is on
    scores: dict[str, float | int | None]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters."""
    if len(set(items)) == len(items):
        return 0, 0
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (words joined by spaces) times its count."""
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]  # ties: the n-gram seen first, as datatrove
    return (sum(map(len, gram)) + n - 1) * count


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams (words concatenated) that repeat an earlier one, scanning greedily:
    after a repeat the scan jumps past it, and the n-grams it jumps over are not remembered
    (datatrove's ``find_all_duplicate``)."""
    grams = list(map("".join, zip(*(words[i:] for i in range(n)))))
    if len(set(grams)) == len(grams):
        return 0
    # An n-gram that occurs once can never be a repeat, so only repeated ones need walking.
    counts = Counter(grams)
    seen: set[str] = set()
    chars = next_position = 0
    for position in [i for i, gram in enumerate(grams) if counts[gram] > 1]:
        if position < next_position:
            continue
        gram = grams[position]
        if gram in seen:
            chars += len(gram)
            next_position = position + n
        else:
            seen.add(gram)
            next_position = position + 1
    return chars


def _over(name: str, value: float, limit: float) -> str:
    return f"{name}={value:.4g} > {limit:g}"


def _under(name: str, value: float, limit: float) -> str:
    return f"{name}={value:.4g} < {limit:g}"


def _clip(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[:width] + "…"


def assess(text: str | None, params: QualityParams) -> Verdict:
    """Scores ``text`` and names the first rule (if any) that rejects it."""
    text = text or ""
    words, n_words, word_chars, alpha_tokens = _scan(text)
    n_tokens = len(words)
    if not n_tokens:
        return Verdict("quality:empty", "no tokens", text, {name: None for name in SCORE_COLUMNS})
    mean_word_len = word_chars / n_words if n_words else math.nan
    hash_ratio = text.count("#") / n_tokens
    ellipsis_ratio = (text.count("...") + text.count("…")) / n_tokens
    alpha_frac = alpha_tokens / n_tokens

    paragraphs = _PARAGRAPH_BREAK.split(text.strip())
    dup_paras, dup_para_chars = _duplicates(paragraphs)
    lines = _LINE_BREAK.split(text)
    dup_lines, dup_line_chars = _duplicates(lines)
    text_len = len(text)
    top_2gram_frac = _top_ngram_chars(words, 2) / text_len if n_tokens >= 2 else 0.0
    dup_5gram_frac = _dup_ngram_chars(words, 5) / text_len

    reason, detail = None, None
    if params.gopher_repetition:
        reason, detail = _repetition_rule(params, words, text_len, len(paragraphs), dup_paras, dup_para_chars,
                                          len(lines), dup_lines, dup_line_chars, top_2gram_frac, dup_5gram_frac)
    if reason is None and params.gopher_quality:
        reason, detail = _quality_rule(params, text, words, n_tokens, n_words, mean_word_len, hash_ratio,
                                       ellipsis_ratio, alpha_frac)
    lines_dropped = None  # C4 did not look at the document
    if reason is None and params.c4:
        reason, detail, new_text, lines_dropped = _c4_rule(params, text)
        if params.filter_lines:
            text = new_text
            if reason is None and not text:
                reason, detail = "quality:c4_no_lines_left", f"lines_dropped={lines_dropped}"

    scores = {
        "q_words": n_words,
        "q_mean_word_len": None if math.isnan(mean_word_len) else mean_word_len,
        "q_symbol_ratio": max(hash_ratio, ellipsis_ratio),
        "q_alpha_frac": alpha_frac,
        "q_dup_line_frac": dup_lines / len(lines),
        "q_dup_para_frac": dup_paras / len(paragraphs),
        "q_top_2gram_frac": top_2gram_frac,
        "q_dup_5gram_frac": dup_5gram_frac,
        "q_c4_lines_dropped": lines_dropped,
    }
    return Verdict(reason, detail, text, scores)


def _repetition_rule(p: QualityParams, words, text_len, n_paras, dup_paras, dup_para_chars, n_lines, dup_lines,
                     dup_line_chars, top_2gram_frac, dup_5gram_frac) -> tuple[str | None, str | None]:
    checks = [
        ("gopher_dup_para_frac", dup_paras / n_paras, p.max_dup_para_frac),
        ("gopher_dup_para_char_frac", dup_para_chars / text_len, p.max_dup_para_char_frac),
        ("gopher_dup_line_frac", dup_lines / n_lines, p.max_dup_line_frac),
        ("gopher_dup_line_char_frac", dup_line_chars / text_len, p.max_dup_line_char_frac),
    ]
    for name, value, limit in checks:
        if limit is not None and value > limit:
            return f"quality:{name}", _over(name.removeprefix("gopher_"), value, limit)
    for n, limit in p.top_ngram_limits():
        if len(words) < n:
            continue
        value = top_2gram_frac if n == 2 else _top_ngram_chars(words, n) / text_len
        if value > limit:
            return f"quality:gopher_top_{n}gram_frac", _over(f"top_{n}gram_frac", value, limit)
    for n, limit in p.dup_ngram_limits():
        value = dup_5gram_frac if n == 5 else _dup_ngram_chars(words, n) / text_len
        if value > limit:
            return f"quality:gopher_dup_{n}gram_frac", _over(f"dup_{n}gram_frac", value, limit)
    return None, None


def _quality_rule(p: QualityParams, text, words, n_tokens, n_words, mean_word_len, hash_ratio, ellipsis_ratio,
                  alpha_frac) -> tuple[str | None, str | None]:
    if p.min_words is not None and n_words < p.min_words:
        return "quality:gopher_short_doc", _under("words", n_words, p.min_words)
    if p.max_words is not None and n_words > p.max_words:
        return "quality:gopher_long_doc", _over("words", n_words, p.max_words)
    # With no words the mean is undefined and neither bound applies (as in datatrove).
    if p.min_mean_word_len is not None and mean_word_len < p.min_mean_word_len:
        return "quality:gopher_short_words", _under("mean_word_len", mean_word_len, p.min_mean_word_len)
    if p.max_mean_word_len is not None and mean_word_len > p.max_mean_word_len:
        return "quality:gopher_long_words", _over("mean_word_len", mean_word_len, p.max_mean_word_len)
    if p.max_symbol_word_ratio is not None:
        if hash_ratio > p.max_symbol_word_ratio:
            return "quality:gopher_hash_ratio", _over("hash_ratio", hash_ratio, p.max_symbol_word_ratio)
        if ellipsis_ratio > p.max_symbol_word_ratio:
            return "quality:gopher_ellipsis_ratio", _over("ellipsis_ratio", ellipsis_ratio, p.max_symbol_word_ratio)
    if p.max_bullet_lines_frac is not None or p.max_ellipsis_lines_frac is not None:
        lines = text.splitlines()
        if p.max_bullet_lines_frac is not None:
            bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-"))) / len(lines)
            if bullets > p.max_bullet_lines_frac:
                return "quality:gopher_bullet_lines", _over("bullet_lines_frac", bullets, p.max_bullet_lines_frac)
        if p.max_ellipsis_lines_frac is not None:
            ellipses = sum(1 for s in lines if s.rstrip().endswith(("...", "…"))) / len(lines)
            if ellipses > p.max_ellipsis_lines_frac:
                return "quality:gopher_ellipsis_lines", _over("ellipsis_lines_frac", ellipses, p.max_ellipsis_lines_frac)
    if p.min_alpha_words_frac is not None and alpha_frac < p.min_alpha_words_frac:
        return "quality:gopher_non_alpha_words", _under("alpha_words_frac", alpha_frac, p.min_alpha_words_frac)
    if p.min_stop_words is not None:
        present = len(set(p.stop_words).intersection(words))
        if present < p.min_stop_words:
            return "quality:gopher_few_stop_words", _under("stop_words", present, p.min_stop_words)
    return None, None


def _c4_rule(p: QualityParams, text: str) -> tuple[str | None, str | None, str, int]:
    """C4's line rules and document rules; returns (reason, detail, text with kept lines, lines dropped)."""
    kept: list[str] = []
    sentences = 0
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        words = line.split()
        if p.c4_max_word_len is not None and any(len(w) > p.c4_max_word_len for w in words):
            continue
        if p.c4_remove_citations:
            line = _CITATION.sub("", line)
        if p.c4_terminal_punct and (not line.endswith(_C4_LINE_ENDS) or line.endswith("...")):
            continue
        if p.c4_min_words_per_line is not None and len(words) < p.c4_min_words_per_line:
            continue
        lowered = line.lower()
        if p.c4_lorem_ipsum and "lorem ipsum" in lowered:
            return "quality:c4_lorem_ipsum", f"line {number}: {_clip(line)}", text, 0
        if p.c4_javascript and "javascript" in lowered:
            continue
        if p.c4_curly_bracket and "{" in line:
            return "quality:c4_curly_bracket", f"line {number}: {_clip(line)}", text, 0
        if p.c4_policy and any(phrase in lowered for phrase in _POLICY_PHRASES):
            continue
        # Only whether the minimum is reached matters, so counting stops there.
        if p.c4_min_sentences is not None and sentences < p.c4_min_sentences:
            sentences += count_sentences(line)
        kept.append(line)
    dropped = len(lines) - len(kept)
    if p.c4_min_sentences is not None and sentences < p.c4_min_sentences:
        return "quality:c4_few_sentences", _under("sentences", sentences, p.c4_min_sentences), text, dropped
    return None, None, "\n".join(kept).strip(), dropped
