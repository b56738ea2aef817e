"""Prometheus metrics of the streaming job, on an injected registry.

Names carry units or ``_total``; labels are bounded (category, severity, side, model,
deployment, tenant, reason, sink, detector, topic, partition) and never a user or
request id. Tenants, models and deployments are few per installation; a guard caps
them anyway (``max_label_values``) so one bad gateway cannot explode cardinality.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

OTHER = "__other__"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


@dataclass
class LabelGuard:
    """Caps the distinct values one label may take; later values become ``__other__``."""

    max_values: int
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, value: str | None) -> str:
        value = value or "unknown"
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.max_values:
                self._seen.add(value)
                return value
        return OTHER


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_label_values: int = 200) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.guard_model = LabelGuard(max_label_values)
        self.guard_deployment = LabelGuard(max_label_values)
        self.guard_tenant = LabelGuard(max_label_values)

        self.records_consumed = Counter(
            "mm_records_consumed_total", "Records read from the input topic", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            "mm_dead_letters_total", "Records routed to the dead-letter topic", ["reason"], registry=r
        )
        self.verdicts = Counter(
            "mm_verdicts_total",
            "Verdicts written, by outcome",
            ["model", "deployment", "tenant", "flagged", "severity"],
            registry=r,
        )
        self.flagged = Counter(
            "mm_flagged_total",
            "Flagged verdicts per category (a verdict counts once per category)",
            ["category", "model", "deployment", "tenant", "severity", "complied"],
            registry=r,
        )
        self.findings = Counter(
            "mm_findings_total", "Findings by category and side", ["category", "side", "detector"], registry=r
        )
        self.finding_score = Histogram(
            "mm_finding_score",
            "Calibrated scores of reported findings",
            ["category", "side"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "mm_batch_duration_seconds", "Wall time per micro-batch, poll excluded", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_records = Histogram(
            "mm_batch_records", "Records per micro-batch", buckets=(1, 8, 32, 64, 128, 256, 512, 1024), registry=r
        )
        self.detector_duration = Histogram(
            "mm_detector_duration_seconds", "Detector time per micro-batch", ["detector"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.sink_flush_duration = Histogram(
            "mm_sink_flush_duration_seconds", "write+flush time per sink and batch", ["sink"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.detector_errors = Counter(
            "mm_detector_errors_total", "Records (or sides) a detector could not judge, e.g. unreadable guard answers",
            ["detector"], registry=r,
        )
        self.sink_errors = Counter("mm_sink_errors_total", "Sink write/flush failures", ["sink"], registry=r)
        self.commits = Counter("mm_offset_commits_total", "Offset commits", ["result"], registry=r)
        self.consumer_lag = Gauge(
            "mm_consumer_lag_records", "High watermark minus committed position", ["topic", "partition"], registry=r
        )
        self.last_commit = Gauge(
            "mm_last_commit_timestamp_seconds", "Unix time of the last successful offset commit", registry=r
        )
        self.rebalances = Counter("mm_rebalances_total", "Partition assignments and revocations", ["event"], registry=r)
        self.detector_info = Gauge(
            "mm_detector_info", "Detectors loaded by this process (value 1), with their pinned version",
            ["detector", "version"], registry=r,
        )
        self.first_stage_records = Counter(
            "mm_first_stage_records_total",
            "Records screened by a detector's cheap first stage: skipped (not sent to the model) or escalated",
            ["detector", "outcome"], registry=r,
        )

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP (a daemon thread of prometheus_client)."""
        start_http_server(port, addr=host, registry=self.registry)
