"""Counters that alert rules read with `increase(...) > 0` exist at 0 from the start.

A labelled series born at its first increment reads as increase() 0 in Prometheus, so
MisuseScorerCrashed, MisuseAlertDeadLettered and MisuseGatewayLogsLost missed the single event
they exist for (a review of the dashboards and rules, 2026-12-07)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from pipeline.alerts.metrics import AlertMetrics
from pipeline.decode import DecodeReason
from pipeline.gateway.tee import GatewayMetrics
from pipeline.metrics import DEAD_LETTER_REASONS, PipelineMetrics
from pipeline.runner import CORRUPT_RECORD
from pipeline.score_worker import SCORER_CRASHED


def _zero(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> bool:
    return registry.get_sample_value(name, labels) == 0.0


def test_every_dead_letter_reason_is_exported_at_zero_before_the_first_one():
    assert {r.value for r in DecodeReason} | {SCORER_CRASHED, CORRUPT_RECORD} <= set(DEAD_LETTER_REASONS)
    metrics = PipelineMetrics()
    for reason in DEAD_LETTER_REASONS:
        assert _zero(metrics.registry, "mm_dead_letters_total", {"reason": reason}), reason


def test_every_gateway_drop_reason_is_exported_at_zero():
    metrics = GatewayMetrics()
    for reason in ("spill_failed", "spill_full", "queue_full", "too_large", "rejected_full", "closed"):
        assert _zero(metrics.registry, "mm_gateway_logs_dropped_total", {"reason": reason}), reason


def test_each_receivers_delivery_counters_are_exported_at_zero():
    metrics = AlertMetrics(receivers=["ops", "oncall"])
    for receiver in ("ops", "oncall"):
        assert _zero(metrics.registry, "mm_alert_dead_letters_total", {"receiver": receiver})
        assert _zero(metrics.registry, "mm_alert_retries_total", {"receiver": receiver})
        assert _zero(metrics.registry, "mm_alert_deliveries_total", {"receiver": receiver, "result": "rejected"})
