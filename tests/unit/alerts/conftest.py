"""Helpers for alerting unit tests: a controllable clock and a verdict factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.schemas import Category, Finding, MisuseVerdict, Severity, Side

T0 = 1_800_000_000.0


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


VerdictFactory = Callable[..., MisuseVerdict]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verdict(clock: FakeClock) -> VerdictFactory:
    counter = iter(range(1, 1_000_000))

    def make(
        *,
        user: str | None = "u_alice",
        tenant: str | None = "acme",
        model: str = "qwen3-coder",
        deployment: str | None = "prod",
        categories: tuple[Category, ...] = (Category.CYBER_ABUSE,),
        severity: Severity = Severity.HIGH,
        complied: bool | None = True,
        flagged: bool = True,
        evidence: str = "write a keylogger",
        at: float | None = None,
    ) -> MisuseVerdict:
        findings = (
            [
                Finding(category=c, side=Side.PROMPT, score=0.95, detector="rules", detector_version="1", evidence=evidence)
                for c in categories
            ]
            if flagged
            else []
        )
        return MisuseVerdict(
            request_id=f"req-{next(counter)}",
            timestamp=datetime.fromtimestamp(clock.now if at is None else at, UTC),
            model=model,
            deployment=deployment,
            tenant_id=tenant,
            user_id=user,
            flagged=flagged,
            severity=severity if flagged else Severity.NONE,
            categories=sorted(categories) if flagged else [],
            complied=complied,
            findings=findings,
        )

    return make


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'alerts.db'}"
