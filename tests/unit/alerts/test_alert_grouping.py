"""Alertmanager semantics of the notifier: group_wait/interval/repeat, dedup, silences,
inhibition and resolved notifications, checked on the outbox rows it writes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pipeline.alerts import state as db
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.grouping import Matcher, Notifier, SilenceError, add_silence, expire_silence
from pipeline.alerts.model import NotificationPayload
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.state import create_db_engine
from pipeline.schemas import Severity

from .conftest import FakeClock, VerdictFactory

RULES = """
route: {group_by: [alertname, tenant], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
rules:
  - {name: crit, kind: verdict, severity: critical, resolve_after: 10m, match: {min_severity: critical}}
  - {name: warn, kind: verdict, severity: warning, resolve_after: 10m, match: {min_severity: medium}}
inhibit_rules:
  - {source_match: {severity: critical}, target_match: {severity: warning}, equal: [tenant, user]}
"""


class Harness:
    def __init__(self, clock: FakeClock, db_url: str, receivers: dict[str, bool] | None = None, rules: str = RULES) -> None:
        self.clock = clock
        self.db = create_db_engine(db_url)
        self.rules = parse_rules(rules)
        self.engine = AlertEngine(self.rules, clock=clock)
        self.notifier = Notifier(self.db, self.rules, receivers or {"hook": True}, clock=clock)

    def observe(self, *verdicts: object) -> None:
        self.engine.observe(list(verdicts))  # type: ignore[arg-type]
        with self.db.begin() as conn:
            self.engine.save(conn)

    def tick_after(self, seconds: float) -> list[NotificationPayload]:
        """Advance the clock, tick, and return the notifications this tick enqueued."""
        self.clock.advance(seconds)
        with self.db.connect() as conn:
            before = conn.execute(sa.select(sa.func.max(db.outbox.c.id))).scalar() or 0
        self.notifier.tick()
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(db.outbox.c.payload).where(db.outbox.c.id > before).order_by(db.outbox.c.id))
            return [NotificationPayload.model_validate_json(r[0]) for r in rows]


@pytest.fixture
def h(clock: FakeClock, db_url: str) -> Harness:
    return Harness(clock, db_url)


def users(n: NotificationPayload, status: str = "firing") -> list[str]:
    return sorted(a.labels["user"] for a in n.alerts if a.status == status)


def test_group_wait_collects_a_burst_into_one_notification(h: Harness, verdict: VerdictFactory) -> None:
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    assert h.tick_after(0) == []
    h.observe(verdict(user="u_2", severity=Severity.CRITICAL), verdict(user="u_3", severity=Severity.CRITICAL, tenant="other"))
    assert h.tick_after(10) == []
    sent = h.tick_after(21)
    assert sorted((n.group_labels["tenant"], tuple(users(n))) for n in sent) == [("acme", ("u_1", "u_2")), ("other", ("u_3",))]
    assert len({n.idempotency_key for n in sent}) == 2


def test_group_interval_batches_updates_and_duplicates_are_not_resent(h: Harness, verdict: VerdictFactory) -> None:
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    [first] = h.tick_after(30)
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))  # same alert again: dedup
    assert h.tick_after(60) == []
    h.observe(verdict(user="u_2", severity=Severity.CRITICAL))  # new alert: waits for group_interval
    assert h.tick_after(60) == []
    [update] = h.tick_after(180)
    assert users(update) == ["u_1", "u_2"]
    assert update.idempotency_key != first.idempotency_key
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
    assert resolved.alerts[0].ends_at is not None
    assert h.tick_after(300) == []


def test_send_resolved_false_stays_quiet(clock: FakeClock, db_url: str, verdict: VerdictFactory) -> None:
    h = Harness(clock, db_url, receivers={"quiet": False})
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    assert len(h.tick_after(30)) == 1
    assert [n for _ in range(5) for n in h.tick_after(300)] == []


def test_critical_inhibits_matching_warning_only(h: Harness, verdict: VerdictFactory) -> None:
    h.observe(
        verdict(user="u_1", severity=Severity.CRITICAL),  # fires crit and warn for u_1
        verdict(user="u_2", severity=Severity.MEDIUM),  # warn only
    )
    sent = h.tick_after(30)
    by_rule = {n.group_labels["alertname"]: users(n) for n in sent}
    assert by_rule == {"crit": ["u_1"], "warn": ["u_2"]}


def test_silence_mutes_until_it_expires(h: Harness, verdict: VerdictFactory, clock: FakeClock) -> None:
    silence = add_silence(h.db, ["user=u_1"], 600, "oncall", "known pentest", now=clock.now)
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL), verdict(user="u_2", severity=Severity.CRITICAL))
    [n] = h.tick_after(30)
    assert users(n) == ["u_2"]
    expire_silence(h.db, silence.id, now=clock.now)
    h.observe(verdict(user="u_1", severity=Severity.CRITICAL))
    [n] = h.tick_after(300)
    assert users(n) == ["u_1", "u_2"]
    with pytest.raises(SilenceError):
        expire_silence(h.db, silence.id, now=clock.now)


@pytest.mark.parametrize(
    ("matcher", "labels", "hit"),
    [
        ("severity=critical", {"severity": "critical"}, True),
        ("severity!=critical", {"severity": "critical"}, False),
        ("tenant=~ac.*", {"tenant": "acme"}, True),
        ("tenant=~cm", {"tenant": "acme"}, False),  # anchored, as in Alertmanager
        ("tenant!~ac.*", {"tenant": "zeta"}, True),
        ("user=", {}, True),  # empty value matches a missing label
    ],
)
def test_matchers(matcher: str, labels: dict[str, str], hit: bool) -> None:
    assert Matcher.parse(matcher).matches(labels) is hit


def test_bad_matcher_is_rejected() -> None:
    with pytest.raises(SilenceError):
        Matcher.parse("not a matcher")
