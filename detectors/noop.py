"""A detector that finds nothing, instantly (detector ``noop``).

For benchmarks: with it, the stream's throughput is the pipeline's own (Kafka, decode, verdicts,
sinks, commit), the ceiling an accelerator-backed classifier would meet. Never enable it in
production: every record would be judged clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from detectors.base import Detector
from pipeline.schemas import Finding, InferenceLog


class NoopDetector(Detector):
    name: ClassVar[str] = "noop"
    version: ClassVar[str] = "noop-1"

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        return [[] for _ in records]
