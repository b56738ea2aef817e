"""Alertmanager as the routing layer, against a real Alertmanager (``prometheus-alertmanager``):

- the engine's alerts reach it with our labels, fingerprints, drill-down links and real ends;
  its own routing groups them, and resolutions reach it;
- a silence set with the real ``amtool`` mutes an alert for every receiver behind it;
- the direct notifier's webhook body is Alertmanager's own, field for field: the same alerts sent
  through Alertmanager and through our direct notifier give messages with the same fields, and
  a receiver written against Alertmanager's real output reads ours unchanged.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import uuid
from typing import Any

import pytest

from pipeline.localinfra.alertmanager import LocalAlertmanager, get_alerts
from pipeline.schemas import Severity
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

from .conftest import SECRET, AlertingFactory, critical_verdict, webhook

pytestmark = pytest.mark.slow


def forwarded_for(server: WebhookReceiverServer, alertname: str) -> list[dict]:
    return [b for b in (req.json() for req in list(server.requests)) if b.get("groupLabels", {}).get("alertname") == alertname]


def rules_yaml(rule: str, resolve_after: str = "8s") -> str:
    return f"""
route: {{group_by: [alertname, tenant], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
rules:
  - {{name: {rule}, kind: verdict, severity: critical, resolve_after: {resolve_after}, match: {{min_severity: critical}}}}
"""


def oncall_summary(message: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """A receiver written for Alertmanager's webhook (version 4): one line per alert."""
    assert message["version"] == "4"
    out = []
    for alert in message["alerts"]:
        link = (alert["generatorURL"] or message["externalURL"]).split("?")[0]
        out.append((message["status"], alert["fingerprint"], alert["labels"]["user"], f"{alert['annotations']['summary']} <{link}>"))
    return sorted(out)


def test_alerts_reach_alertmanager_and_its_routing_groups_them(
    alertmanager: LocalAlertmanager, am_forwarded: WebhookReceiverServer, build_alerting: AlertingFactory
) -> None:
    rule = f"crit_{uuid.uuid4().hex[:8]}"
    alerting = build_alerting(rules_yaml(rule), [], alertmanager_url=alertmanager.url)
    alerting.dispatcher.start()
    alerting.observe([critical_verdict("u_1"), critical_verdict("u_2"), critical_verdict("u_3"), critical_verdict("u_9", tenant="zeta")])
    alerting.commit()

    def held() -> list[dict]:
        return [a for a in get_alerts(alertmanager.url) if a["labels"].get("alertname") == rule]

    deadline = time.monotonic() + 20
    while len(held()) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    alerts = held()
    assert sorted(a["labels"]["user"] for a in alerts) == ["u_1", "u_2", "u_3", "u_9"]
    assert all(a["status"]["state"] == "active" for a in alerts)
    assert all("keylogger" in a["annotations"]["evidence"] for a in alerts)
    # Alertmanager's fingerprint of each alert is the one our engine stores.
    ours = {a.labels["user"]: a.fingerprint for a in alerting.engine.alerts.values()}
    assert {a["labels"]["user"]: a["fingerprint"] for a in alerts} == ours
    assert all(a["generatorURL"].startswith("http://grafana.test/d/mm-misuse-overview?from=") for a in alerts)

    # Alertmanager's route groups by (alertname, tenant): two notifications, 3 + 1 alerts.
    assert am_forwarded.wait_for(lambda s: len(forwarded_for(s, rule)) >= 2, timeout_s=20)
    firing = {n["groupLabels"]["tenant"]: len(n["alerts"]) for n in forwarded_for(am_forwarded, rule) if n["status"] == "firing"}
    assert firing == {"acme": 3, "zeta": 1}

    # No new verdicts: our alerts end after 8 s (their endsAt), Alertmanager forwards the resolution.
    assert am_forwarded.wait_for(
        lambda s: {n["groupLabels"]["tenant"] for n in forwarded_for(s, rule) if n["status"] == "resolved"} == {"acme", "zeta"},
        timeout_s=30,
    )
    assert held() == [] or all(a["status"]["state"] != "active" for a in held())


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool (prometheus-alertmanager) not installed")
def test_an_amtool_silence_mutes_the_alert_for_every_receiver(
    alertmanager: LocalAlertmanager, am_forwarded: WebhookReceiverServer, build_alerting: AlertingFactory
) -> None:
    rule = f"crit_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["amtool", f"--alertmanager.url={alertmanager.url}", "silence", "add", f"alertname={rule}", "user=u_2",
         "--comment=pentest", "--duration=1h", "--author=oncall"],
        check=True, capture_output=True, timeout=30,
    )
    alerting = build_alerting(rules_yaml(rule, "1h"), [], alertmanager_url=alertmanager.url)
    alerting.observe([critical_verdict("u_1"), critical_verdict("u_2")])
    alerting.commit()
    alerting.dispatcher.run_once()
    assert am_forwarded.wait_for(lambda s: len(forwarded_for(s, rule)) >= 1, timeout_s=20)
    time.sleep(2.5)  # two more group intervals: nothing else may arrive
    [n] = forwarded_for(am_forwarded, rule)
    assert [a["labels"]["user"] for a in n["alerts"]] == ["u_1"]
    states = {a["labels"]["user"]: a["status"]["state"] for a in get_alerts(alertmanager.url) if a["labels"]["alertname"] == rule}
    assert states == {"u_1": "active", "u_2": "suppressed"}


