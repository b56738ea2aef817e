"""Alertmanager semantics of the direct notifier: group_wait/interval/repeat, dedup and resolved
notifications, checked on the outbox rows it writes (Alertmanager webhook messages, version 4)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pipeline.alerts import state as db
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.grouping import Notifier
from pipeline.alerts.model import GO_ZERO_TIME, GeneratorLinks, WebhookMessage, fingerprint
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.state import create_db_engine
from pipeline.schemas import Severity

from .conftest import FakeClock, VerdictFactory

RULES = """
route: {group_by: [alertname, tenant], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
rules:
  - {name: crit, kind: verdict, severity: critical, resolve_after: 10m, match: {min_severity: critical}}
"""


class Harness:
    def __init__(
        self, clock: FakeClock, db_url: str, receivers: dict[str, bool] | None = None, rules: str = RULES, max_alerts: int = 0
    ) -> None:
        self.clock = clock
        self.db = create_db_engine(db_url)
        self.rules = parse_rules(rules)
        self.engine = AlertEngine(self.rules, clock=clock)
        receivers = receivers or {"hook": True}
        self.notifier = Notifier(
            self.db, self.rules, receivers, clock=clock, links=GeneratorLinks(base_url="http://grafana.test/d/mm-misuse-overview"),
            external_url="http://grafana.test/d/mm-pipeline-health", max_alerts={r: max_alerts for r in receivers},
        )

    def observe(self, *verdicts: object) -> None:
        self.engine.observe(list(verdicts))  # type: ignore[arg-type]
        with self.db.begin() as conn:
            self.engine.save(conn)

    def tick_after(self, seconds: float) -> list[WebhookMessage]:
        """Advance the clock, tick, and return the notifications this tick enqueued."""
        self.clock.advance(seconds)
        with self.db.connect() as conn:
            before = conn.execute(sa.select(sa.func.max(db.outbox.c.id))).scalar() or 0
        self.notifier.tick()
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(db.outbox.c.payload).where(db.outbox.c.id > before).order_by(db.outbox.c.id))
            return [WebhookMessage.model_validate_json(r[0]) for r in rows]


@pytest.fixture
def h(clock: FakeClock, db_url: str) -> Harness:
    return Harness(clock, db_url)


def users(n: WebhookMessage, status: str = "firing") -> list[str]:
    return sorted(a.labels["user"] for a in n.alerts if a.status == status)


def test_group_wait_collects_a_burst_into_one_notification(h: Harness, verdict: VerdictFactory) -> None:
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    assert h.tick_after(0) == []
    h.observe(verdict(user="u_2", severity=Severity.CRITICAL), verdict(user="u_3", severity=Severity.CRITICAL, tenant="other"))
    assert h.tick_after(10) == []
    sent = h.tick_after(21)
    assert sorted((n.groupLabels["tenant"], tuple(users(n))) for n in sent) == [("acme", ("u_1", "u_2")), ("other", ("u_3",))]
    assert {n.groupKey for n in sent} == {
        '{}/{receiver="hook"}:{alertname="crit", tenant="acme"}', '{}/{receiver="hook"}:{alertname="crit", tenant="other"}'
    }
    acme = next(n for n in sent if n.groupLabels["tenant"] == "acme")
    assert acme.version == "4" and acme.status == "firing" and acme.receiver == "hook" and acme.truncatedAlerts == 0
    assert acme.commonLabels == {"alertname": "crit", "category": "cyber_abuse", "deployment": "prod",
                                 "model": "qwen3-coder", "severity": "critical", "tenant": "acme"}
    assert acme.commonAnnotations["complied"] == "true" and "last_request_id" not in acme.commonAnnotations
    for a in acme.alerts:
        assert a.endsAt == GO_ZERO_TIME and a.fingerprint == fingerprint(a.labels)
        assert "keylogger" in a.annotations["evidence"]
        assert a.generatorURL.startswith("http://grafana.test/d/mm-misuse-overview?") and "var-tenant=acme" in a.generatorURL


def test_group_interval_batches_updates_and_duplicates_are_not_resent(h: Harness, verdict: VerdictFactory) -> None:
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    [first] = h.tick_after(30)
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))  # same alert again: dedup
    assert h.tick_after(60) == []
    h.observe(verdict(user="u_2", severity=Severity.CRITICAL))  # new alert: waits for group_interval
    assert h.tick_after(60) == []
    [update] = h.tick_after(180)
    assert users(update) == ["u_1", "u_2"]
    assert update.groupKey == first.groupKey
    assert h.tick_after(200) == []  # nothing changed (and nothing resolved yet)


def test_repeat_interval_renotifies_still_firing_alerts(h: Harness, verdict: VerdictFactory) -> None:
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    assert len(h.tick_after(30)) == 1
    sent = []
    for _ in range(12):  # keep it firing for an hour, one verdict every 5 minutes
        h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
        sent += h.tick_after(300)
    assert len(sent) == 1 and users(sent[0]) == ["u_1"]


def test_resolved_notification_once_all_alerts_end(h: Harness, verdict: VerdictFactory) -> None:
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    h.tick_after(30)
    sent = []
    for _ in range(4):
        sent += h.tick_after(300)
    [resolved] = sent
    assert resolved.status == "resolved" and users(resolved, "resolved") == ["u_1"]
    assert resolved.alerts[0].endsAt != GO_ZERO_TIME and resolved.alerts[0].endsAt.endswith("Z")
    assert h.tick_after(300) == []


def test_send_resolved_false_stays_quiet(clock: FakeClock, db_url: str, verdict: VerdictFactory) -> None:
    h = Harness(clock, db_url, receivers={"quiet": False})
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    assert len(h.tick_after(30)) == 1
    assert [n for _ in range(5) for n in h.tick_after(300)] == []


def test_max_alerts_truncates_and_counts(clock: FakeClock, db_url: str, verdict: VerdictFactory) -> None:
    h = Harness(clock, db_url, max_alerts=2)
    h.observe(*(verdict(user=f"u_{i}", severity=Severity.CRITICAL) for i in range(5)))
    [n] = [m for m in h.tick_after(30) if m.groupLabels["alertname"] == "crit"]
    assert len(n.alerts) == 2 and n.truncatedAlerts == 3


def test_a_group_that_fires_again_after_its_resolution_notifies_again(h: Harness, verdict: VerdictFactory) -> None:
    """A resolved group's row is deleted; when the same labels fire again (the same tenant hit
    the next day), the new group must notify, though its sequence starts again."""
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    first = h.tick_after(30)
    sent = [n for _ in range(4) for n in h.tick_after(300)]
    assert [n.status for n in first + sent] == ["firing", "resolved"]
    h.tick_after(3600)
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    again = h.tick_after(30)
    assert [n.status for n in again] == ["firing"], "the second episode was not notified"


def test_an_alert_from_a_host_whose_clock_is_behind_is_still_notified(h: Harness, clock: FakeClock,
                                                                      verdict: VerdictFactory) -> None:
    """Notifiers read changed alerts from a watermark of the rows' own `updated_at` (the writer's
    clock), with 5 s of slack. A replica on a host 10 s behind wrote rows under the watermark:
    its alert was never notified (an on-call review, 2026-12-06). A full pass every minute
    finds them."""
    from .conftest import FakeClock as Clock

    h.observe(verdict(user="u_a", severity=Severity.CRITICAL))
    assert [users(n) for n in h.tick_after(30)] == [["u_a"]]
    behind = Clock(clock.now - 10)
    other = AlertEngine(h.rules, clock=behind)
    other.observe([verdict(user="u_b", tenant="other", severity=Severity.CRITICAL, at=behind.now)])
    with h.db.begin() as conn:
        other.save(conn)
    sent = [n for _ in range(4) for n in h.tick_after(31)]
    assert ["u_b"] in [users(n) for n in sent], sent
