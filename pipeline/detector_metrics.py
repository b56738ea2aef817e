"""Detector-behaviour metrics the dashboards need beyond :mod:`pipeline.metrics`.

Kept apart so the metric set can be registered on the pipeline's registry by whoever owns the
detectors: ``DetectorMetrics(metrics.registry)``, then :meth:`DetectorMetrics.record_detectors`
once at start-up and :meth:`DetectorMetrics.first_stage` per batch from a two-stage detector.
Labels are bounded: detector names and versions come from code, outcome is a fixed pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge


class _NamedVersioned(Protocol):
    name: str
    version: str


class DetectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.info = Gauge(
            "mm_detector_info",
            "Detectors loaded by this process (value 1), with their pinned version",
            ["detector", "version"],
            registry=registry,
        )
        self.first_stage_records = Counter(
            "mm_first_stage_records_total",
            "Records screened by a detector's cheap first stage: skipped (not sent to the model) or escalated",
            ["detector", "outcome"],
            registry=registry,
        )

    def record_detectors(self, detectors: Iterable[_NamedVersioned]) -> None:
        """Runs once after the detectors are built."""
        for detector in detectors:
            self.info.labels(detector.name, detector.version).set(1)

    def first_stage(self, detector: str, skipped: int, escalated: int) -> None:
        """Runs once per batch for a detector with a first stage."""
        self.first_stage_records.labels(detector, "skipped").inc(skipped)
        self.first_stage_records.labels(detector, "escalated").inc(escalated)
