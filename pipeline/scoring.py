"""Detectors + verdict policy over a batch: shared by stream, classify and Spark backfill."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from detectors.base import Detector, PartialDetectionError
from detectors.registry import build
from pipeline.metrics import PipelineMetrics
from pipeline.schemas import Finding, InferenceLog, MisuseVerdict
from pipeline.settings import Settings
from pipeline.verdicts import Pseudonymizer, build_verdict

log = logging.getLogger(__name__)


class Scorer:
    def __init__(
        self, detectors: Sequence[Detector], pseudonymize: Pseudonymizer, metrics: PipelineMetrics | None = None
    ) -> None:
        if not detectors:
            raise ValueError("at least one detector must be enabled")
        self.detectors = list(detectors)
        self._pseudonymize = pseudonymize
        self._metrics = metrics
        if metrics is not None:
            for detector in self.detectors:
                metrics.detector_info.labels(detector.name, detector.version).set(1)
                # No shipped detector has a cheap first stage (measured not to pay, see
                # detectors/training/firststage.py): every record reaches the model.
                # Exporting skipped=0 keeps the dashboard's skip share honest (0%).
                metrics.first_stage_records.labels(detector.name, "skipped").inc(0)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: PipelineMetrics | None = None) -> Scorer:
        detectors = build(settings.detectors.enabled, settings.detectors.config())
        key = settings.pseudonym_key.get_secret_value().encode("utf-8")
        return cls(detectors, Pseudonymizer(key), metrics)

    def score(self, logs: Sequence[InferenceLog]) -> list[MisuseVerdict]:
        merged: list[list[Finding]] = [[] for _ in logs]
        for detector in self.detectors:
            started = time.perf_counter()
            try:
                results = detector.detect(logs)
            except PartialDetectionError as exc:
                results = exc.partial
                log.warning("detector %s could not judge %d record(s) of the batch: %s", detector.name, len(exc.failures), exc)
                if self._metrics is not None:
                    self._metrics.detector_errors.labels(detector.name).inc(len(exc.failures))
            if len(results) != len(logs):
                raise RuntimeError(f"detector {detector.name} returned {len(results)} results for {len(logs)} records")
            if self._metrics is not None:
                self._metrics.detector_duration.labels(detector.name).observe(time.perf_counter() - started)
                self._metrics.first_stage_records.labels(detector.name, "escalated").inc(len(logs))
            for acc, found in zip(merged, results, strict=True):
                acc.extend(found)
        return [build_verdict(log, found, self._pseudonymize) for log, found in zip(logs, merged, strict=True)]

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()
