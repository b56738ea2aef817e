"""Parquet lake sink: one file per (date, topic-partition, offset range) and batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

from pipeline.lake import LakeWriter
from pipeline.sinks.base import ScoredRecord, Sink

if TYPE_CHECKING:
    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import Settings


class LakeSink(Sink):
    name = "lake"

    def __init__(self, writer: LakeWriter, include_logs: bool) -> None:
        self._writer = writer
        self._include_logs = include_logs
        self._buffer: list[ScoredRecord] = []

    @classmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        return cls(LakeWriter(settings.lake.path), settings.lake.include_logs)

    def write(self, records: Sequence[ScoredRecord]) -> None:
        # Buffered until flush so one batch becomes one file per date and partition.
        self._buffer.extend(records)

    def flush(self) -> None:
        if self._buffer:
            self._writer.write(self._buffer, include_logs=self._include_logs)
        self._buffer = []
