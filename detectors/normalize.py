"""Normalise, then decode: the readings of a text a detector scores besides the text itself.

Cheap tricks hide a request from a classifier that reads the raw characters: Cyrillic
look-alike letters, zero-width or bidi characters between letters, fullwidth, mathematical,
circled or small-capital letters, combining marks, leetspeak, spaced-out or dotted letters,
base64, hex, decimal or binary character codes, URL-encoding, HTML character references,
``\\u`` escapes, rot13 and other letter
shifts (Caesar, Atbash), text written backwards or word by word backwards, and text smuggled in
invisible characters (Unicode tag characters, variation selectors); since a hostile review of
2026-12-04 also Zalgo marks, Braille letters, letters joined by emoji or other punctuation,
base32, base85/Ascii85, quoted-printable and ROT47 (docs/obfuscation-eval.md). Not Morse code, and not words
cut into hyphenated pieces: decoders for both were measured and left out (docs/benchmarks.md). :func:`readings` undoes them and returns each alternative reading with a map
back to the original characters, so a detector can score the reading and still point its
evidence at the span of the original text that carried it.

Steps (each bounded in input size, output size and depth, see :class:`Limits`):

0. **Unsmuggle** (:func:`unsmuggle`): text written in invisible characters that a model reads
   but a reviewer does not see is made visible: Unicode tag characters (U+E0020-E007E, "ASCII
   smuggling") and runs of variation selectors that encode bytes (U+FE00-FE0F and
   U+E0100-E01EF, one byte each). Without this step, step 1 drops tag characters as invisible,
   and with them the hidden request. Emoji flag tag sequences (🏴 + a few tag letters) stay
   what they are.
1. **Normalise** (:func:`normalize`): drop invisible format characters (zero-width, bidi
   controls, soft hyphen, tag characters: Unicode category Cf), NFKC each character
   (fullwidth, mathematical and circled letters become ASCII), map the styled letters NFKC
   leaves alone to the letter their Unicode name gives (negative circled and squared letters,
   regional indicators, small capitals: :func:`styled_letter`), drop decorative combining marks on
   ASCII letters, and replace look-alike letters by their TR39 confusable skeleton, taken from
   ICU's SpoofChecker (PyICU ships the Unicode confusables table; no hand-kept map). Skeletons
   are applied only where they undo a disguise: inside a word that mixes Latin with another
   script, or anywhere in a text whose letters are mostly Latin. A Russian sentence stays
   Russian.
2. **Decode** (:func:`decode`): base64, hex, decimal-code and binary runs that decode to readable text,
   URL-encoded runs, words with HTML character references (``&#114;``) or ``\\u0072`` escapes,
   empty HTML elements or comments inside words (``ran<b></b>somware``), spaced-out letters
   (``r a n s o m``, ``r.a.n.s.o.m``), leetspeak words (``r4ns0mw4re``), each rewritten in place so the
   surrounding request stays around it; then again on the result, up to ``Limits.max_depth``.
   Rot13 is a separate reading of the whole text, kept only when it reads as English much more
   than the original does; so is the text with its sentences turned around (the same test, per
   sentence): written backwards, each word spelled backwards, or in a letter shift (the Caesar
   shift or Atbash that fits English letter frequencies best).
3. **Structure** (:func:`structure_reading`, asked for by the transformer only): the prose a
   text carries inside JSON strings, code comments and string literals assigned to a name
   (``a = "..."``, payload splitting), each piece on its own line. Not a disguise: a request
   written as the value of ``{"task": ...}`` or after ``# TODO:`` is ordinary structure, but a classifier trained on
   prose reads the syntax around it and misses it (docs/benchmarks.md, the rule and the
   numbers). A category seen only there carries no obfuscation signal. So is the text between
   runs of eight or more numbers (:func:`numbers_reading`): numbers around a request dilute it
   the way benign sentences do, and the sentence pass cannot cut them off.

Nothing here imports a model: the rules detector uses it as well as the transformer.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import html
import quopri
import re
import sys
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

import cachetools

from pipeline.redact import snippet
from pipeline.schemas import EVIDENCE_MAX_CHARS

# Transform names (they end up in evidence prefixes and in tests).
INVISIBLE = "invisible"
NFKC = "nfkc"
MARKS = "marks"
STYLED = "styled_letters"
CONFUSABLES = "confusables"
BASE64 = "base64"
HEX = "hex"
URL = "url"
ROT13 = "rot13"
REVERSED = "reversed"
REVERSED_WORDS = "reversed_words"  # each word spelled backwards, the words in order
LETTER_SHIFT = "letter_shift"  # a Caesar shift other than the whole-text rot13, or Atbash
DECIMAL_CODES = "decimal_codes"  # character codes written as decimal numbers (87 114 105...)
BINARY = "binary_codes"  # 8-bit groups (01010111 01110010...)
LEET = "leetspeak"
SPACED = "spaced"
MARKUP = "markup"
HTML = "html_entities"
ESCAPES = "unicode_escapes"
TAGS = "tag_characters"
VARIATION = "variation_selectors"
STRUCTURE = "structure"  # JSON string values and code comments (not an obfuscation)
NUMBERS = "numbers"  # the text between runs of numbers (padding, not an obfuscation)
# Added by the hostile review of 2026-12-04 (docs/obfuscation-eval.md).
BASE32 = "base32"
BASE85 = "base85"  # base85 (RFC 1924 / git alphabet) or Ascii85
QUOTED_PRINTABLE = "quoted_printable"  # =72=61=6E...
ROT47 = "rot47"
BRAILLE = "braille"  # six-dot Braille letters (⠗⠁⠝⠎⠕⠍)
ACCENTS = "accents"  # accented Latin letters as ASCII (ráñsömwárë): the rules' reading only, folded_reading
# Decoders whose output does not resemble their input: evidence shows the decoded text
# (with the original character range), since the original span reads as noise.
CONTENT_DECODERS = frozenset(
    {BASE64, HEX, URL, ROT13, REVERSED, REVERSED_WORDS, LETTER_SHIFT, DECIMAL_CODES, BINARY, HTML, ESCAPES, TAGS,
     VARIATION, BASE32, BASE85, QUOTED_PRINTABLE, ROT47, BRAILLE}
)
# Every transform that rewrote noise to a classifier into plain words: encoded content (base64
# runs...), letter-by-letter text, leetspeak, markup inside words, and letters its tokenizer
# does not know (fullwidth, circled, small capitals: NFKC and styled letters). A detector
# judges the decoded reading for what the noise says (measured: 10 of the 24 held-out benign
# requests in circled letters or small capitals were flagged jailbreak before NFKC and styled
# letters were added here).
DECODERS = CONTENT_DECODERS | {LEET, SPACED, MARKUP, NFKC, STYLED}


@dataclass(frozen=True)
class Limits:
    """Bounds that keep decoding cheap and safe on hostile input."""

    # Longer texts (once blank runs are one blank, :func:`elide_binary`): only their head and
    # tail, max_chars in all, are read; the verdict says so (signal unscreened_text).
    max_chars: int = 100_000
    max_depth: int = 2  # decode the decoded text again at most this many times in total
    max_decoded_chars: int = 64_000  # escaped JSON spans and structure pieces read per text
    min_base64_chars: int = 16
    min_hex_bytes: int = 8
    min_spaced_letters: int = 4
    min_smuggled_chars: int = 4  # tag characters or variation selectors in a row
    min_references: int = 3  # numeric HTML references or \\u escapes in a text before they are decoded


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Reading:
    """An alternative text of an original, with each character's span in the original.

    ``starts[i]``/``ends[i]`` is the original character range character ``i`` came from (a
    decoded character maps to its whole encoded run).
    """

    text: str
    transforms: tuple[str, ...]
    starts: list[int] | None = field(default=None, repr=False)  # None: character i is original i
    ends: list[int] | None = field(default=None, repr=False)
    # A slice (a sentence of the sentence pass) keeps the whole reading's text and where it
    # starts in it, so evidence is redacted on the whole text before it is cut: a sentence that
    # ended at the "." inside "jonas.fairweather@..." showed the local part (privacy review,
    # 2026-12-04).
    context: str | None = field(default=None, repr=False, compare=False)
    offset: int = field(default=0, repr=False, compare=False)
    # The plain reading of a text longer than Limits.max_chars: its end was not read.
    cut: bool = field(default=False, repr=False, compare=False)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Original character range covering this reading's [start, end)."""
        if not self.text:
            return 0, 0
        start = max(0, min(start, len(self.text) - 1))
        end = max(start + 1, min(end, len(self.text)))
        if self.starts is None or self.ends is None:
            return start, end
        return min(self.starts[start:end]), max(self.ends[start:end])

    def maps(self) -> tuple[list[int], list[int]]:
        """``starts`` and ``ends`` as lists, built for the identity reading."""
        if self.starts is None or self.ends is None:
            return list(range(len(self.text))), list(range(1, len(self.text) + 1))
        return self.starts, self.ends

    def slice(self, start: int, end: int) -> Reading:
        """The [start, end) part of this reading, still mapped to the original text."""
        starts, ends = self.maps()
        return Reading(
            self.text[start:end], self.transforms, starts[start:end], ends[start:end],
            context=self.text if self.context is None else self.context, offset=self.offset + start,
        )

    @property
    def decoded(self) -> bool:
        """True when the content was decoded (base64, hex, URL, rot13), not only normalised."""
        return bool(CONTENT_DECODERS.intersection(self.transforms))


