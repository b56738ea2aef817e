"""Findings -> misuse-verdict/v1: categories, severity, complied, pseudonymised user.

Severity policy (pinned here, documented in README):
- base severity per category (jailbreak low; cyber abuse, misinformation and other harm
  medium; weapons/CBRN and self-harm high),
- +1 when the strongest finding's calibrated score is >= 0.9,
- +1 when the model complied (harmful content found on the completion side),
- +1 when the finding carries the ``obfuscation`` signal: the harmful text was hidden
  (look-alike letters, zero-width characters, base64, leetspeak, ...) and only seen after
  normalisation/decoding; hiding a request is evidence of intent, and it keeps its category.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence

from pipeline.schemas import (
    Category,
    Finding,
    InferenceLog,
    MisuseVerdict,
    Severity,
    Side,
    Signal,
)

_BASE_SEVERITY: dict[Category, Severity] = {
    Category.JAILBREAK: Severity.LOW,
    Category.CYBER_ABUSE: Severity.MEDIUM,
    Category.MISINFORMATION: Severity.MEDIUM,
    Category.OTHER_HARM: Severity.MEDIUM,
}
_HIGH_SUBCATEGORIES = {"weapons_cbrn", "self_harm"}
CONFIDENT_SCORE = 0.9


PSEUDONYM = re.compile(r"u_[0-9a-f]{20}")


def ingested_user_id(raw: str) -> str:
    """A live user id as ingestion stores it: one shaped like a pseudonym is marked ``client:``,
    or the Pseudonymizer would keep it as a pseudonym (it keeps stored ones for re-scoring) and a
    client could file its requests under another user's (a privacy review, 2026-12-02). The
    gateway's adapters store ids so; ``pseudonym resolve`` hashes candidates the same way."""
    return "client:" + raw if PSEUDONYM.fullmatch(raw) else raw


class Pseudonymizer:
    """Keyed hash of user ids: stable per key, not reversible without it."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("pseudonymisation key must not be empty")
        self._key = key

    def __call__(self, user_id: str | None) -> str | None:
        if user_id is None:
            return None
        if PSEUDONYM.fullmatch(user_id):
            # Already a pseudonym: logs stored in the lake carry one, and re-scoring them
            # (spark backfill) must give the verdict the same user, not a hash of the hash.
            return user_id
        return self.hash(user_id)

    def hash(self, raw: str) -> str:
        """The keyed hash of ``raw``, whatever its shape."""
        digest = hmac.new(self._key, raw.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"u_{digest[:20]}"


def finding_severity(finding: Finding, complied: bool | None) -> Severity:
    base = _BASE_SEVERITY[finding.category]
    if finding.subcategory in _HIGH_SUBCATEGORIES:
        base = Severity.HIGH
    rank = base.rank
    if finding.score >= CONFIDENT_SCORE:
        rank += 1
    if complied and finding.category is not Category.JAILBREAK:
        rank += 1
    if Signal.OBFUSCATION in finding.signals:
        rank += 1
    return Severity.from_rank(rank)


def build_verdict(
    log: InferenceLog, findings: Sequence[Finding], pseudonymize: Pseudonymizer, signals: Iterable[Signal] = ()
) -> MisuseVerdict:
    """The verdict of one record. ``signals``: record-level signals (unscreened_language,
    unscreened_text), added
    to the union of the findings' signals; they change neither ``flagged`` nor the severity."""
    # Several detectors may report the same (category, side): keep all, ordered for
    # deterministic output; the strongest one drives severity.
    ordered = sorted(findings, key=lambda f: (f.category, f.side, -f.score, f.detector))
    complied: bool | None = None
    if log.has_completion:
        complied = any(
            f.side is Side.COMPLETION and f.category is not Category.JAILBREAK for f in ordered
        )
    severity = max((finding_severity(f, complied) for f in ordered), default=Severity.NONE, key=lambda s: s.rank)
    return MisuseVerdict(
        request_id=log.request_id,
        timestamp=log.timestamp,
        model=log.model,
        deployment=log.deployment,
        tenant_id=log.tenant_id,
        user_id=pseudonymize(log.user_id),
        flagged=bool(ordered),
        severity=severity,
        categories=sorted({f.category for f in ordered}),
        complied=complied,
        findings=ordered,
        signals=sorted({s for f in ordered for s in f.signals} | set(signals)),
    )
