"""Fixtures for alerting integration tests: a real local HTTP receiver, a real Alertmanager
(started on a free loopback port), a real PostgreSQL, and a builder for the alerting stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.alerts.rules import parse_rules
from pipeline.alerts.service import Alerting
from pipeline.alerts.settings import AlertSettings, DeliverySettings, ReceiverSettings
from pipeline.localinfra.alertmanager import LocalAlertmanager, start_alertmanager
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer
from pipeline.schemas import Category, Finding, MisuseVerdict, Severity, Side

SECRET = "it-webhook-secret"
_MARKS = {"alertmanager": "alertmanager", "am_forwarded": "alertmanager", "postgres_url": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, mark in _MARKS.items():
            if fixture in names:
                item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session", autouse=True)
def _redactor_loaded() -> None:
    """Load the evidence redactor (Presidio + spaCy, seconds) before any test's clock starts:
    tests with short alert lifetimes must not spend them loading a model."""
    from pipeline.alerts.engine import redact

    redact("warm up jane@example.org")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiverServer]:
    with WebhookReceiverServer(secret=SECRET) as server:
        yield server


@pytest.fixture(scope="session")
def am_forwarded() -> Iterator[WebhookReceiverServer]:
    """Where the session's Alertmanager forwards its notifications."""
    with WebhookReceiverServer() as server:
        yield server


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, am_forwarded: WebhookReceiverServer) -> Iterator[LocalAlertmanager]:
    server = start_alertmanager(
        tmp_path_factory.mktemp("alertmanager"),
        am_forwarded.url + "/alertmanager",
        group_by=("alertname", "tenant"),
        group_wait_s=0.5,
        group_interval_s=1.0,
        repeat_interval_s=3600.0,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from pipeline.localinfra.postgres import remove_cluster, start_postgres

    server = start_postgres(tmp_path_factory.mktemp("alerts-pg"))
    try:
        yield server.url
    finally:
        server.stop()
        remove_cluster(server)  # as root the cluster is in the temp dir: 86 MB left per run without this


def fast_delivery(**overrides: float) -> DeliverySettings:
    """Short timers so retry behaviour shows within seconds."""
    values: dict[str, float] = {
        "poll_interval_s": 0.05, "retry_initial_s": 0.1, "retry_max_s": 0.5, "claim_ttl_s": 2.0, "dead_letter_after_s": 3600.0,
    }
    values.update(overrides)
    return DeliverySettings(**values)  # type: ignore[arg-type]


AlertingFactory = Callable[..., Alerting]


@pytest.fixture
def build_alerting(tmp_path: Path) -> Iterator[AlertingFactory]:
    built: list[Alerting] = []

    def make(
        rules_yaml: str,
        receivers: list[ReceiverSettings],
        *,
        db_url: str | None = None,
        delivery: DeliverySettings | None = None,
        alertmanager_url: str | None = None,
    ) -> Alerting:
        """Direct notifier with ``receivers``; Alertmanager mode when ``alertmanager_url`` is given."""
        settings = AlertSettings(
            db_url=db_url or f"sqlite:///{tmp_path / 'alerts.db'}",
            notify="alertmanager" if alertmanager_url else "direct",
            alertmanager={"urls": [alertmanager_url or "http://127.0.0.1:9"], "resend_interval_s": 2.0},
            generator_url="http://grafana.test/d/mm-misuse-overview",
            receivers=receivers,
            delivery=delivery or fast_delivery(),
            run_dispatcher=False,
        )
        alerting = Alerting.build(settings, CollectorRegistry(), rules=parse_rules(rules_yaml))
        built.append(alerting)
        return alerting

    yield make
    for alerting in built:
        alerting.close()


def webhook(url: str, name: str = "hook", secret: str = SECRET) -> ReceiverSettings:
    return ReceiverSettings(name=name, type="webhook", url=url, secret=secret)


def critical_verdict(user: str, *, tenant: str = "acme", model: str = "qwen3-coder", request_id: str | None = None) -> MisuseVerdict:
    return MisuseVerdict(
        request_id=request_id or f"req-{user}",
        timestamp=datetime.now(UTC),
        model=model,
        deployment="prod",
        tenant_id=tenant,
        user_id=user,
        flagged=True,
        severity=Severity.CRITICAL,
        categories=[Category.CYBER_ABUSE],
        complied=True,
        findings=[
            Finding(category=Category.CYBER_ABUSE, side=Side.COMPLETION, score=0.97, detector="rules",
                    detector_version="1", evidence="keylogger that mails keystrokes")
        ],
    )
