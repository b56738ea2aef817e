"""Language-routed transformer detector (detector ``transformer_routed``).

Each record's screened texts are read in chunks of about two sentences (CLD2,
``detectors.language.language_chunks``). A record with any English chunk (or none CLD2 can tell)
goes to the English transformer artifact, so padding an English request with another language
does not take it away from the model that reads it (regression test:
tests/unit/test_v2_artifacts.py). A record whose chunks (system prompts left out) are at least
MULTILINGUAL_SHARE in other languages goes to a multilingual one (an artifact whose manifest
names multilingual-e5-small, trained by ``python -m detectors.training.v2 train --backbone e5``);
a record that is both goes to both and keeps the findings of both. The share keeps a stray chunk
(a Spanish greeting in an English chat, a code listing CLD2 calls Latin) away from E5, which costs
about six English records' time per record on simulate traffic; the price is that one foreign
sentence hidden in English padding is read by the English model only (docs/model-releases.md).
Both are ordinary ``transformer`` artifacts, loaded and screened by TransformerDetector, so
everything it screens (every part, decoded readings) applies to both.

The default detector since issue 12: the shipped MiniLM artifact does not read other languages
(on machine-translated CyberSecEval it flags translated benign requests about as often as
translated injections), multilingual-e5-small does (0.0% of the benign, 0.112 of the injections;
docs/model-releases.md, the amended language rule).

Why route by record: the members score whole records (every part, decoded readings), and a
record read by one backbone keeps its findings on one calibration unless it mixes languages.

Options (``DetectorConfig.options``): ``english_model_dir`` (default: the shipped transformer
artifact), ``multilingual_model_dir`` (default ``detectors/models/transformer-e5-v2``),
``mixed_findings`` (``all`` | ``by_part``: what a record read by both members keeps, see
MIXED_FINDINGS); every other option is passed to both members. Model loading happens in :meth:`create`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Self

from detectors.base import Detector, DetectorConfig, pinned_version
from detectors.language import E5_LANGUAGES, ENGLISH_ONLY, fold_accents, language_chunks
from detectors.transformer import TransformerDetector
from pipeline.schemas import Finding, InferenceLog, PartKind, ScreenedPart

# Share of a record's language-tagged chunks that must be in other languages for the
# multilingual member to read it (measured on simulate traffic, docs/model-releases.md).
MULTILINGUAL_SHARE = 0.25
DEFAULT_MULTILINGUAL_DIR = Path(__file__).resolve().parent / "models" / "transformer-e5-v2"
# What a record read by both members keeps: every finding of both ("all"), or each member's
# findings on the parts it is there for ("by_part"; docs/model-releases.md has the rule).
MIXED_FINDINGS = ("all", "by_part")


class RoutedTransformerDetector(Detector):
    name: ClassVar[str] = "transformer_routed"
    # Its own keys, and every key of the transformer detector (passed on to both members).
    option_keys: ClassVar[tuple[str, ...]] = (
        "english_model_dir", "multilingual_model_dir", "mixed_findings", *TransformerDetector.option_keys,
    )
    version: ClassVar[str] = "routed-1"  # replaced by both members' versions in create()
    languages = ENGLISH_ONLY | E5_LANGUAGES

    def __init__(self, english: Detector, multilingual: Detector, mixed_findings: str = "all") -> None:
        if mixed_findings not in MIXED_FINDINGS:
            raise ValueError(f"mixed_findings must be one of {', '.join(MIXED_FINDINGS)}, not {mixed_findings!r}")
        self.english = english
        self.multilingual = multilingual
        self.mixed_findings = mixed_findings
        self.detector_version = f"{pinned_version(english)}+{pinned_version(multilingual)}"
        self.routed: dict[str, int] = {"english": 0, "multilingual": 0}

    @classmethod
    def create(cls, config: DetectorConfig) -> Self:
        options = dict(config.options)
        english_dir = options.pop("english_model_dir", None)
        multilingual_dir = options.pop("multilingual_model_dir", None)
        mixed_findings = options.pop("mixed_findings", "all")
        if mixed_findings not in MIXED_FINDINGS:  # before two models load
            raise ValueError(f"mixed_findings must be one of {', '.join(MIXED_FINDINGS)}, not {mixed_findings!r}")
        english = TransformerDetector.create(
            replace(config, model_dir=Path(english_dir) if english_dir else config.model_dir, options=options)
        )
        multilingual = TransformerDetector.create(
            replace(config, model_dir=Path(multilingual_dir) if multilingual_dir else DEFAULT_MULTILINGUAL_DIR, options=options)
        )
        return cls(english, multilingual, mixed_findings)

    @staticmethod
    def routes(record: InferenceLog) -> tuple[bool, bool]:
        """(to the English member, to the multilingual member) for one record.

        Every part counts for "any English chunk"; the multilingual share leaves system prompts
        out: they are the operator's text, the same on every request, and a long English one
        outweighed a user turn in another language, which then never reached E5 (a hostile check,
        2026-12-02; docs/model-releases.md)."""
        return _route(_part_chunks(record))

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        part_chunks = [_part_chunks(r) for r in records]
        routes = [_route(parts) for parts in part_chunks]
        english = [i for i, (to_english, _) in enumerate(routes) if to_english]
        other = [i for i, (_, to_other) in enumerate(routes) if to_other]
        self.routed["english"] += len(english)
        self.routed["multilingual"] += len(other)
        both = set(english) & set(other) if self.mixed_findings == "by_part" else set()
        parts = {i: _by_location(part_chunks[i]) for i in both}
        out: list[list[Finding]] = [[] for _ in records]
        for member, rows, wanted in ((self.english, english, _english_part), (self.multilingual, other, _foreign_part)):
            if rows:
                for i, found in zip(rows, member.detect([records[i] for i in rows]), strict=True):
                    if i in both:  # each member keeps its findings on the parts it is there for
                        found = [f for f in found if f.location is None or wanted(parts[i].get(f.location))]
                    # Attributed to this detector; detector_version says which artifact scored it.
                    out[i].extend(f.model_copy(update={"detector": self.name}) for f in found)
        return out

    def take_truncated(self) -> dict[str, int]:
        """Both members' truncated texts since the last call, summed by part kind."""
        return _summed(self.english.take_truncated(), self.multilingual.take_truncated())

    def take_first_pass(self) -> dict[str, int]:
        """Both members' first-pass window counts since the last call, summed by outcome."""
        return _summed(self.english.take_first_pass(), self.multilingual.take_first_pass())

    def close(self) -> None:
        self.english.close()
        self.multilingual.close()