def disguised(reading: Reading) -> bool:
    """A finding on this reading carries the obfuscation signal: a transform undid a disguise
    (every transform but :func:`structured`'s and :func:`numbers_cut`'s)."""
    return any(t not in (STRUCTURE, NUMBERS) for t in reading.transforms)


def identity(text: str) -> Reading:
    """The text itself as a reading (no transforms, every character maps to itself)."""
    return Reading(text, ())


def _rewrite(base: Reading, edits: list[tuple[int, int, str]], *transforms: str) -> Reading:
    """Apply non-overlapping, sorted edits (start, end, replacement) to ``base``, naming each of
    ``transforms`` that ``base`` does not name yet (one pass when several decoders made the edits)."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    base_starts, base_ends = base.maps()
    pos = 0
    for s, e, repl in edits:
        out.append(base.text[pos:s])
        starts.extend(base_starts[pos:s])
        ends.extend(base_ends[pos:s])
        if repl:
            lo, hi = base.original_span(s, e)
            out.append(repl)
            starts.extend([lo] * len(repl))
            ends.extend([hi] * len(repl))
        pos = e
    out.append(base.text[pos:])
    starts.extend(base_starts[pos:])
    ends.extend(base_ends[pos:])
    added = tuple(t for t in dict.fromkeys(transforms) if t not in base.transforms)
    return Reading("".join(out), base.transforms + added, starts, ends)


# -- 0. invisible text -----------------------------------------------------------------------

# A run of the Tags block (U+E0000-E007F; E0020-E007E stand for ASCII) or of variation
# selectors, with zero-width characters allowed between them: an interleaved zero-width space
# or language tag must not cut the hidden text into runs too short to decode.
_FILLER = "\u200b-\u200f\u2060-\u2064\ufeff"
_TAG = "\U000E0000-\U000E007F"
_TAG_RUN = re.compile(f"[{_TAG}](?:[{_FILLER}]*[{_TAG}])+")
_FLAG = "\U0001F3F4"  # waving black flag: tag letters after it name a subdivision flag (gbeng)
_MAX_FLAG_TAGS = 7
_SELECTOR = "\uFE00-\uFE0F\U000E0100-\U000E01EF"
_VARIATION_RUN = re.compile(f"[{_SELECTOR}](?:[{_FILLER}]*[{_SELECTOR}])+")


def _tag_ascii(run: str) -> str:
    """The ASCII that the tag characters of ``run`` stand for (other tags and fillers dropped)."""
    return "".join(chr(ord(c) - 0xE0000) for c in run if 0xE0020 <= ord(c) <= 0xE007E)


def _variation_bytes(run: str) -> bytes:
    """One byte per variation selector of ``run``: U+FE00-FE0F are 0-15, U+E0100-E01EF 16-255."""
    return bytes(ord(c) - 0xFE00 if ord(c) < 0xE0100 else ord(c) - 0xE0100 + 16
                 for c in run if 0xFE00 <= ord(c) <= 0xFE0F or ord(c) >= 0xE0100)


# Control characters (C0 and C1, but tab and line breaks) in decoded content: dropped, so that
# sprinkling NULs into an encoded request does not push it under a decoder's "readable text"
# test, and no decoded reading (or evidence taken from it) carries a character a sink refuses.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _clean(decoded: str | None) -> str | None:
    return None if decoded is None else _CONTROLS.sub("", decoded)


def _printable(decoded: str) -> str | None:
    return decoded if sum(c.isprintable() or c in "\n\r\t" for c in decoded) >= 0.95 * len(decoded) else None


def _visible(decoded: str | None) -> str | None:
    """Smuggled text worth a reading: printable, with at least two letters."""
    decoded = _clean(decoded)
    if decoded is None or sum(c.isalpha() for c in decoded) < 2:
        return None
    return _printable(decoded)


def unsmuggle(base: Reading, limits: Limits = Limits()) -> Reading:
    """``base`` with text hidden in tag characters or variation selectors decoded in place,
    each hidden run a line of its own (the sentence pass reads it apart from the visible text
    around it), or ``base`` itself when there is none."""
    text = base.text
    if text.isascii():
        return base
    edits: list[tuple[int, int, str, str]] = []
    # No decode budget, as in _find_edits: one character or byte per tag or selector, so the text's
    # length bounds what is written, and a budget let a long benign run hide the one after it.
    for m in _TAG_RUN.finditer(text):
        ascii_text = _tag_ascii(m.group())
        if len(ascii_text) < limits.min_smuggled_chars:
            continue
        if m.start() > 0 and text[m.start() - 1] == _FLAG and len(m.group()) <= _MAX_FLAG_TAGS:
            continue
        decoded = _visible(ascii_text)
        if decoded is not None:
            edits.append((m.start(), m.end(), f"\n{decoded}\n", TAGS))
    for m in _VARIATION_RUN.finditer(text):
        data = _variation_bytes(m.group())
        if len(data) < limits.min_smuggled_chars:
            continue
        decoded = _visible(_utf8(data))
        if decoded is not None:
            edits.append((m.start(), m.end(), f"\n{decoded}\n", VARIATION))
    if not edits:
        return base
    edits.sort()
    return _rewrite(base, [(s, e, r) for s, e, r, _ in edits], *sorted({name for *_, name in edits}))


# -- 1. normalisation ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _spoof_checker():  # -> icu.SpoofChecker
    try:
        import icu
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "PyICU is required for confusable skeletons (pip install pyicu==2.17; Debian: libicu-dev pkg-config)"
        ) from exc
    return icu.SpoofChecker()


@lru_cache(maxsize=8192)
def confusable_skeleton(ch: str) -> str | None:
    """The ASCII prototype of a non-ASCII look-alike letter per TR39 (ICU), else None."""
    if ch.isascii() or not ch.isalpha():
        return None
    import icu

    skeleton = _spoof_checker().getSkeleton(icu.USpoofChecks.ALL_CHECKS, ch)
    skeleton = unicodedata.normalize("NFC", skeleton)
    if skeleton.isascii() and skeleton.isalnum() and 0 < len(skeleton) <= 2:
        return skeleton
    return None


_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NON_ASCII = re.compile(r"[^\x00-\x7F]")


def _is_latin_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def normalize(text: str, limits: Limits = Limits()) -> Reading:
    """:func:`normalize_reading` of the text itself."""
    return normalize_reading(identity(text[: limits.max_chars]))


# Letters that NFKC leaves alone or turns into more than a letter, named by the Unicode
# character database as a styled Latin letter: negative circled and (negative) squared letters,
# parenthesized letters, regional indicator symbols, small capitals ("fancy text" generators).
_STYLED_NAME = re.compile(
    r"(?:(?:NEGATIVE |)(?:CIRCLED|SQUARED|PARENTHESIZED) LATIN (CAPITAL|SMALL) LETTER"
    r"|REGIONAL INDICATOR SYMBOL LETTER|LATIN LETTER SMALL CAPITAL) ([A-Z])$"
)
_REGIONAL = range(0x1F1E6, 0x1F1FF + 1)


@lru_cache(maxsize=4096)
def styled_letter(ch: str) -> str | None:
    """The ASCII letter a styled letter stands for (``🅡`` -> ``R``, ``ᴀ`` -> ``a``), else None."""
    m = _STYLED_NAME.fullmatch(unicodedata.name(ch, ""))
    if m is None:
        return None
    return m.group(2).lower() if m.group(1) == "SMALL" or "SMALL CAPITAL" in m.group() else m.group(2)


def _lone_flag(text: str, i: int) -> bool:
    """A regional indicator in a run of exactly two: a flag emoji (🇩🇪), not a disguised word.

    Looks at most two characters either side (constant time: scanning the whole run from each
    of its characters made a 100,000-character run take minutes)."""

    def regional(k: int) -> bool:
        return 0 <= k < len(text) and ord(text[k]) in _REGIONAL

    if not regional(i):
        return False
    if regional(i + 1):  # first of the pair
        return not regional(i - 1) and not regional(i + 2)
    return regional(i - 1) and not regional(i - 2)  # second of the pair (or alone)


# Six-dot Braille letters (Unified English Braille, uncontracted): the Unicode name of a Braille
# pattern names its dots, and no table in Unicode, ICU (only Braille-Ethiopic) or the standard
# library says which letter a pattern stands for, so the 26 letters, the capital and number signs
# and five punctuation marks are written here. Only in a text with a run of three cells or more
# (then every run, ``⠁`` and ``⠞⠕`` too): a lone cell is a terminal spinner frame (⠋ ⠙ ⠹) more
# often than a letter. Contracted (grade 2) Braille is not read.
_BRAILLE_WORD = re.compile("[\u2800-\u28ff]{3}")
_BRAILLE_RUN = re.compile("[\u2800-\u28ff]+")
_BRAILLE_DOTS = dict(zip(
    "1 12 14 145 15 124 1245 125 24 245 13 123 134 1345 135 1234 12345 1235 234 2345 136 1236 2456 1346 13456 1356"
    " 2 256 236 235 3".split(),
    "abcdefghijklmnopqrstuvwxyz,.?!'",
    strict=True,
))
_BRAILLE_CAPITAL, _BRAILLE_NUMBER = "6", "3456"


def _braille_letters(run: str) -> str | None:
    """``⠠⠗⠁⠝⠎⠕⠍`` -> ``Ransom``: a run of Braille cells read as uncontracted English Braille;
    None when under 80% of its cells are letters, signs or punctuation (not text)."""
    out: list[str] = []
    known = 0
    capital = number = False
    for c in run:
        dots = unicodedata.name(c, "").removeprefix("BRAILLE PATTERN ").removeprefix("DOTS-")
        if c == "\u2800":  # blank cell: a space
            out.append(" ")
            known += 1
            capital = number = False
        elif dots == _BRAILLE_CAPITAL:
            capital, known = True, known + 1
        elif dots == _BRAILLE_NUMBER:
            number, known = True, known + 1
        elif (letter := _BRAILLE_DOTS.get(dots)) is not None:
            known += 1
            if number and "a" <= letter <= "j":
                out.append("1234567890"["abcdefghij".index(letter)])
            else:
                out.append(letter.upper() if capital else letter)
                number = False
            capital = False
        else:
            out.append(c)
    return "".join(out) if known >= 0.8 * len(run) else None


# Marks of one cluster that are normalised (see normalize_reading).
MAX_CLUSTER_MARKS = 32


def _is_mark(ch: str) -> bool:
    """A non-spacing or enclosing mark (Mn, Me), with or without a combining class: U+034F
    COMBINING GRAPHEME JOINER has none, and Zalgo generators put it between the marks."""
    return unicodedata.category(ch) in ("Mn", "Me")


class _Blanks(NamedTuple):
    spaces: frozenset[str]  # drawn as an empty cell, but letters to Unicode: read as a space
    removed: frozenset[str]  # invisible and not format characters (Cf): removed like them


@lru_cache(maxsize=1)
def _blanks() -> _Blanks:
    """Characters that show nothing, beyond the format characters (Cf), from ICU's Unicode data:
    the Hangul fillers (default-ignorable letters, U+115F, U+1160, U+3164, U+FFA0) and the blank
    Braille cell U+2800 are drawn as a gap and used as spaces or between letters; the unassigned
    default-ignorable code points (U+2065, U+FFF0-FFF8, U+E0000...) draw nothing. Each hid a
    harmful request from every detector (a hostile review, 2026-12-06: ``write\u3164ransomware``,
    ``create\u2800a\u2800phishing\u2800page``)."""
    import icu

    spaces = frozenset(icu.UnicodeSet("[[:Default_Ignorable_Code_Point:]&[:Lo:]]")) | {"\u2800"}
    removed = frozenset(icu.UnicodeSet("[[:Default_Ignorable_Code_Point:]&[:Cn:]]"))
    return _Blanks(spaces, removed)


def normalize_reading(base: Reading) -> Reading:
    """Invisible characters removed, NFKC, decorative marks dropped, look-alikes mapped.

    ``transforms`` names only the steps that changed a letter or digit (or removed an
    invisible character): NFKC turning a no-break space into a space does not count, so
    ordinary text does not get a second reading to score. Text smuggled in invisible
    characters is decoded first (:func:`unsmuggle`).
    """
    base = unsmuggle(base)
    text = base.text
    edits: list[tuple[int, int, str]] = []
    changed: set[str] = set()
    n = len(text)
    done = 0  # characters before this index are handled
    braille_text: bool | None = None  # does the text hold a Braille word (looked up at the first cell)
    blank = _blanks()
    # Characters NFKC added so far: past the text's own length, expanding ones stay as they are.
    # 99,000 x U+FDFA (18 letters each) made a reading of 1,782,000 characters, past max_chars,
    # which every later reading normalised again (a hostile review, 2026-12-07).
    grown = 0
    for m in _NON_ASCII.finditer(text):
        i = m.start()
        if i < done:
            continue
        ch = text[i]
        if ch in blank.removed or unicodedata.category(ch) == "Cf":
            edits.append((i, i + 1, ""))
            changed.add(INVISIBLE)
            done = i + 1
            continue
        if "\u2800" <= ch <= "\u28ff" and (braille_text := braille_text if braille_text is not None else
                                                _BRAILLE_WORD.search(text) is not None):
            run = _BRAILLE_RUN.match(text, i)
            letters = _braille_letters(run.group())
            if letters is not None:
                edits.append((i, run.end(), letters))
                changed.add(BRAILLE)
            done = run.end()
            continue
        if ch in blank.spaces:  # outside Braille text (above): a blank that is not a space
            edits.append((i, i + 1, " "))
            changed.add(INVISIBLE)
            done = i + 1
            continue
        if _is_mark(ch) and i > done and text[i - 1].isascii():
            i -= 1  # a mark on an ASCII letter: the cluster starts at the letter
        j = i + 1
        while j < n and _is_mark(text[j]):
            j += 1
        done = j
        cluster = text[i:j]
        # At most MAX_CLUSTER_MARKS marks are normalised: Unicode orders a cluster's marks with an
        # insertion sort, quadratic in their number (a letter with 99,000 marks to reorder took
        # 31 s; a hostile review, 2026-12-07). Past them a cluster is drawn as a smear anyway.
        nf = unicodedata.normalize("NFKC", cluster if j - i <= 1 + MAX_CLUSTER_MARKS else cluster[: 1 + MAX_CLUSTER_MARKS])
        step = NFKC
        # Marks on a letter (Zalgo, strikethrough): NFKC composes some of them into a letter it
        # has (r + U+0311 -> ȓ, t + U+0331 -> ṯ), so the base letter is read from the
        # decomposition. Only where the text carries combining marks: a precomposed é or ü of
        # ordinary French or German text is a cluster of one and stays.
        if j > i + 1 and len(nfd := unicodedata.normalize("NFD", nf)) > 1 and nfd[0].isascii() and nfd[0].isalpha() \
                and all(_is_mark(c) for c in nfd[1:]):
            nf, step = nfd[0], MARKS
        styled = styled_letter(ch) if j == i + 1 else None
        if styled is not None and styled != nf and not _lone_flag(text, i):
            nf, step = styled, STYLED
        # NFKC turns some look-alikes into another non-Latin letter before the skeleton is taken
        # (the lunate sigma ϲ, TR39's c, becomes ς): such a letter is left for the confusables.
        if j == i + 1 and nf != cluster and not nf.isascii() and confusable_skeleton(ch) is not None:
            nf = cluster
        if len(nf) > j - i:  # NFKC expands some characters up to 18-fold (U+FDFA)
            if grown + len(nf) - (j - i) > n:
                continue  # the reading at most twice the text (see grown)
            grown += len(nf) - (j - i)
        if nf != cluster:
            edits.append((i, j, nf))
            # Fullwidth, mathematical, circled or small-capital letters disguise words;
            # superscript digits (m², ¹) and no-break spaces do not, and alone they do not earn
            # a reading to score.
            if ch.isalpha() or step in (MARKS, STYLED) or (nf.isascii() and nf.isalpha()):
                changed.add(step)
    reading = _rewrite(base, edits, NFKC) if edits else base
    reading = _map_confusables(reading, changed)
    if not changed:
        return base
    # Name the steps that mattered, in a fixed order.
    order = (INVISIBLE, NFKC, STYLED, MARKS, BRAILLE, CONFUSABLES)
    return Reading(reading.text, base.transforms + tuple(t for t in order if t in changed), reading.starts, reading.ends)


# Latin letters that can carry an accent: Latin-1 Supplement, Latin Extended-A and -B, Latin
# Extended Additional (Vietnamese). Other scripts are the confusable skeletons' business.
_LATIN_ACCENTED = re.compile(r"[\u00c0-\u024f\u1e00-\u1eff]")


@lru_cache(maxsize=1)
def _latin_ascii():  # -> icu.Transliterator
    import icu

    return icu.Transliterator.createInstance("Latin-ASCII")


@lru_cache(maxsize=4096)
def ascii_letters(ch: str) -> str | None:
    """The ASCII letters ICU's ``Latin-ASCII`` transliterator writes for the accented Latin letter
    ``ch`` (``á`` -> ``a``, ``ß`` -> ``ss``, ``ø`` -> ``o``); None for anything else."""
    if not ch.isalpha():
        return None
    out = _latin_ascii().transliterate(ch)
    return out if out != ch and out.isascii() and out.isalpha() else None


def accents_folded(base: Reading) -> Reading | None:
    """``base`` with each accented Latin letter written as ASCII (``ráñsömwárë`` ->
    ``ransomware``), mapped to the original letters; None when nothing changes.

    Precomposed accents are ordinary in French or German text, so :func:`normalize_reading`
    keeps them; this reading is read by English keyword rules only (:func:`folded_reading`)."""
    edits = [(m.start(), m.end(), letters) for m in _LATIN_ACCENTED.finditer(base.text)
             if (letters := ascii_letters(m.group())) is not None]
    return _rewrite(base, edits, ACCENTS) if edits else None


def _map_confusables(reading: Reading, changed: set[str]) -> Reading:
    text = reading.text
    letters = [c for c in text if c.isalpha()]
    if not letters or all(c.isascii() for c in letters):
        return reading
    mostly_latin = sum(_is_latin_letter(c) for c in letters) >= 0.5 * len(letters)
    edits: list[tuple[int, int, str]] = []
    for m in _WORD.finditer(text):
        word = m.group()
        if word.isascii():
            continue
        mixed = any(_is_latin_letter(c) for c in word)
        if not (mixed or mostly_latin):
            continue
        for k, c in enumerate(word):
            proto = confusable_skeleton(c)
            if proto is not None:
                edits.append((m.start() + k, m.start() + k + 1, proto))
    if not edits:
        return reading
    changed.add(CONFUSABLES)
    return _rewrite(reading, edits, CONFUSABLES)


# -- 2. decoders ------------------------------------------------------------------------------

# Up to six ``=``: base32 pads to eight characters (tried on runs base64 refuses, _decode_base64_or_32).
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{16,}={0,6}(?![A-Za-z0-9+/_=-])")
_HEX_RUN = re.compile(
    r"(?:\\x[0-9A-Fa-f]{2}){4,}"
    r"|(?:0x[0-9A-Fa-f]{2}[\s,]*){4,}"
    r"|(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Za-z])"
)
# A match starts only where a run of URL characters starts (the lookbehind): started at every
# character of a long run without an escape, it scanned the rest of the run each time (26.6 s on
# "%" and 30,000 dots; a hostile review, 2026-12-07). A match from inside a run is also one from
# its start, so the runs found are the same.
_URL_RUN = re.compile(r"(?<![A-Za-z0-9._~+!*'();:@&=$,/?#\[\]-])(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9._~+!*'();:@&=$,/?#\[\]-])*%[0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9._~+!*'();:@&=$,/?#\[\]-])*")
# A word with character references in it (``r&#97;ns&#111;mw&#97;re``, or a whole sentence of
# ``&#119;&#114;...``). Possessive and anchored at a word start, so a long word without a
# reference costs one pass, not one per start position.
_REF = r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
_HTML_RUN = re.compile(rf"(?<![A-Za-z0-9';])[A-Za-z0-9']*+(?:{_REF}[A-Za-z0-9']*+)++")
_NUMERIC_REF = re.compile(r"&#[xX]?[0-9A-Fa-f]{1,7};")
_ESCAPE = r"\\(?:u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8})"
_ESCAPE_ONE = re.compile(_ESCAPE)
_ESCAPE_RUN = re.compile(rf"(?<![A-Za-z0-9'])[A-Za-z0-9']*+(?:{_ESCAPE}[A-Za-z0-9']*+)++")
# Markup that renders as nothing inside a word (``ran<b></b>som<!-- -->ware``): a rendered page
# or a model reads the word, a pattern does not. Only an empty element, a comment or ``<wbr>``;
# ``Hello</p><p>world`` or ``x<br>y`` separate words and are left alone. Not possessive: a
# possessive repeat around the back-referenced group raises SystemError in CPython 3.11's re on
# ``eht<b></b><!-- -->dna`` (found by a seeded random loop); every alternative starts with ``<``
# and starts are anchored after a letter, so backtracking stays linear.
_MARKUP_RUN = re.compile(
    r"(?<=[A-Za-z])(?:<([A-Za-z]{1,10})\s*></\1\s*>|<!--[^>]{0,40}-->|<wbr\s*/?>)+(?=[A-Za-z])"
)
# Single letters separated by 1-3 separator characters, at least four letters in a row.
# An apostrophe may sit in a gap (``n.e.i.g.h.b.o.u.r.'.s``): it joins, it does not break a word.
# Separators: spaces and line breaks (letters one per line), punctuation a generator or a person
# puts between letters (``r*a*n``, ``r~a~n``, ``r+a+n``, ``r,a,n``) and emoji or other pictographs
# (``r🔥a🔥n``, with U+FE0F and the zero-width joiner of emoji sequences); found in a hostile review
# of 2026-12-04 (docs/obfuscation-eval.md), where only ``[ \t._*|/\\'-]`` joined.
_SEP = "[ \t\r\n._*|/\\'~+=#^,:;\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\U0001f000-\U0001faff-]"
_SPACED_RUN = re.compile(rf"(?<![^\W\d_])(?:[^\W\d_]{_SEP}{{1,3}}){{3,}}[^\W\d_](?![^\W\d_])")
_LEET_MAP = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                           "@": "a", "$": "s"})
# A word with a leet character between two letters (r4ns0mw4re, f1l3s, h@ck).
# The word (group "w") starts where a run starts, or, in a run after "_", "\\" or a non-ASCII
# letter, after its first "'" (where the pattern before found it too). It could start after every
# "'": 99,000 apostrophes cost 105 s, each a start that scanned the rest (a hostile review,
# 2026-12-07). A differential fuzz of 300,000 strings found the same words as before.
_LEET_WORD = re.compile(r"(?:(?<![\w@$\\'])|(?<=[\w\\])(?<![A-Za-z0-9@$'])[A-Za-z0-9@$]*+')"
                        r"(?P<w>[A-Za-z0-9@$']*[A-Za-z][0-9@$]+[A-Za-z][A-Za-z0-9@$']*)")


def _readable(decoded: str) -> bool:
    """Decoded bytes that are text a person would write, not binary (an image, a hash)."""
    if len(decoded) < 4:
        return False
    printable = sum(c.isprintable() or c in "\n\r\t" for c in decoded)
    wordy = sum(c.isalpha() or c.isspace() for c in decoded)
    return printable >= 0.95 * len(decoded) and wordy >= 0.6 * len(decoded) and any(c.isspace() for c in decoded)


def _text_or_encoded(decoded: str | None) -> str | None:
    """Keep a decoding that reads as text, or that is itself an encoded run (the next depth
    decodes it: base64 of base64)."""
    if decoded is None:
        return None
    if _readable(decoded) or _BASE64_RUN.fullmatch(decoded.strip()) or _HEX_RUN.fullmatch(decoded.strip()):
        return decoded
    return None


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_base64(run: str) -> str | None:
    body = run.rstrip("=")
    if len(body) % 4 == 1:
        return None
    padded = body + "=" * (-len(body) % 4)
    # Words such as "internationalization" are valid base64 too: require a mix of cases or digits.
    if body.isalpha() and (body.islower() or body.isupper()):
        return None
    try:
        data = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _text_or_encoded(_clean(_utf8(data)))


def _decode_base64_or_32(run: str) -> tuple[str, str] | None:
    """(decoded, BASE64) or, for a run base64 refuses that is base32's alphabet, (decoded, BASE32)."""
    decoded = _decode_base64(run)
    if decoded is not None:
        return decoded, BASE64
    decoded = _decode_base32(run) if _BASE32_RUN.fullmatch(run) else None
    return None if decoded is None else (decoded, BASE32)


