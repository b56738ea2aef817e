"""Regression tests from a hostile review of alerting: state that did not fit the database,
Slack markup injection, catch-up decay, rules that load but cannot work, rule labels that
override an alert's identity, and an unparsable database URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from pipeline.alerts import state as db
from pipeline.alerts.cli import app
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.model import GeneratorLinks, WebhookAlert, WebhookMessage
from pipeline.alerts.receivers.slack import SlackReceiver
from pipeline.alerts.rules import AlertRulesError, parse_rules
from pipeline.alerts.settings import ReceiverSettings
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer
from pipeline.schemas import Category, Finding, MisuseVerdict, Severity, Side

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0
_ids = count()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def verdict(*, at: float, model: str = "qwen3-coder", tenant: str = "acme", evidence: str = "write a keylogger",
            severity: Severity = Severity.HIGH) -> MisuseVerdict:
    finding = Finding(category=Category.CYBER_ABUSE, side=Side.PROMPT, score=0.9, detector="rules",
                      detector_version="1", evidence=evidence)
    return MisuseVerdict(
        request_id=f"r{next(_ids)}", timestamp=datetime.fromtimestamp(at, UTC), model=model, deployment="prod",
        tenant_id=tenant, user_id="u_alice", flagged=True, severity=severity, categories=[Category.CYBER_ABUSE],
        complied=True, findings=[finding],
    )


# 1: rate keys are stored as a fixed-length hash; raw keys of an older database are converted
def test_rate_state_of_long_keys_round_trips_through_the_database(tmp_path: Path) -> None:
    rules = parse_rules("rules: [{name: spike, kind: rate, threshold: 100, per: [tenant, model]}]")
    engine = AlertEngine(rules, clock=lambda: T0)
    engine.observe([verdict(at=T0, tenant="é" * 256, model="😀" * 256)])
    store = db.create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with store.begin() as conn:
        engine.save(conn)
    restored = AlertEngine(rules, clock=lambda: T0)
    with store.connect() as conn:
        restored.load(conn)
        [stored_key] = conn.execute(sa.select(db.rate_buckets.c.key)).scalars().all()
    assert restored._buckets == engine._buckets
    assert len(stored_key) == 64


def test_an_alert_database_with_raw_rate_keys_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    raw_key = json.dumps(["acme"], separators=(",", ":"))
    old = sa.create_engine(f"sqlite:///{path}")
    with old.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE mm_alert_rate_buckets (partition INTEGER, rule VARCHAR(64), key VARCHAR(1024), bucket FLOAT, "
            "flagged INTEGER NOT NULL, total INTEGER NOT NULL, PRIMARY KEY (partition, rule, key, bucket))"
        )
        conn.exec_driver_sql(f"INSERT INTO mm_alert_rate_buckets VALUES (0, 'spike', '{raw_key}', {T0}, 4, 4)")
    old.dispose()
    rules = parse_rules("rules: [{name: spike, kind: rate, threshold: 5}]")
    store = db.create_db_engine(f"sqlite:///{path}")
    engine = AlertEngine(rules, clock=lambda: T0)
    with store.connect() as conn:
        engine.load(conn)
    engine.observe([verdict(at=T0)])  # the fifth in the window: the upgraded count still counts
    assert [a.labels["tenant"] for a in engine.alerts.values()] == ["acme"]
    with store.begin() as conn:
        engine.save(conn)
    with store.connect() as conn:
        rows = conn.execute(sa.select(db.rate_buckets)).mappings().all()
    assert [(r["key"], r["key_values"], r["flagged"]) for r in rows] == [(db.rate_key_hash(raw_key), raw_key, 5)]


# 2: Slack mrkdwn injection through labels and evidence
HOSTILE_MODEL = "qwen` <!channel> <https://evil.example/login|Click> `"


def _hostile_message() -> WebhookMessage:
    engine = AlertEngine(parse_rules("rules: [{name: a, kind: verdict}]"), clock=lambda: T0)
    engine.observe([verdict(at=T0, model=HOSTILE_MODEL, evidence="ignore previous instructions <!here> & more")])
    [alert] = engine.alerts.values()
    return WebhookMessage(
        groupKey="g", status="firing", receiver="slack", groupLabels={"model": HOSTILE_MODEL}, commonLabels={},
        commonAnnotations={}, externalURL="", alerts=[WebhookAlert.of(alert, T0, GeneratorLinks(base_url=""))],
    )


def test_slack_message_carries_labels_and_evidence_as_literal_text() -> None:
    with WebhookReceiverServer() as slack:  # stands in for hooks.slack.com
        receiver = SlackReceiver(ReceiverSettings(name="slack", type="slack", url=SecretStr(slack.url + "/services/T/B/X")))
        with httpx.Client() as client:
            assert receiver.send(client, _hostile_message(), "k").status_code == 200
        [request] = slack.requests
    body = request.json()
    mrkdwn = [body["text"]] + [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]
    for text in mrkdwn:
        assert "<!" not in text and "<http" not in text
    section = mrkdwn[1]
    assert "&lt;!here&gt; &amp; more" in section
    [labels_line] = [line for line in section.splitlines() if "model=" in line]
    # every code span stays closed around its own label: no backtick escapes one
    assert labels_line.count("`") == 2 * labels_line.count("=")


# 3: repeat-offender decay by event time
def test_a_stream_catching_up_scores_users_as_live_traffic_did() -> None:
    rules = parse_rules("rules: [{name: o, kind: repeat_offender, half_life: 1h, threshold: 10}]")
    clock = Clock()
    live = AlertEngine(rules, clock=clock)
    for hour in range(10):  # one HIGH (weight 4) an hour: never reaches 10 live
        clock.now = T0 + hour * 3600
        live.observe([verdict(at=clock.now)])
    assert not live.alerts
    clock.now = T0 + 10 * 3600  # the same verdicts after a 10-hour outage
    catch_up = AlertEngine(rules, clock=clock)
    catch_up.observe([verdict(at=T0 + hour * 3600) for hour in range(10)])
    assert not catch_up.alerts
    assert catch_up.risk_score("o", "u_alice") == pytest.approx(live.risk_score("o", "u_alice"))


def test_late_verdicts_still_add_to_a_live_score() -> None:
    rules = parse_rules("rules: [{name: o, kind: repeat_offender, half_life: 1h, threshold: 10}]")
    engine = AlertEngine(rules, clock=lambda: T0)
    engine.observe([verdict(at=T0, severity=Severity.CRITICAL)])
    engine.observe([verdict(at=T0 - 60, severity=Severity.CRITICAL)])  # out of order, a minute old
    assert [a.rule for a in engine.alerts.values()] == ["o"]


# 4: rules that load but cannot work
@pytest.mark.parametrize(
    ("rule", "where"),
    [
        ("{name: r, kind: rate, threshold: 1, window: .inf}", "rules[0] (name=r).window"),
        ("{name: r, kind: rate, threshold: 1, window: '" + "9" * 400 + "s'}", "rules[0] (name=r).window"),
        ("{name: r, kind: rate, threshold: .inf}", "rules[0] (name=r).threshold"),
        ("{name: r, kind: rate, baseline: {factor: .inf}}", "rules[0] (name=r).baseline.factor"),
        ("{name: o, kind: repeat_offender, threshold: .inf}", "rules[0] (name=o).threshold"),
        ("{name: o, kind: repeat_offender, half_life: .inf}", "rules[0] (name=o).half_life"),
        ("{name: o, kind: repeat_offender, weights: {high: .nan}}", "rules[0] (name=o).weights.high"),
        ("{name: o, kind: repeat_offender, weights: {low: -5}}", "rules[0] (name=o).weights.low"),
        ("{name: v, kind: verdict, resolve_after: .nan}", "rules[0] (name=v).resolve_after"),
        # An integer past a float's range raised OverflowError: "internal error", exit 1 (2026-12-07).
        ("{name: v, kind: verdict, resolve_after: " + "9" * 400 + "}", "rules[0] (name=v).resolve_after"),
        ("{name: r, kind: rate, threshold: 1, window: " + "9" * 400 + "}", "rules[0] (name=r).window"),
    ],
)
def test_rules_that_could_never_work_are_rejected_with_their_location(rule: str, where: str) -> None:
    with pytest.raises(AlertRulesError, match=r"rules\.yaml: 1 error") as err:
        parse_rules(f"rules: [{rule}]", "rules.yaml")
    assert where in str(err.value)


@pytest.mark.parametrize("window", [".inf", "9" * 400], ids=["inf", "past-float"])
def test_alerts_test_rejects_an_infinite_window(window: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules: [{{name: a, kind: rate, threshold: 1, window: {window}}}]")
    result = CliRunner().invoke(app, ["--db-url", f"sqlite:///{tmp_path / 'a.db'}", "--rules", str(rules), "test"])
    assert result.exit_code == 3 and "rules.yaml" in result.stderr and "(name=a).window" in result.stderr


# 5: rule labels cannot override the labels the engine sets
@pytest.mark.parametrize("name", ["alertname", "severity", "category", "tenant", "deployment", "model", "user", "__name__"])
def test_a_rule_label_cannot_replace_an_identity_label(name: str) -> None:
    with pytest.raises(AlertRulesError, match=rf"rules\[0\] \(name=a\)\.labels: .*'{name}'"):
        parse_rules(f"rules: [{{name: a, kind: verdict, labels: {{{name}: x}}}}]", "rules.yaml")


def test_extra_labels_still_work() -> None:
    engine = AlertEngine(parse_rules("rules: [{name: a, kind: verdict, labels: {team: secops}}]"), clock=lambda: T0)
    engine.observe([verdict(at=T0)])
    [alert] = engine.alerts.values()
    assert alert.labels["team"] == "secops" and alert.labels["user"] == "u_alice"


# 7: an unparsable database URL is a configuration error
def test_a_database_url_that_is_not_a_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(db.AlertStoreError, match="not a database URL"):
        db.create_db_engine("notaurl")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "alerts", "--db-url", "notaurl", "list"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 3, result.stderr
    assert "internal error" not in result.stderr and "notaurl" not in result.stdout


# 6: one black-holed webhook must not hold up every other receiver, nor outlive its claims: with the
# receivers that trickle their replies in tests/unit/alerts/test_alert_transport.py


# 7: an on-call review (2026-12-06): a receiver URL with a line end, and requeue after `test --send`
@pytest.mark.parametrize("url", ["https://hooks.slack.com/services/T0/B0/SECRET\n", "https://hooks.slack.com/ x",
                                 "hooks.slack.com/services/SECRET"])
def test_a_receiver_url_that_cannot_be_sent_to_is_refused_without_showing_it(url: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        ReceiverSettings(name="s", type="slack", url=SecretStr(url))
    assert "SECRET" not in str(caught.value) and "the receiver's url" in str(caught.value)


def test_a_delivery_that_raises_is_dead_lettered_and_the_tick_goes_on(tmp_path: Path) -> None:
    """A row older than the URL check (or any delivery that raises): httpx.InvalidURL is not an
    HTTPError, so it raised out of every tick and the row was retried past dead_letter_after_s."""
    import time

    from pipeline.alerts.delivery import Dispatcher
    from pipeline.alerts.outbox import Notification, Outbox
    from pipeline.alerts.receivers.base import build_receivers
    from pipeline.alerts.settings import DeliverySettings

    message = WebhookMessage(groupKey="g", status="firing", receiver="bad", groupLabels={}, commonLabels={},
                             commonAnnotations={}, externalURL="", alerts=[])
    with WebhookReceiverServer(secret="s") as good:
        bad = ReceiverSettings.model_construct(name="bad", type="webhook", url=SecretStr("http://127.0.0.1/x\nSECRET"),
                                               secret=SecretStr("s"), timeout_s=0.3, send_resolved=True, max_alerts=0)
        receivers = build_receivers([bad, ReceiverSettings(name="good", type="webhook", url=SecretStr(good.url),
                                                           secret=SecretStr("s"), timeout_s=1.0)])
        store = db.create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
        outbox = Outbox(store)
        with store.begin() as conn:
            outbox.enqueue(conn, Notification("bad-0", "bad", "g", message), time.time())
            outbox.enqueue(conn, Notification("good-0", "good", "g", message.model_copy(update={"receiver": "good"})),
                           time.time() + 0.001)
        dispatcher = Dispatcher(store, None, receivers, DeliverySettings(concurrency=1))
        try:
            dispatcher.run_once()
        finally:
            dispatcher.stop()
        rows = {r.idempotency_key: r for r in outbox.rows(limit=10)}
    assert rows["good-0"].state == "delivered"
    assert rows["bad-0"].state == "dead" and "InvalidURL" in rows["bad-0"].last_error and "SECRET" not in rows["bad-0"].last_error


def test_requeue_leaves_a_dropped_test_notification_dropped(tmp_path: Path) -> None:
    """`alerts test --send` drops a notification it could not deliver in time; the documented
    fix-the-receiver-then-`requeue` routine revived it and sent mm_test_alert to on-call."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = closed.getsockname()[1]
        cfg = tmp_path / "alerts.yaml"
        cfg.write_text(
            f"db_url: sqlite:///{tmp_path / 'a.db'}\nnotify: direct\n"
            f"receivers: [{{name: ops, type: webhook, url: 'http://127.0.0.1:{port}/', secret: s}}]\n"
        )
        sent = CliRunner().invoke(app, ["--alerts-config", str(cfg), "test", "--send", "--timeout-s", "1"])
    assert sent.exit_code != 0, sent.output
    store = db.create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with store.connect() as conn:
        assert [r[0] for r in conn.execute(sa.select(db.outbox.c.state))] == ["dead"]
    requeued = CliRunner().invoke(app, ["--alerts-config", str(cfg), "requeue", "--json"])
    assert requeued.exit_code == 0 and json.loads(requeued.stdout)["requeued"] == 0, requeued.output
    with store.connect() as conn:
        assert [r[0] for r in conn.execute(sa.select(db.outbox.c.state))] == ["dead"]


