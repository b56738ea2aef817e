"""Alertmanager v2 API (POST /api/v2/alerts), so teams running Alertmanager keep their routing.

Alertmanager identifies an alert by its label set, so a re-sent notification updates the same
alert instead of duplicating it. Firing alerts get ``endsAt`` = now + the route's
repeat_interval + group_interval: we do not re-send every evaluation as Prometheus does, so
without it Alertmanager's resolve_timeout would resolve them early. Resolved alerts carry their
real ``endsAt``. The ``url`` is Alertmanager's base URL (http://host:9093).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from pipeline.alerts.model import NotificationPayload, to_datetime
from pipeline.alerts.receivers.base import Receiver


def _rfc3339(ts: float) -> str:
    return to_datetime(ts).isoformat().replace("+00:00", "Z")


def render(payload: NotificationPayload, now: float) -> list[dict[str, Any]]:
    out = []
    for alert in payload.alerts:
        annotations = dict(alert.annotations)
        if alert.evidence:
            annotations["evidence"] = " | ".join(f"{e.category}/{e.side}: {e.snippet}" for e in alert.evidence[:3])
        annotations["mm_idempotency_key"] = payload.idempotency_key
        ends_at = alert.ends_at.timestamp() if alert.ends_at is not None else now + payload.firing_valid_s
        out.append(
            {
                "labels": alert.labels,
                "annotations": annotations,
                "startsAt": _rfc3339(alert.starts_at.timestamp()),
                "endsAt": _rfc3339(ends_at),
            }
        )
    return out


class AlertmanagerReceiver(Receiver):
    name = "alertmanager"

    def send(self, client: httpx.Client, payload: NotificationPayload, now: float) -> httpx.Response:
        url = self.settings.url.get_secret_value().rstrip("/") + "/api/v2/alerts"
        body = json.dumps(render(payload, now), sort_keys=True).encode()
        return client.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=self.settings.timeout_s)
