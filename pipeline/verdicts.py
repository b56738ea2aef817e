"""Findings -> misuse-verdict/v1: categories, severity, complied, pseudonymised user.

Severity policy (pinned here, documented in README):
- base severity per category (jailbreak low; cyber abuse, misinformation and other harm
  medium; weapons/CBRN and self-harm high),
- +1 when the strongest finding's calibrated score is >= 0.9,
- +1 when the model complied (harmful content found on the completion side).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pipeline.schemas import (
    Category,
    Finding,
    InferenceLog,
    MisuseVerdict,
    Severity,
    Side,
)

_BASE_SEVERITY: dict[Category, Severity] = {
    Category.JAILBREAK: Severity.LOW,
    Category.CYBER_ABUSE: Severity.MEDIUM,
    Category.MISINFORMATION: Severity.MEDIUM,
    Category.OTHER_HARM: Severity.MEDIUM,
}
_HIGH_SUBCATEGORIES = {"weapons_cbrn", "self_harm"}
CONFIDENT_SCORE = 0.9


class Pseudonymizer:
    """Keyed hash of user ids: stable per key, not reversible without it."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("pseudonymisation key must not be empty")
        self._key = key

    def __call__(self, user_id: str | None) -> str | None:
        if user_id is None:
            return None
        digest = hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
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
    return Severity.from_rank(rank)


def build_verdict(
    log: InferenceLog, findings: Sequence[Finding], pseudonymize: Pseudonymizer
) -> MisuseVerdict:
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
    )