def _decode_hex(run: str) -> str | None:
    digits = re.sub(r"\\x|0x|[\s:,]", "", run)
    if len(digits) % 2:
        return None
    try:
        return _text_or_encoded(_clean(_utf8(bytes.fromhex(digits))))
    except ValueError:
        return None


def _decode_url(run: str) -> str | None:
    if run.count("%") < 3:
        return None
    text = _clean(unquote_plus(run))
    return text if text != run and _readable(text) else None


def _decode_references(run: str) -> str | None:
    """``&#114;&#97;`` -> ``ra`` (HTML character references)."""
    decoded = _clean(html.unescape(run))
    return _printable(decoded) if decoded != run else None


def _decode_escapes(run: str) -> str | None:
    """``\\u0072\\u0061`` -> ``ra`` (JSON / Python escapes)."""

    def char(m: re.Match[str]) -> str:
        cp = int(m.group()[2:], 16)
        return chr(cp) if cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF else m.group()

    decoded = _clean(re.sub(_ESCAPE, char, run))
    return _printable(decoded) if decoded != run else None


# At least eight character codes in decimal (2-6 digits) split by spaces or commas, and at
# least four 7- or 8-bit binary groups split by spaces (or one unbroken run of whole bytes).
MIN_CODES = 8
_DECIMAL_RUN = re.compile(rf"(?<![\d.,])(?:\d{{2,6}}(?:, ?| )){{{MIN_CODES - 1},}}\d{{2,6}}(?![\d.])")
_BINARY_RUN = re.compile(r"(?<![\w.])(?:[01]{7,8} ){3,}[01]{7,8}(?![\w.])|(?<![\w.])(?:[01]{8}){4,}(?![\w.])")


