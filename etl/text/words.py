"""Words and sentences as datatrove splits English text, without spaCy.

Every count of the quality rules depends on the word split, so it has to agree with datatrove's.
For English, datatrove splits with spaCy's blank English tokenizer (whitespace, then
prefix/suffix/infix rules and special cases such as "don't" -> "do", "n't"), and counts C4
sentences with spaCy's sentencizer. ``split_words`` and ``count_sentences`` reimplement those rules
with a handful of regular expressions and a table of special cases (spaCy's English rule set, MIT
licensed), cached per whitespace-separated chunk, so no spaCy is needed at run time.
docs/etl/quality.md lists where they still differ.
"""
from __future__ import annotations

import re
import unicodedata

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


def scan(text: str) -> tuple[list[str], int, int, int]:
    """Tokens of ``text``, words among them (tokens not only punctuation), characters of those
    words, tokens with a letter: the split and the counts the quality rules need, in one pass."""
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
    return scan(text)[0]


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
# Tokens made only of these characters are not words (datatrove's PUNCTUATION_SET).
PUNCTUATION_CHARS = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, [*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)]))
) | SENTENCE_ENDS | frozenset(
    "\u061d\u061e\u0837\u0839\u083d\u083e\u17d4\u17d5\u17d6\u17d9\u17da\u1b7d\u1b7e\u2e53\u2e54"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89"
    "\U00011944\U00011946\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016e98"
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
