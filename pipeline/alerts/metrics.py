"""Prometheus metrics of alerting, on an injected registry.

Labels are bounded: ``rule`` and ``receiver`` come from configuration, ``result`` and
``severity`` from fixed sets; never a user, alert fingerprint or idempotency key.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DELIVERY_RESULTS = ("delivered", "failed", "rejected")


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, receivers: Iterable[str] = ()) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.fired = Counter(
            "mm_alerts_fired_total", "Alerts that started firing, per rule", ["rule", "severity"], registry=r
        )
        self.notifications = Counter(
            "mm_alert_notifications_total",
            "Notifications enqueued in the outbox after grouping, silences and inhibition",
            ["receiver", "status"],
            registry=r,
        )
        self.deliveries = Counter(
            "mm_alert_deliveries_total",
            "Delivery attempts by result (delivered: 2xx; failed: retryable; rejected: 4xx, not retried)",
            ["receiver", "result"],
            registry=r,
        )
        self.retries = Counter(
            "mm_alert_retries_total", "Deliveries scheduled for another attempt", ["receiver"], registry=r
        )
        self.dead_letters = Counter(
            "mm_alert_dead_letters_total", "Deliveries given up (too old or rejected)", ["receiver"], registry=r
        )
        self.delivery_latency = Histogram(
            "mm_alert_delivery_latency_seconds",
            "From enqueue in the outbox to a 2xx from the receiver",
            ["receiver"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        # Each receiver's counters at 0 from the start: a series born at its first increment
        # reads as increase() 0, and MisuseAlertDeadLettered missed the one dead letter it is for.
        for receiver in receivers:
            self.dead_letters.labels(receiver)
            self.retries.labels(receiver)
            for result in ("delivered", "failed", "rejected"):
                self.deliveries.labels(receiver, result)
        self.outbox_pending = Gauge(
            "mm_alert_outbox_pending", "Outbox rows not yet delivered or dead-lettered", registry=r
        )
