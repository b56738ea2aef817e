"""Slack incoming webhook: a text fallback plus Block Kit sections, one per alert (max 10)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from pipeline.alerts.model import WebhookMessage
from pipeline.alerts.receivers.base import Receiver
from pipeline.alerts.transport import post_within

MAX_ALERTS_SHOWN = 10
_ICON = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
# Labels and evidence come from requests (a model name, a user's prompt snippet): in mrkdwn an
# unescaped "<!channel>" pings a channel and "<https://...|text>" is a link, so every
# interpolated value is escaped as Slack asks (&, <, >). Inside a code span a backtick would end
# the span, so it becomes a look-alike (U+02CB) and line breaks become spaces.
_MRKDWN_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_CODE_SPAN = str.maketrans({"`": "\u02cb", "\n": " ", "\r": " "})


def escape(text: str) -> str:
    """``text`` as literal mrkdwn (no mentions, links or dates)."""
    return text.translate(_MRKDWN_ESCAPES)


def code(text: str) -> str:
    """``text`` as one literal mrkdwn code span."""
    return f"`{escape(text.translate(_CODE_SPAN))}`"


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
        labels = " ".join(code(f"{k}={v}") for k, v in sorted(alert.labels.items()) if k != "alertname")
        summary = escape(alert.annotations.get("summary", ""))
        lines = [f"{icon} *{escape(alert.labels.get('alertname', ''))}* {alert.status} — {summary}", labels]
        if alert.annotations.get("evidence"):
            lines.append(f"> {escape(' '.join(alert.annotations['evidence'].split()))}")
        if alert.generatorURL:
            lines.append(f"<{escape(alert.generatorURL)}|drill down>")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}})
    if len(payload.alerts) > MAX_ALERTS_SHOWN:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"+{len(payload.alerts) - MAX_ALERTS_SHOWN} more"}]}
        )
    # The header is plain_text (no markup); the fallback `text` is mrkdwn (notifications).
    return {"text": escape(title), "blocks": blocks}


class SlackReceiver(Receiver):
    name = "slack"

    def send(self, client: httpx.Client, message: WebhookMessage, idempotency_key: str) -> httpx.Response:
        body = json.dumps(render(message), sort_keys=True).encode()
        return post_within(
            client,
            self.settings.url.get_secret_value(),
            content=body,
            headers={"Content-Type": "application/json"},
            timeout_s=self.settings.timeout_s,
        )