def _words_of(decoded: str | None) -> str | None:
    """Decoded characters kept when they read as text with at least two words."""
    decoded = _clean(decoded)
    return decoded if decoded and _readable(decoded) and len(_WORDS3.findall(decoded)) >= 2 else None


def _decode_decimal(run: str) -> str | None:
    """``87 114 105 116 101`` -> ``Write`` (code points; None when one is not a character)."""
    codes = [int(n) for n in re.findall(r"\d+", run)]
    if any(n > 0x10FFFF or 0xD800 <= n <= 0xDFFF for n in codes):
        return None
    return _words_of("".join(map(chr, codes)))


def _decode_binary(run: str) -> str | None:
    """``01010111 01110010`` -> ``Wr`` (bytes, then UTF-8)."""
    groups = run.split() if " " in run else [run[i : i + 8] for i in range(0, len(run), 8)]
    return _words_of(_utf8(bytes(int(g, 2) for g in groups)))


_BASE32_RUN = re.compile(r"[A-Z2-7]{16,}={0,6}")


def _decode_base32(run: str) -> str | None:
    """``K5ZGS5DF...`` -> ``Write...`` (RFC 4648 base32, upper case, padding optional)."""
    body = run.rstrip("=")
    if len(body) % 8 not in (0, 2, 4, 5, 7):
        return None
    try:
        data = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        return None
    return _text_or_encoded(_clean(_utf8(data)))


# Ascii85 between its Adobe delimiters, anywhere; a bare base85 or Ascii85 run (any token of 20
# or more printable characters) only in a text that says "85": the token test alone matches code
# and long identifiers, and both decoders are written in Python (about 1 us per character).
_A85_DELIMITED = re.compile(r"<~([!-uz\s]{10,4000})~>")
_BARE_85_RUN = re.compile(r"(?<!\S)[!-~]{20,4000}")