# Counted with a part's chunks when the part is English only once the accents on its letters are
# removed: it sends the record to the English member too, and never counts as a foreign chunk.
FOLDED_ENGLISH = "en-folded"


def _part_chunks(record: InferenceLog) -> list[tuple[ScreenedPart, Counter[str]]]:
    """Each screened part with its language chunks (CLD2): what routing and ``by_part`` read.

    A part with no English chunk whose accent-folded text has one gets a FOLDED_ENGLISH chunk:
    ``ŵŕíté ráñsömwárë`` is not English to CLD2 and went to E5 alone, which missed 10 of 10 such
    requests that the English member flags (a hostile review, 2026-12-04; the rule and the
    measurements: docs/model-releases.md)."""
    out = []
    for part in record.screened_parts():
        found = language_chunks([part.text])
        if not found["en"] and not part.text.isascii():
            folded = fold_accents(part.text)
            if folded != part.text and language_chunks([folded])["en"]:
                found[FOLDED_ENGLISH] += 1
        out.append((part, found))
    return out


def _english(chunks: Counter[str]) -> bool:
    return chunks["en"] > 0 or chunks[FOLDED_ENGLISH] > 0


def _foreign(language: str) -> bool:
    return language not in ("en", FOLDED_ENGLISH)


def _route(parts: list[tuple[ScreenedPart, Counter[str]]]) -> tuple[bool, bool]:
    """:meth:`RoutedTransformerDetector.routes` from the parts' chunks."""
    chunks: Counter[str] = Counter()
    shared: Counter[str] = Counter()
    for part, found in parts:
        chunks.update(found)
        if part.kind is not PartKind.SYSTEM:
            shared.update(found)
    other = sum(n for language, n in shared.items() if _foreign(language))
    every = sum(n for language, n in shared.items() if language != FOLDED_ENGLISH)
    return (not chunks or _english(chunks)), other > 0 and other >= MULTILINGUAL_SHARE * every


def _by_location(parts: list[tuple[ScreenedPart, Counter[str]]]) -> dict[str, Counter[str]]:
    """Language chunks by part location (parts sharing one are summed)."""
    out: dict[str, Counter[str]] = {}
    for part, found in parts:
        out.setdefault(part.location, Counter()).update(found)
    return out


def _english_part(chunks: Counter[str] | None) -> bool:
    """A part the English member is there for: an English chunk, or none CLD2 can tell."""
    return not chunks or _english(chunks)


def _foreign_part(chunks: Counter[str] | None) -> bool:
    """A part the multilingual member is there for: a chunk in another language."""
    return bool(chunks) and any(_foreign(language) for language in chunks)


def _summed(*counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for key, n in c.items():
            out[key] = out.get(key, 0) + n
    return out