def test_direct_webhook_is_alertmanagers_format_field_for_field(
    alertmanager: LocalAlertmanager, am_forwarded: WebhookReceiverServer, receiver: WebhookReceiverServer,
    build_alerting: AlertingFactory, tmp_path: Any,
) -> None:
    rule = f"crit_{uuid.uuid4().hex[:8]}"
    verdicts = [critical_verdict("u_1"), critical_verdict("u_2")]
    via_am = build_alerting(rules_yaml(rule, "1h"), [], alertmanager_url=alertmanager.url, db_url=f"sqlite:///{tmp_path / 'am.db'}")
    via_am.observe(verdicts)
    via_am.commit()
    via_am.dispatcher.run_once()
    direct = build_alerting(rules_yaml(rule, "1h"), [webhook(receiver.url)], db_url=f"sqlite:///{tmp_path / 'direct.db'}")
    direct.observe(verdicts)
    direct.commit()
    assert direct.dispatcher.drain(timeout_s=20)
    assert am_forwarded.wait_for(lambda s: len(forwarded_for(s, rule)) >= 1, timeout_s=20)
    [am_message] = forwarded_for(am_forwarded, rule)
    [request] = receiver.accepted.values()
    ours = request.json()
    assert request.signature_ok and request.headers["Idempotency-Key"]

    # Same fields at every level, same types, same values where both sides know them.
    assert set(ours) == set(am_message)
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in am_message.items()}
    for ours_alert, am_alert in zip(*(sorted(m["alerts"], key=lambda a: a["labels"]["user"]) for m in (ours, am_message)), strict=True):
        assert set(ours_alert) == set(am_alert)
        for field in ("status", "labels", "annotations", "fingerprint", "endsAt"):
            assert ours_alert[field] == am_alert[field], field
        # Same drill-down; only its time range differs (two engines, two start times).
        assert ours_alert["generatorURL"].split("&to=")[1].split("&", 1)[1] == am_alert["generatorURL"].split("&to=")[1].split("&", 1)[1]
    for field in ("version", "status", "groupLabels", "commonLabels", "commonAnnotations", "truncatedAlerts"):
        assert ours[field] == am_message[field], field
    assert ours["groupKey"].endswith(':{alertname="%s", tenant="acme"}' % rule)
    assert am_message["groupKey"].endswith(':{alertname="%s", tenant="acme"}' % rule)
    # The receiver written against Alertmanager's output reads ours to the same summary.
    assert oncall_summary(ours) == oncall_summary(am_message)
    assert SECRET not in request.body.decode()