def _decode_85(run: str) -> str | None:
    """base85 (``base64.b85decode``), else Ascii85 (``a85decode``; ``<~ ~>`` delimiters kept
    or not), kept when it reads as text."""
    adobe = run.startswith("<~") and run.endswith("~>")
    for decoder in (() if adobe else (base64.b85decode,)) + (lambda r: base64.a85decode(r, adobe=adobe),):
        try:
            decoded = _text_or_encoded(_clean(_utf8(decoder(run.encode("ascii")))))
        except (ValueError, binascii.Error, UnicodeEncodeError):
            continue
        if decoded is not None:
            return decoded
    return None


# Quoted-printable: ``=72=61=6E`` (every byte written as ``=XX``, or a few inside words).
_QP_ONE = re.compile(r"=[0-9A-F]{2}")
# Two escapes or more in a word, or a word that is one escape (``=61``, the word "a"; ``w=41`` in a
# config line is neither).
_QP_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]*+(?:=[0-9A-F]{2}[A-Za-z0-9]*+){2,}+|(?<![\w=])=[0-9A-F]{2}(?![\w=])")


def _decode_quoted_printable(run: str) -> str | None:
    """``=72=61=6E=73=6F=6D`` -> ``ransom`` (``quopri``), kept when it is printable and mostly
    letters or spaces (``w=41`` in a config line is not)."""
    decoded = _clean(_utf8(quopri.decodestring(run.encode("ascii"))))
    if not decoded or decoded == run or _printable(decoded) is None:
        return None
    return decoded if sum(c.isalpha() or c.isspace() for c in decoded) >= 0.6 * len(decoded) else None


# ROT47 (every printable ASCII character 47 places on, mod 94): lower-case letters become digits,
# ``:;<=>?@`` and A-K. A run of three or more tokens made only of the characters ROT47 writes
# for English (no L-U, W-Z or a-o; V is the apostrophe); possessive, and with nothing required
# after the run, so a failed start costs its first tokens only (linear).
_ROT47_TABLE = str.maketrans({chr(c): chr(33 + (c - 33 + 47) % 94) for c in range(33, 127)})
_ROT47_TOKEN = r"[!-KV\[-`p-~]++"
_ROT47_RUN = re.compile(rf"(?<!\S){_ROT47_TOKEN}(?:[ \t]++{_ROT47_TOKEN}){{2,}}+")
_ROT47_MARKS = "0123456789:;<=>?@"


def _decode_rot47(run: str) -> str | None:
    """A run turned back by ROT47, kept where it reads as English much more than the run does
    (the rot13 test); runs of ordinary words and numbers (under a quarter of the characters are
    digits or ``:;<=>?@``) are not tried."""
    if sum(run.count(c) for c in _ROT47_MARKS) < 0.25 * len(run.replace(" ", "")):
        return None
    turned = run.translate(_ROT47_TABLE)
    ratio = _one_way_ratio(turned)
    return turned if ratio >= 0.15 and ratio >= 2 * _one_way_ratio(run) + 0.1 else None


def _count_at_least(pattern: re.Pattern[str], text: str, n: int) -> bool:
    return any(k + 1 >= n for k, _ in enumerate(pattern.finditer(text)))


def _despace(run: str) -> str | None:
    """``w r i t e   m a l w a r e`` -> ``write malware``, ``r.a.n.s.o.m w.a.r.e`` ->
    ``ransom ware``: the most frequent gap joins letters (the shortest of the most frequent),
    any other gap is a word break, and so is a lone ``/`` or ``|`` between one-character joins.

    Until 2026-12-03 the narrowest gap was the joiner, so with one-character gaps both inside
    words (``.``, ``*``) and between them (a space) the whole run became one word. None when no
    gap joins four letters (``I-I'm a`` is a stutter, not letters spaced out)."""
    gaps = re.findall(rf"[^\W\d_]({_SEP}+)(?=[^\W\d_])", run)
    counts = Counter(gaps)
    joiner = min(counts, key=lambda gap: (-counts[gap], len(gap)))
    if counts[joiner] < 3 or (joiner[:1] in ",;:" and joiner[1:].strip(" ") == "" and len(joiner) > 1):
        return None  # ``A, B, C, D``: a list of letters as people write one, not a word spelled out
    words, current = [], []
    for k, piece in enumerate(re.split(rf"({_SEP}+)", run)):
        if k % 2 == 0:
            current.append(piece)
        elif "'" in piece and piece != joiner:
            current.append("'")
        elif piece != joiner or piece.strip(" \t") in {"/", "|"} and len(joiner) == 1 and joiner not in "/|":
            words.append("".join(current))
            current = []
    words.append("".join(current))
    return " ".join(w for w in words if w)


def _deleet(word: str, min_letters: int = 2, upper: bool = False) -> str | None:
    """``r4ns0mw4r3`` -> ``ransomware``. Identifiers are left alone: hashes and colours (hex),
    long tokens, and (unless ``upper``: the text is leetspeak already) chemical formulas and
    part numbers, which are upper case."""
    letters = [c for c in word if c.isalpha()]
    if len(word) > 24 or _HEXISH.fullmatch(word) or len(letters) < min_letters or ("".join(letters).isupper() and not upper):
        return None
    mapped = word.translate(_LEET_MAP).lower()
    return mapped if mapped.replace("'", "").isalpha() else None


_HEXISH = re.compile(r"[0-9A-Fa-f]{6,}")
# Any word mixing letters with leet characters (``3ncryp75``, ``7h47``); used only once the
# text has shown leetspeak inside words, so ``mp3`` or ``user123`` in ordinary text stay. The word
# (group "w") starts only at the first place of a run where the pattern before could start, as for
# _LEET_WORD: it started after every "'", and its lookaheads read each start's rest of the run
# (60 s for one part of 100,000 characters of "ab'"; a review, 2026-12-07). A later start can only
# fail where the first failed, and a match runs to the end of the run, so the words are the same
# (a differential fuzz of 300,000 strings).
_LEET_LOOSE = re.compile(r"(?:(?<![\w@$\\'])|(?<=[\w\\])(?<![A-Za-z0-9@$'])[A-Za-z0-9@$]*+')"
                         r"(?P<w>(?=[A-Za-z0-9@$']*[A-Za-z])(?=[A-Za-z0-9@$']*[0-9@$])[A-Za-z0-9@$']{3,})")
_WORDS3 = re.compile(r"[A-Za-z0-9@$']{3,}")


def _leet_text(text: str) -> bool:
    """Does the text use leetspeak? At least one word with a leet character between letters,
    and such words are at least 15% of its words (code and formulas have a few, spread thin)."""
    hits = sum(1 for m in _LEET_WORD.finditer(text) if _deleet(m.group("w")))
    return hits > 0 and hits >= 0.15 * len(_WORDS3.findall(text))


def _find_edits(text: str, limits: Limits) -> tuple[list[tuple[int, int, str]], set[str]]:
    """Non-overlapping in-place decodings of ``text`` (first match wins, left to right)."""
    candidates: list[tuple[int, int, str, str]] = []

    # No decode budget here: one shared by the text's runs let a benign run of 64,000 decoded
    # characters leave the payload after it undecoded, unsignalled, and one per run dropped a
    # payload at the end of a long run the same way (hostile reviews, 2026-12-07). What these
    # decoders write is never longer than the run they read, so the text's own length (at most
    # max_chars) bounds the total.
    def scan(pattern: re.Pattern[str], name: str, decode: Callable[[str], str | tuple[str, str] | None]) -> None:
        group = "w" if "w" in pattern.groupindex else 0  # the run itself, where the pattern reads what precedes it
        for m in pattern.finditer(text):
            decoded = decode(m.group(group))
            label = name
            if isinstance(decoded, tuple):  # a decoder that names what it decoded (base64 or base32)
                decoded, label = decoded
            if decoded is not None and decoded != m.group(group):
                candidates.append((*m.span(group), decoded, label))

    scan(_HEX_RUN, HEX, _decode_hex)
    # Base32 runs are base64 runs too (upper case and 2-7): tried on the runs base64 refuses, so
    # they cost no scan of their own (a separate scan was 28 us per simulate record).
    scan(_BASE64_RUN, BASE64, _decode_base64_or_32)
    if "<~" in text:
        scan(_A85_DELIMITED, BASE85, _decode_85)
    if "85" in text:
        scan(_BARE_85_RUN, BASE85, _decode_85)
    if "=" in text and _count_at_least(_QP_ONE, text, limits.min_references):
        scan(_QP_RUN, QUOTED_PRINTABLE, _decode_quoted_printable)
    if "%" in text:
        scan(_URL_RUN, URL, _decode_url)
    # A text with a few references or escapes is disguised; a lone ``&#39;`` in scraped HTML
    # or ``caf\\u00e9`` in a JSON string is not, and does not earn a reading.
    if "&#" in text and _count_at_least(_NUMERIC_REF, text, limits.min_references):
        scan(_HTML_RUN, HTML, _decode_references)
    if "\\" in text and _count_at_least(_ESCAPE_ONE, text, limits.min_references):
        scan(_ESCAPE_RUN, ESCAPES, _decode_escapes)
    if "<" in text:
        scan(_MARKUP_RUN, MARKUP, lambda run: "")
    scan(_SPACED_RUN, SPACED, lambda run: _despace(run) if len(re.findall(r"[^\W\d_]", run)) >= limits.min_spaced_letters else None)
    # Digit counts first (str.count runs at C speed): most texts hold too few digits for a run,
    # and the two scans cost about 40 us per simulate part (a tenth of every reading's CPU).
    bits = text.count("0") + text.count("1")
    digits = bits + sum(text.count(d) for d in "23456789")
    if digits >= 2 * MIN_CODES:
        scan(_DECIMAL_RUN, DECIMAL_CODES, _decode_decimal)
    if bits >= 28:  # four 7-bit groups
        scan(_BINARY_RUN, BINARY, _decode_binary)
    # ROT47 writes a-h as the digits 2-9 (about a third of the characters of English): a text
    # with fewer digits than 5% of its length holds no ROT47 worth a run (same counts, no pass).
    if digits >= max(MIN_CODES, 0.05 * len(text)):
        scan(_ROT47_RUN, ROT47, _decode_rot47)
    if _leet_text(text):
        scan(_LEET_LOOSE, LEET, lambda w: _deleet(w, min_letters=1, upper=True))
    candidates.sort(key=lambda c: (c[0], -(c[1] - c[0])))
    edits: list[tuple[int, int, str]] = []
    used: set[str] = set()
    end = -1
    for s, e, repl, name in candidates:
        if s >= end:
            edits.append((s, e, repl))
            used.add(name)
            end = e
    return edits, used


