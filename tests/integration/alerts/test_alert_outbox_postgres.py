"""The same alerting code on PostgreSQL: durable state and two dispatchers sharing one outbox
without sending any notification twice."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa

from pipeline.alerts import state as db
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

from .conftest import AlertingFactory, critical_verdict, webhook

RULES = """
route: {group_by: [user], group_wait: 0s, group_interval: 1h, repeat_interval: 4h}
rules:
  - {name: crit, kind: verdict, severity: critical, match: {min_severity: critical}}
  - {name: offender, kind: repeat_offender, severity: warning, half_life: 1h, threshold: 20}
"""


@pytest.fixture
def pg_db(postgres_url: str) -> str:
    """A fresh database per test on the session's server."""
    name = f"alerts_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.slow
def test_two_dispatchers_on_postgres_deliver_each_notification_once(
    pg_db: str, receiver: WebhookReceiverServer, build_alerting: AlertingFactory
) -> None:
    stream = build_alerting(RULES, [webhook(receiver.url)], db_url=pg_db)
    other = build_alerting(RULES, [webhook(receiver.url)], db_url=pg_db)
    stream.observe([critical_verdict(f"u_{i:02d}") for i in range(40)])
    stream.commit()
    stream.dispatcher.start()
    other.dispatcher.start()
    with stream.db.connect() as conn:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            keys = {r[0] for r in conn.execute(sa.select(db.outbox.c.idempotency_key))}
            conn.rollback()
            if len(keys) == 40 and set(receiver.accepted) == keys:
                break
            time.sleep(0.1)
    assert len(keys) == 40 and set(receiver.accepted) == keys
    assert [r for r in receiver.requests if r.duplicate] == []


def test_rule_state_survives_a_restart_on_postgres(pg_db: str, receiver: WebhookReceiverServer, build_alerting: AlertingFactory) -> None:
    first = build_alerting(RULES, [webhook(receiver.url)], db_url=pg_db)
    first.observe([critical_verdict("u_rep", request_id="r1"), critical_verdict("u_rep", request_id="r2")])  # 8 + 8
    first.commit()
    first.close()
    second = build_alerting(RULES, [webhook(receiver.url)], db_url=pg_db)
    assert 15 < second.engine.risk_score("offender", "u_rep") <= 16
    second.observe([critical_verdict("u_rep", request_id="r3")])
    second.commit()
    with second.db.connect() as conn:
        names = {r[0]["alertname"] for r in conn.execute(sa.select(db.alerts.c.labels))}
    assert names == {"crit", "offender"}


def test_abandon_on_postgres_keeps_the_last_error_and_touches_only_pending_rows(pg_db: str) -> None:
    """``alerts test --send`` drops what it could not deliver in time (Outbox.abandon). Its SQL
    (the last error joined to the reason) runs here on PostgreSQL, not only on SQLite."""
    from pipeline.alerts.model import WebhookMessage
    from pipeline.alerts.outbox import DEAD, DELIVERED, Notification, Outbox
    from pipeline.alerts.state import create_db_engine

    engine = create_db_engine(pg_db)
    outbox = Outbox(engine)
    now = time.time()
    message = WebhookMessage(groupKey="{}:{}", status="firing", receiver="ops", groupLabels={}, commonLabels={},
                             commonAnnotations={}, externalURL="http://mm", alerts=[])
    with engine.begin() as conn:
        for key in ("sent", "failing", "untried"):
            outbox.enqueue(conn, Notification(key, "ops", "g", message), now)
    by_key = {item.idempotency_key: item for item in outbox.claim_due(now + 1, 10, 30)}
    outbox.mark_delivered(by_key["sent"].id, now)
    outbox.mark_retry(by_key["failing"].id, now + 60, "ConnectError: [Errno 111] Connection refused")
    outbox.mark_retry(by_key["untried"].id, now + 60, "")
    assert outbox.abandon(["sent", "failing", "untried"], "dropped, so it is not sent later") == 2
    with engine.connect() as conn:
        t = db.outbox
        rows = {key: (state, error) for key, state, error in conn.execute(sa.select(t.c.idempotency_key, t.c.state, t.c.last_error))}
    engine.dispose()
    assert rows["sent"] == (DELIVERED, None)
    assert rows["failing"] == (DEAD, "ConnectError: [Errno 111] Connection refused; dropped, so it is not sent later")
    assert rows["untried"] == (DEAD, "dropped, so it is not sent later")
