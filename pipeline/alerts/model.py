"""Typed values passed between the engine, the notifier and the receivers.

Alerts leave the system in Alertmanager's shapes only, so tooling written for Alertmanager reads
them unchanged: :class:`PostableAlert` is one element of ``POST /api/v2/alerts``, and
:class:`WebhookMessage` is Alertmanager's webhook body, version 4, field for field. The
fingerprint is Alertmanager's too (FNV-1a 64 over the sorted label set), so an alert has the same
id in ``amtool alert query``, in our database and in a direct webhook.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF
# Go's zero time: Alertmanager's webhook shows it as endsAt of alerts that are still firing.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint (prometheus/common ``LabelSet.Fingerprint``): FNV-1a 64
    over name, 0xff, value, 0xff of the labels sorted by name, as 16 hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8") + bytes([_SEPARATOR]):
                h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def label_set_string(labels: dict[str, str]) -> str:
    """``{a="x", b="y"}`` as Alertmanager prints a label set (sorted, Go-quoted values)."""
    return "{" + ", ".join(f"{k}={json.dumps(labels[k], ensure_ascii=False)}" for k in sorted(labels)) + "}"


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def rfc3339(ts: float) -> str:
    return to_datetime(ts).isoformat().replace("+00:00", "Z")


@dataclass
class Alert:
    """One alert as the engine asserts it. Firing while ``now < ends_at``, resolved after.

    ``ends_at`` is always set: rules extend it while their condition holds, so an alert whose
    source stops asserting it resolves by itself (Alertmanager's resolve_timeout idea), and it
    is the ``endsAt`` Alertmanager gets. ``partition`` is the input partition that owns the
    alert's state (see docs/alerting.md, "Scaling out").
    """

    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float
    updated_at: float
    evidence: list[dict[str, str | float]] = field(default_factory=list)
    receivers: list[str] = field(default_factory=list)
    partition: int = 0

    @cached_property
    def fingerprint(self) -> str:
        # Labels are fixed when an alert is created (they are its identity), so cache it.
        return fingerprint(self.labels)

    def firing(self, now: float) -> bool:
        return now < self.ends_at

    @property
    def sent_ends_at(self) -> float:
        """``ends_at`` as receivers get it: never before the start. After the clock steps back, a
        resolution can be; Alertmanager refuses such an alert (HTTP 400 "start time must be before
        end time")."""
        return max(self.ends_at, self.starts_at)

    def public_annotations(self) -> dict[str, str]:
        """Annotations as they leave the system: internal ``_`` keys dropped, evidence folded
        into one ``evidence`` annotation (Alertmanager annotations are strings)."""
        out = {k: v for k, v in self.annotations.items() if not k.startswith("_")}
        if self.evidence:
            out["evidence"] = " | ".join(f"{e['category']}/{e['side']}: {e['snippet']}" for e in self.evidence[-3:])
        return out


class GeneratorLinks(BaseModel):
    """Builds ``generatorURL``: a drill-down on the misuse overview dashboard, filtered by the
    alert's tenant, deployment and model and covering the hour before it started."""

    model_config = ConfigDict(frozen=True)
    base_url: str

    def url(self, alert: Alert) -> str:
        if not self.base_url:
            return ""
        params: dict[str, str] = {
            "from": str(int((alert.starts_at - 3600) * 1000)),
            "to": str(int((alert.ends_at + 600) * 1000)),
        }
        for label in ("tenant", "deployment", "model"):  # the overview's template variables
            if alert.labels.get(label):
                params[f"var-{label}"] = alert.labels[label]
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}{urlencode(params)}"


class PostableAlert(BaseModel):
    """One element of Alertmanager's ``POST /api/v2/alerts`` body."""

    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: str  # noqa: N815 - Alertmanager's field names
    endsAt: str  # noqa: N815
    generatorURL: str  # noqa: N815

    @classmethod
    def of(cls, alert: Alert, links: GeneratorLinks) -> PostableAlert:
        return cls(
            labels=alert.labels, annotations=alert.public_annotations(), startsAt=rfc3339(alert.starts_at),
            endsAt=rfc3339(alert.sent_ends_at), generatorURL=links.url(alert),
        )


class WebhookAlert(BaseModel):
    """One alert of an Alertmanager webhook message."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: str  # noqa: N815
    endsAt: str  # noqa: N815
    generatorURL: str  # noqa: N815
    fingerprint: str

    @classmethod
    def of(cls, alert: Alert, now: float, links: GeneratorLinks) -> WebhookAlert:
        firing = alert.firing(now)
        return cls(
            status="firing" if firing else "resolved", labels=alert.labels, annotations=alert.public_annotations(),
            startsAt=rfc3339(alert.starts_at), endsAt=GO_ZERO_TIME if firing else rfc3339(alert.sent_ends_at),
            generatorURL=links.url(alert), fingerprint=alert.fingerprint,
        )


class WebhookMessage(BaseModel):
    """Alertmanager's webhook body, version 4 (``notify/webhook.Message``), field for field.

    The direct notifier sends exactly this; its idempotency key and HMAC signature travel in
    headers, so a receiver written for Alertmanager reads our body unchanged.
    """

    model_config = ConfigDict(extra="forbid")
    version: Literal["4"] = "4"
    groupKey: str  # noqa: N815
    truncatedAlerts: int = Field(default=0, ge=0)  # noqa: N815
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str]  # noqa: N815
    commonLabels: dict[str, str]  # noqa: N815
    commonAnnotations: dict[str, str]  # noqa: N815
    externalURL: str  # noqa: N815
    alerts: list[WebhookAlert]

    def to_json(self) -> str:
        return self.model_dump_json()