def decode(reading: Reading, limits: Limits = Limits()) -> Reading | None:
    """``reading`` with every encoded run decoded in place (repeated up to ``max_depth``),
    or None when nothing decodes."""
    current, changed = reading, False
    for _ in range(limits.max_depth):
        edits, used = _find_edits(current.text, limits)
        if not edits:
            break
        current = _rewrite(current, edits, *sorted(used))
        changed = True
    return current if changed else None


# A few of the most frequent English words: enough to tell English from rot13 noise.
_COMMON = frozenset(
    "the be to of and a in that have i it for not on with he as you do at this but his by from they we "
    "say her she or an will my one all would there their what so up out if about who get which go me "
    "when make can like time no just him know take people into year your good some could them see other "
    "than then now look only come its over think also back after use two how our work first well way "
    "even new want because any these give day most us is are was were write how code tell explain".split()
)


def _english_ratio(text: str) -> float:
    words = re.findall(r"[A-Za-z]+", text.lower())
    return sum(w in _COMMON for w in words) / len(words) if words else 0.0


def _rot13(reading: Reading) -> Reading | None:
    words = re.findall(r"[A-Za-z]+", reading.text)
    if len(words) < 3:
        return None
    decoded = codecs.decode(reading.text, "rot13")
    if _english_ratio(decoded) >= 0.25 and _english_ratio(decoded) >= 2 * _english_ratio(reading.text) + 0.1:
        transforms = (*reading.transforms, ROT13)
        return Reading(decoded, transforms, reading.starts, reading.ends)
    return None


# Sentence-like segments: lines, and text between sentence punctuation in either direction
# (``Do this: .tnemyap a sdnamed`` splits after the colon and before the reversed full stop).
# The last alternative starts only where a whitespace run starts: tried from every position of
# a long run of spaces, it was quadratic (20,000 spaces took 2 s).
_SEGMENT_BREAK = re.compile(r"\n+|(?<=[.!?:])\s+|(?<!\s)\s+(?=[.!?]\S)")


def _one_way_ratio(text: str) -> float:
    """:func:`_english_ratio` over the words that are not palindromes (``a``, ``I``, ``did`` read
    as English both ways and say nothing about the direction); 0 unless at least three
    different common words occur (``or``, ``so`` and ``as`` repeated in formulas and code are
    common words backwards)."""
    return _word_ratio(_LETTER_RUN.findall(text.lower()))


_LETTER_RUN = re.compile(r"[A-Za-z]+")


def _word_ratio(words: list[str]) -> float:
    """:func:`_one_way_ratio` of lower-case words already split."""
    one_way = [w for w in words if w != w[::-1]]
    common = [w for w in one_way if w in _COMMON]
    return len(common) / len(one_way) if len(set(common)) >= 3 else 0.0


# English letter frequencies (percent, a-z): which Caesar shift or Atbash turns a segment into
# English-looking letters, found from one count of its letters instead of 26 decodings.
_ENGLISH_FREQ = (8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4, 6.7, 7.5, 1.9, 0.095, 6.0, 6.3,
                 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074)
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def _alphabet_table(plain_of: Callable[[int], int]) -> dict[int, int]:
    """str.translate table mapping cipher letter i (both cases) to plain letter plain_of(i)."""
    table = {ord(_LOWER[i]): ord(_LOWER[plain_of(i)]) for i in range(26)}
    table.update({ord(_LOWER[i].upper()): ord(_LOWER[plain_of(i)].upper()) for i in range(26)})
    return table


# Row t: the identity (t = 0), shift t (1-25; rot13 is 13), Atbash (t = 26): its translate
# table (cipher -> plain) and, in _CIPHER_OF[t][i], the cipher letter that stands for plain i.
_TURN_TABLES = [_alphabet_table(lambda i, k=k: (i - k) % 26) for k in range(26)] + [_alphabet_table(lambda i: 25 - i)]
_CIPHER_OF = [[(i + k) % 26 for i in range(26)] for k in range(26)] + [[25 - i for i in range(26)]]


@lru_cache(maxsize=1)
def _turn_matrices():  # -> (cipher index matrix, English frequencies): numpy on first use only
    import numpy as np

    return np.array(_CIPHER_OF), np.array(_ENGLISH_FREQ) / 100


def _letter_shift(segment: str, letters: str) -> str | None:
    """``segment`` deciphered by the Caesar shift or Atbash whose plain text fits English letter
    frequencies best (chi-squared), when that fit is at least three times as good as the
    segment's own; else None. ``letters``: the segment's ASCII letters, lower case. One count
    of the letters, no trial decodings."""
    total = len(letters)
    # English, code and most Latin-script languages spend about half their letters on e t a o
    # i n; a shifted alphabet moves them away. Checked first: most segments stop here.
    if total < 12 or sum(letters.count(c) for c in "etaoin") >= 0.3 * total:
        return None
    import numpy as np

    counts = np.array([letters.count(c) for c in _LOWER], dtype=float)
    cipher_of, freq = _turn_matrices()
    expected = total * freq
    fits = ((counts[cipher_of] - expected) ** 2 / expected).sum(axis=1)
    best = int(fits[1:].argmin()) + 1
    return segment.translate(_TURN_TABLES[best]) if fits[best] * 3 <= fits[0] else None


_ASCII_WORD = re.compile(r"[A-Za-z']+")
_ARTICLES = frozenset({"the", "a", "an"})


def _article_order(text: str) -> int:
    """How much ``text`` looks written forwards: articles followed by a word that is not a
    common one (``the victim``, where reversed word order gives ``victim the on``), a capital
    first letter (two points) and a full stop, question or exclamation mark at the end."""
    words = [w.lower() for w in _ASCII_WORD.findall(text)]
    articles = sum(1 for a, b in zip(words, words[1:]) if a in _ARTICLES and b not in _COMMON)
    first = next((c for c in text if c.isalpha()), "")
    return articles + 2 * first.isupper() + (text.rstrip()[-1:] in (".", "!", "?"))


def _turned(reading: Reading, shifts: bool = True) -> Reading | None:
    """Segments written backwards (``.erawmosnar etirW``), with each word spelled backwards
    (``etirW erawmosnar``), or in a letter-shift cipher (Caesar, Atbash: ``Zulwh udqvrpzduh``)
    turned around in place; per segment the turn that reads most like English, kept only where
    it reads as English much more than the segment does (the rot13 test, per segment, so an
    instruction around it, "decode this Caesar cipher:", stays readable). ``shifts`` False:
    no letter shifts (the whole text already has a rot13 reading)."""
    text = reading.text
    edits: dict[str, list[tuple[int, int, str]]] = {REVERSED: [], REVERSED_WORDS: [], LETTER_SHIFT: []}
    pos = 0
    for m in [*_SEGMENT_BREAK.finditer(text), None]:
        end = m.start() if m else len(text)
        segment = text[pos:end]
        words = _LETTER_RUN.findall(segment.lower())
        if len(words) >= 3:
            turns: list[tuple[float, str, str]] = []
            # The segment backwards and its words backwards hold the same words: one ratio says
            # whether either reads as English, word order which one it is.
            ratio = _word_ratio([w[::-1] for w in words])
            if ratio >= 0.15:
                words_back = _ASCII_WORD.sub(lambda w: w.group()[::-1], segment)
                backwards = segment[::-1]
                forwards = _article_order(words_back) > _article_order(backwards)
                turns.append((ratio, *((REVERSED_WORDS, words_back) if forwards else (REVERSED, backwards))))
            if shifts and (shifted := _letter_shift(segment, "".join(words))) is not None:
                turns.append((_one_way_ratio(shifted), LETTER_SHIFT, shifted))
            if turns:  # the segment's own ratio last: rarely needed
                ratio, name, turn = max(turns)
                if ratio >= 0.15 and ratio >= 2 * _word_ratio(words) + 0.1:
                    edits[name].append((pos, end, turn))
        pos = m.end() if m else len(text)
    used = [name for name, found in edits.items() if found]
    if not used:
        return None
    return _rewrite(reading, sorted(edit for found in edits.values() for edit in found), *used)


_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=\s]{16,}")
BINARY_PLACEHOLDER = "[binary data]"


