"""The alerting metrics dashboards and alert rules rely on: names, and labels that stay bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from pipeline.alerts.metrics import AlertMetrics


def test_metric_names_and_labels() -> None:
    registry = CollectorRegistry()
    m = AlertMetrics(registry)
    m.fired.labels("crit", "critical").inc()
    m.deliveries.labels("hook", "delivered").inc()
    m.retries.labels("hook").inc()
    m.dead_letters.labels("hook").inc()
    samples = {(s.name, tuple(sorted(s.labels))) for metric in registry.collect() for s in metric.samples}
    assert ("mm_alerts_fired_total", ("rule", "severity")) in samples
    assert ("mm_alert_deliveries_total", ("receiver", "result")) in samples
    assert ("mm_alert_retries_total", ("receiver",)) in samples
    assert ("mm_alert_dead_letters_total", ("receiver",)) in samples
    forbidden = {"user", "user_id", "fingerprint", "idempotency_key", "request_id"}
    assert not any(forbidden & set(labels) for _, labels in samples)
