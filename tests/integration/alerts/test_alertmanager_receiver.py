"""The Alertmanager v2 receiver against a real Alertmanager: alerts arrive with our labels,
Alertmanager's own routing groups them, and resolutions reach it."""

from __future__ import annotations

import time
import uuid

import pytest

from pipeline.alerts.settings import ReceiverSettings
from pipeline.localinfra.alertmanager import LocalAlertmanager, get_alerts
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

from .conftest import AlertingFactory, critical_verdict


def forwarded_for(server: WebhookReceiverServer, alertname: str) -> list[dict]:
    out = []
    for req in list(server.requests):
        body = req.json()
        if body.get("groupLabels", {}).get("alertname") == alertname:
            out.append(body)
    return out


@pytest.mark.slow
def test_alerts_reach_alertmanager_and_its_routing_groups_them(
    alertmanager: LocalAlertmanager, am_forwarded: WebhookReceiverServer, build_alerting: AlertingFactory
) -> None:
    rule = f"crit_{uuid.uuid4().hex[:8]}"
    alerting = build_alerting(
        f"""
route:
  group_by: [alertname, tenant]
  receivers: {{am: {{group_by: ["..."], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}}}
rules:
  - {{name: {rule}, kind: verdict, severity: critical, resolve_after: 3s, match: {{min_severity: critical}}}}
""",
        [ReceiverSettings(name="am", type="alertmanager", url=alertmanager.url)],
    )
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

    # Alertmanager's route groups by (alertname, tenant): two notifications, 3 + 1 alerts.
    assert am_forwarded.wait_for(lambda s: len(forwarded_for(s, rule)) >= 2, timeout_s=20)
    firing = {n["groupLabels"]["tenant"]: len(n["alerts"]) for n in forwarded_for(am_forwarded, rule) if n["status"] == "firing"}
    assert firing == {"acme": 3, "zeta": 1}

    # No new verdicts: our alerts resolve after 3 s, the resolution is sent, Alertmanager forwards it.
    assert am_forwarded.wait_for(
        lambda s: {n["groupLabels"]["tenant"] for n in forwarded_for(s, rule) if n["status"] == "resolved"} == {"acme", "zeta"},
        timeout_s=30,
    )
    assert held() == [] or all(a["status"]["state"] != "active" for a in held())