# Runs of blanks this long are read as one blank (a newline if they hold one), before the
# max_chars cut: 100,000 spaces before a request hid it from every detector (a hostile review,
# 2026-12-07). Code indents and blank lines stay far under it.
_LONG_BLANKS = re.compile(r"\s{64,}")


def elide_binary(text: str, limits: Limits = Limits()) -> Reading:
    """``text`` with binary payloads (data: URIs, base64 runs of 64+ characters that do not
    decode to text, e.g. an image) replaced by ``[binary data]``, runs of 64 or more blanks by
    one, and, when still longer than ``limits.max_chars``, cut to its first three quarters of
    that and its last quarter (then ``cut`` is set: the middle is not read).

    A text classifier reads such a run as noise and calls it a jailbreak; it carries no
    words to judge. This is the plain reading of a part: not an obfuscation."""
    base = identity(text)
    if len(text) >= 64 and (blanks := [(m.start(), m.end(), "\n" if "\n" in m.group() else " ")
                                       for m in _LONG_BLANKS.finditer(text)]):  # fmt: skip
        base = _rewrite(base, blanks)
    cut = len(base.text) > limits.max_chars
    if cut:  # its head and its tail (a request after the padding is read); the middle is not
        starts, ends = base.maps()
        head = limits.max_chars * 3 // 4
        tail = len(base.text) - (limits.max_chars - head - 1)
        base = Reading(base.text[:head] + "\n" + base.text[tail:], (), starts[:head] + [ends[head - 1] - 1] + starts[tail:],
                       ends[:head] + [ends[head - 1]] + ends[tail:])  # fmt: skip
    text = base.text
    edits: list[tuple[int, int, str]] = []
    for m in _DATA_URI.finditer(text):
        edits.append((m.start(), m.end(), BINARY_PLACEHOLDER))
    for m in _BASE64_RUN.finditer(text):
        if len(m.group()) >= 64 and not any(s < m.end() and m.start() < e for s, e, _ in edits):
            if _decode_base64_or_32(m.group()) is None and _decode_hex(m.group()) is None and not (
                _BINARY_RUN.fullmatch(m.group()) and _decode_binary(m.group())
            ):
                edits.append((m.start(), m.end(), BINARY_PLACEHOLDER))
    if edits:
        edits.sort()
        base = _rewrite(base, edits, "binary")
    return Reading(base.text, (), base.starts, base.ends, cut=cut)


# A JSON string literal in a value position (after ``:``, ``[`` or ``,``), not followed by ``:``
# (a key), bounded in length; and the text must hold at least one ``"key":`` to count as JSON.
_JSON_VALUE = re.compile(r'(?<=[:\[,])[ \t\r\n]*("(?:[^"\\\n]|\\.){1,4000}")(?![ \t\r\n]*:)')
_JSON_KEY = re.compile(r'"[^"\\\n]{1,200}"[ \t]*:')
# A key in a key position (after ``{`` or ``,``): read like a value when it has three words or more
# (a request written as a key was flagged 5/10 before, docs/benchmarks.md).
_JSON_KEY_PIECE = re.compile(r'(?<=[{,])[ \t\r\n]*("(?:[^"\\\n]|\\.){1,4000}")[ \t\r\n]*:')
# Line comments: ``//`` (not in ``http://``), ``#`` at a line start or after code (one ``#``:
# markdown's ``##`` headings are prose already), ``--`` at a line start. Block comments
# (``/* */``, ``<!-- -->``) are found with str.find (:func:`_block_comments`): a lazy regex
# retried from each of 25,000 unclosed ``<!--`` took 4.8 s.
_LINE_COMMENTS = (
    re.compile(r"(?<![:/\w\"'])//+[ \t]*([^\n]{1,4000})"),
    re.compile(r"(?m)(?:^|(?<=[ \t]))(?<!#)#(?![#!{\[(])[ \t]*([^\n]{1,4000})"),
    re.compile(r"(?m)^[ \t]*--[ \t]+([^\n]{1,4000})"),
)
_BLOCK_COMMENTS = (("/*", "*/"), ("<!--", "-->"))
MAX_PIECE_CHARS = 4000
# A string literal assigned to a name (``a = "..."``, ``b = '...'``, ``x := "..."``, ``x <- "..."``):
# payload splitting cuts a request into such variables and asks for ``a + b``.
_ASSIGNED_STRING = re.compile(
    r"(?<![\w.$])[A-Za-z_$][\w$]{0,30}[ \t]*(?::=|<-|=)[ \t]*([\"'`])((?:(?!\1)[^\\\n]|\\.){1,4000})\1"
)


def _block_comments(text: str) -> Iterator[tuple[str, int]]:
    """(inner text, its start) of every block comment of at most MAX_PIECE_CHARS; linear: the
    search resumes after each comment's close (comments do not nest)."""
    for opening, closing in _BLOCK_COMMENTS:
        pos = 0
        while (start := text.find(opening, pos)) >= 0:
            inner = start + len(opening)
            end = text.find(closing, inner)
            if end < 0:
                break
            if end - inner <= MAX_PIECE_CHARS:
                yield text[inner:end], inner
            pos = end + len(closing)


# A word of the structure reading. Named _WORD until a review (2026-12-07), it replaced the module's
# other _WORD, so _map_confusables skipped one-letter words and cut words at digits: the Cyrillic
# "у" of "k3у1оgg3r" stayed, and the leet decoding with it.
_STRUCTURE_WORD = re.compile(r"[^\W\d_]{2,}")
MIN_STRUCTURE_WORDS = 3


# A JSON key whose quotes are escaped (``\"task\":``): JSON serialised a second time, or pasted
# into a string; found by the hostile review of 2026-12-04 (the transformer read 2-3 of 10).
_ESCAPED_JSON_KEY = re.compile(r'(?<!\\)\\++"[^"\\\n]{1,200}\\++"[ \t]*:')  # \\\" too: escaped twice; from a run's start
MAX_JSON_ESCAPES = 2  # levels of escaping undone (JSON serialised three times is read too)


def _escaped_json_pieces(text: str, limits: Limits, depth: int) -> list[tuple[str, int, int, bool]]:
    """The prose of the escaped JSON in ``text`` (from the ``{`` or ``[`` before its first escaped
    key to the last ``}`` or ``]``, read as a JSON string body), each piece mapped to that span."""
    import json

    m = _ESCAPED_JSON_KEY.search(text)
    if m is None or depth >= MAX_JSON_ESCAPES:
        return []
    lo = max(text.rfind("{", 0, m.start()), text.rfind("[", 0, m.start()))
    hi = max(text.rfind("}"), text.rfind("]")) + 1
    if lo < 0 or hi <= m.end() or hi - lo > limits.max_decoded_chars:
        return []
    try:
        inner = json.loads('"' + text[lo:hi] + '"')
    except ValueError:
        return []
    nested = structured(Reading(inner, ()), limits, _depth=depth + 1) if isinstance(inner, str) else None
    return [] if nested is None else [(line, lo, hi, False) for line in nested.text.split("\n") if line]


def structured(reading: Reading, limits: Limits = Limits(), _depth: int = 0) -> Reading | None:
    """The prose inside JSON strings (values, and keys of three words or more; JSON whose quotes
    are escaped once or twice too), code comments and string literals assigned to a name
    (``a = "..."``) of ``reading``, one piece per line, each character mapped to its span in the
    original; None when there is none (pieces of fewer than three words do not count) or when it
    is the whole text anyway."""
    import json

    text = reading.text
    pieces: list[tuple[str, int, int, bool]] = []  # (prose, start, end, maps character by character)
    if "\\" in text and "\\\"" in text:  # one character first: memchr, where a two-character search cost 1 us per part
        pieces.extend(_escaped_json_pieces(text, limits, _depth))
    if _JSON_KEY.search(text):
        for m in [*_JSON_VALUE.finditer(text), *_JSON_KEY_PIECE.finditer(text)]:
            literal, (lo, hi) = m.group(1), m.span(1)
            try:
                value = json.loads(literal)
            except ValueError:
                continue
            if isinstance(value, str):
                pieces.append((value, lo + 1, hi - 1, value == literal[1:-1]))
    comments = [(m.group(1), m.start(1)) for pattern in _LINE_COMMENTS for m in pattern.finditer(text)]
    if "=" in text or "<-" in text:
        for m in _ASSIGNED_STRING.finditer(text):
            pieces.append((m.group(2), m.start(2), m.end(2), True))
    for raw, lo in [*comments, *_block_comments(text)]:
        stripped = raw.strip(" \t\r\n*")
        if stripped:
            offset = raw.index(stripped[0])
            pieces.append((stripped, lo + offset, lo + offset + len(stripped), True))
    return _pieces_reading(reading, pieces, STRUCTURE, limits)


# Eight or more numbers in a row (integers or decimals, separated by spaces, commas, semicolons,
# pipes or line breaks). A number holds no separator character, so the match is linear.
# From a number's first digit, digits taken whole: "686920" * 5,000 (one number) was tried from
# every digit, each backtracking through the rest (37.9 s; a hostile review, 2026-12-07).
_NUMBER_RUN = re.compile(r"(?:(?<!\d)|(?=[-+]))(?:[-+]?\d++(?:\.\d++)?[ \t\r\n,;|]+){7,}[-+]?\d++(?:\.\d++)?")