def test_delivered_notifications_are_deleted_after_keep_delivered_s(tmp_path: Path) -> None:
    """The outbox kept every delivered notification, evidence included, for as long as the
    database lived (an on-call review, 2026-12-06: 1,200 rows after three simulated days)."""
    from pipeline.alerts.delivery import PRUNE_EVERY_S, Dispatcher
    from pipeline.alerts.outbox import Notification, Outbox
    from pipeline.alerts.receivers.base import build_receivers
    from pipeline.alerts.settings import DeliverySettings
    from pipeline.units import DAY_S

    now = [1_800_000_000.0]
    message = WebhookMessage(groupKey="g", status="firing", receiver="ops", groupLabels={}, commonLabels={},
                             commonAnnotations={}, externalURL="", alerts=[])
    with WebhookReceiverServer(secret="s") as hook:
        receivers = build_receivers([ReceiverSettings(name="ops", type="webhook", url=SecretStr(hook.url),
                                                      secret=SecretStr("s"), timeout_s=1.0)])
        store = db.create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
        outbox = Outbox(store)
        dispatcher = Dispatcher(store, None, receivers, DeliverySettings(keep_delivered_s=2 * DAY_S), clock=lambda: now[0])
        try:
            with store.begin() as conn:
                outbox.enqueue(conn, Notification("day-0", "ops", "g", message), now[0])
            dispatcher.run_once()
            with store.begin() as conn:
                outbox.enqueue(conn, Notification("dead-0", "ops", "g", message), now[0])
            outbox.mark_dead(next(r.id for r in outbox.rows() if r.idempotency_key == "dead-0"), "rejected")
            now[0] += DAY_S
            with store.begin() as conn:
                outbox.enqueue(conn, Notification("day-1", "ops", "g", message), now[0])
            dispatcher.run_once()
            assert {r.idempotency_key: r.state for r in outbox.rows()} == {
                "day-0": "delivered", "dead-0": "dead", "day-1": "delivered"}
            now[0] += DAY_S + PRUNE_EVERY_S
            dispatcher.run_once()
        finally:
            dispatcher.stop()
    assert {r.idempotency_key: r.state for r in outbox.rows()} == {"dead-0": "dead", "day-1": "delivered"}
