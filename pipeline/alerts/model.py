"""Typed values passed between the engine, the notifier and the receivers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas import EVIDENCE_MAX_CHARS

NOTIFICATION_SCHEMA = "mm-alert-notification/v1"


def fingerprint(labels: dict[str, str]) -> str:
    """Stable identity of an alert: a hash of its sorted label set (as in Alertmanager)."""
    blob = json.dumps(labels, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass
class Alert:
    """One alert as the engine asserts it. Firing while ``now < ends_at``, resolved after.

    ``ends_at`` is always set: rules extend it while their condition holds, so an alert whose
    source stops asserting it resolves by itself (Alertmanager's resolve_timeout idea).
    """

    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float
    updated_at: float
    evidence: list[dict[str, str | float]] = field(default_factory=list)
    receivers: list[str] = field(default_factory=list)

    @cached_property
    def fingerprint(self) -> str:
        # Labels are fixed when an alert is created (they are its identity), so cache it.
        return fingerprint(self.labels)

    def firing(self, now: float) -> bool:
        return now < self.ends_at


class EvidenceItem(BaseModel):
    """A redacted snippet of one finding; never the prompt or completion itself."""

    model_config = ConfigDict(frozen=True)
    request_id: str
    category: str
    subcategory: str | None = None
    side: str
    score: float
    detector: str
    snippet: str = Field(default="", max_length=EVIDENCE_MAX_CHARS)


class AlertPayload(BaseModel):
    status: Literal["firing", "resolved"]
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None = Field(description="Set when resolved")
    evidence: list[EvidenceItem] = Field(default_factory=list)


class NotificationPayload(BaseModel):
    """The body of a generic webhook delivery; other receivers render from it."""

    schema_: Literal["mm-alert-notification/v1"] = Field(default=NOTIFICATION_SCHEMA, alias="schema")
    idempotency_key: str
    receiver: str
    status: Literal["firing", "resolved"]
    group_key: str
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    alerts: list[AlertPayload]
    created_at: datetime
    # Alertmanager receivers need an expiry for firing alerts (they are not re-sent every
    # evaluation as Prometheus does); the notifier sets it from the route's intervals.
    firing_valid_s: float = 0.0

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)
