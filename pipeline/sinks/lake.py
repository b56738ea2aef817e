"""Parquet lake sink: one file per (date, topic-partition, offset range) and batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Self

from pipeline.lake import LakeWriter
from pipeline.privacy import LakePolicy
from pipeline.sinks.base import ScoredRecord, Sink

if TYPE_CHECKING:
    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import Settings


class LakeSink(Sink):
    name = "lake"

    def __init__(self, writer: LakeWriter) -> None:
        self._writer = writer  # its LakePolicy decides which rows keep their text
        self._buffer: list[ScoredRecord] = []

    @classmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        return cls(LakeWriter(settings.lake.path, LakePolicy.from_settings(settings)))

    def check(self, records: Sequence[ScoredRecord]) -> dict[int, str]:
        """Refuse what Parquet cannot hold: a timestamp outside datetime's UTC range, text that is
        not valid UTF-8 (lone surrogates). Decode validation refuses both already; this keeps one
        such record from failing the whole file if a new input path lets one through."""
        refused = {}
        for i, rec in enumerate(records):
            try:
                rec.verdict.timestamp.astimezone(UTC)
                rec.verdict_json().encode("utf-8")
            except (OverflowError, UnicodeEncodeError, ValueError) as exc:
                refused[i] = f"lake cannot store it: {exc!r}"[:300]
        return refused

    def write(self, records: Sequence[ScoredRecord]) -> None:
        # Buffered until flush so one batch becomes one file per date and partition.
        self._buffer.extend(records)

    def flush(self) -> None:
        if self._buffer:
            self._writer.write(self._buffer)
        self._buffer = []
