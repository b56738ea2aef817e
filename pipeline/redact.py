"""Evidence snippets: short, around the span that matters, with identifiers masked.

Verdicts, alerts and dashboards carry these snippets instead of raw prompts, so e-mail
addresses, URLs, IP addresses, phone/card-like digit runs and key-like tokens are masked.
"""

from __future__ import annotations

import re

from pipeline.schemas import EVIDENCE_MAX_CHARS

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[EMAIL]"),
    (re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE), "[URL]"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "[IP]"),
    (re.compile(r"\b(?:sk|pk|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{8,}\b"), "[SECRET]"),
    (re.compile(r"\b(?:\d[ -]?){9,}\d\b"), "[NUMBER]"),
    (re.compile(r"\b(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}\b"), "[TOKEN]"),
)
_SPACES = re.compile(r"\s+")


def redact(text: str) -> str:
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return _SPACES.sub(" ", text).strip()


def snippet(text: str, start: int = 0, end: int | None = None, max_chars: int = EVIDENCE_MAX_CHARS) -> str:
    """A redacted excerpt of ``text`` centred on [start, end), at most ``max_chars`` long."""
    end = len(text) if end is None else end
    budget = max_chars - 2  # room for the ellipses
    centre = (start + end) // 2
    lo = max(0, min(centre - budget // 2, start))
    window = redact(text[lo : lo + budget * 2])[:budget]
    prefix = "…" if lo > 0 else ""
    suffix = "…" if lo + len(window) < len(text) and len(window) >= budget else ""
    return f"{prefix}{window}{suffix}"[:max_chars]