def test_alerts_written_after_the_clock_stepped_back_still_reach_alertmanager(alertmanager: LocalAlertmanager, tmp_path) -> None:
    """The pusher sends rows from a watermark of their own updated_at; a full re-send every
    resend_interval_s finds the rest. With the clock stepped back 300 s, `now - last_full` was
    negative and no full re-send ran: an alert written then reached Alertmanager only once the
    clock had caught up (an on-call review, 2026-12-06: six minutes, every tick `posted=0`)."""
    from pipeline.alerts.alertmanager import AlertmanagerPusher
    from pipeline.alerts.engine import AlertEngine
    from pipeline.alerts.model import GeneratorLinks
    from pipeline.alerts.rules import parse_rules
    from pipeline.alerts.settings import AlertmanagerSettings
    from pipeline.alerts.state import create_db_engine

    rule = f"stepped_{uuid.uuid4().hex[:8]}"
    now = [time.time()]
    store = create_db_engine(f"sqlite:///{tmp_path / 'am.db'}")
    engine = AlertEngine(parse_rules(rules_yaml(rule, resolve_after="1h")), clock=lambda: now[0])
    pusher = AlertmanagerPusher(store, AlertmanagerSettings(urls=[alertmanager.url], resend_interval_s=60),
                                GeneratorLinks(base_url=""), clock=lambda: now[0])
    try:
        engine.observe([critical_verdict("u_before", tenant="t1", request_id=f"{rule}-1")])
        with store.begin() as conn:
            engine.save(conn)
        assert pusher.tick() == 1
        now[0] -= 300  # the host's clock is stepped back
        engine.observe([critical_verdict("u_after", tenant="t2", request_id=f"{rule}-2")])
        with store.begin() as conn:
            engine.save(conn)
        pusher.tick()
        users = {a["labels"]["user"] for a in get_alerts(alertmanager.url) if a["labels"].get("alertname") == rule}
        assert users == {"u_before", "u_after"}
    finally:
        pusher.close()


def _pusher_on(alertmanager: LocalAlertmanager, tmp_path, rules: str, now: list[float]):
    from pipeline.alerts.alertmanager import AlertmanagerPusher
    from pipeline.alerts.engine import AlertEngine
    from pipeline.alerts.model import GeneratorLinks
    from pipeline.alerts.rules import parse_rules
    from pipeline.alerts.settings import AlertmanagerSettings
    from pipeline.alerts.state import create_db_engine

    store = create_db_engine(f"sqlite:///{tmp_path / 'am.db'}")
    engine = AlertEngine(parse_rules(rules), clock=lambda: now[0])
    pusher = AlertmanagerPusher(store, AlertmanagerSettings(urls=[alertmanager.url], resend_interval_s=60),
                                GeneratorLinks(base_url=""), clock=lambda: now[0])
    return store, engine, pusher


def _saved(store, engine) -> None:
    with store.begin() as conn:
        engine.save(conn)
    engine.mark_saved()


def test_an_alert_resolved_after_the_clock_stepped_back_does_not_hold_back_the_others(alertmanager: LocalAlertmanager, tmp_path,
                                                                                      caplog) -> None:
    """A hostile review (2026-12-06): resolved with the clock 5 s back, a rate alert ended before it
    started; Alertmanager refused its batch (HTTP 400 "start time must be before end time") and
    the pusher stopped at that chunk, so 102 of 600 new critical alerts behind it never arrived."""
    rule = f"burst_{uuid.uuid4().hex[:8]}"
    now = [time.time()]
    store, engine, pusher = _pusher_on(alertmanager, tmp_path, f"""
rules:
  - {{name: {rule}, kind: rate, severity: warning, per: [tenant], window: 10s, buckets: 10, threshold: 1}}
  - {{name: {rule}_crit, kind: verdict, severity: critical, match: {{min_severity: critical}}}}
""", now)
    try:
        engine.observe([critical_verdict("u0", tenant="t-burst", request_id=f"{rule}-0")])
        _saved(store, engine)
        pusher.tick()
        now[0] -= 5  # the host's clock is stepped back
        quiet = critical_verdict("u0", tenant="t-burst", request_id=f"{rule}-quiet").model_copy(
            update={"flagged": False, "severity": Severity.NONE, "categories": [], "findings": []}
        )
        engine.observe([quiet])  # the tenant's rate falls: the alert resolves
        engine.observe([critical_verdict(f"user{i}", tenant="t-other", request_id=f"{rule}-{i}") for i in range(1, 601)])
        _saved(store, engine)
        burst = next(a for a in engine.alerts.values() if a.rule == rule and a.labels.get("tenant") == "t-burst")
        assert burst.ends_at < burst.starts_at and not burst.firing(now[0])  # resolved, before its start
        with caplog.at_level(logging.WARNING):
            pusher.tick()
        got = {a["labels"]["user"] for a in get_alerts(alertmanager.url) if a["labels"].get("alertname") == f"{rule}_crit"
               and a["labels"].get("tenant") == "t-other"}
        assert len(got) == 600
        assert "failed" not in caplog.text  # no batch refused: the resolution went out ending as it starts
    finally:
        pusher.close()


