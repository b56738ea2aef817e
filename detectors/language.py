"""Language of screened text, which languages each detector reads, and what nobody reads.

In: texts (one per screened side of a record) and the enabled detectors. Out: an ISO 639-1 code
per text (py3langid, 97 languages in its model; ``und`` when the text is too short or too
code-like to tell) and per-side/language tallies of texts that some enabled detector reads
(``screened``) or that none does (``unscreened``): the "unscreened language" signal.

Why a separate module: the English-only backbones (MiniLM, mpnet) score French or Hindi text
with thresholds fitted on English, so their silence on such text means nothing. Counting
those texts makes that gap visible on the dashboards instead of looking like clean traffic,
and routing them to a multilingual model (E5) is decided from the same code.

Measured on the shared 2-core machine (load average ~16 while measuring): loading the
model 6.0 s once per process, 0.56 ms per 190-character text, 2.1 ms per 1,900 characters; only
the first ``MAX_CHARS`` characters are read.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

UNDETERMINED = "und"
MAX_CHARS = 1000  # enough letters to decide; longer texts cost more and say the same
MIN_LETTERS = 12  # fewer letters than this (short replies, code, numbers): undetermined
MIN_CONFIDENCE = 0.5  # normalised probability of the best language

ENGLISH_ONLY: frozenset[str] = frozenset({"en"})
# multilingual-e5-small was trained on ~100 languages (XLM-R's); py3langid's codes it covers.
E5_LANGUAGES: frozenset[str] = frozenset(
    "af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr ga gl gu he hi hr hu hy id is it "
    "ja jv ka kk km kn ko ku ky la lo lt lv mg mk ml mn mr ms my ne nl no or pa pl ps pt ro ru sa si sk sl so sq "
    "sr su sv sw ta te th tl tr ug uk ur uz vi xh yi zh".split()
)

_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)

# English function words that are not words of the other languages py3langid tells apart in
# Latin script. Most traffic is English; py3langid costs 0.5-2 ms a text (pure-Python n-gram
# counting), this check about 10 us, so it runs first and py3langid decides everything else.
_ENGLISH_WORDS = frozenset(
    "the and of to is are was were that this with for you your it what how can be have has not "
    "from by will would should could my me we our they their there an if or but about which who "
    "when where why does did any some all been its than them then these those he she his her him "
    "i do so out into just here more like also only very".split()
)
_WORD = re.compile(r"[a-z']+")
_PLAIN_MIN_WORDS = 8
_PLAIN_MIN_SHARE = 0.15
_PLAIN_MAX_NON_ASCII = 0.02


def _plainly_english(head: str) -> bool:
    """(Nearly) ASCII text in which at least 15% of the words are English function words."""
    if not head.isascii() and sum(ch > "\x7f" for ch in head) > _PLAIN_MAX_NON_ASCII * len(head):
        return False
    words = _WORD.findall(head[:400].lower())
    if len(words) < _PLAIN_MIN_WORDS:
        return False
    return sum(w in _ENGLISH_WORDS for w in words) >= _PLAIN_MIN_SHARE * len(words)


class LanguageIdentifier:
    """py3langid with normalised probabilities, loaded once per process on first use."""

    _lock = threading.Lock()
    _model = None

    @classmethod
    def _get(cls):
        with cls._lock:
            if cls._model is None:
                from py3langid.langid import MODEL_FILE
                from py3langid.langid import LanguageIdentifier as _Identifier

                cls._model = _Identifier.from_model_file(MODEL_FILE, norm_probs=True)
            return cls._model

    @classmethod
    def detect(cls, text: str) -> str:
        """ISO 639-1 code of ``text``, or ``und``."""
        head = text[:MAX_CHARS]
        if len(_LETTER.findall(head)) < MIN_LETTERS:
            return UNDETERMINED
        if _plainly_english(head):
            return "en"
        code, confidence = cls._get().classify(head)
        return str(code) if confidence >= MIN_CONFIDENCE else UNDETERMINED


def detect_language(text: str) -> str:
    return LanguageIdentifier.detect(text)


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

    def observe(self, side: str, text: str) -> str:
        """Detect, tally and return the language of one screened text."""
        language = detect_language(text)
        (self.screened if self.is_read(language) else self.unscreened)[(side, language)] += 1
        return language

    def take(self) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """(screened, unscreened) since the last call, then reset (for metrics)."""
        out = (self.screened, self.unscreened)
        self.screened, self.unscreened = Counter(), Counter()
        return out
