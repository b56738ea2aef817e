"""Prometheus sink: counts verdicts and findings (the endpoint is served by the runner)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

from pipeline.sinks.base import ScoredRecord, Sink

if TYPE_CHECKING:
    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import Settings


class MetricsSink(Sink):
    name = "metrics"

    def __init__(self, metrics: PipelineMetrics) -> None:
        self._m = metrics

    @classmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        return cls(metrics)

    def write(self, records: Sequence[ScoredRecord]) -> None:
        m = self._m
        for rec in records:
            v = rec.verdict
            model, deployment, tenant = m.series_labels(v.model, v.deployment, v.tenant_id)
            severity = v.severity.value
            m.verdicts.labels(model, deployment, tenant, str(v.flagged).lower(), severity).inc()
            complied = "none" if v.complied is None else str(v.complied).lower()
            for category in v.categories:
                m.flagged.labels(*m.flagged_labels(category.value, (model, deployment, tenant), severity, complied)).inc()
            for f in v.findings:
                m.findings.labels(f.category.value, f.side.value, f.detector, f.part.value if f.part else "unknown").inc()
                m.finding_score.labels(f.category.value, f.side.value).observe(f.score)

    def flush(self) -> None:
        """Counters are in memory and scraped; nothing to persist."""