def test_an_alert_alertmanager_refuses_does_not_hold_back_the_chunks_after_it(alertmanager: LocalAlertmanager, tmp_path) -> None:
    """Alertmanager answers 400 for a batch with an invalid alert and keeps the valid ones; the
    pusher went on to the next chunk only after a 2xx, so every chunk behind the refused one
    waited (here: an alert row with no labels, which Alertmanager refuses)."""
    from pipeline.alerts import state as db

    rule = f"refused_{uuid.uuid4().hex[:8]}"
    now = [time.time()]
    store, engine, pusher = _pusher_on(alertmanager, tmp_path, rules_yaml(rule, resolve_after="1h"), now)
    try:
        with store.begin() as conn:
            db.upsert(conn, db.alerts, [{
                "fingerprint": "0000000000000000", "rule": rule, "labels": {}, "annotations": {}, "evidence": [],
                "receivers": [], "starts_at": now[0], "ends_at": now[0] + 3600, "updated_at": now[0], "partition": 0,
            }], ["fingerprint"])
        engine.observe([critical_verdict(f"user{i}", tenant="t-after", request_id=f"{rule}-{i}") for i in range(700)])
        _saved(store, engine)
        pusher.tick()
        got = {a["labels"]["user"] for a in get_alerts(alertmanager.url) if a["labels"].get("alertname") == rule}
        assert len(got) == 700
        # Refused for good, not retried for ever: the backlog is empty, so retention can run.
        assert pusher.pending() == 0 and pusher._peers[0].failures == 0
    finally:
        pusher.close()


def test_one_unreachable_peer_does_not_stop_retention(alertmanager: LocalAlertmanager, tmp_path) -> None:
    """A hostile review (2026-12-07): retention ran only while every peer's backlog was empty, so
    one peer down for good kept every resolved alert row (evidence, pseudonyms) and let the
    healthy peer's `sent` map grow. A full re-send never posts a row retention deletes."""
    import socket

    import sqlalchemy as sa

    from pipeline.alerts import state as db
    from pipeline.alerts.alertmanager import AlertmanagerPusher
    from pipeline.alerts.model import GeneratorLinks
    from pipeline.alerts.settings import AlertmanagerSettings

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        down = f"http://127.0.0.1:{closed.getsockname()[1]}"
        rule = f"kept_{uuid.uuid4().hex[:8]}"
        now = [time.time() - 600]
        store, engine, one_peer = _pusher_on(alertmanager, tmp_path, rules_yaml(rule, resolve_after="10s"), now)
        one_peer.close()
        pusher = AlertmanagerPusher(store, AlertmanagerSettings(urls=[alertmanager.url, down], resend_interval_s=60, timeout_s=1),
                                    GeneratorLinks(base_url=""), clock=lambda: now[0])
        try:
            engine.observe([critical_verdict("u_old", request_id=f"{rule}-old")])
            _saved(store, engine)
            pusher.tick()
            now[0] += 300  # u_old ended 290 s ago, past keep_resolved_s (180 s)
            engine.observe([critical_verdict("u_new", request_id=f"{rule}-new")])
            _saved(store, engine)
            pusher.tick()
            assert pusher._peers[1].backlog == 1  # the peer that is down still waits for u_new
            with store.connect() as conn:
                users = [r[0]["user"] for r in conn.execute(sa.select(db.alerts.c.labels))]
            assert users == ["u_new"]
            assert len(pusher._peers[0].sent) == 1
        finally:
            pusher.close()
