"""Language of screened text, which languages each detector reads, and what nobody reads.

In: texts (one per screened side of a record) and the enabled detectors. Out: an ISO 639-1 code
per text (CLD2 via pycld2, 83 languages; ``und`` when the text is too short or too code-like to
tell) and per-side/language tallies of texts that some enabled detector reads (``screened``) or
that none does (``unscreened``): the "unscreened language" signal.

Why a separate module: the English-only backbones (MiniLM, mpnet) score French or Hindi text
with thresholds fitted on English, so their silence on such text means nothing. Counting
those texts makes that gap visible on the dashboards instead of looking like clean traffic,
and routing them to a multilingual model (E5) is decided from the same code.

Why CLD2: it runs on every record of the stream, so its cost is pipeline cost. Measured side by
side on 2,992 simulate texts (shared machine, load average ~27): py3langid 0.88 ms per text,
CLD2 0.07 ms; on the 700 machine-translated CyberSecEval prompts (7 languages) the two agree on
693. Only the first ``MAX_CHARS`` characters are read.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

UNDETERMINED = "und"
MAX_CHARS = 500  # enough letters to decide; longer texts cost more and say the same
MIN_LETTERS = 12  # fewer letters than this (short replies, code, numbers): undetermined

ENGLISH_ONLY: frozenset[str] = frozenset({"en"})
# multilingual-e5-small was trained on ~100 languages (XLM-R's); the ISO 639-1 codes it covers.
E5_LANGUAGES: frozenset[str] = frozenset(
    "af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr ga gl gu he hi hr hu hy id is it "
    "ja jv ka kk km kn ko ku ky la lo lt lv mg mk ml mn mr ms my ne nl no or pa pl ps pt ro ru sa si sk sl so sq "
    "sr su sv sw ta te th tl tr ug uk ur uz vi xh yi zh".split()
)

# At least MIN_LETTERS letters anywhere (a search that stops at the 12th, not a list of all).
_ENOUGH_LETTERS = re.compile(r"(?:[^\W\d_][\W\d_]*){%d}" % MIN_LETTERS)
# CLD2 keeps a few legacy or regional codes; the rest of the project speaks ISO 639-1.
_CLD2_CODES = {"iw": "he", "jw": "jv", "in": "id", "zh-Hant": "zh", "sr-ME": "sr", "nb": "no"}


class LanguageIdentifier:
    """CLD2 (compiled into pycld2; nothing to load)."""

    @staticmethod
    def detect(text: str) -> str:
        """ISO 639-1 code of ``text``, or ``und``."""
        return _detect_head(text[:MAX_CHARS])


# The scorer (metrics), the routed detector and the lake each ask for the same texts; the key is
# the bounded head, so the cache holds at most 4,096 x MAX_CHARS characters.
@functools.lru_cache(maxsize=4096)
def _detect_head(head: str) -> str:
    return _cld2(head, reliable_only=False)


def _cld2(text: str, reliable_only: bool) -> str:
    """CLD2's language of ``text`` as ISO 639-1, or ``und``: too few letters, unknown, or not
    sure enough (unreliable and under 50%; with ``reliable_only``, any unreliable answer)."""
    import pycld2

    if _ENOUGH_LETTERS.search(text) is None:
        return UNDETERMINED
    try:
        reliable, _, details = pycld2.detect(text, bestEffort=True)
    except (pycld2.error, UnicodeEncodeError):  # invalid UTF-8 or a lone surrogate: decode rejects both, never raise here
        return UNDETERMINED
    code = details[0][1]
    if code in ("un", "xxx") or not reliable and (reliable_only or details[0][2] < 50):
        return UNDETERMINED
    return _CLD2_CODES.get(code, code)


def detect_language(text: str) -> str:
    return LanguageIdentifier.detect(text)


@functools.lru_cache(maxsize=1)
def _long_mark_runs() -> re.Pattern[str]:
    """Runs of more than 32 characters that Unicode reorders (canonical combining class not 0, or
    decomposing into such), built once from the Unicode data."""
    ranges: list[list[int]] = []
    for c in range(0x300, 0x1F000):
        ch = chr(c)
        # Also the few of class 0 whose decomposition starts with a mark that is not (U+0F73,
        # U+0F75, U+0F81): NFD makes a run of reordered marks of them (a review, 2026-12-07).
        if unicodedata.combining(ch) or ((d := unicodedata.normalize("NFD", ch)) != ch and unicodedata.combining(d[0])):
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
    members = "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)
    return re.compile(f"[{members}]{{33,}}")


CHUNK_CHARS = 200  # about two sentences: enough letters for CLD2, small enough to see a switch


def fold_accents(text: str) -> str:
    """``ráñsömwárë`` -> ``ransomware``: the text with the combining marks of its decomposed
    letters removed (NFD, then NFC). Letters without a decomposition (``ø``, ``ß``) stay.

    Runs of more than 32 marks are cut to 32 first: NFD orders a run's marks with an insertion
    sort, quadratic in their number (80,000 marks took 9.7 s, and the routing of the default
    detector folds every non-English part; a hostile review, 2026-12-07). The marks go anyway."""
    if not text.isascii():
        text = _long_mark_runs().sub(lambda m: m.group()[:32], text)
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def language_chunks(texts: Iterable[str], chunk_chars: int = CHUNK_CHARS) -> Counter[str]:
    """How many chunks of ``texts`` CLD2 reads in each language (undetermined chunks left out).

    Why chunks and not the whole text: CLD2 reports a text's dominant language, and its head
    only (:data:`MAX_CHARS`) in :func:`detect_language`, so three sentences of French before an
    English request make the record "French" (measured: ``fr`` 99%). Routing on that would let
    padding move a request away from the model that reads it. Chunks end at whitespace; 10 MB of
    text takes about 0.5 s."""
    found: Counter[str] = Counter()
    for text in texts:
        start = 0
        while start < len(text):
            end = min(len(text), start + chunk_chars)
            if end < len(text):
                space = text.rfind(" ", start + chunk_chars // 2, end)
                end = space if space > start else end
            # Only what CLD2 calls reliable: on short chunks of English code or lists it otherwise
            # names Latin, Irish or Esperanto (measured on simulate traffic).
            language = _cld2(text[start:end], reliable_only=True)
            if language != UNDETERMINED:
                found[language] += 1
            start = end
    return found


def languages_read(detector: object) -> frozenset[str] | None:
    """Languages a detector reads: from its artifact's backbone for the transformer detector
    (``languages`` attribute when a detector states it), None when unknown (counted as read)."""
    stated = getattr(detector, "languages", None)
    if stated is not None:
        return frozenset(stated)
    manifest = getattr(detector, "manifest", None)
    backbone = getattr(manifest, "backbone", None)
    if backbone is None:
        return None
    return E5_LANGUAGES if "e5" in backbone.lower() else ENGLISH_ONLY


@dataclass
class LanguageCoverage:
    """Per side and language: texts some enabled detector reads, and texts none reads.

    An undetermined text counts as read (short replies and code carry no language signal and
    every detector scores them alike)."""

    readers: list[frozenset[str] | None]
    screened: Counter[tuple[str, str]] = field(default_factory=Counter)
    unscreened: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, detectors: Iterable[object]) -> LanguageCoverage:
        return cls([languages_read(d) for d in detectors])

    def is_read(self, language: str) -> bool:
        if language == UNDETERMINED:
            return True
        return any(r is None or language in r for r in self.readers)

    def observe(self, side: str, text: str) -> bool:
        """Detect and tally the language of one screened text; True if some enabled detector reads it."""
        language = detect_language(text)
        read = self.is_read(language)
        (self.screened if read else self.unscreened)[(side, language)] += 1
        return read

    def take(self) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """(screened, unscreened) since the last call, then reset (for metrics)."""
        out = (self.screened, self.unscreened)
        self.screened, self.unscreened = Counter(), Counter()
        return out
