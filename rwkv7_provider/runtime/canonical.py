"""Canonical text: what a classifier should read of the characters a user typed.

A small guard reads tokens, not pixels. Text that looks harmless-or-harmful on screen can reach it as
something else: letters interleaved with NUL or zero-width characters, a word written backwards behind a
right-to-left override (U+202E) that the screen shows forwards, every letter under a pile of combining
accents, Cyrillic or small-capital look-alikes of Latin letters. Each of these turned a blocked request into
an allowed one (issue 23). `canonical_text` maps such text to what a reader sees, and changes nothing a reader
would call the meaning:

1. tag characters (U+E0020-E007E, invisible "ASCII smuggling") become the ASCII they encode;
2. the span of a directional override is put in reading order (an approximation of the Unicode bidi
   algorithm that is exact for one script: left-to-right text under U+202E is reversed, right-to-left
   letters keep their order), then every directional control is dropped;
3. NFKC: full-width, mathematical, circled and other compatibility forms become plain letters and digits,
   odd spaces become spaces;
4. control, format, private-use and unassigned characters (NUL, zero-width, soft hyphen, BOM, bidi marks,
   Hangul fillers, variation selectors) are removed, and so are narrow spaces between single letters (a hair
   space between every letter shows a word) and next to punctuation; line and paragraph separators become
   newlines;
5. combining marks on Latin letters and on non-letters are removed ("café" reads "cafe", which no English
   guard confuses, and a flood of accents reads as the bare word); on other scripts, where marks are vowels
   and meaning (Devanagari, Arabic, Hebrew, Thai), they are kept, at most `MAX_MARKS` per letter;
6. look-alike letters from other scripts (Cyrillic, Greek, Armenian, Cherokee, small capitals) become the
   Latin letter they imitate inside words that mix them with Latin letters, and inside words made only of
   look-alikes in mostly-Latin text; a word in another script stays as it is ("привет" is Russian);
7. typographic quotes become ASCII quotes, so a template's quote cannot be imitated by a curly one.

It is applied to what a classifier scores (the user's span of a known self-check template, see
`structure.py`) and to the guard's training prompts (train = serve), never to what is passed on to the main
model. Canonical text is a fixed point: `canonical_text(canonical_text(s)) == canonical_text(s)`.
`script_share` says how much of a text is in scripts a guard was trained on (the provider's
`unfamiliar_script` policy).
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata

MAX_MARKS = 3  # combining marks kept per letter of a script where marks carry meaning

# Directional controls. Overrides reorder; embeddings, isolates and marks only hint the layout.
_RLO, _LRO, _PDF = "\u202e", "\u202d", "\u202c"
_OPENERS = {"\u202a", "\u202b", _LRO, _RLO, "\u2066", "\u2067", "\u2068"}  # LRE RLE LRO RLO LRI RLI FSI
_CLOSERS = {_PDF, "\u2069"}  # PDF, PDI
_BIDI = _OPENERS | _CLOSERS | {"\u200e", "\u200f", "\u061c"}  # + LRM RLM ALM

# Invisible characters that are not format (Cf) characters: Unicode's default-ignorable letters and marks.
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
)
_TO_SPACE = {"\u2800": " "}  # braille blank: looks like a space
# Letters interleaved with a narrow space ("b\u200ao\u200am\u200ab": a hair space is all but invisible on
# screen) are one word; NFKC would make them spaced letters. Wider spaces look like spaces and stay.
_NARROW_SPACES = "\u2006\u2008\u2009\u200a\u202f\u205f"
_SPACED_LETTERS = re.compile(rf"(?<!\w)\w(?:[{_NARROW_SPACES}]\w)+(?!\w)")
_NARROW_SPACE = re.compile(f"[{_NARROW_SPACES}]")
_BLANKS = re.compile(r"[ \t]+")
_NARROW_BY_PUNCTUATION = re.compile(rf"[{_NARROW_SPACES}](?=[^\w\s])|(?<=[^\w\s])[{_NARROW_SPACES}]")
_TO_NEWLINE = {"\r\n": "\n", "\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"}
_ASCII_CONTROLS = str.maketrans({chr(c): None for c in (*range(0x09), *range(0x0E, 0x20), 0x7F)}
                                | {"\r": "\n", "\x0b": "\n", "\x0c": "\n"})
_QUOTES = str.maketrans({c: '"' for c in "\u201c\u201d\u201e\u201f\u2033\u2036\u301d\u301e\u00ab\u00bb"}
                        | {c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u2035\u2039\u203a"})

# Letters of other scripts that render like a Latin letter (authored for this project from their glyphs).
_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k", "ӏ": "l", "м": "m",
    "н": "h", "о": "o", "п": "n", "р": "p", "ԛ": "q", "г": "r", "ѕ": "s", "т": "t", "у": "y", "ԝ": "w", "х": "x",
    "ь": "b", "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "І": "I", "Ј": "J", "К": "K", "М": "M", "О": "O",
    "Р": "P", "Ѕ": "S", "Т": "T", "У": "Y", "Х": "X", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y", "ү": "y",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "γ": "y", "ω": "w", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Armenian
    "ա": "w", "հ": "h", "ո": "n", "ս": "u", "օ": "o", "ց": "g", "Օ": "O", "Ս": "U",
    # Cherokee
    "Ꭺ": "A", "Ᏼ": "B", "Ꮯ": "C", "Ꭼ": "E", "Ꮋ": "H", "Ꮶ": "K", "Ꮮ": "L", "Ꮇ": "M", "Ꮲ": "P", "Ꭲ": "T", "Ꮃ": "W",
    "Ꮓ": "Z", "Ꮪ": "S", "Ꭰ": "D", "Ꮐ": "G", "Ꮩ": "V",
    # Latin small capitals and IPA letters
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l",
    "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y",
    "ᴢ": "z", "ꜰ": "f", "ǫ": "q", "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ʋ": "v", "ɒ": "a", "ɜ": "e", "ɔ": "c",
}
_LOOKALIKE_TABLE = str.maketrans(_LOOKALIKES)


@functools.lru_cache(maxsize=4096)
def script(char: str) -> str:
    """The script of a letter as its Unicode name says it ("LATIN", "CYRILLIC", "CJK", "DEVANAGARI", ...)."""
    if char.isascii():
        return "LATIN"
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def _is_rtl(char: str) -> bool:
    return unicodedata.bidirectional(char) in ("R", "AL")


def _reading_order(text: str) -> str:
    """Text with directional overrides resolved to reading order, controls dropped (one line at a time)."""
    if not any(c in _BIDI for c in text):
        return text
    return "\n".join(_line_order(line) for line in text.split("\n"))


def _line_order(line: str) -> str:
    out: list[str] = []
    stack: list[str] = []  # open controls; an RLO anywhere on it reverses the left-to-right runs
    run: list[str] = []  # characters under the innermost open RLO, not yet placed

    def flush() -> None:
        # Under an override every character shows right to left: runs of non-RTL characters read reversed.
        for rtl, chars in _runs(run):
            out.extend(chars if rtl else reversed(chars))
        run.clear()

    for c in line:
        if c in _OPENERS:
            flush()
            stack.append(c)
        elif c in _CLOSERS:
            flush()
            if stack:
                stack.pop()
        elif c in _BIDI:
            continue
        elif stack and stack[-1] == _RLO:
            run.append(c)
        else:
            out.append(c)
    flush()
    return "".join(out)


def _runs(chars: list[str]) -> list[tuple[bool, list[str]]]:
    """Maximal runs of right-to-left letters and of everything else, in order."""
    runs: list[tuple[bool, list[str]]] = []
    for c in chars:
        rtl = _is_rtl(c)
        if runs and runs[-1][0] == rtl:
            runs[-1][1].append(c)
        else:
            runs.append((rtl, [c]))
    return runs


def _decode_tags(text: str) -> str:
    """Tag characters U+E0020-E007E are invisible copies of ASCII: show what they encode."""
    if not any("\U000e0000" <= c <= "\U000e007f" for c in text):
        return text
    return "".join(chr(ord(c) - 0xE0000) if "\U000e0020" <= c <= "\U000e007e" else c for c in text)


def _visible(char: str) -> bool:
    if char in "\n\t":
        return True
    return unicodedata.category(char) not in ("Cc", "Cf", "Co", "Cn", "Cs") and char not in _INVISIBLE


def _fold_marks(text: str) -> str:
    """Drop combining marks on Latin letters and non-letters; keep at most MAX_MARKS on other letters.
    Spacing marks (Devanagari vowel signs and the like) are part of their letter and always kept."""
    out: list[str] = []
    base, kept = "", 0
    for c in unicodedata.normalize("NFD", text):
        category = unicodedata.category(c)
        if category[0] != "M":
            base, kept = c, 0
        elif category != "Mc":
            if not base.isalpha() or script(base) == "LATIN" or kept == MAX_MARKS:
                continue
            kept += 1
        out.append(c)
    return unicodedata.normalize("NFC", "".join(out))


def _words(text: str) -> list[str]:
    """`text` cut into words (letters, digits and the marks on them) and what lies between them."""
    return ["".join(g) for _, g in itertools.groupby(text, key=_in_word)]


def _in_word(char: str) -> bool:
    return char.isalnum() or char == "_" or unicodedata.category(char)[0] == "M"


def _fold_lookalikes(text: str) -> str:
    """Look-alikes become Latin in words that mix them with ASCII letters, then, if the text is mostly
    Latin after that, in words made only of look-alikes (in this order, so a second pass changes nothing)."""

    def mixed(word: str) -> bool:
        return any(c.isascii() and c.isalpha() for c in word) and any(c in _LOOKALIKES for c in word)

    def only_lookalikes(word: str) -> bool:
        return not word.isascii() and all(c in _LOOKALIKES or not c.isalpha() for c in word)

    words = [w.translate(_LOOKALIKE_TABLE) if mixed(w) else w for w in _words(text)]
    if script_share("".join(words)) > 0.5:
        words = [w.translate(_LOOKALIKE_TABLE) if only_lookalikes(w) else w for w in words]
    return "".join(words)


def canonical_text(text: str) -> str:
    """The text a classifier should read (see the module docstring); cheap for plain ASCII."""
    from ..model.tokenizer import encodable  # here: importing the model package imports torch

    text = encodable(text)
    if text.isascii():
        return text.replace("\r\n", "\n").translate(_ASCII_CONTROLS)
    text = _reading_order(_decode_tags(text))
    text = _SPACED_LETTERS.sub(lambda m: _NARROW_SPACE.sub("", m.group(0)), text)
    text = _NARROW_BY_PUNCTUATION.sub("", text)
    for a, b in _TO_NEWLINE.items():
        text = text.replace(a, b)
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_TO_SPACE.get(c, c) for c in text if _visible(c))
    # Marks first, so that accented words are whole words; again after folding look-alikes that carried marks.
    text = _fold_marks(_fold_lookalikes(_fold_marks(text))).translate(_QUOTES)
    return unicodedata.normalize("NFKC", text)


def script_share(text: str, scripts: frozenset[str] = frozenset({"LATIN"})) -> float:
    """The share of the letters of `text` written in `scripts` (1.0 for a text without letters)."""
    if text.isascii():
        return 1.0 if "LATIN" in scripts or not any(c.isalpha() for c in text) else 0.0
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(script(c) in scripts for c in letters) / len(letters)


def familiar_part(text: str, scripts: frozenset[str] = frozenset({"LATIN"})) -> str:
    """`text` without its words whose letters are mostly outside `scripts` ("" when fewer than two letters of
    `scripts` remain): the part of a mixed message a guard trained on those scripts can read."""
    kept = []
    for word in _words(text):
        letters = [c for c in word if c.isalpha()]
        if letters and 2 * sum(script(c) in scripts for c in letters) <= len(letters):
            word = " "
        kept.append(word)
    out = "\n".join(_BLANKS.sub(" ", line).strip() for line in "".join(kept).split("\n")).strip()
    return out if sum(c.isalpha() and script(c) in scripts for c in out) >= 2 else ""
