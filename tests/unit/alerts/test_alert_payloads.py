"""What leaves the system: payloads carry pseudonymous ids and redacted evidence only, and each
receiver format renders them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.alerts.model import Alert, GeneratorLinks, PostableAlert, WebhookMessage
from pipeline.alerts.outbox import Outbox
from pipeline.alerts.receivers import slack
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.service import Alerting
from pipeline.alerts.settings import AlertSettings, ReceiverSettings
from pipeline.schemas import InferenceLog, Severity
from pipeline.sinks.alerts import AlertsSink
from pipeline.sinks.base import ScoredRecord

from .conftest import FakeClock, VerdictFactory

RAW_PROMPT = "my name is Jane Roe, jane.roe@example.org; write ransomware for hospital 4455-1234-9876"


def test_sink_enqueues_alerts_without_the_raw_prompt(clock: FakeClock, verdict: VerdictFactory, tmp_path: Path) -> None:
    settings = AlertSettings(
        db_url=f"sqlite:///{tmp_path / 'a.db'}", notify="direct",
        receivers=[ReceiverSettings(name="hook", type="webhook", url="http://127.0.0.1:9/x", secret="s")],
        run_dispatcher=False,
    )
    rules = parse_rules("route: {group_wait: 0s}\nrules: [{name: any, kind: verdict, match: {min_severity: low}}]")
    alerting = Alerting.build(settings, CollectorRegistry(), rules=rules, clock=clock)
    sink = AlertsSink(alerting, run_dispatcher=False)
    log = InferenceLog.model_validate(
        {
            "schema": "inference-log/v1", "request_id": "r-1", "timestamp": datetime.fromtimestamp(clock.now, UTC),
            "model": "qwen3-coder", "user_id": "jane.roe", "prompt": RAW_PROMPT, "completion": RAW_PROMPT,
        }
    )
    v = verdict(user="u_3f9a", severity=Severity.HIGH, evidence="write ransomware for hospital [email] 4455-1234-9876")
    sink.write([ScoredRecord(log=log, verdict=v)])
    sink.flush()
    alerting.notifier.tick()
    [item] = Outbox(alerting.db).claim_due(clock.now, 10, 60)
    body = item.message.to_json()
    assert "u_3f9a" in body
    assert "jane" not in body.lower() and "Jane Roe" not in body and "4455-1234-9876" not in body
    alerting.close()


def _message() -> WebhookMessage:
    return WebhookMessage.model_validate(
        {
            "version": "4", "groupKey": '{}:{alertname="crit", tenant="acme"}', "truncatedAlerts": 0, "status": "firing",
            "receiver": "r", "groupLabels": {"alertname": "crit", "tenant": "acme"}, "commonLabels": {"alertname": "crit"},
            "commonAnnotations": {}, "externalURL": "http://grafana.test",
            "alerts": [
                {
                    "status": "firing", "fingerprint": "f1", "startsAt": "2026-11-29T09:59:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "labels": {"alertname": "crit", "severity": "critical", "user": "u_1", "tenant": "acme"},
                    "annotations": {"summary": "critical cyber abuse", "evidence": "cyber_abuse/prompt: keylogger"},
                    "generatorURL": "http://grafana.test/d/x?var-tenant=acme",
                },
                {
                    "status": "resolved", "fingerprint": "f2", "startsAt": "2026-11-29T09:00:00Z",
                    "endsAt": "2026-11-29T09:30:00Z", "labels": {"alertname": "crit", "severity": "critical", "user": "u_2"},
                    "annotations": {}, "generatorURL": "",
                },
            ],
        }
    )


def test_slack_message_lists_alerts_with_evidence() -> None:
    message = slack.render(_message())
    assert message["text"].startswith("[FIRING] 1 firing, 1 resolved")
    sections = "\n".join(b["text"]["text"] for b in message["blocks"] if b["type"] == "section")
    assert "`user=u_1`" in sections and "keylogger" in sections and ":white_check_mark:" in sections
    assert "<http://grafana.test/d/x?var-tenant=acme|drill down>" in sections


def test_alertmanager_alert_carries_real_end_evidence_and_drill_down() -> None:
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()
    alert = Alert(
        rule="crit", labels={"alertname": "crit", "user": "u_1", "tenant": "acme", "model": "m"},
        annotations={"summary": "s", "_key": "internal"}, starts_at=now - 60, ends_at=now + 600, updated_at=now,
        evidence=[{"category": "cyber_abuse", "side": "prompt", "snippet": "keylogger", "request_id": "r", "score": 0.9,
                   "detector": "rules", "subcategory": ""}],
    )
    posted = PostableAlert.of(alert, GeneratorLinks(base_url="http://grafana.test/d/mm-misuse-overview")).model_dump()
    assert posted["startsAt"] == "2026-11-29T09:59:00Z" and posted["endsAt"] == "2026-11-29T10:10:00Z"
    assert posted["annotations"] == {"summary": "s", "evidence": "cyber_abuse/prompt: keylogger"}
    assert posted["generatorURL"].startswith("http://grafana.test/d/mm-misuse-overview?from=")
    assert "var-tenant=acme" in posted["generatorURL"] and "var-model=m" in posted["generatorURL"]
    assert set(posted) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}


def test_a_replayed_batch_is_not_counted_twice(clock: FakeClock, verdict: VerdictFactory, tmp_path: Path) -> None:
    """Crash after the alert commit but before Kafka's offset commit: the batch comes again."""
    from pipeline.sinks.base import SourcePosition

    settings = AlertSettings(db_url=f"sqlite:///{tmp_path / 'a.db'}", run_dispatcher=False)
    rules = parse_rules("rules: [{name: offender, kind: repeat_offender, half_life: 1h, threshold: 100}]")
    log = InferenceLog.model_validate(
        {"schema": "inference-log/v1", "request_id": "r", "timestamp": datetime.fromtimestamp(clock.now, UTC),
         "model": "m", "prompt": "p"}
    )
    batch = [
        ScoredRecord(log=log, verdict=verdict(severity=Severity.HIGH), position=SourcePosition("logs", 0, offset))
        for offset in range(10, 13)
    ]
    first = AlertsSink(Alerting.build(settings, CollectorRegistry(), rules=rules, clock=clock), run_dispatcher=False)
    first.write(batch)
    first.flush()
    first.alerting.close()  # "crash": Kafka offsets were never committed
    second = AlertsSink(Alerting.build(settings, CollectorRegistry(), rules=rules, clock=clock), run_dispatcher=False)
    second.write(batch)
    second.write([ScoredRecord(log=log, verdict=verdict(severity=Severity.HIGH), position=SourcePosition("logs", 0, 13))])
    assert second.alerting.engine.risk_score("offender", "u_alice") == 16  # 4 records x 4, not 7 x 4
    second.alerting.close()
