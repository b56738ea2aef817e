"""Slack incoming webhook: a text fallback plus Block Kit sections, one per alert (max 10)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from pipeline.alerts.model import WebhookMessage
from pipeline.alerts.receivers.base import Receiver

MAX_ALERTS_SHOWN = 10
_ICON = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def render(payload: WebhookMessage) -> dict[str, Any]:
    firing = sum(1 for a in payload.alerts if a.status == "firing")
    resolved = len(payload.alerts) - firing
    title_labels = ", ".join(f"{k}={v}" for k, v in sorted(payload.groupLabels.items()))
    title = f"[{payload.status.upper()}] {firing} firing, {resolved} resolved: {title_labels or 'misuse-monitor'}"
    if payload.truncatedAlerts:
        title += f" (+{payload.truncatedAlerts} not shown)"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    for alert in payload.alerts[:MAX_ALERTS_SHOWN]:
        icon = ":white_check_mark:" if alert.status == "resolved" else _ICON.get(alert.labels.get("severity", ""), "")
        labels = " ".join(f"`{k}={v}`" for k, v in sorted(alert.labels.items()) if k != "alertname")
        lines = [f"{icon} *{alert.labels.get('alertname', '')}* {alert.status} — {alert.annotations.get('summary', '')}", labels]
        if alert.annotations.get("evidence"):
            lines.append(f"> {alert.annotations['evidence']}")
        if alert.generatorURL:
            lines.append(f"<{alert.generatorURL}|drill down>")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}})
    if len(payload.alerts) > MAX_ALERTS_SHOWN:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"+{len(payload.alerts) - MAX_ALERTS_SHOWN} more"}]}
        )
    return {"text": title, "blocks": blocks}


class SlackReceiver(Receiver):
    name = "slack"

    def send(self, client: httpx.Client, message: WebhookMessage, idempotency_key: str) -> httpx.Response:
        body = json.dumps(render(message), sort_keys=True).encode()
        return client.post(
            self.settings.url.get_secret_value(),
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=self.settings.timeout_s,
        )