def numbers_cut(reading: Reading, limits: Limits = Limits()) -> Reading | None:
    """The text of ``reading`` between runs of eight or more numbers, one segment per line (a
    request padded with numbers is read without them); None when there is no such run."""
    text = reading.text
    pieces: list[tuple[str, int, int, bool]] = []
    pos = 0
    for m in [*_NUMBER_RUN.finditer(text), None]:
        if m is None and pos == 0:
            return None
        end = m.start() if m else len(text)
        segment = text[pos:end]
        stripped = segment.strip(" \t\r\n,;|")
        if stripped:
            offset = segment.index(stripped[0])
            pieces.append((stripped, pos + offset, pos + offset + len(stripped), True))
        pos = m.end() if m else len(text)
    return _pieces_reading(reading, pieces, NUMBERS, limits)


def _pieces_reading(
    reading: Reading, pieces: list[tuple[str, int, int, bool]], transform: str, limits: Limits
) -> Reading | None:
    """A reading made of ``pieces`` of ``reading`` (text, start, end, maps character by
    character), one per line, mapped to the original; pieces of fewer than three words do not
    count. None when none is left or when it is the whole text anyway."""
    text = reading.text
    pieces = [p for p in pieces if len(_STRUCTURE_WORD.findall(p[0])) >= MIN_STRUCTURE_WORDS]
    if not pieces:
        return None
    pieces.sort(key=lambda p: p[1])
    starts, ends = reading.maps()
    out: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    budget = limits.max_decoded_chars
    for prose, lo, hi, direct in pieces:
        if budget <= 0:
            break
        prose = prose[:budget]
        if out:
            out.append("\n")
            new_starts.append(new_starts[-1])
            new_ends.append(new_ends[-1])
        out.append(prose)
        if direct:
            new_starts.extend(starts[lo + i] for i in range(len(prose)))
            new_ends.extend(ends[lo + i] for i in range(len(prose)))
        else:  # JSON escapes decoded: every character maps to the whole string value
            new_starts.extend([starts[lo]] * len(prose))
            new_ends.extend([ends[hi - 1]] * len(prose))
        budget -= len(prose) + 1
    joined = "".join(out)
    if joined.strip() == text.strip():
        return None
    found = Reading(joined, (*reading.transforms, transform), new_starts, new_ends)
    # JSON escapes can hide what the normaliser undoes (``\u0430`` is a Cyrillic look-alike).
    return found if all(direct for *_, direct in pieces) else normalize_reading(found)


def structure_lines(text: str) -> list[tuple[int, int]]:
    """[start, end) of each piece (line) of a structure reading's text."""
    out, pos = [], 0
    for line in text.split("\n"):
        if line.strip():
            out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def readings(text: str, limits: Limits = Limits()) -> list[Reading]:
    """The readings of ``text`` to score: first the plain one (:func:`elide_binary`, no
    transforms), then the alternatives worth scoring.

    At most five more: the normalised text, the normalised text with everything decoded,
    the rot13 of the normalised text and its decoding, and the normalised text with its
    backwards, word-by-word backwards or letter-shifted segments turned around (no letter
    shifts when the rot13 reading exists); each only when it differs from what came before.
    (:func:`structure_reading` is apart: only the transformer asks for it.)
    """
    plain, base = _plain_and_base(text, limits)
    out: list[Reading] = [plain]
    if base.transforms:
        out.append(base)
    decoded = decode(base, limits)
    if decoded is not None:
        out.append(decoded)
    rot = _rot13(base)
    if rot is not None:
        out.append(rot)
        again = decode(rot, limits)
        if again is not None:
            out.append(again)
    turned = _turned(base, shifts=rot is None)
    if turned is not None:
        out.append(turned)
    return out


# What the text-keyed reading caches below may hold, in bytes (texts, their readings and each
# reading's character map), not in entries: at 256 entries each, distinct 100,000-character
# texts of look-alike letters (a hostile tenant's large records) grew a scorer without bound: a
# throw-away probe (2026-12-05) scoring distinct 100,000-character records of them with the
# rules detector alone was at 2.7 GB of RSS after 15 minutes (a `rules` stream peaks near
# 1.15 GB), and still growing; tests/unit/test_normalize.py: 50 MB kept after 60 texts of
# 10,000 characters, against 18 MB now. The caches are for the parts the rules and the
# transformer both read, and for system prompts sent with every request.
READING_CACHE_BYTES = 16 * 1024 * 1024


class _CacheInfo(NamedTuple):
    hits: int
    misses: int
    maxsize: int
    currsize: int


def _held_bytes(args: tuple, value: Any) -> int:
    """About what one cache entry keeps alive: the key's text and every reading in ``value``
    (its text, and two list slots and an int per character of its map)."""
    size = 200 + sum(sys.getsizeof(a) for a in args if isinstance(a, str))
    for reading in value if isinstance(value, tuple) else (value,):
        if isinstance(reading, Reading):
            size += sys.getsizeof(reading.text) + (2 * 36 * len(reading.starts) if reading.starts is not None else 0)
    return size


def _text_cache(fn: Callable) -> Callable:
    """``fn`` cached by its arguments in an LRU of at most :data:`READING_CACHE_BYTES` (an entry
    larger than the whole budget is computed and not kept), with ``lru_cache``'s
    ``cache_clear`` and ``cache_info``. Thread-safe: the stream's stages share it. Not
    ``cachetools.cached``: its size function sees the value alone, and an entry whose value is
    None (most texts have no structure or numbers reading) would keep its key's text uncounted."""
    cache = cachetools.LRUCache(maxsize=READING_CACHE_BYTES, getsizeof=lambda entry: entry[0])
    lock = threading.Lock()
    counts = [0, 0]  # hits, misses

    @functools.wraps(fn)
    def cached(*args: Any) -> Any:
        with lock:
            entry = cache.get(args)
            counts[entry is None] += 1
        if entry is not None:
            return entry[1]
        value = fn(*args)
        with lock:
            try:
                cache[args] = (_held_bytes(args, value), value)
            except ValueError:  # larger than the whole budget
                pass
        return value

    def cache_clear() -> None:
        with lock:
            cache.clear()
            counts[:] = [0, 0]

    cached.cache_clear = cache_clear  # type: ignore[attr-defined]
    cached.cache_info = lambda: _CacheInfo(counts[0], counts[1], READING_CACHE_BYTES, cache.currsize)  # type: ignore[attr-defined]
    return cached


@_text_cache
def _plain_and_base(text: str, limits: Limits) -> tuple[Reading, Reading]:
    """The plain reading of ``text`` and its normalised one, cached: :func:`readings`,
    :func:`structure_reading`, :func:`numbers_reading` and :func:`folded_reading` all start from
    them. ``limits`` has no default: ``lru_cache`` keys ``f(t)`` and ``f(t, Limits())`` apart, so
    the readings and the structure, numbers and folded readings each normalised the same text
    again (found 2026-12-04, measured in docs/benchmarks.md)."""
    plain = elide_binary(text, limits)
    return plain, normalize_reading(plain)


@_text_cache
def structure_reading(text: str) -> Reading | None:
    """:func:`structured` of the normalised plain reading of ``text``, cached. Not one of
    :func:`readings`: the keyword rules match the text as written, so computing it for them
    cost about 110 us of CPU per simulate record for nothing (docs/benchmarks.md)."""
    return structured(_plain_and_base(text, DEFAULT_LIMITS)[1])


@_text_cache
def numbers_reading(text: str) -> Reading | None:
    """:func:`numbers_cut` of the normalised plain reading of ``text``, cached (the transformer's,
    like :func:`structure_reading`)."""
    return numbers_cut(_plain_and_base(text, DEFAULT_LIMITS)[1])


@_text_cache
def folded_reading(text: str) -> Reading | None:
    """:func:`accents_folded` of the normalised plain reading of ``text``, cached; None when it has
    no accented Latin letter. The rules detector's alone: its patterns are English, and the
    transformer reads English written with accents through routing (detectors/routed.py
    ``FOLDED_ENGLISH``). Not one of :func:`readings`: most non-English text has accents, and a
    second transformer reading of it would cost a pass for nothing."""
    return accents_folded(_plain_and_base(text, DEFAULT_LIMITS)[1])


def cut_short(text: str) -> bool:
    """Is ``text`` longer than the detectors read (its plain reading was cut)?"""
    return len(text) > DEFAULT_LIMITS.max_chars and _plain_and_base(text, DEFAULT_LIMITS)[0].cut


@_text_cache
def cached_readings(text: str) -> tuple[Reading, ...]:
    """:func:`readings` with default limits, cached: the rules and the transformer detector
    read the same parts of the same batch."""
    return tuple(readings(text))


def iter_all(text: str, limits: Limits = Limits()) -> Iterator[Reading]:
    """Every reading of ``text``, the plain one first (:func:`readings`)."""
    yield from (readings(text, limits) if limits != Limits() else cached_readings(text))


def reading_evidence(original: str, reading: Reading, start: int, end: int) -> str:
    """Evidence for a match at [start, end) of ``reading``, pointing at the original text.

    Normalised readings (look-alikes, zero-width, leetspeak, spaced letters) show the
    original span, which a reviewer can read. Decoded readings (base64, hex, URL, rot13)
    show the decoded text, prefixed with the transformation and the original character range
    it came from, because the original span is noise to a reader.
    """
    lo, hi = reading.original_span(start, end)
    if not reading.decoded:
        return snippet(original, lo, hi)
    prefix = f"[{'+'.join(reading.transforms)} @{lo}-{hi}] "
    whole = reading.text if reading.context is None else reading.context
    return prefix + snippet(whole, reading.offset + start, reading.offset + end, EVIDENCE_MAX_CHARS - len(prefix))
